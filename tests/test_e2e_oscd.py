"""End to end on REAL data: the three OSCD cities, checked against OSCD's own change masks.

A static catalog over ``../shared/data/oscd`` (tests/oscd_catalog.py) is built once; the
pipeline then runs on the Beam FnApiRunner with two workers: plan (640 m cells on each city's
UTM grid) -> search/pair -> load (EPSG:4326 L1C bands reprojected onto the cells) ->
coregister -> label (OSCD's change mask) -> annotate -> validate -> shard. Every truth the
tests compare with is computed here, independently of the pipeline, from the original files.
"""

from __future__ import annotations

import io
import json
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from geodelta.pipelines.api import BuildResult, build, funnel
from geodelta.pipelines.release.verify import verify_release
from geodelta.schemas import SAMPLE_MEMBERS, SampleMeta, parse_config
from tests.oscd_catalog import (
    ATTRIBUTION,
    BANDS,
    COLLECTION_ID,
    LICENCE,
    band_path,
    build_oscd_catalog,
    item_id,
    oscd_aoi_geojson,
    read_dates,
)

pytestmark = pytest.mark.slow

CITIES = ("aguasclaras", "bercy", "paris")
#: UTM zone of each city's cells. Aguasclaras (lon -48.050 .. -48.002) lies wholly west of
#: -48 deg, i.e. in zone 22 (-54 .. -48), south: EPSG:32722 (its S2 tile 22LHH agrees).
CITY_EPSG = {"bercy": 32631, "paris": 32631, "aguasclaras": 32722}
CELL_PX = 64
RES_M = 10.0
#: Degrees of slack on the footprint (~1 cm): cells are planned "within" the footprint.
FOOTPRINT_TOL_DEG = 1e-7


def oscd_config(catalog: Path, aoi: Path, out: Path) -> dict[str, Any]:
    """The build config of this test (a mapping, parsed with ``parse_config``)."""
    return {
        "name": "oscd-e2e",
        "version": "0.0.1",
        "description": "OSCD cities (real Sentinel-2 L1C) with OSCD's change masks.",
        "licence": LICENCE,
        "attribution": ATTRIBUTION,
        "aoi": {"geojson": str(aoi), "name_property": "name"},
        "grid": {"cell_size_px": CELL_PX, "resolution_m": RES_M, "keep": "within"},
        "catalog": {"kind": "static", "url": str(catalog)},
        "imagery": {
            "collection": COLLECTION_ID,
            "bands": list(BANDS),
            "rgb": ["B04", "B03", "B02"],
            "classification_asset": None,
        },
        "pairing": {"allow_unknown_clear": True, "min_gap_days": 30, "max_gap_days": 1500},
        "time": {"t0": ["2015-01-01", "2016-12-31"], "t1": ["2017-01-01", "2017-12-31"]},
        "labels": {
            "kind": "change_mask",
            "asset": "cm",
            "change_values": [2],
            "nodata_values": [0],
            "min_region_px": 1,
        },
        "coregistration": {"band": "B08"},
        "runner": {"name": "direct", "workers": 2},
        "output": {"dir": str(out)},
    }


@dataclass(frozen=True)
class OSCDRun:
    """The build and what the tests compare it with."""

    data_dir: Path
    result: BuildResult
    samples: list[dict[str, Any]]
    footprints: dict[str, BaseGeometry]

    def metas(self) -> list[tuple[dict[str, Any], SampleMeta]]:
        return [(s, SampleMeta.model_validate_json(s["json"])) for s in self.samples]


def read_samples(release: Path) -> list[dict[str, Any]]:
    """Every sample of the release, read with plain webdataset (no geodelta code)."""
    import webdataset as wds

    shards = sorted(str(p) for p in (release / "shards").glob("*.tar"))
    assert shards, f"no shards in {release / 'shards'}"
    return list(wds.WebDataset(shards, shardshuffle=False))


