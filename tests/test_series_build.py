"""Sequence builds end to end (issue 15): the SYNTHETIC series demo catalog (five summers,
yearly land cover with changes injected at known years, known misregistration) built with
``configs/demo-series.yaml``, checked against the catalog's truth.

- the release verifies, says ``mode: series`` and carries the series members;
- each truth polygon's pixels change at exactly the steps between acquisitions whose years
  hold different classes (``step_masks.tif``), and ``first_change.png`` names the first;
- each date is registered onto date 0 by the inverse of its known shift;
- every shipped temporal answer and caption is re-derived by the independent checker from the
  land-cover maps of the dates, read afresh from the catalog;
- builds that cannot work fail with one line: too few dates, a missing land-cover year.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from PIL import Image
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.transform import Affine
from scipy import ndimage
from shapely.geometry import Polygon, mapping
from typer.testing import CliRunner

from geodelta.annotators.temporal import (
    check_temporal_captions,
    check_temporal_qa,
    is_temporal_caption,
)
from geodelta.pipelines.api import build, verify
from geodelta.pipelines.cli import app
from geodelta.pipelines.stages.labels.series import read_series_landcover
from geodelta.schemas import QAItem, SampleMeta, SceneRef, TileJob, load_config
from geodelta.schemas.members import SERIES_SAMPLE_MEMBERS
from geodelta.schemas.qa import QA_TYPES
from geodelta.sources.demo.catalog import write_demo_catalog
from geodelta.sources.demo.series import load_series_truth
from geodelta.sources.raster import RasterAccess, gdal_env_options
from geodelta.sources.static import StaticCatalog
from tests.conftest import REPO

SCALE = 0.5
TEMPORAL_TYPES = frozenset(
    ("when_appeared", "which_first", "change_count", "permanence", "class_trend", "max_area_date")
)
runner = CliRunner()


def _config(catalog: Any, out: Path, **extra: Any) -> Any:
    overrides = {
        "catalog": {"url": str(catalog.catalog_path)},
        "output": {"dir": str(out)},
        "aoi": {"bbox": list(catalog.aoi_bbox)},
        "runner": {"name": "inprocess"},
        "shards": {"max_samples": 8},
        **extra,
    }
    return load_config(REPO / "configs" / "demo-series.yaml", overrides)


@pytest.fixture(scope="module")
def series_build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("series-build")
    cat = write_demo_catalog(root / "catalog", seed=0, scale=SCALE, series=True)
    result = build(_config(cat, root / "release"), mode="overwrite", progress=False)
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    for shard in sorted((result.release_dir / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, name = m.name.split(".", 1)
                f = tar.extractfile(m)
                assert f is not None
                samples[key][name] = f.read()
    return {"catalog": cat, "release": result.release_dir, "samples": dict(samples)}


def _tif(data: bytes) -> tuple[np.ndarray, list[str]]:
    with rasterio.MemoryFile(data) as mem, mem.open() as ds:
        return ds.read(), list(ds.descriptions)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_the_series_release_verifies_with_its_members(series_build: dict[str, Any]) -> None:
    check = verify(series_build["release"], strict=True)
    assert check.ok, check.problems
    manifest = json.loads((series_build["release"] / "manifest.json").read_text())
    assert manifest["mode"] == "series"
    assert tuple(manifest["members"]) == SERIES_SAMPLE_MEMBERS
    assert len(series_build["samples"]) >= 10
    for key, m in series_build["samples"].items():
        assert set(m) == set(SERIES_SAMPLE_MEMBERS), key
        meta = SampleMeta.model_validate_json(m["json"])
        dates = json.loads(m["dates.json"])
        t = len(dates)
        assert t >= 3 and meta.series is not None and len(meta.series.dates) == t
        assert key.endswith(
            f"{dates[0]['datetime'][:10].replace('-', '')}_"
            f"{dates[-1]['datetime'][:10].replace('-', '')}"
        )
        stack, names = _tif(m["series.tif"])
        assert stack.shape[0] == t * len(meta.bands)
        assert names[: len(meta.bands)] == [f"{dates[0]['datetime'][:10]} {b}" for b in meta.bands]
        # the pair is the first and the last date of the sequence, byte for byte
        before, _ = _tif(m["before.tif"])
        after, _ = _tif(m["after.tif"])
        c = len(meta.bands)
        assert np.array_equal(stack[:c], before) and np.array_equal(stack[-c:], after)
        steps, step_names = _tif(m["step_masks.tif"])
        assert steps.shape[0] == t - 1 and steps.dtype == np.uint8
        assert step_names[0] == f"{dates[0]['datetime'][:10]}..{dates[1]['datetime'][:10]}"
        first = _png(m["first_change.png"])
        changed = steps > 0
        expect = np.where(changed.any(0), changed.argmax(0) + 1, 0)
        assert np.array_equal(first, expect), key
        qa = [QAItem.model_validate(q) for q in json.loads(m["qa.json"])]
        assert {q.type for q in qa} <= set(QA_TYPES)


def _cell_pixels(meta: SampleMeta, geom: Any) -> np.ndarray:
    to_cell = Transformer.from_crs("EPSG:4326", meta.crs, always_xy=True)
    xs, ys = to_cell.transform(*geom.exterior.xy)
    poly = Polygon(zip(xs, ys, strict=True))
    inside = rasterize(
        [(mapping(poly), 1)],
        out_shape=meta.shape,
        transform=Affine(*meta.transform),
        fill=0,
        dtype="uint8",
    ).astype(bool)
    return ndimage.binary_erosion(inside, iterations=2)  # away from resampled edges


def test_changes_happen_at_the_steps_the_truth_says(series_build: dict[str, Any]) -> None:
    truth = load_series_truth(series_build["catalog"].root)
    checked = 0
    for key, m in series_build["samples"].items():
        meta = SampleMeta.model_validate_json(m["json"])
        years = [datetime.fromisoformat(d["datetime"]).year for d in json.loads(m["dates.json"])]
        steps, _ = _tif(m["step_masks.tif"])
        first = _png(m["first_change.png"])
        for change in truth.changes:
            px = _cell_pixels(meta, change["geometry"])
            if px.sum() < 9:
                continue
            classes = [change["classes_by_year"][y] for y in years]
            want = [k for k in range(1, len(years)) if classes[k] != classes[k - 1]]
            for k in range(1, len(years)):
                frac = float((steps[k - 1][px] > 0).mean())
                assert (frac > 0.95) if k in want else (frac < 0.05), (key, change["id"], k)
            values, counts = np.unique(first[px], return_counts=True)
            assert int(values[counts.argmax()]) == (want[0] if want else 0), (key, change["id"])
            checked += 1
    assert checked >= 4  # the polygons inside the built cells, each checked at every step


def test_every_date_is_registered_onto_date_0(series_build: dict[str, Any]) -> None:
    truth = load_series_truth(series_build["catalog"].root)
    for key, m in series_build["samples"].items():
        dates = json.loads(m["dates.json"])
        ref = truth.shifts[dates[0]["item_id"]]
        for d in dates[1:]:
            dy, dx = truth.shifts[d["item_id"]]
            # the correction that aligns date k onto date 0 undoes the content displacement
            want = (-(dy - ref[0]), -(dx - ref[1]))
            got = d["shift_px"]
            assert abs(got[0] - want[0]) < 0.2 and abs(got[1] - want[1]) < 0.2, (key, d)
            assert d["residual_px"] <= 0.5


def test_shipped_temporal_answers_are_rederived_from_the_maps(
    series_build: dict[str, Any],
) -> None:
    cat = series_build["catalog"]
    cfg = _config(cat, series_build["release"])
    catalog = StaticCatalog(str(cat.catalog_path))
    by_id = {s.item_id: s for s in catalog.scenes(cfg.labels.collection)}
    access = RasterAccess(gdal_env_options(None), None)
    n_items = 0
    for key, m in series_build["samples"].items():
        meta = SampleMeta.model_validate_json(m["json"])
        dates = json.loads(m["dates.json"])
        items: list[SceneRef] = [by_id[d["label_item"]] for d in dates]
        job = TileJob(
            cell_id=meta.cell_id,
            crs=meta.crs,
            transform=meta.transform,
            shape=meta.shape,
            bbox_lonlat=meta.bbox_lonlat,
            t0_window=cfg.time.t0,
            t1_window=cfg.time.t1,
        )
        lc = read_series_landcover(items, job, cfg.labels, access)
        assert isinstance(lc, np.ndarray)
        when = [datetime.fromisoformat(d["datetime"]) for d in dates]
        px = cfg.labels.min_region_px
        qa = [QAItem.model_validate(q) for q in json.loads(m["qa.json"])]
        temporal = [q for q in qa if q.type in TEMPORAL_TYPES]
        for q in temporal:
            assert check_temporal_qa(q, lc, when, min_region_px=px) == [], (key, q)
        captions = [c for c in json.loads(m["captions.json"]) if is_temporal_caption(c)]
        assert captions  # every sequence sample says something about its dates
        assert check_temporal_captions(captions, lc, when, min_region_px=px) == [], key
        n_items += len(temporal)
    assert n_items >= 30


def _series_yaml(tmp_path: Path, catalog: Any, **series: Any) -> Path:
    data = yaml.safe_load((REPO / "configs" / "demo-series.yaml").read_text())
    data["catalog"]["url"] = str(catalog.catalog_path)
    data["aoi"] = {"bbox": list(catalog.aoi_bbox)}
    data["output"] = {"dir": str(tmp_path / "release")}
    data["runner"] = {"name": "inprocess"}
    data["time"]["series"].update(series)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _one_error(res: Any) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_too_few_dates_stops_the_build_naming_the_dates(
    tmp_path: Path, series_build: dict[str, Any]
) -> None:
    # windows 2021, 2022, 2023: the catalog has no 2023 summer, so two dates per cell at most
    path = _series_yaml(tmp_path, series_build["catalog"], start="2021-06-01", end="2023-09-01")
    line = _one_error(runner.invoke(app, ["build", str(path), "--no-progress"]))
    assert "pair:too_few_dates" in line and "fewer than time.series.min_dates (3)" in line
    assert "2 of 3 windows" in line and "2021-06-01..2021-09-01: 2021-06-19" in line
    assert not (tmp_path / "release" / "manifest.json").exists()  # no release


def test_a_missing_land_cover_year_is_named(tmp_path: Path, series_build: dict[str, Any]) -> None:
    cat = series_build["catalog"]
    copy = tmp_path / "catalog"
    shutil.copytree(cat.root, copy)
    coll = copy / "geodelta-demo-landcover" / "collection.json"
    doc = json.loads(coll.read_text())
    doc["links"] = [ln for ln in doc["links"] if "DEMO_LC_2020" not in ln["href"]]
    coll.write_text(json.dumps(doc))
    shutil.rmtree(copy / "geodelta-demo-landcover" / "DEMO_LC_2020")
    moved = type(cat)(
        root=copy,
        catalog_path=copy / "catalog.json",
        aoi_bbox=cat.aoi_bbox,
        truth_dir=copy / "truth",
    )
    line = _one_error(
        runner.invoke(app, ["build", str(_series_yaml(tmp_path, moved)), "--no-progress"])
    )
    assert "label:missing_label_year" in line and "2020" in line


def test_beam_builds_the_same_bytes(tmp_path: Path, series_build: dict[str, Any]) -> None:
    """The same sequences on Beam's FnApiRunner (2 worker processes): the same shards and
    manifest, byte for byte, as the in-process build."""
    cfg = _config(
        series_build["catalog"],
        tmp_path / "release",
        runner={"name": "direct", "workers": 2, "mode": "multi_processing"},
    )
    beam = build(cfg, mode="overwrite", progress=False).release_dir
    ours = series_build["release"]
    assert (beam / "manifest.json").read_bytes() == (ours / "manifest.json").read_bytes()
    for shard in sorted((ours / "shards").glob("*.tar")):
        assert (beam / "shards" / shard.name).read_bytes() == shard.read_bytes(), shard.name


def test_the_report_has_the_dates_section(series_build: dict[str, Any]) -> None:
    html = (series_build["release"] / "report" / "index.html").read_text()
    assert "<section id='series'>" in html or '<section id="series">' in html
    assert "Dates and temporal QA" in html


@pytest.mark.integration
def test_an_llm_annotates_sequences_with_checked_temporal_answers(
    tmp_path: Path, series_build: dict[str, Any]
) -> None:
    """The openai annotator over HTTP (the local test double, answering the prompt's series
    part too): its temporal captions and QA reach the shards, each re-checked."""
    from tests.test_temporal_llm import SeriesDouble

    with SeriesDouble() as double:
        cfg = _config(
            series_build["catalog"],
            tmp_path / "release",
            annotation={
                "annotator": "openai",
                "openai": {
                    "base_url": double.base_url,
                    "api_key_env": None,
                    "model": "gpt-4o-mini",
                    "max_backoff_s": 0.2,
                    "cache_dir": str(tmp_path / "cache"),
                },
            },
        )
        result = build(cfg, mode="overwrite", progress=False)
        assert any("<series_facts>" in p for p in double.prompts)
    assert verify(result.release_dir).ok
    from geodelta.pipelines.release.layout import iter_tar_samples, shard_files

    n = 0
    for shard in shard_files(result.release_dir):
        for key, m in iter_tar_samples(shard):
            meta = json.loads(m["json"])
            assert meta["annotator"] != "template" and meta["model"] == "gpt-4o-mini", key
            n += sum(q["type"] in TEMPORAL_TYPES for q in json.loads(m["qa.json"]))
    assert n >= 30


@pytest.mark.slow
def test_demo_series_command_builds_and_verifies(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        [
            "demo",
            "--series",
            "--scale",
            "0.3",
            "--no-reference",
            "--no-progress",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    assert manifest["mode"] == "series" and manifest["name"] == "geodelta-demo-series"
    assert "verified" in res.output
    assert (tmp_path / "catalog" / "truth" / "changes.geojson").is_file()


def test_the_llava_export_shows_every_date(tmp_path: Path, series_build: dict[str, Any]) -> None:
    """TEOChat-style export of a sequence: one image per date in time order, the first turn
    naming the dates; date 0 and date T-1 render as before.png and after.png (within one 8-bit
    level: the date images are drawn from series.tif's integer DN)."""
    from geodelta.pipelines.api import export

    out = export(series_build["release"], tmp_path / "llava")
    assert sum(out.conversations.values()) == len(series_build["samples"])
    convs = [
        c
        for split in out.conversations
        for c in json.loads((tmp_path / "llava" / f"{split}.json").read_text())
    ]
    for conv in convs:
        dates = json.loads(series_build["samples"][conv["id"]]["dates.json"])
        assert conv["dates"] == [datetime.fromisoformat(d["datetime"]).isoformat() for d in dates]
        assert len(conv["image"]) == len(dates)
        first = conv["conversations"][0]["value"]
        assert first.count("<image>") == len(dates)
        assert all(d["datetime"][:10] in first for d in dates)
        pngs = [_png((tmp_path / "llava" / p).read_bytes()).astype(int) for p in conv["image"]]
        m = series_build["samples"][conv["id"]]
        assert np.abs(pngs[0] - _png(m["before.png"]).astype(int)).max() <= 1
        assert np.abs(pngs[-1] - _png(m["after.png"]).astype(int)).max() <= 1


def test_a_dry_run_picks_the_dates_the_build_picked(series_build: dict[str, Any]) -> None:
    """``geodelta search --dry-run --read-clear`` on a sequence config: per cell, exactly the
    dates the build chose (pixel-level), without reading imagery bands."""
    from geodelta.pipelines.api import search

    cfg = _config(series_build["catalog"], series_build["release"])
    report = search(cfg, read_clear=True)
    assert report.series and report.paired == len(series_build["samples"])
    built = {
        SampleMeta.model_validate_json(m["json"]).cell_id: [
            d["item_id"] for d in json.loads(m["dates.json"])
        ]
        for m in series_build["samples"].values()
    }
    assert {c.cell_id: c.as_dict()["dates"] for c in report.cells} == built
    line = next(ln for ln in report.summary_lines() if ln.startswith("sequence dates"))
    assert f"{len(built)} of {len(built)} cells have enough dates" in line


def test_drift_names_the_sequences_that_used_a_changed_middle_date(
    tmp_path: Path, series_build: dict[str, Any]
) -> None:
    """``geodelta drift`` on a sequence release searches the series span (an unchanged catalog:
    no drift), and a changed item that was only a middle date of some sequences affects
    exactly those samples."""
    from geodelta.pipelines.api import drift

    cat = series_build["catalog"]
    assert not drift(series_build["release"], catalog=str(cat.catalog_path)).drifted
    used: dict[str, set[str]] = defaultdict(set)
    for key, m in series_build["samples"].items():
        for d in json.loads(m["dates.json"])[1:-1]:
            used[d["item_id"]].add(key)
    item = sorted(used)[0]
    copy = tmp_path / "catalog"
    shutil.copytree(cat.root, copy)
    path = copy / "geodelta-demo-s2l2a" / item / f"{item}.json"
    doc = json.loads(path.read_text())
    doc["properties"]["s2:processing_baseline"] = "05.10"  # reprocessed under the same id
    path.write_text(json.dumps(doc))
    out = drift(series_build["release"], catalog=str(copy / "catalog.json"))
    assert out.drifted and [(i.item_id, i.change) for i in out.items] == [(item, "changed")]
    assert set(out.items[0].samples) == used[item]
