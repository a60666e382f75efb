"""A static STAC catalog over the real OSCD cities in ``../shared/data/oscd`` (test fixture).

OSCD ships loose GeoTIFFs per city and date (``imgs_1/*_B02.tif`` ...), the acquisition dates
in ``dates.txt``, and a change mask ``cm/<city>-cm.tif`` that has no georeferencing. This module
turns that layout into what the pipeline reads: one collection, ``oscd-s2-l1c``, with two items
per city (date 1 and date 2) whose band assets point at the original files (nothing is copied),
and a georeferenced copy of the change mask, written into the catalog folder and attached to the
date-2 item as asset ``cm``.

Facts the builder relies on (``PROVENANCE.md`` section 2): the bands are uint16 L1C DN
(reflectance x 10000, no offset, no nodata) in EPSG:4326; B02/B03/B04/B08 share one 10 m grid;
date 1 and date 2 share it too; the change mask (1 = no change, 2 = change) lies on B02's grid.
The builder checks each of these and raises :class:`OSCDDataError` when one does not hold.

L1C has no scene classification band, so the items carry none: the pipeline must record the
clear fraction of these scenes as unknown. The platform (Sentinel-2A or 2B) is not recorded by
OSCD and is left out.

Kept free of test code so a later STAC API fixture can reuse :func:`oscd_items`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.errors import NotGeoreferencedWarning

COLLECTION_ID = "oscd-s2-l1c"
CATALOG_ID = "oscd"
CITIES: tuple[str, ...] = ("aguasclaras", "bercy", "paris")
#: The 10 m bands the catalog exposes (all on B02's grid).
BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08")
#: Reflectance = DN * DN_SCALE + DN_OFFSET (L1C, before the 2022 processing baseline offset).
DN_SCALE = 0.0001
DN_OFFSET = 0.0
CHANGE_ASSET = "cm"
#: Values of OSCD's change mask (PROVENANCE.md: the README's 0/1 is wrong) and the nodata
#: value of the written copy (never present in the source).
CM_NO_CHANGE = 1
CM_CHANGE = 2
CM_NODATA = 0

ATTRIBUTION = (
    "Contains modified Copernicus Sentinel data [2015-2018]; change labels: Onera Satellite "
    "Change Detection dataset (OSCD), R. Caye Daudt, B. Le Saux, A. Boulch, Y. Gousseau, "
    '"Urban Change Detection for Multispectral Earth Observation Using Convolutional Neural '
    'Networks", IGARSS 2018, CC BY-NC-SA'
)
LICENCE = "CC-BY-NC-SA-4.0"


class OSCDDataError(RuntimeError):
    """The OSCD folder does not have the layout or the grids this builder expects.

    Attributes:
        path: the file or folder at fault.
        reason: what is wrong, with the expected and the actual value.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"OSCD data {path}: {reason}")
        self.path = str(path)
        self.reason = reason


def read_dates(city_dir: Path) -> tuple[datetime, datetime]:
    """Acquisition dates of a city from its ``dates.txt`` (midnight UTC; the time is unknown).

    Args:
        city_dir: ``<data_dir>/<city>``.

    Returns:
        (date 1, date 2) as aware UTC datetimes.

    Raises:
        OSCDDataError: the file is missing or does not hold ``date_1`` and ``date_2``.
    """
    path = city_dir / "dates.txt"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise OSCDDataError(path, "dates.txt not found") from None
    found: dict[str, datetime] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        try:
            found[name.strip()] = datetime.strptime(value.strip(), "%Y%m%d").replace(tzinfo=UTC)
        except ValueError:
            raise OSCDDataError(
                path, f"{name.strip()} is not YYYYMMDD: {value.strip()!r}"
            ) from None
    missing = [k for k in ("date_1", "date_2") if k not in found]
    if missing:
        raise OSCDDataError(path, f"missing {missing} (found {sorted(found)})")
    return found["date_1"], found["date_2"]


def band_path(city_dir: Path, date_index: int, band: str) -> Path:
    """The single-band GeoTIFF of one band of one date (``imgs_<date_index>/*_<band>.tif``).

    Raises:
        OSCDDataError: no file or more than one file matches.
    """
    folder = city_dir / f"imgs_{date_index}"
    hits = sorted(folder.glob(f"*_{band}.tif"))
    if len(hits) != 1:
        raise OSCDDataError(folder, f"expected exactly 1 file *_{band}.tif (actual={len(hits)})")
    return hits[0].resolve()


