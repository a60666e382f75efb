"""The series demo catalog (``write_demo_catalog(..., series=True)``) against its own truth."""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.features import rasterize
from skimage.filters import window
from skimage.registration import phase_cross_correlation

from geodelta.schemas.classes import WORLDCOVER_TO_GEODELTA
from geodelta.schemas.config import load_config
from geodelta.schemas.series import series_windows
from geodelta.sources.demo import load_series_truth as lazy_load_series_truth
from geodelta.sources.demo.catalog import (
    BANDS,
    IMAGERY_COLLECTION,
    LANDCOVER_COLLECTION,
    SERIES_DATES,
    SERIES_YEARS,
    DemoCatalog,
    DemoCatalogError,
    load_series_truth,
    load_truth,
    write_demo_catalog,
)
from geodelta.sources.demo.constants import SERIES_CHANGE_KINDS

REPO = Path(__file__).resolve().parent.parent
SCALE = 0.3
CLEAR = (4, 5, 6, 7, 11)
ZONE_EPSG = (32631, 32632)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    root = tmp_path_factory.mktemp("series") / "cat"
    return write_demo_catalog(root, seed=0, scale=SCALE, series=True)


@pytest.fixture(scope="module")
def catalog(series: DemoCatalog) -> pystac.Catalog:
    return pystac.Catalog.from_file(str(series.catalog_path))


@pytest.fixture(scope="module")
def imagery(catalog: pystac.Catalog) -> list[pystac.Item]:
    coll = catalog.get_child(IMAGERY_COLLECTION)
    assert coll is not None
    return sorted(coll.get_items(), key=lambda it: (it.properties["proj:code"], it.datetime))


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _landcover(series: DemoCatalog, year: int) -> tuple[np.ndarray, Any]:
    path = series.root / LANDCOVER_COLLECTION / f"DEMO_LC_{year}" / "map.tif"
    with rasterio.open(path) as src:
        return src.read(1), src.transform


def _read(item: pystac.Item, key: str) -> np.ndarray:
    with rasterio.open(item.assets[key].get_absolute_href()) as src:
        return src.read(1)


def _clear10(item: pystac.Item) -> np.ndarray:
    return np.isin(_read(item, "SCL"), CLEAR).repeat(2, axis=0).repeat(2, axis=1)


def _nir(item: pystac.Item) -> np.ndarray:
    rb = item.assets["B08"].extra_fields["raster:bands"][0]
    return _read(item, "B08").astype(np.float64) * rb["scale"] + rb["offset"]


# ------------------------------------------------------------------------------ structure


def test_catalog_opens_with_two_collections(catalog: pystac.Catalog) -> None:
    children = {c.id for c in catalog.get_children()}
    assert children == {IMAGERY_COLLECTION, LANDCOVER_COLLECTION}
    imagery = catalog.get_child(IMAGERY_COLLECTION)
    assert imagery is not None
    start, end = imagery.extent.temporal.intervals[0]
    assert start is not None and end is not None
    assert (start.date().isoformat(), end.date().isoformat()) == ("2018-06-10", "2022-08-18")


def test_five_yearly_landcover_items(series: DemoCatalog, catalog: pystac.Catalog) -> None:
    coll = catalog.get_child(LANDCOVER_COLLECTION)
    assert coll is not None
    items = {it.id: it for it in coll.get_items()}
    assert sorted(items) == [f"DEMO_LC_{y}" for y in range(2018, 2023)]
    assert SERIES_YEARS == (2018, 2019, 2020, 2021, 2022)
    for year in SERIES_YEARS:
        it = items[f"DEMO_LC_{year}"]
        # as io-lulc-annual-v02: start/end datetime span the year
        assert it.common_metadata.start_datetime == datetime(year, 1, 1, tzinfo=UTC)
        assert it.common_metadata.end_datetime == datetime(year, 12, 31, 23, 59, 59, tzinfo=UTC)
        assert set(it.assets) == {"map"}
        legend = it.assets["map"].extra_fields["classification:classes"]
        assert {c["value"] for c in legend} <= set(WORLDCOVER_TO_GEODELTA)
        lc, _ = _landcover(series, year)
        assert set(np.unique(lc).tolist()) <= set(WORLDCOVER_TO_GEODELTA)


def test_imagery_three_summer_dates_a_year_on_both_tiles(imagery: list[pystac.Item]) -> None:
    assert len(imagery) == 2 * 3 * len(SERIES_YEARS)
    by_zone: dict[str, list[str]] = {}
    for it in imagery:
        assert set(it.assets) == {*BANDS, "SCL"}
        assert it.datetime is not None
        by_zone.setdefault(it.properties["proj:code"], []).append(it.datetime.date().isoformat())
    expected = [d for y in SERIES_YEARS for d in SERIES_DATES[y]]
    assert by_zone == {f"EPSG:{e}": expected for e in ZONE_EPSG}
    grid0 = date(2020, 6, 14)  # the 5-day revisit grid of the pair demo
    for year in SERIES_YEARS:
        days = [date.fromisoformat(d) for d in SERIES_DATES[year]]
        assert len(days) == 3 and days == sorted(days)
        assert all(date(year, 6, 1) <= d < date(year, 9, 1) for d in days)
        assert all((d - grid0).days % 5 == 0 for d in days)


