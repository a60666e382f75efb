"""Verify covers everything, and the gate cannot be edited away (issue 12, part 4).

``verify`` checks ``manifest.json`` itself (``manifest.sha256``, the sha256 recorded when it was
published, the embedded config against its ``config_hash``, every sample's ``config_hash``),
reports files the manifest does not list (an error with ``--strict``, which ``release`` uses),
lists the deterministic report and GX files; a corrupt staged member is re-run on ``--resume``,
never sharded. One small demo release (inprocess) is built per module; tests copy it first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from geodelta.pipelines.api import build, verify
from geodelta.pipelines.cli import app
from geodelta.pipelines.release.layout import (
    LATEST,
    MANIFEST,
    MANIFEST_SHA256,
    PUBLISHED_DIR,
    REPORT_DIR,
    REPORT_FILE,
    STAGING,
)
from geodelta.pipelines.release.manifest import list_files
from geodelta.pipelines.release.staging import Staging, StagingError
from geodelta.schemas.reference import (
    REFERENCE_METRICS,
)
from geodelta.sources.demo.catalog import DemoCatalog, write_demo_catalog
from tests.factories import demo_config, flip_staged_member, make_metrics

#: The smallest demo that still has a sample (scale 0.1 holds no whole cell).
SCALE = 0.25
#: The real floor of the config: a reference model with F1 0.029 must not pass.
GATE = {"require_reference": True, "rules": [{"metric": "masks.f1", "min": 0.4}]}
REPORT = f"{REPORT_DIR}/{REPORT_FILE}"


def _config(catalog: DemoCatalog, out: Path) -> Any:
    return demo_config(catalog, out, runner={"name": "inprocess"}, gate=GATE)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    return write_demo_catalog(tmp_path_factory.mktemp("vm-catalog") / "c", seed=0, scale=SCALE)


@pytest.fixture(scope="module")
def built(catalog: DemoCatalog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished release with its staging area kept (read-only: copy it)."""
    out = tmp_path_factory.mktemp("vm-release") / "geodelta-demo-0.1.0"
    result = build(_config(catalog, out), progress=False, keep_staging=True)
    assert result.samples >= 1
    return out


def _copy(built: Path, dest: Path, *, staging: bool = False) -> Path:
    ignore = None if staging else shutil.ignore_patterns(STAGING)
    shutil.copytree(built, dest, ignore=ignore)
    return dest


def _text(res: Any) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(str(res.output).split())


def _metrics(root: Path, f1: float) -> None:
    """reference/metrics.json with ``f1`` for this release, listed in its manifest (as
    train-reference leaves it)."""
    manifest = json.loads((root / MANIFEST).read_text())
    ref = make_metrics(
        f1=f1,
        recall_at_5=1.0,
        config_hash=manifest["config_hash"],
        release=f"{manifest['name']}-{manifest['version']}",
    )
    (root / REFERENCE_METRICS).parent.mkdir(exist_ok=True)
    (root / REFERENCE_METRICS).write_text(ref.model_dump_json())
    list_files(root, [REFERENCE_METRICS])


def _edit_manifest(root: Path, edit: Any, *, reseal: bool = False) -> None:
    """Edit manifest.json as a user with a text editor would; ``reseal``: rewrite
    manifest.sha256 to match, as a user who knows about it would."""
    data = json.loads((root / MANIFEST).read_text())
    edit(data)
    raw = json.dumps(data, indent=2, sort_keys=True).encode()
    (root / MANIFEST).write_bytes(raw)
    if reseal:
        digest = hashlib.sha256(raw).hexdigest()
        (root / MANIFEST_SHA256).write_text(f"{digest}  {MANIFEST}\n")


def _gate_min_zero(data: dict[str, Any]) -> None:
    data["config"]["gate"]["rules"][0]["min"] = 0.0


def test_a_fresh_release_verifies_strictly_and_lists_what_it_holds(built: Path) -> None:
    result = verify(built, strict=True)
    assert result.ok, result.problems
    assert result.notes == ()
    listed = {f["path"] for f in json.loads((built / MANIFEST).read_text())["files"]}
    assert REPORT in listed
    assert "validation/summary.json" in listed
    assert any(p.startswith("validation/data_docs/") for p in listed)
    digest = hashlib.sha256((built / MANIFEST).read_bytes()).hexdigest()
    assert (built / MANIFEST_SHA256).read_text() == f"{digest}  {MANIFEST}\n"


