"""The STAC side of the demo catalog: items, collections, the catalog and truth files.

:func:`imagery_item` writes one rendered scene's band and SCL COGs and describes them as a
Sentinel-2 L2A-like item (eo, raster and projection extensions); :func:`landcover_item` does the
same for one year's land-cover map (classification extension); :func:`save_catalog` gathers the
items into two collections under one self-contained catalog; :func:`write_truth` writes
``truth/changes.geojson`` and ``truth/shifts.json``. Every string and number here ends up in
the catalog files (and, through the collections, in releases): change none of them.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pystac
from rasterio.transform import Affine
from shapely.geometry import Polygon, mapping

from geodelta.schemas.classes import WORLDCOVER_TO_GEODELTA
from geodelta.sources.demo.constants import (
    BANDS,
    DN_OFFSET,
    DN_SCALE,
    IMAGERY_COLLECTION,
    LANDCOVER_COLLECTION,
    PIXEL_M,
    SCL_PIXEL_M,
    SHIFTS_CONVENTION,
    SPECTRA,
    SYNTHETIC_NOTE,
    DemoCatalogError,
)
from geodelta.sources.demo.render import Clouds, DateScene, Rendered, render_item, write_cog
from geodelta.sources.demo.world import LonLatGrid, Tile, draw_shift, seeded_rng

__all__ = [
    "imagery_item",
    "imagery_item_id",
    "landcover_item",
    "save_catalog",
    "write_truth",
]

_ACQUISITION_TIME: Final[str] = "10:30:31"

_EXT_EO: Final[str] = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
_EXT_RASTER: Final[str] = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
# v1.2.0: the version that defines both proj:code and (deprecated) proj:epsg, which we write
_EXT_PROJ: Final[str] = "https://stac-extensions.github.io/projection/v1.2.0/schema.json"
_EXT_CLASS: Final[str] = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"

_BAND_INFO: Final[dict[str, tuple[str, float, float, str]]] = {
    "B02": ("blue", 0.49, 0.098, "Band 2 - Blue - 10m"),
    "B03": ("green", 0.56, 0.045, "Band 3 - Green - 10m"),
    "B04": ("red", 0.665, 0.038, "Band 4 - Red - 10m"),
    "B08": ("nir", 0.842, 0.145, "Band 8 - NIR - 10m"),
}

# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


def _proj_fields(epsg: int, shape: tuple[int, int], transform: Affine) -> dict[str, Any]:
    h, w = shape
    x0, y0 = transform.c, transform.f
    x1, y1 = x0 + transform.a * w, y0 + transform.e * h
    return {
        "proj:shape": [h, w],
        "proj:transform": [transform.a, transform.b, x0, transform.d, transform.e, y0],
        "proj:bbox": [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)],
    }


def _platform(day: date) -> str:
    """Sentinel-2A and 2B alternate every 5 days over a site (A on 2020-06-14 here)."""
    steps = (day - date(2020, 6, 14)).days // 5
    return "sentinel-2a" if steps % 2 == 0 else "sentinel-2b"


def imagery_item_id(day: date, zone: int) -> str:
    """``DEMO_S2{A|B}_L2A_UTM{zone}_{yyyymmdd}``: the id of the imagery item of ``day``."""
    letter = _platform(day)[-1].upper()
    return f"DEMO_S2{letter}_L2A_UTM{zone}_{day:%Y%m%d}"


def render_dates(
    root: Path,
    *,
    seed: int,
    tiles: list[Tile],
    dates: list[date],
    clouds: list[Clouds],
    refl_field: np.ndarray,
    lc: np.ndarray,
    lc_grid: LonLatGrid,
    cloud_grid: LonLatGrid,
    shift_rng: np.random.Generator | None,
    shifts: dict[str, tuple[float, float]],
) -> list[pystac.Item]:
    """Render and write the imagery items of ``dates`` on every tile (the pair and the series
    demo share it): each date's radiometry from its own seeded stream; a known shift per item
    drawn from ``shift_rng`` in (tile, date) order and recorded in ``shifts``, none when
    ``shift_rng`` is None (the reference dates)."""
    radiometry = []
    for d in dates:
        rng = seeded_rng(seed, f"radiometry/{d.isoformat()}")
        gain = rng.uniform(0.985, 1.015, 4).astype(np.float32)
        offset = rng.uniform(-0.002, 0.002, 4).astype(np.float32)
        radiometry.append((gain, offset))
    items = []
    for tile in tiles:
        for i, d in enumerate(dates):
            item_id = imagery_item_id(d, tile.zone)
            shift = (0.0, 0.0) if shift_rng is None else draw_shift(shift_rng)
            shifts[item_id] = shift
            scene = DateScene(refl_field, lc, lc_grid, clouds[i], cloud_grid, radiometry[i])
            rendered = render_item(seed=seed, item_id=item_id, tile=tile, shift=shift, scene=scene)
            folder = root / IMAGERY_COLLECTION / item_id
            items.append(imagery_item(item_id, d, tile, rendered, folder))
    return items


def imagery_item(
    item_id: str, day: date, tile: Tile, rendered: Rendered, folder: Path
) -> pystac.Item:
    """Write one rendered scene's band COGs and SCL COG into ``folder``; its STAC item."""
    footprint = tile.footprint()
    acquired = datetime.fromisoformat(f"{day.isoformat()}T{_ACQUISITION_TIME}+00:00")
    item = pystac.Item(
        id=item_id,
        geometry=mapping(footprint),
        bbox=list(footprint.bounds),
        datetime=acquired,
        properties={
            "platform": _platform(day),
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "gsd": PIXEL_M,
            "eo:cloud_cover": rendered.cloud_cover,
            "proj:epsg": tile.epsg,
            "proj:code": f"EPSG:{tile.epsg}",
            "geodelta:synthetic": True,
        },
        stac_extensions=[_EXT_EO, _EXT_RASTER, _EXT_PROJ],
    )
    crs = f"EPSG:{tile.epsg}"
    for b, band in enumerate(BANDS):
        path = folder / f"{band}.tif"
        write_cog(path, rendered.dn[b], crs=crs, transform=tile.transform, resampling="average")
        common, centre, fwhm, title = _BAND_INFO[band]
        _add_cog_asset(
            item,
            band,
            path,
            roles=["data", "reflectance"],
            title=f"{title} (synthetic)",
            extra_fields={
                "gsd": PIXEL_M,
                "eo:bands": [
                    {
                        "name": band,
                        "common_name": common,
                        "center_wavelength": centre,
                        "full_width_half_max": fwhm,
                    }
                ],
                "raster:bands": [
                    {
                        "data_type": "uint16",
                        "nodata": 0,
                        "scale": DN_SCALE,
                        "offset": DN_OFFSET,
                        "spatial_resolution": int(PIXEL_M),
                    }
                ],
                **_proj_fields(tile.epsg, (tile.height, tile.width), tile.transform),
            },
        )
    path = folder / "SCL.tif"
    write_cog(path, rendered.scl, crs=crs, transform=tile.scl_transform, resampling="nearest")
    _add_cog_asset(
        item,
        "SCL",
        path,
        roles=["data"],
        title="Scene classification map (SCL, 20m, synthetic)",
        extra_fields={
            "gsd": SCL_PIXEL_M,
            "raster:bands": [
                {"data_type": "uint8", "nodata": 0, "spatial_resolution": int(SCL_PIXEL_M)}
            ],
            **_proj_fields(tile.epsg, rendered.scl.shape, tile.scl_transform),
        },
    )
    return item


