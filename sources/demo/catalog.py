"""The synthetic demo STAC catalog: geodelta's offline default input, with known truth.

:func:`write_demo_catalog` writes a static, self-contained STAC catalog of SYNTHETIC
Sentinel-2-L2A-like scenes plus yearly land-cover maps over a small area of interest that
straddles the UTM 31/32 boundary at 6°E. Everything is generated from a seed and is
byte-for-byte reproducible, so every pipeline stage can be checked against the truth:

- the land cover of 2020 and 2021 (ESA WorldCover legend, EPSG:4326 at 1/12000°), which differ
  exactly inside the injected change polygons (``truth/changes.geojson``);
- the clouds and their shadows (visible in the ``SCL`` asset, as in real L2A products);
- the misregistration of every after-scene (``truth/shifts.json``, read with :func:`load_truth`).

Conventions are those of the real products the pipeline reads: two 10 m tiles, one per UTM zone
(EPSG:32631, EPSG:32632) overlapping across 6°E like MGRS tiles; uint16 band COGs with the DN
convention of processing baseline 04.00 (reflectance = DN * 0.0001 - 0.1, nodata 0) stated in
the raster extension; a 20 m ``SCL`` COG with the scene-classification codes; eo, raster and
projection extension fields.

Everything in the scene is defined in lon/lat (land cover, texture, clouds), and each tile pixel
is rendered by sampling it at the pixel centre, so both tiles and all dates agree where they
overlap.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pystac
import rasterio
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.transform import Affine
from scipy import ndimage
from shapely.geometry import Polygon, mapping, shape

from geodelta.schemas.classes import WORLDCOVER_TO_GEODELTA

# --------------------------------------------------------------------------------------------
# Public constants
# --------------------------------------------------------------------------------------------

#: The demo area of interest (min_lon, min_lat, max_lon, max_lat) at ``scale=1``.
DEMO_AOI: tuple[float, float, float, float] = (5.90, 45.00, 6.10, 45.09)
IMAGERY_COLLECTION = "geodelta-demo-s2l2a"
LANDCOVER_COLLECTION = "geodelta-demo-landcover"
BANDS = ("B02", "B03", "B04", "B08")
T0_WINDOW = ("2020-06-01", "2020-08-31")
T1_WINDOW = ("2021-06-01", "2021-08-31")

#: Acquisition dates of the imagery items (three per window, 25 and 35 days apart).
T0_DATES: Final[tuple[str, ...]] = ("2020-06-14", "2020-07-09", "2020-08-13")
T1_DATES: Final[tuple[str, ...]] = ("2021-06-19", "2021-07-14", "2021-08-18")

#: Reflectance = DN * DN_SCALE + DN_OFFSET (Sentinel-2 L2A, processing baseline >= 04.00).
DN_SCALE: Final[float] = 0.0001
DN_OFFSET: Final[float] = -0.1

#: Sentinel-2 scene classification (SCL) codes the demo uses.
SCL_NODATA: Final[int] = 0
SCL_CLOUD_SHADOW: Final[int] = 3
SCL_VEGETATION: Final[int] = 4
SCL_NOT_VEGETATED: Final[int] = 5
SCL_WATER: Final[int] = 6
SCL_CLOUD_MEDIUM: Final[int] = 8
SCL_CLOUD_HIGH: Final[int] = 9

#: Kind of injected change -> (possible WorldCover from-classes, possible to-classes).
CHANGE_KINDS: Final[dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = {
    "new_built_up": ((40, 30), (50,)),
    "deforestation": ((10,), (30, 60)),
    "water_gain": ((30,), (80,)),
    "water_loss": ((80,), (60,)),
    "cropland_change": ((30,), (40,)),
}

SHIFTS_CONVENTION: Final[str] = (
    "content displacement (dy, dx) in pixels of the item's 10 m grid, +dy = down (south), "
    "+dx = right (east): pixel (r, c) of a shifted item shows what an unshifted item shows at "
    "(r - dy, c - dx), so the content moved by +(dy, dx). The correction that aligns the after "
    "scene to the before scene is (-dy, -dx). Before (t0) items are not shifted: (0, 0)."
)

# --------------------------------------------------------------------------------------------
# Private constants
# --------------------------------------------------------------------------------------------

_CENTRE: Final[tuple[float, float]] = (6.0, 45.045)
_ZONE_EDGE_LON: Final[float] = 6.0
_ZONES: Final[tuple[tuple[int, int], ...]] = ((31, 32631), (32, 32632))
_PIXEL_M: Final[float] = 10.0
_SCL_PIXEL_M: Final[float] = 20.0
_CELL_M: Final[float] = 1280.0
_LC_STEPS_PER_DEG: Final[int] = 12000
_TILE_MARGIN_M: Final[float] = 640.0  # around the AOI part of the tile's own zone
_TILE_OVERLAP_M: Final[float] = 2560.0  # into the other zone, beyond 6°E
_LC_MARGIN_M: Final[float] = 300.0  # land cover beyond the union of the tiles
_CLOUD_GRID_M: Final[float] = 40.0
_ACQUISITION_TIME: Final[str] = "10:30:31"

# Local metric frame about the AOI centre (only used to lay shapes out; truth is in lon/lat).
_M_PER_DEG_LAT: Final[float] = 111_132.0
_M_PER_DEG_LON: Final[float] = 111_320.0 * math.cos(math.radians(_CENTRE[1]))

#: Mean surface reflectance (B02, B03, B04, B08) per WorldCover class.
_SPECTRA: Final[dict[int, tuple[float, float, float, float]]] = {
    10: (0.025, 0.045, 0.028, 0.360),  # tree cover
    20: (0.040, 0.062, 0.055, 0.250),  # shrubland
    30: (0.035, 0.070, 0.045, 0.290),  # grassland
    40: (0.045, 0.080, 0.070, 0.300),  # cropland (replaced by the per-parcel mix below)
    50: (0.130, 0.145, 0.160, 0.190),  # built-up: bright, flat
    60: (0.150, 0.190, 0.230, 0.280),  # bare: bright, rising
    80: (0.055, 0.060, 0.035, 0.015),  # water: dark, NIR absorbed
    90: (0.035, 0.055, 0.040, 0.160),  # wetland
}
_CROP_GREEN: Final[tuple[float, ...]] = (0.035, 0.075, 0.040, 0.340)
_CROP_SOIL: Final[tuple[float, ...]] = (0.110, 0.140, 0.170, 0.240)
#: Relative texture amplitude per class.
_TEXTURE: Final[dict[int, float]] = {
    10: 0.10,
    20: 0.08,
    30: 0.05,
    40: 0.05,
    50: 0.18,
    60: 0.08,
    80: 0.04,
    90: 0.06,
}
_CLOUD_BANDS: Final[tuple[float, ...]] = (1.0, 0.98, 0.97, 1.0)
_NOISE_SIGMA: Final[float] = 0.0015
_PSF_SIGMA_M: Final[float] = 5.0  # Gaussian point-spread function of the "sensor"
#: Per date index in a window: (clouds at scale 1, min radius m, max radius m).
_CLOUD_SCHEDULE: Final[tuple[tuple[int, float, float], ...]] = (
    (1, 300.0, 650.0),
    (5, 600.0, 1300.0),
    (3, 400.0, 1000.0),
)
_CLOUD_THRESHOLD: Final[float] = 0.35

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
_SYNTHETIC_NOTE: Final[str] = (
    "SYNTHETIC data generated by geodelta (sources/demo_catalog.py) for offline tests and "
    "demos; not real observations."
)


class DemoCatalogError(ValueError):
    """A demo catalog that cannot be written or read; ``key`` names what to change."""

    def __init__(self, message: str, *, key: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.path = path


# --------------------------------------------------------------------------------------------
# Public records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoCatalog:
    """A demo catalog on disk.

    Attributes:
        root: the folder written.
        catalog_path: ``root / "catalog.json"``.
        aoi_bbox: the AOI actually used (after ``scale``), (min_lon, min_lat, max_lon, max_lat).
        truth_dir: ``root / "truth"`` (``changes.geojson``, ``shifts.json``).
    """

    root: Path
    catalog_path: Path
    aoi_bbox: tuple[float, float, float, float]
    truth_dir: Path


@dataclass(frozen=True)
class DemoTruth:
    """What the demo catalog was generated from.

    Attributes:
        changes: one dict per injected change: ``geometry`` (shapely Polygon, lon/lat),
            ``from_class`` / ``to_class`` (geodelta class names), ``kind``, plus ``id`` and
            ``worldcover_from`` / ``worldcover_to`` (WorldCover legend values).
        shifts: item id -> (dy, dx) content displacement in pixels of the 10 m grid (see
            :data:`SHIFTS_CONVENTION`); (0, 0) for before items.
    """

    changes: list[dict[str, Any]]
    shifts: dict[str, tuple[float, float]]


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


def _scaled_aoi(scale: float) -> tuple[float, float, float, float]:
    lon_c, lat_c = _CENTRE
    half_w = (DEMO_AOI[2] - DEMO_AOI[0]) / 2 * scale
    half_h = (DEMO_AOI[3] - DEMO_AOI[1]) / 2 * scale
    return (
        round(lon_c - half_w, 9),
        round(lat_c - half_h, 9),
        round(lon_c + half_w, 9),
        round(lat_c + half_h, 9),
    )


def _to_local(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat -> metres east/north of the AOI centre (equirectangular, for layout only)."""
    return (lon - _CENTRE[0]) * _M_PER_DEG_LON, (lat - _CENTRE[1]) * _M_PER_DEG_LAT