def test_config_windows_hold_one_summer_each(imagery: list[pystac.Item]) -> None:
    cfg = load_config(REPO / "configs" / "demo-series.yaml")
    assert cfg.name == "geodelta-demo-series"
    assert cfg.time.series is not None
    windows = series_windows(cfg.time.series)
    assert len(windows) == len(SERIES_YEARS)
    assert (cfg.time.t0, cfg.time.t1) == (
        (windows[0].start, windows[0].end),
        (windows[-1].start, windows[-1].end),
    )
    for win, year in zip(windows, SERIES_YEARS, strict=True):
        inside = {
            it.datetime.date().isoformat()
            for it in imagery
            if it.datetime is not None and win.contains(it.datetime)
        }
        assert inside == set(SERIES_DATES[year])
    # date 0 and date T-1 are four summers apart: pairing allows that gap
    gap = (windows[-1].end - windows[0].start) / timedelta(days=1)
    assert cfg.pairing.max_gap_days >= gap


def test_some_summer_dates_are_cloudy_over_part_of_the_aoi(imagery: list[pystac.Item]) -> None:
    cover = [it.properties["eo:cloud_cover"] for it in imagery]
    assert max(cover) > 2.0 and min(cover) < 1.0
    assert all(c < 50 for c in cover)
    # every tile and summer has a date clear over most of the tile
    for epsg, year in itertools.product(ZONE_EPSG, SERIES_YEARS):
        summer = [
            it
            for it in imagery
            if it.properties["proj:code"] == f"EPSG:{epsg}"
            and it.datetime is not None
            and it.datetime.year == year
        ]
        assert max(float(_clear10(it).mean()) for it in summer) > 0.9, (epsg, year)


# ---------------------------------------------------------------------------------- truth


def test_truth_polygons_hold_the_recorded_class_every_year(series: DemoCatalog) -> None:
    truth = load_series_truth(series.root)
    assert truth.years == SERIES_YEARS
    maps = {year: _landcover(series, year) for year in SERIES_YEARS}
    lc0, transform = maps[SERIES_YEARS[0]]
    index = rasterize(
        [(c["geometry"], i + 1) for i, c in enumerate(truth.changes)],
        out_shape=lc0.shape,
        transform=transform,
        dtype="int32",
    )
    outside = index == 0
    for year, (lc, tr) in maps.items():
        assert tr == transform
        assert np.array_equal(lc[outside], lc0[outside]), year  # no change outside the truth
        for i, ch in enumerate(truth.changes):
            mine = index == i + 1
            assert mine.sum() > 50, ch["id"]
            code = ch["worldcover_by_year"][year]
            assert np.all(lc[mine] == code), (ch["id"], year)
            assert ch["classes_by_year"][year] == WORLDCOVER_TO_GEODELTA[code]
    # the pixels that change between two years are exactly the polygons changing that year
    for prev, year in itertools.pairwise(SERIES_YEARS):
        changing = [i + 1 for i, c in enumerate(truth.changes) if year in c["change_years"]]
        assert np.array_equal(maps[prev][0] != maps[year][0], np.isin(index, changing)), year


def test_truth_histories_permanent_transient_and_twice(series: DemoCatalog) -> None:
    truth = load_series_truth(series.root)
    assert {c["kind"] for c in truth.changes} == set(SERIES_CHANGE_KINDS)
    first = {}
    for ch in truth.changes:
        first.setdefault(ch["kind"], ch)
        by_year = ch["worldcover_by_year"]
        assert list(by_year) == list(SERIES_YEARS)
        recomputed = tuple(
            y for p, y in itertools.pairwise(SERIES_YEARS) if by_year[y] != by_year[p]
        )
        assert ch["change_years"] == recomputed and recomputed
        assert ch["permanent"] == (by_year[2022] != by_year[2018])
        assert (ch["from_class"], ch["to_class"]) == (
            ch["classes_by_year"][2018],
            ch["classes_by_year"][2022],
        )
    built, forest = first["new_built_up"], first["deforestation"]
    assert built["change_years"] == (2020,) and built["classes_by_year"][2022] == "built_up"
    assert forest["change_years"] == (2021,) and forest["classes_by_year"][2018] == "tree_cover"
    flood = first["flood"]
    assert [flood["classes_by_year"][y] for y in SERIES_YEARS] == [
        "grassland",
        "water",
        "grassland",
        "grassland",
        "grassland",
    ]
    assert flood["change_years"] == (2019, 2020) and not flood["permanent"]
    twice = first["double_change"]
    assert [twice["classes_by_year"][y] for y in SERIES_YEARS] == [
        "cropland",
        "grassland",
        "grassland",
        "bare",
        "bare",
    ]
    assert twice["change_years"] == (2019, 2021) and twice["permanent"]
    # changes appear in every year after the first
    assert {y for c in truth.changes for y in c["change_years"]} == set(SERIES_YEARS[1:])
    raw = json.loads((series.truth_dir / "changes.geojson").read_text())
    props = raw["features"][0]["properties"]
    assert raw["years"] == list(SERIES_YEARS)
    assert set(props["classes_by_year"]) == {str(y) for y in SERIES_YEARS}
    assert isinstance(props["worldcover_by_year"]["2018"], int)


