"""Windowed raster reads, reprojected onto a cell's own grid (rasterio / GDAL).

Every read goes through a :class:`rasterio.vrt.WarpedVRT` built for the cell grid
(``job.crs``, ``job.transform``, ``job.shape``), so GDAL fetches only the source blocks the
cell touches (a few HTTP range requests on a cloud-optimised GeoTIFF) and resamples them
straight onto the cell's pixels.

* :func:`read_bands`: reflectance bands as float32 physical values (``DN * scale + offset``),
  NaN where the source is nodata or the cell lies outside the asset.
* :func:`read_classes`: a classification / land-cover raster as raw integer values, nearest
  neighbour, on the cell grid or on a coarser grid over the same bounds.
* :func:`clear_fraction`: the share of a cell's pixels with a "clear" value in a scene
  classification band (Sentinel-2 SCL, Landsat QA), read at the band's native resolution.

Open datasets are cached per thread (rasterio datasets are not thread-safe), so a worker
reading many cells out of one COG opens it once. Hrefs are local paths or URLs, stripped of
secrets; a :class:`RasterAccess` passed to a read function carries the GDAL options of the
config (``gdal`` section) and, for catalogs that need it (Planetary Computer), a signer that
turns an href into a signed URL just before GDAL opens it. The signed URL is never stored in a
record nor shown in an error message (:func:`geodelta.sources.signing.redact_secrets`).
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT

from geodelta.errors import ConfigError, SourceError
from geodelta.schemas import AssetRef, SceneRef, TileJob, strip_secret
from geodelta.schemas.config import GdalConfig
from geodelta.sources.signing import redact_secrets

#: Datasets kept open per thread; the least recently used one is closed beyond this.
CACHE_SIZE = 64

#: GDAL's raster block cache (decoded blocks) while geodelta reads, in MB per process. GDAL's
#: own default is 5 % of the machine's RAM in every process: a worker reading a large AOI kept
#: decoded blocks of every scene it had touched, its memory growing with the AOI (350 MB at 75
#: cells, 840 MB at 800 cells per worker, benchmarks/bench_scale.py). A config's
#: ``gdal.options: {GDAL_CACHEMAX: ...}`` (MB, bytes, ``NNMB``/``NNGB`` or ``NN%``) overrides it.
BLOCK_CACHE_MB = 64

_GDAL_ERRORS = (RasterioError, CPLE_BaseError)


class RasterReadError(SourceError):
    """A raster asset could not be opened or read (a :class:`~geodelta.errors.SourceError`,
    hence still a ``RuntimeError``).

    Attributes:
        href: the asset href (secrets already removed by :class:`AssetRef`).
        item_id: the STAC item the asset belongs to, when known.
        reason: what failed, in a few words (the GDAL message included).
    """

    def __init__(self, href: str, item_id: str | None, reason: str, hint: str = "") -> None:
        where = f" (item {item_id!r})" if item_id else ""
        message = f"cannot read raster {href!r}{where}: {reason}"
        if hint:
            message += f"; {hint}"
        super().__init__(redact_secrets(message))  # GDAL messages may quote a signed URL
        self.href = strip_secret(href)
        self.item_id = item_id
        self.reason = redact_secrets(reason)


class RasterConfigError(ConfigError):
    """A GDAL option in the config's ``gdal`` section that cannot be used (a
    :class:`~geodelta.errors.ConfigError`, hence still a ``ValueError``)."""


def gdal_env_options(gdal: GdalConfig | None = None) -> dict[str, str]:
    """GDAL configuration options used for every read (pass to :class:`rasterio.Env`).

    Taken from the config's ``gdal`` section (defaults when None): no listing of remote folders,
    only raster extensions over HTTP, HTTP/2 multiplexing, merged range requests, retries of
    429/5xx, a VSI block cache. Safe to ship to workers: no credentials.

    Returns:
        A fresh dict of option name -> value.
    """
    return (gdal or GdalConfig()).env()


@dataclass(frozen=True)
class RasterAccess:
    """How a worker reads rasters: GDAL options and an optional href signer.

    Attributes:
        gdal_options: GDAL config options entered around every read.
        signer: href -> URL to open (e.g. with a SAS token); the result is a secret.
    """

    gdal_options: Mapping[str, str] = field(default_factory=gdal_env_options)
    signer: Callable[[str], str] | None = None


_DEFAULT_ACCESS = RasterAccess()


@contextmanager
def _reading(access: RasterAccess | None) -> Iterator[None]:
    """Enter the GDAL options of ``access`` and make its signer the thread's signer."""
    access = access or _DEFAULT_ACCESS
    previous = getattr(_local, "signer", None)
    _local.signer = access.signer
    options: dict[str, str | int] = dict(access.gdal_options)
    options["GDAL_CACHEMAX"] = block_cache_bytes(options.get("GDAL_CACHEMAX"))
    _local.vsi_cache = str(options.get("VSI_CACHE", "FALSE")).upper() in {"TRUE", "YES", "ON"}
    try:
        with rasterio.Env(**options):
            yield
    finally:
        _local.signer = previous


