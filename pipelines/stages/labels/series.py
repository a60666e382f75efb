"""Land-cover labels of a sequence (issue 15): one map per date, a mask per step, the facts.

A sequence of ``T >= 3`` dates ``d_0 < ... < d_{T-1}`` is labelled from yearly land-cover maps:

* :func:`pick_series_landcover` picks, for each date, the map of the date's year (the item
  whose period holds the date, or, for an item without a period, whose datetime falls in that
  year); a year without a map rejects the cell (``missing_label_year``);
* :func:`read_series_landcover` reads the picked maps on the cell grid as geodelta class
  indices, ``(T, H, W)``;
* :func:`label_series` turns the stack into the step masks, the ``first_change`` raster and the
  :class:`~geodelta.schemas.series.SeriesFacts` every temporal caption and answer rests on.

Definitions (the series contract of issue 15; an independent checker re-derives them):

* step ``k`` (1..T-1) goes from date ``k-1`` to date ``k``; its mask is the pair mask of the
  two maps, ``clean_mask(transition_mask(lc[k-1], lc[k]), min_region_px)`` (transition codes,
  0 = no change or a class unknown on either date of the step);
* ``valid``: the class is known (index > 0) on every date; every fact counts valid pixels only;
* ``first_change``: the smallest ``k`` whose step mask is > 0 at the pixel, 0 = never;
* regions: 8-connected components of ``(first_change > 0) & valid`` with at least
  ``min_region_px`` pixels, ids by decreasing size, ties by the first pixel in raster order;
  a region's class at a date is the most frequent class of its pixels (ties: lowest index);
* class trends: the pixels of each class at each date over valid pixels; ``grew`` / ``shrank``
  when ``last - first`` is beyond ``+/- threshold_px`` with
  ``threshold_px = max(min_region_px, ceil(valid_pixels / 100))``, else ``stable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from geodelta.pipelines.stages.label import (
    LabelError,
    clean_mask,
    position_word,
    region_image,
    transition_mask,
)
from geodelta.pipelines.stages.labels.base import Rejection
from geodelta.schemas.classes import CLASSES, N_CLASSES
from geodelta.schemas.records import normalised_box
from geodelta.schemas.series import (
    MIN_SERIES_DATES,
    ClassTrend,
    RegionHistory,
    SeriesFacts,
    SeriesStep,
)

if TYPE_CHECKING:
    from geodelta.schemas import SceneRef, TileJob
    from geodelta.schemas.config import LabelConfig
    from geodelta.sources.raster import RasterAccess

__all__ = [
    "SeriesLabels",
    "label_series",
    "pick_series_landcover",
    "read_series_landcover",
    "series_class_trends",
    "trend_threshold",
]

#: Most dates a sequence may have: ``first_change`` stores step numbers in a uint8.
MAX_SERIES_DATES = 256

_EIGHT = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------------------------
# Which map labels which date
# --------------------------------------------------------------------------------------------


def _label_year(item: SceneRef) -> int:
    """The year a land-cover item maps: its period's middle, else its datetime's year."""
    if item.start_datetime is not None and item.end_datetime is not None:
        return (item.start_datetime + (item.end_datetime - item.start_datetime) / 2).year
    return item.datetime.year


def _maps_date(item: SceneRef, when: datetime) -> bool:
    """Whether ``item`` is a map of ``when``'s year: its period holds ``when``, or, without a
    period, its datetime is in the same year."""
    if item.start_datetime is not None and item.end_datetime is not None:
        return item.start_datetime <= when <= item.end_datetime
    return item.datetime.year == when.year


def pick_series_landcover(
    items: Sequence[SceneRef], dates: Sequence[datetime], labels: LabelConfig
) -> tuple[SceneRef, ...] | Rejection:
    """The land-cover map of each date's year.

    For each date, the items that map it (period holding the date, or without a period a
    datetime in the date's year); among several (overlapping tiles, a period straddling two
    years), the one whose period is centred in the date's year, then the nearest in time, then
    the smallest item id. Two dates of the same year share their map.

    Args:
        items: the items of ``labels.collection`` covering the cell.
        dates: the acquisition times of the sequence (aware), in order.
        labels: the ``labels`` section of the build config.

    Returns:
        One item per date, in date order, or ``Rejection("missing_label_year", ...)`` naming
        the years without a map, the collection's years and what to change.
    """
    picked: list[SceneRef] = []
    missing: list[datetime] = []
    for when in dates:
        pool = [s for s in items if _maps_date(s, when)]
        if not pool:
            missing.append(when)
            continue
        picked.append(
            min(
                pool,
                key=lambda s: (
                    _label_year(s) != when.year,
                    abs((s.datetime - when).total_seconds()),
                    s.item_id,
                ),
            )
        )
    if not missing:
        return tuple(picked)
    years = sorted({w.year for w in missing})
    have = sorted({_label_year(s) for s in items})
    return Rejection(
        "missing_label_year",
        f"no {labels.collection} item maps year(s) {', '.join(map(str, years))} "
        f"(dates {', '.join(w.date().isoformat() for w in missing)}); the collection has "
        f"{'year(s) ' + ', '.join(map(str, have)) if have else 'no item'} over this cell; "
        "keep time.series start .. end inside the label years or set labels.collection to "
        "a product covering them",
    )


def read_series_landcover(
    items: Sequence[SceneRef],
    job: TileJob,
    labels: LabelConfig,
    access: RasterAccess | None = None,
) -> np.ndarray | Rejection:
    """Read the map of every date on the cell grid, as geodelta class indices.

    Args:
        items: one land-cover item per date (:func:`pick_series_landcover`), in date order; an
            item shared by several dates is read once.
        job: the cell.
        labels: the ``labels`` section (``asset``: the map's asset key, ``product``: its legend).
        access: GDAL options and href signer for the reads (default: none).

    Returns:
        ``(T, H, W)`` uint8 class indices (0 = unknown), or ``Rejection("no_landcover_asset",
        ...)`` when an item lacks ``labels.asset``.

    Raises:
        RasterReadError: a map cannot be read.
    """
    from geodelta.sources.landcover import to_geodelta
    from geodelta.sources.raster import read_classes

    for item in items:
        if labels.asset not in item.assets:
            return Rejection(
                "no_landcover_asset",
                f"land-cover item {item.item_id} has no '{labels.asset}' asset "
                f"(assets: {sorted(item.assets)}); check labels.asset",
            )
    out = np.zeros((len(items), *job.shape), dtype=np.uint8)
    read: dict[str, np.ndarray] = {}
    for t, item in enumerate(items):
        if item.item_id not in read:
            raw = read_classes(item.assets[labels.asset], job, item_id=item.item_id, access=access)
            read[item.item_id] = to_geodelta(raw, labels.product)
        out[t] = read[item.item_id]
    return out


# --------------------------------------------------------------------------------------------
# Step masks, first change, facts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SeriesLabels:
    """The labels of a sequence.

    Attributes:
        step_masks: ``(T-1, H, W)`` uint8; ``step_masks[k-1]`` is the transition mask of step
            ``k`` (date ``k-1`` -> date ``k``), cleaned as the pair mask.
        first_change: ``(H, W)`` uint8, the first step whose mask is > 0; 0 = never.
        valid: ``(H, W)`` bool, the class is known on every date.
        facts: the facts of the sequence (counted over ``valid``).
    """

    step_masks: np.ndarray
    first_change: np.ndarray
    valid: np.ndarray
    facts: SeriesFacts


def _check_stack(lc: np.ndarray, dates: Sequence[datetime]) -> tuple[datetime, ...]:
    """Raise :class:`LabelError` unless ``lc`` is a (T, H, W) stack of class indices with
    ``T >= 3`` and ``dates`` are T aware, increasing datetimes; returns the dates in UTC."""
    if lc.ndim != 3:
        raise LabelError(f"a land-cover series must be a (T, H, W) array (actual shape {lc.shape})")
    t = lc.shape[0]
    if not MIN_SERIES_DATES <= t <= MAX_SERIES_DATES:
        raise LabelError(
            f"a land-cover series needs {MIN_SERIES_DATES}..{MAX_SERIES_DATES} dates (actual {t})"
        )
    if len(dates) != t:
        raise LabelError(
            f"the series has {t} land-cover maps but {len(dates)} dates; give one date per map"
        )
    if lc.dtype.kind not in "iub":
        raise LabelError(
            f"land-cover maps must hold integer class indices (actual dtype={lc.dtype}); "
            "map the product legend onto geodelta classes first"
        )
    if lc.size and (int(lc.min()) < 0 or int(lc.max()) > N_CLASSES):
        raise LabelError(
            f"the land-cover series holds values outside the geodelta class indices "
            f"(min=0, max={N_CLASSES}, actual {int(lc.min())}..{int(lc.max())}); map the "
            "product legend onto geodelta classes first"
        )
    out = []
    for i, d in enumerate(dates):
        if d.tzinfo is None or d.utcoffset() is None:
            raise LabelError(f"date {i} ({d.isoformat()}) must be timezone-aware (UTC)")
        out.append(d.astimezone(UTC))
    for i in range(1, t):
        if out[i] <= out[i - 1]:
            raise LabelError(
                f"the series dates must increase (date {i - 1} = {out[i - 1].isoformat()}, "
                f"date {i} = {out[i].isoformat()})"
            )
    return tuple(out)


def trend_threshold(valid_pixels: int, min_region_px: int) -> int:
    """Area change (pixels) a class trend needs: ``max(min_region_px, ceil(valid / 100))``."""
    return max(int(min_region_px), -(-int(valid_pixels) // 100))


def series_class_trends(
    lc: np.ndarray, valid: np.ndarray, threshold_px: int
) -> tuple[ClassTrend, ...]:
    """The area of every class present at some date over ``valid``, by class index.

    Args:
        lc: ``(T, H, W)`` class indices.
        valid: ``(H, W)`` bool, the pixels counted.
        threshold_px: ``last - first`` beyond ``+threshold_px`` is ``grew``, below
            ``-threshold_px`` ``shrank``, else ``stable``.

    Returns:
        One :class:`ClassTrend` per class index > 0 with pixels at some date.
    """
    counts = np.stack(
        [
            np.bincount(lc[t][valid].astype(np.int64), minlength=N_CLASSES + 1)
            for t in range(len(lc))
        ]
    )  # (T, N + 1)
    out = []
    for idx in range(1, N_CLASSES + 1):
        pixels = tuple(int(v) for v in counts[:, idx])
        if not any(pixels):
            continue
        delta = pixels[-1] - pixels[0]
        trend = "grew" if delta > threshold_px else "shrank" if delta < -threshold_px else "stable"
        out.append(
            ClassTrend(
                class_name=CLASSES[idx],
                pixels=pixels,
                trend=trend,
                max_index=int(np.argmax(counts[:, idx])),
            )
        )
    return tuple(out)


def _regions(lc: np.ndarray, changed: np.ndarray, min_region_px: int) -> tuple[RegionHistory, ...]:
    """The region histories of the changed valid pixels ``changed`` (bool, (H, W))."""
    shape = (int(changed.shape[0]), int(changed.shape[1]))
    keep = clean_mask(changed.astype(np.uint8), min_region_px) > 0
    ids = region_image(keep)  # ids by decreasing size, ties by first pixel in raster order
    n = int(ids.max()) if ids.size else 0
    if n == 0:
        return ()
    rows, cols = np.nonzero(ids)
    lab = ids[rows, cols].astype(np.int64)
    sizes = np.bincount(lab, minlength=n + 1)
    sum_r = np.bincount(lab, weights=rows, minlength=n + 1)
    sum_c = np.bincount(lab, weights=cols, minlength=n + 1)
    # dominant class per region and date: argmax over the class counts = lowest index on ties
    dominant = np.stack(
        [
            np.argmax(
                np.bincount(
                    lab * (N_CLASSES + 1) + lc[t][rows, cols].astype(np.int64),
                    minlength=(n + 1) * (N_CLASSES + 1),
                ).reshape(n + 1, N_CLASSES + 1),
                axis=1,
            )
            for t in range(len(lc))
        ]
    )  # (T, n + 1)
    boxes = ndimage.find_objects(ids.astype(np.int32))
    out = []
    for rid in range(1, n + 1):
        classes = tuple(CLASSES[int(c)] for c in dominant[:, rid])
        changed_steps = tuple(k for k in range(1, len(classes)) if classes[k] != classes[k - 1])
        rs, cs = boxes[rid - 1]
        box_px = (int(cs.start), int(rs.start), int(cs.stop), int(rs.stop))
        row, col = float(sum_r[rid] / sizes[rid]), float(sum_c[rid] / sizes[rid])
        out.append(
            RegionHistory(
                id=rid,
                pixels=int(sizes[rid]),
                classes=classes,
                changed_steps=changed_steps,
                persistent=classes[-1] != classes[0],
                bbox_px=box_px,
                box=normalised_box(box_px, shape),
                position=position_word(row, col, shape),
            )
        )
    return tuple(out)


def label_series(lc: np.ndarray, dates: Sequence[datetime], *, min_region_px: int) -> SeriesLabels:
    """Label a sequence from its land-cover maps.

    Args:
        lc: ``(T, H, W)`` geodelta class indices (0 = unknown), one map per date, ``T >= 3``.
        dates: the T acquisition times (timezone-aware, increasing).
        min_region_px: regions smaller than this are removed (config ``labels.min_region_px``),
            from every step mask and from the regions of the facts.

    Returns:
        The step masks, ``first_change``, ``valid`` and the :class:`SeriesFacts` (module
        docstring for the definitions).

    Raises:
        LabelError: fewer than 3 (or more than 256) maps, a date count that differs from the
            map count, naive or non-increasing dates, values that are not class indices, or
            ``min_region_px < 1``.
    """
    lc = np.asarray(lc)
    utc_dates = _check_stack(lc, dates)
    lc = lc.astype(np.uint8)
    t_count, h, w = lc.shape
    valid = np.all(lc > 0, axis=0)
    step_masks = np.stack(
        [clean_mask(transition_mask(lc[k - 1], lc[k]), min_region_px) for k in range(1, t_count)]
    )
    changed_any = step_masks > 0
    first_change = np.where(changed_any.any(axis=0), np.argmax(changed_any, axis=0) + 1, 0).astype(
        np.uint8
    )
    steps = tuple(
        SeriesStep(
            index=k,
            start=utc_dates[k - 1],
            end=utc_dates[k],
            changed_pixels=int((changed_any[k - 1] & valid).sum()),
        )
        for k in range(1, t_count)
    )
    changed = (first_change > 0) & valid
    valid_pixels = int(valid.sum())
    threshold = trend_threshold(valid_pixels, min_region_px)
    facts = SeriesFacts(
        dates=utc_dates,
        shape=(int(h), int(w)),
        valid_pixels=valid_pixels,
        steps=steps,
        ever_changed_pixels=int(changed.sum()),
        regions=_regions(lc, changed, min_region_px),
        classes=series_class_trends(lc, valid, threshold),
        min_region_px=int(min_region_px),
        threshold_px=threshold,
    )
    return SeriesLabels(step_masks=step_masks, first_change=first_change, valid=valid, facts=facts)