@pytest.fixture(scope="module")
def run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> OSCDRun:
    data_dir = shared_data / "oscd"
    root = tmp_path_factory.mktemp("oscd-e2e")
    catalog = build_oscd_catalog(root / "catalog", data_dir, CITIES)
    aoi = oscd_aoi_geojson(root / "aoi.geojson", data_dir, CITIES)
    cfg = parse_config(
        oscd_config(catalog, aoi, root / "release"), source="test_e2e_oscd", base_dir=str(root)
    )
    result = build(cfg, mode="overwrite", progress=False)
    footprints = {
        city: shape(
            json.loads((data_dir / city / f"{city}.geojson").read_text())["features"][0]["geometry"]
        )
        for city in CITIES
    }
    return OSCDRun(data_dir, result, read_samples(result.release_dir), footprints)


def _tif(data: bytes) -> tuple[np.ndarray, CRS, Affine, float | None]:
    with rasterio.MemoryFile(data) as mf, mf.open() as ds:
        return ds.read(), ds.crs, ds.transform, ds.nodata


def _png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img)


def _original_change(data_dir: Path, city: str) -> tuple[np.ndarray, Affine, CRS]:
    """OSCD's change mask as stored (no georeference), placed with B02's transform and CRS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # known: the file has none
        with rasterio.open(data_dir / city / "cm" / f"{city}-cm.tif") as src:
            values = src.read(1)
    with rasterio.open(band_path(data_dir / city, 1, "B02")) as b02:
        assert values.shape == (b02.height, b02.width)
        return values, b02.transform, b02.crs


def _onto(
    src: np.ndarray, src_transform: Affine, src_crs: CRS, meta: SampleMeta, method: Resampling
) -> np.ndarray:
    """Reproject a source array onto the sample's grid as float64 (NaN outside the source)."""
    out = np.zeros(meta.shape, dtype=np.float64)
    reproject(
        src.astype(np.float64),
        out,
        src_transform=src_transform,
        src_crs=src_crs,
        dst_transform=Affine(*meta.transform),
        dst_crs=CRS.from_user_input(meta.crs),
        src_nodata=None,
        dst_nodata=np.nan,
        resampling=method,
    )
    return out


def test_release_covers_every_city_and_verifies(run: OSCDRun) -> None:
    result = run.result
    print(
        "\nOSCD e2e:",
        result.cells,
        "cells,",
        result.samples,
        "samples,",
        result.quarantined,
        "quarantined,",
        f"{result.seconds:.1f} s",
        dict(result.stage_seconds),
    )
    for stage, reason, n in funnel(result.manifest):
        print(f"  quarantine {stage}:{reason} = {n}")
    check = verify_release(result.release_dir)
    assert check.ok, "\n".join(check.problems[:20])
    assert check.samples == result.samples == len(run.samples)
    # one outcome per planned cell: a sample or a quarantine record, nothing dropped silently
    assert result.samples + result.quarantined == result.cells
    # every cell lies inside both scenes of its city: most must become samples
    assert result.samples >= 0.8 * result.cells, funnel(result.manifest)
    regions = {SampleMeta.model_validate_json(s["json"]).region for s in run.samples}
    assert regions == set(CITIES)
    keys = [s["__key__"] for s in run.samples]
    assert len(set(keys)) == len(keys)


