"""A decoded sample as an ``xarray.DataArray``: ``geodelta.data.to_xarray(sample)``.

The array is ``(time, band, y, x)``, float32 reflectance exactly as the sample holds it (NaN
where the loader put its ``nodata`` value, NaN by default), with:

- ``time``: the acquisition times (``meta["t0"]``, ``meta["t1"]`` of a pair; the T ``dates``
  of a series sample, ``load(..., mode="series")``), as ``datetime64[ns]`` in UTC without a
  zone (xarray's convention);
- ``band``: the band names of ``image`` (``meta["__bands__"]``, the ``bands=`` the loader kept);
- ``y``, ``x``: pixel *centres* in the sample's CRS, from its affine transform
  (``meta["transform"]``, rasterio order; a rotated transform is refused);
- ``spatial_ref``: a scalar coordinate carrying the CRS the way rioxarray writes it
  (``crs_wkt`` and ``spatial_ref`` = the WKT, ``GeoTransform`` = the GDAL transform string),
  with ``grid_mapping = "spatial_ref"`` in the attributes: with rioxarray installed,
  ``da.rio.crs`` and ``da.rio.transform()`` read them; without it, CF tools read ``crs_wkt``.

The masks go in a Dataset, not in the DataArray (they have no band dimension, and a series'
step masks have T-1 steps, not T times): :func:`to_dataset` gives ``reflectance`` (the
DataArray above) with ``mask`` ((y, x) transition codes of a pair; (step, y, x) of a series,
``step`` = 1..T-1 with ``step_start``/``step_end`` times), ``regions`` (a pair's region ids,
when loaded) and ``first_change`` (y, x) of a series, all on the same ``y``/``x``/``spatial_ref``
coordinates, each variable with ``grid_mapping = "spatial_ref"``: ``ds.rio.crs`` reads it.

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

__all__ = ["pixel_centres", "to_dataset", "to_xarray"]


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


def _times(sample: Mapping[str, Any], meta: Mapping[str, Any], key: str) -> np.ndarray:
    """The sample's acquisition times as naive-UTC ``datetime64[ns]``: a series' ``dates``, or
    a pair's ``t0``, ``t1``."""
    import numpy as np

    values = sample["dates"] if "dates" in sample else [meta["t0"], meta["t1"]]
    return np.array([_utc_naive(v, key) for v in values], dtype="datetime64[ns]")


