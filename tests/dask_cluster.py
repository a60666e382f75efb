"""A real multi-process Dask cluster for the tests: ``dask scheduler`` and ``dask worker``
processes started from the project's virtual environment, as an operator would start them.

Each worker runs in its own temporary folder (its working directory and ``--local-directory``),
with one thread and no nanny (a worker killed with SIGKILL stays dead: the scheduler must
reschedule its tasks on the other worker, nothing restarts it). Nothing on disk is shared with
the driver but the installed code: the staging area and the catalog reach the workers by URL.

Used by ``tests/test_cluster.py`` (the :func:`dask_cluster` context manager) and by
``benchmarks/bench_scale.py`` (1 vs 2 workers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The ``dask`` command of the virtual environment the tests run in.
DASK_BIN = Path(sys.executable).parent / "dask"
#: Numeric libraries single-threaded in every worker (one worker = one core), as the nanny
#: would set them.
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class ClusterError(RuntimeError):
    """The cluster did not start (the message holds the end of the process's log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Worker:
    """One ``dask worker`` process: its name, folder and log."""

    name: str
    folder: Path
    proc: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.folder / "worker.log"

    def registered(self) -> bool:
        """The worker has registered with the scheduler (its log says so)."""
        try:
            return "Registered to:" in self.log.read_text(errors="replace")
        except OSError:
            return False


@dataclass
class DaskCluster:
    """A scheduler and its workers, each a process of its own."""

    address: str
    root: Path
    env: dict[str, str]
    scheduler: subprocess.Popen[bytes] | None = None
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, name: str) -> Worker:
        """Start one worker (one thread, no nanny) in a fresh folder of its own."""
        folder = self.root / name
        folder.mkdir(parents=True)
        cmd = [
            str(DASK_BIN),
            "worker",
            self.address,
            "--name",
            name,
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--dashboard-address",  # its HTTP server (health, metrics) starts all the same
            "127.0.0.1:0",
            "--local-directory",
            str(folder / "dask-scratch"),
            "--death-timeout",
            "60",
        ]
        with open(folder / "worker.log", "wb") as log:
            proc = subprocess.Popen(
                cmd, cwd=folder, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        worker = Worker(name, folder, proc)
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, timeout_s: float = 120.0) -> None:
        """Wait until every started worker has registered with the scheduler."""
        deadline = time.monotonic() + timeout_s
        for w in self.workers:
            while not w.registered():
                if w.proc.poll() is not None:
                    raise ClusterError(
                        f"dask worker {w.name} exited {w.proc.returncode}:\n{_tail(w.log)}"
                    )
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"dask worker {w.name} not registered after {timeout_s:.0f} s:\n"
                        f"{_tail(w.log)}"
                    )
                time.sleep(0.1)

    def kill_worker(self, index: int = 0) -> int:
        """SIGKILL one worker process (no clean shutdown, no nanny to restart it); its pid."""
        w = self.workers[index]
        os.kill(w.proc.pid, signal.SIGKILL)
        w.proc.wait(timeout=30)
        return w.proc.pid

    def logs(self) -> str:
        """The end of every process's log (for a failing test's message)."""
        parts = [f"--- scheduler\n{_tail(self.root / 'scheduler.log')}"]
        parts += [f"--- {w.name}\n{_tail(w.log)}" for w in self.workers]
        return "\n".join(parts)

    def close(self) -> None:
        """Stop every process (workers first), killing what does not stop in time."""
        procs = [w.proc for w in self.workers]
        if self.scheduler is not None:
            procs.append(self.scheduler)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def _scheduler_up(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def dask_cluster(
    root: Path,
    workers: int = 2,
    *,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 120.0,
) -> Iterator[DaskCluster]:
    """A scheduler on 127.0.0.1 and ``workers`` worker processes, all stopped on exit.

    Args:
        root: an empty folder; the scheduler's log and one folder per worker go there.
        workers: worker processes to start (each one thread).
        env: variables added to this process's environment for every process of the cluster
            (e.g. the object store's endpoint and credentials).
        ready_timeout_s: how long the scheduler and the workers may take to start.
    """
    if not DASK_BIN.exists():
        raise ClusterError(f"{DASK_BIN} is missing: install the project's [all,dev] extras")
    root.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **ONE_THREAD, **(env or {})}
    full_env.pop("PYTHONPATH", None)  # the workers import the installed package, nothing else
    port = free_port()
    cluster = DaskCluster(address=f"tcp://127.0.0.1:{port}", root=root, env=full_env)
    try:
        with open(root / "scheduler.log", "wb") as log:
            cluster.scheduler = subprocess.Popen(
                [
                    str(DASK_BIN),
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-dashboard",
                    "--dashboard-address",  # its HTTP server starts all the same: any port
                    "127.0.0.1:0",
                ],
                cwd=root,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + ready_timeout_s
        while not _scheduler_up(port):
            if cluster.scheduler.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"dask scheduler did not start:\n{cluster.logs()}")
            time.sleep(0.1)
        for i in range(workers):
            cluster.start_worker(f"worker-{i}")
        cluster.wait_for_workers(ready_timeout_s)
        yield cluster
    finally:
        cluster.close()