def _from_local(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _CENTRE[0] + x / _M_PER_DEG_LON, _CENTRE[1] + y / _M_PER_DEG_LAT


def _box_ring(x0: float, y0: float, x1: float, y1: float, n: int = 16) -> np.ndarray:
    """Closed ring of a box, ``n`` points per edge, shape (4n + 1, 2)."""
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(n, x1), x1 - (x1 - x0) * t, np.full(n, x0)])
    ys = np.concatenate([np.full(n, y0), y0 + (y1 - y0) * t, np.full(n, y1), y1 - (y1 - y0) * t])
    ring = np.stack([xs, ys], axis=1)
    return np.concatenate([ring, ring[:1]])


@dataclass(frozen=True)
class _Tile:
    """One imagery tile (10 m grid of one UTM zone)."""

    zone: int
    epsg: int
    x0: float  # left edge (m)
    y0: float  # top edge (m)
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        return Affine(_PIXEL_M, 0.0, self.x0, 0.0, -_PIXEL_M, self.y0)

    @property
    def scl_transform(self) -> Affine:
        return Affine(_SCL_PIXEL_M, 0.0, self.x0, 0.0, -_SCL_PIXEL_M, self.y0)

    def footprint(self) -> Polygon:
        """Tile outline in lon/lat (corners, as Sentinel-2 item geometries)."""
        x1 = self.x0 + self.width * _PIXEL_M
        y1 = self.y0 - self.height * _PIXEL_M
        xs = np.array([self.x0, x1, x1, self.x0, self.x0])
        ys = np.array([self.y0, self.y0, y1, y1, self.y0])
        lon, lat = Transformer.from_crs(self.epsg, 4326, always_xy=True).transform(xs, ys)
        return Polygon(list(zip(np.round(lon, 7), np.round(lat, 7), strict=True)))


