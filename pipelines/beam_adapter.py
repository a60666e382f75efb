"""The Beam adapter: each stage of :class:`~geodelta.pipelines.stages.Worker` as a ParDo.

Thin on purpose: a DoFn makes its worker once (``setup``), runs one stage function and routes
quarantine records to a tagged output; a commit transform on each of those outputs (and on the
finished samples) writes every outcome to the staging area as soon as it exists. The default
engine is Beam's Python FnApiRunner (multi-processing), chosen explicitly so nothing tries to
download a runner binary.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from geodelta.pipelines.stages import Worker, guarded
from geodelta.pipelines.staging import Staging
from geodelta.schemas import BuildConfig, QuarantineRecord, TileJob
from geodelta.schemas.records import QuarantineStage

QUARANTINE = "quarantine"


class StageFn(beam.DoFn):
    """One stage of the worker as a DoFn; failures go to the ``quarantine`` output."""

    def __init__(self, stage: QuarantineStage, cfg: BuildConfig, code_version: str) -> None:
        super().__init__()
        self.stage = stage
        self.cfg = cfg
        self.code_version = code_version

    def setup(self) -> None:
        self.worker = Worker(self.cfg, code_version=self.code_version)
        self.fn = dict(self.worker.steps())[self.stage]
        self.passed = beam.metrics.Metrics.counter("geodelta", f"{self.stage}.ok")
        self.dropped = beam.metrics.Metrics.counter("geodelta", f"{self.stage}.quarantined")

    def process(self, record: Any) -> Iterator[Any]:
        out = guarded(self.stage, self.fn, record)
        if isinstance(out, QuarantineRecord):
            self.dropped.inc()
            yield beam.pvalue.TaggedOutput(QUARANTINE, out)
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
        from geodelta.pipelines.runners import commit

        commit(self.staging, outcome)
        yield outcome.cell_id


def pipeline_options(cfg: BuildConfig) -> PipelineOptions:
    """FnApiRunner options from the ``runner`` section."""
    return PipelineOptions(
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
) -> None:
    """Add the stage transforms to ``p``.

    Every output (each stage's quarantine, the finished samples) is committed by its own
    ``CommitFn`` rather than through one ``Flatten``: the FnApiRunner cannot fuse across a
    Flatten, so a single commit after it ran only once every cell had passed every stage, with
    all encoded samples held by the runner (3 GB peak RSS for 761 samples) and nothing in the
    staging area to resume from until the end. Consumed directly, the commits fuse into the
    stage chain: each cell is committed as soon as it is done.
    """
    records = p | "cells" >> beam.Create(list(jobs)) | "spread" >> beam.Reshuffle()
    root = str(staging_root)
    for stage, _ in Worker(cfg, code_version=code_version).steps():
        results = records | stage >> beam.ParDo(StageFn(stage, cfg, code_version)).with_outputs(
            QUARANTINE, main="ok"
        )
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
