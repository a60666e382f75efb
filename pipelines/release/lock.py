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

**On an object store** (a release or a staging area at an ``s3://``, ``gs://``, ``az://``,
``memory://``... URL) there is no ``flock``: :func:`hold_lease` holds a *lease* instead, a folder
beside the location (:data:`~geodelta.pipelines.release.layout.BUILD_LEASE`) with one small
JSON object per holder (pid, host, start time, heartbeat): ``build.json`` for a build (exclusive),
``cells-<id>.json`` for each orchestrator cell task (shared). A thread rewrites the holder's
heartbeat every :data:`LEASE_HEARTBEAT_S` seconds while the build runs; the object is deleted
when it ends. A holder whose heartbeat is older than :data:`LEASE_STALE_BEATS` heartbeats (a
build that was killed: nothing removes its object) is stale: the next build takes it over and
logs whom it replaced. A fresh holder is refused, by name, as with the flock. ``build.json`` is
created with a conditional PUT (``If-None-Match: *``, fsspec's ``mode="create"``; S3 and moto
honour it), so of two builds starting at once one gets it. Between a build and a cell task
(different objects) each writes its own object then lists the others, and backs out when it
sees a fresh conflicting one: both may back out, never both go ahead. Filesystems without a
conditional create (fsspec checks, then writes) leave a small race there, narrowed by reading
the object back. Staleness compares the holder's heartbeat with this machine's clock: clocks
more than a minute apart could take over a live lease.

:func:`hold_place` picks the flock or the lease for a location.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from geodelta.errors import BuildError
from geodelta.pipelines.release.layout import BUILD_LEASE, BUILD_LOCK, OVERWRITE_OLD, beside

__all__ = [
    "LEASE_HEARTBEAT_S",
    "LEASE_STALE_BEATS",
    "Lease",
    "OutputBusyError",
    "hold_lease",
    "hold_output",
    "hold_place",
    "lock_path",
    "restore_swapped",
    "swap_in",
]

_log = logging.getLogger(__name__)

#: Seconds between two heartbeats of a lease holder.
LEASE_HEARTBEAT_S = 10.0
#: Heartbeats a lease holder may miss before its lease is stale (taken over by the next build).
LEASE_STALE_BEATS = 6
#: The exclusive holder's object in a lease folder (a shared holder's: ``cells-<id>.json``).
_LEASE_BUILD = "build.json"


class OutputBusyError(BuildError):
    """Another geodelta process holds the output folder's lock; names it."""


def lock_path(release_dir: str | Path) -> Path:
    """The lock file of a release folder (beside it)."""
    return beside(release_dir, BUILD_LOCK)


#: How long a refused build waits for the holder to write its name into the lock file: a build
#: takes the lock, then writes its pid; one refused in between would name nobody.
HOLDER_WAIT_S = 1.0


def _holder(path: Path, wait_s: float = HOLDER_WAIT_S) -> str:
    """Who holds the lock, as its file tells (pid, host, start time); waits up to ``wait_s``
    for a holder that has just taken it to write its name (cell tasks never do)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if info.get("pid") or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
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


# -- the lease: the build lock on an object store ----------------------------------------------


def _lease_holder(info: dict[str, Any], now: float) -> str:
    started = time.strftime(
        "%Y-%m-%d %H:%M:%S %Z", time.localtime(float(info.get("started", 0) or 0))
    )
    beat = now - float(info.get("heartbeat", 0) or 0)
    return (
        f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {started}, last "
        f"heartbeat {max(beat, 0):.0f} s ago"
    )


class Lease:
    """The build lease of a location at an fsspec URL (see the module docstring).

    Args:
        url: the release or staging area the lease protects (need not exist).
        shared: a cell task's shared hold instead of a build's exclusive one.
        heartbeat_s: seconds between heartbeats.
        stale_beats: heartbeats missed before the lease is stale.

    Raises:
        BuildError: the URL names a bucket's root (a lease lives beside its location: name a
            folder inside the bucket), or its filesystem cannot be opened.
    """

    def __init__(
        self,
        url: str,
        *,
        shared: bool = False,
        heartbeat_s: float = LEASE_HEARTBEAT_S,
        stale_beats: int = LEASE_STALE_BEATS,
    ) -> None:
        import fsspec

        from geodelta.pipelines.release.upload import shown

        self.url = shown(url)
        try:
            self.fs, path = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise BuildError(f"cannot open {self.url}: {exc}") from None
        parent, _, name = str(path).rstrip("/").rpartition("/")
        if not parent or not name:
            raise BuildError(
                f"{self.url} is the root of a bucket; a build needs a folder inside it (e.g. "
                f"{self.url.rstrip('/')}/release) for the lease it keeps beside it"
            )
        self.folder = f"{parent}/.{name}{BUILD_LEASE}"
        self.shared = shared
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = heartbeat_s * stale_beats
        self.id = uuid.uuid4().hex
        self.name = f"cells-{self.id}.json" if shared else _LEASE_BUILD
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _path(self, name: str) -> str:
        return f"{self.folder}/{name}"

    def _info(self, started: float) -> bytes:
        info = {
            "id": self.id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": started,
            "heartbeat": time.time(),
            "stale_after_s": self.stale_after_s,
            "shared": self.shared,
        }
        return json.dumps(info, sort_keys=True).encode()

    def holders(self) -> dict[str, dict[str, Any]]:
        """Every holder's object in the lease folder: name -> its content (fresh listing)."""
        self.fs.invalidate_cache(self.folder)
        try:
            names = [str(p) for p in self.fs.ls(self.folder, detail=False)]
        except FileNotFoundError:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for path in names:
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if not name.endswith(".json"):
                continue
            try:
                data = json.loads(self.fs.cat_file(path))
            except FileNotFoundError:
                continue  # released meanwhile
            except ValueError:
                data = {}  # half-written by a store without atomic PUTs: treat as stale
            out[name] = data if isinstance(data, dict) else {}
        return out

    def _stale(self, info: dict[str, Any], now: float) -> bool:
        limit = float(info.get("stale_after_s") or self.stale_after_s)
        return now - float(info.get("heartbeat", 0) or 0) > limit

    def _conflicts(self, name: str, info: dict[str, Any]) -> bool:
        """Whether holder ``name`` excludes this one (a build excludes everyone; cell tasks
        exclude only a build)."""
        if info.get("id") == self.id:
            return False
        return not self.shared or name == _LEASE_BUILD

    def _busy(self, info: dict[str, Any], now: float) -> OutputBusyError:
        return OutputBusyError(
            f"{self.url} is being built by {_lease_holder(info, now)} (lease {self.folder}); wait "
            "for it to finish (or stop it), then run again"
        )

    def acquire(self) -> None:
        """Take the lease, then start the heartbeat thread.

        Raises:
            OutputBusyError: a fresh conflicting holder; names it.
            BuildError: the store cannot be written.
        """
        now = time.time()
        for name, info in sorted(self.holders().items()):
            if not self._conflicts(name, info):
                continue
            if not self._stale(info, now):
                raise self._busy(info, now)
            _log.warning(
                "taking over the stale build lease of %s: %s", self.url, _lease_holder(info, now)
            )
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._path(name))
        started = time.time()
        try:
            self.fs.pipe_file(self._path(self.name), self._info(started), mode="create")
        except FileExistsError:  # another build took it between our listing and our write
            info = self.holders().get(self.name, {})
            raise self._busy(info, time.time()) from None
        except Exception as exc:
            raise BuildError(
                f"cannot write the build lease beside {self.url} ({type(exc).__name__}: {exc})"
            ) from None
        self._started = started
        mine = self.holders()
        if mine.get(self.name, {}).get("id") != self.id:  # overwritten (no conditional create)
            raise self._busy(mine.get(self.name, {}), time.time())
        now = time.time()
        for name, info in sorted(mine.items()):
            if self._conflicts(name, info) and not self._stale(info, now):
                self._remove_own()
                raise self._busy(info, now)
        self._thread = threading.Thread(target=self._beat, name="geodelta-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        """Refresh the heartbeat until stopped; never overwrite another holder's object (a
        build that took the lease over while this one looked dead: it is logged)."""
        while not self._stop.wait(self.heartbeat_s):
            try:
                try:
                    current = json.loads(self.fs.cat_file(self._path(self.name)))
                except FileNotFoundError:  # removed by a build taking it over
                    current = {}
                holder = current.get("id") if isinstance(current, dict) else None
                if holder != self.id:
                    _log.error(
                        "build lease of %s was taken over by %s (no heartbeat for over %.0f s): "
                        "another build may now write the same place",
                        self.url,
                        _lease_holder(current if isinstance(current, dict) else {}, time.time()),
                        self.stale_after_s,
                    )
                    return
                self.fs.pipe_file(self._path(self.name), self._info(self._started))
            except Exception as exc:  # a blip: the next beat tries again
                _log.warning("build lease of %s: heartbeat failed (%s)", self.url, exc)

    def _remove_own(self) -> None:
        try:
            data = json.loads(self.fs.cat_file(self._path(self.name)))
        except (FileNotFoundError, ValueError):
            return
        if isinstance(data, dict) and data.get("id") == self.id:  # still ours: not taken over
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._path(self.name))

    def release(self) -> None:
        """Stop the heartbeat and delete this holder's object."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(Exception):  # the lease goes stale anyway
            self._remove_own()


@contextlib.contextmanager
def hold_lease(
    url: str,
    *,
    shared: bool = False,
    heartbeat_s: float = LEASE_HEARTBEAT_S,
    stale_beats: int = LEASE_STALE_BEATS,
) -> Iterator[Lease]:
    """Hold the build lease of ``url`` for the ``with`` block (never waits; see :class:`Lease`).

    Raises:
        OutputBusyError: another build (or, for a build, a cell task) holds a fresh lease.
        BuildError: the lease cannot be written, or ``url`` is a bucket's root.
    """
    lease = Lease(url, shared=shared, heartbeat_s=heartbeat_s, stale_beats=stale_beats)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()


@contextlib.contextmanager
def hold_place(location: str | Path, *, shared: bool = False) -> Iterator[None]:
    """Hold the build lock of a release or staging location: the flock beside a local folder
    (a path or ``file://`` URL, :func:`hold_output`), the lease beside any other URL
    (:func:`hold_lease`)."""
    from geodelta.pipelines.release.staging import local_root

    local = local_root(location)
    if local is not None:
        with hold_output(local, shared=shared):
            yield
        return
    with hold_lease(str(location), shared=shared):
        yield
