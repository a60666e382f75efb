"""Choosing the engine: :func:`check_runner` refuses a ``runner`` section that cannot run, and
:func:`run_cells` runs the stages over a list of cells on the engine ``runner.name`` names.

``inprocess`` is a plain loop (:mod:`~geodelta.pipelines.engines.inprocess`: debugging, tiny
builds); ``direct`` is the Beam pipeline of :mod:`~geodelta.pipelines.engines.beam` on Beam's
Python FnApiRunner; ``dask`` is the same pipeline on Beam's DaskRunner
(:mod:`~geodelta.pipelines.engines.dask`: a LocalCluster or an existing scheduler); ``beam``
runs it on whatever runner the pass-through options name (``--runner=DataflowRunner``,
``FlinkRunner``, ``SparkRunner``...). All commit every outcome to the staging area (samples
first, then the cell's completion marker, :mod:`~geodelta.pipelines.engines.commit`), so a
killed run resumes where it stopped, and all stop early, with the reason, when the first cells
all fail alike (the circuit breaker, :mod:`~geodelta.pipelines.engines.breaker`).

The engines are imported here lazily, by name (Beam takes seconds to import); none of them
imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from geodelta.errors import BuildError
from geodelta.pipelines.engines.breaker import Breaker, BreakerError, breaker_message
from geodelta.pipelines.engines.commit import StageCounts
from geodelta.pipelines.release.staging import Staging
from geodelta.schemas import BuildConfig, TileJob

__all__ = ["BreakerError", "ProgressFn", "RunnerError", "check_runner", "run_cells"]

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


def run_cells(
    jobs: Sequence[TileJob],
    cfg: BuildConfig,
    staging_root: Path,
    *,
    code_version: str,
    progress: ProgressFn | None = None,
    retry: str = "--resume",
) -> StageCounts:
    """Run the stages over ``jobs`` on the configured engine, committing every outcome.

    Args:
        jobs: the cells to process (none: nothing runs).
        cfg: the build config (its ``runner`` section picks the engine).
        staging_root: the staging area the outcomes are committed to.
        code_version: geodelta version (recorded in every sample).
        progress: called with 1 per finished cell (the in-process engine only; the Beam
            engines report nothing back while they run).
        retry: the build option that runs the stopped cells again (``--resume``, or
            ``--overwrite`` for a build that replaces a release), named in a breaker message.

    Returns:
        What each stage passed and quarantined, where the engine reports it.

    Raises:
        RunnerError: the ``runner`` section cannot run.
        BreakerError: the first ``runner.breaker_cells`` finished cells were all quarantined
            for the same reason (:mod:`~geodelta.pipelines.engines.breaker`); the run stopped,
            those cells' markers are forgotten and the rest of the staging area is kept.
    """
    check_runner(cfg)
    if not jobs:
        return StageCounts()
    breaker = Breaker(Staging(staging_root), cfg.runner.breaker_cells)
    breaker.reset()  # a trip left by a run that died before it was reported
    try:
        counts = _run_engine(jobs, cfg, staging_root, code_version=code_version, progress=progress)
    except Exception:
        trip = breaker.tripped()
        if trip is None:
            raise
    else:
        trip = breaker.tripped()
        if trip is None:
            return counts
    breaker.reset(trip)
    raise BreakerError(breaker_message(trip, cfg.runner.breaker_cells, retry)) from None


def _run_engine(
    jobs: Sequence[TileJob],
    cfg: BuildConfig,
    staging_root: Path,
    *,
    code_version: str,
    progress: ProgressFn | None,
) -> StageCounts:
    name = cfg.runner.name
    if name == "inprocess":
        from geodelta.pipelines.engines.inprocess import run_inprocess

        return run_inprocess(jobs, cfg, staging_root, code_version=code_version, progress=progress)
    if name == "dask":
        from geodelta.pipelines.engines.dask import run_dask

        return run_dask(jobs, cfg, staging_root, code_version=code_version)
    from geodelta.pipelines.engines.beam import run_beam, run_beam_options

    run = {"direct": run_beam, "beam": run_beam_options}.get(name)
    if run is None:
        raise RunnerError(f"runner.name {name!r} is not an engine (direct, inprocess, dask, beam)")
    return run(jobs, cfg, staging_root, code_version=code_version)
