"""The in-process engine: every stage for every cell, one after the other, in this process.

A plain loop (debugging, tiny builds, one mapped Airflow task): each block expanded into its
cells (:func:`~geodelta.pipelines.stages.blocks.cells_of`), each cell through
:meth:`~geodelta.pipelines.stages.worker.Worker.process_cell`, committed to the staging area as
soon as it is done (:func:`~geodelta.pipelines.engines.commit.commit`) and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from geodelta.pipelines.engines.breaker import Breaker
from geodelta.pipelines.engines.commit import StageCounts, commit
from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.stages.blocks import Element, cells_of
from geodelta.pipelines.stages.worker import Worker
from geodelta.schemas import BuildConfig

ProgressFn = Callable[[int], None]


def run_inprocess(
    jobs: Iterable[Element],
    cfg: BuildConfig,
    staging_root: str | Path,
    *,
    code_version: str,
    progress: ProgressFn | None = None,
) -> StageCounts:
    """Run every cell of ``jobs`` (blocks or single cells) here and commit each; returns what
    each stage passed and quarantined.

    The loop stops when the circuit breaker trips (:mod:`~geodelta.pipelines.engines.breaker`).
    """
    worker = Worker(cfg, code_version=code_version)
    stages = [stage for stage, _ in worker.steps()]
    staging = Staging(staging_root)
    counts = StageCounts()
    breaker = Breaker(staging, cfg.runner.breaker_cells)
    for element in jobs:
        for job in cells_of(cfg, element):
            outcome = worker.process_cell(job)
            commit(staging, outcome)
            counts.add_outcome(stages, outcome)
            if progress is not None:
                progress(1)
            if breaker.after(outcome):
                return counts
    return counts
