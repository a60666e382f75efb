"""Verify a release against its manifest: checksums, sample layout, and that every member decodes.

The check streams each shard once (one sample in memory at a time), so it scales to thousands
of samples. Every problem is reported with the file and, where it applies, the sample key.

The manifest itself is checked too, so its gate cannot be edited away: its sha256 must be the
one ``manifest.sha256`` records (and, for a published release, the one
``<releases>/published/<name>-<version>.sha256`` recorded when it was published); the config
it embeds must hash to its ``config_hash`` (the gate rules are part of that config), and every
sample must carry the ``shaping_hash`` of that config's sample-shaping sections (a sample of a
layout before 1.2.0: its ``config_hash``). Files in the release folder that the manifest does not
list are reported: a note, or a problem with ``strict`` (what ``geodelta release`` uses).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import rasterio
from pydantic import ValidationError

from geodelta._io import HashAhead, file_stamp
from geodelta.errors import ConfigError, ReleaseError
from geodelta.pipelines.release.layout import (
    MANIFEST,
    MANIFEST_SHA256,
    PUBLISHED_DIR,
    SAMPLES_TABLE,
    SHARDS_DIR,
    UNLISTED,
    iter_tar_samples,
    read_manifest,
    read_table,
    shard_files,
)
from geodelta.pipelines.release.manifest import manifest_sha256, recorded_sha256
from geodelta.pipelines.stages.member_checks import (
    DECODE_CHECKS,
    DECODED_CODECS,
    MEMBER_CHECKS,
    decode_digest,
)
from geodelta.schemas import ReleaseManifest, SampleMeta, parse_config
from geodelta.schemas.config import recorded_hash, recorded_shaping_hash
from geodelta.schemas.members import SAMPLE_MEMBERS, member, members_for

__all__ = [
    "DECODE_CHECKS",
    "SHARD_CHECKS",
    "CarriedShard",
    "SampleVisitor",
    "VerifyResult",
    "decode_digest",
    "shard_context",
    "verify_release",
]

_MAX_PROBLEMS_PER_SHARD = 50

#: The version of the checks :func:`verify_release` runs on a shard's tar layout and on each
#: sample's members and metadata (the decodes have :data:`DECODE_CHECKS`): bumped when they
#: change, so that a shard verified by other checks is read again (:class:`CarriedShard`).
SHARD_CHECKS = 1


def shard_context(split: str, shaping: str, mode: str, members: Collection[str]) -> str:
    """sha256 of everything the checks of one shard compare its bytes with, besides the bytes:
    the check versions, the shard's split, the manifest's shaping hash, sample mode and member
    list, and the members table. The same bytes in the same context pass or fail alike."""
    record = {
        "checks": [SHARD_CHECKS, DECODE_CHECKS],
        "split": split,
        "shaping": shaping,
        "mode": mode,
        "members": sorted(members),
        "table": list(SAMPLE_MEMBERS),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CarriedShard:
    """A shard an earlier verify read and found without a problem (a previous release's
    ``report/verified.json``, for the shards ``build --from`` copied whole), keyed by its sha256.

    Attributes:
        context: its :func:`shard_context` then; it is carried only into the same context.
        samples: its samples in tar order, each with its :func:`decode_digest`.
    """

    context: str
    samples: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify_release`.

    Attributes:
        ok: True when no problem was found.
        samples: number of samples found in the shards.
        problems: one precise message per problem (file, sample key, what differs).
        notes: what is worth knowing but does not fail the check (files the manifest does not
            list, unless ``strict``).
    """

    ok: bool
    samples: int
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    #: ``digests=True`` only: sample key -> :func:`decode_digest` of every sample found
    #: without a problem (what ``report/verified.json`` records).
    passed: Mapping[str, str] = field(default_factory=dict, compare=False)
    #: samples whose decode checks were not run again: their digest was ``trusted`` (or their
    #: shard ``carried``).
    carried: int = field(default=0, compare=False)
    #: ``digests=True`` only: sha256 -> (:func:`shard_context`, its keys in tar order) of every
    #: shard found without a problem (what ``report/verified.json`` records of the shards).
    shards: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict, compare=False)