def _grid(path: Path) -> tuple[Any, Any, int, int]:
    with rasterio.open(path) as src:
        if src.crs is None:
            raise OSCDDataError(path, "band has no CRS")
        if src.dtypes[0] != "uint16" or src.count != 1:
            raise OSCDDataError(
                path, f"expected 1 band of uint16 (actual {src.count} of {src.dtypes[0]})"
            )
        return src.crs, src.transform, src.width, src.height


def read_change_mask(city_dir: Path, city: str) -> np.ndarray:
    """OSCD's change mask of a city as stored (uint8, 1 = no change, 2 = change, no georeference).

    Raises:
        OSCDDataError: the file is missing or holds other values than 1 and 2.
    """
    path = city_dir / "cm" / f"{city}-cm.tif"
    if not path.exists():
        raise OSCDDataError(path, "change mask not found")
    with warnings.catch_warnings():
        # the file is known to carry no geotransform (PROVENANCE.md); B02's grid is used instead
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            values = src.read(1)
    extra = sorted(set(np.unique(values).tolist()) - {CM_NO_CHANGE, CM_CHANGE})
    if extra:
        raise OSCDDataError(path, f"unexpected values {extra} (expected 1 = no change, 2 = change)")
    return values


def write_change_mask(city_dir: Path, city: str, out_path: Path) -> Path:
    """Write OSCD's change mask as a GeoTIFF on B02's grid (CRS and transform), nodata 0.

    Args:
        city_dir: ``<data_dir>/<city>``.
        city: the city name (the mask is ``cm/<city>-cm.tif``).
        out_path: the GeoTIFF to write.

    Returns:
        ``out_path``.

    Raises:
        OSCDDataError: the mask's size differs from B02's.
    """
    values = read_change_mask(city_dir, city)
    crs, transform, width, height = _grid(band_path(city_dir, 1, "B02"))
    if values.shape != (height, width):
        raise OSCDDataError(
            city_dir / "cm" / f"{city}-cm.tif",
            f"shape {values.shape} differs from B02's (height, width)=({height}, {width})",
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 1,
        "width": width,
        "height": height,
        "crs": crs,
        "transform": transform,
        "nodata": CM_NODATA,
        "compress": "deflate",
    }
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(values, 1)
    tmp.replace(out_path)
    return out_path


def _footprint(transform: Any, width: int, height: int) -> tuple[list[float], dict[str, Any]]:
    left, top = transform @ (0, 0)
    right, bottom = transform @ (width, height)
    x0, x1 = sorted((float(left), float(right)))
    y0, y1 = sorted((float(bottom), float(top)))
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return [x0, y0, x1, y1], {"type": "Polygon", "coordinates": [ring]}


def item_id(city: str, when: datetime) -> str:
    """Item id of a city's scene: ``oscd-<city>-<YYYYMMDD>``."""
    return f"oscd-{city}-{when:%Y%m%d}"


def oscd_items(
    data_dir: Path, cities: Sequence[str], asset_dir: Path
) -> list[tuple[pystac.Item, Path]]:
    """The STAC items of the cities, two per city, each with its own folder for written assets.

    Args:
        data_dir: the ``oscd`` folder of the shared data.
        cities: city folder names.
        asset_dir: folder under which each item's written assets go (``<asset_dir>/<item id>/``).

    Returns:
        (item, its asset folder) pairs, ordered by city then date. The date-2 item of each city
        carries the ``cm`` asset written there.

    Raises:
        OSCDDataError: a city's files do not match the expected layout or grids.
    """
    out: list[tuple[pystac.Item, Path]] = []
    for city in cities:
        city_dir = (data_dir / city).resolve()
        if not city_dir.is_dir():
            raise OSCDDataError(city_dir, f"no such city folder (cities: {sorted(CITIES)})")
        dates = read_dates(city_dir)
        ref = _grid(band_path(city_dir, 1, "B02"))
        crs, transform, width, height = ref
        for index, when in enumerate(dates, start=1):
            paths = {band: band_path(city_dir, index, band) for band in BANDS}
            for band, path in paths.items():
                grid = _grid(path)
                if grid != ref:
                    raise OSCDDataError(
                        path,
                        f"{band} of date {index} is not on date 1's B02 grid "
                        f"(expected {ref}, actual {grid})",
                    )
            bbox, geometry = _footprint(transform, width, height)
            iid = item_id(city, when)
            item = pystac.Item(
                id=iid,
                geometry=geometry,
                bbox=bbox,
                datetime=when,
                properties={
                    "oscd:city": city,
                    "oscd:date_index": index,
                    "constellation": "sentinel-2",
                    "instruments": ["msi"],
                },
            )
            proj = ProjectionExtension.ext(item, add_if_missing=True)
            proj.epsg = int(crs.to_epsg())
            proj.shape = [height, width]
            proj.transform = list(transform)[:6]
            for band, path in paths.items():
                asset = pystac.Asset(
                    href=str(path),
                    media_type=pystac.MediaType.GEOTIFF,
                    roles=["data"],
                    title=f"{band} (L1C DN, reflectance x 10000)",
                )
                item.add_asset(band, asset)
                RasterExtension.ext(asset, add_if_missing=True).bands = [
                    RasterBand.create(data_type=DataType.UINT16, scale=DN_SCALE, offset=DN_OFFSET)
                ]
            folder = asset_dir / iid
            if index == 2:
                cm_path = write_change_mask(city_dir, city, folder / f"{iid}-cm.tif")
                cm = pystac.Asset(
                    href=str(cm_path.resolve()),
                    media_type=pystac.MediaType.GEOTIFF,
                    roles=["data"],
                    title="OSCD change mask (1 = no change, 2 = change, 0 = nodata)",
                )
                item.add_asset(CHANGE_ASSET, cm)
                RasterExtension.ext(cm, add_if_missing=True).bands = [
                    RasterBand.create(data_type=DataType.UINT8, nodata=CM_NODATA)
                ]
            out.append((item, folder))
    return out