def _make_tile(aoi: tuple[float, float, float, float], zone: int, epsg: int) -> _Tile:
    min_lon, min_lat, max_lon, max_lat = aoi
    m_lon = _TILE_MARGIN_M / _M_PER_DEG_LON
    m_lat = _TILE_MARGIN_M / _M_PER_DEG_LAT
    overlap = _TILE_OVERLAP_M / _M_PER_DEG_LON
    if zone == 31:
        lon0, lon1 = min_lon - m_lon, _ZONE_EDGE_LON + overlap
    else:
        lon0, lon1 = _ZONE_EDGE_LON - overlap, max_lon + m_lon
    ring = _box_ring(lon0, min_lat - m_lat, lon1, max_lat + m_lat)
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(ring[:, 0], ring[:, 1])
    step = _SCL_PIXEL_M  # origin on a multiple of 20 m so the 20 m SCL grid nests exactly
    x0 = math.floor(float(np.min(x)) / step) * step
    x1 = math.ceil(float(np.max(x)) / step) * step
    y0 = math.floor(float(np.min(y)) / step) * step
    y1 = math.ceil(float(np.max(y)) / step) * step
    return _Tile(
        zone=zone,
        epsg=epsg,
        x0=float(x0),
        y0=float(y1),
        width=round((x1 - x0) / _PIXEL_M),
        height=round((y1 - y0) / _PIXEL_M),
    )


def _demo_cells(aoi: tuple[float, float, float, float]) -> list[tuple[int, int, int]]:
    """The 1280 m cells the pipeline keeps over ``aoi`` (its default grid), for self-checks.

    A cell of zone Z is kept when it lies fully inside the AOI and its centre longitude is in
    zone Z. Returns ``(epsg, col, row)`` with the cell spanning eastings
    ``[col * 1280, (col + 1) * 1280]`` and northings ``[row * 1280, (row + 1) * 1280]``.
    """
    min_lon, min_lat, max_lon, max_lat = aoi
    cells: list[tuple[int, int, int]] = []
    ring = _box_ring(min_lon, min_lat, max_lon, max_lat)
    for zone, epsg in _ZONES:
        to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
        to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
        x, y = to_utm.transform(ring[:, 0], ring[:, 1])
        cols = range(math.floor(np.min(x) / _CELL_M), math.ceil(np.max(x) / _CELL_M))
        rows = range(math.floor(np.min(y) / _CELL_M), math.ceil(np.max(y) / _CELL_M))
        for col in cols:
            for row in rows:
                cell = _box_ring(
                    col * _CELL_M, row * _CELL_M, (col + 1) * _CELL_M, (row + 1) * _CELL_M, n=4
                )
                lon, lat = to_ll.transform(cell[:, 0], cell[:, 1])
                inside = (
                    np.all(lon >= min_lon)
                    and np.all(lon <= max_lon)
                    and np.all(lat >= min_lat)
                    and np.all(lat <= max_lat)
                )
                c_lon, _ = to_ll.transform((col + 0.5) * _CELL_M, (row + 0.5) * _CELL_M)
                in_zone = (c_lon < _ZONE_EDGE_LON) if zone == 31 else (c_lon >= _ZONE_EDGE_LON)
                if inside and in_zone:
                    cells.append((epsg, col, row))
    return cells


