"""Sequences (issue 15): the ``time.series`` config section, its windows, and the records of
date selection (:mod:`geodelta.pipelines.stages.series`).

A series spec cuts ``start .. end`` into consecutive windows, one per ``step`` (a calendar
year, season = 3 months or month, counted from ``start``); each window is
``[anchor, anchor + window_days)`` (default: up to the next anchor), the last one ends at
``end``. A sequence takes at most one date per window, the clearest one, and needs at least
``min_dates`` of them. Windows may leave gaps (``window_days`` shorter than the step: e.g. one
summer window a year) but never overlap: a spec that overlaps itself, or that cuts fewer
windows than ``min_dates`` (no room for N dates), is rejected when the config is loaded.

Pure pydantic; imports nothing of geodelta above the records.
"""

from __future__ import annotations

import calendar
import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from geodelta.schemas._section import Section
from geodelta.schemas.records import (
    SERIES_TREND_WORDS,
    ClassTrend,
    Record,
    RegionHistory,
    SeriesDateMeta,
    SeriesFacts,
    SeriesStep,
    UTCDatetime,
)

__all__ = [
    "SERIES_TREND_WORDS",
    "STEP_MONTHS",
    "ClassTrend",
    "RegionHistory",
    "SeriesConfig",
    "SeriesDate",
    "SeriesDateMeta",
    "SeriesFacts",
    "SeriesSelection",
    "SeriesStep",
    "SeriesWindow",
    "series_windows",
]

#: Calendar months per window step.
STEP_MONTHS: dict[str, int] = {"year": 12, "season": 3, "month": 1}
#: Fewest dates a sequence may have (fewer is a pair, or nothing).
MIN_SERIES_DATES = 3


def _utc(value: object) -> object:
    """A bare date is its midnight UTC; naive datetimes and ISO strings are UTC."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO date or datetime: {value!r}") from None
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


SeriesDatetime = Annotated[datetime, BeforeValidator(_utc)]


def _add_months(dt: datetime, months: int) -> datetime:
    """``dt`` plus whole calendar months, the day clamped to the month's length."""
    total = dt.month - 1 + months
    year, month = dt.year + total // 12, total % 12 + 1
    return dt.replace(year=year, month=month, day=min(dt.day, calendar.monthrange(year, month)[1]))


class SeriesWindow(Record):
    """One window of a series: at most one date of the sequence falls in it."""

    index: int = Field(ge=0, description="Position of the window in the series, from 0")
    start: UTCDatetime = Field(description="First instant of the window (inclusive), UTC")
    end: UTCDatetime = Field(description="End of the window (exclusive), UTC")

    def contains(self, t: datetime) -> bool:
        """Whether ``t`` (aware) falls in ``[start, end)``."""
        return self.start <= t < self.end

    @property
    def centre(self) -> datetime:
        """The middle of the window."""
        return self.start + (self.end - self.start) / 2


class SeriesConfig(Section):
    """``time.series``: N dates per cell, one per window (issue 15). Optional; pairs are the
    default. Not built yet: ``geodelta build`` refuses a config that sets it."""

    start: SeriesDatetime = Field(description="Start of the first window, UTC")
    end: SeriesDatetime = Field(description="End of the last window (exclusive), UTC")
    step: Literal["year", "season", "month"] = Field(
        default="year", description="One window per calendar year, season (3 months) or month"
    )
    window_days: int | None = Field(
        default=None,
        ge=1,
        description="Length of each window from its anchor (None = up to the next window); "
        "shorter than the step leaves gaps, longer would overlap and is rejected",
    )
    min_dates: int = Field(
        default=MIN_SERIES_DATES,
        ge=MIN_SERIES_DATES,
        description="Fewest acceptable dates for a sequence (else pair:too_few_dates)",
    )
    min_clear_fraction: float = Field(
        default=0.95, ge=0, le=1, description="Pixel-level clear fraction over the cell, per date"
    )

    @model_validator(mode="after")
    def _room_for_the_dates(self) -> SeriesConfig:
        if self.start >= self.end:
            raise ValueError(
                f"time.series must have start < end (got {self.start.date().isoformat()} .. "
                f"{self.end.date().isoformat()})"
            )
        anchors = _anchors(self)
        if self.window_days is not None:
            gaps = [(b - a).days for a, b in itertools.pairwise(anchors)]
            if gaps and self.window_days > min(gaps):
                raise ValueError(
                    f"time.series.window_days ({self.window_days}) is longer than the shortest "
                    f"{self.step} step ({min(gaps)} days): the windows would overlap; lower "
                    "window_days or use a longer step"
                )
        if len(anchors) < self.min_dates:
            raise ValueError(
                f"time.series {self.start.date().isoformat()} .. {self.end.date().isoformat()} "
                f"by {self.step} has {len(anchors)} window(s), fewer than min_dates "
                f"({self.min_dates}): no room for {self.min_dates} dates; widen start .. end, "
                "use a shorter step or lower min_dates (>= 3)"
            )
        return self


def _anchors(spec: SeriesConfig) -> list[datetime]:
    months = STEP_MONTHS[spec.step]
    anchors: list[datetime] = []
    while (a := _add_months(spec.start, months * len(anchors))) < spec.end:
        anchors.append(a)
    return anchors


def series_windows(spec: SeriesConfig) -> tuple[SeriesWindow, ...]:
    """The windows of a series spec, in time order, disjoint.

    Args:
        spec: the ``time.series`` section (validated: start < end, no overlap).

    Returns:
        One window per step from ``spec.start``; each ends at the next anchor, or
        ``window_days`` after its own, whichever is first, and never after ``spec.end``.
    """
    anchors = _anchors(spec)
    nexts = [*anchors[1:], spec.end]
    out = []
    for i, (a, nxt) in enumerate(zip(anchors, nexts, strict=True)):
        end = nxt if spec.window_days is None else min(nxt, a + timedelta(days=spec.window_days))
        out.append(SeriesWindow(index=i, start=a, end=min(end, spec.end)))
    return tuple(out)


class SeriesDate(Record):
    """One date of a sequence: the clearest acceptable scene of its window."""

    window: int = Field(ge=0, description="Index of the window (SeriesWindow.index)")
    item_id: str = Field(description="STAC item id of the scene")
    datetime: UTCDatetime = Field(description="Acquisition time (UTC)")
    clear_fraction: float = Field(
        ge=0, le=1, description="Pixel-level clear fraction of the scene over the cell"
    )


class SeriesSelection(Record):
    """The dates chosen for a cell's sequence, chronological (one per window at most)."""

    cell_id: str = Field(description="Grid cell id")
    dates: tuple[SeriesDate, ...] = Field(description="Chosen dates, in time order")
    empty_windows: tuple[int, ...] = Field(
        default=(), description="Windows without an acceptable date (skipped, not filled)"
    )
