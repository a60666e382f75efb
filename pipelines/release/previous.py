"""The release ``build --from`` names (:mod:`.incremental`): opened, checked and read.

:func:`open_previous` reads its manifest and tables (fetched first when it is at a URL) and
refuses a release of another dataset or of other sample-shaping config sections;
:func:`read_shard` checks a shard against its manifest entry and reads the members of reused
samples at the offsets its samples table records, and :func:`verified_record` returns the
decode digests and the verified shards its report recorded (``report/verified.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from geodelta._io import HashAhead, file_stamp, sha256_file
from geodelta.errors import BuildError, GeodeltaError
from geodelta.pipelines.release.layout import (
    MANIFEST,
    QUARANTINE_TABLE,
    SAMPLES_TABLE,
    VERIFIED,
    MemberOffsets,
    Span,
    iter_tar_samples,
    members_at_offsets,
    read_manifest,
    read_table,
)
from geodelta.schemas import BuildConfig, QuarantineRecord, ReleaseManifest, parse_config
from geodelta.schemas.config import RELEASE_SECTIONS

__all__ = [
    "RELEASE_SECTIONS",
    "Previous",
    "VerifiedRecord",
    "differing_sections",
    "open_previous",
    "read_shard",
    "section_hashes",
    "verified_record",
]

if TYPE_CHECKING:
    import pyarrow as pa

    from geodelta.pipelines.release.verify import CarriedShard

log = logging.getLogger(__name__)


def section_hashes(normalised: dict[str, Any]) -> dict[str, str]:
    """sha256 of each section of a normalised config (top-level key -> hex)."""
    return {
        k: hashlib.sha256(json.dumps(v, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        for k, v in normalised.items()
    }


def differing_sections(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The sample-shaping sections (not :data:`RELEASE_SECTIONS`) two normalised configs differ
    in (a section present in one only differs)."""
    a, b = section_hashes(old), section_hashes(new)
    return sorted(k for k in set(a) | set(b) if k not in RELEASE_SECTIONS and a.get(k) != b.get(k))


@dataclass(frozen=True)
class Previous:
    """A release ``--from`` names, read and accepted for this build.

    Attributes:
        root: its folder (for a release at a URL: a temporary folder its files are fetched to,
            as they are needed: :meth:`path`).
        manifest: its manifest.
        samples: cell id -> (sample key, shard path relative to ``root``).
        quarantined: ids of the cells it quarantined (processed again, or their records
            carried over).
        quarantine: cell id -> the records of its quarantine table for that cell.
        remote: the release's fsspec target (:class:`~.upload.Target`) when it is at a URL.
        holder: keeps the temporary folder of a release at a URL (removed with this object).
    """

    root: Path
    manifest: ReleaseManifest
    samples: dict[str, tuple[str, str]]
    quarantined: frozenset[str]
    remote: Any = None
    holder: Any = None
    quarantine: dict[str, tuple[QuarantineRecord, ...]] = field(default_factory=dict)
    #: sample key -> its members' (name, data offset, size) in its shard (samples table)
    offsets: Mapping[str, tuple[Span, ...]] = field(default_factory=dict)
    #: shard -> (inode, size, mtime ns) of the file when :func:`read_shard` found its sha256 to
    #: be its manifest entry's: the same stat later, the same bytes (:mod:`.linked` copies it
    #: without hashing it again)
    checked: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @cached_property
    def shard_sha256(self) -> dict[str, str]:
        """shard path -> its sha256 in the manifest (one dict, not one per shard read)."""
        return {s.path: s.sha256 for s in self.manifest.shards}

    def path(self, rel: str) -> Path:
        """The local path of a file of the release (fetched first when it is at a URL)."""
        local = self.root / rel
        if self.remote is not None and not local.is_file():
            _fetch(self.remote, rel, self.root)
        return local

    def has(self, rel: str) -> bool:
        """Whether the manifest lists ``rel`` (a file, or a shard)."""
        listed = [f.path for f in self.manifest.files] + [s.path for s in self.manifest.shards]
        return rel in listed


#: The files of a release ``--from`` reads before any work (shards are fetched when copied).
_FIRST = (MANIFEST, SAMPLES_TABLE, QUARANTINE_TABLE)


def _fetch(target: Any, rel: str, root: Path) -> None:
    """Download ``rel`` of a release at a URL into ``root`` (atomically)."""
    local = root / rel
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_name(local.name + ".part")
    target.fs.get_file(target.join(rel), str(part))
    part.replace(local)


