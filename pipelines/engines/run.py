"""Choosing the engine: :func:`check_runner` refuses a ``runner`` section that cannot run, and
:func:`run_cells` runs the stages over the plan's blocks (or single cells) on the engine
``runner.name`` names.

The engines distribute plan blocks (:class:`~geodelta.pipelines.stages.blocks.CellBlock`: up to
``runner.block_cells`` squared cells of one zone's grid), one element per block, and expand
each into its cells on the worker (:func:`~geodelta.pipelines.stages.blocks.cells_of`), so a
driver never holds one element per cell; a :class:`~geodelta.schemas.TileJob` is accepted as a
one-cell element.

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
from typing import TYPE_CHECKING

from geodelta.errors import BuildError
from geodelta.pipelines.engines.breaker import Breaker, BreakerError, breaker_message
from geodelta.pipelines.engines.commit import StageCounts
from geodelta.pipelines.release.staging import Staging
from geodelta.schemas import BuildConfig

if TYPE_CHECKING:
    from geodelta.pipelines.stages.blocks import Element

__all__ = [
    "BreakerError",
    "ProgressFn",
    "RunnerError",
    "check_remote",
    "check_runner",
    "remote_engine",
    "run_cells",
    "worker_config",
]

ProgressFn = Callable[[int], None]

#: The parallel engines get at least this many elements per worker: fewer blocks are cut into
#: parts (:func:`~geodelta.pipelines.stages.blocks.spread`).
SPREAD_PER_WORKER = 4


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


#: Beam runners whose workers run on this machine (``--runner=`` names, lower case).
_LOCAL_BEAM_RUNNERS = frozenset(
    {
        "directrunner",
        "switchingdirectrunner",
        "bundlebaseddirectrunner",
        "fnapirunner",
        "prismrunner",
    }
)
#: Seconds :func:`check_remote` waits for a Dask scheduler to accept a connection.
SCHEDULER_CONNECT_TIMEOUT_S = 10.0


def _dask_address(options: Sequence[str], address: str | None) -> str | None:
    return address or _option_value(options, "dask_client_address")


def remote_engine(cfg: BuildConfig) -> str | None:
    """The engine that runs the cells on other machines, in words (None: this machine runs them).

    Remote: ``dask`` at an address (``runner.dask_address``, ``--dask_client_address``,
    ``--dask_scheduler_file``); ``beam`` on Dataflow, on a Flink master or Spark master that is
    not the embedded ``[auto]``/``[local]``/``local[N]`` one, or on a job server
    (``PortableRunner`` without ``--job_endpoint=embed``).
    """
    r = cfg.runner
    named = _option_value(r.options, "runner") or ""
    kind = named.lower().rsplit(".", 1)[-1]
    if r.name == "dask" or kind == "daskrunner":
        address = _dask_address(r.options, r.dask_address if r.name == "dask" else None)
        if address:
            return f"the Dask cluster at {address}"
        if _option_value(r.options, "dask_scheduler_file"):
            return "the Dask cluster of --dask_scheduler_file"
        return None
    if r.name != "beam" or not kind or kind in _LOCAL_BEAM_RUNNERS:
        return None
    if kind == "flinkrunner" and _option_value(r.options, "flink_master") in (
        None,
        "[auto]",
        "[local]",
    ):
        return None
    if kind == "sparkrunner" and (
        _option_value(r.options, "spark_master_url") or "local"
    ).startswith("local"):
        return None
    if (
        kind == "portablerunner"
        and (_option_value(r.options, "job_endpoint") or "embed") == "embed"
    ):
        return None
    return named


def _check_scheduler(address: str, timeout_s: float) -> None:
    """Refuse a Dask scheduler address nothing answers at (a TCP connection, no Dask)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls", "ws", "wss"):
        return  # ucx://, inproc://...: left to Dask
    try:
        host, port = parts.hostname, parts.port or 8786
    except ValueError:
        host = None
    if not host:
        raise RunnerError(
            f"runner.dask_address {address!r} is not a scheduler address; use e.g. "
            "tcp://HOST:8786 (--dask-address)"
        )
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
    raise RunnerError(
        f"cannot reach the Dask scheduler at {address} ({why}); start the cluster or fix "
        "runner.dask_address (--dask-address)"
    )


