"""The build's sidecar process (pipelines/release/sidecar.py): the GX checkpoint it runs decides
and writes what the checkpoint run here does, byte for byte; when it cannot answer, the step
runs here and raises what it raises; a build in a fresh process never imports GX itself and
writes the same release, report included, as a build without a sidecar.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import geodelta.pipelines.release.gx as gxmod
from geodelta.pipelines.release.gx import GXEvaluationError, validate_release
from geodelta.pipelines.release.gx_tables import build_tables
from geodelta.pipelines.release.layout import VALIDATION_DIR
from geodelta.pipelines.release.sidecar import Sidecar
from tests.conftest import REPO
from tests.factories import make_config
from tests.test_gx_fast import PAIR, SPLIT, _records, _release_inputs

CFG = make_config()


@pytest.fixture(autouse=True)
def _gx_imported() -> None:
    gxmod._gx()  # this process has GX: the children below are started with even_if_imported


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_child_writes_and_decides_what_this_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metas, read = _release_inputs(CFG)
    here = validate_release(tmp_path / "here", CFG, metas, read)
    (tmp_path / "gd_probe_meanwhile.py").write_text("import time\ntime.sleep(0.05)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "gd_probe_meanwhile", raising=False)
    child = Sidecar(CFG, meanwhile=["gd_probe_meanwhile"], even_if_imported=True)
    with child:
        child.start()
        assert child.running
        there = validate_release(
            tmp_path / "child", CFG, metas, read, checkpoint=child.run_checkpoint
        )
        assert child.answered  # the verdict came from the child, not from a fallback
        assert child.running  # kept for the report's sections
    assert "gd_probe_meanwhile" in sys.modules  # imported while waiting, and joined
    assert not [t for t in threading.enumerate() if t.name == "geodelta-preload"]
    assert {q.reason for q in here} == {PAIR, SPLIT}
    assert there == here
    a = _files(tmp_path / "here" / VALIDATION_DIR)
    b = _files(tmp_path / "child" / VALIDATION_DIR)
    assert "data_docs/index.html" in a and any(k.startswith("data_docs/validations/") for k in a)
    assert b == a


def test_a_child_that_died_leaves_the_checkpoint_to_this_process(tmp_path: Path) -> None:
    metas, read = _release_inputs(CFG)
    here = validate_release(tmp_path / "here", CFG, metas, read)
    child = Sidecar(CFG, even_if_imported=True)
    child.start()
    assert child._child is not None
    child._child.kill()
    child._child.wait()
    there = validate_release(tmp_path / "after", CFG, metas, read, checkpoint=child.run_checkpoint)
    assert not child.answered and not child.running
    assert not child.submit("os:getcwd")  # no child: the caller runs it
    assert child.collect() == (False, None)
    assert there == here
    assert _files(tmp_path / "after" / VALIDATION_DIR) == _files(tmp_path / "here" / VALIDATION_DIR)


def test_an_error_in_the_child_is_raised_by_the_run_here() -> None:
    tables = build_tables(_records(CFG), CFG)
    tables["samples"] = tables["samples"].drop(columns=["before_valid"])  # a bug, not bad data
    with Sidecar(CFG, even_if_imported=True) as child:
        child.start()
        with pytest.raises(GXEvaluationError, match="before_valid"):
            child.run_checkpoint(tables, CFG)
        assert not child.answered and not child.running


def test_no_child_for_a_few_cells_or_when_this_process_has_what_it_imports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import matplotlib  # noqa: F401  (GX is, by the fixture)

    off = make_config(validation={"great_expectations": False})
    for cfg, cells in ((CFG, None), (off, None), (CFG, Sidecar.MIN_CELLS)):
        with Sidecar(cfg) as child:
            child.start(cells)
            assert not child.running
    monkeypatch.delitem(sys.modules, "matplotlib")  # as if this process had not imported it
    with Sidecar(off) as child:
        child.start(Sidecar.MIN_CELLS - 1)
        assert not child.running  # the cells would be done before it is ready
    with Sidecar(off) as child:
        child.start(Sidecar.MIN_CELLS)
        assert child.running
    assert not child.running


_FRESH_BUILD = """
import json, sys, types
sys.path[:0] = [{repo!r}]
from geodelta.pipelines.release.sidecar import Sidecar
from geodelta.pipelines.api import build
from tests.factories import demo_config

Sidecar.MIN_CELLS = 0  # this small demo: fewer cells than a build starts a sidecar for
answers = []
collect = Sidecar.collect


def recorded(self, *args):
    got = collect(self, *args)
    answers.append(got[0])
    return got


Sidecar.collect = recorded
cat = types.SimpleNamespace(catalog_path={catalog!r}, aoi_bbox={bbox!r})
build(demo_config(cat, {out!r}, runner={{"name": "inprocess"}}), progress=False)
print(json.dumps({{"answered": answers, "gx_here": "great_expectations" in sys.modules}}))
"""


def test_a_build_in_a_fresh_process_leaves_gx_to_the_child(tmp_path: Path) -> None:
    """The same release as a build in this process (which has GX imported: no child)."""
    from geodelta.pipelines.api import build
    from geodelta.sources.demo.catalog import write_demo_catalog
    from tests.factories import demo_config

    cat = write_demo_catalog(tmp_path / "cat", scale=0.3, seed=0)
    fresh, here = tmp_path / "fresh", tmp_path / "here"
    code = _FRESH_BUILD.format(
        repo=str(REPO), catalog=str(cat.catalog_path), bbox=list(cat.aoi_bbox), out=str(fresh)
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    # the checkpoint's verdict and the report's sections, both from the sidecar
    assert seen == {"answered": [True, True], "gx_here": False}
    cfg = demo_config(cat, here, runner={"name": "inprocess"})
    assert cfg.validation.great_expectations and cfg.validation.data_docs
    build(cfg, progress=False)
    manifest = (here / "manifest.json").read_bytes()
    assert (fresh / "manifest.json").read_bytes() == manifest
    listed = json.loads(manifest)
    paths = [f["path"] for f in listed["files"]] + [s["path"] for s in listed["shards"]]
    assert any(p.startswith(f"{VALIDATION_DIR}/data_docs/") for p in paths)
    assert "report/index.html" in paths
    assert sum(listed["splits"].values()) > 0
    for path in paths:
        assert (fresh / path).read_bytes() == (here / path).read_bytes(), path