def test_gate_minimum_edited_to_zero_fails_verify_and_release(built: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    root = _copy(built, tmp_path / "geodelta-demo-0.1.0")
    releases = tmp_path / "releases"
    _metrics(root, f1=0.029)
    res = runner.invoke(app, ["verify", "--strict", str(root)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["release", str(root), "--releases", str(releases), "--check"])
    assert res.exit_code == 1, res.output  # the real floor holds
    assert "masks.f1" in _text(res)

    _edit_manifest(root, _gate_min_zero)
    res = runner.invoke(app, ["verify", str(root)])
    assert res.exit_code == 1, res.output
    assert f"{MANIFEST}: sha256" in _text(res) and "edited" in _text(res)
    assert "the embedded config hashes to" in _text(res)
    res = runner.invoke(app, ["release", str(root), "--releases", str(releases)])
    assert res.exit_code == 1, res.output
    assert "does not verify" in _text(res) and MANIFEST in _text(res)
    assert root.is_dir() and not (releases / LATEST).exists()  # nothing published

    # resealing manifest.sha256 does not help: the config no longer hashes to config_hash
    _edit_manifest(root, lambda d: None, reseal=True)
    res = runner.invoke(app, ["release", str(root), "--releases", str(releases)])
    assert res.exit_code == 1, res.output
    assert "the embedded config hashes to" in _text(res) and "gate rules" in _text(res)
    assert not (releases / LATEST).exists()


def test_recomputed_config_hash_still_disagrees_with_the_samples(
    built: Path, tmp_path: Path
) -> None:
    """An edit of a section that shapes samples, with the config hash recomputed and the
    manifest resealed: every sample's shaping hash still names the config it was built with.
    (An edit of a release-only section such as the gate, recomputed and resealed, is what the
    published record catches: ``test_an_edit_after_publishing_shows``.)"""
    from geodelta.schemas import parse_config

    root = _copy(built, tmp_path / "r")

    def forge(data: dict[str, Any]) -> None:
        data["config"]["annotation"]["captions_per_sample"] += 1
        cfg = parse_config({**data["config"], "output": {"dir": "."}})
        data["config_hash"] = cfg.config_hash()

    _edit_manifest(root, forge, reseal=True)
    result = verify(root)
    assert not result.ok
    assert any("json shaping_hash is" in p for p in result.problems), result.problems
    assert not any("embedded config hashes" in p for p in result.problems)


def test_an_edited_embedded_config_fails_verify(built: Path, tmp_path: Path) -> None:
    root = _copy(built, tmp_path / "r")
    _edit_manifest(root, lambda d: d["config"].update(description="edited"), reseal=True)
    result = verify(root)
    assert not result.ok
    assert [p for p in result.problems if p.startswith(f"{MANIFEST}:")] == [
        p for p in result.problems if "the embedded config hashes to" in p
    ]

    bad = _copy(built, tmp_path / "bad")
    _edit_manifest(bad, lambda d: d["config"].update(colour="red"), reseal=True)
    res = CliRunner().invoke(app, ["verify", str(bad)])
    assert res.exit_code == 1, res.output
    assert "the embedded config is not a valid config" in _text(res)
    assert "colour: unknown key" in _text(res)


def test_any_edit_of_the_manifest_shows(built: Path, tmp_path: Path) -> None:
    root = _copy(built, tmp_path / "r")
    _edit_manifest(root, lambda d: d.update(code_version="9.9.9"))
    result = verify(root)
    assert not result.ok
    assert any(
        p.startswith(f"{MANIFEST}: sha256") and f"differs from {MANIFEST_SHA256}" in p
        for p in result.problems
    ), result.problems

    (root / MANIFEST_SHA256).unlink()
    assert any(p.startswith(f"{MANIFEST_SHA256}: missing") for p in verify(root).problems)


def test_an_edit_after_publishing_shows(built: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    root = _copy(built, tmp_path / "build" / "geodelta-demo-0.1.0")
    releases = tmp_path / "releases"
    _metrics(root, f1=0.9)
    res = runner.invoke(app, ["release", str(root), "--releases", str(releases)])
    assert res.exit_code == 0, res.output
    published = releases / "geodelta-demo-0.1.0"
    record = releases / PUBLISHED_DIR / "geodelta-demo-0.1.0.sha256"
    digest = hashlib.sha256((published / MANIFEST).read_bytes()).hexdigest()
    assert record.read_text() == f"{digest}  geodelta-demo-0.1.0/{MANIFEST}\n"
    assert verify(published, strict=True).ok

    # an edit that keeps the config and reseals manifest.sha256: only the record sees it
    _edit_manifest(published, lambda d: d.update(code_version="9.9.9"), reseal=True)
    res = runner.invoke(app, ["verify", str(published)])
    assert res.exit_code == 1, res.output
    assert "was edited after publishing" in _text(res) and str(record) in _text(res)
    res = runner.invoke(app, ["release", str(published), "--releases", str(releases)])
    assert res.exit_code == 1, res.output
    assert "changed after it was published" in _text(res)


def test_unlisted_files_are_reported_and_refused_with_strict(built: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    root = _copy(built, tmp_path / "geodelta-demo-0.1.0")
    (root / "extra.txt").write_text("not in the manifest")
    (root / "validation" / "planted.json").write_text("{}")
    res = runner.invoke(app, ["verify", str(root)])
    assert res.exit_code == 0, res.output
    assert f"note: extra.txt: in the release folder, not in {MANIFEST}" in _text(res)
    assert "validation/planted.json: in the release folder" in _text(res)

    res = runner.invoke(app, ["verify", "--strict", str(root)])
    assert res.exit_code == 1, res.output
    assert f"x extra.txt: in the release folder, not in {MANIFEST}" in _text(res)
    assert "2 problem(s)" in _text(res)

    _metrics(root, f1=0.9)  # the gate would pass: the refusal is the unlisted files'
    releases = tmp_path / "releases"
    res = runner.invoke(app, ["release", str(root), "--releases", str(releases)])
    assert res.exit_code == 1, res.output
    assert "extra.txt: in the release folder, not in" in _text(res)
    assert not (releases / LATEST).exists()


def test_report_listed_and_byte_identical_across_builds(
    built: Path, catalog: DemoCatalog, tmp_path: Path
) -> None:
    other = tmp_path / "elsewhere" / "out"
    build(_config(catalog, other), progress=False)
    for rel in (REPORT, "validation/summary.json", "validation/results/samples.json", MANIFEST):
        assert (other / rel).read_bytes() == (built / rel).read_bytes(), rel
    for page in sorted((built / "validation").rglob("*.html")):
        rel = page.relative_to(built)
        assert (other / rel).read_bytes() == page.read_bytes(), rel
    assert b"/19700101T000000.000000Z/" in (built / REPORT).read_bytes()  # GX's fixed run time
    files = {f["path"]: f for f in json.loads((other / MANIFEST).read_text())["files"]}
    assert files[REPORT]["sha256"] == hashlib.sha256((other / REPORT).read_bytes()).hexdigest()

    # re-rendering the report (geodelta report) keeps the manifest honest
    res = CliRunner().invoke(app, ["report", str(other), "--max-gallery", "2"])
    assert res.exit_code == 0, res.output
    assert verify(other, strict=True).ok


def test_a_corrupt_staged_member_is_rebuilt_on_resume_never_shipped(
    built: Path, catalog: DemoCatalog, tmp_path: Path
) -> None:
    root = _copy(built, tmp_path / "r", staging=True)
    staging = Staging(root / STAGING)
    key = staging.outcomes()[0][0]
    member = root / STAGING / "samples" / f"{key}.sample"
    original = member.read_bytes()
    member.write_bytes(flip_staged_member(original, "before.tif"))

    with pytest.raises(StagingError, match=rf"'before.tif' of sample {key} does not match"):
        staging.read_members(key)  # assembly never shards it
    assert staging.corrupt_cells() and staging.sample_problem(key) is not None

    before = json.loads((built / MANIFEST).read_text())
    result = build(_config(catalog, root), mode="resume", progress=False, keep_staging=True)
    assert result.resumed_cells == result.cells - 1  # the corrupt cell ran again
    assert member.read_bytes() == original
    after = json.loads((root / MANIFEST).read_text())
    assert after["shards"] == before["shards"]  # the same bytes as a clean build
    assert verify(root, strict=True).ok


def test_a_staged_sample_without_checksums_runs_again(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    staging.put_sample("c_1_2", {"json": b"{}", "qa.json": b"[]"})
    staging.mark_cell("c", keys=["c_1_2"], quarantine=[])
    assert staging.corrupt_cells() == {}
    assert staging.member_names("c_1_2") == {"json", "qa.json"}
    packed = tmp_path / "samples" / "c_1_2.sample"
    lines = packed.read_bytes().split(b"\n", 2)
    packed.write_bytes(b"\n".join([lines[0], b"{}", lines[2]]))  # its header emptied
    assert "no readable checksums" in staging.corrupt_cells()["c"]
    staging.forget_cells(["c"])
    assert staging.done_cells() == set()


def test_checksums_hashed_ahead_by_a_child_catch_the_same_edits(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large release's checksums are hashed by a child process (HashAhead, above
    AHEAD_MIN_BYTES): forced here on the small one, verify passes a clean copy and names a
    shard and a table whose bytes changed, as when it hashes each file itself."""
    import geodelta._io as io_module
    from geodelta.pipelines.release.layout import SAMPLES_TABLE, shard_files

    started: list[Any] = []
    real_init = io_module.HashAhead.__init__

    def spy(self: Any, paths: Any, *, min_bytes: int | None = None) -> None:
        real_init(self, paths, min_bytes=min_bytes)
        started.append(self._child)

    monkeypatch.setattr(io_module, "AHEAD_MIN_BYTES", 0)
    monkeypatch.setattr(io_module.HashAhead, "__init__", spy)
    root = _copy(built, tmp_path / "r")
    assert verify(root).ok
    assert started and all(child is not None for child in started)  # the child did hash
    shard = shard_files(root)[0]
    data = bytearray(shard.read_bytes())
    data[-1024] ^= 0xFF  # a byte of the tar's end padding: the tar still reads
    shard.write_bytes(bytes(data))
    table = root / SAMPLES_TABLE
    table.write_bytes(table.read_bytes() + b"\0")
    problems = verify(root).problems
    rel = shard.relative_to(root).as_posix()
    assert any(p.startswith(f"{rel}: sha256 mismatch") for p in problems), problems
    assert any(p.startswith(f"{SAMPLES_TABLE}: size mismatch") for p in problems), problems