class SampleVisitor(Protocol):
    """What :func:`verify_release` shows of its read, so that its caller needs no pass of its
    own over the shards (the report reads each shard once this way).

    For each shard of the manifest, in manifest order, :func:`verify_release` calls
    :meth:`sample` with every sample of the shard in tar order, up to its end or the read error
    (whatever the checks find), then :meth:`done` with that error (``None``: read to its end).
    A shard missing on disk is not read: :meth:`unread` is called instead; nor is a shard
    ``carried`` (its bytes were verified before): :meth:`carried` is called instead. An error a
    visitor raises propagates out of :func:`verify_release`.
    """

    def sample(self, shard: str, key: str, members: dict[str, bytes]) -> None:
        """One sample of ``shard`` (its path relative to the release), as read."""

    def done(self, shard: str, error: Exception | None) -> None:
        """The read of ``shard`` ended: at its end (``error`` None) or on ``error``."""

    def unread(self, shard: str) -> None:
        """``shard`` is missing on disk: verify did not read it."""

    def carried(self, shard: str, keys: Sequence[str]) -> None:
        """``shard`` (checksum checked) holds the bytes of a shard verified before, with the
        samples ``keys`` in tar order: verify did not read it."""


def _check_file(root: Path, rel: str, size: int, sha256: str, ahead: HashAhead) -> list[str]:
    path = root / rel
    if not path.is_file():
        return [f"{rel}: missing"]
    st = path.stat()
    actual_size, actual_sha = st.st_size, ahead.sha256(path, file_stamp(st))
    problems = []
    if actual_size != size:
        problems.append(f"{rel}: size mismatch (expected {size}, actual {actual_size})")
    if actual_sha != sha256:
        problems.append(f"{rel}: sha256 mismatch (expected {sha256}, actual {actual_sha})")
    return problems


def _check_sample(
    shard: str,
    key: str,
    members: dict[str, bytes],
    manifest: ReleaseManifest,
    split: str,
    decode: _Decode | None = None,
    shaping: str = "",
) -> list[str]:
    """Problems of one sample of a shard (``decode``: digests trusted and recorded; ``shaping``:
    the shaping hash of the manifest's config)."""
    where = f"{shard}: {key}"
    problems: list[str] = []
    expected = set(manifest.members)
    present = set(members)
    if present != expected:
        missing, extra = sorted(expected - present), sorted(present - expected)
        problems.append(f"{where}: members differ (missing={missing}, extra={extra})")
    for name in members:
        if member(name) is None:
            problems.append(
                f"{where}: unknown member {name!r}: not in the members table "
                f"(geodelta.schemas.members: {', '.join(SAMPLE_MEMBERS)})"
            )
    meta: SampleMeta | None = None
    if "json" in members:
        try:
            meta = SampleMeta.model_validate_json(members["json"])
        except ValidationError as exc:
            problems.append(f"{where}: json is not a valid SampleMeta ({exc.error_count()} errors)")
    if meta is not None:
        if meta.key != key:
            problems.append(f"{where}: json key is {meta.key!r}")
        if meta.split != split:
            problems.append(f"{where}: json split is {meta.split!r} but the shard is {split!r}")
        if meta.shaping_hash is not None:
            if meta.shaping_hash != shaping:
                problems.append(
                    f"{where}: json shaping_hash is {meta.shaping_hash[:12]} but the config in "
                    f"{MANIFEST} gives {shaping[:12]}: the sample was built from another config"
                )
        else:
            if decode is not None:  # checked against the config hash: no shard record of it
                decode.unshaped.add(key)
            if meta.config_hash != manifest.config_hash:
                problems.append(
                    f"{where}: json config_hash is {str(meta.config_hash)[:12]} but {MANIFEST} says "
                    f"{manifest.config_hash[:12]}: the sample was built from another config"
                )
    mode = manifest.mode or "pair"
    digest = None if decode is None or meta is None else decode_digest(members, meta, mode)
    trusted = digest is not None and decode is not None and digest in decode.trusted
    for m in members_for(mode):
        if m.name in members and not (trusted and m.codec in DECODED_CODECS):
            problems.extend(MEMBER_CHECKS[m.codec](where, m.name, members[m.name], m.codec, meta))
    if decode is not None and digest is not None and not problems:
        decode.passed[key] = digest
        decode.carried += trusted
    return problems


