"""Change masks and facts (pipelines/stages/label.py) against hand-computed cases and real
WorldCover."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from geodelta.pipelines.stages.label import (
    LabelError,
    binary_mask,
    clean_mask,
    compute_facts,
    position_word,
    transition_mask,
)
from geodelta.pipelines.stages.labels.change_mask import label_from_change_mask
from geodelta.pipelines.stages.labels.landcover import label_from_landcover
from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import ScenePair, SceneRef, TileJob
from geodelta.schemas.classes import (
    BINARY_CHANGE,
    CLASS_INDEX,
    WORLDCOVER_TO_GEODELTA,
    transition_code,
)

WORLDCOVER = Path("/work/shared/data/esa_worldcover_pair")

TREE, GRASS, CROP, BUILT, BARE, WATER = (
    CLASS_INDEX[n] for n in ("tree_cover", "grassland", "cropland", "built_up", "bare", "water")
)
TREE_BUILT = transition_code("tree_cover", "built_up")  # 5
GRASS_WATER = transition_code("grassland", "water")  # 30
CROP_BARE = transition_code("cropland", "bare")  # 39


def make_sample(shape: tuple[int, int], res: float = 10.0) -> Sample:
    t0, t1 = datetime(2020, 6, 1, tzinfo=UTC), datetime(2021, 6, 1, tzinfo=UTC)
    job = TileJob(
        cell_id="32631_0010_0020",
        crs="EPSG:32631",
        transform=(res, 0.0, 500000.0, 0.0, -res, 5000000.0),
        shape=shape,
        bbox_lonlat=(3.0, 45.0, 3.01, 45.01),
        t0_window=(t0, t0),
        t1_window=(t1, t1),
    )

    def scene(item_id: str, when: datetime) -> SceneRef:
        return SceneRef(
            collection="sentinel-2-l2a",
            item_id=item_id,
            datetime=when,
            bbox_lonlat=(2.0, 44.0, 4.0, 46.0),
            assets={},
        )

    pair = ScenePair(
        job=job, before=scene("a", t0), after=scene("b", t1), before_clear=1.0, after_clear=1.0
    )
    bands = np.zeros((1, *shape), dtype=np.float32)
    return Sample(pair=pair, before=bands, after=bands.copy())


def hand_pair() -> tuple[np.ndarray, np.ndarray]:
    """12x12: 3x3 tree->built_up (north-west), 2x4 grass->water (south-east), 1-px crop->bare."""
    before = np.full((12, 12), CROP, dtype=np.uint8)
    before[0:3, 0:3] = TREE
    before[9:11, 7:11] = GRASS
    after = before.copy()
    after[0:3, 0:3] = BUILT
    after[9:11, 7:11] = WATER
    after[5, 6] = BARE  # isolated speck
    return before, after


def test_transition_mask_codes() -> None:
    before, after = hand_pair()
    mask = transition_mask(before, after)
    assert mask.dtype == np.uint8
    assert (mask[0:3, 0:3] == 5).all() and TREE_BUILT == 5
    assert (mask[9:11, 7:11] == 30).all() and GRASS_WATER == 30
    assert mask[5, 6] == CROP_BARE == 39
    assert int((mask > 0).sum()) == 18


def test_transition_mask_ignores_unknown_and_rejects_non_classes() -> None:
    before = np.array([[0, 1, 1], [3, 3, 2]], dtype=np.uint8)
    after = np.array([[5, 0, 1], [3, 8, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(
        transition_mask(before, after), [[0, 0, 0], [0, transition_code("grassland", "water"), 0]]
    )
    with pytest.raises(LabelError, match="outside the geodelta class indices"):
        transition_mask(before, np.full((2, 3), 50, dtype=np.uint8))
    with pytest.raises(LabelError, match="same shape"):
        transition_mask(before, after[:, :2])


def test_clean_mask_removes_small_8_connected_regions() -> None:
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[0, 0] = mask[1, 1] = 7  # diagonal pair: one 8-connected region of 2
    mask[4, 4] = 9  # single speck
    out = clean_mask(mask, 2)
    assert out[0, 0] == 7 and out[1, 1] == 7 and out[4, 4] == 0
    assert mask[4, 4] == 9  # input untouched
    assert int((clean_mask(mask, 3) > 0).sum()) == 0
    np.testing.assert_array_equal(clean_mask(mask, 1), mask)


def test_facts_of_hand_made_pair() -> None:
    before, after = hand_pair()
    mask = transition_mask(before, after)
    valid = (before > 0) & (after > 0)
    facts = compute_facts(
        mask,
        valid,
        pixel_area_m2=100.0,
        min_region_px=2,
        binary=False,
        lc_before=before,
        lc_after=after,
    )
    assert facts.shape == (12, 12)
    assert facts.valid_pixels == 144
    assert facts.changed_pixels == 9 + 8
    assert facts.changed_fraction == pytest.approx(17 / 144)
    assert [(t.code, t.from_class, t.to_class, t.pixels, t.area_m2) for t in facts.transitions] == [
        (5, "tree_cover", "built_up", 9, 900.0),
        (30, "grassland", "water", 8, 800.0),
    ]
    # the removed speck counts as cropland at t1 (it is not change any more)
    assert facts.class_pixels_before == {"tree_cover": 9, "grassland": 8, "cropland": 127}
    assert facts.class_pixels_after == {"built_up": 9, "water": 8, "cropland": 127}
    c1, c2 = facts.components
    assert (c1.id, c1.code, c1.from_class, c1.to_class, c1.pixels) == (
        1,
        5,
        "tree_cover",
        "built_up",
        9,
    )
    assert c1.centroid == (1.0, 1.0) and c1.bbox == (0, 0, 2, 2) and c1.position == "north-west"
    assert c1.area_m2 == 900.0
    assert (c2.id, c2.code, c2.from_class, c2.to_class, c2.pixels) == (
        2,
        30,
        "grassland",
        "water",
        8,
    )
    assert c2.centroid == (9.5, 8.5) and c2.bbox == (9, 7, 10, 10) and c2.position == "south-east"
    assert facts.n_regions == 2 and facts.min_region_px == 2 and not facts.binary


def test_facts_keep_speck_with_min_region_1() -> None:
    before, after = hand_pair()
    facts = compute_facts(
        transition_mask(before, after),
        np.ones((12, 12), dtype=bool),
        pixel_area_m2=100.0,
        min_region_px=1,
        binary=False,
        lc_before=before,
        lc_after=after,
    )
    assert facts.changed_pixels == 18
    assert [t.code for t in facts.transitions] == [5, 30, 39]
    assert facts.class_pixels_after == {"built_up": 9, "water": 8, "cropland": 126, "bare": 1}
    speck = facts.components[2]
    assert (speck.pixels, speck.centroid, speck.position, speck.bbox) == (
        1,
        (5.0, 6.0),
        "centre",
        (5, 6, 5, 6),
    )


def test_component_ties_and_dominant_code() -> None:
    mask = np.zeros((9, 9), dtype=np.uint8)
    mask[6, 0:4] = [30, 30, 5, 5]  # 4 px, codes tie 2:2 -> smallest code (5) dominates
    mask[0, 5:9] = 39  # 4 px too, but its first pixel comes first in row-major order
    mask[3, 3] = 5  # 1 px
    facts = compute_facts(
        mask,
        np.ones((9, 9), dtype=bool),
        pixel_area_m2=1.0,
        min_region_px=1,
        binary=False,
        lc_before=np.ones((9, 9), np.uint8),
        lc_after=np.ones((9, 9), np.uint8),
    )
    assert [(c.id, c.pixels, c.code, c.bbox) for c in facts.components] == [
        (1, 4, 39, (0, 5, 0, 8)),
        (2, 4, 5, (6, 0, 6, 3)),
        (3, 1, 5, (3, 3, 3, 3)),
    ]
    assert [(t.code, t.pixels) for t in facts.transitions] == [(39, 4), (5, 3), (30, 2)]
    assert facts.components[1].position == "south-west"  # centroid (6, 1.5)
    assert facts.components[0].position == "north-east"  # centroid (0, 6.5)


def test_compute_facts_refuses_change_on_invalid_pixels() -> None:
    mask = np.zeros((3, 3), dtype=np.uint8)
    mask[1, 1] = 5
    valid = np.ones((3, 3), dtype=bool)
    valid[1, 1] = False
    with pytest.raises(LabelError, match="not valid"):
        compute_facts(mask, valid, pixel_area_m2=1.0, min_region_px=1, binary=True)


def test_no_valid_pixels_gives_zero_fraction() -> None:
    mask = np.zeros((4, 4), dtype=np.uint8)
    facts = compute_facts(
        mask, np.zeros((4, 4), bool), pixel_area_m2=1.0, min_region_px=1, binary=True
    )
    assert (facts.valid_pixels, facts.changed_pixels, facts.changed_fraction) == (0, 0, 0.0)
    assert facts.transitions == () and facts.components == ()


def test_binary_mask_oscd_values() -> None:
    values = np.array([[1, 2, 2], [0, 2, 1], [1, 1, 0]], dtype=np.uint8)
    mask, valid = binary_mask(values, change_values=[2], nodata_values=[0])
    np.testing.assert_array_equal(mask, [[0, 255, 255], [0, 255, 0], [0, 0, 0]])
    np.testing.assert_array_equal(valid, [[1, 1, 1], [0, 1, 1], [1, 1, 0]])
    assert mask.dtype == np.uint8 and valid.dtype == bool
    # a change value that is also nodata is a config mistake
    with pytest.raises(LabelError, match="both change and nodata"):
        binary_mask(values, change_values=[2], nodata_values=[0, 2])


def test_binary_facts() -> None:
    values = np.ones((8, 8), dtype=np.uint8)
    values[0:2, 0:2] = 2
    values[7, :] = 0
    mask, valid = binary_mask(values, change_values=[2], nodata_values=[0])
    facts = compute_facts(mask, valid, pixel_area_m2=100.0, min_region_px=1, binary=True)
    assert (facts.valid_pixels, facts.changed_pixels) == (56, 4)
    assert facts.changed_fraction == pytest.approx(4 / 56)
    assert [(t.code, t.from_class, t.to_class, t.pixels) for t in facts.transitions] == [
        (BINARY_CHANGE, "unknown", "unknown", 4)
    ]
    assert facts.class_pixels_before == {} and facts.class_pixels_after == {}
    (comp,) = facts.components
    assert (comp.code, comp.centroid, comp.position) == (255, (0.5, 0.5), "north-west")


@pytest.mark.parametrize(
    ("row", "col", "word"),
    [
        (0, 0, "north-west"),
        (0, 6, "north"),
        (0, 11, "north-east"),
        (6, 0, "west"),
        (6, 6, "centre"),
        (6, 11, "east"),
        (11, 0, "south-west"),
        (11, 6, "south"),
        (11, 11, "south-east"),
        # boundaries of a 12-px side: rows 0-3 | 4-7 | 8-11; a boundary point goes to the later band
        (3.0, 3.0, "north-west"),
        (3.49, 5.0, "north"),
        (3.5, 5.0, "centre"),
        (7.5, 7.5, "south-east"),
        (7.49, 7.49, "centre"),
        (-0.5, 11.5, "north-east"),
    ],
)
def test_position_word(row: float, col: float, word: str) -> None:
    assert position_word(row, col, (12, 12)) == word


def test_position_word_non_square_and_outside() -> None:
    # 9 rows x 30 cols: rows 0-2 north; cols 0-9 west, 10-19 middle, 20-29 east
    assert position_word(2, 9, (9, 30)) == "north-west"
    assert position_word(3, 10, (9, 30)) == "centre"
    assert position_word(8, 20, (9, 30)) == "south-east"
    with pytest.raises(LabelError, match="outside"):
        position_word(12, 0, (12, 12))


def test_label_from_landcover_fills_sample() -> None:
    before, after = hand_pair()
    after[11, 0] = 0  # one unknown pixel at t1
    sample = label_from_landcover(
        make_sample((12, 12)),
        before,
        after,
        min_region_px=2,
        source="landcover:esa-worldcover",
        items=("wc2020", "wc2021"),
    )
    assert sample.mask is not None and sample.facts is not None
    assert sample.mask[5, 6] == 0  # speck removed from the stored mask too
    assert int((sample.mask > 0).sum()) == sample.facts.changed_pixels == 17
    assert sample.facts.valid_pixels == 143
    assert sample.facts.pixel_area_m2 == 100.0
    assert sample.label_source == "landcover:esa-worldcover"
    assert sample.label_items == ("wc2020", "wc2021")
    assert sample.lc_before is not None and sample.lc_before.dtype == np.uint8
    with pytest.raises(LabelError, match="outside the geodelta class indices") as err:
        label_from_landcover(
            make_sample((12, 12)), before, after.astype(np.int16) + 256, min_region_px=2,
            source="x", items=(),
        )  # fmt: skip
    assert err.value.key == "32631_0010_0020_20200601_20210601"
    with pytest.raises(LabelError, match="cell grid"):
        label_from_landcover(
            make_sample((10, 10)), before, after, min_region_px=2, source="x", items=()
        )


def test_label_from_change_mask_fills_sample() -> None:
    values = np.ones((16, 16), dtype=np.uint8)
    values[4:8, 4:8] = 2
    values[15, 15] = 2  # speck
    values[0, :] = 0
    sample = label_from_change_mask(
        make_sample((16, 16), res=20.0),
        values,
        change_values=(2,),
        nodata_values=(0,),
        min_region_px=4,
        source="change_mask:cm",
        items=("bercy",),
    )
    assert sample.facts is not None and sample.mask is not None and sample.lc_before is not None
    assert sample.facts.binary
    assert sample.facts.changed_pixels == 16 and sample.facts.valid_pixels == 240
    assert sample.facts.pixel_area_m2 == 400.0
    assert set(np.unique(sample.mask).tolist()) == {0, 255}
    assert sample.lc_before.shape == (16, 16) and not sample.lc_before.any()
    assert sample.lc_after is not None and not sample.lc_after.any()


def _worldcover(year: str) -> np.ndarray:
    rasterio = pytest.importorskip("rasterio")
    name = f"ESA_WorldCover_10m_{year}_N00E006_Map_saotome_city_crop.tif"
    with rasterio.open(WORLDCOVER / name) as ds:
        values = ds.read(1)
    lookup = np.zeros(256, dtype=np.uint8)
    for legend, cls in WORLDCOVER_TO_GEODELTA.items():
        lookup[legend] = CLASS_INDEX[cls]
    return lookup[values]


def test_real_worldcover_pair() -> None:
    before, after = _worldcover("2020_v100"), _worldcover("2021_v200")
    assert before.shape == (1024, 1024)
    mask = transition_mask(before, after)
    valid = (before > 0) & (after > 0)
    facts = compute_facts(
        mask,
        valid,
        pixel_area_m2=100.0,
        min_region_px=1,
        binary=False,
        lc_before=before,
        lc_after=after,
    )
    assert facts.valid_pixels == 1024 * 1024
    assert facts.changed_fraction == pytest.approx(0.0476, abs=5e-4)
    top = facts.transitions[0]
    assert (top.from_class, top.to_class, top.pixels) == ("tree_cover", "built_up", 23361)
    assert sum(c.pixels for c in facts.components) == facts.changed_pixels
    sizes = [c.pixels for c in facts.components]
    assert sizes == sorted(sizes, reverse=True)
    # net class change equals net transitions
    net_built = sum(t.pixels for t in facts.transitions if t.to_class == "built_up") - sum(
        t.pixels for t in facts.transitions if t.from_class == "built_up"
    )
    assert facts.class_pixels_after["built_up"] - facts.class_pixels_before["built_up"] == net_built
    # cleaning removes specks: fewer pixels, no region below the threshold
    cleaned = compute_facts(
        mask,
        valid,
        pixel_area_m2=100.0,
        min_region_px=4,
        binary=False,
        lc_before=before,
        lc_after=after,
    )
    assert cleaned.changed_pixels < facts.changed_pixels
    assert min(c.pixels for c in cleaned.components) >= 4


def test_every_label_kind_has_one_source() -> None:
    """The registry serves exactly the kinds the config accepts, each under its own name."""
    from typing import get_args

    from geodelta.pipelines.stages.labels.registry import SOURCES, label_source
    from geodelta.schemas.config import LabelConfig

    kinds = set(get_args(LabelConfig.model_fields["kind"].annotation))
    assert set(SOURCES) == kinds == {"landcover", "change_mask"}
    for kind, source in SOURCES.items():
        assert source.kind == kind and label_source(kind) is source
    with pytest.raises(ValueError, match="has no label source"):
        label_source("nope")


def test_searched_collection_follows_the_kind() -> None:
    from geodelta.schemas.config import LabelConfig

    assert LabelConfig(kind="landcover", collection="lc").searched_collection == "lc"
    # a change mask is an asset of the after item: its collection key is not searched
    assert LabelConfig(kind="change_mask", collection="lc").searched_collection is None
    with pytest.raises(ValueError, match=r"labels\.collection is required"):
        LabelConfig(kind="landcover")


def test_landcover_source_rejects_an_item_without_the_asset() -> None:
    from geodelta.pipelines.stages.labels.registry import label_sample
    from geodelta.schemas import AssetRef, QuarantineRecord
    from geodelta.schemas.config import LabelConfig

    sample = make_sample((12, 12))
    lc = {
        year: sample.pair.before.model_copy(
            update={"item_id": f"wc{year}", "assets": {"data": AssetRef(href="/lc.tif")}}
        )
        for year in (2020, 2021)
    }
    pair = sample.pair.model_copy(update={"label_before": lc[2020], "label_after": lc[2021]})
    labelled = Sample(pair=pair, before=sample.before, after=sample.after)
    out = label_sample(labelled, LabelConfig(kind="landcover", collection="lc"), access=None)  # type: ignore[arg-type]
    assert isinstance(out, QuarantineRecord)
    assert (out.stage, out.reason, out.key) == ("label", "no_landcover_asset", sample.key)
    assert "wc2020 has no 'map' asset" in out.detail and "check labels.asset" in out.detail
    with pytest.raises(LabelError, match="run the pair stage first"):
        label_sample(sample, LabelConfig(kind="landcover", collection="lc"), access=None)  # type: ignore[arg-type]
