"""The build's sidecar: a child process that imports the release and report stages' heavy
libraries while the cells run, then runs their Python-heavy steps beside the build's process.

A build in a fresh process (``geodelta build`` from the command line) paid Great
Expectations' import and first run (~2 s) in its release stage and matplotlib's in its report
stage, after every cell was done: 16.8 % of a full build for ``--from`` at demo scale 4 against
13.8 % in a process that had them imported. Importing them in a thread beside the cells
(:mod:`.preload`) does not help the in-process runner: an import holds the GIL and slows the
cells down by as much. A child process does not share the GIL, and the in-process runner runs
its cells on one core (one Python thread, one BLAS thread:
:mod:`~geodelta.pipelines.stages.threads`), so on a machine with two cores or more what the
sidecar does while the cells run costs the build no wall time.

:class:`Sidecar` is started with the cells (:meth:`~Sidecar.start`). The child imports GX and
runs one checkpoint on empty tables of the build's config (GX's context, its expectation
classes and the Data Docs templates are then ready), imports the report's plotting modules,
freezes its heap (``gc.freeze()``, as :mod:`geodelta._heap` does for a build: the collector's
full passes would walk GX's modules during the checkpoint) and waits. Then:

- the release stage hands it the tables (:meth:`~Sidecar.run_checkpoint`, the signature of
  :func:`.gx.run_checkpoint`); it runs that function on them, writes the same Data Docs into
  the same folder and sends back the verdict (a pickled :class:`~.gx.GXOutcome`);
- the report stage asks it for the sections drawn from the release's tables alone (funnel,
  co-registration, map, time, validation, drift: :meth:`~Sidecar.submit`,
  :meth:`~Sidecar.collect`; their figures are most of their cost) while the build's process
  reads and checks the shards for the others.

Meanwhile the build's process imports matplotlib (``meanwhile``) for the sections it draws.
The release is the same, byte for byte (tests/test_sidecar.py builds the demo in a fresh
process, which never imports GX, and compares every file with a build without a sidecar). An
answer is used only when it is one: when the child cannot start, dies, or raises, the step
runs in the build's process as it did before, and raises what it raises (a missing GX, an
expectation GX cannot evaluate). No child is started when this process has imported both GX
and matplotlib already, nor for fewer than :attr:`Sidecar.MIN_CELLS` cells to process (a small
build in a test session or a long-lived worker, which has them imported after its first
build): it would only add a process there. What the child prints goes nowhere (its standard
output carries the answers).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
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

__all__ = ["CHECKPOINT", "Sidecar", "serve", "warm_up_gx"]

_log = logging.getLogger(__name__)

#: What the checkpoint runs (``module:function``).
CHECKPOINT = "geodelta.pipelines.release.gx:run_checkpoint"
#: What the report imports to draw its figures (the sidecar imports them while cells run).
_REPORT_MODULES = ("geodelta.pipelines.report.render", "matplotlib.backends.backend_agg")

#: The child: its standard output kept for the answers (what it prints goes to /dev/null),
#: the parent's ``sys.path`` (so it imports the same geodelta), then :func:`serve`.
_CHILD = """
import os, pickle, sys
out = os.fdopen(os.dup(1), "wb")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
sys.path[:] = pickle.load(sys.stdin.buffer)
from geodelta.pipelines.release.sidecar import serve
serve(sys.stdin.buffer, out)
"""


def _function(target: str) -> Any:
    """The function ``module:name`` names (imported now)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def warm_up_gx(cfg: BuildConfig) -> None:
    """GX imported and its first run done: one checkpoint on empty tables of ``cfg``, with
    Data Docs into a temporary folder (removed)."""
    from geodelta.pipelines.release.gx import run_checkpoint
    from geodelta.pipelines.release.gx_tables import build_tables

    with tempfile.TemporaryDirectory(prefix="geodelta-gx-warm-") as tmp:
        run_checkpoint(build_tables([], cfg), cfg, site_dir=Path(tmp) / "site", gx_index=False)


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """The child's loop: a list of ``(target, kwargs)`` calls to warm up with (a failure is
    dropped: the request that needs it meets it again and says it), then requests
    ``(target, kwargs)`` answered ``("ok", value)`` or ``("error", text)``, until ``inp`` ends."""
    with contextlib.suppress(Exception):
        for target, kwargs in pickle.load(inp):
            with contextlib.suppress(Exception):
                _function(target)(**kwargs)
    # what is alive now (GX's and matplotlib's modules, mostly) out of the collector's full
    # passes, which otherwise walk it during the checkpoint (scale 4: its run 0.83 -> 0.61 s)
    gc.collect()
    gc.freeze()
    while True:
        try:
            target, kwargs = pickle.load(inp)
        except EOFError:
            return
        try:
            answer: tuple[str, Any] = ("ok", _function(target)(**kwargs))
        except Exception as exc:
            answer = ("error", f"{type(exc).__name__}: {exc}")
        pickle.dump(answer, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


class Sidecar:
    """A build's sidecar process, when one helps (module docstring).

    A context manager: on exit the child is stopped (it also ends by itself when this process
    closes its input, or dies).

    Args:
        cfg: the build's config (GX is warmed up when ``validation.great_expectations`` is on).
        meanwhile: modules to import in a thread of this process while it waits for the
            checkpoint's verdict (its main thread is blocked on the pipe then, holding no GIL);
            joined before the verdict is returned.
        even_if_imported: start one even when this process has GX and matplotlib (tests).

    Attributes:
        answered: the last answer asked for came from the child.
    """

    def __init__(
        self, cfg: BuildConfig, *, meanwhile: Sequence[str] = (), even_if_imported: bool = False
    ) -> None:
        self._cfg = cfg
        self._meanwhile = tuple(meanwhile)
        self._child: subprocess.Popen[bytes] | None = None
        self._started = False
        self._pending = False
        self._even_if_imported = even_if_imported
        self.answered = False

    @property
    def running(self) -> bool:
        """A child was started and has not been stopped."""
        return self._child is not None

    def _warm_calls(self) -> list[tuple[str, dict[str, Any]]]:
        calls: list[tuple[str, dict[str, Any]]] = []
        if self._cfg.validation.great_expectations:
            calls.append((f"{__name__}:warm_up_gx", {"cfg": self._cfg}))
        calls += [("importlib:import_module", {"name": m}) for m in _REPORT_MODULES]
        return calls

    #: Fewer cells to process than this, and no child is started: they are done before it
    #: would be ready (~3 s of imports and warm-up; the in-process runner takes ~60 ms a
    #: cell), and a process that built before has GX and matplotlib imported already.
    MIN_CELLS = 64

    def start(self, cells: int | None = None) -> None:
        """Start the child (once; nothing when this process has GX, where it is on, and
        matplotlib imported already, or when ``cells``, the cells to process, are fewer than
        :attr:`MIN_CELLS`)."""
        if self._started:
            return
        self._started = True
        if cells is not None and cells < self.MIN_CELLS and not self._even_if_imported:
            return
        needed = {"matplotlib"} | (
            {"great_expectations"} if self._cfg.validation.great_expectations else set()
        )
        if needed <= sys.modules.keys() and not self._even_if_imported:
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
            self._send(self._warm_calls())
        except (OSError, pickle.PicklingError) as exc:
            self._stop(f"not started ({exc})")

    def _send(self, obj: Any) -> None:
        assert self._child is not None and self._child.stdin is not None
        pickle.dump(obj, self._child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self._child.stdin.flush()

    def submit(self, target: str, **kwargs: Any) -> bool:
        """Ask the child to run ``target`` (``module:function``) with ``kwargs``; False when
        there is no child (or one answer is still to collect), else :meth:`collect` takes the
        answer."""
        if self._child is None or self._pending:
            return False
        try:
            self._send((target, kwargs))
        except Exception as exc:  # it died, or the request does not pickle
            self._stop(f"not asked ({type(exc).__name__}: {exc})")
            return False
        self._pending = True
        return True

    def collect(self, meanwhile: Sequence[str] = ()) -> tuple[bool, Any]:
        """``(True, value)``: the answer to what was submitted; ``(False, None)`` (and the
        child stopped) when there is none: nothing submitted, the child died, raised, or its
        answer does not read. ``meanwhile``: modules imported in a thread while it waits."""
        from geodelta.pipelines.release.preload import Preload

        self.answered = False
        if self._child is None or not self._pending:
            return False, None
        self._pending = False
        warm = Preload(meanwhile)
        warm.start()
        try:
            assert self._child.stdout is not None
            status, value = pickle.load(self._child.stdout)
        except Exception as exc:
            self._stop(f"no answer ({type(exc).__name__}: {exc})")
            return False, None
        finally:
            warm.join()
        if status != "ok":
            self._stop(f"answered {status}: {value}")
            return False, None
        self.answered = True
        return True, value

    def run_checkpoint(
        self, tables: Mapping[TableName, pd.DataFrame], cfg: BuildConfig, **kwargs: Any
    ) -> GXOutcome:
        """:func:`.gx.run_checkpoint` (the same arguments, the same verdict), by the child when
        it is running, else (or when it fails) here."""
        from geodelta.pipelines.release import gx

        if self.submit(CHECKPOINT, tables=dict(tables), cfg=cfg, **kwargs):
            ok, outcome = self.collect(self._meanwhile)
            if ok and isinstance(outcome, gx.GXOutcome):
                return outcome
            self.answered = False
        if kwargs.get("site_dir") is not None:  # what a failed child may have left there
            shutil.rmtree(kwargs["site_dir"], ignore_errors=True)
        return gx.run_checkpoint(tables, cfg, **kwargs)

    def _stop(self, why: str | None = None) -> None:
        child, self._child = self._child, None
        self._pending = False
        if child is None:
            return
        if why is not None:
            _log.debug("sidecar: %s; the step runs in this process", why)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        child.kill()
        child.wait()

    def close(self) -> None:
        """Stop the child, if any."""
        self._stop()

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
