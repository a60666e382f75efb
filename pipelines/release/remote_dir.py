"""A folder of objects at an fsspec URL, for the staging area on an object store (:mod:`.staging`).

Whole-object writes and reads (concurrent where the filesystem can), fresh listings (never from
fsspec's cache: other processes write too) and deletes that take a missing object as done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

__all__ = ["RemoteDir"]


class RemoteDir:
    """The objects under one URL of an fsspec filesystem that is not a local disk (the staging
    area's, :mod:`.staging`): paths relative to it."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, path = fsspec.core.url_to_fs(self.url)
        self.base = str(path).rstrip("/")

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def write(self, files: dict[str, bytes]) -> None:
        """Write objects (relative path -> bytes), concurrently where the filesystem can."""
        if len(files) == 1:
            ((rel, data),) = files.items()
            self.fs.pipe_file(self.path(rel), data)
        elif files:
            self.fs.pipe({self.path(rel): data for rel, data in files.items()})

    def read(self, rel: str) -> bytes:
        """One object's bytes (``FileNotFoundError`` when missing)."""
        return bytes(self.fs.cat_file(self.path(rel)))

    def read_many(self, rels: Sequence[str]) -> dict[str, bytes | None]:
        """Several objects (relative path -> bytes, None when missing), fetched concurrently
        where the filesystem can. Other errors raise."""
        if not rels:
            return {}
        found = self.fs.cat([self.path(r) for r in rels], on_error="return")
        out: dict[str, bytes | None] = {}
        for rel in rels:
            value = found.get(self.path(rel))
            if isinstance(value, FileNotFoundError) or value is None:
                out[rel] = None
            elif isinstance(value, BaseException):
                raise value
            else:
                out[rel] = bytes(value)
        return out

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def names(self, rel_dir: str) -> list[str]:
        """Names of the objects directly under ``rel_dir`` (fresh listing, never cached)."""
        return sorted(self.sizes(rel_dir))

    def sizes(self, rel_dir: str) -> dict[str, int]:
        """Name -> size of the objects directly under ``rel_dir`` (fresh listing, never cached)."""
        path = self.path(rel_dir)
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        prefix = path.rstrip("/") + "/"
        return {
            str(e["name"])[len(prefix) :]: int(e.get("size") or 0)
            for e in entries
            if e.get("type") == "file" and str(e["name"]).startswith(prefix)
        }

    def remove(self, rels: Sequence[str]) -> None:
        """Delete objects; missing ones are not an error."""
        for rel in rels:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path(rel))

    def remove_tree(self, rel: str) -> None:
        path = self.path(rel) if rel else self.base
        self.fs.invalidate_cache(path)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)
        self.fs.invalidate_cache(path)