@dataclass
class _Decode:
    """Decode digests of one verify: those ``trusted`` (checked before, by the same checks, on
    the same bytes) and those of the samples that ``passed`` now."""

    trusted: Collection[str]
    passed: dict[str, str] = field(default_factory=dict)
    carried: int = 0
    unshaped: set[str] = field(default_factory=set)  # samples of a layout before 1.2.0


def _check_shard(
    root: Path,
    rel: str,
    split: str,
    manifest: ReleaseManifest,
    visitor: SampleVisitor | None = None,
    decode: _Decode | None = None,
    shaping: str = "",
) -> tuple[list[str], list[str]]:
    """Problems and the keys of one shard; ``visitor`` sees every sample, then how the read ended."""
    problems: list[str] = []
    keys: list[str] = []
    seen: set[str] = set()
    checking = True  # an error in the checks ends them (as a read error does), not the read
    error: Exception | None = None
    samples = iter_tar_samples(root / rel)
    while checking or visitor is not None:
        try:
            key, members = next(samples)
        except StopIteration:
            break
        except (tarfile.TarError, OSError, EOFError) as exc:
            if checking:
                problems.append(f"{rel}: not a readable tar after {len(keys)} samples ({exc})")
            error = exc
            break
        if checking:
            try:
                if key in seen:
                    problems.append(f"{rel}: {key}: members are not contiguous or the key repeats")
                seen.add(key)
                keys.append(key)
                if len(problems) < _MAX_PROBLEMS_PER_SHARD:
                    problems.extend(
                        _check_sample(rel, key, members, manifest, split, decode, shaping)
                    )
            except (tarfile.TarError, OSError, EOFError) as exc:
                problems.append(f"{rel}: not a readable tar after {len(keys)} samples ({exc})")
                checking = False
        if visitor is not None:  # outside the checks: its errors are its caller's
            visitor.sample(rel, key, members)
    if visitor is not None:
        visitor.done(rel, error)
    return problems, keys


def _manifest_problems(root: Path, manifest: ReleaseManifest) -> list[str]:
    """Problems of ``manifest.json`` itself: its checksum and its embedded config."""
    problems: list[str] = []
    actual = manifest_sha256(root)
    recorded = recorded_sha256(root / MANIFEST_SHA256)
    if recorded is None:
        problems.append(
            f"{MANIFEST_SHA256}: missing; {MANIFEST} cannot be checked against it (rebuild the "
            "release)"
        )
    elif recorded != actual:
        problems.append(
            f"{MANIFEST}: sha256 {actual[:16]} differs from {MANIFEST_SHA256} ({recorded[:16]}): "
            f"{MANIFEST} was edited after it was written; rebuild the release"
        )
    record = root.parent / PUBLISHED_DIR / f"{root.name}.sha256"
    published = recorded_sha256(record) if record.is_file() else None
    if published is not None and published != actual:
        problems.append(
            f"{MANIFEST}: sha256 {actual[:16]} differs from the one recorded when the release "
            f"was published ({record}: {published[:16]}): {MANIFEST} was edited after publishing"
        )
    try:
        # base_dir under a file: a relative path in the config resolves to nothing there
        parse_config(  # still a valid config
            {**manifest.config, "output": {"dir": "."}},
            source=f"{root / MANIFEST} (config)",
            base_dir=str(root / MANIFEST),
        )
    except ConfigError as exc:
        first = getattr(exc, "problems", None) or [str(exc)]
        problems.append(
            f"{MANIFEST}: the embedded config is not a valid config ({first[0]}); {MANIFEST} was "
            "edited: rebuild the release"
        )
        return problems
    # the hash of the embedded text, not of its re-parse: a newer geodelta adds default keys
    found = recorded_hash(manifest.config)
    if found != manifest.config_hash:
        problems.append(
            f"{MANIFEST}: the embedded config hashes to {found[:12]}, not to its config_hash "
            f"{manifest.config_hash[:12]}: its config (e.g. the gate rules) was edited after the "
            "build; rebuild the release from the config you mean"
        )
    return problems