def check_remote(cfg: BuildConfig, *, timeout_s: float = SCHEDULER_CONNECT_TIMEOUT_S) -> None:
    """Refuse, before any work, a build whose cells run on other machines (:func:`remote_engine`)
    but would need the driver's disk, and a Dask scheduler nothing answers at.

    The workers of a remote engine see nothing of this machine: the staging area
    (``output.staging``), the catalog (``catalog.url``) and the baseline model
    (``baseline.weights``) must be URLs (``s3://``, ``gs://``, ``https://``...; ``file://``
    for a mount every worker shares). ``output.dir`` may stay local: the release is assembled
    by the driver.

    Raises:
        RunnerError: one line naming the key to change (or the scheduler address).
    """
    engine = remote_engine(cfg)
    if engine is None:
        return
    r = cfg.runner
    address = _dask_address(r.options, r.dask_address if r.name == "dask" else None)
    if address and engine.startswith("the Dask cluster at"):
        _check_scheduler(address, timeout_s)
    staging = cfg.output.staging
    if staging is None or "://" not in staging or staging.startswith("memory://"):
        if staging is None:
            where = "not set (the default: .staging/ in the local folder the release is built in)"
        elif "://" in staging:
            where = f"{staging}, a filesystem in this process's memory"
        else:
            where = f"the local folder {cfg.resolve(staging)}"
        raise RunnerError(
            f"{engine} runs the cells on other machines, but output.staging is {where}; set "
            "output.staging to a URL every worker reaches (s3://..., gs://..., az://..., or "
            "file:///... on a mount they all share)"
        )
    for key, value in (
        ("catalog.url", cfg.catalog.url),
        ("baseline.weights", cfg.baseline.weights),
    ):
        if value is not None and "://" not in value:
            raise RunnerError(
                f"{engine} runs the cells on other machines, but {key} is the local path "
                f"{cfg.resolve(value)}; give a URL every worker reaches (https://..., s3://..., "
                "or file:///... on a mount they all share)"
            )


def worker_config(cfg: BuildConfig) -> BuildConfig:
    """The config a remote engine's job carries (:func:`remote_engine`; others: ``cfg``), without
    the driver's own folders: ``base_dir`` (where the config file lies) and a local
    ``output.dir`` / ``output.work_dir`` (where the driver assembles the release). No worker may
    use them (:func:`check_remote`: every location a worker reads is a URL); none is in the
    config hash, so the samples are the same."""
    if remote_engine(cfg) is None:
        return cfg
    o = cfg.output
    output = o.model_copy(update={"dir": o.dir if "://" in o.dir else ".", "work_dir": None})
    return cfg.model_copy(update={"base_dir": ".", "output": output})


def run_cells(
    jobs: Sequence[Element],
    cfg: BuildConfig,
    staging_root: str | Path,
    *,
    code_version: str,
    progress: ProgressFn | None = None,
    retry: str = "--resume",
) -> StageCounts:
    """Run the stages over the cells of ``jobs`` on the configured engine, committing every
    outcome.

    Args:
        jobs: plan blocks (each expanded into its cells on the worker) or single cells' jobs
            (none: nothing runs).
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
        counts = _run_engine(
            jobs, worker_config(cfg), staging_root, code_version=code_version, progress=progress
        )
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
    jobs: Sequence[Element],
    cfg: BuildConfig,
    staging_root: str | Path,
    *,
    code_version: str,
    progress: ProgressFn | None,
) -> StageCounts:
    name = cfg.runner.name
    if name == "inprocess":
        from geodelta.pipelines.engines.inprocess import run_inprocess

        return run_inprocess(jobs, cfg, staging_root, code_version=code_version, progress=progress)
    from geodelta.pipelines.stages.blocks import spread
    from geodelta.pipelines.verbosity import quiet_libraries

    # before Beam is imported: its import logs a warning on the root logger (any process that
    # calls the API, an Airflow task included, not only the CLI)
    quiet_libraries()
    # a build of a few blocks: cut them, so every worker gets cells
    jobs = spread(jobs, SPREAD_PER_WORKER * cfg.runner.workers)
    if name == "dask":
        from geodelta.pipelines.engines.dask import run_dask

        return run_dask(jobs, cfg, staging_root, code_version=code_version)
    from geodelta.pipelines.engines.beam import run_beam, run_beam_options

    run = {"direct": run_beam, "beam": run_beam_options}.get(name)
    if run is None:
        raise RunnerError(f"runner.name {name!r} is not an engine (direct, inprocess, dask, beam)")
    return run(jobs, cfg, staging_root, code_version=code_version)
