"""The world of the synthetic demo: tiles, grids, land cover, injected changes, shifts.

Everything here is defined in lon/lat (or in a local metric frame about the AOI centre, for
layout only) and drawn from seeded random streams (:func:`seeded_rng`, one stream per purpose):
the two UTM tiles over the AOI (:func:`make_tile`), the land-cover grid and the coarser cloud
grid, the first year's land cover (:func:`make_layout`: forest, parcels, a lake, a river, a
town), the change polygons (:func:`place_changes`) painted into both years' maps
(:func:`paint_changes`), and the misregistration of each after-scene (:func:`draw_shift`).
Rendering it into scenes is :mod:`geodelta.sources.demo.render`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.transform import Affine
from scipy import ndimage
from shapely.geometry import Polygon

from geodelta.schemas.classes import WORLDCOVER_TO_GEODELTA
from geodelta.sources.demo.constants import (
    CENTRE,
    CHANGE_KINDS,
    DEMO_AOI,
    LC_STEPS_PER_DEG,
    M_PER_DEG_LAT,
    M_PER_DEG_LON,
    PIXEL_M,
    SCL_PIXEL_M,
    ZONES,
    DemoCatalogError,
)

__all__ = [
    "Layout",
    "LonLatGrid",
    "Tile",
    "bilinear",
    "demo_cells",
    "draw_shift",
    "landcover_grid",
    "make_cloud_grid",
    "make_layout",
    "make_tile",
    "paint_changes",
    "place_changes",
    "scaled_aoi",
    "seeded_rng",
    "smooth_field",
    "to_local",
]

_ZONE_EDGE_LON: Final[float] = 6.0
_CELL_M: Final[float] = 1280.0
_TILE_MARGIN_M: Final[float] = 640.0  # around the AOI part of the tile's own zone
_TILE_OVERLAP_M: Final[float] = 2560.0  # into the other zone, beyond 6°E
_LC_MARGIN_M: Final[float] = 300.0  # land cover beyond the union of the tiles
_CLOUD_GRID_M: Final[float] = 40.0


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


def scaled_aoi(scale: float) -> tuple[float, float, float, float]:
    """:data:`DEMO_AOI` shrunk or grown by ``scale`` about its centre (lon/lat, 1e-9°)."""
    lon_c, lat_c = CENTRE
    half_w = (DEMO_AOI[2] - DEMO_AOI[0]) / 2 * scale
    half_h = (DEMO_AOI[3] - DEMO_AOI[1]) / 2 * scale
    return (
        round(lon_c - half_w, 9),
        round(lat_c - half_h, 9),
        round(lon_c + half_w, 9),
        round(lat_c + half_h, 9),
    )


def to_local(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat -> metres east/north of the AOI centre (equirectangular, for layout only)."""
    return (lon - CENTRE[0]) * M_PER_DEG_LON, (lat - CENTRE[1]) * M_PER_DEG_LAT


def _from_local(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return CENTRE[0] + x / M_PER_DEG_LON, CENTRE[1] + y / M_PER_DEG_LAT


def _box_ring(x0: float, y0: float, x1: float, y1: float, n: int = 16) -> np.ndarray:
    """Closed ring of a box, ``n`` points per edge, shape (4n + 1, 2)."""
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(n, x1), x1 - (x1 - x0) * t, np.full(n, x0)])
    ys = np.concatenate([np.full(n, y0), y0 + (y1 - y0) * t, np.full(n, y1), y1 - (y1 - y0) * t])
    ring = np.stack([xs, ys], axis=1)
    return np.concatenate([ring, ring[:1]])


@dataclass(frozen=True)
class Tile:
    """One imagery tile (10 m grid of one UTM zone)."""

    zone: int
    epsg: int
    x0: float  # left edge (m)
    y0: float  # top edge (m)
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        """The 10 m band grid."""
        return Affine(PIXEL_M, 0.0, self.x0, 0.0, -PIXEL_M, self.y0)

    @property
    def scl_transform(self) -> Affine:
        """The 20 m SCL grid (same origin)."""
        return Affine(SCL_PIXEL_M, 0.0, self.x0, 0.0, -SCL_PIXEL_M, self.y0)

    def footprint(self) -> Polygon:
        """Tile outline in lon/lat (corners, as Sentinel-2 item geometries)."""
        x1 = self.x0 + self.width * PIXEL_M
        y1 = self.y0 - self.height * PIXEL_M
        xs = np.array([self.x0, x1, x1, self.x0, self.x0])
        ys = np.array([self.y0, self.y0, y1, y1, self.y0])
        lon, lat = Transformer.from_crs(self.epsg, 4326, always_xy=True).transform(xs, ys)
        return Polygon(list(zip(np.round(lon, 7), np.round(lat, 7), strict=True)))


