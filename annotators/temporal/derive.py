"""The checker's own reading of a sequence: everything a temporal claim rests on, from the raw
land-cover stack.

Independent of the label stage's code (:mod:`geodelta.pipelines.stages.labels`, a floor up):
this module follows the definitions of the series contract (issue 15,
:class:`~geodelta.schemas.series.SeriesFacts`) with its own arrays, so a bug in the facts
shows up as a disagreement instead of being repeated.

- step mask k (k = 1..T-1): the transition codes of ``lc[k-1] -> lc[k]`` (both classes known,
  different), with 8-connected regions of changed pixels smaller than ``min_region_px``
  removed;
- ``valid``: a known class (index > 0) on every date; ``first_change``: the smallest k whose
  step mask is set at the pixel (0 = never);
- regions: 8-connected components of ``first_change > 0 & valid`` with at least
  ``min_region_px`` pixels, ids by decreasing size, ties by the first pixel in raster order;
  the class of a region at a date is its most frequent class (ties: the lowest index);
- class areas: pixels of each class at each date over ``valid``; the trend of a class compares
  the last date with the first against ``max(min_region_px, ceil(0.01 * valid pixels))``.

scipy is imported when a stack is read (the ``build`` extra), not with the module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np

from geodelta.schemas.classes import CLASSES, N_CLASSES
from geodelta.schemas.records import normalised_box

__all__ = ["DerivedRegion", "DerivedSequence", "derive_sequence", "iso_day"]

_EIGHT = np.ones((3, 3), dtype=bool)


def iso_day(value: datetime | date | str) -> str:
    """A date as written in temporal captions and answers: ISO ``YYYY-MM-DD`` (UTC day)."""
    if isinstance(value, str):
        return value[:10]
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.date().isoformat()
    return value.isoformat()


@dataclass(frozen=True)
class DerivedRegion:
    """One region of the sequence as the checker reads it (cf. ``RegionHistory``)."""

    id: int
    pixels: int
    classes: tuple[str, ...]
    changed_steps: tuple[int, ...]
    persistent: bool
    bbox_px: tuple[int, int, int, int]
    box: tuple[int, int, int, int]

    @property
    def first_step(self) -> int | None:
        """The first step at which the region's class changed (None when it never did)."""
        return self.changed_steps[0] if self.changed_steps else None


@dataclass(frozen=True)
class DerivedSequence:
    """What a land-cover stack says, re-derived (one per sample; cheap to keep)."""

    dates: tuple[str, ...]
    shape: tuple[int, int]
    valid_pixels: int
    step_changed: tuple[int, ...]
    ever_changed: int
    regions: tuple[DerivedRegion, ...]
    class_pixels: dict[str, tuple[int, ...]]
    threshold_px: int

    def regions_at(self, box: tuple[int, int, int, int]) -> list[DerivedRegion]:
        """The regions whose normalised box is ``box``."""
        return [r for r in self.regions if r.box == box]

    def trend(self, cls: str) -> str:
        """'grew', 'shrank' or 'stable' for a class (absent classes are 'stable')."""
        px = self.class_pixels.get(cls)
        if px is None:
            return "stable"
        delta = px[-1] - px[0]
        return (
            "grew"
            if delta > self.threshold_px
            else "shrank"
            if delta < -self.threshold_px
            else "stable"
        )

    def max_dates(self, cls: str) -> list[int]:
        """The date indices at which a class has its largest area (several on a tie)."""
        px = self.class_pixels.get(cls)
        if px is None:
            return []
        top = max(px)
        return [i for i, v in enumerate(px) if v == top]


def _step_mask(a: np.ndarray, b: np.ndarray, min_region_px: int) -> np.ndarray:
    """Changed pixels (bool) of one step: both classes known and different, small regions out."""
    from scipy import ndimage

    changed = (a > 0) & (b > 0) & (a != b)
    if min_region_px > 1 and changed.any():
        labels, n = ndimage.label(changed, structure=_EIGHT)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < min_region_px
        small[0] = False
        changed &= ~small[labels]
    return changed