def _add_cog_asset(
    item: pystac.Item,
    name: str,
    path: Path,
    *,
    roles: list[str],
    title: str,
    extra_fields: dict[str, Any],
) -> None:
    """Add the COG written at ``path`` to ``item`` as its asset ``name``."""
    item.add_asset(
        name,
        pystac.Asset(
            href=str(path),
            media_type=pystac.MediaType.COG,
            roles=roles,
            title=title,
            extra_fields=extra_fields,
        ),
    )


def landcover_item(year: int, lc: np.ndarray, grid: LonLatGrid, folder: Path) -> pystac.Item:
    """Write one year's land-cover map COG (WorldCover legend) into ``folder``; its STAC item."""
    min_lon, min_lat, max_lon, max_lat = grid.bounds()
    footprint = Polygon(
        [(min_lon, min_lat), (max_lon, min_lat), (max_lon, max_lat), (min_lon, max_lat)]
    )
    item = pystac.Item(
        id=f"DEMO_LC_{year}",
        geometry=mapping(footprint),
        bbox=[min_lon, min_lat, max_lon, max_lat],
        datetime=datetime(year, 7, 1, tzinfo=UTC),
        properties={
            "start_datetime": f"{year}-01-01T00:00:00Z",
            "end_datetime": f"{year}-12-31T23:59:59Z",
            "proj:epsg": 4326,
            "proj:code": "EPSG:4326",
            "geodelta:synthetic": True,
        },
        stac_extensions=[_EXT_RASTER, _EXT_PROJ, _EXT_CLASS],
    )
    path = folder / "map.tif"
    write_cog(path, lc, crs="EPSG:4326", transform=grid.transform, resampling="nearest")
    _add_cog_asset(
        item,
        "map",
        path,
        roles=["data"],
        title=f"Land cover {year}, ESA WorldCover legend (synthetic)",
        extra_fields={
            "raster:bands": [{"data_type": "uint8", "nodata": 0, "spatial_resolution": 10}],
            "classification:classes": [
                {"value": code, "name": name}
                for code, name in WORLDCOVER_TO_GEODELTA.items()
                if code in SPECTRA
            ],
            **_proj_fields(4326, lc.shape, grid.transform),
        },
    )
    return item