def block_cache_bytes(value: str | int | None) -> int:
    """GDAL_CACHEMAX as bytes, the integer :class:`rasterio.Env` needs (it calls
    ``GDALSetCacheMax64`` with it, and restores the previous size on exit).

    Args:
        value: None (:data:`BLOCK_CACHE_MB`), an integer or digits (megabytes below 100000,
            bytes from there on, as GDAL reads them), ``"NNMB"``, ``"NNGB"`` or ``"NN%"`` (of
            the machine's physical memory).

    Raises:
        RasterConfigError: a value in none of these forms.
    """
    if value is None:
        return BLOCK_CACHE_MB * 2**20
    text = str(value).strip().upper()
    try:
        if text.endswith("%"):
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            return int(total * float(text[:-1]) / 100)
        for suffix, unit in (("GB", 2**30), ("MB", 2**20)):
            if text.endswith(suffix):
                return int(float(text[: -len(suffix)]) * unit)
        number = int(text)
    except ValueError:
        raise RasterConfigError(
            f"GDAL_CACHEMAX {value!r} is not a size (expected megabytes such as 64, bytes, "
            "64MB, 1GB or 5%); change gdal.options.GDAL_CACHEMAX in the config"
        ) from None
    return number * 2**20 if number < 100_000 else number


# --------------------------------------------------------------------------------------------
# per-thread dataset cache

_local = threading.local()


def _cache() -> OrderedDict[tuple[str, int, int], DatasetReader]:
    cache: OrderedDict[tuple[str, int, int], DatasetReader] | None = getattr(
        _local, "datasets", None
    )
    if cache is None:
        cache = OrderedDict()
        _local.datasets = cache
    return cache


def _cache_key(href: str) -> tuple[str, int, int]:
    """The href, plus mtime and size for a local file (a rewritten file is reopened)."""
    if "://" not in href:
        try:
            st = os.stat(href)
        except OSError:
            return (href, -1, -1)
        return (href, st.st_mtime_ns, st.st_size)
    return (href, 0, 0)


def _open(href: str, item_id: str | None) -> DatasetReader:
    cache = _cache()
    signer: Callable[[str], str] | None = getattr(_local, "signer", None)
    url = signer(href) if signer is not None else href  # a new token gives a new key
    key = _cache_key(url)
    dataset = cache.get(key)
    if dataset is not None and not dataset.closed:
        cache.move_to_end(key)
        return dataset
    _forget(href)  # an older version of a rewritten local file, or an older token
    try:
        if getattr(_local, "vsi_cache", False) and _is_local(url):
            # VSI_CACHE wraps every file GDAL opens, local ones too: up to VSI_CACHE_SIZE of
            # raw bytes per open dataset (64 of them per thread), for data the OS page cache
            # already holds. It is meant for remote reads only.
            with rasterio.Env(VSI_CACHE=False):
                dataset = rasterio.open(url)
        else:
            dataset = rasterio.open(url)
    except _GDAL_ERRORS as exc:
        raise RasterReadError(
            href,
            item_id,
            f"open failed ({exc})",
            "check that the file exists or the URL is reachable, and that signed URLs "
            "(Planetary Computer) have not expired",
        ) from exc
    if dataset.crs is None and not dataset.gcps[0]:
        dataset.close()
        raise RasterReadError(
            href,
            item_id,
            "the raster has no CRS / georeferencing, so it cannot be placed on the cell grid",
            "write the asset with its CRS and transform (e.g. those of a band on the same grid)",
        )
    cache[key] = dataset
    while len(cache) > CACHE_SIZE:
        _, old = cache.popitem(last=False)
        old.close()
    return dataset