def test_shifts_recorded_and_present_in_imagery(
    series: DemoCatalog, imagery: list[pystac.Item]
) -> None:
    truth = load_series_truth(series.root)
    assert set(truth.shifts) == {it.id for it in imagery}
    doc = json.loads((series.truth_dir / "shifts.json").read_text())
    assert "(-dy, -dx)" in doc["convention"] and doc["units"].startswith("pixels")
    for it in imagery:
        dy, dx = truth.shifts[it.id]
        assert it.datetime is not None
        if it.datetime.year == SERIES_YEARS[0]:
            assert (dy, dx) == (0.0, 0.0)
        else:
            assert 0.2 <= abs(dy) <= 1.5 and 0.2 <= abs(dx) <= 1.5, it.id
    assert len(set(truth.shifts.values())) == 2 * 3 * (len(SERIES_YEARS) - 1) + 1
    # phase correlation against a reference item measures the recorded shift, one item a year
    size = 160
    hann = window("hann", (size, size))
    checked = 0
    for epsg in ZONE_EPSG:
        items = [it for it in imagery if it.properties["proj:code"] == f"EPSG:{epsg}"]
        refs = [it for it in items if it.datetime is not None and it.datetime.year == 2018]
        for year in SERIES_YEARS[1:]:
            later = [it for it in items if it.datetime is not None and it.datetime.year == year]
            found = _clear_window_pair(refs, later, size)
            if found is None:
                continue
            ref_item, item, (r, c) = found
            ref = _nir(ref_item)[r : r + size, c : c + size]
            mov = _nir(item)[r : r + size, c : c + size]
            measured, _, _ = phase_cross_correlation(
                (ref - ref.mean()) * hann, (mov - mov.mean()) * hann, upsample_factor=50
            )
            dy, dx = truth.shifts[item.id]
            assert measured == pytest.approx((-dy, -dx), abs=0.2), (item.id, measured)
            checked += 1
    assert checked >= 6


def _clear_window_pair(
    refs: list[pystac.Item], later: list[pystac.Item], size: int
) -> tuple[pystac.Item, pystac.Item, tuple[int, int]] | None:
    for ref, item in itertools.product(refs, later):
        both = _clear10(ref) & _clear10(item)
        h, w = both.shape
        for r in range(0, h - size + 1, 32):
            for c in range(0, w - size + 1, 32):
                if both[r : r + size, c : c + size].all():
                    return ref, item, (r, c)
    return None


# ---------------------------------------------------------------------- determinism, errors


def test_same_seed_gives_identical_files(series: DemoCatalog, tmp_path: Path) -> None:
    again = write_demo_catalog(tmp_path / "again", seed=0, scale=SCALE, series=True)
    hashes = _hashes(series.root)
    assert hashes == _hashes(again.root)
    assert len(hashes) == 1 + 2 + 5 * 2 + 30 * 6 + 2  # catalog, collections, items, truth


def test_truth_readers_tell_pair_from_series(series: DemoCatalog, tmp_path: Path) -> None:
    assert lazy_load_series_truth is load_series_truth
    pair = write_demo_catalog(tmp_path / "pair", seed=0, scale=0.1)
    assert len(_hashes(pair.root)) == 1 + 2 + 2 * 2 + 12 * 6 + 2  # series=False: the pair demo
    with pytest.raises(DemoCatalogError, match="pair demo catalog") as err:
        load_series_truth(pair.root)
    assert err.value.key == "series"
    with pytest.raises(DemoCatalogError, match="no demo truth"):
        load_series_truth(tmp_path / "nowhere")
    # the pair reader still reads a series truth: first and last year as from / to
    flat = load_truth(series.root)
    series_truth = load_series_truth(series.root)
    assert [c["from_class"] for c in flat.changes] == [
        c["classes_by_year"][2018] for c in series_truth.changes
    ]
    assert flat.shifts == series_truth.shifts
    bad = tmp_path / "bad" / "truth"
    bad.mkdir(parents=True)
    (bad / "changes.geojson").write_text(json.dumps({"years": [2018], "features": [{}]}))
    (bad / "shifts.json").write_text(json.dumps({"shifts": {}}))
    with pytest.raises(DemoCatalogError, match="malformed demo truth"):
        load_series_truth(bad.parent)