def to_xarray(sample: Mapping[str, Any]) -> xr.DataArray:
    """A decoded sample as an ``xarray.DataArray`` ``(time, band, y, x)`` with its CRS.

    Args:
        sample: what :func:`geodelta.data.load` or :func:`geodelta.data.decode_sample` yields
            with ``decode="torch"`` or ``"numpy"``: a pair (``image`` [2, C, H, W] and
            ``meta``) or a series (``mode="series"``: ``image`` [T, C, H, W], ``dates`` and
            ``meta``).

    Returns:
        The reflectance cube, named ``"reflectance"``, with 2 times (a pair) or T (a series);
        its attributes carry the sample key, cell id, ``dn_scale``/``dn_offset`` of the tifs
        and ``grid_mapping``. The values are a float32 view of ``image`` (no copy when
        ``image`` is already a float32 array). The masks: :func:`to_dataset`.

    Raises:
        LoaderError: a raw sample (``decode="raw"``), an image that is not [2, C, H, W] (a
            pair) or [T, C, H, W] with T ``dates`` (a series), band names that do not match its
            band count, or a rotated transform.
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
    times = 2 if "dates" not in sample else len(sample["dates"])
    if image.ndim != 4 or image.shape[0] != times:
        what = "[2, C, H, W] (before, after)"
        if "dates" in sample:
            what = f"[T, C, H, W] with T = {times} (its dates)"
        raise LoaderError(f"image must be {what} (got shape {tuple(image.shape)})", source=key)
    bands = [str(b) for b in meta.get("__bands__", meta.get("bands", ()))]
    if len(bands) != image.shape[1]:
        raise LoaderError(
            f"{len(bands)} band names for {image.shape[1]} bands in image (meta['__bands__'])",
            source=key,
        )
    xr = optional_import("xarray", "data", purpose="geodelta.data.to_xarray")
    height, width = int(image.shape[2]), int(image.shape[3])
    coords = _grid_coords(meta, height, width, key)
    return xr.DataArray(
        image,
        dims=("time", "band", "y", "x"),
        coords={"time": _times(sample, meta, key), "band": bands, **coords},
        name="reflectance",
        attrs={
            "key": key,
            "cell_id": str(meta.get("cell_id", "")),
            "dn_scale": float(meta.get("dn_scale", math.nan)),
            "dn_offset": float(meta.get("dn_offset", math.nan)),
            "grid_mapping": "spatial_ref",
        },
    )


def _grid_coords(meta: Mapping[str, Any], height: int, width: int, key: str) -> dict[str, Any]:
    """``y``, ``x`` (pixel centres) and ``spatial_ref`` (the CRS, rioxarray's way)."""
    import numpy as np

    xr = optional_import("xarray", "data", purpose="geodelta.data.to_xarray")
    pyproj = optional_import("pyproj", "data", purpose="the CRS of geodelta.data.to_xarray")
    y, x = pixel_centres(meta["transform"], height, width, key=key)
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
    return {
        "y": xr.Variable("y", y, attrs={"axis": "Y", "units": unit}),
        "x": xr.Variable("x", x, attrs={"axis": "X", "units": unit}),
        "spatial_ref": spatial_ref,
    }


def to_dataset(sample: Mapping[str, Any]) -> xr.Dataset:
    """A decoded sample as an ``xarray.Dataset``: the reflectance cube and its masks.

    Variables (all on the same ``y``/``x``/``spatial_ref`` coordinates, ``grid_mapping`` set):

    - ``reflectance`` (time, band, y, x): :func:`to_xarray`;
    - ``mask``: a pair's transition codes (y, x), or a series' step masks (step, y, x) with
      ``step`` = 1..T-1 and the coordinates ``step_start`` / ``step_end`` (the step's two
      acquisition times);
    - ``regions`` (y, x): a pair's region ids, when the sample has them;
    - ``first_change`` (y, x): a series' first changed step (0 = never).

    Args:
        sample: a decoded pair or series sample (see :func:`to_xarray`).

    Returns:
        The Dataset; its attributes are the reflectance's.

    Raises:
        LoaderError: as :func:`to_xarray`, or a mask whose shape does not fit the image.
        MissingDependencyError: xarray or pyproj is not installed.
    """
    import numpy as np

    xr = optional_import("xarray", "data", purpose="geodelta.data.to_dataset")
    da = to_xarray(sample)
    key = str(da.attrs["key"])
    hw = (da.sizes["y"], da.sizes["x"])
    attrs = {"grid_mapping": "spatial_ref"}
    data: dict[str, Any] = {"reflectance": da}
    coords: dict[str, Any] = {}

    def raster(name: str, dims: tuple[str, ...], shape: tuple[int, ...]) -> None:
        arr = sample[name]
        arr = arr.detach().cpu().numpy() if hasattr(arr, "detach") else np.asarray(arr)
        if tuple(arr.shape) != shape:
            raise LoaderError(f"{name} is {tuple(arr.shape)}, expected {shape}", source=key)
        data[name] = xr.DataArray(arr, dims=dims, attrs=attrs)

    if "dates" in sample:
        t = da.sizes["time"]
        if "mask" in sample:
            raster("mask", ("step", "y", "x"), (t - 1, *hw))
            times = da.time.values
            coords = {"step": np.arange(1, t), "step_start": ("step", times[:-1]),
                      "step_end": ("step", times[1:])}  # fmt: skip
        if "first_change" in sample:
            raster("first_change", ("y", "x"), hw)
    else:
        for name in ("mask", "regions"):
            if name in sample:
                raster(name, ("y", "x"), hw)
    return xr.Dataset(data, coords=coords, attrs=dict(da.attrs))
