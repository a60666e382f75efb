"""The Beam adapter: each stage of :class:`~geodelta.pipelines.stages.worker.Worker` as a ParDo.

Thin on purpose: a DoFn makes its worker once (``setup``), runs one stage function and routes
quarantine records to a tagged output; a commit transform on each of those outputs (and on the
finished samples) writes every outcome to the staging area as soon as it exists. The default
engine is Beam's Python FnApiRunner (multi-processing), chosen explicitly so nothing tries to
download a runner binary.

The same stages and commit run on Beam's DaskRunner (:func:`run_dask`) and on any runner the
pass-through pipeline options name (:func:`run_beam_options`: Dataflow, Flink, Spark...). On
Dask the pipeline is laid out as one chain (see :func:`build_pipeline`'s ``single_chain``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.stages.worker import Worker, guarded
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
        self.passed = beam.metrics.Metrics.counter("geodelta", f"{self.stage}.ok")
        self.dropped = beam.metrics.Metrics.counter("geodelta", f"{self.stage}.quarantined")

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
    """Writes each outcome to the staging area (samples, then the cell marker)."""

    def __init__(self, staging_root: str) -> None:
        super().__init__()
        self.staging_root = staging_root

    def setup(self) -> None:
        self.staging = Staging(self.staging_root)

    def process(self, outcome: Any) -> Iterator[str]:
        from geodelta.pipelines.engines.runners import commit

        commit(self.staging, outcome)
        yield outcome.cell_id


def pipeline_options(cfg: BuildConfig) -> PipelineOptions:
    """FnApiRunner options from the ``runner`` section (``runner.options`` added to them)."""
    return PipelineOptions(
        list(cfg.runner.options),
        direct_num_workers=cfg.runner.workers,
        direct_running_mode=cfg.runner.mode,
        default_sdk_harness_log_level="WARNING",
    )


def build_pipeline(
    p: beam.Pipeline,
    jobs: Sequence[TileJob],
    cfg: BuildConfig,
    staging_root: Path,
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
    """
    records = p | "cells" >> beam.Create(list(jobs)) | "spread" >> beam.Reshuffle()
    root = str(staging_root)
    for stage, _ in Worker(cfg, code_version=code_version).steps():
        fn = StageFn(stage, cfg, code_version, single_chain=single_chain)
        if single_chain:
            records = records | stage >> beam.ParDo(fn)
            continue
        results = records | stage >> beam.ParDo(fn).with_outputs(QUARANTINE, main="ok")
        records = results.ok
        _ = results[QUARANTINE] | f"commit {stage} quarantine" >> beam.ParDo(CommitFn(root))
    _ = records | "commit" >> beam.ParDo(CommitFn(root))


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


def run_beam(
    jobs: Sequence[TileJob], cfg: BuildConfig, staging_root: Path, *, code_version: str
) -> None:
    """Run the pipeline on Beam's FnApiRunner and wait for it."""
    import logging

    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    # Beam's driver logs every worker start at INFO; geodelta's own progress says what matters.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    p = beam.Pipeline(runner=FnApiRunner(), options=pipeline_options(cfg))
    build_pipeline(p, jobs, cfg, staging_root, code_version)
    with worker_environment(cfg):  # workers start inside run()
        p.run().wait_until_finish()


#: Cells in one Dask partition at most: a partition is one task that runs every stage over its
#: cells, holding that stage's outputs for all of them, so its size bounds a worker's memory.
DASK_CELLS_PER_PARTITION = 8


def dask_partitions(n_jobs: int, workers: int) -> int:
    """Partitions for ``n_jobs`` cells: at least two per worker, at most 8 cells in each."""
    return max(1, math.ceil(n_jobs / DASK_CELLS_PER_PARTITION), min(n_jobs, 2 * workers))


def dask_pipeline_options(cfg: BuildConfig, n_jobs: int, address: str | None) -> PipelineOptions:
    """DaskRunner options: the scheduler, the partitions, then ``runner.options`` as given.

    ``--dask_npartitions`` defaults to :func:`dask_partitions` (Beam's own default is 128 cells
    a partition, i.e. one task, one core, for any build under 128 cells); a
    ``--dask_npartitions`` or ``--dask_partition_size`` in ``runner.options`` wins.
    """
    user = list(cfg.runner.options)
    args: list[str] = []
    if address is not None:
        args += ["--dask_client_address", address]
    if not any(o.startswith(("--dask_npartitions", "--dask_partition_size")) for o in user):
        args += ["--dask_npartitions", str(dask_partitions(n_jobs, cfg.runner.workers))]
    return PipelineOptions([*args, *user])


def _names_a_scheduler(options: Sequence[str]) -> bool:
    return any(o.startswith(("--dask_client_address", "--dask_scheduler_file")) for o in options)


def run_dask(
    jobs: Sequence[TileJob], cfg: BuildConfig, staging_root: Path, *, code_version: str
) -> None:
    """Run the pipeline on Beam's DaskRunner and wait for it.

    The scheduler is ``runner.dask_address`` (or a ``--dask_client_address`` /
    ``--dask_scheduler_file`` in ``runner.options``); without one, a ``distributed.LocalCluster``
    of ``runner.workers`` worker processes (one thread each) is started here and closed after
    the run. Its workers are spawned processes: a script that calls this must do so under
    ``if __name__ == "__main__":``. Dask's nanny starts each worker with one BLAS/OpenMP
    thread, as :func:`worker_environment` does for the FnApiRunner.

    Every worker must see ``staging_root`` at the same path (a LocalCluster does; on a remote
    cluster it must be a shared mount). A task that Dask runs again (a worker that died, up
    to ``distributed.scheduler.allowed-failures`` times) re-commits the same cells: commits
    are idempotent, so the staging area and the release are the same.
    """
    import logging

    from apache_beam.runners.dask.dask_runner import DaskRunner

    for name in ("apache_beam", "distributed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    address = cfg.runner.dask_address

    def run(addr: str | None) -> None:
        p = beam.Pipeline(runner=DaskRunner(), options=dask_pipeline_options(cfg, len(jobs), addr))
        build_pipeline(p, jobs, cfg, staging_root, code_version, single_chain=True)
        result: Any = p.run()  # a DaskRunnerResult
        try:
            result.wait_until_finish()
        finally:
            result.client.close()  # the runner's own client; it never closes it

    if address is not None or _names_a_scheduler(cfg.runner.options):
        run(address)
        return
    from distributed import LocalCluster

    # Processes, not threads: with in-process workers Beam 2.77's DaskRunner shares each
    # ParDo's output list between the tasks of a stage, so every stage re-sends the outputs
    # of earlier partitions (a 20-cell test ran each cell up to 7 times).
    with LocalCluster(
        n_workers=cfg.runner.workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.WARNING,
    ) as cluster:
        run(cluster.scheduler_address)


def run_beam_options(
    jobs: Sequence[TileJob], cfg: BuildConfig, staging_root: Path, *, code_version: str
) -> None:
    """Run the pipeline on the runner ``runner.options`` names (``--runner=...``), and wait.

    The options reach :class:`PipelineOptions` unchanged, so any engine Beam supports runs the
    same pipeline with no code change (Dataflow, Flink, Spark...). Its workers need geodelta
    installed and must see ``staging_root`` and the catalog at the same paths.
    """
    opts = PipelineOptions(list(cfg.runner.options))
    runner = opts.view_as(StandardOptions).runner or ""
    p = beam.Pipeline(options=opts)
    build_pipeline(p, jobs, cfg, staging_root, code_version, single_chain="dask" in runner.lower())
    p.run().wait_until_finish()
