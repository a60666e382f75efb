"""The circuit breaker: a build whose first cells all fail for one reason stops, with that reason.

When the first ``runner.breaker_cells`` finished cells (default 32) were ALL quarantined at the
same stage for the same reason (a broken asset, a wrong collection, missing labels), every other
cell would most likely fail the same way: the build stops and says why
(:class:`BreakerError`, exit 1) instead of grinding through a continent.

The state lives in the staging area, so one design serves every engine: each cell's completion
marker carries its quarantine records, and :meth:`Breaker.check` reads the markers (in cell id
order, stopping at the first cell that produced a sample or failed otherwise). Whoever commits
an outcome (:func:`~geodelta.pipelines.engines.commit.commit`, in the in-process loop or in a
Beam / Dask worker) calls :meth:`Breaker.after` next: once a marker that breaks the pattern has
been seen, the breaker of that process is disarmed for good (nothing more is read); while it is
armed, ``breaker_cells`` matching markers trip it: it writes the trip to ``<staging>/``
:data:`TRIP_FILE` (atomically; one PUT on an object store, where the staging area may live).
The in-process loop stops there; the Beam and Dask pipelines
drop every cell not yet started once the file exists (:func:`is_tripped`, a filter before the
first stage), so they end quickly and quietly (no worker traceback). The engine's caller
(:func:`~geodelta.pipelines.engines.run.run_cells`) then reads the trip (:meth:`Breaker.tripped`),
forgets the tripped cells' markers and the trip (:meth:`Breaker.reset`) and raises
:class:`BreakerError`. The staging area is kept: after fixing the cause,
``geodelta build --resume`` runs the forgotten (and the dropped) cells again and keeps every
sample already made.

"The first N cells" is the first N to finish, in whatever order the engine runs them: the
condition checked is "at least N finished cells, and every finished cell quarantined for the
same (stage, reason)", which holds at the N-th commit exactly when the first N agree. A cell
that produced a sample (or failed for another reason) disarms the breaker for the rest of the
build (a resumed build included).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geodelta.errors import BuildError
from geodelta.pipelines.release.staging import TRIP_FILE, Staging, local_root
from geodelta.schemas import QuarantineRecord

__all__ = ["TRIP_FILE", "Breaker", "BreakerError", "Trip", "breaker_message", "is_tripped"]

#: Where to look first, by the stage that quarantined the cells.
_HINTS: dict[str, str] = {
    "pair": "the catalog (catalog.url), imagery.collection, the time windows (time.t0/t1) and "
    "pairing.* (scenes found and their clear fraction)",
    "load": "the imagery assets (imagery.bands and their files; catalog.signing for remote reads)",
    "coregister": "coregistration.* (band, max_shift_px, max_residual_px; 'inconsistent': "
    "margin_px, tie_agreement_px, min_tie_points)",
    "label": "the labels section (labels.collection, labels.asset) and its files",
    "annotate": "the annotation section (annotation.annotator and its credentials)",
    "validate": "validation.* and the imagery's values (scale/offset in the items' raster:bands)",
}

#: The longest example detail quoted in the message.
_DETAIL_CHARS = 300


class BreakerError(BuildError):
    """The first cells of a build were all quarantined for the same reason; the build stopped."""


def is_tripped(staging_root: str | Path) -> bool:
    """Whether the breaker of the build that uses this staging area (a folder or a URL) has
    tripped."""
    local = local_root(staging_root)
    if local is not None:
        return (local / TRIP_FILE).is_file()
    return Staging(staging_root).has_file(TRIP_FILE)


@dataclass(frozen=True)
class Trip:
    """Why the breaker tripped: the shared reason, how many cells, one example."""

    stage: str
    reason: str
    cells: tuple[str, ...]
    example: QuarantineRecord


def _same_failure(records: list[QuarantineRecord]) -> tuple[str, str] | None:
    reasons = {(r.stage, r.reason) for r in records}
    return next(iter(reasons)) if len(reasons) == 1 else None


class Breaker:
    """The breaker of one build over one staging area.

    Args:
        staging: the staging area the outcomes are committed to.
        cells: ``runner.breaker_cells`` (0: never trips).
    """

    def __init__(self, staging: Staging, cells: int) -> None:
        self.staging = staging
        self.cells = cells
        self.armed = cells > 0

    def check(self) -> Trip | None:
        """The trip, when at least ``cells`` cells are marked and all were quarantined for the
        same (stage, reason); else None (and the breaker is disarmed when a marker breaks the
        pattern: it cannot trip any more)."""
        if not self.armed:
            return None
        shared: tuple[str, str] | None = None
        ids: list[str] = []
        example: QuarantineRecord | None = None
        for cell_id, keys, records in self.staging.cells():
            failure = None if keys else _same_failure(records)
            if failure is None or (shared is not None and failure != shared):
                self.armed = False
                return None
            shared = failure
            ids.append(cell_id)
            example = example or records[0]
        if shared is None or example is None or len(ids) < self.cells:
            return None
        return Trip(stage=shared[0], reason=shared[1], cells=tuple(ids), example=example)

    def after(self, outcome: Any) -> bool:
        """Called after each commit; True when the breaker trips (the trip is then written to
        :data:`TRIP_FILE`). A finished sample disarms the breaker without reading anything."""
        if not self.armed:
            return False
        if not isinstance(outcome, QuarantineRecord):
            self.armed = False
            return False
        trip = self.check()
        if trip is None:
            return False
        record = {
            "stage": trip.stage,
            "reason": trip.reason,
            "cells": list(trip.cells),
            "example": trip.example.model_dump(mode="json"),
        }
        self.staging.put_file(TRIP_FILE, json.dumps(record, sort_keys=True))
        return True

    def tripped(self) -> Trip | None:
        """The trip a worker wrote (None: the breaker has not tripped)."""
        raw = self.staging.get_file(TRIP_FILE)
        if raw is None:
            return None
        data = json.loads(raw)
        example = QuarantineRecord.model_validate(data["example"])
        return Trip(data["stage"], data["reason"], tuple(data["cells"]), example)

    def reset(self, trip: Trip | None = None) -> None:
        """Forget the trip, and the markers of every cell quarantined for its reason (the
        tripped ones and any a parallel worker finished meanwhile), so ``--resume`` runs them
        again; cells with a sample or another reason keep theirs. No trip: only remove a trip
        file left by a run that died, before a new run."""
        if trip is not None:
            shared = (trip.stage, trip.reason)
            self.staging.forget_cells(
                [
                    cell_id
                    for cell_id, keys, records in self.staging.cells()
                    if not keys and _same_failure(records) == shared
                ]
            )
        self.staging.remove_file(TRIP_FILE)


def breaker_message(trip: Trip, cells: int, retry: str = "--resume") -> str:
    """One line: the reason, the count, an example, what to change, and how to go on
    (``retry``: the build option that runs the stopped cells again)."""
    detail = " ".join(trip.example.detail.split())
    if len(detail) > _DETAIL_CHARS:
        detail = detail[: _DETAIL_CHARS - 3] + "..."
    if trip.reason == "read_error":
        hint = (
            "the files it names (restore them or fix their hrefs; catalog.signing for remote reads)"
        )
    else:
        hint = _HINTS.get(trip.stage, "the config section of that stage")
    return (
        f"circuit breaker: the first {len(trip.cells)} cells were all quarantined at stage "
        f"'{trip.stage}' for '{trip.reason}' (e.g. cell {trip.example.cell_id}: {detail}); the "
        f"build stopped. Check {hint}, then re-run with {retry} (the staging area is kept; "
        f"these cells run again). runner.breaker_cells={cells} sets when this trips (0: never)"
    )
