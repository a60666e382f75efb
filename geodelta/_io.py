"""Atomic writes, file hashes (one by one, or ahead in a child process), canonical JSON bytes and
the no-space error: the one copy of each.

This is the ground floor: it imports nothing from the rest of geodelta.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "HashAhead",
    "compact_json_bytes",
    "file_stamp",
    "json_bytes",
    "sha256_file",
    "tmp_name",
    "write_atomic",
]

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


#: A file as :func:`file_stamp` sees it: (inode, size, modification time in ns).
Stamp = tuple[int, int, int]


def file_stamp(st: os.stat_result) -> Stamp:
    """(inode, size, modification time in ns) of a ``stat`` result: the same stamp before and
    after a read, the bytes read are the file's."""
    return (st.st_ino, st.st_size, st.st_mtime_ns)


#: Below this many bytes in all, :class:`HashAhead` hashes each file when it is asked for: a
#: child process (~30 ms to start) would not pay for itself.
AHEAD_MIN_BYTES = 64 << 20

#: The child of :class:`HashAhead`: reads every path first (hex of its bytes, one a line: no
#: pipe fills while the parent still writes), then writes one line a path, in order:
#: ``<sha256> <inode> <size> <mtime ns>``, or ``-`` (unreadable, or written while hashed).
_CHILD = """
import hashlib, os, sys
paths = [bytes.fromhex(x) for x in sys.stdin.read().split()]
for path in paths:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            h = hashlib.file_digest(f, "sha256")
        now = os.stat(path)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != stamp:
            raise OSError("written while hashed")
        line = "%s %d %d %d" % ((h.hexdigest(),) + stamp)
    except OSError:
        line = "-"
    sys.stdout.write(line + chr(10))
    sys.stdout.flush()
"""


class HashAhead:
    """The sha256 of files hashed ahead of their use, in order, by a child process.

    The caller (a release's verify, the reuse stage of ``build --from``) does its Python work
    meanwhile; on a machine with a core to spare the digests then cost it no wall time. A
    process, not a thread: a thread hashing beside busy Python code waits for the GIL after
    each read (up to the 5 ms switch interval), and slows that code down as much. Each digest
    is tied to the file's :func:`file_stamp` while it was read; :meth:`sha256` returns it only
    for a file that has that stamp still, else it hashes the file itself, as it does below
    ``min_bytes`` in all (no child started) or when the child cannot start or dies. A context
    manager: on exit the child is stopped, whatever it had left to hash.

    Args:
        paths: the files to hash, in the order they will be asked for.
        min_bytes: the bytes to hash (the files' sizes now) below which no child is started
            (default :data:`AHEAD_MIN_BYTES`).
    """

    def __init__(self, paths: Iterable[str | Path], *, min_bytes: int | None = None) -> None:
        self._order = [str(p) for p in paths]
        self._index = {p: i for i, p in enumerate(self._order)}
        self._got: dict[int, tuple[str, Stamp] | None] = {}
        self._read = 0
        self._child: Any = None
        total = 0
        for p in self._order:
            with contextlib.suppress(OSError):
                total += os.stat(p).st_size
        if total < (AHEAD_MIN_BYTES if min_bytes is None else min_bytes) or not self._order:
            return
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-I", "-c", _CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            assert self._child.stdin is not None
            self._child.stdin.write("\n".join(os.fsencode(p).hex() for p in self._order))
            self._child.stdin.close()
        except OSError:  # no process to start, or it died at once: hashed here
            self.close()

    def _result(self, i: int) -> tuple[str, Stamp] | None:
        """The child's line for the ``i``-th path (those before it kept); None when it could
        not hash the file, or is gone."""
        while self._child is not None and self._read <= i:
            line = self._child.stdout.readline().split()
            if not line:  # ended before its last path: what is left is hashed here
                self.close()
                break
            got = None
            if len(line) == 4:
                got = (line[0], (int(line[1]), int(line[2]), int(line[3])))
            self._got[self._read] = got
            self._read += 1
        return self._got.pop(i, None)

    def ahead(self, path: str | Path, stamp: Stamp) -> str | None:
        """The sha256 the child computed of ``path`` when the file had ``stamp`` (the caller's,
        of the file as it reads it now); None when it has none for that stamp (asked once)."""
        i = self._index.pop(str(path), None)
        got = self._result(i) if i is not None else None
        return got[0] if got is not None and got[1] == stamp else None

    def sha256(self, path: str | Path, stamp: Stamp | None = None) -> str:
        """The sha256 of ``path`` now: :meth:`ahead`'s, else hashed here (``stamp``: the
        caller's, taken from the file it holds open or has just stat'ed; default: ``stat`` now).

        Raises:
            OSError: the file cannot be read (as :func:`sha256_file`).
        """
        if str(path) in self._index:
            digest = self.ahead(path, stamp if stamp is not None else file_stamp(os.stat(path)))
            if digest is not None:
                return digest
        return sha256_file(path)

    def close(self) -> None:
        """Stop the child (what it had left to hash is not needed)."""
        child, self._child = self._child, None
        if child is not None:
            child.kill()
            child.wait()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        self._got.clear()

    def __enter__(self) -> HashAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tmp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path``, unique per process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write a file atomically: a temporary file in the same folder, then :func:`os.replace`.

    Readers see the old content or the new one, never a part; the parent folder is created.
    Text is written as UTF-8.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_bytes(data: Any, *, default: Any = None) -> bytes:
    """The release's JSON layout: sorted keys, indent 2, UTF-8, a final newline.

    Args:
        data: what to write.
        default: passed to :func:`json.dumps` for values JSON cannot hold (e.g. ``str``).
    """
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, default=default)
    return (text + "\n").encode("utf-8")


def compact_json_bytes(data: Any) -> bytes:
    """Compact canonical JSON (sorted keys, no spaces, UTF-8): what sample members hold."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def no_space(exc: BaseException) -> OSError | None:
    """The 'no space left on device' error in ``exc``'s chain (Beam wraps worker errors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return seen
        if "[Errno 28]" in str(seen) or "No space left on device" in str(seen):
            return OSError(errno.ENOSPC, "No space left on device")
        seen = seen.__cause__ or seen.__context__
    return None
