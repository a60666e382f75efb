"""Releases at fsspec URLs: byte-identical uploads, manifest last, failed uploads resumable.

One local build of the smallest demo (the session's, tests/conftest.py) is the reference; ``memory://`` stands
for an object store (no rename: written in place, manifest last) and ``file://`` for a
filesystem that renames folders (a temporary sibling renamed onto the target).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest
from typer.testing import CliRunner

from geodelta.pipelines.api import BuildResult, build
from geodelta.pipelines.release.upload import (
    UPLOAD_STAMP,
    OutputError,
    Target,
    check_target,
    release_files,
    upload_release,
    verify_url,
    work_dir_for,
)
from geodelta.schemas import parse_config
from geodelta.sources.demo.catalog import DemoCatalog
from tests import factories
from tests.conftest import REPO, SMALL_SHARDS, minimal_config

pytestmark = pytest.mark.slow  # the module fixture builds the demo (~15 s)


def demo_config(cat: DemoCatalog, out: str, **extra: Any) -> Any:
    """The shared small-shards demo config (in-process: these tests are about the output)."""
    return factories.demo_config(
        cat, out, **{**SMALL_SHARDS, "runner": {"name": "inprocess"}, **extra}
    )


@pytest.fixture(scope="module")
def local(
    demo_catalog: DemoCatalog, small_shards_release: BuildResult
) -> tuple[DemoCatalog, BuildResult]:
    """The session's small-shards demo release (tests/conftest.py): the reference."""
    return demo_catalog, small_shards_release


def local_files(release: Path) -> dict[str, bytes]:
    return {rel: (release / rel).read_bytes() for rel in release_files(release)}


def remote_files(url: str) -> dict[str, bytes]:
    target = Target.parse(url)
    return {rel: target.fs.cat_file(target.join(rel)) for rel in target.listing()}


def memory_url() -> str:
    return f"memory://geodelta-{uuid.uuid4().hex[:8]}/release"


class FailAfter:
    """Wraps ``fs.put_file``: the first ``n`` calls go through, the next raises."""

    def __init__(self, fs: Any, n: int) -> None:
        self.real, self.n, self.calls = fs.put_file, n, 0

    def __call__(self, lpath: str, rpath: str, **kw: Any) -> Any:
        self.calls += 1
        if self.calls > self.n:
            raise ConnectionResetError("simulated network failure")
        return self.real(lpath, rpath, **kw)


