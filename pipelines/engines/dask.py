"""The Dask engine: the Beam pipeline of :mod:`geodelta.pipelines.engines.beam` on Beam's
DaskRunner, on a ``distributed.LocalCluster`` started here or on an existing scheduler.

On Dask the pipeline is laid out as one chain (:func:`~geodelta.pipelines.engines.beam.
build_pipeline` with ``single_chain``): Beam's DaskRunner computes only the last transform and
puts a ParDo's tagged outputs into its main output. Partitions are sized here
(:func:`dask_partitions`) so a worker's memory stays bounded and every worker gets work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from geodelta.pipelines.engines.beam import build_pipeline
from geodelta.pipelines.engines.commit import StageCounts
from geodelta.pipelines.stages.blocks import Element, blocks_cells
from geodelta.schemas import BuildConfig

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
    jobs: Sequence[Element], cfg: BuildConfig, staging_root: str | Path, *, code_version: str
) -> StageCounts:
    """Run the pipeline on Beam's DaskRunner and wait for it.

    The scheduler is ``runner.dask_address`` (or a ``--dask_client_address`` /
    ``--dask_scheduler_file`` in ``runner.options``); without one, a ``distributed.LocalCluster``
    of ``runner.workers`` worker processes (one thread each) is started here and closed after
    the run. Its workers are spawned processes: a script that calls this must do so under
    ``if __name__ == "__main__":``. Dask's nanny starts each worker with one BLAS/OpenMP
    thread, as :func:`~geodelta.pipelines.engines.beam.worker_environment` does for the
    FnApiRunner.

    Every worker must reach ``staging_root``: a LocalCluster shares this machine's disk; the
    workers of a cluster at an address reach it by URL (``output.staging``: ``s3://``,
    ``gs://``..., or ``file://`` on a shared mount), and the catalog too (``catalog.url``),
    which :func:`~geodelta.pipelines.engines.run.check_remote` demands before any work, with
    a scheduler that answers. A task that Dask runs again (a worker that died, up to
    ``distributed.scheduler.allowed-failures`` times) re-commits the same cells: commits are
    idempotent, so the staging area and the release are the same (``tests/test_cluster.py``
    kills a worker mid-build).

    Returns:
        No counts: Beam's DaskRunner (2.77) keeps no metrics (an empty
        :class:`~geodelta.pipelines.engines.commit.StageCounts`).
    """
    import logging

    from apache_beam.runners.dask.dask_runner import DaskRunner

    from geodelta.pipelines.verbosity import is_verbose, quiet_libraries

    quiet_libraries()
    address = cfg.runner.dask_address

    def run(addr: str | None) -> None:
        # partitions sized by cells; a partition holds at least one element (a plan block)
        opts = dask_pipeline_options(cfg, blocks_cells(jobs), addr)
        p = beam.Pipeline(runner=DaskRunner(), options=opts)
        build_pipeline(p, jobs, cfg, staging_root, code_version, single_chain=True)
        result: Any = p.run()  # a DaskRunnerResult
        try:
            result.wait_until_finish()
        finally:
            result.client.close()  # the runner's own client; it never closes it

    if address is not None or _names_a_scheduler(cfg.runner.options):
        run(address)
        return StageCounts()
    from distributed import LocalCluster

    # Processes, not threads: with in-process workers Beam 2.77's DaskRunner shares each
    # ParDo's output list between the tasks of a stage, so every stage re-sends the outputs
    # of earlier partitions (a 20-cell test ran each cell up to 7 times).
    with LocalCluster(
        n_workers=cfg.runner.workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.INFO if is_verbose() else logging.ERROR,
    ) as cluster:
        run(cluster.scheduler_address)
    return StageCounts()
