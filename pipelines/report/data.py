"""Reading a release for the report: the manifest, both tables, the shards, the side files.

Everything is read through the one reader of a release
(:mod:`geodelta.pipelines.release.layout`); this module only keeps what the report needs:
per-sample digests and text (one pass over every shard), the members of the few samples the
page shows, the Great Expectations summary and the reference model's metrics. A side file that
is missing reads as ``None``; one that cannot be read reads as ``None`` with a problem text
(relative to the release, so that the page does not depend on where the release lies).

Several parts of the report read every sample (:func:`scan_shards`, the grounding and series
sections). Each is a :class:`ShardReader`; a :class:`Fanout` hands every sample read to all of
them, each with its own error handling as if it had read the shard alone, so that one read of
each shard serves them all (the page's read is verify's own: :func:`.scan.scan_release`).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from geodelta.errors import ReleaseError
from geodelta.pipelines.release.layout import (
    GX_SUMMARY,
    QUARANTINE_TABLE,
    REFERENCE_METRICS,
    SAMPLES_TABLE,
    MemberOffsets,
    Span,
    iter_tar_samples,
    members_at_offsets,
    read_json,
    read_manifest,
    read_table,
)
from geodelta.schemas import ReleaseManifest

__all__ = [
    "PROVENANCE_FIELDS",
    "Fanout",
    "Release",
    "SampleInfo",
    "ShardReader",
    "cfg",
    "gx_failed_keys",
    "load_release",
    "open_release",
    "read_shards",
    "review_count",
    "review_keys",
    "scan_shards",
]

#: Metadata fields that change with every build and are not counted as a sample change.
PROVENANCE_FIELDS: frozenset[str] = frozenset({"config_hash", "shaping_hash", "code_version"})

#: The members :class:`SampleInfoReader` reads of a sample (without digests, not kept).
_TEXT_MEMBERS = frozenset({"json", "captions.json", "qa.json"})

#: Samples in the review list when the reference metrics do not say (``review_top``).
_DEFAULT_REVIEW = 20


@dataclass
class SampleInfo:
    """What the report needs of one sample read from its shard."""

    members: dict[str, str]  # member -> sha256, all members but ``json``
    meta_fields: dict[str, str]  # metadata field -> sha256 of its JSON (provenance excepted)
    transitions: list[tuple[str, str, int, float]]  # (from, to, pixels, area_m2)
    captions: list[str]
    qa: list[tuple[str, str]]  # (type, answer)


@dataclass
class Release:
    """A release as the report sees it.

    Attributes:
        root: the release folder.
        manifest: its ``manifest.json``.
        rows: rows of ``samples.parquet``, sorted by key (empty when the table is absent).
        quarantine: rows of ``quarantine.parquet``.
        samples: key -> :class:`SampleInfo`, filled by :func:`scan_shards`.
        kept: key -> members, for the samples the page shows (filled by :func:`scan_shards`).
        problems: shards that could not be read.
        gx_summary: ``validation/summary.json`` as a dict, ``None`` when absent or unreadable.
        gx_problem: why the summary could not be read, or ``None``.
        reference: ``reference/metrics.json`` as read, ``None`` when absent or unreadable.
        reference_problem: why the metrics could not be read, or ``None``.
    """

    root: Path
    manifest: ReleaseManifest
    rows: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    samples: dict[str, SampleInfo] = field(default_factory=dict)
    kept: dict[str, dict[str, bytes]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    gx_summary: dict[str, Any] | None = None
    gx_problem: str | None = None
    reference: Any = None
    reference_problem: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The normalised build config of the release (``manifest.config``)."""
        return self.manifest.config


