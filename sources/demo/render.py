"""Rendering the demo world into scenes: reflectance, clouds and shadows, SCL, COG files.

:func:`reflectance_field` turns one year's land cover into surface reflectance (class spectra,
per-parcel crop mix, texture, a mild point-spread function); :func:`make_clouds` draws one
date's cloud thickness and shadow offset; :func:`render_item` samples both at the pixel centres
of a (possibly shifted) tile, adds radiometry and noise, and returns uint16 DNs, the 20 m SCL
map and the cloud cover; :func:`write_cog` writes one band as a Cloud-Optimised GeoTIFF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine
from scipy import ndimage

from geodelta.sources.demo.constants import (
    DN_OFFSET,
    DN_SCALE,
    LC_STEPS_PER_DEG,
    M_PER_DEG_LAT,
    M_PER_DEG_LON,
    PIXEL_M,
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MEDIUM,
    SCL_CLOUD_SHADOW,
    SCL_NOT_VEGETATED,
    SCL_VEGETATION,
    SCL_WATER,
    SPECTRA,
)
from geodelta.sources.demo.world import (
    Layout,
    LonLatGrid,
    Tile,
    bilinear,
    seeded_rng,
    smooth_field,
    to_local,
)

__all__ = [
    "Clouds",
    "DateScene",
    "Rendered",
    "make_clouds",
    "pixel_lonlat",
    "reflectance_field",
    "render_item",
    "write_cog",
]

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
#: A cloud blob is drawn where it adds at least ``exp(-_BLOB_CUTOFF)`` of its peak (~2e-22):
#: drawn over the whole grid, a date's clouds cost (scale ** 4).
_BLOB_CUTOFF: Final[float] = 50.0

# --------------------------------------------------------------------------------------------
# Reflectance
# --------------------------------------------------------------------------------------------


def reflectance_field(lc: np.ndarray, layout: Layout) -> np.ndarray:
    """(4, H, W) float32 surface reflectance of one year's land cover, textured and blurred."""
    lut = np.zeros((256, 4), dtype=np.float32)
    amp = np.zeros(256, dtype=np.float32)
    for code, spectrum in SPECTRA.items():
        lut[code] = spectrum
        amp[code] = _TEXTURE[code]
    crop = lc == 40
    mix = layout.crop_mix[crop]
    texture = 1.0 + amp[lc] * layout.texture
    # a mild point-spread function (~5 m) so edges are not aliased when resampled
    psf = _PSF_SIGMA_M
    sigma = (psf / (M_PER_DEG_LAT / LC_STEPS_PER_DEG), psf / (M_PER_DEG_LON / LC_STEPS_PER_DEG))
    # band by band: one (H, W) temporary at a time (at demo scale 10 a band is ~290 M pixels)
    refl = np.empty((lut.shape[1], *lc.shape), dtype=np.float32)
    for b in range(lut.shape[1]):
        band = lut[:, b][lc]
        band[crop] = _CROP_GREEN[b] * (1 - mix) + _CROP_SOIL[b] * mix
        band *= texture
        ndimage.gaussian_filter(band, sigma, mode="nearest", output=refl[b])
    return refl


# --------------------------------------------------------------------------------------------
# Clouds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clouds:
    """Cloud thickness on a coarse lon/lat grid for one date, and the shadow offset (m)."""

    thickness: np.ndarray
    shadow_m: tuple[float, float]


def make_clouds(
    seed: int, day: str, index: int, grid: LonLatGrid, layout: Layout, scale: float, t0: bool
) -> Clouds:
    """The clouds of one date: blobs (more on cloudier dates), the persistent t0 cloud when
    ``t0``, a billowy texture, and a shadow offset to the north-west (draw order is fixed)."""
    rng = seeded_rng(seed, f"clouds/{day}")
    lon, lat = grid.centres()
    x1d, y1d = to_local(lon, lat)
    x = x1d.astype(np.float32)[None, :]
    y = y1d.astype(np.float32)[:, None]
    thickness = np.zeros((grid.height, grid.width), dtype=np.float32)

    def blob(cx: float, cy: float, sigma: float, amp: float) -> None:
        # over the rows and columns where it adds more than amp * exp(-_BLOB_CUTOFF) only:
        # what it adds beyond is far below anything that reaches the cloud threshold
        reach = sigma * math.sqrt(2.0 * _BLOB_CUTOFF)
        cols = np.flatnonzero(np.abs(x[0] - cx) <= reach)
        rows = np.flatnonzero(np.abs(y[:, 0] - cy) <= reach)
        if not cols.size or not rows.size:
            return
        win = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        xw, yw = x[:, win[1]], y[win[0], :]
        thickness[win] += amp * np.exp(-0.5 * ((xw - cx) ** 2 + (yw - cy) ** 2) / sigma**2)

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
    thickness *= 1.0 + 0.35 * np.clip(smooth_field(rng, thickness.shape, (3.0, 3.0)), -2, 2)
    azimuth = math.radians(float(rng.uniform(290.0, 330.0)))  # shadows fall to the north-west
    dist = float(rng.uniform(250.0, 500.0))
    return Clouds(thickness, (dist * math.sin(azimuth), dist * math.cos(azimuth)))


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """One rendered item: band DNs, SCL at 20 m, and its scene-wide cloud cover."""

    dn: np.ndarray  # (4, H, W) uint16
    scl: np.ndarray  # (H/2, W/2) uint8
    cloud_cover: float  # percent of SCL pixels classed cloud (8, 9)


