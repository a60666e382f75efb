"""The BLAS thread pool while a stage runs: one thread, unless the user chose otherwise.

The stages' matrix products are small (the co-registration's upsampled DFT: 64-256 px
windows, :mod:`.shift_estimation`), far below what a BLAS splits over threads to any gain:
with OpenBLAS's default of one thread per core, its threads spin waiting on each other. The
in-process runner, 2 cores, demo scale 1: 14.6 s of CPU (user) for a 10.7 s build, 9.8 s for
10.5 s with one thread (same bytes). Beam's worker processes are started with
``OPENBLAS_NUM_THREADS=1`` (:func:`~geodelta.pipelines.engines.beam.worker_environment`), but
the in-process runner runs the stages in the caller's process, and a Dask cluster's workers
are whatever their owner started; so every stage runs under :func:`one_blas_thread`, which
limits the BLAS libraries loaded in the process to one thread for the call and restores them
after (``threadpoolctl``; about 10 µs a call). A user who set ``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` keeps their choice: nothing is limited then.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["USER_THREAD_ENV", "blas_threads", "one_blas_thread"]

#: Environment variables that say the user chose the numeric libraries' thread counts.
USER_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_lock = threading.Lock()
_controller: Any = None
_made = False


def _get_controller() -> Any:
    """A ``threadpoolctl.ThreadpoolController`` of the libraries loaded now, made once per
    process (it scans the loaded libraries: ~2 ms); None without threadpoolctl."""
    global _controller, _made
    with _lock:
        if not _made:
            _made = True
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # pragma: no cover - a dependency of the build extra
                return None
            _controller = ThreadpoolController()
        return _controller


def blas_threads() -> int:
    """The largest thread count of the BLAS libraries loaded in this process (0: none known)."""
    ctl = _get_controller()
    if ctl is None:
        return 0
    return max((int(p["num_threads"]) for p in ctl.info() if p["user_api"] == "blas"), default=0)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the body with the process's BLAS libraries on one thread, unless one of
    :data:`USER_THREAD_ENV` is set; their thread counts are restored after.

    OpenBLAS (0.3.2x, as numpy and scipy bundle it) keeps the count per calling thread, so
    stages in several threads at once (a Dask worker's) each limit and restore their own; with
    a BLAS that keeps one count per process, a call that ends while another runs gives that
    one its threads back early (slower, same results), and the last to end restores."""
    if any(name in os.environ for name in USER_THREAD_ENV):
        yield
        return
    ctl = _get_controller()
    if ctl is None:
        yield
        return
    with ctl.limit(limits=1, user_api="blas"):
        yield