def test_samples_are_georeferenced_in_their_city(run: OSCDRun) -> None:
    for s, meta in run.metas():
        epsg = CITY_EPSG[meta.region]
        assert meta.crs == f"EPSG:{epsg}", meta.key
        assert meta.cell_id.startswith(f"{epsg % 100:02d}{'N' if epsg < 32700 else 'S'}-640-")
        for name in ("before.tif", "after.tif"):
            dn, crs, transform, nodata = _tif(s[name])
            assert crs.to_epsg() == epsg, (meta.key, name, crs)
            assert transform == Affine(*meta.transform), (meta.key, name)
            assert dn.shape == (len(BANDS), CELL_PX, CELL_PX) and dn.dtype == np.uint16
            assert transform.a == RES_M and transform.e == -RES_M
            assert nodata == 0 and int((dn == 0).sum()) == 0, meta.key  # cells lie inside the data
        left, top = transform @ (0, 0)
        right, bottom = transform @ (CELL_PX, CELL_PX)
        to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
        cell = box(left, bottom, right, top).segmentize(CELL_PX * RES_M / 8)
        cell_lonlat = shapely.transform(cell, to_lonlat.transform, interleaved=False)
        footprint = run.footprints[meta.region]
        assert footprint.buffer(FOOTPRINT_TOL_DEG).contains(cell_lonlat), meta.key
        x0, y0, x1, y1 = cell_lonlat.bounds
        assert meta.bbox_lonlat == pytest.approx((x0, y0, x1, y1), abs=1e-6), meta.key


def test_before_image_is_the_original_scene_on_the_cell_grid(run: OSCDRun) -> None:
    """before.tif (not shifted by co-registration) equals an independent reprojection of the
    original DN, band by band: radiometry (DN x 1e-4, no offset) and placement are right."""
    cache: dict[tuple[str, str], tuple[np.ndarray, Affine, CRS]] = {}
    for s, meta in run.metas():
        d1, _ = read_dates(run.data_dir / meta.region)
        assert meta.before_item == item_id(meta.region, d1)
        dn, _, _, _ = _tif(s["before.tif"])
        refl = dn.astype(np.float64) * meta.dn_scale + meta.dn_offset
        for i, band in enumerate(meta.bands):
            key = (meta.region, band)
            if key not in cache:
                with rasterio.open(band_path(run.data_dir / meta.region, 1, band)) as src:
                    cache[key] = (src.read(1), src.transform, src.crs)
            src_dn, src_transform, src_crs = cache[key]
            expected = _onto(src_dn, src_transform, src_crs, meta, Resampling.bilinear) * 1e-4
            assert np.isfinite(expected).all(), meta.key
            # two GDAL bilinear warps differ by a few DN; a one-pixel offset drops the
            # correlation below 0.95 on these urban cells, a wrong scale/offset moves the mean
            corr = float(np.corrcoef(refl[i].ravel(), expected.ravel())[0, 1])
            bias = float(np.mean(refl[i] - expected))
            assert corr >= 0.995 and abs(bias) <= 5e-4, (meta.key, band, corr, bias)


def test_json_records_coregistration_and_unknown_clear_fraction(run: OSCDRun) -> None:
    applied = 0
    for s, meta in run.metas():
        raw = json.loads(s["json"])
        # unknown (no classification band in L1C), recorded as null, never assumed to be 1
        assert "before_clear" in raw and raw["before_clear"] is None, meta.key
        assert "after_clear" in raw and raw["after_clear"] is None, meta.key
        coreg = raw["coreg"]
        assert {"shift_px", "residual_px", "applied"} <= set(coreg), meta.key
        dy, dx = meta.coreg.shift_px
        assert np.isfinite([dy, dx, meta.coreg.residual_px]).all(), meta.key
        assert max(abs(dy), abs(dx)) <= 3.0 and 0 <= meta.coreg.residual_px <= 0.5, meta.key
        applied += meta.coreg.applied
        d1, d2 = read_dates(run.data_dir / meta.region)
        assert (meta.t0, meta.t1) == (d1, d2), meta.key
        assert meta.key == f"{meta.cell_id}_{d1:%Y%m%d}_{d2:%Y%m%d}"
        assert meta.after_item == item_id(meta.region, d2)
        assert meta.label_source == "change_mask:cm" and meta.label_items == (meta.after_item,)
        assert meta.collection == COLLECTION_ID and meta.bands == BANDS
        assert meta.licence == LICENCE and meta.attribution == ATTRIBUTION
        assert meta.before_valid == 1.0 and meta.after_valid == 1.0, meta.key
    print(f"\nco-registration applied on {applied} of {len(run.samples)} samples")


