"""Every file name of a release, in one place.

A release directory holds::

    manifest.json            written last: files with sha256, splits, shards, members
    manifest.sha256          sha256 of manifest.json (``sha256sum -c`` format; verify checks it)
    README.md                the dataset card
    collection.json          a STAC collection describing the release
    samples.parquet          one row per sample
    quarantine.parquet       one row per quarantined record, with its reason
    incremental.json         ``build --from`` only: what was reused from which release
    drift.json               ``build --from`` only: the catalog drift since that release
    shards/<split>-<n>.tar   WebDataset shards
    validation/              Great Expectations results (summary.json, suites/, results/,
                             data_docs/)
    reference/               the reference model: metrics, model card, weights
                             (promotion.json once promoted)
    report/index.html        the quality report
    report/verified.json     the decode digest of each sample the report's verify passed, and
                             each shard it found without a problem (``build --from`` skips the
                             decodes of the same bytes and the reads of the same shards)
    .staging/                a build's staging area (removed when the build succeeds;
                             ``output.staging`` puts it elsewhere: a folder or a URL)
    .geodelta-upload.json    at an fsspec URL, while an in-place upload is in progress

Beside a release folder ``<parent>/<name>/``, while a build runs (:mod:`.lock`)::

    .<name>.geodelta-lock    the build lock (flock; names the holder: pid, host, start time)
    .<name>.geodelta-lease/  the build lease instead, where the release or the staging area is
                             at an object-store URL (no flock there; :mod:`.lock`)
    .<name>.geodelta-next/   the release ``--overwrite`` builds, swapped in at the end
    .<name>.geodelta-old/    the old release during that swap (removed right after)

A folder of published releases holds ``<name>-<version>/`` folders, the ``LATEST`` pointer,
``baselines/<sha256[:16]>/`` (promoted baseline weights), the ``BASELINE`` pointer and
``published/<name>-<version>.sha256`` (the manifest's sha256 when it was published).

Other modules name these files through the constants here, never by their literal, and read
them through the readers here (:func:`read_manifest`, :func:`read_table`, :func:`read_json`,
:func:`read_record`, :func:`shard_files`, :func:`iter_tar_samples`, :func:`read_tar_member`);
parquet tables are written as :func:`parquet_bytes` lays them out.
"""

from __future__ import annotations

import json
import mmap
import tarfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from geodelta.errors import ReleaseError
from geodelta.schemas import ReleaseManifest
from geodelta.schemas.reference import REFERENCE_CARD, REFERENCE_DIR, REFERENCE_METRICS

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "BASELINES_DIR",
    "BASELINE_POINTER",
    "BUILD_LEASE",
    "BUILD_LOCK",
    "CARD",
    "COLLECTION",
    "DATA_DOCS_DIR",
    "DRIFT",
    "GX_RESULTS_DIR",
    "GX_SUITES_DIR",
    "GX_SUMMARY",
    "GX_SUMMARY_FILE",
    "INCREMENTAL",
    "LATEST",
    "MANIFEST",
    "MANIFEST_SHA256",
    "OVERWRITE_NEXT",
    "OVERWRITE_OLD",
    "PROMOTION_RECORD",
    "PUBLISHED_DIR",
    "QUARANTINE_TABLE",
    "REFERENCE_CARD",
    "REFERENCE_DIR",
    "REFERENCE_METRICS",
    "REPORT_DIR",
    "REPORT_FILE",
    "SAMPLES_TABLE",
    "SHARDS_DIR",
    "SNAPSHOT",
    "STAGING",
    "UNLISTED",
    "UPLOAD_STAMP",
    "VALIDATION_DIR",
    "VERIFIED",
    "MemberOffsets",
    "Mode",
    "Span",
    "beside",
    "iter_tar_samples",
    "members_at_offsets",
    "parquet_bytes",
    "read_json",
    "read_manifest",
    "read_record",
    "read_table",
    "read_tar_member",
    "shard_files",
]

