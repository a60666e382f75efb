"""Executors: chain the stages of :mod:`geodelta.pipelines.stages.worker` over a list of cells.

``inprocess`` is a plain loop (debugging, tiny builds); ``direct`` is the Beam pipeline of
:mod:`geodelta.pipelines.engines.beam` on Beam's Python FnApiRunner; ``dask`` is the same
pipeline on Beam's DaskRunner (a LocalCluster or an existing scheduler); ``beam`` runs it on
whatever runner the pass-through options name (``--runner=DataflowRunner``, ``FlinkRunner``,
``SparkRunner``...). All commit every outcome to the staging area (samples first, then the
cell's completion marker), so a killed run resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from geodelta.errors import BuildError
from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.stages.worker import Outcome, Worker
from geodelta.schemas import BuildConfig, QuarantineRecord, TileJob

ProgressFn = Callable[[int], None]


class RunnerError(BuildError):
    """A ``runner`` section that cannot run; names the key or option to change."""


def _option_value(options: Sequence[str], name: str) -> str | None:
    """The value of ``--name=V`` or ``--name V`` in ``options`` (the last one wins)."""
    value = None
    for i, opt in enumerate(options):
        if opt.startswith(f"--{name}="):
            value = opt.split("=", 1)[1]
        elif opt == f"--{name}" and i + 1 < len(options):
            value = options[i + 1]
    return value


def check_runner(cfg: BuildConfig) -> None:
    """Refuse a ``runner`` section that cannot run, before any work is done.

    Raises:
        RunnerError: ``runner.name`` is ``beam`` without a ``--runner`` option, or the options
            name another runner than ``runner.name`` runs.
    """
    r = cfg.runner
    named = _option_value(r.options, "runner")
    if r.name == "beam" and not named:
        raise RunnerError(
            "runner.name is 'beam' but runner.options names no runner; add e.g. "
            "'--runner=DataflowRunner' (or pass it after `--` on the command line)"
        )
    if r.name in ("direct", "dask", "inprocess") and named:
        raise RunnerError(
            f"runner.options names --runner={named} but runner.name is {r.name!r}, which picks "
            "its own; set runner.name to 'beam' (geodelta build --runner beam -- --runner=...)"
        )
    if r.name == "inprocess" and r.options:
        raise RunnerError("runner.options are Beam pipeline options; runner 'inprocess' has none")


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
    check_runner(cfg)
    from geodelta.pipelines.engines import beam as beam_adapter

    run = {
        "direct": beam_adapter.run_beam,
        "dask": beam_adapter.run_dask,
        "beam": beam_adapter.run_beam_options,
    }[cfg.runner.name]
    run(jobs, cfg, staging_root, code_version=code_version)
