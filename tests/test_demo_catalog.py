"""The synthetic demo STAC catalog (sources/demo/) against its own truth."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import rasterize
from scipy import ndimage
from shapely.geometry import Polygon
from skimage.filters import window
from skimage.registration import phase_cross_correlation

from geodelta.schemas.classes import WORLDCOVER_TO_GEODELTA
from geodelta.sources.demo.catalog import (
    BANDS,
    DEMO_AOI,
    IMAGERY_COLLECTION,
    LANDCOVER_COLLECTION,
    T0_WINDOW,
    T1_WINDOW,
    DemoCatalog,
    DemoCatalogError,
    load_truth,
    write_demo_catalog,
)
from geodelta.sources.demo.world import demo_cells

SCALE = 0.3
CLEAR = (4, 5, 6, 7, 11)
M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(45.045))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return write_demo_catalog(tmp_path_factory.mktemp("demo") / "cat", seed=0, scale=SCALE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return write_demo_catalog(tmp_path_factory.mktemp("tiny") / "cat", seed=0, scale=0.1)


@pytest.fixture(scope="module")
def catalog(demo: DemoCatalog) -> pystac.Catalog:
    return pystac.Catalog.from_file(str(demo.catalog_path))


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


def _raw(item: pystac.Item) -> dict[str, Any]:
    """The item JSON as written (pystac migrates proj:epsg away when it reads)."""
    href = item.get_self_href()
    assert href is not None
    return json.loads(Path(href).read_text())


def _read(item: pystac.Item, key: str) -> tuple[np.ndarray, Any]:
    with rasterio.open(item.assets[key].get_absolute_href()) as src:
        return src.read(1), src.transform


def _epsg(item: pystac.Item) -> int:
    return int(item.properties["proj:code"].split(":")[1])


def _clear10(item: pystac.Item) -> np.ndarray:
    """SCL clear mask on the 10 m grid (each 20 m pixel covers 2x2)."""
    scl, _ = _read(item, "SCL")
    return np.isin(scl, CLEAR).repeat(2, axis=0).repeat(2, axis=1)


def _reflectance(item: pystac.Item, band: str) -> np.ndarray:
    dn, _ = _read(item, band)
    rb = item.assets[band].extra_fields["raster:bands"][0]
    return dn.astype(np.float64) * rb["scale"] + rb["offset"]


def _landcover(demo: DemoCatalog, year: int) -> tuple[np.ndarray, Any]:
    path = demo.root / LANDCOVER_COLLECTION / f"DEMO_LC_{year}" / "map.tif"
    with rasterio.open(path) as src:
        return src.read(1), src.transform


def _lc_on_tile(demo: DemoCatalog, year: int, item: pystac.Item) -> np.ndarray:
    """The land-cover map sampled (nearest) at the centres of the item's 10 m pixels."""
    lc, lc_tr = _landcover(demo, year)
    h, w = item.assets["B08"].extra_fields["proj:shape"]
    a, _, c, _, e, f = item.assets["B08"].extra_fields["proj:transform"]
    xx, yy = np.meshgrid(c + (np.arange(w) + 0.5) * a, f + (np.arange(h) + 0.5) * e)
    lon, lat = Transformer.from_crs(_epsg(item), 4326, always_xy=True).transform(xx, yy)
    col = np.floor((lon - lc_tr.c) / lc_tr.a).astype(int)
    row = np.floor((lat - lc_tr.f) / lc_tr.e).astype(int)
    return lc[row, col]


# ------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_files(tiny: DemoCatalog, tmp_path: Path) -> None:
    again = write_demo_catalog(tmp_path / "again", seed=0, scale=0.1)
    first, second = _hashes(tiny.root), _hashes(again.root)
    assert (
        len(first) == 2 * 2 + 12 * 6 + 3 + 2
    )  # LC items, imagery items, catalog+collections, truth
    assert first == second
    assert again.aoi_bbox == tiny.aoi_bbox


def test_other_seed_differs_and_rewrite_replaces(tiny: DemoCatalog, tmp_path: Path) -> None:
    other = write_demo_catalog(tmp_path / "other", seed=1, scale=0.1)
    first, second = _hashes(tiny.root), _hashes(other.root)
    assert first.keys() == second.keys()  # same layout ...
    cogs = [k for k in first if k.endswith(".tif")]
    assert all(first[k] != second[k] for k in cogs)  # ... other content
    assert first["truth/shifts.json"] != second["truth/shifts.json"]
    # writing seed 0 over the seed-1 catalog gives the seed-0 bytes again
    write_demo_catalog(other.root, seed=0, scale=0.1)
    assert _hashes(other.root) == first


