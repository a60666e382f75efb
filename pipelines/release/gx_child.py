"""Great Expectations' checkpoint in a child process, imported and warmed up while the cells run.

A build in a fresh process (``geodelta build`` from the command line) paid GX's import and
first run in its release stage, after every cell was done: about 2.5 s of a 16 s ``--from``
build at demo scale 4 (the release stage 4.1 s against 1.6 s in a process that had run GX
before). Importing GX beside the cells in a thread (:mod:`.preload`) does not help the
in-process runner: the import holds the GIL and slows the cells down by as much. A child
process does not share the GIL, and the in-process runner runs its cells on one core (one
Python thread, one BLAS thread: :mod:`~geodelta.pipelines.stages.threads`), so on a machine
with two cores or more the child's import and warm-up cost the build no wall time.

:class:`CheckpointChild` is started with the cells (:meth:`~CheckpointChild.start`); the child
imports :mod:`.gx`, runs one checkpoint on empty tables of the build's config (GX's context,
its expectation classes and the Data Docs templates, compiled once per process, are then
ready), freezes its heap (``gc.freeze()``, as :mod:`geodelta._heap` does for a build) and
waits. The release stage hands it the tables (:meth:`~CheckpointChild.run_checkpoint`,
the signature of :func:`.gx.run_checkpoint`); the child runs the same function on them, writes
the same Data Docs into the same folder, and sends back the verdict (a pickled
:class:`~.gx.GXOutcome`). The release is the same, byte for byte (tests/test_gx_child.py).

Its answer is used only when it is a verdict: when the child cannot start, dies, or raises,
the checkpoint runs in this process as it did before, and raises what it raises (a missing GX,
an expectation GX cannot evaluate). No child is started when this process has imported GX
already (a test session, a long-lived worker): it would only add a process's start there.
What the child prints goes nowhere (its standard output carries the answers).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from geodelta.schemas import BuildConfig

if TYPE_CHECKING:
    import pandas as pd

    from geodelta.pipelines.release.gx import GXOutcome
    from geodelta.schemas.expectations import TableName

__all__ = ["CheckpointChild", "serve"]

_log = logging.getLogger(__name__)

#: The child: its standard output kept for the answers (what GX prints goes to /dev/null),
#: the parent's ``sys.path`` (so it imports the same geodelta), then :func:`serve`.
_CHILD = """
import os, pickle, sys
out = os.fdopen(os.dup(1), "wb")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
sys.path[:] = pickle.load(sys.stdin.buffer)
from geodelta.pipelines.release.gx_child import serve
serve(sys.stdin.buffer, out)
"""


def _warm_up(cfg: BuildConfig) -> None:
    """GX imported and its first run done: one checkpoint on empty tables of ``cfg``, with
    Data Docs into a temporary folder (removed)."""
    from geodelta.pipelines.release.gx import run_checkpoint
    from geodelta.pipelines.release.gx_tables import build_tables

    with tempfile.TemporaryDirectory(prefix="geodelta-gx-warm-") as tmp:
        run_checkpoint(build_tables([], cfg), cfg, site_dir=Path(tmp) / "site", gx_index=False)


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """The child's loop: a config to warm up with, then requests (keyword arguments of
    :func:`.gx.run_checkpoint`) answered ``("ok", GXOutcome)`` or ``("error", text)``, until
    ``inp`` ends."""
    from geodelta.pipelines.release.gx import run_checkpoint

    with contextlib.suppress(Exception):  # a request meets the same problem and says it
        _warm_up(pickle.load(inp))
    # what is alive now (GX's modules, mostly) out of the collector's full passes, which
    # otherwise walk it during the checkpoint (scale 4: its run 0.83 -> 0.61 s)
    gc.collect()
    gc.freeze()
    while True:
        try:
            request = pickle.load(inp)
        except EOFError:
            return
        try:
            answer: tuple[str, Any] = ("ok", run_checkpoint(**request))
        except Exception as exc:
            answer = ("error", f"{type(exc).__name__}: {exc}")
        pickle.dump(answer, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


class CheckpointChild:
    """The checkpoint of one build, run by a child process when one helps (module docstring).

    A context manager: on exit the child is stopped (it also ends by itself when this process
    closes its input, or dies).

    Args:
        cfg: the build's config (none is started when ``validation.great_expectations`` is off).
        meanwhile: modules to import in a thread of this process while it waits for the
            child's verdict (its main thread is blocked on the pipe then, holding no GIL): a
            build names the report's (:data:`~.preload.PLOT_MODULES`); joined before the
            verdict is returned.
        even_if_imported: start one even when this process has imported GX (tests).

    Attributes:
        answered: the last checkpoint's verdict came from the child.
    """

    def __init__(
        self, cfg: BuildConfig, *, meanwhile: Sequence[str] = (), even_if_imported: bool = False
    ) -> None:
        self._cfg = cfg
        self._meanwhile = tuple(meanwhile)
        self._child: subprocess.Popen[bytes] | None = None
        self._started = False
        self._even_if_imported = even_if_imported
        self.answered = False

    @property
    def running(self) -> bool:
        """A child was started and has not been stopped."""
        return self._child is not None

    def start(self) -> None:
        """Start the child (once; nothing when GX is off or this process has it imported)."""
        if self._started:
            return
        self._started = True
        if not self._cfg.validation.great_expectations:
            return
        if "great_expectations" in sys.modules and not self._even_if_imported:
            return
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-c", _CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "GX_ANALYTICS_ENABLED": "false"},
            )
            self._send([str(p) for p in sys.path])
            self._send(self._cfg)
        except (OSError, pickle.PicklingError) as exc:
            self._stop(f"not started ({exc})")

    def _send(self, obj: Any) -> None:
        assert self._child is not None and self._child.stdin is not None
        pickle.dump(obj, self._child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self._child.stdin.flush()

    def _ask(self, request: dict[str, Any]) -> GXOutcome | None:
        """The child's verdict on ``request``; None (and the child stopped) when it has none."""
        from geodelta.pipelines.release.gx import GXOutcome

        if self._child is None:
            return None
        from geodelta.pipelines.release.preload import Preload

        warm = Preload(self._meanwhile)
        try:
            self._send(request)
            warm.start()
            assert self._child.stdout is not None
            status, value = pickle.load(self._child.stdout)
        except Exception as exc:  # it died, or its answer does not read: run here
            self._stop(f"no answer ({type(exc).__name__}: {exc})")
            return None
        finally:
            warm.join()
        if status != "ok" or not isinstance(value, GXOutcome):
            self._stop(f"answered {status}: {value}")
            return None
        self._stop()  # one checkpoint a build
        return value

    def run_checkpoint(
        self,
        tables: Mapping[TableName, pd.DataFrame],
        cfg: BuildConfig,
        *,
        site_dir: str | Path | None = None,
        run_name: str | None = None,
        gx_index: bool = True,
    ) -> GXOutcome:
        """:func:`.gx.run_checkpoint`, by the child when it is running, else (or when it
        fails) here; the same arguments, the same verdict."""
        from geodelta.pipelines.release import gx

        kwargs = {"site_dir": site_dir, "run_name": run_name, "gx_index": gx_index}
        outcome = self._ask({"tables": dict(tables), "cfg": cfg, **kwargs})
        self.answered = outcome is not None
        if outcome is not None:
            return outcome
        if site_dir is not None:  # what a failed child may have left there
            shutil.rmtree(site_dir, ignore_errors=True)
        return gx.run_checkpoint(
            tables, cfg, site_dir=site_dir, run_name=run_name, gx_index=gx_index
        )

    def _stop(self, why: str | None = None) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if why is not None:
            _log.debug("GX child: %s; the checkpoint runs in this process", why)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        child.kill()
        child.wait()

    def close(self) -> None:
        """Stop the child, if any."""
        self._stop()

    def __enter__(self) -> CheckpointChild:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