def pixel_lonlat(
    tile: Tile, dy: float, dx: float, rows: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat of the ground each pixel shows: the centre of (r - dy, c - dx); of the tile's
    rows ``rows`` = (first, end) only when given (the same values as the whole tile's)."""
    first, end = (0, tile.height) if rows is None else rows
    cols = np.arange(tile.width, dtype=np.float64)
    row_index = np.arange(first, end, dtype=np.float64)
    x = tile.x0 + (cols - dx + 0.5) * PIXEL_M
    y = tile.y0 - (row_index - dy + 0.5) * PIXEL_M
    xx, yy = np.meshgrid(x, y)
    lon, lat = _to_lonlat(tile.epsg).transform(xx, yy)
    return np.asarray(lon), np.asarray(lat)


@lru_cache(maxsize=4)
def _to_lonlat(epsg: int) -> Transformer:
    """The tile CRS -> lon/lat transformer, made once per CRS (an item's rows are transformed a
    block at a time)."""
    return Transformer.from_crs(epsg, 4326, always_xy=True)


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


#: Rows of a tile rendered at a time (even: the 20 m SCL is made of 2x2 blocks). Every step of
#: a pixel depends on that pixel alone, so the blocks only bound the temporaries (at demo scale
#: 10 a tile is ~88 M pixels: rendered whole, ~10 GB of float64 temporaries).
_ROW_BLOCK: Final[int] = 256


@dataclass(frozen=True)
class DateScene:
    """What the items of one date are rendered from: the year's reflectance field and land
    cover on their lon/lat grid, the date's clouds on theirs, and its radiometry
    ``(gain, offset)`` per band."""

    refl_field: np.ndarray
    lc: np.ndarray
    lc_grid: LonLatGrid
    clouds: Clouds
    cloud_grid: LonLatGrid
    radiometry: tuple[np.ndarray, np.ndarray]


def render_item(
    *, seed: int, item_id: str, tile: Tile, shift: tuple[float, float], scene: DateScene
) -> Rendered:
    """Render one item: the scene's reflectance and land cover sampled at the pixel centres of
    ``tile`` displaced by ``shift`` (:func:`pixel_lonlat`), its clouds and their shadows over
    it (in the bands and the SCL), its radiometry and noise; :data:`_ROW_BLOCK` rows at a
    time."""
    height, width = tile.height, tile.width
    # one draw for the whole item, in (band, row, col) order: the noise does not depend on
    # how the rows are blocked. The pixels' lon/lat are computed per block too, for every
    # date (an unshifted tile's would be the same on its reference dates: kept whole, 1.4 GB
    # of float64 at scale 10)
    noise = seeded_rng(seed, f"noise/{item_id}").standard_normal(
        (scene.refl_field.shape[0], height, width), dtype=np.float32
    )
    dn = np.empty(noise.shape, dtype=np.uint16)
    scl20 = np.empty((height // 2, width // 2), dtype=np.uint8)
    for first in range(0, height, _ROW_BLOCK):
        end = min(height, first + _ROW_BLOCK)
        lon, lat = pixel_lonlat(tile, *shift, rows=(first, end))
        dn[:, first:end], scl = _render_rows(lon, lat, noise[:, first:end], scene)
        scl20[first // 2 : end // 2] = _scl_to_20m(scl)
    cover = float(np.isin(scl20, (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH)).mean() * 100.0)
    return Rendered(dn=dn, scl=scl20, cloud_cover=round(cover, 4))


def _render_rows(
    lon: np.ndarray, lat: np.ndarray, noise: np.ndarray, scene: DateScene
) -> tuple[np.ndarray, np.ndarray]:
    """(DNs (4, h, w) uint16, SCL at 10 m (h, w)) of the pixels at ``lon``/``lat``."""
    lc, lc_grid, clouds, cloud_grid = scene.lc, scene.lc_grid, scene.clouds, scene.cloud_grid
    row, col = lc_grid.frac_index(lon, lat)
    refl = bilinear(scene.refl_field, row, col)  # (4, h, w)
    codes = lc[
        np.clip(np.rint(row).astype(np.intp), 0, lc.shape[0] - 1),
        np.clip(np.rint(col).astype(np.intp), 0, lc.shape[1] - 1),
    ]
    scl = _scl_clear(codes)

    crow, ccol = cloud_grid.frac_index(lon, lat)
    thick = bilinear(clouds.thickness, crow, ccol)
    sx, sy = clouds.shadow_m
    shadow_thick = bilinear(
        clouds.thickness,
        crow + sy / M_PER_DEG_LAT / cloud_grid.dlat,
        ccol - sx / M_PER_DEG_LON / cloud_grid.dlon,
    )
    alpha = np.clip((thick - _CLOUD_THRESHOLD) / 0.35, 0.0, 1.0)
    cloudy = alpha > 0
    shade = np.clip((shadow_thick - _CLOUD_THRESHOLD) / 0.35, 0.0, 1.0)
    shadowed = (shade > 0) & ~cloudy
    refl *= np.where(shadowed, 1.0 - 0.6 * np.minimum(1.0, 2.0 * shade), 1.0)[None]
    brightness = 0.35 + 0.25 * np.clip((thick - _CLOUD_THRESHOLD) / 1.2, 0.0, 1.0)
    for b in range(refl.shape[0]):
        refl[b] = refl[b] * (1 - alpha) + alpha * brightness * _CLOUD_BANDS[b]
    scl[shadowed] = SCL_CLOUD_SHADOW
    scl[cloudy] = SCL_CLOUD_MEDIUM
    scl[alpha >= 0.5] = SCL_CLOUD_HIGH

    gain, offset = scene.radiometry
    refl = refl * gain[:, None, None] + offset[:, None, None] + _NOISE_SIGMA * noise
    dn = np.clip(np.rint((refl - DN_OFFSET) / DN_SCALE), 1, 65535).astype(np.uint16)
    return dn, scl


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_cog(
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
