"""How much the libraries geodelta drives may print: quiet by default, everything with
``geodelta --verbose`` (or ``GEODELTA_VERBOSE=1`` in the environment).

Beam's harness logs every worker start at INFO (control channels, ``semi_persistent_directory``,
"apitools not found"), Dask its worker lifecycle, transformers a progress bar per model load:
43 of the demo's 80 console lines, and most of every Airflow build task's log. geodelta's own
lines say what matters; errors from any library still show. The choice travels to worker
processes through the environment variable :data:`VERBOSE_ENV`, which they inherit.
"""

from __future__ import annotations

import logging
import os

__all__ = ["VERBOSE_ENV", "is_verbose", "quiet_libraries", "set_verbose"]

#: ``1`` = show the libraries' INFO logs and progress bars (workers inherit it).
VERBOSE_ENV = "GEODELTA_VERBOSE"

#: Loggers of the engines geodelta runs, at ERROR unless verbose.
LIBRARY_LOGGERS: tuple[str, ...] = ("apache_beam", "distributed", "dask", "tornado", "grpc")

#: A warning Beam logs on the root logger at import whenever google-apitools is absent (it is
#: never needed here: no BigQuery I/O).
_APITOOLS = "apitools not found"


def is_verbose() -> bool:
    """Whether ``--verbose`` / ``GEODELTA_VERBOSE=1`` asked for the libraries' own logs."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def set_verbose(on: bool) -> None:
    """Record the choice in the environment (worker processes inherit it) and apply it."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        os.environ.pop(VERBOSE_ENV, None)
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()


class _DropApitools(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_APITOOLS)


def quiet_libraries() -> None:
    """Unless verbose: the engines' loggers at ERROR, Beam's import-time apitools warning
    dropped, Hugging Face progress bars off. Idempotent; safe to call in any process."""
    if is_verbose():
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    root = logging.getLogger()
    if not any(isinstance(f, _DropApitools) for f in root.filters):
        root.addFilter(_DropApitools())
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights" bars