#: How a build treats an existing release folder: refuse it, finish it, or start again.
Mode = Literal["fresh", "resume", "overwrite"]

MANIFEST = "manifest.json"
#: sha256 of ``manifest.json`` beside it (``<hex>  manifest.json``): an edit of the manifest shows.
MANIFEST_SHA256 = "manifest.sha256"
CARD = "README.md"
COLLECTION = "collection.json"
SAMPLES_TABLE = "samples.parquet"
QUARANTINE_TABLE = "quarantine.parquet"
#: A ``build --from`` release only: the previous release and the reused / new / changed /
#: removed cell counts (:mod:`.incremental`).
INCREMENTAL = "incremental.json"
#: A ``build --from`` release only: the catalog drift between the previous release's snapshot
#: and this build's searches (:mod:`.drift`).
DRIFT = "drift.json"
#: The items the build searched, as a stac-geoparquet search snapshot (:mod:`.snapshot`).
SNAPSHOT = "snapshot/items.parquet"
SHARDS_DIR = "shards"
VALIDATION_DIR = "validation"
# Inside VALIDATION_DIR (summary.json names the others relative to it):
GX_SUMMARY_FILE = "summary.json"
GX_SUITES_DIR = "suites"
GX_RESULTS_DIR = "results"
DATA_DOCS_DIR = "data_docs"
GX_SUMMARY = f"{VALIDATION_DIR}/{GX_SUMMARY_FILE}"
REPORT_DIR = "report"
REPORT_FILE = "index.html"
#: Written by the report beside its page: ``{"decode_checks": N, "samples": {key: digest},
#: "shards": {sha256: {"context", "keys"}}}``, the :func:`~.verify.decode_digest` of every
#: sample its verify found without a problem, and every such shard
#: (:class:`~.verify.CarriedShard`).
VERIFIED = f"{REPORT_DIR}/verified.json"
STAGING = ".staging"
#: Written into a published release when its reference model is promoted (not in the manifest:
#: it records an event after publication, not the release's content).
PROMOTION_RECORD = f"{REFERENCE_DIR}/promotion.json"
#: Written first and removed last by an in-place upload to a URL: names the config uploaded.
UPLOAD_STAMP = ".geodelta-upload.json"
# Beside a release folder (named by :func:`beside`), while a build runs:
#: The build lock: one build per output folder (its content names the holder).
BUILD_LOCK = ".geodelta-lock"
#: Beside a release or staging area at an object-store URL: the build lease's folder (one
#: object per holder, a heartbeat in each; see :mod:`.lock`).
BUILD_LEASE = ".geodelta-lease"
#: The release ``--overwrite`` builds, swapped in for the old one when it is complete.
OVERWRITE_NEXT = ".geodelta-next"
#: The old release during that swap.
OVERWRITE_OLD = ".geodelta-old"
# A folder of published releases (geodelta release --releases DIR):
#: Pointer file: the folder name of the newest published release.
LATEST = "LATEST"
#: Promoted baseline weights, one content-hashed folder each.
BASELINES_DIR = "baselines"
#: Pointer file (JSON): the baseline promoted last.
BASELINE_POINTER = "BASELINE"
#: ``<name>-<version>.sha256`` per published release: its manifest's sha256 when published.
PUBLISHED_DIR = "published"
#: What a release folder may hold that ``manifest.json`` does not list (``verify`` reports any
#: other unlisted file): the manifest and its checksum, a build's staging area, the upload stamp,
#: the promotion record (an event after publication).
UNLISTED: tuple[str, ...] = (MANIFEST, MANIFEST_SHA256, STAGING, UPLOAD_STAMP, PROMOTION_RECORD)

_Model = TypeVar("_Model", bound=BaseModel)


