"""Atomic writes, file hashes, canonical JSON bytes and the no-space error: the one copy of each.

This is the ground floor: it imports nothing from the rest of geodelta.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["compact_json_bytes", "json_bytes", "sha256_file", "tmp_name", "write_atomic"]

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


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
