"""search -> series dates: choose the dates of a cell's sequence (issue 15, ``time.series``).

Pure and deterministic: given the candidate scenes of a cell, each with its *pixel-level* clear
mask over the cell (``True`` = observed and clear; never the scene-wide ``eo:cloud_cover``), and
the windows of the series (:func:`geodelta.schemas.series.series_windows`), it picks per window
the scene with the highest clear fraction among those reaching ``min_clear_fraction``.

Ties (equal clear fractions) go to the date closer to the window's centre, then to the earlier
date, then to the smaller item id: the centre keeps the dates of a sequence evenly spaced (one
a year stays near the same season), and the rest makes the choice total. A window without an
acceptable scene is skipped (recorded in ``empty_windows``), not filled from a neighbour. With
fewer than ``min_dates`` chosen dates the cell is quarantined as ``pair:too_few_dates``; the
detail lists every date seen, per window, with its clear fraction, so the user sees which
threshold to change. Candidates outside every window are ignored (counted in the detail).

Not wired into the build yet: ``geodelta build`` refuses a config with ``time.series``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from geodelta.errors import GeodeltaError
from geodelta.schemas import QuarantineRecord
from geodelta.schemas.series import SeriesDate, SeriesSelection, SeriesWindow

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["SeriesCandidate", "SeriesInputError", "clear_fraction", "select_series"]

#: Quarantine reason (stage ``pair``) of a cell with too few acceptable dates.
TOO_FEW_DATES = "too_few_dates"


class SeriesInputError(GeodeltaError, ValueError):
    """Candidates that cannot be rated (a clear mask of the wrong shape, an empty cell)."""


@dataclass(frozen=True)
class SeriesCandidate:
    """One scene that may become a date of the sequence.

    Attributes:
        item_id: STAC item id of the scene.
        datetime: acquisition time, timezone-aware UTC.
        clear: boolean (H, W) over the cell, True where the pixel is observed and clear.
    """

    item_id: str
    datetime: datetime
    clear: np.ndarray


def clear_fraction(clear: np.ndarray) -> float:
    """Fraction of True pixels of a clear mask (0..1).

    Raises:
        SeriesInputError: the mask is empty.
    """
    import numpy as np

    if clear.size == 0:
        raise SeriesInputError("a clear mask over the cell has no pixels")
    return float(np.count_nonzero(clear)) / float(clear.size)


def _fmt(c: SeriesCandidate, f: float) -> str:
    return f"{c.datetime:%Y-%m-%dT%H:%M:%S}={f:.3f}"


def select_series(
    cell_id: str,
    windows: Sequence[SeriesWindow],
    candidates: Sequence[SeriesCandidate],
    *,
    min_dates: int,
    min_clear_fraction: float,
) -> SeriesSelection | QuarantineRecord:
    """Choose the clearest acceptable date per window for one cell.

    Args:
        cell_id: the cell.
        windows: the series windows, disjoint (:func:`geodelta.schemas.series.series_windows`).
        candidates: scenes over the cell, any order, each with its clear mask (all one shape).
        min_dates: fewest dates of an acceptable sequence (``time.series.min_dates``).
        min_clear_fraction: a scene is acceptable at this clear fraction or more.

    Returns:
        The chosen dates in time order, or a quarantine record (stage ``pair``, reason
        ``too_few_dates``) listing the dates seen per window and their clear fractions.

    Raises:
        SeriesInputError: clear masks of different shapes, or an empty mask.
    """
    shapes = {c.clear.shape for c in candidates}
    if len(shapes) > 1:
        raise SeriesInputError(
            f"clear masks of cell {cell_id} differ in shape ({sorted(shapes)}): they must all "
            "be over the cell's grid"
        )
    ordered = sorted(windows, key=lambda w: w.start)
    seen: dict[int, list[tuple[SeriesCandidate, float]]] = {w.index: [] for w in ordered}
    outside = 0
    for c in sorted(candidates, key=lambda c: (c.datetime, c.item_id)):
        window = next((w for w in ordered if w.contains(c.datetime)), None)
        if window is None:
            outside += 1
            continue
        seen[window.index].append((c, clear_fraction(c.clear)))
    chosen: list[SeriesDate] = []
    empty: list[int] = []
    for w in ordered:
        ok = [(c, f) for c, f in seen[w.index] if f >= min_clear_fraction]
        if not ok:
            empty.append(w.index)
            continue
        centre = w.centre
        best, frac = min(
            ok,
            key=lambda cf: (
                -cf[1],
                abs((cf[0].datetime - centre).total_seconds()),
                cf[0].datetime,
                cf[0].item_id,
            ),
        )
        chosen.append(
            SeriesDate(
                window=w.index, item_id=best.item_id, datetime=best.datetime, clear_fraction=frac
            )
        )
    if len(chosen) >= min_dates:
        return SeriesSelection(cell_id=cell_id, dates=tuple(chosen), empty_windows=tuple(empty))
    per_window = "; ".join(
        f"{w.start:%Y-%m-%d}..{w.end:%Y-%m-%d}: "
        + (", ".join(_fmt(c, f) for c, f in seen[w.index]) or "no scene")
        for w in ordered
    )
    extra = f"; {outside} scene(s) outside every window" if outside else ""
    return QuarantineRecord(
        key=cell_id,
        cell_id=cell_id,
        stage="pair",
        reason=TOO_FEW_DATES,
        detail=(
            f"{len(chosen)} of {len(ordered)} windows have a date with clear fraction >= "
            f"{min_clear_fraction:g}, fewer than time.series.min_dates ({min_dates}); dates seen "
            f"(clear fraction): {per_window}{extra}; lower time.series.min_clear_fraction or "
            "min_dates, or widen the windows"
        ),
    )