def beside(release_dir: str | Path, suffix: str) -> Path:
    """``<parent>/.<name><suffix>``: a hidden file or folder next to a release folder.

    Outside the release, so neither the release's listing nor a swap of it carries it along.
    """
    folder = Path(release_dir)
    return folder.parent / f".{folder.name}{suffix}"


# --------------------------------------------------------------------------------------------
# The one reader of a release's files


def read_manifest(release_dir: str | Path) -> ReleaseManifest:
    """Read ``manifest.json`` of a release.

    Raises:
        ReleaseError: no manifest (an incomplete release) or an invalid one.
    """
    path = Path(release_dir) / MANIFEST
    try:
        return ReleaseManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ReleaseError(
            f"{path} is missing: the release is incomplete; re-run write_release", path=str(path)
        ) from None
    except ValidationError as exc:
        raise ReleaseError(f"{path} is not a valid manifest: {exc}", path=str(path)) from None


def read_record(
    release_dir: str | Path, rel: str, model: type[_Model], *, what: str | None = None
) -> _Model:
    """Read one JSON file of a release as a record (``reference/metrics.json`` ...).

    Args:
        release_dir: the release folder.
        rel: the file, relative to it (a constant of this module).
        model: the pydantic record the file holds.
        what: how messages name the record (default: the model's class name).

    Raises:
        ReleaseError: the file is missing, unreadable or not a valid ``model``; names the file.
    """
    path = Path(release_dir) / rel
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ReleaseError(f"{path} is missing", path=str(path)) from None
    except (OSError, ValidationError) as exc:
        raise ReleaseError(
            f"{path} cannot be read as {what or model.__name__} ({exc})", path=str(path)
        ) from None


def shard_files(release_dir: str | Path) -> list[Path]:
    """The ``shards/*.tar`` files on disk (sorted), whether the manifest lists them or not."""
    shards_dir = Path(release_dir) / SHARDS_DIR
    return sorted(shards_dir.glob("*.tar")) if shards_dir.is_dir() else []