@dataclass(frozen=True)
class _LonLatGrid:
    """A north-up lon/lat raster grid; (row, col) integers are pixel centres."""

    lon0: float
    lat0: float
    dlon: float
    dlat: float
    height: int
    width: int

    @property
    def transform(self) -> Affine:
        return Affine(self.dlon, 0.0, self.lon0, 0.0, -self.dlat, self.lat0)

    def frac_index(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (self.lat0 - lat) / self.dlat - 0.5, (lon - self.lon0) / self.dlon - 0.5

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre lon (W,) and lat (H,)."""
        lon = self.lon0 + (np.arange(self.width) + 0.5) * self.dlon
        lat = self.lat0 - (np.arange(self.height) + 0.5) * self.dlat
        return lon, lat

    def bounds(self) -> tuple[float, float, float, float]:
        return (
            self.lon0,
            self.lat0 - self.height * self.dlat,
            self.lon0 + self.width * self.dlon,
            self.lat0,
        )


def _landcover_grid(tiles: list[_Tile]) -> _LonLatGrid:
    """WorldCover-like grid (1/12000°, aligned on multiples of it) over the tiles + margin."""
    bounds = np.array([t.footprint().bounds for t in tiles])
    m_lon = _LC_MARGIN_M / _M_PER_DEG_LON
    m_lat = _LC_MARGIN_M / _M_PER_DEG_LAT
    k = _LC_STEPS_PER_DEG
    i0 = math.floor((bounds[:, 0].min() - m_lon) * k)
    i1 = math.ceil((bounds[:, 2].max() + m_lon) * k)
    j0 = math.floor((bounds[:, 1].min() - m_lat) * k)
    j1 = math.ceil((bounds[:, 3].max() + m_lat) * k)
    return _LonLatGrid(i0 / k, j1 / k, 1.0 / k, 1.0 / k, j1 - j0, i1 - i0)


def _cloud_grid(lc: _LonLatGrid) -> _LonLatGrid:
    dlon = _CLOUD_GRID_M / _M_PER_DEG_LON
    dlat = _CLOUD_GRID_M / _M_PER_DEG_LAT
    w = math.ceil(lc.width * lc.dlon / dlon) + 1
    h = math.ceil(lc.height * lc.dlat / dlat) + 1
    return _LonLatGrid(lc.lon0, lc.lat0, dlon, dlat, h, w)


# --------------------------------------------------------------------------------------------
# Random fields
# --------------------------------------------------------------------------------------------


def _rng(seed: int, tag: str) -> np.random.Generator:
    """An independent stream per purpose, so one part can change without moving the others."""
    return np.random.default_rng([seed, zlib.crc32(tag.encode())])


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], sigma_px: tuple[float, float]
) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field (float32), built coarse and upsampled."""
    factor = max(1, int(min(sigma_px) / 3))
    coarse_shape = (shape[0] // factor + 3, shape[1] // factor + 3)
    noise = rng.standard_normal(coarse_shape, dtype=np.float32)
    field = ndimage.gaussian_filter(
        noise, (sigma_px[0] / factor, sigma_px[1] / factor), mode="wrap"
    )
    if factor > 1:
        field = ndimage.zoom(field, factor, order=1, grid_mode=False)
    field = field[: shape[0], : shape[1]]
    field -= field.mean()
    field /= max(float(field.std()), 1e-12)
    return field.astype(np.float32, copy=False)


def _bilinear(stack: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Sample a (C, H, W) or (H, W) array at fractional (row, col), edges clamped."""
    h, w = stack.shape[-2:]
    row = np.clip(row, 0.0, h - 1.0)
    col = np.clip(col, 0.0, w - 1.0)
    r0 = np.minimum(row.astype(np.intp), h - 2)  # row >= 0: truncation is floor
    c0 = np.minimum(col.astype(np.intp), w - 2)
    fr = (row - r0).astype(np.float32)
    fc = (col - c0).astype(np.float32)
    flat = stack.reshape(*stack.shape[:-2], h * w)
    i00 = r0 * w + c0
    v00 = np.take(flat, i00, axis=-1)
    v01 = np.take(flat, i00 + 1, axis=-1)
    top = v00 + (v01 - v00) * fc
    v10 = np.take(flat, i00 + w, axis=-1)
    v11 = np.take(flat, i00 + w + 1, axis=-1)
    bottom = v10 + (v11 - v10) * fc
    out: np.ndarray = top + (bottom - top) * fr
    return out


# --------------------------------------------------------------------------------------------
# Land cover
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Land cover of the first year and where things are (local metres)."""

    lc: np.ndarray  # (H, W) uint8, WorldCover codes
    crop_mix: np.ndarray  # (H, W) float32, share of bare soil in a crop parcel
    texture: np.ndarray  # (H, W) float32, unit-std texture
    town: tuple[float, float, float]  # x, y, radius
    cloud: tuple[float, float, float]  # the persistent t0 cloud: x, y, radius


def _layout(seed: int, aoi: tuple[float, float, float, float], grid: _LonLatGrid) -> _Layout:
    """Smooth seeded fields thresholded into forest blocks, parcels, a lake, a river, a town."""
    shape = (grid.height, grid.width)
    lon, lat = grid.centres()
    x1d, y1d = _to_local(lon, lat)
    x = np.broadcast_to(x1d.astype(np.float32)[None, :], shape)
    y = np.broadcast_to(y1d.astype(np.float32)[:, None], shape)
    px = (_M_PER_DEG_LAT / _LC_STEPS_PER_DEG, _M_PER_DEG_LON / _LC_STEPS_PER_DEG)  # (row, col) m

    def field(tag: str, sigma_m: float) -> np.ndarray:
        return _smooth_field(_rng(seed, tag), shape, (sigma_m / px[0], sigma_m / px[1]))

    half_w = (aoi[2] - aoi[0]) / 2 * _M_PER_DEG_LON
    half_h = (aoi[3] - aoi[1]) / 2 * _M_PER_DEG_LAT
    rng = _rng(seed, "layout")

    lc = np.full(shape, 30, dtype=np.uint8)  # grassland everywhere to start with
    # field parcels on a rotated grid, each cropped or not, each with its own soil share
    theta = math.radians(float(rng.uniform(-35.0, 35.0)))
    u = x * math.cos(theta) + y * math.sin(theta)
    v = -x * math.sin(theta) + y * math.cos(theta)
    pu = np.floor(u / 230.0).astype(np.int64)
    pv = np.floor(v / 160.0).astype(np.int64)
    pu -= pu.min()
    pv -= pv.min()
    parcel_draw = rng.random((int(pu.max()) + 1, int(pv.max()) + 1, 2)).astype(np.float32)
    cropped = parcel_draw[pu, pv, 0]
    crop_mix = 0.1 + 0.5 * parcel_draw[pu, pv, 1]
    agri = field("agri", 900.0)
    lc[(cropped < 0.6) & (agri > -0.4)] = 40
    # forest blocks with ragged edges (~28 % of the area)
    forest = field("forest", 550.0) + 0.25 * field("forest-edge", 60.0)
    lc[forest > np.quantile(forest[::7, ::7], 0.72)] = 10
    shrub = field("shrub", 200.0)
    lc[(shrub > np.quantile(shrub[::7, ::7], 0.95)) & (lc != 10)] = 20
    bare = field("bare", 120.0)
    lc[bare > np.quantile(bare[::7, ::7], 0.985)] = 60
    # a town: a ragged disc of built-up blocks with some green
    tx, ty = 0.35 * half_w, -0.40 * half_h
    tr = min(900.0, 0.35 * half_h)
    d_town = np.hypot(x - tx, y - ty) / tr
    town = d_town < 1.0 + 0.2 * field("town-edge", 150.0)
    lc[town & (field("town-blocks", 25.0) > -0.7)] = 50
    # a lake with a wetland fringe
    lx, ly = -0.45 * half_w, 0.30 * half_h
    la, lb = min(550.0, 0.25 * half_w), min(350.0, 0.25 * half_h)
    phi = float(rng.uniform(0.0, math.pi))
    xr = (x - lx) * math.cos(phi) + (y - ly) * math.sin(phi)
    yr = -(x - lx) * math.sin(phi) + (y - ly) * math.cos(phi)
    q = np.sqrt((xr / la) ** 2 + (yr / lb) ** 2) - 0.15 * field("lake-edge", 100.0)
    lc[(q >= 1.0) & (q < 1.3) & (field("wetland", 120.0) > 0.0)] = 90
    lc[q < 1.0] = 80
    # a meandering river across the AOI, west to east
    amp = 0.12 * half_h
    p1, p2 = rng.uniform(0.0, 2 * math.pi, 2)
    centre = -0.10 * half_h + amp * (
        np.sin(2 * math.pi * x1d / 3000.0 + p1) + 0.3 * np.sin(2 * math.pi * x1d / 1100.0 + p2)
    )
    half_width = 22.0 + 6.0 * field("river-width", 300.0)
    lc[np.abs(y - centre.astype(np.float32)[None, :]) < half_width] = 80

    texture = 0.8 * field("texture-fine", 9.0) + 0.6 * field("texture-medium", 70.0)
    cx, cy = 0.45 * half_w, 0.40 * half_h
    cr = 0.07 * 2 * half_h
    return _Layout(
        lc=lc,
        crop_mix=crop_mix.astype(np.float32),
        texture=texture,
        town=(tx, ty, tr),
        cloud=(cx, cy, cr),
    )


def _ellipse_or_rect(rng: np.random.Generator, cx: float, cy: float) -> Polygon:
    """A change polygon 80-400 m across, in lon/lat (vertices rounded to 1e-7°)."""
    length = float(rng.uniform(80.0, 400.0))
    breadth = length * float(rng.uniform(0.5, 1.0))
    angle = float(rng.uniform(0.0, math.pi))
    if rng.random() < 0.5:
        t = np.linspace(0.0, 2 * math.pi, 48, endpoint=False)
        px, py = 0.5 * length * np.cos(t), 0.5 * breadth * np.sin(t)
    else:
        px = 0.5 * length * np.array([-1.0, 1.0, 1.0, -1.0])
        py = 0.5 * breadth * np.array([-1.0, -1.0, 1.0, 1.0])
    x = cx + px * math.cos(angle) - py * math.sin(angle)
    y = cy + px * math.sin(angle) + py * math.cos(angle)
    lon, lat = _from_local(x, y)
    return Polygon(list(zip(np.round(lon, 7), np.round(lat, 7), strict=True)))


def _place_changes(
    seed: int,
    aoi: tuple[float, float, float, float],
    grid: _LonLatGrid,
    layout: _Layout,
    n_changes: int,
) -> list[dict[str, Any]]:
    """Choose change polygons: one of each kind first, then random kinds; none overlap."""
    rng = _rng(seed, "changes")
    lon, lat = grid.centres()
    x1d, y1d = _to_local(lon, lat)
    ax0, ay0 = _to_local(np.array(aoi[0]), np.array(aoi[1]))
    ax1, ay1 = _to_local(np.array(aoi[2]), np.array(aoi[3]))
    inset = min(250.0, 0.25 * float(min(ax1 - ax0, ay1 - ay0)))
    cols = np.flatnonzero((x1d > ax0 + inset) & (x1d < ax1 - inset))
    rows = np.flatnonzero((y1d > ay0 + inset) & (y1d < ay1 - inset))
    if cols.size == 0 or rows.size == 0:
        raise DemoCatalogError(f"AOI {aoi} is too small for change polygons", key="scale")
    sub = layout.lc[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    sx = x1d[cols[0] : cols[-1] + 1][None, :]
    sy = y1d[rows[0] : rows[-1] + 1][:, None]
    cx, cy, cr = layout.cloud
    allowed = np.hypot(sx - cx, sy - cy) > 1.7 * cr + 250.0
    tx, ty, tr = layout.town
    near_town = np.hypot(sx - tx, sy - ty) < 2.5 * tr

    kinds = list(CHANGE_KINDS)
    weights = np.array([0.3, 0.25, 0.1, 0.1, 0.25])
    plan = kinds + [kinds[int(i)] for i in rng.choice(len(kinds), n_changes, p=weights)]
    plan = plan[: max(n_changes, len(kinds))]

    placed: list[Polygon] = []
    placed_local: list[Polygon] = []
    changes: list[dict[str, Any]] = []
    for kind in plan:
        froms, tos = CHANGE_KINDS[kind]
        candidates = allowed & np.isin(sub, froms)
        if kind == "new_built_up" and np.any(candidates & near_town):
            candidates &= near_town  # the town grows
        if kind == "water_loss":
            lake = ndimage.binary_erosion(sub == 80, iterations=4)  # not the narrow river
            if np.any(candidates & lake):
                candidates &= lake  # the lake shrinks
        flat = np.flatnonzero(candidates)
        if flat.size == 0:
            flat = np.flatnonzero(allowed)
        if flat.size == 0:
            raise DemoCatalogError("no room for change polygons", key="scale")
        for _ in range(60):
            k = int(flat[rng.integers(flat.size)])
            r, c = divmod(k, sub.shape[1])
            px, py = float(sx[0, c]), float(sy[r, 0])
            poly = _ellipse_or_rect(rng, px, py)
            local = Polygon(np.stack(_to_local(*np.asarray(poly.exterior.coords).T), axis=1))
            if all(local.distance(other) > 80.0 for other in placed_local):
                break
        else:
            continue  # too crowded: skip this one rather than overlap
        from_wc = int(sub[r, c]) if int(sub[r, c]) in froms else froms[0]
        to_wc = tos[int(rng.integers(len(tos)))]
        placed.append(poly)
        placed_local.append(local)
        changes.append(
            {
                "id": f"change-{len(changes):03d}",
                "geometry": poly,
                "kind": kind,
                "from_class": WORLDCOVER_TO_GEODELTA[from_wc],
                "to_class": WORLDCOVER_TO_GEODELTA[to_wc],
                "worldcover_from": from_wc,
                "worldcover_to": to_wc,
            }
        )
    return changes


def _paint_changes(
    lc: np.ndarray, grid: _LonLatGrid, changes: list[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """The 2020 and 2021 maps: each polygon painted with its from- and to-class."""
    if not changes:
        return lc.copy(), lc.copy()
    index = rasterize(
        [(ch["geometry"], i + 1) for i, ch in enumerate(changes)],
        out_shape=lc.shape,
        transform=grid.transform,
        fill=0,
        dtype="int32",
    )
    lut_from = np.zeros(len(changes) + 1, dtype=np.uint8)
    lut_to = np.zeros(len(changes) + 1, dtype=np.uint8)
    for i, ch in enumerate(changes):
        lut_from[i + 1] = ch["worldcover_from"]
        lut_to[i + 1] = ch["worldcover_to"]
    inside = index > 0
    before, after = lc.copy(), lc.copy()
    before[inside] = lut_from[index[inside]]
    after[inside] = lut_to[index[inside]]
    return before, after


def _reflectance_field(lc: np.ndarray, layout: _Layout) -> np.ndarray:
    """(4, H, W) float32 surface reflectance of one year's land cover, textured and blurred."""
    lut = np.zeros((256, 4), dtype=np.float32)
    amp = np.zeros(256, dtype=np.float32)
    for code, spectrum in _SPECTRA.items():
        lut[code] = spectrum
        amp[code] = _TEXTURE[code]
    refl = np.moveaxis(lut[lc], -1, 0)  # (4, H, W)
    crop = lc == 40
    mix = layout.crop_mix[crop]
    for b in range(4):
        refl[b][crop] = _CROP_GREEN[b] * (1 - mix) + _CROP_SOIL[b] * mix
    refl *= 1.0 + amp[lc] * layout.texture
    # a mild point-spread function (~5 m) so edges are not aliased when resampled
    psf = _PSF_SIGMA_M
    sigma = (psf / (_M_PER_DEG_LAT / _LC_STEPS_PER_DEG), psf / (_M_PER_DEG_LON / _LC_STEPS_PER_DEG))
    for b in range(4):
        refl[b] = ndimage.gaussian_filter(refl[b], sigma, mode="nearest")
    return np.ascontiguousarray(refl, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Clouds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clouds:
    """Cloud thickness on a coarse lon/lat grid for one date, and the shadow offset (m)."""

    thickness: np.ndarray
    shadow_m: tuple[float, float]


def _clouds(
    seed: int, day: str, index: int, grid: _LonLatGrid, layout: _Layout, scale: float, t0: bool
) -> _Clouds:
    rng = _rng(seed, f"clouds/{day}")
    lon, lat = grid.centres()
    x1d, y1d = _to_local(lon, lat)
    x = x1d.astype(np.float32)[None, :]
    y = y1d.astype(np.float32)[:, None]
    thickness = np.zeros((grid.height, grid.width), dtype=np.float32)

    def blob(cx: float, cy: float, sigma: float, amp: float) -> None:
        thickness[...] += amp * np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / sigma**2)

    n_base, r_min, r_max = _CLOUD_SCHEDULE[index]
    n = max(1, round(n_base * scale**2))
    xmin, xmax, ymin, ymax = float(x1d[0]), float(x1d[-1]), float(y1d[-1]), float(y1d[0])
    for _ in range(n):
        radius = float(rng.uniform(r_min, r_max))
        cx, cy = float(rng.uniform(xmin, xmax)), float(rng.uniform(ymin, ymax))
        for _sub in range(5):
            ox, oy = rng.normal(0.0, 0.45 * radius, 2)
            blob(
                cx + ox,
                cy + oy,
                radius * float(rng.uniform(0.3, 0.6)),
                float(rng.uniform(0.6, 1.2)),
            )
    if t0:  # the same area is cloudy on every date of the before window
        cx, cy, cr = layout.cloud
        blob(cx, cy, cr / 1.2, 2.0)
        for _sub in range(3):
            ox, oy = rng.normal(0.0, 0.4 * cr, 2)
            blob(cx + ox, cy + oy, cr * 0.5, float(rng.uniform(0.5, 1.0)))
    # billowy texture, different on every date
    thickness *= 1.0 + 0.35 * np.clip(_smooth_field(rng, thickness.shape, (3.0, 3.0)), -2, 2)
    azimuth = math.radians(float(rng.uniform(290.0, 330.0)))  # shadows fall to the north-west
    dist = float(rng.uniform(250.0, 500.0))
    return _Clouds(thickness, (dist * math.sin(azimuth), dist * math.cos(azimuth)))


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rendered:
    dn: np.ndarray  # (4, H, W) uint16
    scl: np.ndarray  # (H/2, W/2) uint8
    cloud_cover: float  # percent of SCL pixels classed cloud (8, 9)


def _pixel_lonlat(tile: _Tile, dy: float, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat of the ground each pixel shows: the centre of (r - dy, c - dx)."""
    cols = np.arange(tile.width, dtype=np.float64)
    rows = np.arange(tile.height, dtype=np.float64)
    x = tile.x0 + (cols - dx + 0.5) * _PIXEL_M
    y = tile.y0 - (rows - dy + 0.5) * _PIXEL_M
    xx, yy = np.meshgrid(x, y)
    lon, lat = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(xx, yy)
    return np.asarray(lon), np.asarray(lat)


def _scl_clear(lc_codes: np.ndarray) -> np.ndarray:
    lut = np.full(256, SCL_VEGETATION, dtype=np.uint8)
    lut[[50, 60]] = SCL_NOT_VEGETATED
    lut[80] = SCL_WATER
    return lut[lc_codes]


def _scl_to_20m(scl10: np.ndarray) -> np.ndarray:
    """2x2 blocks -> the most severe class (cloud > medium cloud > shadow > water > ...)."""
    rank = np.zeros(256, dtype=np.uint8)
    order = (SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER, SCL_CLOUD_SHADOW)
    for i, code in enumerate((*order, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH)):
        rank[code] = i + 1
    h, w = scl10.shape
    ranks = rank[scl10].reshape(h // 2, 2, w // 2, 2).max(axis=(1, 3))
    back = np.zeros(8, dtype=np.uint8)
    back[1:7] = (*order, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH)
    out: np.ndarray = back[ranks]
    return out


def _render(
    *,
    seed: int,
    item_id: str,
    tile: _Tile,
    lonlat: tuple[np.ndarray, np.ndarray],
    refl_field: np.ndarray,
    lc: np.ndarray,
    lc_grid: _LonLatGrid,
    clouds: _Clouds,
    cloud_grid: _LonLatGrid,
    radiometry: tuple[np.ndarray, np.ndarray],
) -> _Rendered:
    lon, lat = lonlat
    row, col = lc_grid.frac_index(lon, lat)
    refl = _bilinear(refl_field, row, col)  # (4, H, W)
    codes = lc[
        np.clip(np.rint(row).astype(np.intp), 0, lc.shape[0] - 1),
        np.clip(np.rint(col).astype(np.intp), 0, lc.shape[1] - 1),
    ]
    scl = _scl_clear(codes)

    crow, ccol = cloud_grid.frac_index(lon, lat)
    thick = _bilinear(clouds.thickness, crow, ccol)
    sx, sy = clouds.shadow_m
    shadow_thick = _bilinear(
        clouds.thickness,
        crow + sy / _M_PER_DEG_LAT / cloud_grid.dlat,
        ccol - sx / _M_PER_DEG_LON / cloud_grid.dlon,
    )
    alpha = np.clip((thick - _CLOUD_THRESHOLD) / 0.35, 0.0, 1.0)
    cloudy = alpha > 0
    shade = np.clip((shadow_thick - _CLOUD_THRESHOLD) / 0.35, 0.0, 1.0)
    shadowed = (shade > 0) & ~cloudy
    refl *= np.where(shadowed, 1.0 - 0.6 * np.minimum(1.0, 2.0 * shade), 1.0)[None]
    brightness = 0.35 + 0.25 * np.clip((thick - _CLOUD_THRESHOLD) / 1.2, 0.0, 1.0)
    for b in range(4):
        refl[b] = refl[b] * (1 - alpha) + alpha * brightness * _CLOUD_BANDS[b]
    scl[shadowed] = SCL_CLOUD_SHADOW
    scl[cloudy] = SCL_CLOUD_MEDIUM
    scl[alpha >= 0.5] = SCL_CLOUD_HIGH

    gain, offset = radiometry
    noise = _rng(seed, f"noise/{item_id}").standard_normal(refl.shape, dtype=np.float32)
    refl = refl * gain[:, None, None] + offset[:, None, None] + _NOISE_SIGMA * noise
    dn = np.clip(np.rint((refl - DN_OFFSET) / DN_SCALE), 1, 65535).astype(np.uint16)
    scl20 = _scl_to_20m(scl)
    cover = float(np.isin(scl20, (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH)).mean() * 100.0)
    return _Rendered(dn=dn, scl=scl20, cloud_cover=round(cover, 4))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _write_cog(
    path: Path, array: np.ndarray, *, crs: str, transform: Affine, resampling: str
) -> None:
    """One band COG: deflate, 256 px blocks, overviews, nodata 0, no timestamps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype=array.dtype.name,
        crs=crs,
        transform=transform,
        nodata=0,
        compress="deflate",
        predictor=2,
        blocksize=256,
        overview_resampling=resampling,
    ) as dst:
        dst.write(array, 1)


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


def _item_id(day: date, zone: int) -> str:
    letter = _platform(day)[-1].upper()
    return f"DEMO_S2{letter}_L2A_UTM{zone}_{day:%Y%m%d}"


def _imagery_item(
    item_id: str, day: date, tile: _Tile, rendered: _Rendered, folder: Path
) -> pystac.Item:
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
            "gsd": _PIXEL_M,
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
        _write_cog(path, rendered.dn[b], crs=crs, transform=tile.transform, resampling="average")
        common, centre, fwhm, title = _BAND_INFO[band]
        item.add_asset(
            band,
            pystac.Asset(
                href=str(path),
                media_type=pystac.MediaType.COG,
                roles=["data", "reflectance"],
                title=f"{title} (synthetic)",
                extra_fields={
                    "gsd": _PIXEL_M,
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
                            "spatial_resolution": int(_PIXEL_M),
                        }
                    ],
                    **_proj_fields(tile.epsg, (tile.height, tile.width), tile.transform),
                },
            ),
        )
    path = folder / "SCL.tif"
    _write_cog(path, rendered.scl, crs=crs, transform=tile.scl_transform, resampling="nearest")
    item.add_asset(
        "SCL",
        pystac.Asset(
            href=str(path),
            media_type=pystac.MediaType.COG,
            roles=["data"],
            title="Scene classification map (SCL, 20m, synthetic)",
            extra_fields={
                "gsd": _SCL_PIXEL_M,
                "raster:bands": [
                    {"data_type": "uint8", "nodata": 0, "spatial_resolution": int(_SCL_PIXEL_M)}
                ],
                **_proj_fields(tile.epsg, rendered.scl.shape, tile.scl_transform),
            },
        ),
    )
    return item


def _landcover_item(year: int, lc: np.ndarray, grid: _LonLatGrid, folder: Path) -> pystac.Item:
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
    _write_cog(path, lc, crs="EPSG:4326", transform=grid.transform, resampling="nearest")
    item.add_asset(
        "map",
        pystac.Asset(
            href=str(path),
            media_type=pystac.MediaType.COG,
            roles=["data"],
            title=f"Land cover {year}, ESA WorldCover legend (synthetic)",
            extra_fields={
                "raster:bands": [{"data_type": "uint8", "nodata": 0, "spatial_resolution": 10}],
                "classification:classes": [
                    {"value": code, "name": name}
                    for code, name in WORLDCOVER_TO_GEODELTA.items()
                    if code in _SPECTRA
                ],
                **_proj_fields(4326, lc.shape, grid.transform),
            },
        ),
    )
    return item


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
        description=f"{title}. {_SYNTHETIC_NOTE}",
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


def _draw_shift(rng: np.random.Generator) -> tuple[float, float]:
    mag = rng.uniform(0.2, 1.5, 2)
    sign = np.where(rng.random(2) < 0.5, -1.0, 1.0)
    dy, dx = (round(float(v), 3) for v in mag * sign)
    return dy, dx


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def write_demo_catalog(out_dir: str | Path, *, seed: int = 0, scale: float = 1.0) -> DemoCatalog:
    """Write the synthetic demo STAC catalog (imagery, land cover, truth) to ``out_dir``.

    The folder is written atomically (built next to it, then renamed). An existing folder is
    replaced only when it is empty or holds a previous catalog (``catalog.json``).

    Args:
        out_dir: folder to write; ``catalog.json`` lands at its root.
        seed: seed of everything random; the same seed gives byte-identical files.
        scale: shrinks (< 1) or grows (> 1) the AOI around its centre (6.0, 45.045); the AOI
            always straddles 6°E. ``scale=1`` gives 75 cells of 1280 m (the pipeline default grid),
            ``0.5`` gives 15 and ``0.3`` gives 2 (one per zone); generation takes ~20 s at
            ``scale=1`` and ~4 s at ``0.3``.

    Returns:
        Where things are, and the AOI used.

    Raises:
        DemoCatalogError: ``scale`` out of range (0.1..4) or ``out_dir`` holds other files.
    """
    if not (isinstance(scale, int | float) and 0.1 <= scale <= 4.0):
        raise DemoCatalogError(
            f"scale out of range (min=0.1, max=4, actual={scale!r})", key="scale"
        )
    out = Path(out_dir).resolve()
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "catalog.json").exists())
    ):
        raise DemoCatalogError(
            f"{out} exists and is not a demo catalog; choose an empty or new folder",
            key="out_dir",
            path=str(out),
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    # no dot in the name: pystac would take a dotted folder name for a file name
    tmp = Path(tempfile.mkdtemp(prefix="_geodelta_demo_tmp_", dir=out.parent))
    try:
        aoi = _build(tmp, seed=seed, scale=float(scale))
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DemoCatalog(
        root=out, catalog_path=out / "catalog.json", aoi_bbox=aoi, truth_dir=out / "truth"
    )


def _build(root: Path, *, seed: int, scale: float) -> tuple[float, float, float, float]:
    aoi = _scaled_aoi(scale)
    tiles = [_make_tile(aoi, zone, epsg) for zone, epsg in _ZONES]
    lc_grid = _landcover_grid(tiles)
    cloud_grid = _cloud_grid(lc_grid)
    layout = _layout(seed, aoi, lc_grid)
    n_cells = len(_demo_cells(aoi))
    changes = _place_changes(seed, aoi, lc_grid, layout, max(5, round(n_cells / 2)))
    lc_maps = dict(zip((2020, 2021), _paint_changes(layout.lc, lc_grid, changes), strict=True))

    lc_items = [
        _landcover_item(year, lc, lc_grid, root / LANDCOVER_COLLECTION / f"DEMO_LC_{year}")
        for year, lc in lc_maps.items()
    ]

    shift_rng = _rng(seed, "shifts")
    shifts: dict[str, tuple[float, float]] = {}
    imagery_items: list[pystac.Item] = []
    for year, days, is_t0 in ((2020, T0_DATES, True), (2021, T1_DATES, False)):
        refl_field = _reflectance_field(lc_maps[year], layout)
        dates = [date.fromisoformat(d) for d in days]
        clouds = [
            _clouds(seed, d.isoformat(), i, cloud_grid, layout, scale, is_t0)
            for i, d in enumerate(dates)
        ]
        radiometry = []
        for d in dates:
            rng = _rng(seed, f"radiometry/{d.isoformat()}")
            gain = rng.uniform(0.985, 1.015, 4).astype(np.float32)
            offset = rng.uniform(-0.002, 0.002, 4).astype(np.float32)
            radiometry.append((gain, offset))
        for tile in tiles:
            unshifted = _pixel_lonlat(tile, 0.0, 0.0) if is_t0 else None
            for i, d in enumerate(dates):
                item_id = _item_id(d, tile.zone)
                shift = (0.0, 0.0) if is_t0 else _draw_shift(shift_rng)
                shifts[item_id] = shift
                lonlat = unshifted if unshifted is not None else _pixel_lonlat(tile, *shift)
                rendered = _render(
                    seed=seed,
                    item_id=item_id,
                    tile=tile,
                    lonlat=lonlat,
                    refl_field=refl_field,
                    lc=lc_maps[year],
                    lc_grid=lc_grid,
                    clouds=clouds[i],
                    cloud_grid=cloud_grid,
                    radiometry=radiometry[i],
                )
                folder = root / IMAGERY_COLLECTION / item_id
                imagery_items.append(_imagery_item(item_id, d, tile, rendered, folder))

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
            f"clouds and misregistration (see truth/). {_SYNTHETIC_NOTE}"
        ),
    )
    catalog.add_child(imagery)
    catalog.add_child(landcover)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    if not (root / "catalog.json").is_file():  # pragma: no cover - guards the layout above
        raise DemoCatalogError(f"pystac did not write {root / 'catalog.json'}", path=str(root))

    _write_json(root / "truth" / "changes.geojson", _changes_geojson(changes))
    _write_json(
        root / "truth" / "shifts.json",
        {
            "convention": SHIFTS_CONVENTION,
            "units": "pixels of the item's 10 m grid",
            "shifts": {k: list(v) for k, v in shifts.items()},
        },
    )
    return aoi


