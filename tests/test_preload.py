"""The preload of the release and report stages' heavy imports while an engine's workers run
the cells (:mod:`geodelta.pipelines.release.preload`): which modules, when it starts, and what
it must not change (which error an import raises, what is imported, no thread left running).
Byte identity of the releases is tested by tests/test_same_bytes.py.
"""

from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path

import pytest

from geodelta.pipelines.build import _CellsBar
from geodelta.pipelines.release import preload as preload_mod
from geodelta.pipelines.release.preload import (
    PLOT_MODULES,
    Preload,
    preload_modules,
)


def _probe(tmp_path: Path, name: str, body: str = "") -> str:
    """A module ``name`` on sys.path that counts how often it was executed."""
    (tmp_path / f"{name}.py").write_text(
        f"import builtins\nbuiltins.__dict__.setdefault('_gd_runs', []).append({name!r})\n{body}",
        encoding="utf-8",
    )
    return name


@pytest.fixture
def probe_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    import builtins

    monkeypatch.setattr(builtins, "_gd_runs", [], raising=False)
    return tmp_path


def test_preload_imports_in_a_thread_once_and_not_after_join(probe_path: Path) -> None:
    import builtins

    first = _probe(probe_path, "gd_probe_first")
    second = _probe(probe_path, "gd_probe_second")
    warm = Preload([first, second])
    assert warm.modules == (first, second)
    warm.start()
    warm.start()  # idempotent
    warm.join()
    assert first in sys.modules and second in sys.modules
    assert builtins._gd_runs == [first, second]  # type: ignore[attr-defined]
    importlib.import_module(first)  # the stage's own import: nothing runs again
    assert builtins._gd_runs == [first, second]  # type: ignore[attr-defined]
    late = Preload([_probe(probe_path, "gd_probe_late")])
    late.join()  # never started: returns at once, and no start after it
    late.start()
    assert "gd_probe_late" not in sys.modules
    assert not [t for t in threading.enumerate() if t.name == "geodelta-preload"]


def test_preload_skips_what_is_imported_already() -> None:
    assert Preload(["json", "os"]).modules == ()


def test_a_failing_preload_is_dropped_and_the_stage_import_raises_as_before(
    probe_path: Path,
) -> None:
    broken = _probe(probe_path, "gd_probe_broken", "raise RuntimeError('broken on import')\n")
    after = _probe(probe_path, "gd_probe_after")
    warm = Preload([broken, after])
    warm.start()
    warm.join()  # no error here
    assert broken not in sys.modules
    assert after not in sys.modules  # the preload stops at the first failure
    with pytest.raises(RuntimeError, match="broken on import"):
        importlib.import_module(broken)  # what the stage meets, as without the preload
    missing = Preload(["gd_no_such_module_anywhere"])
    missing.start()
    missing.join()
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("gd_no_such_module_anywhere")


def test_preload_modules_follow_the_config() -> None:
    from geodelta.schemas import load_config
    from tests.conftest import REPO

    cfg = load_config(REPO / "configs" / "demo.yaml", {"output": {"dir": "out"}})
    direct = cfg.model_copy(update={"runner": cfg.runner.model_copy(update={"name": "direct"})})
    assert cfg.validation.great_expectations
    assert preload_modules(direct) == PLOT_MODULES  # GX is imported by the checkpoint's child
    inprocess = cfg.model_copy(
        update={"runner": cfg.runner.model_copy(update={"name": "inprocess"})}
    )
    assert preload_modules(inprocess) == ()  # the driver runs the cells itself


def test_preload_turns_gx_analytics_off_in_the_main_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GX_ANALYTICS_ENABLED", raising=False)
    Preload(["great_expectations.gd_not_imported_yet"])  # made, never started
    import os

    assert os.environ["GX_ANALYTICS_ENABLED"] == "false"


def test_the_cells_bar_starts_the_preload_at_the_first_cell_done() -> None:
    calls: list[int] = []

    def first() -> None:
        calls.append(1)

    bar = _CellsBar(first, False, "cells", 10, 4)  # 4 cells resumed
    bar.set(4)  # the markers of the resumed cells: nothing new done
    assert calls == []
    bar.set(5)
    assert calls == [1]
    bar.advance(1)
    assert len(calls) == 2 and bar.completed == 6  # Preload.start is idempotent


def test_preload_module_is_light() -> None:
    """The preload module imports no heavy library itself (it only names them)."""
    code = Path(preload_mod.__file__).read_text(encoding="utf-8")
    assert "import great_expectations" not in code and "import matplotlib" not in code
