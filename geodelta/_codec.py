"""The pieces of decoding below :mod:`geodelta.data` and :mod:`geodelta._series`.

:class:`LoaderError` (re-exported as ``geodelta.data.LoaderError``), GeoTIFF bands as arrays
(:func:`tif_dn`, :func:`tif_dn_fast`, re-exported by ``geodelta.data``: a fast path without GDAL
for the layout geodelta writes, rasterio for any other file), and DN -> reflectance.

This is the ground floor: it imports nothing of geodelta but :mod:`geodelta.errors`; numpy,
tifffile and rasterio are imported inside the functions.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from geodelta.errors import GeodeltaError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "LoaderError",
    "band_plan",
    "reflectance_into",
    "tif_band_count",
    "tif_dn",
    "tif_dn_fast",
]


class LoaderError(GeodeltaError, ValueError):
    """A release cannot be loaded as asked (unknown split or band, missing manifest, bad URL).

    Attributes:
        source: the folder, URL or shard the problem is about.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(f"{message} (source={source})" if source else message)


#: TIFF Compression tag values the fast path inflates itself: none, deflate (both codes).
_TIFF_UNCOMPRESSED = 1
_TIFF_DEFLATE = (8, 32946)


def tif_dn_fast(data: bytes, idx: Sequence[int]) -> tuple[np.ndarray, int] | None:
    """Decode bands of a GeoTIFF laid out as geodelta writes it, without GDAL.

    Handles little-endian strip TIFFs with one integer band per plane (``interleave=band`` or a
    single band), uncompressed or deflate, predictor none or horizontal: the layout of every
    ``before.tif``/``after.tif`` in a release (see ``pipelines/stages/encode.py``). Only the
    strips of the requested bands are inflated. tifffile parses the header; the strips are inflated with
    ``zlib`` and the predictor undone with one cumulative sum per band.

    Args:
        data: the GeoTIFF file bytes.
        idx: 0-based band indexes to read, in this order.

    Returns:
        ``(dn, nodata)``: the (len(idx), H, W) array in the file's dtype and the file's nodata
        value (``GDAL_NODATA``; 0 when the tag is absent), or ``None`` when the file is laid out
        any other way (tiled, pixel-interleaved, LZW, float, big-endian, sparse or damaged
        strips, ...): the caller then reads it with rasterio.
    """
    import numpy as np
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if tif.byteorder != "<":
                return None
            page = tif.pages[0]
            if not isinstance(page, tifffile.TiffPage):  # pragma: no cover - pages[0] is one
                return None
            dtype = page.dtype
            spp = int(page.samplesperpixel)
            h, w = int(page.imagelength), int(page.imagewidth)
            compression, predictor = int(page.compression), int(page.predictor)
            if (
                page.is_tiled
                or page.imagedepth != 1
                or page.fillorder != 1
                or dtype is None
                or dtype.kind not in "ui"
                or dtype.itemsize * 8 != page.bitspersample
                or compression not in (_TIFF_UNCOMPRESSED, *_TIFF_DEFLATE)
                or predictor not in (1, 2)
                or (spp > 1 and int(page.planarconfig) != 2)
                or not idx
                or min(idx) < 0
                or max(idx) >= spp
                or h < 1
                or w < 1
            ):
                return None
            rows = min(int(page.rowsperstrip), h)
            per_band = -(-h // rows)
            offsets, counts = page.dataoffsets, page.databytecounts
            if len(offsets) != spp * per_band or len(counts) != len(offsets):
                return None
            raw_nodata = page.tags.valueof(42113)  # GDAL_NODATA
    except (tifffile.TiffFileError, ValueError, KeyError, IndexError, TypeError, OSError):
        return None
    nodata = 0
    if raw_nodata is not None:
        try:
            nodata = int(str(raw_nodata).strip())
        except ValueError:
            return None
        if not np.iinfo(dtype).min <= nodata <= np.iinfo(dtype).max:
            return None
    dt = dtype.newbyteorder("<")
    view = memoryview(data)
    out = np.empty((len(idx), h, w), dtype=dt)
    for j, band in enumerate(idx):
        for s in range(per_band):
            k = band * per_band + s
            o, c = int(offsets[k]), int(counts[k])
            r0, r1 = s * rows, min(h, (s + 1) * rows)
            need = (r1 - r0) * w
            strip: bytes | memoryview = view[o : o + c]
            if compression != _TIFF_UNCOMPRESSED:
                try:
                    strip = zlib.decompress(strip)
                except zlib.error:
                    return None
            if c == 0 or len(strip) < need * dt.itemsize:
                return None
            out[j, r0:r1] = np.frombuffer(strip, dtype=dt, count=need).reshape(r1 - r0, w)
    if predictor == 2:
        np.cumsum(out, axis=-1, dtype=dt, out=out)
    return out, nodata


def tif_dn(data: bytes, idx: Sequence[int]) -> tuple[np.ndarray, float]:
    """Bands ``idx`` (0-based, in this order) of a GeoTIFF and its nodata value.

    :func:`tif_dn_fast` for the layout geodelta writes, rasterio for any other GeoTIFF; both give
    the same array (dtype, band order, values) for the same file.

    Args:
        data: the GeoTIFF file bytes.
        idx: 0-based band indexes.

    Returns:
        ``(dn, nodata)``: a (len(idx), H, W) array and the file's nodata value (0 when unset).
    """
    fast = tif_dn_fast(data, idx)
    if fast is not None:
        return fast
    from rasterio.io import MemoryFile

    with MemoryFile(data) as mf, mf.open() as ds:
        dn = ds.read([i + 1 for i in idx])
        nodata = 0.0 if ds.nodata is None else float(ds.nodata)
    return dn, nodata


def tif_band_count(data: bytes) -> int:
    """The number of bands of a GeoTIFF (from its header; rasterio when tifffile cannot)."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            if isinstance(page, tifffile.TiffPage) and int(page.planarconfig) == 2:
                return int(page.samplesperpixel)
    except (tifffile.TiffFileError, ValueError, KeyError, IndexError, TypeError, OSError):
        pass
    from rasterio.io import MemoryFile

    with MemoryFile(data) as mf, mf.open() as ds:
        return int(ds.count)


def reflectance_into(
    out: np.ndarray, dn: np.ndarray, dn_nodata: float, scale: float, offset: float, nodata: float
) -> None:
    """``out[...] = dn * scale + offset`` in float32, ``nodata`` where ``dn == dn_nodata``."""
    import numpy as np

    np.multiply(dn, np.float32(scale), out=out, dtype=np.float32)
    out += np.float32(offset)
    out[dn == dn_nodata] = nodata


def band_plan(
    meta: Mapping[str, Any], bands: Sequence[str] | None, key: str
) -> tuple[list[int], float, float]:
    """``(band indexes, dn_scale, dn_offset)`` of a sample's GeoTIFFs for the bands asked."""
    names = list(meta["bands"])
    wanted = list(bands) if bands is not None else names
    missing = [b for b in wanted if b not in names]
    if missing:
        raise LoaderError(f"bands {missing} not in sample {key} (it has {names})", source=key)
    return [names.index(b) for b in wanted], float(meta["dn_scale"]), float(meta["dn_offset"])