def load_truth(root: str | Path) -> DemoTruth:
    """Read the truth of a demo catalog written by :func:`write_demo_catalog`.

    Args:
        root: the catalog folder (``DemoCatalog.root``).

    Returns:
        The injected changes (shapely polygons in lon/lat) and the per-item shifts.

    Raises:
        DemoCatalogError: the truth files are missing or malformed.
    """
    truth = Path(root) / "truth"
    try:
        changes_doc = json.loads((truth / "changes.geojson").read_text())
        shifts_doc = json.loads((truth / "shifts.json").read_text())
        changes = [
            {
                "id": feat.get("id"),
                "geometry": shape(feat["geometry"]),
                **feat["properties"],
            }
            for feat in changes_doc["features"]
        ]
        shifts = {k: (float(v[0]), float(v[1])) for k, v in shifts_doc["shifts"].items()}
    except FileNotFoundError as exc:
        raise DemoCatalogError(
            f"no demo truth at {truth} (missing {Path(str(exc.filename)).name}); "
            "write the catalog with write_demo_catalog()",
            path=str(truth),
        ) from None
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise DemoCatalogError(
            f"malformed demo truth in {truth}: {exc!r}", path=str(truth)
        ) from None
    return DemoTruth(changes=changes, shifts=shifts)
