"""Land-cover product tables: raw values -> geodelta class indices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geodelta.schemas.classes import CLASS_INDEX, CLASSES, decode_transition, transition_code
from geodelta.sources.landcover import PRODUCTS, UnknownProductError, to_geodelta

WORLDCOVER = Path("/work/shared/data/esa_worldcover_pair")


def test_worldcover_values_map_to_geodelta_indices() -> None:
    raw = np.array([[10, 20, 30, 40], [50, 60, 70, 80], [90, 95, 100, 0]], dtype=np.uint8)
    expected = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 0]], dtype=np.uint8)
    out = to_geodelta(raw, "worldcover")
    assert out.dtype == np.uint8
    assert out.shape == raw.shape
    np.testing.assert_array_equal(out, expected)
    # the names behind the indices, spelled out once by hand
    assert CLASSES[int(out[0, 0])] == "tree_cover"
    assert CLASSES[int(out[1, 0])] == "built_up"
    assert CLASSES[int(out[2, 1])] == "mangroves"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int64])
def test_unmapped_values_become_unknown(dtype: type) -> None:
    values = [0, 1, 5, 15, 99, 101, 127]
    if np.iinfo(dtype).max > 255:
        values += [255, 300, 1000]
    if np.iinfo(dtype).min < 0:
        values += [-1, -10]
    out = to_geodelta(np.array([*values, 50], dtype=dtype), "worldcover")
    np.testing.assert_array_equal(out, [0] * len(values) + [CLASS_INDEX["built_up"]])


def test_uint8_values_beyond_the_table_are_unknown() -> None:
    raw = np.arange(256, dtype=np.uint8)
    out = to_geodelta(raw, "worldcover")
    assert int(np.count_nonzero(out)) == 11  # exactly the 11 legend values
    assert out[255] == 0 and out[100] == CLASS_INDEX["moss_lichen"]


def test_geodelta_product_is_the_identity_on_known_classes() -> None:
    raw = np.arange(0, 14, dtype=np.uint8)
    out = to_geodelta(raw, "geodelta")
    np.testing.assert_array_equal(out, [*range(12), 0, 0])
    assert set(PRODUCTS["geodelta"]) == set(range(1, 12))


def test_every_table_names_geodelta_classes() -> None:
    for product, table in PRODUCTS.items():
        unknown = set(table.values()) - set(CLASS_INDEX)
        assert not unknown, f"{product}: {unknown}"
        assert "unknown" not in table.values(), product


def test_unknown_product_names_itself_and_the_known_ones() -> None:
    with pytest.raises(UnknownProductError) as info:
        to_geodelta(np.zeros((2, 2), dtype=np.uint8), "io-lulc-typo")
    message = str(info.value)
    assert "io-lulc-typo" in message and "worldcover" in message and "geodelta" in message
    assert info.value.product == "io-lulc-typo"
    assert isinstance(info.value, KeyError)


def test_float_values_are_rejected() -> None:
    with pytest.raises(TypeError, match="integer"):
        to_geodelta(np.array([10.0, 20.0]), "worldcover")


def test_real_worldcover_2020_vs_2021() -> None:
    """PROVENANCE: 4.76 % of pixels differ; largest transition tree cover -> built-up, 23,361 px."""
    paths = sorted(WORLDCOVER.glob("ESA_WorldCover_10m_*_Map_saotome_city_crop.tif"))
    assert [p.name[19:23] for p in paths] == ["2020", "2021"]
    with rasterio.open(paths[0]) as a, rasterio.open(paths[1]) as b:
        raw0, raw1 = a.read(1), b.read(1)
    lc0, lc1 = to_geodelta(raw0, "worldcover"), to_geodelta(raw1, "worldcover")
    assert lc0.shape == lc1.shape == (1024, 1024)
    assert lc0.min() >= 1 and lc1.min() >= 1  # no nodata in the crop, every value in the legend

    changed = (lc0 != lc1) & (lc0 > 0) & (lc1 > 0)
    assert changed.mean() == pytest.approx(0.0476, abs=0.0005)

    # mask code 1 + (from - 1) * N + (to - 1), as in geodelta.schemas.classes
    pair_code = 1 + (lc0[changed].astype(np.int32) - 1) * 11 + (lc1[changed].astype(np.int32) - 1)
    values, counts = np.unique(pair_code, return_counts=True)
    top = int(values[np.argmax(counts)])
    assert top == transition_code("tree_cover", "built_up")
    assert decode_transition(top) == ("tree_cover", "built_up")
    assert int(counts.max()) == 23361
