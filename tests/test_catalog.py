"""Static catalog search and parsing of real STAC items."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pystac
import pytest

from geodelta.sources.catalog import CatalogError, StaticCatalog, item_to_scene

BOX = [[5.8, 45.0], [6.0, 45.0], [6.0, 45.1], [5.8, 45.1], [5.8, 45.0]]


def _item(item_id: str, when: datetime, x0: float = 5.8) -> pystac.Item:
    coords = [[[x0, 45.0], [x0 + 0.2, 45.0], [x0 + 0.2, 45.1], [x0, 45.1], [x0, 45.0]]]
    item = pystac.Item(
        id=item_id,
        geometry={"type": "Polygon", "coordinates": coords},
        bbox=[x0, 45.0, x0 + 0.2, 45.1],
        datetime=when,
        properties={"proj:epsg": 32631, "eo:cloud_cover": 12.5, "platform": "sentinel-2a"},
    )
    item.add_asset(
        "B04",
        pystac.Asset(
            href="B04.tif?sig=SECRET",
            media_type=pystac.MediaType.COG,
            roles=["data"],
            extra_fields={"raster:bands": [{"scale": 0.0001, "offset": -0.1, "nodata": 0}]},
        ),
    )
    item.add_asset(
        "thumbnail",
        pystac.Asset(href="t.png", media_type=pystac.MediaType.PNG, roles=["thumbnail"]),
    )
    return item


@pytest.fixture()
def catalog(tmp_path: Path) -> Path:
    cat = pystac.Catalog(id="t", description="test")
    col = pystac.Collection(
        id="s2",
        description="test",
        extent=pystac.Extent(
            pystac.SpatialExtent([[5.8, 45.0, 6.2, 45.1]]),
            pystac.TemporalExtent([[datetime(2020, 1, 1, tzinfo=UTC), None]]),
        ),
    )
    col.add_item(_item("east-2020", datetime(2020, 7, 1, tzinfo=UTC), x0=6.05))
    col.add_item(_item("west-2021", datetime(2021, 7, 1, tzinfo=UTC)))
    col.add_item(_item("west-2020", datetime(2020, 7, 1, tzinfo=UTC)))
    cat.add_child(col)
    cat.normalize_hrefs(str(tmp_path))
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return tmp_path / "catalog.json"


def test_search_filters_by_space_time_and_sorts(catalog: Path) -> None:
    cat = StaticCatalog(str(catalog))
    window = (datetime(2020, 6, 1, tzinfo=UTC), datetime(2020, 8, 1, tzinfo=UTC))
    hits = cat.search(["s2"], (5.85, 45.02, 5.9, 45.05), window)
    assert [s.item_id for s in hits] == ["west-2020"]
    both = cat.search(["s2"], (5.85, 45.02, 6.1, 45.05), window)
    assert [s.item_id for s in both] == ["east-2020", "west-2020"]  # same datetime: by id
    assert cat.search(["s2"], (7.0, 45.0, 7.1, 45.1), window) == []


def test_scene_fields_from_extensions(catalog: Path) -> None:
    scene = StaticCatalog(str(catalog)).search(
        ["s2"],
        (5.85, 45.02, 5.9, 45.05),
        (datetime(2021, 1, 1, tzinfo=UTC), datetime(2021, 12, 1, tzinfo=UTC)),
    )[0]
    assert (
        scene.crs == "EPSG:32631" and scene.cloud_cover == 12.5 and scene.platform == "sentinel-2a"
    )
    assert set(scene.assets) == {"B04"}  # only data assets
    b04 = scene.assets["B04"]
    assert (b04.scale, b04.offset, b04.nodata) == (0.0001, -0.1, 0)
    assert b04.href.endswith("B04.tif") and Path(b04.href).is_absolute()
    assert "SECRET" not in scene.model_dump_json()


def test_unknown_collection_and_missing_catalog(catalog: Path, tmp_path: Path) -> None:
    cat = StaticCatalog(str(catalog))
    with pytest.raises(CatalogError, match=r"available: \['s2'\]"):
        cat.search(
            ["landsat"],
            (5.8, 45.0, 6.0, 45.1),
            (datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC)),
        )
    with pytest.raises(CatalogError, match=r"catalog\.url"):
        StaticCatalog(str(tmp_path / "missing" / "catalog.json"))


def test_real_planetary_computer_item(shared_data: Path) -> None:
    item = pystac.Item.from_file(
        str(shared_data / "stac/items/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json")
    )
    scene = item_to_scene(item)
    assert scene.crs == "EPSG:32606"
    assert scene.datetime == datetime(2019, 6, 29, 21, 25, 29, 24000, tzinfo=UTC)
    assert scene.cloud_cover == pytest.approx(0.314306)
    assert {"B02", "B03", "B04", "B08", "SCL"} <= set(scene.assets)
    assert scene.assets["B04"].href.startswith("https://sentinel2l2a01.blob.core.windows.net/")
    assert scene.assets["B04"].href.endswith("_B04_10m.tif")
    assert "preview" not in scene.assets  # not a data asset


def test_real_usgs_landsat_item(shared_data: Path) -> None:
    item = pystac.Item.from_file(
        str(shared_data / "stac/items/LC08_L2SP_028030_20200114_20200824_02_T1_SR.json")
    )
    scene = item_to_scene(item)
    assert scene.crs == "EPSG:32615"
    assert scene.cloud_cover == pytest.approx(8.18)
    assert "thumbnail" not in scene.assets