def build_oscd_catalog(out_dir: Path, data_dir: Path, cities: Sequence[str] = CITIES) -> Path:
    """Write a self-contained static STAC catalog over the OSCD cities.

    Band assets keep absolute hrefs to the original files under ``data_dir`` (nothing is
    copied); the georeferenced change masks are written into ``out_dir``.

    Args:
        out_dir: catalog folder (created; existing files of the same names are replaced).
        data_dir: the ``oscd`` folder of the shared data.
        cities: city folder names to include.

    Returns:
        Path of ``catalog.json``.

    Raises:
        OSCDDataError: a city's files do not match the expected layout or grids.
    """
    out_dir = Path(out_dir).resolve()
    collection_dir = out_dir / COLLECTION_ID
    pairs = oscd_items(Path(data_dir), cities, collection_dir)
    items = [item for item, _ in pairs]
    if not items:
        raise OSCDDataError(data_dir, "no cities given")
    bboxes = [list(item.bbox or []) for item in items]
    union = [
        min(b[0] for b in bboxes),
        min(b[1] for b in bboxes),
        max(b[2] for b in bboxes),
        max(b[3] for b in bboxes),
    ]
    times = sorted(item.datetime for item in items if item.datetime is not None)
    collection = pystac.Collection(
        id=COLLECTION_ID,
        description=(
            "Onera Satellite Change Detection (OSCD) Sentinel-2 L1C pairs: 10 m bands of "
            "both dates per city, and the change mask on the date-2 item."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([union, *bboxes]),
            pystac.TemporalExtent([[times[0], times[-1]]]),
        ),
        license="other",
        title="OSCD Sentinel-2 L1C (geodelta test fixture)",
        extra_fields={"attribution": ATTRIBUTION},
    )
    for item in items:
        collection.add_item(item)
    catalog = pystac.Catalog(id=CATALOG_ID, description="OSCD cities (geodelta test fixture)")
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(out_dir))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return out_dir / "catalog.json"


def oscd_aoi_geojson(out_path: Path, data_dir: Path, cities: Sequence[str] = CITIES) -> Path:
    """Write the cities' footprints (``<city>.geojson``) as one FeatureCollection.

    Each feature keeps its city's polygon and has property ``name`` = the city.

    Args:
        out_path: GeoJSON file to write.
        data_dir: the ``oscd`` folder of the shared data.
        cities: city folder names.

    Returns:
        ``out_path``.

    Raises:
        OSCDDataError: a footprint file is missing or holds no polygon.
    """
    features = []
    for city in cities:
        path = Path(data_dir) / city / f"{city}.geojson"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise OSCDDataError(path, "footprint not found") from None
        feats = data.get("features") if data.get("type") == "FeatureCollection" else [data]
        polygons = [
            f.get("geometry")
            for f in feats or []
            if (f.get("geometry") or {}).get("type") in ("Polygon", "MultiPolygon")
        ]
        if len(polygons) != 1:
            raise OSCDDataError(path, f"expected 1 polygon feature (actual={len(polygons)})")
        features.append({"type": "Feature", "properties": {"name": city}, "geometry": polygons[0]})
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return out_path