def test_build_to_memory_url_fails_mid_upload_then_resume_completes_it(
    local: tuple[DemoCatalog, BuildResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cat, expected = local
    url = memory_url()
    cfg = demo_config(cat, url, output={"dir": url, "work_dir": str(tmp_path / "work")})
    fs = Target.parse(url).fs
    monkeypatch.setattr(fs, "put_file", FailAfter(fs, 3))
    with pytest.raises(OutputError, match=r"failed at .* after 3 of \d+ files.*--resume") as err:
        build(cfg, mode="fresh", progress=False)
    assert err.value.url == url
    partial = remote_files(url)
    assert "manifest.json" not in partial and UPLOAD_STAMP in partial
    assert len(partial) == 3 + 1  # three files and the stamp
    assert not verify_url(url).ok
    with pytest.raises(OutputError, match="--resume"):  # a fresh build refuses the leftovers
        check_target(url, cfg, "fresh")
    assert (tmp_path / "work" / ".staging").is_dir()  # kept: the re-run runs no cell

    monkeypatch.undo()
    done = build(cfg, mode="resume", progress=False)
    assert done.url == url and done.location == url
    assert done.resumed_cells == done.cells == expected.cells
    assert remote_files(url) == local_files(expected.release_dir)  # byte for byte, no stamp
    assert not (tmp_path / "work").exists()  # the work folder goes once uploaded
    assert verify_url(url).ok
    res = CliRunner().invoke(_app(), ["verify", url])
    assert res.exit_code == 0 and f"{expected.samples} samples verified" in res.output
    with pytest.raises(OutputError, match="already holds a release"):
        build(cfg, mode="fresh", progress=False)


def _app() -> Any:
    from geodelta.pipelines.cli import app

    return app


def test_publish_to_file_url_renames_into_place_and_a_failed_overwrite_keeps_the_old(
    local: tuple[DemoCatalog, BuildResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, expected = local
    dest = tmp_path / "out" / "release"
    url = f"file://{dest}"
    order = upload_release(expected.release_dir, url)
    assert order[-1] == "manifest.json"
    assert {
        p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()
    } == (local_files(expected.release_dir))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["release"]  # no temp sibling left
    res = CliRunner().invoke(_app(), ["verify", url])
    assert res.exit_code == 0, res.output

    before = (dest / "manifest.json").read_bytes()
    fs = Target.parse(url).fs
    monkeypatch.setattr(fs, "put_file", FailAfter(fs, 2))
    with pytest.raises(OutputError, match="after 2 of"):
        upload_release(expected.release_dir, url)
    monkeypatch.undo()
    assert (dest / "manifest.json").read_bytes() == before  # the old release, untouched
    assert verify_url(url).ok
    assert (dest.parent / ".release.partial").is_dir()  # the failed attempt, beside it
    upload_release(expected.release_dir, url)  # a re-run cleans it up and completes
    assert sorted(p.name for p in dest.parent.iterdir()) == ["release"]
    assert verify_url(url).ok


def test_in_place_overwrite_deletes_the_manifest_first_and_stale_files(
    local: tuple[DemoCatalog, BuildResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, expected = local
    url = memory_url()
    target = Target.parse(url)
    upload_release(expected.release_dir, url)
    target.fs.pipe_file(target.join("shards/train-000099.tar"), b"old shard")
    fs = target.fs
    monkeypatch.setattr(fs, "put_file", FailAfter(fs, 0))
    with pytest.raises(OutputError, match="after 0 of"):
        upload_release(expected.release_dir, url)
    monkeypatch.undo()
    assert "manifest.json" not in target.listing()  # incomplete, not a mix of two releases
    upload_release(expected.release_dir, url)
    assert remote_files(url) == local_files(expected.release_dir)  # the stale shard is gone


def test_target_rules_follow_the_local_ones(local: tuple[DemoCatalog, BuildResult]) -> None:
    _, expected = local
    cfg = parse_config(minimal_config(output={"dir": "memory://x/y"}))
    url = memory_url()
    target = Target.parse(url)
    for mode in ("fresh", "resume", "overwrite"):
        check_target(url, cfg, mode)  # nothing there: every mode may start
    target.fs.pipe_file(
        target.join("manifest.json"), json.dumps({"config_hash": "0" * 64}).encode()
    )
    with pytest.raises(OutputError, match="--overwrite to replace it or --resume"):
        check_target(url, cfg, "fresh")
    with pytest.raises(OutputError, match="another config"):
        check_target(url, cfg, "resume")
    check_target(url, cfg, "overwrite")
    target.fs.rm_file(target.join("manifest.json"))
    target.fs.pipe_file(target.join(UPLOAD_STAMP), json.dumps({"config_hash": "1" * 64}).encode())
    with pytest.raises(OutputError, match="interrupted upload of another config"):
        check_target(url, cfg, "resume")
    with pytest.raises(OutputError, match=r"has no manifest\.json"):
        upload_release(expected.release_dir / "shards", url)  # not a complete release


def test_work_dir_default_is_next_to_the_config_and_per_url(tmp_path: Path) -> None:
    cfg = parse_config(minimal_config(), base_dir=str(tmp_path))
    a, b = work_dir_for(cfg, "s3://b/one"), work_dir_for(cfg, "s3://b/two")
    assert a.parent == b.parent == tmp_path / ".geodelta-work"
    assert a.name.startswith("test-0.0.1-") and a != b
    set_dir = parse_config(
        minimal_config(output={"dir": "s3://b/x", "work_dir": "w"}), base_dir=str(tmp_path)
    )
    assert work_dir_for(set_dir, "s3://b/x") == tmp_path / "w"


def test_unknown_scheme_names_the_package() -> None:
    with pytest.raises(OutputError, match=r"cannot open output\.dir 'nosuch://"):
        Target.parse("nosuch://bucket/release")


def test_cli_out_accepts_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from geodelta.pipelines import cli

    seen: dict[str, Any] = {}

    def fake_run_build(cfg: Any, mode: str, progress: bool, **_: Any) -> Any:
        seen["cfg"] = cfg
        raise cli._fail("stubbed")

    monkeypatch.setattr(cli, "_run_build", fake_run_build)
    args = [
        "build",
        str(REPO / "configs" / "demo.yaml"),
        "--out",
        "memory://b/r",
        "--work-dir",
        "w",
    ]
    CliRunner().invoke(cli.app, args)
    assert seen["cfg"].output.dir == "memory://b/r"
    assert seen["cfg"].output.work_dir == str(Path("w").resolve())
    assert fsspec.core.url_to_fs(seen["cfg"].resolve(seen["cfg"].output.dir))[1] == "/b/r"


def test_urls_are_shown_without_secrets() -> None:
    from geodelta.pipelines.release.upload import shown

    assert shown("az://user:pw@container/rel?sv=1&sig=SECRET") == "az://container/rel"
    assert shown("memory://b/r") == "memory://b/r"
    with pytest.raises(OutputError) as err:
        Target.parse("nosuch://k:SECRET@bucket/release?sig=SECRET")
    assert "SECRET" not in str(err.value) and err.value.url == "nosuch://bucket/release"
