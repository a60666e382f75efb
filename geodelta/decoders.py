"""Decoders of released samples for the tools of the field: webdataset and Hugging Face datasets.

Generic image decoders read geodelta's members wrongly, and silently: PIL (hence
``datasets.Image()`` and webdataset's ``decode("rgb")``) reads band 1 only of a multiband
``before.tif``/``after.tif``, and webdataset's ``decode("l")``/``decode("rgb")`` turn the codes of
``mask.png`` into fractions of 255. The decoders here read every member by its codec in the
members table (:mod:`geodelta.schemas.members`), through :func:`geodelta.data.decode_member`:

``webdataset_handler``
    a webdataset decoder handler, placed before webdataset's own::

        wds.WebDataset(urls).decode(geodelta.data.webdataset_handler, "rgb8")

    GeoTIFF -> uint16 DN (band, y, x), every band (``series.tif``: its T*C bands, date-major;
    a handler sees one member, not the sample's ``json``: for reflectance map
    :func:`geodelta.data.decode_members` over raw samples instead); index GeoTIFF
    (``step_masks.tif``) -> uint8 codes (step, y, x); index/instance PNG -> the stored values
    (uint8 / uint16 (y, x)); RGB PNG -> uint8 (y, x, 3); JSON -> Python values. A member the
    table does not know is left to the next handler.
``hf_features``
    the :class:`datasets.Features` of a shard sample (the dataset card's front matter lists the
    same): GeoTIFFs stay ``binary``, PNGs are ``Image()``, JSON members ``Json()``. Pass it to
    ``load_dataset("webdataset", data_files=..., features=hf_features())``
    (``hf_features("series")`` for a series release);
    ``load_dataset(<release folder>)`` reads it from the card.
``hf_transform``
    a batch transform for ``Dataset.with_transform``: GeoTIFF bytes -> float32 reflectance
    (band, y, x) with NaN for nodata (``series.tif``: (time, band, y, x)), index GeoTIFF bytes
    -> uint8 codes (step, y, x), PNG images -> numpy arrays of the stored values.

torch, webdataset and datasets are not imported here (``datasets`` only inside
:func:`hf_features`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geodelta.data import LoaderError, _hf_feature_list, _member, decode_member, tif_dn

if TYPE_CHECKING:  # pragma: no cover
    import datasets

__all__ = ["hf_features", "hf_transform", "webdataset_handler"]


def webdataset_handler(key: str, data: bytes) -> Any:
    """webdataset decoder handler for geodelta members (see the module docstring).

    Args:
        key: the member name as webdataset passes it (``".mask.png"``; the leading dot is
            optional).
        data: the member's bytes.

    Returns:
        The decoded member, or ``None`` for a name the members table does not know (webdataset
        then tries its next handler).
    """
    name = key.lstrip(".").lower()
    row = _member(name)
    if row is None:
        return None
    if row.codec == "geotiff":
        from tifffile import TiffFile

        with TiffFile(io.BytesIO(data)) as tif:
            bands = int(tif.pages[0].samplesperpixel)  # type: ignore[union-attr]
        return tif_dn(data, list(range(bands)))[0]
    return decode_member(name, data)


def hf_features(mode: str = "pair") -> datasets.Features:
    """The Hugging Face features of a shard sample (GeoTIFFs as bytes, PNGs as images).

    Args:
        mode: the release's mode (``manifest["mode"]``): ``"pair"`` or ``"series"`` (the pair
            members, then ``series.tif``, ``dates.json``, ``first_change.png``,
            ``step_masks.tif``).

    Returns:
        ``datasets.Features`` for ``load_dataset("webdataset", ..., features=hf_features())``.

    Raises:
        LoaderError: an unknown mode.
    """
    from datasets import Features

    if mode not in ("pair", "series"):
        raise LoaderError(f"mode must be 'pair' or 'series' (got {mode!r})")
    return Features._from_yaml_list(_hf_feature_list(mode))


def _decode_value(name: str, value: Any, meta: Mapping[str, Any] | None, nodata: float) -> Any:
    """One member of an HF row, decoded as :func:`geodelta.data.decode_member` decodes it."""
    import numpy as np

    row = _member(name)
    if row is None or value is None:
        return value
    if row.codec in ("geotiff", "geotiff-index"):
        if not isinstance(value, bytes):
            raise LoaderError(
                f"{name} came out of datasets as {type(value).__name__}, not bytes: its feature "
                "decoded it (band 1 only); load with features=geodelta.data.hf_features()"
            )
        return decode_member(name, value, meta=meta, nodata=nodata)
    if row.codec.startswith("png"):
        return value if isinstance(value, np.ndarray) else np.asarray(value)
    return value


def hf_transform(batch: dict[str, list[Any]], *, nodata: float = math.nan) -> dict[str, list[Any]]:
    """Decode a batch of Hugging Face rows: ``ds.with_transform(geodelta.data.hf_transform)``.

    GeoTIFF bytes become float32 reflectance (band, y, x) (``DN * dn_scale + dn_offset`` from the
    row's ``json``; ``nodata`` where DN is the file's nodata value), PNG images numpy arrays of
    their stored values (uint8 codes for ``mask.png``, 0/1 for ``change.png``); JSON members and
    ``__key__``/``__url__`` pass through.

    Args:
        batch: column -> values, as ``datasets`` hands a transform.
        nodata: value put where a GeoTIFF's DN equals its nodata value.

    Returns:
        The batch with every member decoded.

    Raises:
        LoaderError: a GeoTIFF that ``datasets`` already decoded as an image (load with
            ``features=hf_features()``).
    """
    metas = batch.get("json")
    out: dict[str, list[Any]] = {}
    for name, values in batch.items():
        if name.startswith("__"):
            out[name] = values
            continue
        out[name] = [
            _decode_value(name, v, metas[i] if metas is not None else None, nodata)
            for i, v in enumerate(values)
        ]
    return out