class _Scratch:
    """A temporary folder, removed when this object is collected (or at exit)."""

    def __init__(self) -> None:
        import shutil
        import tempfile
        import weakref

        self.name = tempfile.mkdtemp(prefix="geodelta-from-")
        self._remove = weakref.finalize(self, shutil.rmtree, self.name, ignore_errors=True)


def _download_first(path: str) -> tuple[Path, Any, Any]:
    """(local folder, target, temporary-folder holder) of a release at a URL, its manifest and
    tables fetched."""
    from geodelta.pipelines.release.upload import Target, check_reachable

    try:
        check_reachable(path, "--from")
    except GeodeltaError as exc:
        raise BuildError(str(exc)) from None
    target = Target.parse(path)
    holder = _Scratch()
    root = Path(holder.name)
    for rel in _FIRST:
        try:
            _fetch(target, rel, root)
        except FileNotFoundError:
            if rel == MANIFEST:
                raise _not_release(target.url, f"{MANIFEST} is missing") from None
        except OSError as exc:
            raise BuildError(f"--from {target.url}: cannot read {rel} ({exc})") from None
    return root, target, holder


def _not_release(path: str | Path, why: str) -> BuildError:
    return BuildError(f"--from {path} is not a release ({why}); give a release folder")


def open_previous(path: str | Path, cfg: BuildConfig) -> Previous:
    """Read the release ``--from`` names and check this build may reuse its samples.

    Args:
        path: the previous release: a local folder or an fsspec URL (``s3://...``: its
            manifest and tables are fetched now, the shards of the samples reused later).
        cfg: this build's config (collection profiles applied).

    Raises:
        BuildError: not a release; a URL that cannot be reached; a release of another
            dataset name; a release whose sample-shaping config sections differ (named).
    """
    remote = holder = None
    if "://" in str(path) and not str(path).startswith("file://"):
        root, remote, holder = _download_first(str(path))
        path = remote.url  # as shown: no query string, no user info
    else:
        root = Path(str(path).removeprefix("file://"))
    if not root.is_dir():
        raise _not_release(path, "no such folder")
    try:
        manifest = read_manifest(root)
        table = _samples_table(root)
        samples = table.select(["cell_id", "key", "shard"]).to_pylist()
        quarantine = read_table(root, QUARANTINE_TABLE, columns=list(_RECORD_COLUMNS))
        records = _records(quarantine.to_pylist())
    except GeodeltaError as exc:
        raise _not_release(path, str(exc)) from None
    if manifest.name != cfg.name:
        raise BuildError(
            f"--from {path} is a release of {manifest.name!r}, this config builds {cfg.name!r}; "
            "give a release of the same dataset"
        )
    try:
        old = parse_config({**manifest.config, "output": {"dir": "."}}).normalised()
    except GeodeltaError as exc:
        raise BuildError(f"--from {path}: its config cannot be read ({exc})") from None
    differ = differing_sections(old, cfg.normalised())
    if differ:
        raise BuildError(
            f"--from {path} was built with other sample-shaping config sections "
            f"({', '.join(differ)}); its samples cannot be reused: build without --from"
        )
    return Previous(
        root=root,
        manifest=manifest,
        samples={str(r["cell_id"]): (str(r["key"]), str(r["shard"])) for r in samples},
        quarantined=frozenset(str(c) for c in quarantine.column("cell_id").to_pylist()),
        remote=remote,
        holder=holder,
        quarantine=records,
        offsets=MemberOffsets(table) if "member_offsets" in table.column_names else {},
    )


def _samples_table(root: Path) -> pa.Table:
    """The samples table's columns ``--from`` reads, ``member_offsets`` too when the release
    has it (one that has not: its shards are read as tars)."""
    columns = ["cell_id", "key", "shard"]
    try:
        return read_table(root, SAMPLES_TABLE, columns=[*columns, "member_offsets"])
    except (GeodeltaError, KeyError):
        return read_table(root, SAMPLES_TABLE, columns=columns)


#: The columns of a release's quarantine table that make a :class:`QuarantineRecord`.
_RECORD_COLUMNS = ("key", "cell_id", "stage", "reason", "detail")