def test_bounded_generation_writes_the_bytes_of_the_whole_grid_one(
    demo: DemoCatalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What keeps a large demo in bounded memory and time (tiles rendered a block of rows at a
    time, cloud blobs drawn near their centre only, each change checked against its
    neighbours only) writes the same bytes as the whole-grid forms it replaced: a tile
    rendered whole, every blob over the whole grid, every change against every other."""
    from geodelta.sources.demo import render, world

    class _EveryPolygon(world._PlacedPolygons):
        def __init__(self, gap: float) -> None:
            super().__init__(gap)
            self.all: list[Polygon] = []

        def clear_of(self, poly: Polygon) -> bool:
            near = super().clear_of(poly)
            whole = all(poly.distance(other) > self.gap for other in self.all)
            assert near == whole
            return whole

        def add(self, poly: Polygon) -> None:
            super().add(poly)
            self.all.append(poly)

    assert _tile_rows(demo) > render._ROW_BLOCK  # the demo's tiles span several blocks
    monkeypatch.setattr(render, "_ROW_BLOCK", 10**9)
    monkeypatch.setattr(render, "_BLOB_CUTOFF", math.inf)
    monkeypatch.setattr(world, "_PlacedPolygons", _EveryPolygon)
    whole = write_demo_catalog(tmp_path / "whole", seed=0, scale=SCALE)
    assert _hashes(whole.root) == _hashes(demo.root)


def test_placed_polygons_find_every_near_one() -> None:
    """Checked against its neighbours only, a polygon is found clear exactly when it is more
    than the gap from every placed polygon (boxes 60-400 m, many within the gap of a bucket
    edge)."""
    from geodelta.sources.demo import world

    rng = np.random.default_rng(7)
    placed = world._PlacedPolygons(80.0)
    everyone: list[Polygon] = []
    answers = []
    for _ in range(600):
        x, y = rng.uniform(-3000.0, 3000.0, 2)
        w, h = rng.uniform(60.0, 400.0, 2)
        poly = shapely.box(x, y, x + w, y + h)
        whole = all(poly.distance(other) > 80.0 for other in everyone)
        assert placed.clear_of(poly) == whole
        answers.append(whole)
        if whole or rng.random() < 0.5:  # overlapping ones too, as a dense map would have
            placed.add(poly)
            everyone.append(poly)
    assert 50 < sum(answers) < 550  # both answers were asked many times


def _tile_rows(demo: DemoCatalog) -> int:
    """Rows of the demo's first imagery tile."""
    first = sorted((demo.root / IMAGERY_COLLECTION).glob("*/B08.tif"))[0]
    with rasterio.open(first) as src:
        return int(src.height)


def test_refuses_foreign_folder_and_bad_scale(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DemoCatalogError, match="not a demo catalog") as err:
        write_demo_catalog(tmp_path)
    assert err.value.key == "out_dir"
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    for bad in (0.0, -1.0, 10.5):
        with pytest.raises(DemoCatalogError, match="scale out of range") as err:
            write_demo_catalog(tmp_path / "x", scale=bad)
        assert err.value.key == "scale"
    assert not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]  # no temporary folder left
    with pytest.raises(DemoCatalogError, match="no demo truth"):
        load_truth(tmp_path)


