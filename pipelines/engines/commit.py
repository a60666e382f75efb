"""Committing outcomes to the staging area, and the per-stage counters every engine keeps.

Every engine ends the same way for each cell: :func:`commit` puts the finished sample (or the
quarantine record) into the staging area, samples first, then the cell's completion marker,
so a killed run resumes where it stopped. :class:`StageCounts` counts what each stage passed
and quarantined: the in-process engine counts each committed outcome, the Beam engines keep the
same counts as Beam metrics under :data:`COUNTER_NAMESPACE` with the names
:func:`counter_name` gives (the build's stage timings are the API's).

This module imports no engine: the engines import it, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.stages.worker import Outcome
from geodelta.schemas import QuarantineRecord

__all__ = ["COUNTER_NAMESPACE", "VERDICTS", "StageCounts", "Verdict", "commit", "counter_name"]

#: Namespace of the Beam metrics the engines keep (``<stage>.ok``, ``<stage>.quarantined``).
COUNTER_NAMESPACE = "geodelta"

Verdict = Literal["ok", "quarantined"]
#: Every verdict a stage gives a record.
VERDICTS: tuple[Verdict, ...] = ("ok", "quarantined")


def counter_name(stage: str, verdict: Verdict) -> str:
    """The metric name of a stage's passed (``ok``) or ``quarantined`` records."""
    return f"{stage}.{verdict}"


def commit(staging: Staging, outcome: Outcome) -> None:
    """Put a finished sample (or a quarantine record) into the staging area, then mark its cell."""
    if isinstance(outcome, QuarantineRecord):
        staging.mark_cell(outcome.cell_id, keys=[], quarantine=[outcome])
        return
    staging.put_sample(outcome.key, outcome.members)
    digest = outcome.decode_digest
    staging.mark_cell(
        outcome.cell_id,
        keys=[outcome.key],
        quarantine=[],
        decoded=None if digest is None else {outcome.key: digest},
    )


@dataclass
class StageCounts:
    """Records each stage passed and quarantined, in stage order."""

    ok: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)

    def add(self, stage: str, verdict: Verdict, n: int = 1) -> None:
        """Count ``n`` records of ``stage``."""
        self.ok.setdefault(stage, 0)
        self.quarantined.setdefault(stage, 0)
        (self.ok if verdict == "ok" else self.quarantined)[stage] += n

    def add_outcome(self, stages: Sequence[str], outcome: Outcome) -> None:
        """Count one cell's outcome: every stage before the one that quarantined it passed it."""
        last = outcome.stage if isinstance(outcome, QuarantineRecord) else None
        for stage in stages:
            if stage == last:
                self.add(stage, "quarantined")
                return
            self.add(stage, "ok")

    def rows(self) -> list[tuple[str, int, int]]:
        """(stage, passed, quarantined) per stage, in the order the stages were first counted."""
        return [(s, self.ok.get(s, 0), self.quarantined.get(s, 0)) for s in self.ok]
