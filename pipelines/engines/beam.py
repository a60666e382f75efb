"""The Beam engine: each stage of :class:`~geodelta.pipelines.stages.worker.Worker` as a ParDo.

Thin on purpose: a DoFn makes its worker once (``setup``), runs one stage function and routes
quarantine records to a tagged output; a commit transform on each of those outputs (and on the
finished samples) writes every outcome to the staging area as soon as it exists
(:func:`~geodelta.pipelines.engines.commit.commit`). The default engine is Beam's Python
FnApiRunner (multi-processing, :func:`run_beam`), chosen explicitly so nothing tries to
download a runner binary.

The same stages and commit run on any runner the pass-through pipeline options name
(:func:`run_beam_options`: Dataflow, Flink, Spark...) and on Beam's DaskRunner
(:mod:`geodelta.pipelines.engines.dask`), where the pipeline is laid out as one chain (see
:func:`build_pipeline`'s ``single_chain``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from geodelta.pipelines.engines.breaker import Breaker, is_tripped
from geodelta.pipelines.engines.commit import (
    COUNTER_NAMESPACE,
    VERDICTS,
    StageCounts,
    commit,
    counter_name,
)
from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.stages.blocks import Element, cells_of
from geodelta.pipelines.stages.worker import Worker, guarded
from geodelta.pipelines.verbosity import quiet_libraries
from geodelta.schemas import BuildConfig, QuarantineRecord, TileJob
from geodelta.schemas.records import QuarantineStage

QUARANTINE = "quarantine"


class StageFn(beam.DoFn):
    """One stage of the worker as a DoFn; failures go to the ``quarantine`` output."""

    def __init__(
        self,
        stage: QuarantineStage,
        cfg: BuildConfig,
        code_version: str,
        *,
        single_chain: bool = False,
    ) -> None:
        super().__init__()
        self.stage = stage
        self.cfg = cfg
        self.code_version = code_version
        self.single_chain = single_chain

    def setup(self) -> None:
        self.worker = Worker(self.cfg, code_version=self.code_version)
        self.fn = dict(self.worker.steps())[self.stage]
        counter = beam.metrics.Metrics.counter
        self.passed = counter(COUNTER_NAMESPACE, counter_name(self.stage, "ok"))
        self.dropped = counter(COUNTER_NAMESPACE, counter_name(self.stage, "quarantined"))

    def process(self, record: Any) -> Iterator[Any]:
        if isinstance(record, QuarantineRecord):  # single chain: an earlier stage dropped it
            yield record
            return
        out = guarded(self.stage, self.fn, record)
        if isinstance(out, QuarantineRecord):
            self.dropped.inc()
            yield out if self.single_chain else beam.pvalue.TaggedOutput(QUARANTINE, out)
        else:
            self.passed.inc()
            yield out


class CommitFn(beam.DoFn):
    """Writes each outcome to the staging area (samples, then the cell marker), then asks the
    circuit breaker (:mod:`~geodelta.pipelines.engines.breaker`), which trips when the first
    ``breaker_cells`` cells were all quarantined for the same reason."""

    def __init__(self, staging_root: str, breaker_cells: int = 0) -> None:
        super().__init__()
        self.staging_root = staging_root
        self.breaker_cells = breaker_cells

    def setup(self) -> None:
        self.staging = Staging(self.staging_root)
        self.breaker = Breaker(self.staging, self.breaker_cells)

    def process(self, outcome: Any) -> Iterator[str]:
        commit(self.staging, outcome)
        self.breaker.after(outcome)
        yield outcome.cell_id


def _expand(element: Element, cfg: BuildConfig) -> list[TileJob]:
    """The cells of a plan block (or the one cell of a job), made on the worker."""
    return cells_of(cfg, element)


def _untripped(job: TileJob, staging_root: str) -> bool:
    """Keep a cell unless the circuit breaker has tripped (then every cell not yet started is
    dropped, and the pipeline ends quickly; ``--resume`` runs them after the fix)."""
    return not is_tripped(staging_root)


#: The worker processes' command (``runner.mode: multi_processing``): Beam's harness behind
#: :mod:`geodelta.pipelines.engines.beam_worker`, which keeps its start-up logging quiet.
WORKER_MODULE = "geodelta.pipelines.engines.beam_worker"


def worker_command() -> str:
    """The shell command the FnApiRunner starts each worker process with."""
    import shlex
    import sys

    return f"{shlex.quote(sys.executable)} -m {WORKER_MODULE}"


def pipeline_options(cfg: BuildConfig) -> PipelineOptions:
    """FnApiRunner options from the ``runner`` section (``runner.options`` added to them).

    ``multi_processing`` is run as Beam runs it (``direct_num_workers`` subprocess workers),
    with :func:`worker_command` as the workers' command: the runner is given that environment
    (:func:`fn_api_runner`) and told ``in_memory`` so that it keeps it instead of its own
    ``sdk_worker_main`` command line.
    """
    mode = "in_memory" if cfg.runner.mode == "multi_processing" else cfg.runner.mode
    return PipelineOptions(
        list(cfg.runner.options),
        direct_num_workers=cfg.runner.workers,
        direct_running_mode=mode,
        default_sdk_harness_log_level="WARNING",
    )


def fn_api_runner(cfg: BuildConfig) -> Any:
    """Beam's FnApiRunner for the ``runner`` section (see :func:`pipeline_options`)."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    if cfg.runner.mode != "multi_processing":
        return FnApiRunner()
    env = SubprocessSDKEnvironment.from_command_string(command_string=worker_command())
    return FnApiRunner(default_environment=env)