def iter_tar_samples(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream the samples of one shard as ``(key, {member: bytes})``, in tar order.

    Members are grouped by key as WebDataset does (the key is the name up to the first dot);
    a key whose members are not contiguous is yielded once per run of members.
    """
    with tarfile.open(path, mode="r|") as tar:
        key: str | None = None
        members: dict[str, bytes] = {}
        for info in tar:
            if not info.isfile():
                continue
            base, _, member = info.name.partition(".")
            f = tar.extractfile(info)
            data = f.read() if f is not None else b""
            if key is not None and base != key:
                yield key, members
                members = {}
            key = base
            members[member] = data
        if key is not None:
            yield key, members


def read_tar_member(
    path: str | Path, member: str, keys: Collection[str] | None = None
) -> dict[str, bytes]:
    """sample key -> the bytes of its member ``member``, for the samples of one shard (of
    ``keys`` only, when given). The tar's headers are walked and the other members skipped,
    not read (as :func:`iter_tar_samples` names keys and members: up to the first dot).

    Raises:
        OSError, tarfile.TarError: the shard cannot be read.
    """
    out: dict[str, bytes] = {}
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            key, _, name = info.name.partition(".")
            if name != member or not info.isfile() or (keys is not None and key not in keys):
                continue
            f = tar.extractfile(info)
            out[key] = f.read() if f is not None else b""
    return out


#: One member of a sample in its shard: (member name, data offset, size).
Span = tuple[str, int, int]


class MemberOffsets(Mapping[str, tuple[Span, ...]]):
    """sample key -> its member spans, read from the samples table's ``member_offsets`` column
    when asked. Held as flat arrays (each member: a name code, its offset and size; ~20 bytes),
    not as Python tuples (a million samples' spans would take GBs) nor as the Arrow column
    (a row read from it costs ~15 us: several reads of a sample's spans per build)."""

    def __init__(self, table: pa.Table) -> None:
        import numpy as np
        import pyarrow.compute as pc

        self._rows = {str(k): i for i, k in enumerate(table.column("key").to_pylist())}
        column = table.column("member_offsets").combine_chunks()
        flat = column.flatten()  # the members of the rows with a list, in row order
        fields = [flat.field(n) for n in ("name", "offset", "size")]
        if any(f.null_count for f in fields):  # no such table is written: read it as it is
            self._column: Any = column
            return
        self._column = None
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        codes = fields[0].dictionary_encode()
        self._names = [str(n) for n in codes.dictionary.to_pylist()]
        self._codes = codes.indices.to_numpy(zero_copy_only=False)
        self._offsets = fields[1].to_numpy(zero_copy_only=False).astype(np.int64)
        self._sizes = fields[2].to_numpy(zero_copy_only=False).astype(np.int64)

    def __getitem__(self, key: str) -> tuple[Span, ...]:
        row = self._rows[key]
        if self._column is not None:
            members = self._column[row].as_py() or ()
            return tuple((str(m["name"]), int(m["offset"]), int(m["size"])) for m in members)
        start, end = int(self._starts[row]), int(self._starts[row + 1])
        names = self._names
        return tuple(
            zip(
                [names[c] for c in self._codes[start:end].tolist()],
                self._offsets[start:end].tolist(),
                self._sizes[start:end].tolist(),
                strict=True,
            )
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def members_at_offsets(
    data: bytes | mmap.mmap,
    keys: Collection[str],
    offsets: Mapping[str, tuple[Span, ...]],
    names: Collection[str] | None = None,
) -> list[tuple[str, dict[str, bytes]]] | None:
    """The members of the samples ``keys`` of one shard's bytes ``data``, sliced at ``offsets``
    (the samples table's: member name, data offset, size), in key order, members in tar order.
    Each member's tar header (the 512 bytes before its data) must name it, ``<key>.<member>``,
    with that size; None when any does not, or a key has no offsets. ``names``: only these
    members (default all)."""
    out: list[tuple[str, dict[str, bytes]]] = []
    for key in sorted(keys):
        members = offsets.get(key)
        if not members:
            return None
        got: dict[str, bytes] = {}
        for name, offset, size in members:
            if names is not None and name not in names:
                continue
            if offset < 512 or offset + size > len(data):
                return None
            try:
                info = tarfile.TarInfo.frombuf(
                    data[offset - 512 : offset], "utf-8", "surrogateescape"
                )
            except tarfile.TarError:
                return None
            if info.name != f"{key}.{name}" or info.size != size:
                return None
            got[name] = data[offset : offset + size]  # bytes (a slice of an mmap is too)
        out.append((key, got))
    return out


def read_table(
    release_dir: str | Path, name: str = SAMPLES_TABLE, *, columns: list[str] | None = None
) -> pa.Table:
    """Read one parquet table of a release (``samples.parquet`` by default).

    Raises:
        ReleaseError: the table is missing or unreadable; names the file.
    """
    import pyarrow.parquet as pq

    path = Path(release_dir) / name
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise ReleaseError(
            f"{path} is missing: the release is incomplete", path=str(path)
        ) from None
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a broken file
        raise ReleaseError(
            f"{path} is not a readable parquet table: {exc}", path=str(path)
        ) from None


def parquet_bytes(table: pa.Table) -> bytes:
    """A release's parquet layout of ``table`` (zstd-compressed): the bytes to write.

    ``samples.parquet`` and ``quarantine.parquet`` are written through here (and rewritten
    through here when the reference model adds a column), so every writer lays them out alike.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def read_json(release_dir: str | Path, rel: str) -> Any:
    """Read one JSON file of a release (``reference/metrics.json``, ``validation/summary.json``...).

    Raises:
        ReleaseError: the file is missing or not JSON; names the file.
    """
    path = Path(release_dir) / rel
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ReleaseError(f"{path} is missing", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise ReleaseError(f"{path} is not valid JSON: {exc}", path=str(path)) from None
