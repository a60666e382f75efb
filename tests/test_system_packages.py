"""``make test`` on a fresh machine: tools/system-packages.sh installs the Debian packages the
tests start when it can, and otherwise stops at once with one line naming them (issue 17: a
fresh `make test` silently skipped 12 tests)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.factories import REPO

SCRIPT = REPO / "tools" / "system-packages.sh"


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def _run(root: Path, *, uid: int, sudo: bool, allow: bool) -> subprocess.CompletedProcess[str]:
    """The script on a machine where no package is installed, as ``uid``, with or without a
    passwordless sudo; apt-get only records what it was asked in ``root/apt.log``. PATH holds
    nothing but the stubs (and grep), so no real sudo or apt-get can be reached."""
    root.mkdir()
    bin_dir = root / "bin"
    bin_dir.mkdir()
    grep = shutil.which("grep")
    assert grep is not None
    (bin_dir / "grep").symlink_to(grep)
    _stub(bin_dir, "dpkg-query", "echo 'unknown ok not-installed'")
    _stub(bin_dir, "id", f"echo {uid}")
    _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {root}/apt.log')
    if sudo:
        _stub(bin_dir, "sudo", '[ "$1" = "-n" ] && shift; [ "$1" = "true" ] && exit 0; exec "$@"')
    env = {"PATH": str(bin_dir), "HOME": str(root)}
    if allow:
        env["GEODELTA_ALLOW_SKIPS"] = "1"
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run([bash, str(SCRIPT)], capture_output=True, text=True, env=env)


def _packages() -> list[str]:
    out = subprocess.run(["bash", str(SCRIPT), "--list"], capture_output=True, text=True)
    return out.stdout.split()


def test_lists_what_the_tests_start() -> None:
    assert {"postgresql", "postgresql-15-postgis-3", "chromium"} <= set(_packages())


def test_cannot_install_stops_with_one_line_naming_them(tmp_path: Path) -> None:
    got = _run(tmp_path / "user", uid=1000, sudo=False, allow=False)
    assert got.returncode == 1
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: missing Debian packages:"), lines
    assert all(pkg in lines[0] for pkg in _packages())
    assert "GEODELTA_ALLOW_SKIPS=1" in lines[0]
    assert not (tmp_path / "user" / "apt.log").exists()


def test_opt_out_warns_and_goes_on(tmp_path: Path) -> None:
    got = _run(tmp_path / "user", uid=1000, sudo=False, allow=True)
    assert got.returncode == 0
    assert got.stderr.startswith("warning: missing Debian packages:")
    assert not (tmp_path / "user" / "apt.log").exists()


def test_root_or_sudo_installs_what_is_missing(tmp_path: Path) -> None:
    as_root = _run(tmp_path / "root", uid=0, sudo=False, allow=False)
    assert as_root.returncode == 0, as_root.stderr
    log = (tmp_path / "root" / "apt.log").read_text().splitlines()
    assert log[0] == "apt-get update -qq"
    assert log[1].startswith("apt-get install") and all(p in log[1] for p in _packages())
    with_sudo = _run(tmp_path / "sudo", uid=1000, sudo=True, allow=False)
    assert with_sudo.returncode == 0, with_sudo.stderr
    assert "apt-get install" in (tmp_path / "sudo" / "apt.log").read_text()
