"""The static STAC catalog built over the real OSCD cities (tests/oscd_catalog.py)."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from geodelta.sources.catalog import StaticCatalog
from tests.oscd_catalog import (
    BANDS,
    COLLECTION_ID,
    OSCDDataError,
    build_oscd_catalog,
    oscd_aoi_geojson,
    read_dates,
)

#: From PROVENANCE.md section 2 (dates.txt) and its "change px" column.
DATES = {
    "aguasclaras": (datetime(2015, 9, 16, tzinfo=UTC), datetime(2017, 10, 15, tzinfo=UTC)),
    "bercy": (datetime(2016, 11, 30, tzinfo=UTC), datetime(2017, 8, 29, tzinfo=UTC)),
    "paris": (datetime(2016, 11, 30, tzinfo=UTC), datetime(2017, 11, 7, tzinfo=UTC)),
}
CHANGE_PX = {"bercy": 1046, "paris": 458, "aguasclaras": 4056}
GRID_WH = {"bercy": (360, 395), "paris": (390, 408), "aguasclaras": (525, 471)}


@pytest.fixture(scope="module")
def oscd(shared_data: Path) -> Path:
    return shared_data / "oscd"


@pytest.fixture(scope="module")
def catalog_path(oscd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_oscd_catalog(tmp_path_factory.mktemp("oscd-catalog"), oscd)


@pytest.fixture(scope="module")
def items(catalog_path: Path) -> dict[str, pystac.Item]:
    root = pystac.Catalog.from_file(str(catalog_path))
    return {item.id: item for item in root.get_items(recursive=True)}


def _original_cm(oscd: Path, city: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the source has no geotransform
        with rasterio.open(oscd / city / "cm" / f"{city}-cm.tif") as src:
            return src.read(1)


def test_six_items_with_dates_and_readable_original_bands(
    items: dict[str, pystac.Item], oscd: Path
) -> None:
    expected = {f"oscd-{c}-{d:%Y%m%d}" for c, ds in DATES.items() for d in ds}
    assert set(items) == expected and len(items) == 6
    for city, (d1, d2) in DATES.items():
        assert read_dates(oscd / city) == (d1, d2)
        for index, when in ((1, d1), (2, d2)):
            item = items[f"oscd-{city}-{when:%Y%m%d}"]
            assert item.datetime == when
            assert item.collection_id == COLLECTION_ID
            assert item.properties["proj:code"] == "EPSG:4326"
            for band in BANDS:
                asset = item.assets[band]
                href = Path(asset.get_absolute_href() or "")
                # the original file of that date, not a copy
                assert href.parent == (oscd / city / f"imgs_{index}").resolve()
                assert href.name.endswith(f"_{band}.tif")
                assert asset.roles == ["data"]
                assert asset.extra_fields["raster:bands"] == [
                    {"data_type": "uint16", "scale": 0.0001, "offset": 0.0}
                ]
                with rasterio.open(href) as src:
                    assert (src.width, src.height) == GRID_WH[city]
                    assert src.dtypes[0] == "uint16" and src.crs.to_epsg() == 4326
                    x0, y0, x1, y1 = src.bounds
                    assert item.bbox == pytest.approx([x0, y0, x1, y1], abs=1e-12)
                    assert int(src.read(1, window=((0, 8), (0, 8))).max()) > 0


def test_change_mask_asset_is_georeferenced_on_b02_grid(
    items: dict[str, pystac.Item], oscd: Path
) -> None:
    for city, (d1, d2) in DATES.items():
        assert "cm" not in items[f"oscd-{city}-{d1:%Y%m%d}"].assets
        item = items[f"oscd-{city}-{d2:%Y%m%d}"]
        cm = item.assets["cm"]
        assert cm.roles == ["data"]
        assert cm.extra_fields["raster:bands"] == [{"data_type": "uint8", "nodata": 0}]
        with rasterio.open(item.assets["B02"].get_absolute_href() or "") as b02:
            b02_transform, b02_crs = b02.transform, b02.crs
        with rasterio.open(cm.get_absolute_href() or "") as src:
            assert src.transform == b02_transform and src.crs == b02_crs
            assert src.nodata == 0 and src.dtypes[0] == "uint8"
            values = src.read(1)
        assert set(np.unique(values).tolist()) == {1, 2}
        assert int((values == 2).sum()) == CHANGE_PX[city]
        np.testing.assert_array_equal(values, _original_cm(oscd, city))


def test_static_catalog_search_finds_each_city(catalog_path: Path) -> None:
    cat = StaticCatalog(str(catalog_path))
    assert cat.collections == [COLLECTION_ID]
    everything = (datetime(2015, 1, 1, tzinfo=UTC), datetime(2018, 1, 1, tzinfo=UTC))
    boxes = {
        "bercy": (2.37, 48.83, 2.39, 48.85),
        "paris": (2.32, 48.81, 2.34, 48.83),
        "aguasclaras": (-48.04, -15.85, -48.01, -15.82),
    }
    for city, bbox in boxes.items():
        hits = cat.search([COLLECTION_ID], bbox, everything)
        assert [s.item_id for s in hits] == [f"oscd-{city}-{d:%Y%m%d}" for d in DATES[city]]
        before, after = hits
        assert before.crs == "EPSG:4326" and before.cloud_cover is None
        assert set(before.assets) == set(BANDS)
        assert set(after.assets) == {*BANDS, "cm"}
        b02 = after.assets["B02"]
        assert (b02.scale, b02.offset, b02.nodata) == (0.0001, 0.0, None)
        assert after.assets["cm"].nodata == 0
    # only the date-2 scene of bercy falls in 2017
    t1 = (datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 12, 31, tzinfo=UTC))
    assert [s.item_id for s in cat.search([COLLECTION_ID], boxes["bercy"], t1)] == [
        "oscd-bercy-20170829"
    ]
    # the gap between paris (east edge 2.3555) and bercy (west edge 2.3593) holds nothing
    assert cat.search([COLLECTION_ID], (2.356, 48.83, 2.358, 48.84), everything) == []


def test_aoi_geojson_names_each_city_footprint(
    items: dict[str, pystac.Item], oscd: Path, tmp_path: Path
) -> None:
    path = oscd_aoi_geojson(tmp_path / "aoi.geojson", oscd)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection"
    names = [f["properties"]["name"] for f in data["features"]]
    assert names == ["aguasclaras", "bercy", "paris"]
    for feature in data["features"]:
        city = feature["properties"]["name"]
        source = json.loads((oscd / city / f"{city}.geojson").read_text())
        assert feature["geometry"] == source["features"][0]["geometry"]
        ring = np.array(feature["geometry"]["coordinates"][0])
        lo, hi = ring.min(axis=0), ring.max(axis=0)
        bbox = items[f"oscd-{city}-{DATES[city][0]:%Y%m%d}"].bbox
        # the footprint file and the raster bounds describe the same rectangle
        assert [*lo, *hi] == pytest.approx(bbox, abs=1e-9)


def test_bad_layout_raises_typed_error(oscd: Path, tmp_path: Path) -> None:
    with pytest.raises(OSCDDataError, match="atlantis"):
        build_oscd_catalog(tmp_path / "cat", oscd, cities=("atlantis",))
    city = tmp_path / "town"
    city.mkdir()
    (city / "dates.txt").write_text("date_1: 2016-11-30\ndate_2: 20170829\n")
    with pytest.raises(OSCDDataError, match="date_1 is not YYYYMMDD") as info:
        read_dates(city)
    assert info.value.path == str(city / "dates.txt")
    (city / "dates.txt").write_text("date_1: 20161130\n")
    with pytest.raises(OSCDDataError, match=r"missing \['date_2'\]"):
        read_dates(city)
