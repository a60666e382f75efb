"""The command line refuses what it does not understand (issue 12, section 2).

Each case runs ``geodelta`` (typer's CliRunner on the app; two processes for the lock) and
asserts the exit code and the one line it prints: unknown options, ``--resume`` on a release of
another config, ``--overwrite`` that fails half way (the old release stays), a second build on
the same folder, user mistakes without a traceback (``--debug`` shows it), text printed
literally (square brackets survive).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from geodelta.pipelines.cli import app
from tests.conftest import REPO, minimal_config

runner = CliRunner()


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _one_error(res: Any, code: int = 2) -> str:
    """The single line a refused command prints (asserts there is exactly one, no traceback)."""
    assert res.exit_code == code, res.output
    lines = _lines(res.stderr)
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.output
    assert lines[0].startswith("error: ")
    return lines[0]


def _config(tmp: Path, catalog: Any, out: Path, **extra: Any) -> Path:
    """configs/demo.yaml over a small demo catalog, in-process, no GX: a YAML file."""
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["catalog"]["url"] = str(catalog.catalog_path)
    data["aoi"] = {"bbox": list(catalog.aoi_bbox)}
    data["output"] = {"dir": str(out)}
    data["grid"]["keep"] = "intersects"  # cells at the edge of the small AOI too
    data["runner"] = {"name": "inprocess"}
    data["validation"] = {"great_expectations": False}
    data.update(extra)
    path = tmp / f"config-{len(list(tmp.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A demo catalog at scale 0.1, a config over it and its release, built through the CLI."""
    from geodelta.sources.demo.catalog import write_demo_catalog

    root = tmp_path_factory.mktemp("refusals")
    catalog = write_demo_catalog(root / "catalog", seed=0, scale=0.1)
    release = root / "release"
    config = _config(root, catalog, release)
    res = runner.invoke(app, ["build", str(config), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (release / "manifest.json").is_file()
    return {"root": root, "catalog": catalog, "config": config, "release": release}


def _copy_release(small: dict[str, Any], tmp: Path) -> tuple[Path, Path]:
    """A copy of the small release and a config that builds into it."""
    release = tmp / "release"
    shutil.copytree(small["release"], release)
    return release, _config(tmp, small["catalog"], release)


# -- unknown options ---------------------------------------------------------------------------


def test_unknown_option_is_refused_with_the_close_match(small: dict[str, Any]) -> None:
    res = runner.invoke(app, ["build", str(small["config"]), "--ouput", "out/x"])
    assert res.exit_code == 2, res.output
    assert "No such option: --ouput" in res.output
    assert "--out" in res.output.split("--ouput", 1)[1]  # "Did you mean --out?"


def test_beam_options_pass_after_the_double_dash(tmp_path: Path) -> None:
    # After `--` an option is Beam's: it is not refused as unknown (the missing file is).
    res = runner.invoke(app, ["build", str(tmp_path / "nope.yaml"), "--", "--flink_master=h:1"])
    line = _one_error(res)
    assert "file not found" in res.stderr and "No such option" not in res.output, line


def test_a_stray_argument_before_the_double_dash_is_refused(small: dict[str, Any]) -> None:
    res = runner.invoke(app, ["build", str(small["config"]), "extra"])
    line = _one_error(res)
    assert "unexpected argument 'extra'" in line


# -- resume and overwrite ----------------------------------------------------------------------


def test_resume_of_a_finished_release_of_another_config_names_both_hashes(
    small: dict[str, Any], tmp_path: Path
) -> None:
    from geodelta.pipelines import api

    release, _ = _copy_release(small, tmp_path)
    before = (release / "manifest.json").read_bytes()
    other = _config(tmp_path, small["catalog"], release, version="0.2.0")
    old_hash = api.read_manifest(release).config_hash
    new_hash = api.load_config(other).config_hash()
    assert old_hash != new_hash
    line = _one_error(runner.invoke(app, ["build", str(other), "--resume", "--no-progress"]))
    assert old_hash[:12] in line and new_hash[:12] in line, line
    assert "finished release built from another config" in line
    assert (release / "manifest.json").read_bytes() == before


def test_overwrite_that_fails_leaves_the_old_release_intact(
    small: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geodelta.pipelines import api
    from geodelta.pipelines.release import assemble

    release, config = _copy_release(small, tmp_path)
    files = {p.relative_to(release): p.read_bytes() for p in release.rglob("*") if p.is_file()}

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise api.BuildError("simulated failure while writing the release")

    monkeypatch.setattr(assemble, "write_release", broken)
    line = _one_error(runner.invoke(app, ["build", str(config), "--overwrite", "--no-progress"]))
    assert "simulated failure" in line
    after = {p.relative_to(release): p.read_bytes() for p in release.rglob("*") if p.is_file()}
    assert after == files  # not one byte of the old release changed
    assert api.verify(release).ok
    monkeypatch.undo()
    res = runner.invoke(app, ["build", str(config), "--overwrite", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (release / "manifest.json").read_bytes() == files[Path("manifest.json")]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_overwrite_swap_cut_between_its_renames_is_restored(
    small: dict[str, Any], tmp_path: Path
) -> None:
    from geodelta.pipelines.release.layout import OVERWRITE_OLD, beside

    release, config = _copy_release(small, tmp_path)
    os.replace(release, beside(release, OVERWRITE_OLD))  # died after the first rename
    res = runner.invoke(app, ["build", str(config), "--resume", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (release / "manifest.json").is_file()
    assert not beside(release, OVERWRITE_OLD).exists()


# -- the lock ----------------------------------------------------------------------------------

_HOLD = """
import sys, time
from geodelta.pipelines.release.lock import hold_output
with hold_output(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(release: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(release)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("mode", ["--resume", "--overwrite"])
def test_a_second_build_on_the_same_folder_is_refused_naming_the_holder(
    small: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    import socket

    release, config = _copy_release(small, tmp_path)
    before = (release / "manifest.json").read_bytes()
    proc = _holder(release)
    try:
        line = _one_error(runner.invoke(app, ["build", str(config), mode, "--no-progress"]))
        assert f"is being built by pid {proc.pid} on {socket.gethostname()}, started" in line
        assert (release / "manifest.json").read_bytes() == before
    finally:
        proc.send_signal(signal.SIGKILL)  # the lock dies with its holder (stale-safe)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    res = runner.invoke(app, ["build", str(config), mode, "--no-progress"])
    assert res.exit_code == 0, res.output


def test_two_builds_in_two_processes_one_is_refused(small: dict[str, Any], tmp_path: Path) -> None:
    _, config = _copy_release(small, tmp_path)
    cmd = [sys.executable, "-m", "geodelta.pipelines.cli", "build", str(config), "--resume",
           "--no-progress"]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    errs = [err for (_, err), p in zip(outs, procs, strict=True) if p.returncode != 0]
    if codes == [0, 0]:  # the first finished before the second started: nothing raced
        return
    assert codes == [0, 2], outs
    assert "is being built by pid" in errs[0] and "Traceback" not in errs[0], errs[0]


# -- user mistakes: one line, exit 2, the traceback only with --debug --------------------------


def test_output_path_that_is_a_file(small: dict[str, Any], tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = _one_error(runner.invoke(app, ["build", str(small["config"]), "--out", str(afile)]))
    assert f"output {afile} is a file" in line


def test_output_under_a_file_cannot_be_created(small: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub" / "release"
    line = _one_error(runner.invoke(app, ["build", str(small["config"]), "--out", str(out)]))
    assert "cannot create the output folder" in line and "afile" in line


def test_output_not_writable(small: dict[str, Any], tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing; sysfs refuses even root
        locked = Path("/sys/kernel")
    line = _one_error(
        runner.invoke(app, ["build", str(small["config"]), "--out", str(locked / "release")])
    )
    assert str(locked) in line


def test_disk_full_names_the_path_and_the_space(
    small: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geodelta.pipelines.release import assemble

    full = tmp_path / "release" / "shards" / "train-000000.tar"

    def no_space(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", str(full))

    monkeypatch.setattr(assemble, "write_release", no_space)
    config = _config(tmp_path, small["catalog"], tmp_path / "release")
    line = _one_error(runner.invoke(app, ["build", str(config), "--no-progress"]))
    assert f"no space left on device writing {full}" in line
    assert "the build needs about" in line and "MB free" in line, line


def test_config_that_is_a_folder_or_not_utf8(tmp_path: Path) -> None:
    res = runner.invoke(app, ["build", str(tmp_path)])
    assert res.exit_code == 2 and "is a folder; pass the YAML file" in res.stderr, res.output
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    res = runner.invoke(app, ["plan", str(latin)])
    assert res.exit_code == 2 and "not UTF-8" in res.stderr, res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    "content", [b"{not json", b"\xff\xfe\x00binary", b'{"type": "Point", "coordinates": [6, 45]}']
)
def test_bad_aoi_geojson_is_one_line(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "aoi.geojson").write_bytes(content)
    data = minimal_config(aoi={"geojson": "aoi.geojson"})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    line = _one_error(runner.invoke(app, ["plan", str(tmp_path / "c.yaml")]))
    assert "aoi" in line or "UTF-8" in line, line


def _corrupt_copy(small: dict[str, Any], tmp_path: Path) -> tuple[Path, Path]:
    release, _ = _copy_release(small, tmp_path)
    shard = sorted((release / "shards").glob("*.tar"))[0]
    shard.write_bytes(b"this is not a tar archive" * 100)
    return release, shard


def test_corrupt_shard_given_to_qa_balance(small: dict[str, Any], tmp_path: Path) -> None:
    release, shard = _corrupt_copy(small, tmp_path)
    line = _one_error(runner.invoke(app, ["qa-balance", str(release)]))
    assert f"shard {shard} cannot be read" in line


def test_corrupt_shard_given_to_train_reference(small_shards_release: Any, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    release = tmp_path / "release"
    shutil.copytree(small_shards_release.release_dir, release)
    shard = sorted((release / "shards").glob("train-*.tar"))[0]
    shard.write_bytes(b"this is not a tar archive" * 100)
    res = runner.invoke(app, ["train-reference", str(release), "--epochs", "1", "--workers", "0"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    errors = [ln for ln in _lines(res.stderr) if ln.startswith("error: ")]  # after progress lines
    assert len(errors) == 1 and shard.name in errors[0], res.stderr


def test_debug_shows_the_traceback(small: dict[str, Any], tmp_path: Path) -> None:
    release, _ = _corrupt_copy(small, tmp_path)
    res = runner.invoke(app, ["--debug", "qa-balance", str(release)])
    assert res.exit_code != 0
    from geodelta.errors import ReleaseError

    assert isinstance(res.exception, ReleaseError)  # raised through, not turned into one line


# -- literal messages --------------------------------------------------------------------------


def test_square_brackets_print_literally(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(minimal_config(name="Bad Name")))
    res = runner.invoke(app, ["plan", str(tmp_path / "c.yaml")])
    assert res.exit_code == 2
    assert "^[a-z0-9][a-z0-9._-]*$" in res.stderr, res.stderr
    stamp = minimal_config(time={"t0": ["2020-06-01", "2020-08-31", "2020-09-30"]})
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(stamp))
    res = runner.invoke(app, ["plan", str(tmp_path / "w.yaml")])
    assert res.exit_code == 2
    assert "2020-09-30" in res.stderr, res.stderr  # the value, in brackets, survives


def test_say_prints_markup_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    from geodelta.pipelines import cli

    cli._say("[bold]x[/] and [2020-01-01, 2020-02-01]", "error: ", "red")
    assert "[bold]x[/] and [2020-01-01, 2020-02-01]" in capsys.readouterr().err


def test_lock_file_is_gone_after_a_build(small: dict[str, Any]) -> None:
    from geodelta.pipelines.release.lock import lock_path

    assert not lock_path(small["release"]).exists()
    assert json.loads((small["release"] / "manifest.json").read_text())["splits"]
    time.sleep(0)


def test_a_failed_overwrite_advises_overwrite_not_resume() -> None:
    """An --overwrite build works beside the old release: --resume would not finish it, so its
    breaker, empty-result and incomplete-run messages name the option the build was run with."""
    from collections import Counter

    from geodelta.pipelines.build import IncompleteBuildError, _check_done, _empty_message
    from geodelta.pipelines.engines.breaker import Trip, breaker_message
    from geodelta.schemas import QuarantineRecord

    record = QuarantineRecord(key="k", cell_id="c", stage="pair", reason="read_error", detail="x")
    trip = Trip("pair", "read_error", ("c",), record)
    empty = _empty_message(
        Counter({"pair:read_error": 3}), {}, 3, "no release was written", "--overwrite"
    )
    for line in (breaker_message(trip, 32, "--overwrite"), empty):
        assert "re-run with --overwrite" in line and "--resume" not in line, line
    assert "re-run with --resume" in breaker_message(trip, 32)  # the default: a --resume build

    class _Staging:
        def done_cells(self) -> set[str]:
            return set()

    with pytest.raises(IncompleteBuildError, match=r"re-run with --overwrite$"):
        _check_done(_Staging(), {"c"}, "--overwrite")


def test_a_build_refused_just_after_another_took_the_lock_names_the_holder(
    tmp_path: Path,
) -> None:
    """The holder takes the lock, then writes its pid: a build refused in between waits for the
    name instead of naming nobody (the race the two-process test above can hit)."""
    import fcntl
    import json
    import threading

    from geodelta.pipelines.release.lock import OutputBusyError, hold_output, lock_path

    release = tmp_path / "release"
    path = lock_path(release)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken, no name written yet

        def name_it() -> None:
            os.pwrite(fd, json.dumps({"pid": 4242, "host": "h", "started": 0}).encode(), 0)

        timer = threading.Timer(0.2, name_it)
        timer.start()
        with (
            pytest.raises(OutputBusyError, match="is being built by pid 4242 on h"),
            hold_output(release),
        ):
            pass
        timer.join()
    finally:
        os.close(fd)