def build_pipeline(
    p: beam.Pipeline,
    jobs: Sequence[Element],
    cfg: BuildConfig,
    staging_root: str | Path,
    code_version: str,
    *,
    single_chain: bool = False,
) -> None:
    """Add the stage transforms to ``p``.

    Every output (each stage's quarantine, the finished samples) is committed by its own
    ``CommitFn`` rather than through one ``Flatten``: the FnApiRunner cannot fuse across a
    Flatten, so a single commit after it ran only once every cell had passed every stage, with
    all encoded samples held by the runner (3 GB peak RSS for 761 samples) and nothing in the
    staging area to resume from until the end. Consumed directly, the commits fuse into the
    stage chain: each cell is committed as soon as it is done.

    With ``single_chain`` the same stage DoFns form one chain instead: a stage emits its
    quarantine records on its main output and the later stages pass them through untouched,
    so one ``CommitFn`` at the end sees every outcome. Beam's DaskRunner (2.77) needs this: it
    computes only the last transform applied (other branches never run) and puts a ParDo's
    tagged outputs into its main output (the next stage would receive quarantine records).

    The elements are plan blocks (or single cells' jobs), spread over the workers by a
    Reshuffle and expanded into their cells there (``expand``): the cells of a block then pass
    the stages one after the other on one worker, where the pair stage's block search serves
    them all (:mod:`~geodelta.pipelines.stages.block_search`).

    A filter before the first stage drops every cell once the circuit breaker has tripped
    (:func:`~geodelta.pipelines.engines.breaker.is_tripped`: a file in the staging area, written
    by the ``CommitFn`` that saw the first ``runner.breaker_cells`` cells all fail alike).
    """
    root = str(staging_root)
    records = (
        p
        | "cells" >> beam.Create(list(jobs))
        | "spread" >> beam.Reshuffle()
        | "expand" >> beam.FlatMap(_expand, cfg)
        | "breaker" >> beam.Filter(_untripped, root)
    )
    trips = cfg.runner.breaker_cells
    for stage, _ in Worker(cfg, code_version=code_version).steps():
        fn = StageFn(stage, cfg, code_version, single_chain=single_chain)
        if single_chain:
            records = records | stage >> beam.ParDo(fn)
            continue
        results = records | stage >> beam.ParDo(fn).with_outputs(QUARANTINE, main="ok")
        records = results.ok
        _ = results[QUARANTINE] | f"commit {stage} quarantine" >> beam.ParDo(CommitFn(root, trips))
    _ = records | "commit" >> beam.ParDo(CommitFn(root, trips))


#: Thread pools of numeric libraries, pinned to one thread in worker processes.
WORKER_THREAD_ENV: tuple[str, ...] = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


@contextmanager
def worker_environment(cfg: BuildConfig) -> Iterator[dict[str, str]]:
    """Environment the worker processes start with (they inherit this process's).

    In ``multi_processing`` mode every worker is a process meant to keep one core busy, so the
    numeric libraries' own thread pools (OpenBLAS under numpy's matrix products) are pinned to
    one thread, as Dask's nanny does for its workers: with one BLAS thread per core already
    taken by another worker, the co-registration's matrix products ran 3-6x slower (threads
    waiting on each other). A variable the user set is left alone. The previous environment is
    restored on exit.

    Yields:
        The variables that were set.
    """
    added: dict[str, str] = {}
    if cfg.runner.mode == "multi_processing":
        added = {name: "1" for name in WORKER_THREAD_ENV if name not in os.environ}
    os.environ.update(added)
    try:
        yield added
    finally:
        for name in added:
            os.environ.pop(name, None)


def stage_counts(result: Any, cfg: BuildConfig) -> StageCounts:
    """The per-stage counters of a finished pipeline (empty where the runner keeps no metrics)."""
    from apache_beam.metrics.metric import MetricsFilter

    counts = StageCounts()
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE))
    except (AttributeError, NotImplementedError):  # e.g. the DaskRunner's result
        return counts
    totals: dict[str, int] = {}
    for c in found.get("counters", []):
        n = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + int(n or 0)
    for stage, _ in Worker(cfg, code_version="").steps():
        for verdict in VERDICTS:
            n = totals.get(counter_name(stage, verdict), 0)
            if n:
                counts.add(stage, verdict, n)
    return counts


def run_beam(
    jobs: Sequence[Element], cfg: BuildConfig, staging_root: str | Path, *, code_version: str
) -> StageCounts:
    """Run the pipeline on Beam's FnApiRunner, wait for it; returns the per-stage counters."""
    # Beam's driver logs every worker start at INFO; geodelta's own progress says what matters.
    quiet_libraries()
    p = beam.Pipeline(runner=fn_api_runner(cfg), options=pipeline_options(cfg))
    build_pipeline(p, jobs, cfg, staging_root, code_version)
    with worker_environment(cfg):  # workers start inside run()
        result = p.run()
        result.wait_until_finish()
    return stage_counts(result, cfg)


def run_beam_options(
    jobs: Sequence[Element], cfg: BuildConfig, staging_root: str | Path, *, code_version: str
) -> StageCounts:
    """Run the pipeline on the runner ``runner.options`` names (``--runner=...``), and wait.

    The options reach :class:`PipelineOptions` unchanged, so any engine Beam supports runs the
    same pipeline with no code change (Dataflow, Flink, Spark...). Its workers need geodelta
    installed and must see ``staging_root`` and the catalog at the same paths.

    Returns:
        The per-stage counters, where the runner reports metrics (else empty).
    """
    opts = PipelineOptions(list(cfg.runner.options))
    runner = opts.view_as(StandardOptions).runner or ""
    p = beam.Pipeline(options=opts)
    build_pipeline(p, jobs, cfg, staging_root, code_version, single_chain="dask" in runner.lower())
    result = p.run()
    result.wait_until_finish()
    return stage_counts(result, cfg)