def _is_local(url: str) -> bool:
    """A path or ``file://`` URL (not a remote or ``/vsi...`` one)."""
    return url.startswith("file://") or ("://" not in url and not url.startswith("/vsi"))


def _forget(href: str) -> None:
    """Drop (and close) a cached dataset after a failed read, so the next read reopens it."""
    cache = _cache()
    for key in [k for k in cache if k[0] == href or strip_secret(k[0]) == href]:
        cache.pop(key).close()


def close_cached() -> None:
    """Close every dataset this thread keeps open (e.g. at the end of a worker's bundle)."""
    cache = _cache()
    while cache:
        _, dataset = cache.popitem()
        dataset.close()


# --------------------------------------------------------------------------------------------
# grids and warped reads


def _grid(job: TileJob, shape: tuple[int, int] | None) -> tuple[Affine, int, int]:
    """Transform, height and width of the job grid, or of a grid over the same bounds."""
    transform = Affine(*job.transform)
    height, width = job.shape
    if shape is None:
        return transform, height, width
    out_h, out_w = int(shape[0]), int(shape[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"grid shape must be at least (1, 1) (actual={shape})")
    return transform @ Affine.scale(width / out_w, height / out_h), out_h, out_w


def _warp_read(
    asset: AssetRef,
    job: TileJob,
    *,
    shape: tuple[int, int] | None,
    resampling: Resampling,
    item_id: str | None,
    access: RasterAccess | None = None,
) -> tuple[np.ndarray, np.dtype]:
    """Band 1 of the asset warped onto the grid as float64, NaN where invalid.

    float64 holds every integer a classification raster can carry exactly, and NaN as the
    destination nodata can never collide with a valid value. Returns the array and the
    source dtype.
    """
    with _reading(access):
        return _warp_read_in_env(asset, job, shape=shape, resampling=resampling, item_id=item_id)


def _warp_read_in_env(
    asset: AssetRef,
    job: TileJob,
    *,
    shape: tuple[int, int] | None,
    resampling: Resampling,
    item_id: str | None,
) -> tuple[np.ndarray, np.dtype]:
    """:func:`_warp_read` inside an already entered :class:`rasterio.Env` (entering one costs
    a fraction of a millisecond: a stage reading several assets enters it once)."""
    transform, height, width = _grid(job, shape)
    src = _open(asset.href, item_id)
    src_nodata = asset.nodata if asset.nodata is not None else src.nodata
    try:
        with WarpedVRT(
            src,
            crs=CRS.from_user_input(job.crs),
            transform=transform,
            width=width,
            height=height,
            resampling=resampling,
            src_nodata=src_nodata,
            nodata=np.nan,
            dtype="float64",
        ) as vrt:
            data = vrt.read(1)
    except _GDAL_ERRORS as exc:
        _forget(asset.href)
        raise RasterReadError(
            asset.href,
            item_id,
            f"warped read onto {job.crs} {height}x{width} failed ({exc})",
            "check that the asset is a readable raster with a CRS and a geotransform",
        ) from exc
    return data, np.dtype(src.dtypes[0])


def read_bands(
    scene: SceneRef,
    bands: Sequence[str],
    job: TileJob,
    *,
    resampling: str = "bilinear",
    access: RasterAccess | None = None,
) -> np.ndarray:
    """Read reflectance bands of a scene onto the cell grid as physical values.

    Args:
        scene: the scene; ``bands`` are keys of ``scene.assets``.
        bands: asset keys, in the order of the output stack.
        job: the cell: its ``crs``, ``transform`` and ``shape`` define the output grid.
        resampling: a :class:`rasterio.enums.Resampling` name ('bilinear', 'cubic', 'nearest',
            'average', ...).
        access: GDAL options and href signer (default: the default GDAL options, no signing).

    Returns:
        (C, H, W) float32 array, ``DN * scale + offset`` per band (from each
        :class:`AssetRef`), NaN where the source is nodata or the cell is outside the asset.

    Raises:
        RasterReadError: a band key is not an asset of the scene, or an asset cannot be read.
        ValueError: ``resampling`` is not a known method.
    """
    try:
        method = Resampling[resampling]
    except KeyError:
        known = ", ".join(r.name for r in Resampling)
        raise ValueError(f"unknown resampling {resampling!r}; known: {known}") from None
    missing = [band for band in bands if band not in scene.assets]
    if missing:  # before any I/O
        raise RasterReadError(
            f"{scene.item_id}#{missing[0]}",
            scene.item_id,
            f"no asset {missing[0]!r} in item (asset keys: {sorted(scene.assets)})",
            "check imagery.bands in the config against the collection's asset keys",
        )
    height, width = job.shape
    out = np.empty((len(bands), height, width), dtype=np.float32)
    with _reading(access):
        for i, band in enumerate(bands):
            asset = scene.assets[band]
            data, _ = _warp_read_in_env(
                asset, job, shape=None, resampling=method, item_id=scene.item_id
            )
            out[i] = data * asset.scale + asset.offset  # NaN stays NaN
    return out


def read_classes(
    asset: AssetRef,
    job: TileJob,
    *,
    shape: tuple[int, int] | None = None,
    fill: int = 0,
    item_id: str | None = None,
    access: RasterAccess | None = None,
) -> np.ndarray:
    """Read a classification raster onto the cell grid, nearest neighbour, raw values.

    Args:
        asset: the classification / land-cover asset.
        job: the cell.
        shape: output (height, width) over the cell's bounds; default ``job.shape``. A 20 m
            band over a 128-px 10 m cell reads natively with ``shape=(64, 64)``.
        fill: value written where the source is nodata or the cell is outside the asset.
        item_id: STAC item id, for error messages.
        access: GDAL options and href signer (default: the default GDAL options, no signing).

    Returns:
        (H, W) array in the source's dtype (e.g. uint8).

    Raises:
        RasterReadError: the asset cannot be read.
    """
    data, dtype = _warp_read(
        asset, job, shape=shape, resampling=Resampling.nearest, item_id=item_id, access=access
    )
    valid = ~np.isnan(data)
    out = np.full(data.shape, fill, dtype=dtype)
    out[valid] = data[valid].astype(dtype)
    return out


def _transformer(from_wkt: str, to_wkt: str) -> Transformer:
    """A lon/lat-ordered transformer between two CRSs, made once per thread (building one costs
    milliseconds; pyproj transformers must not be shared between threads)."""
    cache: dict[tuple[str, str], Transformer] | None = getattr(_local, "transformers", None)
    if cache is None:
        cache = {}
        _local.transformers = cache
    key = (from_wkt, to_wkt)
    found = cache.get(key)
    if found is None:
        if len(cache) >= CACHE_SIZE:
            cache.clear()
        found = cache[key] = Transformer.from_crs(from_wkt, to_wkt, always_xy=True)
    return found


def _native_shape(src: DatasetReader, job: TileJob) -> tuple[int, int]:
    """Shape of a grid over the cell's bounds at the source's native pixel size."""
    height, width = job.shape
    cell_h = abs(job.transform[4]) * height
    cell_w = abs(job.transform[0]) * width
    res_x, res_y = src.res
    dst_crs = CRS.from_user_input(job.crs)
    if src.crs is not None and src.crs != dst_crs:
        # pixel size of the source, measured in the cell's CRS at the cell's centre
        left, bottom, right, top = job.bounds()
        cx, cy = (left + right) / 2, (bottom + top) / 2
        to_src = _transformer(dst_crs.to_wkt(), src.crs.to_wkt())
        sx, sy = to_src.transform(cx, cy)
        xs, ys = to_src.transform([sx, sx + res_x, sx], [sy, sy, sy - res_y], direction="INVERSE")
        res_x = math.hypot(xs[1] - xs[0], ys[1] - ys[0])
        res_y = math.hypot(xs[2] - xs[0], ys[2] - ys[0])
    return max(1, round(cell_h / res_y)), max(1, round(cell_w / res_x))


def clear_fraction(
    scene: SceneRef,
    asset_key: str,
    job: TileJob,
    clear_classes: Sequence[int],
    *,
    cloud_bits: Sequence[int] = (),
    access: RasterAccess | None = None,
) -> float:
    """Fraction of the cell whose classification value is "clear", at native resolution.

    Args:
        scene: the scene carrying the classification asset.
        asset_key: key of the classification asset (e.g. 'SCL').
        job: the cell.
        clear_classes: values that count as clear (e.g. SCL 4, 5, 6, 11).
        cloud_bits: bit positions that make a pixel not clear (a bit mask such as Landsat
            QA_PIXEL); when given, ``clear_classes`` is not used (see :func:`clear_mask`).
        access: GDAL options and href signer (default: the default GDAL options, no signing).

    Returns:
        Clear pixels / all pixels of the cell grid at the asset's resolution (at least 1x1);
        nodata and pixels outside the asset count as not clear.

    Raises:
        RasterReadError: the asset is missing or cannot be read.
    """
    mask = read_clear_mask(
        scene, asset_key, job, clear_classes, cloud_bits=cloud_bits, access=access
    )
    return float(mask.mean())


def read_clear_mask(
    scene: SceneRef,
    asset_key: str,
    job: TileJob,
    clear_classes: Sequence[int],
    *,
    cloud_bits: Sequence[int] = (),
    access: RasterAccess | None = None,
) -> np.ndarray:
    """The pixel-level clear mask of a scene over the cell, at the asset's native resolution.

    The mask :func:`clear_fraction` averages (same read, same arguments): True where the
    classification value is clear; nodata and pixels outside the asset are not clear. Sequence
    date selection (:mod:`geodelta.pipelines.stages.series`) rates the dates of a cell on it.

    Raises:
        RasterReadError: the asset is missing or cannot be read.
    """
    asset = scene.assets.get(asset_key)
    if asset is None:
        raise RasterReadError(
            f"{scene.item_id}#{asset_key}",
            scene.item_id,
            f"no asset {asset_key!r} in item (asset keys: {sorted(scene.assets)})",
            "check imagery.classification_asset in the config against the collection's asset keys",
        )
    with _reading(access):
        src = _open(asset.href, scene.item_id)
        shape = _native_shape(src, job)
        data, _ = _warp_read_in_env(
            asset, job, shape=shape, resampling=Resampling.nearest, item_id=scene.item_id
        )
    return np.asarray(clear_mask(data, clear_classes, cloud_bits), dtype=bool)


def clear_mask(
    values: np.ndarray, clear_classes: Sequence[int], cloud_bits: Sequence[int] = ()
) -> np.ndarray:
    """Which classification values are clear: class values, or no "cloud" bit set.

    Args:
        values: classification values (float, NaN = nodata / outside the asset).
        clear_classes: values that count as clear (class-valued bands, e.g. Sentinel-2 SCL).
        cloud_bits: bit positions that make a pixel not clear (bit masks, e.g. Landsat
            QA_PIXEL bits 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 shadow, 5 snow);
            when given, ``clear_classes`` is ignored.

    Returns:
        Boolean array of the same shape; NaN is never clear.
    """
    if not cloud_bits:
        return np.isin(values, np.asarray(list(clear_classes), dtype=np.float64))
    valid = np.isfinite(values)
    mask = 0
    for bit in cloud_bits:
        if not 0 <= bit < 63:
            raise ValueError(f"cloud bit out of range (min=0, max=62, actual={bit})")
        mask |= 1 << bit
    ints = np.where(valid, values, 0).astype(np.int64)
    return valid & ((ints & mask) == 0)
