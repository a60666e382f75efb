"""Executors: chain the stages of :mod:`geodelta.pipelines.stages` over a list of cells.

``inprocess`` is a plain loop (debugging, tiny builds); ``direct`` is the Beam pipeline of
:mod:`geodelta.pipelines.beam_adapter` on Beam's Python FnApiRunner. Both commit every outcome
to the staging area (samples first, then the cell's completion marker), so a killed run resumes
where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from geodelta.pipelines.stages import Outcome, Worker
from geodelta.pipelines.staging import Staging
from geodelta.schemas import BuildConfig, QuarantineRecord, TileJob

ProgressFn = Callable[[int], None]


def commit(staging: Staging, outcome: Outcome) -> None:
    """Put a finished sample (or a quarantine record) into the staging area, then mark its cell."""
    if isinstance(outcome, QuarantineRecord):
        staging.mark_cell(outcome.cell_id, keys=[], quarantine=[outcome])
        return
    staging.put_sample(outcome.key, outcome.members)
    staging.mark_cell(outcome.cell_id, keys=[outcome.key], quarantine=[])


def run_inprocess(
    jobs: Sequence[TileJob],
    cfg: BuildConfig,
    staging_root: Path,
    *,
    code_version: str,
    progress: ProgressFn | None = None,
) -> None:
    """Every stage for every cell, one after the other, in this process."""
    worker = Worker(cfg, code_version=code_version)
    staging = Staging(staging_root)
    for job in jobs:
        commit(staging, worker.process_cell(job))
        if progress is not None:
            progress(1)


def run_jobs(
    jobs: Sequence[TileJob],
    cfg: BuildConfig,
    staging_root: Path,
    *,
    code_version: str,
    progress: ProgressFn | None = None,
) -> None:
    """Run the configured runner over ``jobs``."""
    if not jobs:
        return
    if cfg.runner.name == "inprocess":
        run_inprocess(jobs, cfg, staging_root, code_version=code_version, progress=progress)
        return
    from geodelta.pipelines.beam_adapter import run_beam

    run_beam(jobs, cfg, staging_root, code_version=code_version)