def _records(rows: list[dict[str, Any]]) -> dict[str, tuple[QuarantineRecord, ...]]:
    """cell id -> its quarantine records (rows that are no valid record are left out: their
    cells are processed again)."""
    out: dict[str, list[QuarantineRecord]] = {}
    bad: set[str] = set()
    for row in rows:
        cell = str(row.get("cell_id") or "")
        try:
            rec = QuarantineRecord.model_validate({k: row.get(k) for k in _RECORD_COLUMNS})
        except ValueError:
            bad.add(cell)
            continue
        out.setdefault(cell, []).append(rec)
    return {c: tuple(r) for c, r in out.items() if c and c not in bad}


class VerifiedRecord(NamedTuple):
    """What a release's ``report/verified.json`` vouches for (:func:`verified_record`).

    Attributes:
        digests: the decode digests of the samples its verify passed (``trusted``: those bytes
            are not decoded again).
        shards: the shards its verify found without a problem, by sha256 (``carried``: a shard
            this build copies whole is not read again by its report).
    """

    digests: frozenset[str]
    shards: dict[str, CarriedShard]


def verified_record(prev: Previous) -> VerifiedRecord:
    """What the previous release's ``report/verified.json`` vouches for, when its manifest lists
    the file with its sha256 and the file records this version of the decode checks (anything
    else: nothing, and everything is verified and decoded as in a full build)."""
    from geodelta.pipelines.release.verify import CarriedShard  # imports GDAL, PIL
    from geodelta.pipelines.stages.member_checks import DECODE_CHECKS

    nothing = VerifiedRecord(frozenset(), {})
    want = {f.path: f.sha256 for f in prev.manifest.files}.get(VERIFIED)
    if want is None:
        return nothing
    try:
        path = prev.path(VERIFIED)
        if sha256_file(path) != want:
            log.warning("--from: %s does not match its manifest entry; not used", VERIFIED)
            return nothing
        record = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        log.warning("--from: %s cannot be read (%s); not used", VERIFIED, exc)
        return nothing
    if not isinstance(record, dict) or record.get("decode_checks") != DECODE_CHECKS:
        return nothing
    samples = record.get("samples")
    if not isinstance(samples, dict):
        return nothing
    shards: dict[str, CarriedShard] = {}
    recorded = record.get("shards")
    for sha, entry in (recorded if isinstance(recorded, dict) else {}).items():
        keys = entry.get("keys") if isinstance(entry, dict) else None
        context = entry.get("context") if isinstance(entry, dict) else None
        if not isinstance(keys, list) or not isinstance(context, str):
            continue
        if all(isinstance(k, str) and isinstance(samples.get(k), str) for k in keys):
            shards[str(sha)] = CarriedShard(context, tuple((k, samples[k]) for k in keys))
    return VerifiedRecord(frozenset(str(d) for d in samples.values()), shards)


def read_shard(
    prev: Previous,
    rel: str,
    keys: Collection[str],
    names: Collection[str] | None = None,
    ahead: HashAhead | None = None,
) -> Iterable[tuple[str, dict[str, bytes]]] | None:
    """The samples of shard ``rel`` of the previous release, for reuse: None when the shard is
    missing or its sha256 is not its manifest entry's (nothing of it is reused). Otherwise the
    samples ``keys`` read at the offsets its samples table records (:func:`members_at_offsets`;
    one read of the file, mapped: the checksum and the members), or, when those offsets do not
    match the tar, every sample of the shard read as a tar (the caller picks its keys).
    ``names``: only these members are read at the offsets (default all); ``ahead``: the
    shard's sha256 when it was hashed ahead (:class:`~geodelta._io.HashAhead`; the same
    stamp as the file read)."""
    want = prev.shard_sha256.get(rel)
    if want is None:
        return None
    try:
        path = prev.path(rel)
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            empty = st.st_size == 0  # mmap refuses an empty file
            data = b"" if empty else mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                stamp = file_stamp(st)
                digest = ahead.ahead(path, stamp) if ahead is not None else None
                if digest is None:  # not hashed ahead (or since written): the bytes mapped
                    digest = hashlib.sha256(data).hexdigest()
                if digest != want:
                    return None
                prev.checked[rel] = stamp
                found = members_at_offsets(data, keys, prev.offsets, names)
            finally:
                if isinstance(data, mmap.mmap):
                    data.close()
    except OSError:
        return None
    return found if found is not None else iter_tar_samples(path)
