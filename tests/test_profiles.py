"""Collection profiles: scale/offset completion of real items, clear masks (classes and bits),
land-cover tables, config defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest

from geodelta.schemas import load_config, parse_config
from geodelta.schemas.classes import CLASS_INDEX
from geodelta.sources.catalog import item_to_scene
from geodelta.sources.landcover import to_geodelta
from geodelta.sources.profiles import (
    PROFILES,
    apply_defaults,
    band_resolution,
    check_config,
    complete_item,
)
from geodelta.sources.raster import AssetRef, clear_fraction, clear_mask
from tests.conftest import REPO, minimal_config
from tests.test_raster import from_origin, make_job, make_scene, write_tif

S2_ITEM = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"


@pytest.fixture
def pc_s2_item(shared_data: Path) -> dict[str, Any]:
    """A real Planetary Computer sentinel-2-l2a item (no raster:bands scale/offset)."""
    d: dict[str, Any] = json.loads((shared_data / "stac" / "items" / S2_ITEM).read_text())
    d["collection"] = "sentinel-2-l2a"
    return d


def test_sentinel2_offset_follows_the_processing_baseline(pc_s2_item: dict[str, Any]) -> None:
    item = pystac.Item.from_dict(pc_s2_item)
    assert item.properties["s2:processing_baseline"] == "02.12"
    assert "raster:bands" not in item.assets["B04"].extra_fields
    complete_item(item)
    scene = item_to_scene(item)
    assert (scene.assets["B04"].scale, scene.assets["B04"].offset) == (0.0001, 0.0)
    assert scene.assets["B8A"].scale == 0.0001
    assert scene.assets["SCL"].scale == 1.0  # the classification band is not reflectance
    assert scene.crs == "EPSG:32606"
    for baseline, offset in (("04.00", -0.1), ("05.09", -0.1), ("03.01", 0.0)):
        d = json.loads(json.dumps(pc_s2_item))
        d["properties"]["s2:processing_baseline"] = baseline
        item = pystac.Item.from_dict(d)
        complete_item(item)
        assert item_to_scene(item).assets["B02"].offset == offset, baseline
    # values the item carries win over the profile
    d = json.loads(json.dumps(pc_s2_item))
    d["properties"]["s2:processing_baseline"] = "04.00"
    d["assets"]["B02"]["raster:bands"] = [{"scale": 0.0002, "offset": 0.0, "nodata": 0}]
    item = pystac.Item.from_dict(d)
    complete_item(item)
    ref = item_to_scene(item).assets["B02"]
    assert (ref.scale, ref.offset, ref.nodata) == (0.0002, 0.0, 0)
    # a reflectance value: DN 2000 at baseline 04.00 reads 0.1, not 0.2
    d["assets"]["B02"].pop("raster:bands")
    item = pystac.Item.from_dict(d)
    complete_item(item)
    ref = item_to_scene(item).assets["B02"]
    assert 2000 * ref.scale + ref.offset == pytest.approx(0.1)


def test_landsat_profile_scale_and_bits() -> None:
    p = PROFILES["landsat-c2-l2"]
    assert (p.scale, p.offset) == (0.0000275, -0.2)
    assert p.classification_asset == "qa_pixel" and p.cloud_bits == (0, 1, 2, 3, 4, 5)
    # QA_PIXEL values: 21824 clear land (bits 6, 8, 10, 12, 14), 21952 clear water (+ bit 7),
    # 22280 cloud (bit 3), 23888 shadow (bit 4), 54596 cirrus (bit 2), 1 fill (bit 0)
    values = np.array([21824, 21952, 22280, 23888, 54596, 1, np.nan])
    assert clear_mask(values, (), p.cloud_bits).tolist() == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
    ]


def test_scl_clear_classes() -> None:
    p = PROFILES["sentinel-2-l2a"]
    values = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, np.nan])
    got = clear_mask(values, p.clear_classes).tolist()
    assert got == [False] * 4 + [True] * 4 + [False] * 5
    assert p.bands["B02"] == 10 and p.bands["B05"] == 20 and p.bands["B01"] == 60
    assert band_resolution("sentinel-2-l2a", "SCL", 10.0) == 20.0
    assert band_resolution("unknown", "B02", 10.0) == 10.0


def test_clear_fraction_of_a_bit_mask_raster(tmp_path: Path) -> None:
    qa = np.full((30, 30), 21824, dtype=np.uint16)  # clear land
    qa[:10, :] = 22280  # cloud: a third of the rows
    qa[10:13, :15] = 1  # fill
    path = write_tif(tmp_path / "qa.tif", qa, "EPSG:32631", from_origin(500000, 5000300, 10, 10))
    scene = make_scene({"qa_pixel": AssetRef(href=path)})
    job = make_job("EPSG:32631", 500000, 5000300, 10.0, (30, 30))
    got = clear_fraction(scene, "qa_pixel", job, (), cloud_bits=(0, 1, 2, 3, 4, 5))
    assert got == pytest.approx((900 - 300 - 45) / 900)
    # the same raster read as class values: only 21824 "clear"
    assert clear_fraction(scene, "qa_pixel", job, (21824,)) == pytest.approx(555 / 900)


def test_io_lulc_table() -> None:
    raw = np.array([0, 1, 2, 4, 5, 7, 8, 9, 10, 11, 3], dtype=np.uint8)
    names = ["water", "tree_cover", "wetland", "cropland", "built_up", "bare", "snow_ice"]
    expected = [0, *[CLASS_INDEX[n] for n in names], 0, CLASS_INDEX["grassland"], 0]
    assert to_geodelta(raw, "io-lulc").tolist() == expected


def test_apply_defaults_fills_only_what_the_file_left_out() -> None:
    base = minimal_config()
    base["imagery"] = {
        "collection": "sentinel-2-l2a",
        "bands": ["B02", "B03", "B04"],
        "rgb": ["B04", "B03", "B02"],
    }
    base["labels"] = {"kind": "landcover", "collection": "io-lulc-annual-v02"}
    cfg = apply_defaults(parse_config(base))
    assert cfg.imagery.classification_asset == "SCL" and cfg.imagery.clear_classes == (4, 5, 6, 7)
    assert cfg.labels.asset == "data" and cfg.labels.product == "io-lulc"
    assert apply_defaults(cfg) == cfg  # idempotent
    explicit = dict(
        base, imagery={**base["imagery"], "classification_asset": None, "clear_classes": [4]}
    )
    e = apply_defaults(parse_config(explicit))
    assert e.imagery.classification_asset is None and e.imagery.clear_classes == (4,)
    landsat = dict(
        base, imagery={"collection": "landsat-c2-l2", "bands": ["red"], "rgb": ["red"] * 3}
    )
    lc = apply_defaults(parse_config(landsat))
    assert lc.imagery.classification_asset == "qa_pixel" and lc.imagery.cloud_bits[:4] == (
        0,
        1,
        2,
        3,
    )
    plain = parse_config(minimal_config())  # collections without a profile: unchanged
    assert apply_defaults(plain) is plain


def test_check_config_names_the_key() -> None:
    base = minimal_config()
    base["imagery"] = {
        "collection": "sentinel-2-l2a",
        "bands": ["B02", "B03", "B04", "blue"],  # rgb must be among the bands (config rule)
        "rgb": ["B04", "B03", "B02"],
    }
    base["labels"] = {"kind": "landcover", "collection": "esa-worldcover", "product": "io-lulc"}
    problems = check_config(parse_config(base))
    assert len(problems) == 2
    assert problems[0].startswith("imagery.bands: ['blue']")
    assert problems[1].startswith("labels.product: 'io-lulc'") and "'worldcover'" in problems[1]


PC_CONFIG = REPO / "configs" / "pc-sentinel2-lulc.yaml"


def test_planetary_computer_config_validates_and_plans() -> None:
    from geodelta.pipelines.stages.plan import plan_jobs
    from geodelta.sources.signing import PlanetaryComputerSigner, signer_for

    cfg = load_config(PC_CONFIG)
    assert cfg.catalog.kind == "planetary-computer"
    assert cfg.imagery.collection == "sentinel-2-l2a" and cfg.imagery.max_cloud_cover == 10
    assert cfg.labels.collection == "io-lulc-annual-v02" and cfg.labels.product == "io-lulc"
    assert check_config(cfg) == []
    assert apply_defaults(cfg) == cfg  # everything the profiles know is stated explicitly
    assert isinstance(signer_for(cfg.catalog), PlanetaryComputerSigner)  # no network used
    jobs = plan_jobs(cfg)
    assert len(jobs) >= 20 and {j.crs for j in jobs} == {"EPSG:32636"}


@pytest.mark.network
@pytest.mark.slow
def test_planetary_computer_config_builds(tmp_path: Path) -> None:  # pragma: no cover - internet
    from geodelta.pipelines.api import build

    cfg = load_config(PC_CONFIG, {"output": {"dir": str(tmp_path / "release")}})
    result = build(cfg, mode="overwrite", progress=False)
    assert result.samples > 0


PC_SERIES_CONFIG = REPO / "configs" / "pc-sentinel2-lulc-series.yaml"


def test_planetary_computer_series_config_validates_and_plans() -> None:
    """The sequence example: one summer window a year 2018-2023 (io-lulc-annual-v02 maps each
    of those years), t0/t1 the first and last window, the same cells as the pair example."""
    from geodelta.pipelines.build import check_series
    from geodelta.pipelines.stages.plan import plan_jobs
    from geodelta.schemas.series import series_windows

    cfg = load_config(PC_SERIES_CONFIG)
    assert cfg.time.series is not None and cfg.labels.collection == "io-lulc-annual-v02"
    windows = series_windows(cfg.time.series)
    assert [w.start.year for w in windows] == [2018, 2019, 2020, 2021, 2022, 2023]
    assert cfg.time.t0 == (windows[0].start, windows[0].end)
    assert cfg.time.t1 == (windows[-1].start, windows[-1].end)
    assert check_config(cfg) == []
    check_series(cfg)  # landcover labels: a map per date
    pair = plan_jobs(load_config(PC_CONFIG))
    assert [j.cell_id for j in plan_jobs(cfg)] == [j.cell_id for j in pair]


@pytest.mark.network
@pytest.mark.slow
def test_planetary_computer_series_config_builds(tmp_path: Path) -> None:  # pragma: no cover
    from geodelta.pipelines.api import build

    cfg = load_config(PC_SERIES_CONFIG, {"output": {"dir": str(tmp_path / "release")}})
    result = build(cfg, mode="overwrite", progress=False)
    assert result.samples > 0
