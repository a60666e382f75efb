"""The members a sequence sample adds to a pair's (``time.series``; issue 15).

``series.tif`` (every date, registered onto date 0, date-major bands), ``dates.json``,
``first_change.png`` and ``step_masks.tif``: exactly :data:`geodelta.schemas.members.SERIES_MEMBERS`,
encoded with the pair members' own conventions (the DN encoding of ``before.tif``, the PNG
writer of ``mask.png``), byte-deterministic.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from geodelta._io import compact_json_bytes
from geodelta.pipelines.stages.encode import (
    EncodeError,
    geotiff_bytes,
    index_png,
    to_dn,
    write_geotiff,
)
from geodelta.pipelines.stages.sample import Sample, SeriesArrays
from geodelta.schemas import SampleMeta
from geodelta.schemas.members import SERIES_MEMBERS
from geodelta.schemas.records import Transform

__all__ = ["index_geotiff_bytes", "series_band_names", "series_members", "step_names"]


def index_geotiff_bytes(
    codes: np.ndarray, *, crs: str, transform: Transform, band_names: Sequence[str]
) -> bytes:
    """Write a (N, H, W) uint8 stack of codes as an in-memory, deflate-compressed GeoTIFF.

    No nodata, no scale: the values are codes (0 = no change). Byte-deterministic.

    Raises:
        EncodeError: wrong dtype, rank or number of band names.
    """
    if codes.dtype != np.uint8:
        raise EncodeError(f"codes must be uint8 (actual dtype={codes.dtype})")
    return write_geotiff(codes, crs=crs, transform=transform, band_names=band_names)


def series_band_names(series: SeriesArrays, bands: Sequence[str]) -> list[str]:
    """``"YYYY-MM-DD band"`` for every band of every date, date-major."""
    return [f"{d.datetime:%Y-%m-%d} {b}" for d in series.dates for b in bands]


def step_names(series: SeriesArrays) -> list[str]:
    """``"YYYY-MM-DD..YYYY-MM-DD"`` for every step (date k-1 to date k)."""
    d = series.dates
    return [f"{a.datetime:%Y-%m-%d}..{b.datetime:%Y-%m-%d}" for a, b in itertools.pairwise(d)]


def series_members(sample: Sample, meta: SampleMeta) -> dict[str, bytes]:
    """The series members of a labelled sequence sample, in :data:`SERIES_MEMBERS` order.

    Raises:
        EncodeError: the sample is not a sequence or its temporal labels are missing.
    """
    series = sample.series
    if series is None or series.step_masks is None or series.first_change is None:
        raise EncodeError(
            "a sequence sample needs its dates, step masks and first_change", key=sample.key
        )
    t, c, h, w = series.stack.shape
    members = {
        "series.tif": geotiff_bytes(
            to_dn(series.stack).reshape(t * c, h, w),
            crs=meta.crs,
            transform=meta.transform,
            band_names=series_band_names(series, meta.bands),
        ),
        "dates.json": compact_json_bytes([d.model_dump(mode="json") for d in series.dates]),
        "first_change.png": index_png(series.first_change),
        "step_masks.tif": index_geotiff_bytes(
            np.asarray(series.step_masks, dtype=np.uint8),
            crs=meta.crs,
            transform=meta.transform,
            band_names=step_names(series),
        ),
    }
    return {m.name: members[m.name] for m in SERIES_MEMBERS}