def test_error_family_and_cheap_package_import() -> None:
    """DemoCatalogError is a geodelta ConfigError (still a ValueError); importing the package
    does not import the generator (rasterio, pystac) until one of its names is used."""
    import subprocess
    import sys

    from geodelta.errors import ConfigError, GeodeltaError

    assert issubclass(DemoCatalogError, ConfigError)
    assert issubclass(DemoCatalogError, GeodeltaError)
    assert issubclass(DemoCatalogError, ValueError)
    code = (
        "import sys, geodelta.sources.demo as d\n"
        "assert 'rasterio' not in sys.modules and 'pystac' not in sys.modules\n"
        "assert d.DemoCatalogError is d.constants.DemoCatalogError\n"
        "from geodelta.sources.demo import DemoCatalog, DemoTruth, load_truth, write_demo_catalog\n"
        "from geodelta.sources.demo import catalog\n"
        "assert write_demo_catalog is catalog.write_demo_catalog and 'rasterio' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- structure


def test_aoi_scaled_around_centre(demo: DemoCatalog) -> None:
    x0, y0, x1, y1 = demo.aoi_bbox
    assert (x0 + x1) / 2 == pytest.approx(6.0) and (y0 + y1) / 2 == pytest.approx(45.045)
    assert x1 - x0 == pytest.approx((DEMO_AOI[2] - DEMO_AOI[0]) * SCALE)
    assert y1 - y0 == pytest.approx((DEMO_AOI[3] - DEMO_AOI[1]) * SCALE)
    assert x0 < 6.0 < x1
    assert demo.catalog_path == demo.root / "catalog.json" and demo.catalog_path.is_file()
    assert demo.truth_dir == demo.root / "truth"


def test_catalog_structure(catalog: pystac.Catalog, imagery: list[pystac.Item]) -> None:
    assert "SYNTHETIC" in catalog.description
    collections = {c.id: c for c in catalog.get_collections()}
    assert set(collections) == {IMAGERY_COLLECTION, LANDCOVER_COLLECTION}
    for coll in collections.values():
        assert coll.license == "CC0-1.0"
        assert "SYNTHETIC" in coll.description
    assert len(imagery) == 12
    assert {_epsg(it) for it in imagery} == {32631, 32632}
    t0 = [it for it in imagery if it.datetime is not None and it.datetime.year == 2020]
    t1 = [it for it in imagery if it.datetime is not None and it.datetime.year == 2021]
    assert len(t0) == len(t1) == 6
    for it, span in [(i, T0_WINDOW) for i in t0] + [(i, T1_WINDOW) for i in t1]:
        assert it.datetime is not None
        assert span[0] <= it.datetime.date().isoformat() <= span[1]
    for it in imagery:
        raw = _raw(it)
        props = raw["properties"]
        assert props["proj:epsg"] == _epsg(it) and props["proj:code"] == f"EPSG:{_epsg(it)}"
        assert props["platform"] in ("sentinel-2a", "sentinel-2b")
        assert props["constellation"] == "sentinel-2"
        assert 0.0 <= props["eo:cloud_cover"] <= 100.0
        assert any("eo/" in e for e in raw["stac_extensions"])
        assert any("raster/" in e for e in raw["stac_extensions"])
        assert any("projection/" in e for e in raw["stac_extensions"])
        assert set(raw["assets"]) == {*BANDS, "SCL"}
        for key, asset in raw["assets"].items():
            assert asset["href"] == f"./{key}.tif"  # self-contained, relative
            rb = asset["raster:bands"]
            if key == "SCL":
                assert rb == [{"data_type": "uint8", "nodata": 0, "spatial_resolution": 20}]
                assert asset["proj:transform"][0] == 20.0
            else:
                assert rb == [
                    {
                        "data_type": "uint16",
                        "nodata": 0,
                        "scale": 0.0001,
                        "offset": -0.1,
                        "spatial_resolution": 10,
                    }
                ]
                (eo,) = asset["eo:bands"]
                assert eo["name"] == key and "center_wavelength" in eo
                assert (
                    eo["common_name"]
                    == dict(zip(BANDS, ("blue", "green", "red", "nir"), strict=True))[key]
                )
                assert asset["proj:transform"][0] == 10.0
                assert asset["proj:transform"][2] % 10 == 0 and asset["proj:transform"][5] % 10 == 0
        band, scl = raw["assets"]["B02"], raw["assets"]["SCL"]
        assert band["proj:shape"] == [2 * n for n in scl["proj:shape"]]
        assert band["proj:bbox"] == scl["proj:bbox"]
    # the same tile grid on every date of a zone
    for epsg in (32631, 32632):
        grids = {
            str(_raw(it)["assets"]["B08"]["proj:transform"]) for it in imagery if _epsg(it) == epsg
        }
        assert len(grids) == 1


def test_tiles_overlap_across_6e(demo: DemoCatalog, imagery: list[pystac.Item]) -> None:
    west = next(it for it in imagery if _epsg(it) == 32631)
    east = next(it for it in imagery if _epsg(it) == 32632)
    assert west.bbox is not None and east.bbox is not None
    assert (west.bbox[2] - 6.0) * M_PER_DEG_LON >= 2000.0  # reaches >= 2 km into zone 32
    assert (6.0 - east.bbox[0]) * M_PER_DEG_LON >= 2000.0  # and the other way round
    x0, y0, x1, y1 = demo.aoi_bbox
    for it, part in ((west, (x0, y0, 6.0, y1)), (east, (6.0, y0, x1, y1))):
        assert it.geometry is not None
        footprint = Polygon(it.geometry["coordinates"][0])
        assert len(footprint.exterior.coords) == 5  # a (slightly rotated) quad
        assert footprint.contains(shapely.box(*part))  # the AOI part in the tile's zone


def test_assets_are_cogs(demo: DemoCatalog, imagery: list[pystac.Item]) -> None:
    lc_items = [demo.root / LANDCOVER_COLLECTION / f"DEMO_LC_{y}" / "map.tif" for y in (2020, 2021)]
    paths = [Path(a.get_absolute_href()) for it in imagery for a in it.assets.values()]
    for path in paths + lc_items:
        with rasterio.open(path) as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", path
            assert src.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
            assert src.overviews(1), path
            assert src.profile["tiled"] and src.block_shapes == [(256, 256)]
            assert src.nodata == 0
    # raster metadata matches the projection fields of the item
    item = imagery[0]
    for key in ("B04", "SCL"):
        with rasterio.open(item.assets[key].get_absolute_href()) as src:
            fields = item.assets[key].extra_fields
            assert src.crs.to_epsg() == _epsg(item)
            assert list(src.shape) == fields["proj:shape"]
            assert list(src.transform)[:6] == fields["proj:transform"]
            assert src.dtypes[0] == fields["raster:bands"][0]["data_type"]


def test_landcover_items(demo: DemoCatalog, catalog: pystac.Catalog) -> None:
    coll = catalog.get_child(LANDCOVER_COLLECTION)
    assert coll is not None
    items = {it.id: it for it in coll.get_items()}
    assert sorted(items) == ["DEMO_LC_2020", "DEMO_LC_2021"]
    legend = set(WORLDCOVER_TO_GEODELTA)
    for year in (2020, 2021):
        it = items[f"DEMO_LC_{year}"]
        assert it.datetime is not None and it.datetime.isoformat() == f"{year}-07-01T00:00:00+00:00"
        assert it.properties["start_datetime"] == f"{year}-01-01T00:00:00Z"
        assert it.properties["end_datetime"] == f"{year}-12-31T23:59:59Z"
        with rasterio.open(it.assets["map"].get_absolute_href()) as src:
            assert src.crs.to_epsg() == 4326 and src.dtypes[0] == "uint8" and src.nodata == 0
            assert src.res == pytest.approx((1 / 12000, 1 / 12000), rel=1e-9)
            assert src.transform.c * 12000 == pytest.approx(round(src.transform.c * 12000))
            lc = src.read(1)
            x0, y0, x1, y1 = src.bounds
        assert set(np.unique(lc).tolist()) <= legend  # no nodata, WorldCover codes only
        assert {10, 30, 40, 50, 80} <= set(np.unique(lc).tolist())
        ax0, ay0, ax1, ay1 = demo.aoi_bbox
        assert x0 < ax0 and y0 < ay0 and x1 > ax1 and y1 > ay1  # AOI + margin


# ----------------------------------------------------------------------- physics & truth


def test_water_dark_and_trees_bright_in_nir(demo: DemoCatalog, imagery: list[pystac.Item]) -> None:
    rng = np.random.default_rng(0)
    for item in (it for it in imagery if it.datetime is not None and it.datetime.year == 2020):
        lc = _lc_on_tile(demo, 2020, item)
        nir = _reflectance(item, "B08")
        clear = _clear10(item)
        for code, check in ((80, lambda v: v < 0.05), (10, lambda v: v > 0.2)):
            inner = ndimage.binary_erosion(lc == code, iterations=3) & clear
            rows, cols = np.nonzero(inner)
            assert rows.size > 20, (item.id, code)
            pick = rng.choice(rows.size, 50)
            values = nir[rows[pick], cols[pick]]
            assert all(check(v) for v in values), (item.id, code, values.min(), values.max())


def test_truth_changes_and_landcover_agree(demo: DemoCatalog) -> None:
    truth = load_truth(demo.root)
    kinds = {c["kind"] for c in truth.changes}
    assert kinds == {"new_built_up", "deforestation", "water_gain", "water_loss", "cropland_change"}
    lc20, tr = _landcover(demo, 2020)
    lc21, _ = _landcover(demo, 2021)
    index = rasterize(
        [(c["geometry"], i + 1) for i, c in enumerate(truth.changes)],
        out_shape=lc20.shape,
        transform=tr,
        dtype="int32",
    )
    changed = lc20 != lc21
    inside = index > 0
    agreement = (changed == inside)[changed | inside].mean()
    assert agreement > 0.98
    to_code = {name: code for code, name in WORLDCOVER_TO_GEODELTA.items()}
    x0, y0, x1, y1 = demo.aoi_bbox
    for i, ch in enumerate(truth.changes):
        poly = ch["geometry"]
        assert isinstance(poly, Polygon) and poly.is_valid
        px0, py0, px1, py1 = poly.bounds
        assert x0 <= px0 and px1 <= x1 and y0 <= py0 and py1 <= y1  # inside the AOI
        across_m = max((px1 - px0) * M_PER_DEG_LON, (py1 - py0) * 111_132.0)
        assert 70.0 <= across_m <= 420.0, across_m
        mine = index == i + 1
        assert to_code[ch["from_class"]] == ch["worldcover_from"]
        assert to_code[ch["to_class"]] == ch["worldcover_to"]
        assert mine.sum() > 50 and np.all(lc20[mine] == ch["worldcover_from"])
        assert np.all(lc21[mine] == ch["worldcover_to"])
    raw = json.loads((demo.truth_dir / "changes.geojson").read_text())
    assert raw["type"] == "FeatureCollection" and len(raw["features"]) == len(truth.changes)
    assert set(raw["features"][0]["properties"]) >= {"from_class", "to_class", "kind"}


def _clear_pair(
    items: list[pystac.Item], mask: np.ndarray
) -> tuple[pystac.Item, pystac.Item] | None:
    """The first t0 and the first t1 item of a zone that are clear over ``mask``."""
    t0 = [it for it in items if it.datetime is not None and it.datetime.year == 2020]
    t1 = [it for it in items if it.datetime is not None and it.datetime.year == 2021]
    before = next((it for it in t0 if _clear10(it)[mask].all()), None)
    after = next((it for it in t1 if _clear10(it)[mask].all()), None)
    return (before, after) if before and after else None


def test_deforestation_visible_in_nir(demo: DemoCatalog, imagery: list[pystac.Item]) -> None:
    truth = load_truth(demo.root)
    checked = 0
    for ch in (c for c in truth.changes if c["kind"] == "deforestation"):
        epsg = 32631 if ch["geometry"].centroid.x < 6.0 else 32632
        items = [it for it in imagery if _epsg(it) == epsg]
        fields = items[0].assets["B08"].extra_fields
        to_utm = Transformer.from_crs(4326, epsg, always_xy=True).transform
        mask = rasterize(
            [shapely.transform(ch["geometry"], to_utm, interleaved=False)],
            out_shape=tuple(fields["proj:shape"]),
            transform=rasterio.Affine(*fields["proj:transform"]),
            dtype="uint8",
        ).astype(bool)
        inner = ndimage.binary_erosion(mask, iterations=2)  # shifts are <= 1.5 px
        pair = _clear_pair(items, inner)
        if inner.sum() < 10 or pair is None:
            continue
        before, after = pair
        drop = _reflectance(before, "B08")[inner].mean() - _reflectance(after, "B08")[inner].mean()
        assert drop > 0.04, (ch["id"], drop)
        # unchanged forest in the same two scenes: no drop
        lc20 = _lc_on_tile(demo, 2020, before)
        lc21 = _lc_on_tile(demo, 2021, before)
        forest = ndimage.binary_erosion((lc20 == 10) & (lc21 == 10), iterations=3)
        forest &= _clear10(before) & _clear10(after)
        assert forest.sum() > 1000
        steady = (
            _reflectance(before, "B08")[forest].mean() - _reflectance(after, "B08")[forest].mean()
        )
        assert abs(steady) < 0.02, steady
        assert drop > 3 * abs(steady)
        checked += 1
    assert checked >= 1


def test_shifts_recorded_and_present_in_imagery(
    demo: DemoCatalog, imagery: list[pystac.Item]
) -> None:
    truth = load_truth(demo.root)
    assert set(truth.shifts) == {it.id for it in imagery}
    doc = json.loads((demo.truth_dir / "shifts.json").read_text())
    assert "(-dy, -dx)" in doc["convention"]
    for it in imagery:
        dy, dx = truth.shifts[it.id]
        assert it.datetime is not None
        if it.datetime.year == 2020:
            assert (dy, dx) == (0.0, 0.0)
        else:
            assert 0.2 <= abs(dy) <= 1.5 and 0.2 <= abs(dx) <= 1.5
    assert len({truth.shifts[it.id] for it in imagery}) == 7  # six t1 shifts + (0, 0)
    # the recorded shift is what phase correlation measures between a clear before/after pair
    checked = 0
    for epsg in (32631, 32632):
        items = [it for it in imagery if _epsg(it) == epsg]
        before = next(it for it in items if it.datetime is not None and it.datetime.year == 2020)
        for after in (it for it in items if it.datetime is not None and it.datetime.year == 2021):
            both = _clear10(before) & _clear10(after)
            win = _clear_window(both, 192)
            if win is None:
                continue
            r, c = win
            hann = window("hann", (192, 192))
            ref = _reflectance(before, "B08")[r : r + 192, c : c + 192]
            mov = _reflectance(after, "B08")[r : r + 192, c : c + 192]
            measured, _, _ = phase_cross_correlation(
                (ref - ref.mean()) * hann, (mov - mov.mean()) * hann, upsample_factor=50
            )
            dy, dx = truth.shifts[after.id]
            # registering the after scene onto the before scene takes (-dy, -dx)
            assert measured == pytest.approx((-dy, -dx), abs=0.15), (after.id, measured)
            checked += 1
    assert checked >= 2


def _clear_window(clear: np.ndarray, size: int) -> tuple[int, int] | None:
    h, w = clear.shape
    for r in range(0, h - size + 1, 32):
        for c in range(0, w - size + 1, 32):
            if clear[r : r + size, c : c + size].all():
                return r, c
    return None


def test_clouds_and_cloud_cover(imagery: list[pystac.Item]) -> None:
    seen: set[int] = set()
    for it in imagery:
        scl, _ = _read(it, "SCL")
        seen |= set(np.unique(scl).tolist())
        assert 0 not in np.unique(scl)  # the tile is fully covered
        cloud = np.isin(scl, (8, 9)).mean() * 100.0
        assert abs(it.properties["eo:cloud_cover"] - cloud) < 1.0
        core = (scl == 9).repeat(2, axis=0).repeat(2, axis=1)
        if core.sum() > 100:
            blue = _reflectance(it, "B02")[core]
            assert 0.3 < np.median(blue) < 0.65, (it.id, np.median(blue))
    assert {3, 4, 5, 6, 8, 9} <= seen
    cloudy = [it.properties["eo:cloud_cover"] for it in imagery]
    assert max(cloudy) > 1.0
    assert sum(c < 50 for c in cloudy) == len(cloudy)


@pytest.mark.slow
def test_full_scale_cells_have_clear_pairs(tmp_path: Path) -> None:
    """scale=1: ~75 cells, at least 55 with a clear before and after scene, some quarantined."""
    demo = write_demo_catalog(tmp_path / "full", seed=0)
    assert demo.aoi_bbox == DEMO_AOI
    cells = demo_cells(demo.aoi_bbox)
    assert 65 <= len(cells) <= 85
    assert {epsg for epsg, _, _ in cells} == {32631, 32632}
    coll = pystac.Catalog.from_file(str(demo.catalog_path)).get_child(IMAGERY_COLLECTION)
    assert coll is not None
    scenes = []
    for it in coll.get_items():
        scl, tr = _read(it, "SCL")
        assert it.datetime is not None
        scenes.append((_epsg(it), it.datetime.year, scl, tr))
    paired = 0
    for epsg, col, row in cells:
        ok = {2020: False, 2021: False}
        for s_epsg, year, scl, tr in scenes:
            if s_epsg != epsg:
                continue
            c0 = round((col * 1280 - tr.c) / 20)
            r0 = round((tr.f - (row + 1) * 1280) / 20)
            window = scl[r0 : r0 + 64, c0 : c0 + 64]
            assert window.shape == (64, 64)
            ok[year] |= bool(np.isin(window, CLEAR).mean() >= 0.95)
        paired += all(ok.values())
    assert 55 <= paired < len(cells)
    truth = load_truth(demo.root)
    assert len(cells) / 3 <= len(truth.changes) <= len(cells)  # ~1 change per 2 cells
