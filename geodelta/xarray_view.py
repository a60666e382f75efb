"""A decoded sample as an ``xarray.DataArray``: ``geodelta.data.to_xarray(sample)``.

The array is ``(time, band, y, x)``, float32 reflectance exactly as the sample holds it (NaN
where the loader put its ``nodata`` value, NaN by default), with:

- ``time``: the acquisition times (``meta["t0"]``, ``meta["t1"]`` of a pair), as
  ``datetime64[ns]`` in UTC without a zone (xarray's convention);
- ``band``: the band names of ``image`` (``meta["__bands__"]``, the ``bands=`` the loader kept);
- ``y``, ``x``: pixel *centres* in the sample's CRS, from its affine transform
  (``meta["transform"]``, rasterio order; a rotated transform is refused);
- ``spatial_ref``: a scalar coordinate carrying the CRS the way rioxarray writes it
  (``crs_wkt`` and ``spatial_ref`` = the WKT, ``GeoTransform`` = the GDAL transform string),
  with ``grid_mapping = "spatial_ref"`` in the attributes: with rioxarray installed,
  ``da.rio.crs`` and ``da.rio.transform()`` read them; without it, CF tools read ``crs_wkt``.

xarray and pyproj (the WKT of the CRS) are imported inside :func:`to_xarray`; both come with
``pip install 'geodelta[data]'``. ``import geodelta.data`` imports neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from geodelta._optional import optional_import
from geodelta.data import LoaderError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import xarray as xr

__all__ = ["pixel_centres", "to_xarray"]


def _utc_naive(value: Any, key: str) -> datetime:
    """An ISO string or datetime of the sample's json as a naive UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise LoaderError(f"not an ISO datetime: {value!r}", source=key) from None
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def pixel_centres(
    transform: Sequence[float], height: int, width: int, *, key: str = "sample"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(y, x)`` coordinates of pixel centres for a north-up affine transform.

    Args:
        transform: ``(a, b, c, d, e, f)`` in rasterio order (x = a*col + b*row + c, y = d*col +
            e*row + f, at pixel corners).
        height: rows.
        width: columns.
        key: what the transform belongs to, for the error message.

    Returns:
        ``y`` (float64, ``height`` values, row centres) and ``x`` (``width`` column centres).

    Raises:
        LoaderError: the transform is rotated or sheared (``b`` or ``d`` not 0): such a grid
            has no 1-D x/y coordinates.
    """
    import numpy as np

    a, b, c, d, e, f = (float(v) for v in transform)
    if b != 0 or d != 0:
        raise LoaderError(
            f"rotated transform {tuple(transform)} (b={b:g}, d={d:g}) has no 1-D x/y "
            "coordinates; to_xarray needs a north-up grid",
            source=key,
        )
    x = c + (np.arange(width, dtype=np.float64) + 0.5) * a
    y = f + (np.arange(height, dtype=np.float64) + 0.5) * e
    return y, x


def _as_numpy(image: Any) -> np.ndarray:
    import numpy as np

    if not isinstance(image, np.ndarray) and hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    return np.asarray(image, dtype=np.float32)


def to_xarray(sample: Mapping[str, Any]) -> xr.DataArray:
    """A decoded pair sample as an ``xarray.DataArray`` ``(time, band, y, x)`` with its CRS.

    Args:
        sample: what :func:`geodelta.data.load` or :func:`geodelta.data.decode_sample` yields
            with ``decode="torch"`` or ``"numpy"`` (``image`` [2, C, H, W] and ``meta``).

    Returns:
        The reflectance cube, named ``"reflectance"``; its attributes carry the sample key, cell
        id, ``dn_scale``/``dn_offset`` of the tifs and ``grid_mapping``. The values are a
        float32 view of ``image`` (no copy when ``image`` is already a float32 array).

    Raises:
        LoaderError: a raw sample (``decode="raw"``), an image that is not [2, C, H, W], band
            names that do not match its band count, or a rotated transform.
        MissingDependencyError: xarray or pyproj is not installed (names the ``data`` extra).
    """
    meta = sample.get("meta")
    if not isinstance(meta, Mapping) or "image" not in sample:
        raise LoaderError(
            "to_xarray needs a decoded sample (image and meta; load(..., decode='torch' or "
            "'numpy'), not decode='raw')"
        )
    key = str(meta.get("__key__", meta.get("key", "sample")))
    image = _as_numpy(sample["image"])
    if image.ndim != 4 or image.shape[0] != 2:
        raise LoaderError(
            f"image must be [2, C, H, W] (before, after) (got shape {tuple(image.shape)})",
            source=key,
        )
    bands = [str(b) for b in meta.get("__bands__", meta.get("bands", ()))]
    if len(bands) != image.shape[1]:
        raise LoaderError(
            f"{len(bands)} band names for {image.shape[1]} bands in image (meta['__bands__'])",
            source=key,
        )
    xr = optional_import("xarray", "data", purpose="geodelta.data.to_xarray")
    pyproj = optional_import("pyproj", "data", purpose="the CRS of geodelta.data.to_xarray")
    import numpy as np

    height, width = int(image.shape[2]), int(image.shape[3])
    y, x = pixel_centres(meta["transform"], height, width, key=key)
    times = np.array(
        [_utc_naive(meta["t0"], key), _utc_naive(meta["t1"], key)], dtype="datetime64[ns]"
    )
    crs = pyproj.CRS.from_user_input(meta["crs"])
    wkt = crs.to_wkt()
    unit = crs.axis_info[0].unit_name if crs.axis_info else "unknown"
    a, b, c, d, e, f = (float(v) for v in meta["transform"])
    spatial_ref = xr.Variable(
        (),
        np.int64(0),
        attrs={
            "crs_wkt": wkt,
            "spatial_ref": wkt,
            "GeoTransform": f"{c!r} {a!r} {b!r} {f!r} {d!r} {e!r}",
        },
    )
    return xr.DataArray(
        image,
        dims=("time", "band", "y", "x"),
        coords={
            "time": times,
            "band": bands,
            "y": xr.Variable("y", y, attrs={"axis": "Y", "units": unit}),
            "x": xr.Variable("x", x, attrs={"axis": "X", "units": unit}),
            "spatial_ref": spatial_ref,
        },
        name="reflectance",
        attrs={
            "key": key,
            "cell_id": str(meta.get("cell_id", "")),
            "dn_scale": float(meta.get("dn_scale", math.nan)),
            "dn_offset": float(meta.get("dn_offset", math.nan)),
            "grid_mapping": "spatial_ref",
        },
    )