# --------------------------------------------------------------------------------------------
# Collections, catalog and truth
# --------------------------------------------------------------------------------------------


def _collection(
    cid: str, title: str, items: list[pystac.Item], extensions: list[str]
) -> pystac.Collection:
    bboxes = np.array([it.bbox for it in items])
    times = sorted(
        dt
        for it in items
        for dt in (
            it.common_metadata.start_datetime or it.datetime,
            it.common_metadata.end_datetime or it.datetime,
        )
        if dt is not None
    )
    collection = pystac.Collection(
        id=cid,
        title=title,
        description=f"{title}. {SYNTHETIC_NOTE}",
        extent=pystac.Extent(
            pystac.SpatialExtent(
                [[float(v) for v in (*bboxes[:, :2].min(axis=0), *bboxes[:, 2:].max(axis=0))]]
            ),
            pystac.TemporalExtent([[times[0], times[-1]]]),
        ),
        license="CC0-1.0",
        keywords=["synthetic", "geodelta", "demo"],
        stac_extensions=extensions,
    )
    for it in items:
        collection.add_item(it)
    return collection


def _changes_geojson(changes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "description": "Injected land-cover transitions 2020 -> 2021 (SYNTHETIC truth). Each "
        "polygon holds from_class in the 2020 map and to_class in the 2021 map; the maps differ "
        "nowhere else.",
        "features": [
            {
                "type": "Feature",
                "id": ch["id"],
                "geometry": mapping(ch["geometry"]),
                "properties": {
                    "kind": ch["kind"],
                    "from_class": ch["from_class"],
                    "to_class": ch["to_class"],
                    "worldcover_from": ch["worldcover_from"],
                    "worldcover_to": ch["worldcover_to"],
                },
            }
            for ch in changes
        ],
    }


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def save_catalog(root: Path, imagery_items: list[pystac.Item], lc_items: list[pystac.Item]) -> None:
    """Gather the items into the imagery and land-cover collections under one self-contained
    catalog, and save it at ``root`` (``catalog.json``; hrefs relative).

    Raises:
        DemoCatalogError: pystac did not write ``catalog.json`` where expected.
    """
    imagery = _collection(
        IMAGERY_COLLECTION,
        "geodelta demo: synthetic Sentinel-2 L2A-like scenes",
        imagery_items,
        [_EXT_EO, _EXT_RASTER, _EXT_PROJ],
    )
    imagery.summaries.add("platform", ["sentinel-2a", "sentinel-2b"])
    imagery.summaries.add("constellation", ["sentinel-2"])
    landcover = _collection(
        LANDCOVER_COLLECTION,
        "geodelta demo: synthetic yearly land-cover maps (ESA WorldCover legend)",
        lc_items,
        [_EXT_RASTER, _EXT_PROJ, _EXT_CLASS],
    )
    catalog = pystac.Catalog(
        id="geodelta-demo",
        title="geodelta demo catalog (SYNTHETIC)",
        description=(
            "Synthetic Sentinel-2 L2A-like scenes and land-cover maps with known changes, "
            f"clouds and misregistration (see truth/). {SYNTHETIC_NOTE}"
        ),
    )
    catalog.add_child(imagery)
    catalog.add_child(landcover)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    if not (root / "catalog.json").is_file():  # pragma: no cover - guards the layout above
        raise DemoCatalogError(f"pystac did not write {root / 'catalog.json'}", path=str(root))


def write_truth(
    root: Path, changes: list[dict[str, Any]], shifts: dict[str, tuple[float, float]]
) -> None:
    """Write the truth the catalog was generated from: ``truth/changes.geojson`` (the injected
    changes) and ``truth/shifts.json`` (each item's misregistration, with its convention)."""
    _write_json(root / "truth" / "changes.geojson", _changes_geojson(changes))
    _write_json(
        root / "truth" / "shifts.json",
        {
            "convention": SHIFTS_CONVENTION,
            "units": "pixels of the item's 10 m grid",
            "shifts": {k: list(v) for k, v in shifts.items()},
        },
    )