def _dominant(values: np.ndarray) -> int:
    """The most frequent class index (ties: the lowest)."""
    counts = np.bincount(values.astype(np.int64), minlength=N_CLASSES + 1)
    counts[0] = 0
    return int(np.argmax(counts))


def derive_sequence(
    lc: np.ndarray, dates: Sequence[datetime | date | str], *, min_region_px: int
) -> DerivedSequence:
    """Read a land-cover stack the way the series contract defines its facts.

    Args:
        lc: (T, H, W) uint8 geodelta class indices per date, 0 = unknown.
        dates: the T acquisition dates, in order.
        min_region_px: smallest region kept (labels.min_region_px), >= 1.

    Returns:
        The checker's reading of the sequence.

    Raises:
        ValueError: the stack is not (T, H, W) with T = len(dates) >= 2, or min_region_px < 1.
    """
    from scipy import ndimage

    stack = np.asarray(lc)
    if stack.ndim != 3 or stack.shape[0] != len(dates) or stack.shape[0] < 2:
        raise ValueError(
            f"land cover must be (T, H, W) with T = len(dates) >= 2 (actual shape {stack.shape}, "
            f"{len(dates)} dates)"
        )
    if min_region_px < 1:
        raise ValueError(f"min_region_px must be >= 1 (actual {min_region_px})")
    t, h, w = stack.shape
    valid = np.all(stack > 0, axis=0)
    first = np.zeros((h, w), dtype=np.int64)
    step_changed = []
    for k in range(1, t):
        step = _step_mask(stack[k - 1], stack[k], min_region_px)
        step_changed.append(int(np.count_nonzero(step & valid)))
        first[(first == 0) & step] = k
    ever = (first > 0) & valid
    labels, n = ndimage.label(ever, structure=_EIGHT)
    regions = []
    if n:
        flat = labels.ravel()
        sizes = np.bincount(flat, minlength=n + 1)
        nz = np.flatnonzero(flat)
        _, first_px = np.unique(flat[nz], return_index=True)
        kept = [i for i in range(1, n + 1) if sizes[i] >= min_region_px]
        order = sorted(kept, key=lambda i: (-int(sizes[i]), int(nz[first_px[i - 1]])))
        objects = ndimage.find_objects(labels)
        for rid, i in enumerate(order, start=1):
            rows, cols = objects[i - 1]
            inside = labels[rows, cols] == i
            classes = tuple(CLASSES[_dominant(stack[d, rows, cols][inside])] for d in range(t))
            changed_steps = tuple(k for k in range(1, t) if classes[k] != classes[k - 1])
            bbox = (cols.start, rows.start, cols.stop, rows.stop)
            regions.append(
                DerivedRegion(
                    id=rid,
                    pixels=int(sizes[i]),
                    classes=classes,
                    changed_steps=changed_steps,
                    persistent=classes[-1] != classes[0],
                    bbox_px=bbox,
                    box=normalised_box(bbox, (h, w)),
                )
            )
    valid_pixels = int(np.count_nonzero(valid))
    per_date = [
        np.bincount(stack[d][valid].astype(np.int64), minlength=N_CLASSES + 1) for d in range(t)
    ]
    class_pixels = {
        CLASSES[c]: tuple(int(per_date[d][c]) for d in range(t))
        for c in range(1, N_CLASSES + 1)
        if any(per_date[d][c] for d in range(t))
    }
    return DerivedSequence(
        dates=tuple(iso_day(d) for d in dates),
        shape=(h, w),
        valid_pixels=valid_pixels,
        step_changed=tuple(step_changed),
        ever_changed=int(np.count_nonzero(ever)),
        regions=tuple(regions),
        class_pixels=class_pixels,
        threshold_px=max(min_region_px, math.ceil(0.01 * valid_pixels)),
    )