def make_tile(aoi: tuple[float, float, float, float], zone: int, epsg: int) -> Tile:
    """The 10 m tile of UTM ``zone`` over its part of ``aoi`` (plus margin and overlap)."""
    min_lon, min_lat, max_lon, max_lat = aoi
    m_lon = _TILE_MARGIN_M / M_PER_DEG_LON
    m_lat = _TILE_MARGIN_M / M_PER_DEG_LAT
    overlap = _TILE_OVERLAP_M / M_PER_DEG_LON
    if zone == 31:
        lon0, lon1 = min_lon - m_lon, _ZONE_EDGE_LON + overlap
    else:
        lon0, lon1 = _ZONE_EDGE_LON - overlap, max_lon + m_lon
    ring = _box_ring(lon0, min_lat - m_lat, lon1, max_lat + m_lat)
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(ring[:, 0], ring[:, 1])
    step = SCL_PIXEL_M  # origin on a multiple of 20 m so the 20 m SCL grid nests exactly
    x0 = math.floor(float(np.min(x)) / step) * step
    x1 = math.ceil(float(np.max(x)) / step) * step
    y0 = math.floor(float(np.min(y)) / step) * step
    y1 = math.ceil(float(np.max(y)) / step) * step
    return Tile(
        zone=zone,
        epsg=epsg,
        x0=float(x0),
        y0=float(y1),
        width=round((x1 - x0) / PIXEL_M),
        height=round((y1 - y0) / PIXEL_M),
    )