def cfg(config: dict[str, Any], section: str, name: str, default: Any) -> Any:
    """``config[section][name]``, or ``default`` when either is missing."""
    value = config.get(section, {})
    return value.get(name, default) if isinstance(value, dict) else default


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_sha(value: Any) -> str:
    return _sha(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def _sample_info(members: dict[str, bytes], *, digests: bool = True) -> SampleInfo:
    meta = json.loads(members.get("json", b"{}"))
    facts = meta.get("facts", {}) if isinstance(meta, dict) else {}
    captions = json.loads(members.get("captions.json", b"[]"))
    qa = json.loads(members.get("qa.json", b"[]"))
    fields = sorted(meta.items())  # without digests too: a json that is no object fails here
    return SampleInfo(
        members=(
            {n: _sha(v) for n, v in sorted(members.items()) if n != "json"} if digests else {}
        ),
        meta_fields=(
            {k: _json_sha(v) for k, v in fields if k not in PROVENANCE_FIELDS} if digests else {}
        ),
        transitions=[
            (
                str(t.get("from_class", "")),
                str(t.get("to_class", "")),
                int(t.get("pixels", 0)),
                float(t.get("area_m2", 0.0)),
            )
            for t in facts.get("transitions", [])
        ],
        captions=[str(c) for c in captions],
        qa=[(str(q.get("type", "")), str(q.get("answer", ""))) for q in qa],
    )


def _rows(root: Path, name: str) -> list[dict[str, Any]]:
    """The rows of one table of the release; none when the table is absent."""
    if not (root / name).is_file():
        return []
    return list(read_table(root, name).to_pylist())


def _side_json(root: Path, rel: str) -> tuple[Any, str | None]:
    """A JSON side file: ``(data, None)``, ``(None, why)``, or ``(None, None)`` when absent."""
    if not (root / rel).is_file():
        return None, None
    try:
        return read_json(root, rel), None
    except ReleaseError as exc:  # names the file by its full path: keep the page path-free
        return None, str(exc).replace(str(root / rel), rel)
    except (OSError, ValueError) as exc:  # not UTF-8, unreadable
        return None, f"{rel} cannot be read: {exc}"


def open_release(root: str | Path) -> Release:
    """Read the manifest, both tables and the side files (no shard yet).

    Raises:
        ReleaseError: the release has no (valid) manifest.
    """
    root = Path(root)
    manifest = read_manifest(root)
    rows = sorted(_rows(root, SAMPLES_TABLE), key=lambda r: str(r["key"]))
    rel = Release(root, manifest, rows, _rows(root, QUARANTINE_TABLE))
    summary, rel.gx_problem = _side_json(root, GX_SUMMARY)
    if summary is not None and not isinstance(summary, dict):
        rel.gx_problem = f"{GX_SUMMARY} is not a JSON object"
    else:
        rel.gx_summary = summary
    rel.reference, rel.reference_problem = _side_json(root, REFERENCE_METRICS)
    return rel


class ShardReader(Protocol):
    """One part of the report that reads every sample of the release's shards.

    Attributes:
        catches: the errors that end its read of a shard (:meth:`fail`); any other propagates.
    """

    catches: ClassVar[tuple[type[Exception], ...]]

    def add(self, key: str, members: dict[str, bytes]) -> None:
        """Take one sample (the shard's samples in tar order)."""

    def fail(self, shard: str, error: Exception) -> None:
        """Its read of ``shard`` (path relative to the release) ended on ``error``."""

    def needs(self, key: str) -> frozenset[str] | None:
        """The members of sample ``key`` it reads (None: all of them)."""


class Fanout:
    """Every sample read to each of several :class:`ShardReader`: each one sees what it would
    see reading the shards alone. A reader whose ``add`` raises one of its ``catches`` gets
    ``fail`` and no more sample of that shard; a read error ends the shard for every reader
    (``fail`` for those that catch it; for another it propagates).

    It has the methods of :class:`geodelta.pipelines.release.verify.SampleVisitor`, so that
    verify's read serves the readers; :meth:`unread` and :meth:`carried` read a shard verify
    did not.

    Attributes:
        shards: the shards whose read ended, in that order.
    """

    def __init__(self, root: Path, readers: Sequence[ShardReader]) -> None:
        self.root = root
        self.readers = tuple(readers)
        self.shards: list[str] = []
        self._failed: set[int] = set()  # readers done with the shard being read
        self._offsets: Mapping[str, tuple[Span, ...]] | None = None  # read on the first carry

    def sample(self, shard: str, key: str, members: dict[str, bytes]) -> None:
        """One sample of ``shard``, to each reader not done with that shard."""
        for i, reader in enumerate(self.readers):
            if i in self._failed:
                continue
            try:
                reader.add(key, members)
            except reader.catches as exc:
                reader.fail(shard, exc)
                self._failed.add(i)

    def done(self, shard: str, error: Exception | None) -> None:
        """The read of ``shard`` ended, at its end or on ``error``."""
        failed, self._failed = self._failed, set()
        self.shards.append(shard)
        if error is None:
            return
        for i, reader in enumerate(self.readers):
            if i not in failed:
                if not isinstance(error, reader.catches):
                    raise error
                reader.fail(shard, error)

    def unread(self, shard: str) -> None:
        """Read ``shard`` here (each reader then fails as it would have, e.g. on a missing file)."""
        samples = iter_tar_samples(self.root / shard)
        error: Exception | None = None
        while True:
            try:
                key, members = next(samples)
            except StopIteration:
                break
            except Exception as exc:  # the readers' catches decide (done)
                error = exc
                break
            self.sample(shard, key, members)
            if len(self._failed) == len(self.readers):  # nobody reads on
                break
        self.done(shard, error)

    def carried(self, shard: str, keys: Sequence[str]) -> None:
        """``shard`` holds bytes verified before (verify did not read it): the readers get its
        samples ``keys`` (tar order), only the members they read, sliced at the offsets the
        samples table records (each member's tar header checked); the shard is read as a tar
        instead where the table has no offsets or they do not match it."""
        found = self._at_offsets(shard, keys)
        if found is None:
            self.unread(shard)
            return
        for key in keys:
            self.sample(shard, key, found[key])
            if len(self._failed) == len(self.readers):  # nobody reads on
                break
        self.done(shard, None)

    def _at_offsets(self, shard: str, keys: Sequence[str]) -> dict[str, dict[str, bytes]] | None:
        if self._offsets is None:
            try:
                table = read_table(self.root, SAMPLES_TABLE, columns=["key", "member_offsets"])
                self._offsets = MemberOffsets(table)
            except (ReleaseError, KeyError):  # no table, or one without offsets
                self._offsets = {}
        groups: dict[frozenset[str] | None, list[str]] = {}
        for key in keys:
            wanted = [r.needs(key) for r in self.readers]
            names = None if None in wanted else frozenset().union(*wanted)  # type: ignore[arg-type]
            groups.setdefault(names, []).append(key)
        out: dict[str, dict[str, bytes]] = {}
        try:
            with (
                open(self.root / shard, "rb") as fh,
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data,
            ):
                for names, group in groups.items():
                    found = members_at_offsets(data, group, self._offsets, names)
                    if found is None:
                        return None
                    out.update(found)
        except (OSError, ValueError):  # unreadable, or empty (mmap refuses it): read as a tar
            return None
        return out


def read_shards(rel: Release, readers: Sequence[ShardReader]) -> None:
    """Read every shard of the manifest (in its order) once, for all ``readers``."""
    fanout = Fanout(rel.root, readers)
    for shard in rel.manifest.shards:
        fanout.unread(shard.path)


class SampleInfoReader:
    """:func:`scan_shards` as a :class:`ShardReader`: fills ``rel.samples``, ``rel.kept`` and
    ``rel.problems``; ``digests`` False leaves :class:`SampleInfo` ``members`` and
    ``meta_fields`` empty (only a diff reads them)."""

    catches: ClassVar[tuple[type[Exception], ...]] = (
        OSError,
        tarfile.TarError,
        json.JSONDecodeError,
    )

    def __init__(self, rel: Release, keep: Iterable[str] = (), *, digests: bool = True) -> None:
        self.rel = rel
        self.wanted = set(keep)
        self.digests = digests

    def add(self, key: str, members: dict[str, bytes]) -> None:
        """The sample's digests and text; its members when it is to be kept."""
        self.rel.samples[key] = _sample_info(members, digests=self.digests)
        if key in self.wanted:
            self.rel.kept[key] = members

    def needs(self, key: str) -> frozenset[str] | None:
        """The text members; every member of a sample kept, or with ``digests``."""
        return None if self.digests or key in self.wanted else _TEXT_MEMBERS

    def fail(self, shard: str, error: Exception) -> None:
        """A problem of the page's summary."""
        why = str(error).replace(str(self.rel.root / shard), shard)  # the page is path-free
        self.rel.problems.append(f"{shard}: cannot be read ({type(error).__name__}: {why})")


def scan_shards(rel: Release, keep: Iterable[str] = ()) -> Release:
    """One pass over every shard: per-sample digests and text, members of the ``keep`` keys."""
    read_shards(rel, [SampleInfoReader(rel, keep)])
    return rel


def load_release(root: str | Path, keep: Iterable[str] = ()) -> Release:
    """:func:`open_release`, then :func:`scan_shards`."""
    return scan_shards(open_release(root), keep)


def gx_failed_keys(summary: dict[str, Any] | None) -> dict[str, str]:
    """Sample key -> first failing expectation, from the ``unexpected_keys`` of the summary."""
    out: dict[str, str] = {}
    if summary is None:
        return out
    for suite in summary.get("suites", []) if isinstance(summary.get("suites"), list) else []:
        for exp in suite.get("expectations", []) if isinstance(suite, dict) else []:
            if not isinstance(exp, dict) or exp.get("success", True):
                continue
            for key in exp.get("unexpected_keys", []) or []:
                out.setdefault(str(key), str(exp.get("name", "gx")))
    return out


def review_keys(rows: Sequence[dict[str, Any]], n: int) -> list[str]:
    """The ``n`` keys with the highest ``disagreement`` (samples.parquet), ties by key."""
    scored = [r for r in rows if isinstance(r.get("disagreement"), int | float)]
    scored.sort(key=lambda r: (-float(r["disagreement"]), str(r["key"])))
    return [str(r["key"]) for r in scored[: max(n, 0)]]


def review_count(reference: Any) -> int:
    """How many samples the review list shows (``reference_config.review_top`` of the metrics)."""
    try:
        return int(reference["training"]["reference_config"]["review_top"])
    except (ValueError, KeyError, TypeError):
        return _DEFAULT_REVIEW