def test_masks_agree_with_oscd_change_masks(run: OSCDRun) -> None:
    truth_total: dict[str, int] = defaultdict(int)
    mask_total: dict[str, int] = defaultdict(int)
    both: dict[str, int] = defaultdict(int)
    either: dict[str, int] = defaultdict(int)
    originals = {city: _original_change(run.data_dir, city) for city in CITIES}
    for s, meta in run.metas():
        values, transform, crs = originals[meta.region]
        truth = _onto(values, transform, crs, meta, Resampling.nearest)
        assert np.isin(truth, (1, 2)).all(), meta.key  # the cell lies inside the labelled area
        mask = _png(s["mask.png"])
        assert mask.shape == meta.shape and set(np.unique(mask).tolist()) <= {0, 255}
        changed = mask == 255
        expected = truth == 2
        agree = float((changed == expected).mean())
        assert agree >= 0.99, (meta.key, agree)
        assert meta.facts.binary and meta.facts.changed_pixels == int(changed.sum()), meta.key
        assert meta.facts.valid_pixels == CELL_PX * CELL_PX, meta.key
        truth_total[meta.region] += int(expected.sum())
        mask_total[meta.region] += int(changed.sum())
        both[meta.region] += int((changed & expected).sum())
        either[meta.region] += int((changed | expected).sum())
    print(
        "\nchanged px per city (mask / truth):",
        {c: (mask_total[c], truth_total[c]) for c in CITIES},
    )
    for city in CITIES:
        assert truth_total[city] > 0, city  # the comparison is not vacuous
        assert abs(mask_total[city] - truth_total[city]) <= 0.25 * truth_total[city], (
            city,
            mask_total[city],
            truth_total[city],
        )
        # the same pixels, not just as many: a one-pixel offset gives an IoU of ~0.65-0.75 here
        assert both[city] / either[city] >= 0.9, (city, both[city], either[city])


def test_every_member_decodes(run: OSCDRun) -> None:
    for s in run.samples:
        key = s["__key__"]
        assert set(SAMPLE_MEMBERS) <= set(s), key
        meta = SampleMeta.model_validate_json(s["json"])
        assert meta.key == key
        for name in ("before.tif", "after.tif"):
            dn, _, _, _ = _tif(s[name])
            assert dn.shape == (len(BANDS), *meta.shape)
        for name in ("before.png", "after.png"):
            assert _png(s[name]).shape == (*meta.shape, 3), (key, name)
        for name in ("mask.png", "lc_before.png", "lc_after.png"):
            assert _png(s[name]).shape == meta.shape, (key, name)
        for name in ("lc_before.png", "lc_after.png"):  # change-mask labels: land cover unknown
            assert not _png(s[name]).any(), (key, name)
        captions = json.loads(s["captions.json"])
        assert len(captions) >= 5 and all(isinstance(c, str) and c for c in captions), key
        qa = json.loads(s["qa.json"])
        assert qa and all({"type", "question", "answer", "evidence"} <= set(q) for q in qa), key


def test_quarantined_records_say_which_stage_and_why(run: OSCDRun) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(run.result.release_dir / "quarantine.parquet").to_pylist()
    assert len(table) == run.result.quarantined
    counts: dict[str, int] = defaultdict(int)
    for row in table:
        assert row["stage"] and row["reason"] and row["detail"], row
        counts[f"{row['stage']}:{row['reason']}"] += 1
        print(f"  {row['cell_id']} {row['stage']}:{row['reason']}: {row['detail']}")
    assert dict(counts) == run.result.manifest.quarantined


def test_every_qa_item_is_grounded_and_every_box_rederived(run: OSCDRun) -> None:
    from tests.test_grounding import assert_release_grounded

    n_qa, n_boxes = assert_release_grounded(run.samples)
    assert n_qa > 0 and n_boxes > 0