def demo_cells(aoi: tuple[float, float, float, float]) -> list[tuple[int, int, int]]:
    """The 1280 m cells the pipeline keeps over ``aoi`` (its default grid), for self-checks.

    A cell of zone Z is kept when it lies fully inside the AOI and its centre longitude is in
    zone Z. Returns ``(epsg, col, row)`` with the cell spanning eastings
    ``[col * 1280, (col + 1) * 1280]`` and northings ``[row * 1280, (row + 1) * 1280]``.
    """
    min_lon, min_lat, max_lon, max_lat = aoi
    cells: list[tuple[int, int, int]] = []
    ring = _box_ring(min_lon, min_lat, max_lon, max_lat)
    for zone, epsg in ZONES:
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
class LonLatGrid:
    """A north-up lon/lat raster grid; (row, col) integers are pixel centres."""

    lon0: float
    lat0: float
    dlon: float
    dlat: float
    height: int
    width: int

    @property
    def transform(self) -> Affine:
        """The grid's affine transform (lon/lat degrees)."""
        return Affine(self.dlon, 0.0, self.lon0, 0.0, -self.dlat, self.lat0)

    def frac_index(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (row, col) of lon/lat points, integers at pixel centres."""
        return (self.lat0 - lat) / self.dlat - 0.5, (lon - self.lon0) / self.dlon - 0.5

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre lon (W,) and lat (H,)."""
        lon = self.lon0 + (np.arange(self.width) + 0.5) * self.dlon
        lat = self.lat0 - (np.arange(self.height) + 0.5) * self.dlat
        return lon, lat

    def bounds(self) -> tuple[float, float, float, float]:
        """(min_lon, min_lat, max_lon, max_lat) of the grid's outer edges."""
        return (
            self.lon0,
            self.lat0 - self.height * self.dlat,
            self.lon0 + self.width * self.dlon,
            self.lat0,
        )


def landcover_grid(tiles: list[Tile]) -> LonLatGrid:
    """WorldCover-like grid (1/12000°, aligned on multiples of it) over the tiles + margin."""
    bounds = np.array([t.footprint().bounds for t in tiles])
    m_lon = _LC_MARGIN_M / M_PER_DEG_LON
    m_lat = _LC_MARGIN_M / M_PER_DEG_LAT
    k = LC_STEPS_PER_DEG
    i0 = math.floor((bounds[:, 0].min() - m_lon) * k)
    i1 = math.ceil((bounds[:, 2].max() + m_lon) * k)
    j0 = math.floor((bounds[:, 1].min() - m_lat) * k)
    j1 = math.ceil((bounds[:, 3].max() + m_lat) * k)
    return LonLatGrid(i0 / k, j1 / k, 1.0 / k, 1.0 / k, j1 - j0, i1 - i0)


def make_cloud_grid(lc: LonLatGrid) -> LonLatGrid:
    """The coarse (40 m) lon/lat grid cloud thickness is drawn on, over the land-cover grid."""
    dlon = _CLOUD_GRID_M / M_PER_DEG_LON
    dlat = _CLOUD_GRID_M / M_PER_DEG_LAT
    w = math.ceil(lc.width * lc.dlon / dlon) + 1
    h = math.ceil(lc.height * lc.dlat / dlat) + 1
    return LonLatGrid(lc.lon0, lc.lat0, dlon, dlat, h, w)


# --------------------------------------------------------------------------------------------
# Random fields
# --------------------------------------------------------------------------------------------


def seeded_rng(seed: int, tag: str) -> np.random.Generator:
    """An independent stream per purpose, so one part can change without moving the others."""
    return np.random.default_rng([seed, zlib.crc32(tag.encode())])


def smooth_field(
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


def bilinear(stack: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
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
# Land cover and changes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Land cover of the first year and where things are (local metres)."""

    lc: np.ndarray  # (H, W) uint8, WorldCover codes
    crop_mix: np.ndarray  # (H, W) float32, share of bare soil in a crop parcel
    texture: np.ndarray  # (H, W) float32, unit-std texture
    town: tuple[float, float, float]  # x, y, radius
    cloud: tuple[float, float, float]  # the persistent t0 cloud: x, y, radius


def make_layout(seed: int, aoi: tuple[float, float, float, float], grid: LonLatGrid) -> Layout:
    """Smooth seeded fields thresholded into forest blocks, parcels, a lake, a river, a town."""
    shape = (grid.height, grid.width)
    lon, lat = grid.centres()
    x1d, y1d = to_local(lon, lat)
    x = np.broadcast_to(x1d.astype(np.float32)[None, :], shape)
    y = np.broadcast_to(y1d.astype(np.float32)[:, None], shape)
    px = (M_PER_DEG_LAT / LC_STEPS_PER_DEG, M_PER_DEG_LON / LC_STEPS_PER_DEG)  # (row, col) m

    def field(tag: str, sigma_m: float) -> np.ndarray:
        return smooth_field(seeded_rng(seed, tag), shape, (sigma_m / px[0], sigma_m / px[1]))

    half_w = (aoi[2] - aoi[0]) / 2 * M_PER_DEG_LON
    half_h = (aoi[3] - aoi[1]) / 2 * M_PER_DEG_LAT
    rng = seeded_rng(seed, "layout")

    lc = np.full(shape, 30, dtype=np.uint8)  # grassland everywhere to start with
    # field parcels on a rotated grid, each cropped or not, each with its own soil share
    theta = math.radians(float(rng.uniform(-35.0, 35.0)))
    cropped, crop_mix = _parcels(x1d.astype(np.float32), y1d.astype(np.float32), theta, rng)
    lc[cropped & (field("agri", 900.0) > -0.4)] = 40
    del cropped
    # forest blocks with ragged edges (~28 % of the area)
    forest = field("forest", 550.0) + 0.25 * field("forest-edge", 60.0)
    lc[forest > np.quantile(forest[::7, ::7], 0.72)] = 10
    del forest
    shrub = field("shrub", 200.0)
    lc[(shrub > np.quantile(shrub[::7, ::7], 0.95)) & (lc != 10)] = 20
    del shrub
    bare = field("bare", 120.0)
    lc[bare > np.quantile(bare[::7, ::7], 0.985)] = 60
    del bare
    # a town: a ragged disc of built-up blocks with some green
    tx, ty = 0.35 * half_w, -0.40 * half_h
    tr = min(900.0, 0.35 * half_h)
    d_town = np.hypot(x - tx, y - ty) / tr
    town = d_town < 1.0 + 0.2 * field("town-edge", 150.0)
    lc[town & (field("town-blocks", 25.0) > -0.7)] = 50
    del d_town, town
    # a lake with a wetland fringe
    lx, ly = -0.45 * half_w, 0.30 * half_h
    la, lb = min(550.0, 0.25 * half_w), min(350.0, 0.25 * half_h)
    phi = float(rng.uniform(0.0, math.pi))
    xr = (x - lx) * math.cos(phi) + (y - ly) * math.sin(phi)
    yr = -(x - lx) * math.sin(phi) + (y - ly) * math.cos(phi)
    q = np.sqrt((xr / la) ** 2 + (yr / lb) ** 2) - 0.15 * field("lake-edge", 100.0)
    lc[(q >= 1.0) & (q < 1.3) & (field("wetland", 120.0) > 0.0)] = 90
    lc[q < 1.0] = 80
    del xr, yr, q
    # a meandering river across the AOI, west to east
    amp = 0.12 * half_h
    p1, p2 = rng.uniform(0.0, 2 * math.pi, 2)
    centre = -0.10 * half_h + amp * (
        np.sin(2 * math.pi * x1d / 3000.0 + p1) + 0.3 * np.sin(2 * math.pi * x1d / 1100.0 + p2)
    )
    half_width = 22.0 + 6.0 * field("river-width", 300.0)
    lc[np.abs(y - centre.astype(np.float32)[None, :]) < half_width] = 80
    del half_width

    texture = 0.8 * field("texture-fine", 9.0) + 0.6 * field("texture-medium", 70.0)
    cx, cy = 0.45 * half_w, 0.40 * half_h
    cr = 0.07 * 2 * half_h
    return Layout(
        lc=lc,
        crop_mix=crop_mix,
        texture=texture,
        town=(tx, ty, tr),
        cloud=(cx, cy, cr),
    )


#: Rows of the land-cover grid worked on at a time where a step needs full-size temporaries
#: (at demo scale 10 the grid is ~290 M pixels: 1.2 GB per float32 array).
_ROWS: Final[int] = 512


def _parcels(
    x: np.ndarray, y: np.ndarray, theta: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Field parcels on a grid rotated by ``theta`` (230 x 160 m), over the grid of pixel
    centres ``x`` (W,) and ``y`` (H,) (float32, local metres): (cropped: (H, W) bool, soil
    share: (H, W) float32), one draw of ``rng`` for all parcels; :data:`_ROWS` rows at a
    time (twice: the parcel numbers' extremes first)."""
    cos, sin = math.cos(theta), math.sin(theta)
    xs = x[None, :]

    def parcel_numbers(first: int) -> tuple[np.ndarray, np.ndarray]:
        ys = y[first : first + _ROWS, None]
        u = xs * cos + ys * sin
        v = -xs * sin + ys * cos
        return np.floor(u / 230.0).astype(np.int64), np.floor(v / 160.0).astype(np.int64)

    lo = [np.iinfo(np.int64).max] * 2
    hi = [np.iinfo(np.int64).min] * 2
    for first in range(0, y.size, _ROWS):
        for k, numbers in enumerate(parcel_numbers(first)):
            lo[k], hi[k] = min(lo[k], int(numbers.min())), max(hi[k], int(numbers.max()))
    draw = rng.random((hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, 2)).astype(np.float32)
    cropped = np.empty((y.size, x.size), dtype=bool)
    crop_mix = np.empty((y.size, x.size), dtype=np.float32)
    for first in range(0, y.size, _ROWS):
        pu, pv = parcel_numbers(first)
        pu -= lo[0]
        pv -= lo[1]
        rows = slice(first, first + _ROWS)
        cropped[rows] = draw[pu, pv, 0] < 0.6
        crop_mix[rows] = 0.1 + 0.5 * draw[pu, pv, 1]
    return cropped, crop_mix


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


def place_changes(
    seed: int,
    aoi: tuple[float, float, float, float],
    grid: LonLatGrid,
    layout: Layout,
    n_changes: int,
    *,
    kinds_table: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] = CHANGE_KINDS,
    weights: Sequence[float] = (0.3, 0.25, 0.1, 0.1, 0.25),
    tag: str = "changes",
) -> list[dict[str, Any]]:
    """Choose change polygons: one of each kind first, then random kinds; none overlap.

    ``kinds_table`` (kind -> (from-classes, to-classes)), its ``weights`` for the random kinds
    and the random stream ``tag`` default to the pair demo's (:data:`CHANGE_KINDS`); the series
    demo passes its own.
    """
    rng = seeded_rng(seed, tag)
    lon, lat = grid.centres()
    x1d, y1d = to_local(lon, lat)
    ax0, ay0 = to_local(np.array(aoi[0]), np.array(aoi[1]))
    ax1, ay1 = to_local(np.array(aoi[2]), np.array(aoi[3]))
    inset = min(250.0, 0.25 * float(min(ax1 - ax0, ay1 - ay0)))
    cols = np.flatnonzero((x1d > ax0 + inset) & (x1d < ax1 - inset))
    rows = np.flatnonzero((y1d > ay0 + inset) & (y1d < ay1 - inset))
    if cols.size == 0 or rows.size == 0:
        raise DemoCatalogError(f"AOI {aoi} is too small for change polygons", key="scale")
    sub = layout.lc[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    sx = x1d[cols[0] : cols[-1] + 1][None, :]
    sy = y1d[rows[0] : rows[-1] + 1][:, None]
    cx, cy, cr = layout.cloud
    tx, ty, tr = layout.town
    allowed = np.empty(sub.shape, dtype=bool)
    near_town = np.empty(sub.shape, dtype=bool)
    for first in range(0, sub.shape[0], _ROWS):  # float64 distances: a block at a time
        block = slice(first, first + _ROWS)
        allowed[block] = np.hypot(sx - cx, sy[block] - cy) > 1.7 * cr + 250.0
        near_town[block] = np.hypot(sx - tx, sy[block] - ty) < 2.5 * tr

    kinds = list(kinds_table)
    if len(weights) != len(kinds):
        raise DemoCatalogError(
            f"change weights do not match the kinds (expected={len(kinds)}, actual={len(weights)})",
            key="weights",
        )
    p = np.array(weights, dtype=np.float64)
    plan = kinds + [kinds[int(i)] for i in rng.choice(len(kinds), n_changes, p=p)]
    plan = plan[: max(n_changes, len(kinds))]

    # where each kind may go: the same for every change of the kind (the map is not repainted
    # while placing), so found once per kind
    spots: dict[str, np.ndarray] = {}

    def where(kind: str, froms: tuple[int, ...]) -> np.ndarray:
        if kind not in spots:
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
            spots[kind] = flat
        return spots[kind]

    placed = _PlacedPolygons(_MIN_CHANGE_GAP_M)
    changes: list[dict[str, Any]] = []
    for kind in plan:
        froms, tos = kinds_table[kind]
        flat = where(kind, froms)
        if flat.size == 0:
            raise DemoCatalogError("no room for change polygons", key="scale")
        for _ in range(60):
            k = int(flat[rng.integers(flat.size)])
            r, c = divmod(k, sub.shape[1])
            px, py = float(sx[0, c]), float(sy[r, 0])
            poly = _ellipse_or_rect(rng, px, py)
            local = Polygon(np.stack(to_local(*np.asarray(poly.exterior.coords).T), axis=1))
            if placed.clear_of(local):
                break
        else:
            continue  # too crowded: skip this one rather than overlap
        from_wc = int(sub[r, c]) if int(sub[r, c]) in froms else froms[0]
        to_wc = tos[int(rng.integers(len(tos)))]
        placed.add(local)
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


#: Smallest gap (m) between two change polygons.
_MIN_CHANGE_GAP_M = 80.0
#: Side (m) of the buckets :class:`_PlacedPolygons` files polygons under (polygons are at most
#: ~400 m across).
_BUCKET_M = 1000.0


class _PlacedPolygons:
    """Polygons placed so far (local metres), filed by the buckets their box (grown by the
    gap) touches, so a new polygon is compared with its neighbours only: the same answer as
    comparing it with every polygon (two polygons are never nearer than their boxes), in
    time that does not grow with the number placed (the demo at scale 10 places ~4,700)."""

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.buckets: dict[tuple[int, int], list[Polygon]] = {}

    def _keys(self, poly: Polygon) -> list[tuple[int, int]]:
        x0, y0, x1, y1 = poly.bounds
        g = self.gap
        cols = range(math.floor((x0 - g) / _BUCKET_M), math.floor((x1 + g) / _BUCKET_M) + 1)
        rows = range(math.floor((y0 - g) / _BUCKET_M), math.floor((y1 + g) / _BUCKET_M) + 1)
        return [(c, r) for c in cols for r in rows]

    def clear_of(self, poly: Polygon) -> bool:
        """Whether ``poly`` is more than the gap away from every placed polygon."""
        near = {id(p): p for key in self._keys(poly) for p in self.buckets.get(key, ())}
        return all(poly.distance(other) > self.gap for other in near.values())

    def add(self, poly: Polygon) -> None:
        for key in self._keys(poly):
            self.buckets.setdefault(key, []).append(poly)


def paint_changes(
    lc: np.ndarray, grid: LonLatGrid, changes: list[dict[str, Any]]
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


# --------------------------------------------------------------------------------------------
# Misregistration
# --------------------------------------------------------------------------------------------


def draw_shift(rng: np.random.Generator) -> tuple[float, float]:
    """One after-scene's misregistration (dy, dx): 0.2-1.5 px each way, random signs."""
    mag = rng.uniform(0.2, 1.5, 2)
    sign = np.where(rng.random(2) < 0.5, -1.0, 1.0)
    dy, dx = (round(float(v), 3) for v in mag * sign)
    return dy, dx