def _unlisted(root: Path, manifest: ReleaseManifest) -> list[str]:
    """Files in the release folder the manifest does not list (shards are checked apart;
    :data:`~geodelta.pipelines.release.layout.UNLISTED` is expected), path order."""
    listed = {f.path for f in manifest.files} | {s.path for s in manifest.shards}
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder).relative_to(root).as_posix()
        prefix = "" if here == "." else f"{here}/"
        dirs[:] = sorted(d for d in dirs if f"{prefix}{d}" not in UNLISTED)
        for name in names:
            rel = f"{prefix}{name}"
            shard = here == SHARDS_DIR and name.endswith(".tar")
            if rel not in listed and rel not in UNLISTED and not shard:
                found.append(rel)
    return sorted(found)


def verify_release(
    release_dir: str | Path,
    *,
    strict: bool = False,
    visitor: SampleVisitor | None = None,
    digests: bool = False,
    trusted: Collection[str] = frozenset(),
    carried: Mapping[str, CarriedShard] | None = None,
) -> VerifyResult:
    """Check a release against its ``manifest.json``.

    Recomputes the size and sha256 of every shard and file in the manifest, reads every shard
    and checks each sample has exactly the manifest's members (a member the members table of
    :mod:`geodelta.schemas.members` does not know is reported by name), that each member
    decodes by its codec (PNG, GeoTIFF, JSON) and agrees with the sample's metadata, and that the per-shard and per-split
    sample counts match the manifest. Shards on disk that the manifest does not list, and
    sample keys that ``samples.parquet`` and the shards disagree on, are problems too. A release
    with 0 samples is refused (:func:`empty_release_problem`): nothing to verify is not a pass.
    An edited manifest is a problem (see the module docstring); other files the manifest does
    not list are notes, or problems with ``strict``.

    Args:
        release_dir: the release folder.
        strict: files the manifest does not list are problems, not notes.
        visitor: shown every sample read (:class:`SampleVisitor`); it changes no check.
        digests: record the :func:`decode_digest` of every sample without a problem
            (``passed``).
        trusted: decode digests whose samples passed the decode checks before (a previous
            release's ``report/verified.json``, for the samples ``build --from`` copied byte
            for byte): a sample with one of them skips its PNG and GeoTIFF decodes, nothing
            else (``carried`` counts them). Implies ``digests``.

    Returns:
        The result; ``ok`` is True when ``problems`` is empty.
    """
    root = Path(release_dir)
    try:
        manifest = read_manifest(root)
    except ReleaseError as exc:
        return VerifyResult(ok=False, samples=0, problems=(f"{MANIFEST}: {exc}",))

    # every checksum, in the order checked, hashed by a child process beside the reads and
    # decodes (a file missing is reported by _check_file)
    paths = [*(f.path for f in manifest.files), *(s.path for s in manifest.shards)]
    with HashAhead(root / rel for rel in paths) as ahead:
        return _verify(root, manifest, ahead, strict, visitor, digests, trusted, carried or {})


