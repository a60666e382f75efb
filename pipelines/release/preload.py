"""The heavy imports of the release and report stages, done early in a background thread.

A fresh build process paid Great Expectations' import (about 2 s) in the release stage and
matplotlib's (about 0.4 s) in the report stage, after every cell was done. A build now runs
its GX checkpoint in a child process started with the cells (:mod:`.sidecar`); what is left
here is matplotlib's import, and GX's for a caller that asks for it. With an engine
(Beam, Dask) the build's driver only waits on the workers while they run: the build starts
:class:`Preload` once the first cell is done (the driver's own imports are over by then, so
the preload never imports side by side with them) and joins it before the release stage.
Not with the in-process runner: there the imports (Python, holding the GIL) slow the cells
down by as much as they save later (demo scale 1, 2 cores: process +2.1 s, release and report
-1.9 s; with Beam's direct runner the build was 0.9 s shorter).

Nothing else changes: the stages import the same modules as before (already in
``sys.modules``, or imported then). An import that fails in the thread is dropped there; the
stage's own import meets the same error and raises it as it always did (e.g.
:class:`~geodelta.pipelines.release.gx.GXUnavailableError`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence

from geodelta.schemas import BuildConfig

__all__ = ["PLOT_MODULES", "Preload", "gx_import_env", "preload_modules"]

#: What the report's plots import (:mod:`geodelta.pipelines.report.plots`).
PLOT_MODULES = (
    "matplotlib",
    "matplotlib.style",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
)

_log = logging.getLogger(__name__)


@contextlib.contextmanager
def gx_import_env() -> Iterator[None]:
    """What Great Expectations' import needs around it (its one definition, used by
    :func:`~geodelta.pipelines.release.gx._gx` and :class:`Preload`): analytics off (tests and
    builds are offline), and GX 1.24's import of the stdlib's deprecated ``sre_constants`` /
    ``sre_parse`` (a DeprecationWarning on Python >= 3.11, nothing we can change) silenced.
    ``warnings.catch_warnings`` is not thread-safe: enter it in the main thread."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"module 'sre_(constants|parse)' is deprecated",
            category=DeprecationWarning,
        )
        yield


def preload_modules(cfg: BuildConfig) -> tuple[str, ...]:
    """The modules to preload for a build of ``cfg``: what its report stage imports
    (matplotlib); none with the in-process runner (the driver runs the cells itself). Great
    Expectations is not among them: a build runs its checkpoint in a child process that
    imports GX while the cells run (:mod:`.sidecar`), so its driver need not import it."""
    if cfg.runner.name == "inprocess":
        return ()
    return PLOT_MODULES


class Preload:
    """Imports ``modules`` in a daemon thread, from :meth:`start` (any thread, idempotent)
    to :meth:`join`.

    Made in the main thread, which does what must not run beside other threads first: the
    variable that turns GX's analytics off (set as :func:`~geodelta.pipelines.release.gx._gx`
    sets it) and the stdlib's deprecated ``sre_constants``/``sre_parse`` (which GX imports)
    under the warning filter ``_gx`` uses (``warnings.catch_warnings`` is not thread-safe).
    """

    def __init__(self, modules: Sequence[str]) -> None:
        self._modules = tuple(m for m in modules if m not in sys.modules)
        self._thread: threading.Thread | None = None
        self._closed = False  # joined: a late start() does nothing
        self._lock = threading.Lock()
        if any(m.partition(".")[0] == "great_expectations" for m in self._modules):
            with gx_import_env():
                importlib.import_module("sre_constants")
                importlib.import_module("sre_parse")

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules to import (those not imported yet when it was made)."""
        return self._modules

    def start(self) -> None:
        """Start importing (once, and not after :meth:`join`; other calls do nothing)."""
        with self._lock:
            if self._thread is not None or self._closed or not self._modules:
                return
            self._thread = threading.Thread(target=self._run, name="geodelta-preload", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        for name in self._modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # the stage's own import raises it, as it always did
                _log.debug("preload: %s not imported (%s)", name, exc)
                return

    def join(self) -> None:
        """Wait until the imports are done (at once when never started); no start after it."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join()
