"""One build per output folder: the build lock, and the swap of an overwritten release.

The lock is an OS lock (``fcntl.flock``) on a file beside the release folder
(:data:`~geodelta.pipelines.release.layout.BUILD_LOCK`, see
:func:`~geodelta.pipelines.release.layout.beside`). The kernel releases it when its holder
exits, however it exits (``kill -9`` included), so a lock left by a dead build never blocks the
next one: the file may stay, the lock does not. Its content names the holder (pid, host, start
time) for the message a second build gets.

A build holds it exclusively; the tasks of an orchestrator that run cells into one staging area
(:func:`geodelta.pipelines.api.build_cells`) hold it shared, so they run side by side but never
beside a build.

:func:`swap_in` puts a release built beside the old one (``--overwrite``) in its place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from geodelta.errors import BuildError
from geodelta.pipelines.release.layout import BUILD_LOCK, OVERWRITE_OLD, beside

__all__ = ["OutputBusyError", "hold_output", "lock_path", "restore_swapped", "swap_in"]


class OutputBusyError(BuildError):
    """Another geodelta process holds the output folder's lock; names it."""


def lock_path(release_dir: str | Path) -> Path:
    """The lock file of a release folder (beside it)."""
    return beside(release_dir, BUILD_LOCK)


def _holder(path: Path) -> str:
    """Who holds the lock, as its file tells (pid, host, start time)."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another geodelta process (orchestrator cell tasks, or a build starting up)"
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(info.get("started", 0))))
    return f"pid {info['pid']} on {info.get('host', '?')}, started {started}"


@contextlib.contextmanager
def hold_output(release_dir: str | Path, *, shared: bool = False) -> Iterator[Path]:
    """Hold the build lock of ``release_dir`` for the ``with`` block (never waits).

    Args:
        release_dir: the release folder (it need not exist; its parent is created).
        shared: hold it shared (cell tasks of one build) instead of exclusively.

    Yields:
        The lock file.

    Raises:
        OutputBusyError: another process holds it; names the holder.
        BuildError: the folder cannot hold a lock file (not writable, a file in the way).
    """
    import fcntl

    release_dir = Path(release_dir)
    path = lock_path(release_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(
            f"cannot create the output folder {path.parent} ({exc.strerror or exc}); set "
            "output.dir (or --out) to a writable folder"
        ) from None
    while True:  # a holder may remove the file between our open and our flock: try again
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BuildError(
                f"cannot write in {path.parent} ({exc.strerror or exc}); set output.dir "
                "(or --out) to a writable folder"
            ) from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(
                f"{release_dir} is being built by {_holder(path)}; wait for it to finish (or "
                "stop it), then run again"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        if not shared:
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        if not shared:  # a shared holder cannot know it is the last one: the file stays
            with contextlib.suppress(OSError):
                path.unlink()
        os.close(fd)


def swap_in(new: str | Path, dest: str | Path) -> None:
    """Put the release folder ``new`` in the place of ``dest`` (which may exist).

    The old release is renamed aside, ``new`` renamed into place, then the old one removed:
    until the last rename the old release is whole, so a crash before it leaves it intact.
    """
    new, dest = Path(new), Path(dest)
    old = beside(dest, OVERWRITE_OLD)
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


def restore_swapped(dest: str | Path) -> bool:
    """Undo a swap that stopped between its two renames: the old release goes back in place.

    Call with the lock held. Returns whether anything was restored.
    """
    dest = Path(dest)
    old = beside(dest, OVERWRITE_OLD)
    if dest.exists() or not old.is_dir():
        return False
    os.replace(old, dest)
    return True
