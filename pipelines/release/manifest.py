"""The one writer of ``manifest.json``, its checksum file, and the files listed after it.

Every step that writes the manifest goes through :func:`write_manifest`: the files are listed
in path order, ``manifest.sha256`` (``<hex>  manifest.json``, what ``sha256sum -c`` reads) is
written first and ``manifest.json`` last, so an edit of the manifest shows in
:func:`~geodelta.pipelines.release.verify.verify_release`. Files written after the release
(``report/index.html`` by every render of the report, ``reference/`` by train-reference) are
listed with :func:`list_files`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from geodelta._io import json_bytes, sha256_file, write_atomic
from geodelta.errors import ReleaseError
from geodelta.pipelines.release.layout import MANIFEST, MANIFEST_SHA256, read_manifest
from geodelta.schemas import FileInfo, ReleaseManifest
from geodelta.secrets import redact_values

__all__ = [
    "checksum_line",
    "file_info",
    "files_under",
    "list_files",
    "manifest_sha256",
    "recorded_sha256",
    "write_manifest",
]


def checksum_line(sha256: str, name: str) -> str:
    """One line of a ``sha256sum`` file: ``<hex>  <name>``."""
    return f"{sha256}  {name}\n"


def recorded_sha256(path: Path) -> str | None:
    """The hex digest a ``sha256sum``-format file records (its first field), or None when the
    file is missing or empty."""
    try:
        fields = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return None
    return fields[0].lower() if fields else None


def manifest_sha256(release_dir: str | Path) -> str:
    """sha256 of a release's ``manifest.json`` as it is on disk.

    Raises:
        ReleaseError: the release has no manifest.
    """
    path = Path(release_dir) / MANIFEST
    try:
        return sha256_file(path)
    except FileNotFoundError:
        raise ReleaseError(
            f"{path} is missing: the release is incomplete", path=str(path)
        ) from None


def file_info(root: Path, rel: str) -> FileInfo:
    """The manifest entry of one file of a release (size and sha256 as it is now)."""
    path = root / rel
    return FileInfo(path=rel, bytes=path.stat().st_size, sha256=sha256_file(path))


def files_under(root: Path, folder: str) -> list[FileInfo]:
    """Entries of every file under ``root/folder`` (none when it does not exist), path order."""
    base = root / folder
    if not base.is_dir():
        return []
    rels = sorted(p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file())
    return [file_info(root, rel) for rel in rels]


def write_manifest(release_dir: str | Path, manifest: ReleaseManifest) -> ReleaseManifest:
    """Write ``manifest.json`` (files in path order) and ``manifest.sha256``, atomically.

    ``manifest.sha256`` goes first and ``manifest.json`` last: a manifest on disk marks a
    complete release, as before. A registered secret's value never reaches it
    (:func:`geodelta.secrets.redact_values`).

    Returns:
        The manifest as written.
    """
    root = Path(release_dir)
    files = tuple(sorted(manifest.files, key=lambda f: f.path))
    written = manifest.model_copy(update={"files": files})
    dumped = written.model_dump(mode="json", exclude={"mode"} if written.mode is None else None)
    data = redact_values(json_bytes(dumped).decode("utf-8")).encode()
    write_atomic(root / MANIFEST_SHA256, checksum_line(hashlib.sha256(data).hexdigest(), MANIFEST))
    write_atomic(root / MANIFEST, data)
    return written


def list_files(release_dir: str | Path, rels: Iterable[str]) -> ReleaseManifest:
    """List files written after the manifest: each of ``rels`` (relative paths) gets its entry
    with its size and sha256 now (replacing an earlier entry of the same path; a path that is
    no longer there loses its entry), and the manifest is rewritten by :func:`write_manifest`.

    Raises:
        ReleaseError: the release has no (valid) manifest.
    """
    root = Path(release_dir)
    manifest = read_manifest(root)
    wanted = set(rels)
    files = [f for f in manifest.files if f.path not in wanted]
    files += [file_info(root, rel) for rel in sorted(wanted) if os.path.isfile(root / rel)]
    return write_manifest(root, manifest.model_copy(update={"files": tuple(files)}))
