"""Entry point of the FnApiRunner's worker processes (``runner.mode: multi_processing``).

Beam starts ``python -m apache_beam.runners.worker.sdk_worker_main``, which logs on stderr at
INFO before it reads the pipeline's log level (a root warning at import installs a stderr
handler, then the harness sets the root level to INFO): a dozen lines per worker per build.
This module gives the root logger a handler that drops them unless geodelta is verbose
(:mod:`geodelta.pipelines.verbosity`), then runs the harness unchanged; its own log handler
still sends WARNING and above to the runner, where they are shown at ERROR. A worker that
crashes still prints its traceback (Python's own, not a log record).
"""

from __future__ import annotations

import logging
import runpy

from geodelta.pipelines.verbosity import is_verbose, quiet_libraries


def main() -> None:
    if not is_verbose():
        logging.getLogger().addHandler(logging.NullHandler())  # no implicit stderr handler
        quiet_libraries()
    runpy.run_module("apache_beam.runners.worker.sdk_worker_main", run_name="__main__")


if __name__ == "__main__":
    main()
