"""The staging area: where workers put finished samples before the release is assembled.

One unit of work is one grid cell. A worker puts each of the cell's samples, all its members in
one file (:meth:`Staging.put_sample`), then writes the cell's completion marker
(:meth:`Staging.mark_cell`) listing its sample keys and its quarantine records. Only markers
count: a sample without a marker (a worker that died half way) is ignored, and a re-run of the
cell overwrites it.

The root is a local folder (a path, or a ``file://`` URL) or any other fsspec URL
(``s3://``, ``gs://``, ``az://``, ``memory://``...); the layout and the public API are the same:

- **local folder**: every write is atomic (a temp file in the same filesystem, then
  :func:`os.replace`, which also replaces an earlier copy whole), so several worker processes can
  write different cells concurrently, or the same cell twice.
- **object store**: there is no rename. A sample is one object written whole by a single PUT,
  then (by the caller) the cell's marker: the marker is the commit point, one object written
  whole by a single PUT, so a reader sees a cell as done only once everything it names is in
  place. A retried task (an engine that runs a cell again) writes identical bytes (same data,
  same bytes), so overwriting is safe; reads check the digests, so a sample changed or replaced
  since is found as locally. Listings are never served from fsspec's cache (other processes
  write too). Credentials come from the environment or the fsspec configuration (for S3 the
  ``AWS_*`` variables, ``AWS_ENDPOINT_URL`` included, which botocore reads), never from the
  build config.

One file per sample, not one per member: creating a file costs ~0.1 ms on a local disk and a
request on an object store, and a sample has a dozen members (measured in RESULTS.md, "Staging
one file per sample").

Layout under ``root``::

    samples/<key>.sample       one file per sample: the line ``geodelta-staged-sample/1``, a
                               JSON line ``{"members": [[name, size, sha256], ...]}`` (names
                               sorted), then the members' bytes in that order. A member that
                               changed since it was written is found by its sha256
                               (:meth:`Staging.corrupt_cells` on ``--resume``; reading it
                               raises), a truncated file by its sizes; neither is sharded
    cells/<cell_id>.json       completion marker: {"cell_id", "keys", "quarantine"}, and
                               "decoded" {key: decode digest} for the samples whose decode
                               checks the worker ran (:meth:`Staging.decode_digests`)
    cells/<digest>.cells       the markers of many cells in one file, {cell id: marker}
                               (:meth:`Staging.mark_cells`: what ``build --from`` marks)
    tmp/                       in-flight writes (local only; safe to delete when no worker runs)
    config.json                the build's stamp (:data:`STAMP_FILE`, written by the build)
    breaker.json               the circuit breaker's trip (:data:`TRIP_FILE`)
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import uuid
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from geodelta._io import write_atomic
from geodelta.errors import ReleaseError
from geodelta.pipelines.release.remote_dir import RemoteDir
from geodelta.schemas import QuarantineRecord

__all__ = [
    "LINKED_CELL",
    "STAMP_FILE",
    "TRIP_FILE",
    "Staging",
    "StagingError",
    "local_root",
    "quarantine_sort_key",
]

_MARKER_SUFFIX = ".json"
#: A file of several cells' markers (:meth:`Staging.mark_cells`), and the most cells in one.
_GROUP_SUFFIX = ".cells"
_GROUP_CELLS = 10_000

#: :meth:`Staging.corrupt_cells`' problem for a cell whose samples a ``--from`` build linked.
LINKED_CELL = (
    "its samples were linked from the previous release of a --from build (linked again with "
    "--from, else processed)"
)
#: A staged sample's file: ``samples/<key>.sample`` (see the module docstring).
_SAMPLE_SUFFIX = ".sample"
#: Its first line.
_SAMPLE_MAGIC = b"geodelta-staged-sample/1\n"
#: The build's stamp in the staging area's root: the config hash and code version it was made
#: with (:mod:`geodelta.pipelines.build`).
STAMP_FILE = "config.json"
#: The circuit breaker's trip in the staging area's root (:mod:`geodelta.pipelines.engines.breaker`).
TRIP_FILE = "breaker.json"
#: The files a build may leave in the root (removed with the staging area); ``reused.json``:
#: the cells a ``build --from`` reused (:mod:`geodelta.pipelines.release.incremental`).
_ROOT_FILES = (
    STAMP_FILE,
    TRIP_FILE,
    "reused.json",
    "snapshot.parquet",  # the build's search snapshot (release/snapshot.py), and its
    "snapshot-release.parquet",  # copy for the release
)
_DIRS = ("samples", "cells", "tmp", "locks")  # locks/: left by geodelta <= 0.1 (per-key flock)
#: Markers read per request batch on an object store.
_BATCH = 256
#: Samples :meth:`Staging.iter_members` reads ahead on an object store.
_READ_AHEAD = 16


class StagingError(ReleaseError):
    """A staging operation that cannot be done; carries the key or cell id concerned.

    A :class:`~geodelta.errors.ReleaseError` (so a ``RuntimeError``).
    """

    def __init__(self, message: str, *, key: str | None = None, cell_id: str | None = None) -> None:
        self.key = key
        self.cell_id = cell_id
        super().__init__(message)


def _check_name(value: str, what: str) -> str:
    """Reject names that would escape their directory or be hidden."""
    if (
        not value
        or value in {".", ".."}
        or value.startswith(".")
        or "/" in value
        or "\\" in value
        or "\x00" in value
    ):
        raise StagingError(
            f"{what} {value!r} cannot be used as a file name (empty, hidden or with a separator)",
            key=value if what != "cell id" else None,
            cell_id=value if what == "cell id" else None,
        )
    return value


def quarantine_sort_key(rec: QuarantineRecord) -> tuple[str, str, str, str, str]:
    """The order of quarantine records everywhere: cell id, key, stage, reason, detail."""
    return (rec.cell_id, rec.key, rec.stage, rec.reason, rec.detail)


#: A local sample read, as :meth:`Staging._unpacked` keeps it.
_Cached = tuple[tuple[str, int, int, int], tuple[dict[str, str], dict[str, bytes]]]


def pack_sample(members: dict[str, bytes]) -> bytes:
    """A staged sample's file (see the module docstring): header, then the members' bytes."""
    names = sorted(members)
    header = [[n, len(members[n]), hashlib.sha256(members[n]).hexdigest()] for n in names]
    line = json.dumps({"members": header}, separators=(",", ":")).encode("ascii")
    return b"".join([_SAMPLE_MAGIC, line, b"\n", *(bytes(members[n]) for n in names)])


def unpack_sample(raw: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """(member name -> recorded sha256, member name -> bytes) of a staged sample's file; the
    bytes are not checked against the digests here (:meth:`Staging.read_members` does).

    Raises:
        ValueError: not a staged sample, an unreadable header, or a file shorter or longer than
            its header says (the message says which).
    """
    if not raw.startswith(_SAMPLE_MAGIC):
        raise ValueError("not a staged sample (no header line)")
    end = raw.find(b"\n", len(_SAMPLE_MAGIC))
    try:
        if end < 0:
            raise ValueError("no end of header")
        entries = json.loads(raw[len(_SAMPLE_MAGIC) : end])["members"]
        table = [(str(n), int(size), str(digest)) for n, size, digest in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"no readable checksums ({exc})") from None
    body = memoryview(raw)[end + 1 :]
    want = sum(size for _, size, _ in table)
    if len(body) != want or any(size < 0 for _, size, _ in table):
        raise ValueError(f"{len(body)} bytes of members where its header lists {want}: truncated")
    digests: dict[str, str] = {}
    members: dict[str, bytes] = {}
    at = 0
    for name, size, digest in table:
        digests[name] = digest
        members[name] = bytes(body[at : at + size])
        at += size
    return digests, members


def local_root(root: str | Path) -> Path | None:
    """The local folder a staging root names (a path or a ``file://`` URL), or None for any
    other URL (an object store, ``memory://``)."""
    if isinstance(root, Path):
        return root
    if root.startswith("file://"):
        return Path(root.removeprefix("file://"))
    if "://" in root:
        return None
    return Path(root)


class Staging:
    """A staging area in a local folder or at an fsspec URL (see the module docstring).

    Args:
        root: the folder (a path or ``file://`` URL; created when missing) or the URL of the
            staging area (nothing is created until something is written).

    Attributes:
        root: the local folder (a :class:`~pathlib.Path`), or the URL (a ``str``, no trailing
            slash) of an object-store staging area.
    """

    def __init__(self, root: str | Path) -> None:
        local = local_root(root)
        self._remote: RemoteDir | None = None
        self.root: Path | str
        if local is None:
            from geodelta.pipelines.release.upload import shown

            self._remote = RemoteDir(str(root))
            self.root = self._remote.url
            self._shown = shown(self._remote.url)  # for messages: no query string, no user
            local = Path(".")  # unused: the local paths below are never touched
        else:
            self.root = local
            self._shown = str(local)
        #: the last local sample read: ((key, inode, size, mtime_ns), (digests, members))
        self._last: _Cached | None = None
        #: the group marker files read: name -> ((size, mtime_ns), {cell id: marker})
        self._parsed: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
        self._samples = local / "samples"
        self._cells = local / "cells"
        self._tmp = local / "tmp"
        if self._remote is None:
            for d in (self._samples, self._cells, self._tmp):
                d.mkdir(parents=True, exist_ok=True)

    @property
    def is_local(self) -> bool:
        """Whether the staging area is a local folder (else an object store)."""
        return self._remote is None

    def _tmp_path(self, stem: str) -> Path:
        return self._tmp / f"{stem}.{os.getpid()}.{uuid.uuid4().hex}"

    # -- root-level files (the build's stamp, the breaker's trip) ----------------------------

    def put_file(self, name: str, data: bytes | str) -> None:
        """Write a file in the root (atomically locally; one PUT on an object store)."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if self._remote is not None:
            self._remote.write({_check_name(name, "file name"): raw})
        else:
            write_atomic(Path(self.root) / _check_name(name, "file name"), raw)

    def get_file(self, name: str) -> bytes | None:
        """A file of the root, or None when it is missing."""
        try:
            if self._remote is not None:
                return self._remote.read(_check_name(name, "file name"))
            return (Path(self.root) / _check_name(name, "file name")).read_bytes()
        except FileNotFoundError:
            return None

    def has_file(self, name: str) -> bool:
        """Whether the root holds the file ``name``."""
        if self._remote is not None:
            return self._remote.exists(_check_name(name, "file name"))
        return (Path(self.root) / _check_name(name, "file name")).is_file()

    def remove_file(self, name: str) -> None:
        """Delete a file of the root (missing: nothing to do)."""
        if self._remote is not None:
            self._remote.remove([_check_name(name, "file name")])
        else:
            (Path(self.root) / _check_name(name, "file name")).unlink(missing_ok=True)

    # -- samples and markers ---------------------------------------------------------------

    def put_sample(self, key: str, members: dict[str, bytes]) -> None:
        """Store the members of one sample, replacing any earlier copy of the same key.

        All members go into one file (one object), written atomically: locally a temp file
        renamed into place; on an object store a single PUT.

        Args:
            key: sample key.
            members: member name -> bytes.

        Raises:
            StagingError: a bad key or member name, or no members.
        """
        _check_name(key, "sample key")
        if not members:
            raise StagingError(f"sample {key} has no members", key=key)
        for name in members:
            _check_name(name, "member name")
        packed = pack_sample(members)
        self._last = None
        if self._remote is not None:
            self._remote.write({self._sample_rel(key): packed})
            return
        tmp = self._tmp_path(key)
        try:
            tmp.write_bytes(packed)
            os.replace(tmp, self._samples / f"{key}{_SAMPLE_SUFFIX}")
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _sample_rel(key: str) -> str:
        return f"samples/{key}{_SAMPLE_SUFFIX}"

    def _has_sample(self, key: str) -> bool:
        if self._remote is not None:
            return self._remote.exists(self._sample_rel(key))
        return (self._samples / f"{key}{_SAMPLE_SUFFIX}").is_file()

    def mark_cell(
        self,
        cell_id: str,
        *,
        keys: Sequence[str],
        quarantine: Sequence[QuarantineRecord],
        decoded: Mapping[str, str] | None = None,
        linked: bool = False,
    ) -> None:
        """Write the completion marker of a cell (after all its samples were put).

        Args:
            cell_id: grid cell id.
            keys: keys of the samples the cell produced (each already put, unless ``linked``).
            quarantine: records of what the cell dropped.
            decoded: sample key -> the decode digest of its members, whose decode checks the
                worker ran (:meth:`decode_digests`).
            linked: the samples are not put here but taken from a ``--from`` build's previous
                release (:mod:`.linked`); a resumed build decides such a cell again
                (:meth:`corrupt_cells` names it).

        Raises:
            StagingError: a bad cell id, or a key whose sample was not put.
        """
        text = json.dumps(
            self._marker(cell_id, keys, quarantine, decoded, linked), sort_keys=True, indent=2
        )
        if self._remote is not None:
            self._remote.write({f"cells/{cell_id}{_MARKER_SUFFIX}": text.encode()})
        else:
            write_atomic(self._cells / f"{cell_id}{_MARKER_SUFFIX}", text)

    def mark_cells(
        self,
        cells: Sequence[tuple[str, Sequence[str], Sequence[QuarantineRecord]]],
        *,
        linked: bool = False,
    ) -> None:
        """:meth:`mark_cell` for many cells (cell id, keys, quarantine records) at once, in one
        file (``cells/<digest>.cells``; one PUT on an object store, not one per cell): what a
        ``build --from`` marks before any worker runs. A cell's own marker, where it has one
        too, is the one read.

        Raises:
            StagingError: as :meth:`mark_cell`.
        """
        markers = {c: self._marker(c, k, q, None, linked) for c, k, q in cells}
        ids = sorted(markers)
        files: dict[str, bytes] = {}
        for i in range(0, len(ids), _GROUP_CELLS):  # a file read whole stays small
            chunk = {c: markers[c] for c in ids[i : i + _GROUP_CELLS]}
            raw = json.dumps(chunk, sort_keys=True, separators=(",", ":")).encode()
            files[f"cells/{hashlib.sha256(raw).hexdigest()[:32]}{_GROUP_SUFFIX}"] = raw
        if self._remote is not None:
            self._remote.write(files)
        else:
            for rel, raw in files.items():
                write_atomic(Path(self.root) / rel, raw)

    def _marker(
        self,
        cell_id: str,
        keys: Sequence[str],
        quarantine: Sequence[QuarantineRecord],
        decoded: Mapping[str, str] | None,
        linked: bool,
    ) -> dict[str, Any]:
        """The marker of one cell, its names and samples checked (:meth:`mark_cell`)."""
        _check_name(cell_id, "cell id")
        missing = [
            k for k in keys if not (self._has_sample(_check_name(k, "sample key")) or linked)
        ]
        if missing:
            raise StagingError(
                f"cell {cell_id}: samples {missing} were not put before marking the cell",
                cell_id=cell_id,
            )
        marker: dict[str, Any] = {
            "cell_id": cell_id,
            "keys": sorted(keys),
            "quarantine": [
                q.model_dump(mode="json") for q in sorted(quarantine, key=quarantine_sort_key)
            ],
        }
        if decoded:
            marker["decoded"] = {k: str(decoded[k]) for k in sorted(decoded) if k in keys}
        if linked:
            marker["linked"] = True
        return marker

    def _cell_files(self) -> dict[str, tuple[int, int]]:
        """Name -> (size, mtime in ns; 0 on an object store) of the files under ``cells/``
        (fresh listing; writers' temporary files and files gone before their stat left out)."""
        if self._remote is not None:
            return {n: (size, 0) for n, size in self._remote.sizes("cells").items()}
        out: dict[str, tuple[int, int]] = {}
        with os.scandir(self._cells) as entries:
            for e in entries:
                # a writer's temporary file (a dot name) is not a marker yet, and any file may
                # be renamed or removed between the listing and its stat
                if e.name.startswith(".") or not e.is_file():
                    continue
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                out[e.name] = (st.st_size, st.st_mtime_ns)
        return out

    def _groups(self, files: Mapping[str, tuple[int, int]]) -> dict[str, dict[str, Any]]:
        """The :meth:`mark_cells` files among ``files`` (:meth:`_cell_files`): file name ->
        {cell id: marker}; one that vanished meanwhile gives none. A file read before with the
        same name, size and mtime is not read again (the progress bar polls them).

        Raises:
            StagingError: a group file that cannot be read.
        """
        wanted = {n: files[n] for n in sorted(files) if n.endswith(_GROUP_SUFFIX)}
        todo = [n for n, stamp in wanted.items() if self._parsed.get(n, (None,))[0] != stamp]
        if self._remote is not None:
            found = self._remote.read_many([f"cells/{n}" for n in todo])
            raws = {n: found[f"cells/{n}"] for n in todo}
        else:
            raws = {}
            for n in todo:
                with contextlib.suppress(FileNotFoundError):
                    raws[n] = (self._cells / n).read_bytes()
        for name, raw in raws.items():
            try:
                markers = {str(c): m for c, m in dict(json.loads(raw or b"{}")).items()}
            except (ValueError, TypeError) as exc:
                raise StagingError(
                    f"cell markers {self._marker_where('', name)} cannot be read ({exc}); delete "
                    "it to re-run its cells"
                ) from exc
            self._parsed[name] = (wanted[name], markers)
        # those listed and read as they are now (one that vanished keeps an old stamp)
        self._parsed = {n: v for n, v in self._parsed.items() if v[0] == wanted.get(n)}
        return {n: markers for n, (_, markers) in self._parsed.items()}

    def _index(self) -> tuple[set[str], dict[str, tuple[str, dict[str, Any]]]]:
        """The ids of the cells with a marker of their own, and those marked in a group only:
        cell id -> (its group file, its marker)."""
        files = self._cell_files()
        own = {n[: -len(_MARKER_SUFFIX)] for n in files if n.endswith(_MARKER_SUFFIX)}
        grouped: dict[str, tuple[str, dict[str, Any]]] = {}
        for group, markers in self._groups(files).items():
            for cell_id, marker in markers.items():
                if cell_id not in own:
                    grouped[cell_id] = (group, marker)
        return own, grouped

    def _marker_ids(self) -> list[str]:
        """Ids of the marked cells, sorted."""
        own, grouped = self._index()
        return sorted(own | set(grouped))

    def _marker_where(self, cell_id: str, group: str | None = None) -> str:
        name = group or f"{cell_id}{_MARKER_SUFFIX}"
        if self._remote is not None:
            return f"{self._shown}/cells/{name}"
        return str(self._cells / name)

    def _markers(self) -> Iterator[tuple[str, Any, str | None]]:
        """(cell id, the marker: its bytes, or as read from its group file, None when it
        vanished; its group file or None) of every marked cell, in cell id order; an object
        store's own markers are fetched in concurrent batches."""
        own, grouped = self._index()
        ids = sorted(own | set(grouped))
        for i in range(0, len(ids), _BATCH):
            batch = ids[i : i + _BATCH]
            rels = {c: f"cells/{c}{_MARKER_SUFFIX}" for c in batch if c in own}
            found = self._remote.read_many(list(rels.values())) if self._remote else {}
            for cell_id in batch:
                if cell_id in grouped:
                    group, marker = grouped[cell_id]
                    yield cell_id, marker, group  # a dict
                elif self._remote is not None:
                    yield cell_id, found[rels[cell_id]], None
                else:
                    raw = None
                    with contextlib.suppress(FileNotFoundError):
                        raw = (self._cells / f"{cell_id}{_MARKER_SUFFIX}").read_bytes()
                    yield cell_id, raw, None

    def _read_markers(
        self, *, skip_missing: bool
    ) -> Iterator[tuple[str, list[str], list[QuarantineRecord], bool]]:
        """(cell id, keys, records, linked) of each marker, in cell id order."""
        for cell_id, raw, group in self._markers():
            try:
                if raw is None:
                    if skip_missing:  # forgotten meanwhile (another process)
                        continue
                    raise FileNotFoundError(self._marker_where(cell_id))
                data = json.loads(raw) if isinstance(raw, bytes) else raw
                keys = [str(k) for k in data["keys"]]
                records = [QuarantineRecord.model_validate(q) for q in data["quarantine"]]
                linked = data.get("linked") is True
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StagingError(
                    f"cell marker {self._marker_where(cell_id, group)} cannot be read ({exc}); "
                    "delete it to re-run the cell",
                    cell_id=cell_id,
                ) from exc
            yield cell_id, keys, records, linked

    def done_cells(self) -> set[str]:
        """Ids of the cells that have a completion marker."""
        return set(self._marker_ids())

    def cells(self) -> Iterator[tuple[str, list[str], list[QuarantineRecord]]]:
        """(cell id, sample keys, quarantine records) of each marked cell, in cell id order.

        Read a marker (on an object store, a batch of markers) at a time, so a caller that
        stops early reads only what it needs.

        Raises:
            StagingError: a marker that cannot be read.
        """
        for cell_id, keys, records, _ in self._read_markers(skip_missing=True):
            yield cell_id, keys, records

    def forget_cells(self, cell_ids: Collection[str]) -> None:
        """Delete the completion markers of ``cell_ids`` (their samples stay until re-put), so a
        resumed build runs those cells again (a group file is written again without them)."""
        gone = {_check_name(c, "cell id") for c in cell_ids}
        names = [f"{c}{_MARKER_SUFFIX}" for c in sorted(gone)]
        for group, markers in self._groups(self._cell_files()).items():
            if gone.isdisjoint(markers):
                continue
            kept = {c: m for c, m in markers.items() if c not in gone}
            raw = json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()
            if kept and self._remote is not None:  # one PUT replaces the object whole
                self._remote.write({f"cells/{group}": raw})
            elif kept:
                write_atomic(self._cells / group, raw)
            elif self._remote is not None:
                self._remote.remove([f"cells/{group}"])
            else:
                (self._cells / group).unlink(missing_ok=True)
        if self._remote is not None:
            self._remote.remove([f"cells/{n}" for n in names])
            return
        for name in names:
            (self._cells / name).unlink(missing_ok=True)

    def decode_digests(self) -> set[str]:
        """The decode digests the workers recorded in the cell markers (:meth:`mark_cell`'s
        ``decoded``) for the samples the markers list: the build's report does not decode
        again the members of a sample whose digest is among them (trust by content: another
        byte gives another digest). An unreadable marker gives none (the report decodes)."""
        found: set[str] = set()
        for _, raw, _ in self._markers():
            try:
                data = json.loads(raw) if isinstance(raw, bytes) else raw or {}
                keys = set(data.get("keys", ()))
                found.update(str(d) for k, d in dict(data.get("decoded", {})).items() if k in keys)
            except (ValueError, TypeError, AttributeError):
                continue
        return found

    def outcomes(self) -> tuple[list[str], list[QuarantineRecord]]:
        """Sample keys and quarantine records of every marked cell.

        Returns:
            (all keys sorted, all quarantine records sorted by (cell_id, key, stage, reason)).

        Raises:
            StagingError: a marker that cannot be read.
        """
        keys: list[str] = []
        records: list[QuarantineRecord] = []
        for _, cell_keys, cell_records, _ in self._read_markers(skip_missing=False):
            keys.extend(cell_keys)
            records.extend(cell_records)
        return sorted(keys), sorted(records, key=quarantine_sort_key)

    def sample_location(self, key: str) -> str:
        """Where a staged sample is: its file's local path or its object's URL.

        Raises:
            StagingError: the sample was never put.
        """
        if not self._has_sample(_check_name(key, "sample key")):
            raise StagingError(f"sample {key} is not in the staging area {self._shown}", key=key)
        if self._remote is None:
            return str(self._samples / f"{key}{_SAMPLE_SUFFIX}")
        return f"{self.root}/{self._sample_rel(key)}"

    def _where(self, key: str) -> str:
        if self._remote is not None:
            return f"{self._shown}/{self._sample_rel(key)}"
        return str(self._samples / f"{key}{_SAMPLE_SUFFIX}")

    def _unpacked(self, key: str) -> tuple[dict[str, str], dict[str, bytes]]:
        """(digests, members) of a staged sample, unchecked. Locally the last one read is kept
        while its file is the same (inode, size, mtime: a re-put by any process replaces the
        file), as the release reads a sample's names, then its ``json``, in turn.

        Raises:
            StagingError: the sample was never put, or its file is not a whole staged sample.
        """
        _check_name(key, "sample key")
        try:
            if self._remote is not None:
                raw = self._remote.read(self._sample_rel(key))
            else:
                path = self._samples / f"{key}{_SAMPLE_SUFFIX}"
                st = path.stat()
                stamp = (key, st.st_ino, st.st_size, st.st_mtime_ns)
                last = self._last
                if last is not None and last[0] == stamp:
                    return last[1]
                raw = path.read_bytes()
        except FileNotFoundError:
            raise StagingError(
                f"sample {key} is not in the staging area {self._shown}", key=key
            ) from None
        try:
            found = unpack_sample(raw)
        except ValueError as exc:
            raise StagingError(
                f"sample {key} cannot be read ({self._where(key)}: {exc}); re-run the build with "
                "--resume (its cell is run again)",
                key=key,
            ) from None
        if self._remote is None:
            self._last = (stamp, found)
        return found

    def member_names(self, key: str) -> set[str]:
        """Names of the members of a staged sample.

        Raises:
            StagingError: the sample was never put, or cannot be read.
        """
        return set(self._unpacked(key)[1])

    def _checked(self, key: str, name: str, data: bytes, digests: dict[str, str]) -> bytes:
        if digests.get(name) != hashlib.sha256(data).hexdigest():
            raise StagingError(
                f"staged member {name!r} of sample {key} does not match the checksum written with "
                f"it ({self._where(key)}): the staged file changed or is corrupt; "
                "re-run the build with --resume (its cell is run again)",
                key=key,
            )
        return data

    def read_member(self, key: str, name: str) -> bytes:
        """One member of a staged sample, checked against the sha256 written with it.

        Raises:
            StagingError: the sample or the member is missing, or its bytes changed.
        """
        digests, members = self._unpacked(key)
        if _check_name(name, "member name") not in members:
            raise StagingError(f"sample {key} has no member {name!r}", key=key)
        return self._checked(key, name, members[name], digests)

    def read_members(self, key: str) -> dict[str, bytes]:
        """All members of a staged sample, by member name (sorted), each checked against the
        sha256 written with it.

        Raises:
            StagingError: the sample is missing or cannot be read, or a member's bytes changed.
        """
        digests, members = self._unpacked(key)
        return {name: self._checked(key, name, members[name], digests) for name in sorted(members)}

    def iter_members(
        self, keys: Iterable[str], *, ahead: int = _READ_AHEAD
    ) -> Iterator[tuple[str, dict[str, bytes]]]:
        """``(key, read_members(key))`` for each key, in the order given.

        On an object store up to ``ahead`` samples are read concurrently (threads), so a
        reader that goes through a whole staging area waits on requests once per ``ahead``
        samples, not once per sample; locally it is a plain loop.

        Raises:
            StagingError: as :meth:`read_members`, at the key concerned.
        """
        if self._remote is None or ahead <= 1:
            for key in keys:
                yield key, self.read_members(key)
            return
        from concurrent.futures import Future, ThreadPoolExecutor

        todo = iter(keys)
        pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="geodelta-staging")
        pending: deque[tuple[str, Future[dict[str, bytes]]]] = deque()
        try:
            for key in itertools.islice(todo, ahead):
                pending.append((key, pool.submit(self.read_members, key)))
            while pending:
                key, future = pending.popleft()
                following = next(todo, None)
                if following is not None:
                    pending.append((following, pool.submit(self.read_members, following)))
                yield key, future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def sample_problem(self, key: str) -> str | None:
        """Why a staged sample cannot be trusted (missing, unreadable or truncated, a member
        whose bytes differ from the checksum written with it), or None."""
        try:
            self.read_members(key)
        except StagingError as exc:
            return str(exc)
        return None

    def corrupt_cells(self, cell_ids: Collection[str] | None = None) -> dict[str, str]:
        """Marked cells (all, or those of ``cell_ids``) with a sample that fails
        :meth:`sample_problem`, or whose samples were linked from a ``--from`` build's previous
        release (:meth:`mark_cell`: decided again): cell id -> the problem. :meth:`forget_cells`
        makes a resumed build run them again. Reads every staged byte of those cells once.

        Raises:
            StagingError: a marker that cannot be read.
        """
        wanted = None if cell_ids is None else set(cell_ids)
        found: dict[str, str] = {}
        for cell_id, keys, _, linked in self._read_markers(skip_missing=True):
            if wanted is not None and cell_id not in wanted:
                continue
            if linked:
                found[cell_id] = LINKED_CELL
                continue
            for key in keys:
                problem = self.sample_problem(key)
                if problem is not None:
                    found[cell_id] = problem
                    break
        return found

    def clear(self) -> None:
        """Delete every sample, marker and temp file (the root stays, with its files)."""
        self._last = None
        if self._remote is not None:
            for name in ("samples", "cells", "tmp"):
                self._remote.remove_tree(name)
            return
        for d in (self._samples, self._cells, self._tmp):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        """Delete the staging area: what :meth:`clear` deletes, the per-key locks, the root
        files a build writes (:data:`STAMP_FILE`, :data:`TRIP_FILE`), then the root folder when
        that left it empty (anything else in it stays)."""
        if self._remote is not None:
            for d in _DIRS:
                self._remote.remove_tree(d)
            self._remote.remove(list(_ROOT_FILES))
            return
        root = Path(self.root)
        for d in _DIRS:
            shutil.rmtree(root / d, ignore_errors=True)
        for name in _ROOT_FILES:
            (root / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (something else lives there), or gone
            root.rmdir()