def _verify(
    root: Path,
    manifest: ReleaseManifest,
    ahead: HashAhead,
    strict: bool,
    visitor: SampleVisitor | None,
    digests: bool,
    trusted: Collection[str],
    carried: Mapping[str, CarriedShard],
) -> VerifyResult:
    """:func:`verify_release`'s checks, the checksums from ``ahead``."""
    problems: list[str] = _manifest_problems(root, manifest)
    for info in manifest.files:
        problems.extend(_check_file(root, info.path, info.bytes, info.sha256, ahead))
    unlisted = [
        f"{rel}: in the release folder, not in {MANIFEST}" for rel in _unlisted(root, manifest)
    ]
    notes: list[str] = []
    (problems if strict else notes).extend(unlisted)

    listed = {s.path for s in manifest.shards}
    for path in shard_files(root):
        rel = path.relative_to(root).as_posix()
        if rel not in listed:
            problems.append(f"{rel}: shard on disk is not in the manifest")

    split_totals: Counter[str] = Counter()
    all_keys: list[str] = []
    decode = _Decode(trusted) if digests or trusted or carried else None
    clean: dict[str, tuple[str, tuple[str, ...]]] = {}  # the shards without a problem
    contexts: dict[str, str] = {}  # split -> shard_context
    mode = manifest.mode or "pair"
    # one GDAL environment for every GeoTIFF member, with the options each open would set up
    # for itself without it (rasterio's defaults): a fresh one per member cost ~20 % of the
    # GeoTIFF checks
    shaping = recorded_shaping_hash(manifest.config)
    with rasterio.Env.from_defaults():
        for shard in manifest.shards:
            file_problems = _check_file(root, shard.path, shard.bytes, shard.sha256, ahead)
            problems.extend(file_problems)
            if file_problems and file_problems[0].endswith(": missing"):
                if visitor is not None:
                    visitor.unread(shard.path)
                continue
            if shard.split not in contexts:
                contexts[shard.split] = shard_context(shard.split, shaping, mode, manifest.members)
            context = contexts[shard.split]
            carry = None if file_problems else carried.get(shard.sha256)
            shard_problems: list[str] = []
            if decode is not None and carry is not None and carry.context == context:
                # the same bytes passed the same checks before: not read again
                keys = [k for k, _ in carry.samples]
                decode.passed.update(carry.samples)
                decode.carried += len(keys)
                if visitor is not None:
                    visitor.carried(shard.path, keys)
            else:
                shard_problems, keys = _check_shard(
                    root, shard.path, shard.split, manifest, visitor, decode, shaping
                )
            problems.extend(shard_problems)
            if len(keys) != shard.samples:
                problems.append(
                    f"{shard.path}: sample count mismatch (expected {shard.samples}, actual "
                    f"{len(keys)})"
                )
            elif (
                not (file_problems or shard_problems)
                and decode is not None
                and all(k in decode.passed and k not in decode.unshaped for k in keys)
            ):
                clean[shard.sha256] = (context, tuple(keys))
            split_totals[shard.split] += len(keys)
            all_keys.extend(keys)

    for split in sorted(set(manifest.splits) | set(split_totals)):
        expected, actual = manifest.splits.get(split, 0), split_totals.get(split, 0)
        if expected != actual:
            problems.append(
                f"split {split}: sample count mismatch (expected {expected}, actual {actual})"
            )

    if any(f.path == SAMPLES_TABLE for f in manifest.files) and (root / SAMPLES_TABLE).is_file():
        try:
            table_keys = read_table(root, SAMPLES_TABLE, columns=["key"]).column("key")
            in_table = set(table_keys.to_pylist())
            in_shards = set(all_keys)
            if in_table != in_shards:
                problems.append(
                    f"{SAMPLES_TABLE}: keys differ from the shards (only in table: "
                    f"{sorted(in_table - in_shards)[:5]}, only in shards: "
                    f"{sorted(in_shards - in_table)[:5]})"
                )
        except (ReleaseError, KeyError) as exc:  # unreadable, or no "key" column
            problems.append(f"{SAMPLES_TABLE}: cannot be read ({exc})")

    if not all_keys and not sum(manifest.splits.values()):
        problems.append(empty_release_problem(manifest))
    return VerifyResult(
        ok=not problems,
        samples=len(all_keys),
        problems=tuple(problems),
        notes=tuple(notes),
        passed={} if decode is None else dict(sorted(decode.passed.items())),
        carried=0 if decode is None else decode.carried,
        shards={} if decode is None else dict(sorted(clean.items())),
    )


def empty_release_problem(manifest: ReleaseManifest) -> str:
    """What verify (and so ``geodelta release``) says of a release with 0 samples."""
    top = sorted(manifest.quarantined.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    reasons = ", ".join(f"{reason} x{n}" for reason, n in top) or "none recorded"
    return (
        f"{MANIFEST}: the release holds 0 samples (top quarantine reasons: {reasons}); a build "
        "that yields nothing is an error, not a release: fix the cause and rebuild"
    )
