"""The staging area: where workers put finished samples before the release is assembled.

One unit of work is one grid cell. A worker puts the members of each of the cell's samples
(:meth:`Staging.put_sample`), then writes the cell's completion marker
(:meth:`Staging.mark_cell`) listing its sample keys and its quarantine records. Only markers
count: a sample directory without a marker (a worker that died half way) is ignored, and a
re-run of the cell overwrites it. Every write is atomic (a temp file or directory in the same
filesystem, then :func:`os.replace`), so several worker processes can write different cells
concurrently.

Layout under ``root``::

    samples/<key>/<member>     one file per member (member names as in SAMPLE_MEMBERS)
    samples/<key>/.sha256.json the sha256 of each member, written with them: a staged file
                               that changed since is found (:meth:`Staging.corrupt_cells` on
                               ``--resume``; reading it raises) and never sharded
    cells/<cell_id>.json       completion marker: {"cell_id", "keys", "quarantine"}
    tmp/                       in-flight writes (safe to delete when no worker runs)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from geodelta._io import write_atomic
from geodelta.errors import ReleaseError
from geodelta.schemas import QuarantineRecord

__all__ = ["Staging", "StagingError", "quarantine_sort_key"]

_MARKER_SUFFIX = ".json"
#: In each sample folder: member name -> sha256 of its bytes (hidden: no member name starts
#: with a dot).
_DIGESTS = ".sha256.json"


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


class Staging:
    """A staging area on the local filesystem (see the module docstring for the layout).

    Args:
        root: folder of the staging area; created when missing.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._samples = self.root / "samples"
        self._cells = self.root / "cells"
        self._tmp = self.root / "tmp"
        for d in (self._samples, self._cells, self._tmp):
            d.mkdir(parents=True, exist_ok=True)

    def _tmp_path(self, stem: str) -> Path:
        return self._tmp / f"{stem}.{os.getpid()}.{uuid.uuid4().hex}"

    def put_sample(self, key: str, members: dict[str, bytes]) -> None:
        """Store the members of one sample, replacing any earlier copy of the same key.

        The members are written into a temp directory, which is then renamed into place.

        Args:
            key: sample key.
            members: member name -> bytes.

        Raises:
            StagingError: a bad key or member name, or no members.
        """
        _check_name(key, "sample key")
        if not members:
            raise StagingError(f"sample {key} has no members", key=key)
        tmp = self._tmp_path(key)
        tmp.mkdir(parents=True)
        try:
            digests: dict[str, str] = {}
            for name, data in members.items():
                _check_name(name, "member name")
                (tmp / name).write_bytes(bytes(data))
                digests[name] = hashlib.sha256(data).hexdigest()
            (tmp / _DIGESTS).write_text(json.dumps(digests, sort_keys=True))
            self._swap_in(tmp, self._samples / key)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _swap_in(self, tmp: Path, dest: Path) -> None:
        """Rename ``tmp`` to ``dest``, replacing an existing directory.

        rename() cannot replace a non-empty directory, so an old copy is moved aside first. Two
        workers re-putting the same key would interleave those steps, so the swap holds an
        exclusive lock on the key (``flock`` on ``locks/<key>.lock``, released when the file
        closes, also when the process dies).
        """
        import fcntl

        locks = self._tmp.parent / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{dest.name}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if dest.exists():
                old = self._tmp_path(f"{dest.name}.old")
                os.replace(dest, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, dest)

    def mark_cell(
        self, cell_id: str, *, keys: Sequence[str], quarantine: Sequence[QuarantineRecord]
    ) -> None:
        """Write the completion marker of a cell (after all its samples were put).

        Args:
            cell_id: grid cell id.
            keys: keys of the samples the cell produced (each already put).
            quarantine: records of what the cell dropped.

        Raises:
            StagingError: a bad cell id, or a key whose sample was not put.
        """
        _check_name(cell_id, "cell id")
        missing = [k for k in keys if not (self._samples / _check_name(k, "sample key")).is_dir()]
        if missing:
            raise StagingError(
                f"cell {cell_id}: samples {missing} were not put before marking the cell",
                cell_id=cell_id,
            )
        marker = {
            "cell_id": cell_id,
            "keys": sorted(keys),
            "quarantine": [
                q.model_dump(mode="json") for q in sorted(quarantine, key=quarantine_sort_key)
            ],
        }
        write_atomic(
            self._cells / f"{cell_id}{_MARKER_SUFFIX}", json.dumps(marker, sort_keys=True, indent=2)
        )

    def _markers(self) -> list[Path]:
        return sorted(p for p in self._cells.glob(f"*{_MARKER_SUFFIX}") if p.is_file())

    def done_cells(self) -> set[str]:
        """Ids of the cells that have a completion marker."""
        return {p.name[: -len(_MARKER_SUFFIX)] for p in self._markers()}

    def cells(self) -> Iterator[tuple[str, list[str], list[QuarantineRecord]]]:
        """(cell id, sample keys, quarantine records) of each marked cell, in cell id order.

        Read one marker at a time, so a caller that stops early reads only what it needs.

        Raises:
            StagingError: a marker that cannot be read.
        """
        for path in self._markers():
            try:
                data = json.loads(path.read_text())
                keys = [str(k) for k in data["keys"]]
                records = [QuarantineRecord.model_validate(q) for q in data["quarantine"]]
            except FileNotFoundError:  # forgotten meanwhile (another process)
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StagingError(
                    f"cell marker {path} cannot be read ({exc}); delete it to re-run the cell",
                    cell_id=path.stem,
                ) from exc
            yield path.name[: -len(_MARKER_SUFFIX)], keys, records

    def forget_cells(self, cell_ids: Collection[str]) -> None:
        """Delete the completion markers of ``cell_ids`` (their samples stay until re-put), so a
        resumed build runs those cells again."""
        for cell_id in cell_ids:
            (self._cells / f"{_check_name(cell_id, 'cell id')}{_MARKER_SUFFIX}").unlink(
                missing_ok=True
            )

    def outcomes(self) -> tuple[list[str], list[QuarantineRecord]]:
        """Sample keys and quarantine records of every marked cell.

        Returns:
            (all keys sorted, all quarantine records sorted by (cell_id, key, stage, reason)).

        Raises:
            StagingError: a marker that cannot be read.
        """
        keys: list[str] = []
        records: list[QuarantineRecord] = []
        for path in self._markers():
            try:
                data = json.loads(path.read_text())
                keys.extend(str(k) for k in data["keys"])
                records.extend(QuarantineRecord.model_validate(q) for q in data["quarantine"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StagingError(
                    f"cell marker {path} cannot be read ({exc}); delete it to re-run the cell",
                    cell_id=path.stem,
                ) from exc
        return sorted(keys), sorted(records, key=quarantine_sort_key)

    def sample_dir(self, key: str) -> Path:
        """Directory holding the members of a sample.

        Raises:
            StagingError: the sample was never put.
        """
        path = self._samples / _check_name(key, "sample key")
        if not path.is_dir():
            raise StagingError(f"sample {key} is not in the staging area {self.root}", key=key)
        return path

    def member_names(self, key: str) -> set[str]:
        """Names of the members of a staged sample (its checksum file is not one).

        Raises:
            StagingError: the sample was never put.
        """
        d = self.sample_dir(key)
        return {p.name for p in d.iterdir() if p.is_file() and not p.name.startswith(".")}

    def _digests(self, key: str) -> dict[str, str]:
        try:
            data = json.loads((self.sample_dir(key) / _DIGESTS).read_text())
            if isinstance(data, dict):
                return {str(k): str(v) for k, v in data.items()}
        except (OSError, ValueError):
            pass
        return {}

    def _checked(self, key: str, name: str, data: bytes, digests: dict[str, str]) -> bytes:
        if digests.get(name) != hashlib.sha256(data).hexdigest():
            raise StagingError(
                f"staged member {name!r} of sample {key} does not match the checksum written with "
                f"it ({self._samples / key / _DIGESTS}): the staged file changed or is corrupt; "
                "re-run the build with --resume (its cell is run again)",
                key=key,
            )
        return data

    def read_member(self, key: str, name: str) -> bytes:
        """One member of a staged sample, checked against the sha256 written with it.

        Raises:
            StagingError: the sample or the member is missing, or its bytes changed.
        """
        path = self.sample_dir(key) / _check_name(name, "member name")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StagingError(f"sample {key} has no member {name!r}", key=key) from None
        return self._checked(key, name, data, self._digests(key))

    def read_members(self, key: str) -> dict[str, bytes]:
        """All members of a staged sample, by member name (sorted), each checked against the
        sha256 written with it.

        Raises:
            StagingError: the sample is missing, or a member's bytes changed.
        """
        digests = self._digests(key)
        return {
            name: self._checked(key, name, (self.sample_dir(key) / name).read_bytes(), digests)
            for name in sorted(self.member_names(key))
        }

    def sample_problem(self, key: str) -> str | None:
        """Why a staged sample cannot be trusted (missing, no checksums, a member whose bytes
        or presence differ from the checksums written with it), or None."""
        try:
            names = self.member_names(key)
        except StagingError as exc:
            return str(exc)
        digests = self._digests(key)
        if not digests:
            return f"sample {key} has no readable checksums ({_DIGESTS})"
        if names != set(digests):
            return (
                f"sample {key}: members {sorted(names)} differ from those staged {sorted(digests)}"
            )
        for name in sorted(names):
            try:
                self.read_member(key, name)
            except StagingError as exc:
                return str(exc)
        return None

    def corrupt_cells(self, cell_ids: Collection[str] | None = None) -> dict[str, str]:
        """Marked cells (all, or those of ``cell_ids``) with a sample that fails
        :meth:`sample_problem`: cell id -> the problem. :meth:`forget_cells` makes a resumed
        build run them again. Reads every staged byte of those cells once.

        Raises:
            StagingError: a marker that cannot be read.
        """
        wanted = None if cell_ids is None else set(cell_ids)
        found: dict[str, str] = {}
        for cell_id, keys, _ in self.cells():
            if wanted is not None and cell_id not in wanted:
                continue
            for key in keys:
                problem = self.sample_problem(key)
                if problem is not None:
                    found[cell_id] = problem
                    break
        return found

    def clear(self) -> None:
        """Delete every sample, marker and temp file (the root folder stays)."""
        for d in (self._samples, self._cells, self._tmp):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, exist_ok=True)
