"""Assemble a release from the staging area: the orchestration (:func:`write_release`) and tables.

A release directory holds::

    shards/{split}-{i:06d}.tar   WebDataset tars, samples laid out by place within a split
    samples.parquet              one row per sample (metadata for filtering and reports;
                                 GeoParquet: footprint, captions, member offsets in the shard)
    quarantine.parquet           what did not become a sample, and why (GeoParquet: footprint)
    README.md                    dataset card
    collection.json              STAC Collection describing the release (one asset per shard)
    snapshot/items.parquet       the STAC items the build searched (stac-geoparquet)
    validation/                  Great Expectations results, summary and Data Docs
    manifest.json                sizes and sha256 of everything above (written last, by
                                 :func:`~geodelta.pipelines.release.manifest.write_manifest`,
                                 with manifest.sha256; the report is listed when written)

Everything is deterministic: the same staging area and config give byte-identical files (fixed
tar mtime/owner/mode, sorted keys, JSON with sorted keys, no wall-clock time, no absolute
path). Each file is written atomically (temp file + :func:`os.replace`); ``manifest.json`` is
removed first and written last, so a release with a manifest is a complete one.

The parts live beside it: :mod:`~geodelta.pipelines.release.shards` (tars),
:mod:`~geodelta.pipelines.release.card` (``README.md``),
:mod:`~geodelta.pipelines.release.collection` (``collection.json``) and
:mod:`~geodelta.pipelines.release.gx` (the contract); this module writes the two parquet tables
and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import ValidationError

from geodelta._io import json_bytes, write_atomic
from geodelta.errors import ReleaseError
from geodelta.pipelines.release.card import dataset_card
from geodelta.pipelines.release.collection import stac_collection
from geodelta.pipelines.release.geoparquet import (
    MEMBER_OFFSETS_TYPE,
    cell_footprint_wkb,
    geoparquet_bytes,
)
from geodelta.pipelines.release.layout import (
    CARD,
    COLLECTION,
    DRIFT,
    INCREMENTAL,
    MANIFEST,
    MANIFEST_SHA256,
    QUARANTINE_TABLE,
    SAMPLES_TABLE,
    SNAPSHOT,
    VALIDATION_DIR,
)
from geodelta.pipelines.release.manifest import files_under, write_manifest
from geodelta.pipelines.release.shards import clean_shards, write_shards
from geodelta.pipelines.release.snapshot import release_snapshot
from geodelta.pipelines.release.staging import Staging, StagingError, quarantine_sort_key
from geodelta.schemas import (
    BuildConfig,
    FileInfo,
    QuarantineRecord,
    ReleaseManifest,
    SampleMeta,
    strip_secret,
)
from geodelta.schemas.members import members_for

if TYPE_CHECKING:
    from geodelta.pipelines.release.gx import Checkpoint
    from geodelta.pipelines.release.linked import LinkedSamples

__all__ = ["QUARANTINE_SCHEMA", "SAMPLES_SCHEMA", "write_release"]

SAMPLES_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("cell_id", pa.string()),
        ("region", pa.string()),
        ("t0", pa.timestamp("us", tz="UTC")),
        ("t1", pa.timestamp("us", tz="UTC")),
        ("gap_days", pa.float64()),
        ("crs", pa.string()),
        ("min_lon", pa.float64()),
        ("min_lat", pa.float64()),
        ("max_lon", pa.float64()),
        ("max_lat", pa.float64()),
        ("before_item", pa.string()),
        ("after_item", pa.string()),
        ("before_clear", pa.float64()),
        ("after_clear", pa.float64()),
        ("before_valid", pa.float64()),
        ("after_valid", pa.float64()),
        ("shift_dy", pa.float64()),
        ("shift_dx", pa.float64()),
        ("residual_px", pa.float64()),
        ("coreg_applied", pa.bool_()),
        ("changed_fraction", pa.float64()),
        ("n_regions", pa.int32()),
        ("main_transition", pa.string()),
        ("n_captions", pa.int32()),
        ("n_qa", pa.int32()),
        ("annotator", pa.string()),
        ("tokens_in", pa.int64()),
        ("tokens_out", pa.int64()),
        ("cost_usd", pa.float64()),
        ("captions", pa.list_(pa.string())),
        ("member_offsets", MEMBER_OFFSETS_TYPE),  # each member's data offset and size in the tar
        ("geometry", pa.binary()),  # the cell's lon/lat footprint, WKB (GeoParquet)
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("cell_id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("geometry", pa.binary()),  # the cell's lon/lat footprint, WKB (GeoParquet)
    ]
)


def _scrub_urls(value: Any) -> Any:
    """Strip query strings (SAS tokens) from every URL string in a JSON-like value."""
    if isinstance(value, dict):
        return {k: _scrub_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_urls(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return strip_secret(value)
    return value


def _places(root: Path, cfg: BuildConfig, staging: Staging) -> list[tuple[str, str]]:
    """Local folders a message may name -> the placeholder a release records instead."""
    named = [
        (root, "<release>"),
        (Path(cfg.base_dir), "<config>"),
    ]
    if isinstance(staging.root, Path):  # a staging area at a URL is not a local folder
        named.insert(0, (staging.root, "<staging>"))
    if "://" not in cfg.catalog.url or cfg.catalog.url.startswith("file://"):
        catalog = Path(cfg.resolve(cfg.catalog.url.removeprefix("file://")))
        named.append((catalog.parent, "<catalog>"))
    out: dict[str, str] = {}
    for folder, label in named:
        for form in (str(folder), str(folder.absolute()), str(folder.resolve())):
            if form not in ("", ".", "/"):
                out.setdefault(form, label)
    return sorted(out.items(), key=lambda kv: -len(kv[0]))  # the deepest folder first


def _portable(rec: QuarantineRecord, places: list[tuple[str, str]]) -> QuarantineRecord:
    """A quarantine record without the folders this build happened to use (an unreadable
    asset reads ``<catalog>/items/x/B02.tif``): the same data gives the same bytes anywhere."""
    detail = rec.detail
    for folder, label in places:
        detail = re.sub(re.escape(folder) + r"(?![\w.-])", label, detail)  # label: no "\\"
    return rec if detail == rec.detail else rec.model_copy(update={"detail": detail})


def _sample_row(
    meta: SampleMeta, shard: str, members: dict[str, bytes], offsets: list[dict[str, Any]]
) -> dict[str, Any]:
    facts = meta.facts
    main = ""
    if facts.transitions:
        t = facts.transitions[0]
        main = f"{t.from_class}->{t.to_class}"
    min_lon, min_lat, max_lon, max_lat = meta.bbox_lonlat
    captions = [str(c) for c in json.loads(members["captions.json"])]
    return {
        "key": meta.key,
        "split": meta.split,
        "shard": shard,
        "cell_id": meta.cell_id,
        "region": meta.region,
        "t0": meta.t0,
        "t1": meta.t1,
        "gap_days": meta.gap_days,
        "crs": meta.crs,
        "min_lon": min_lon,
        "min_lat": min_lat,
        "max_lon": max_lon,
        "max_lat": max_lat,
        "before_item": meta.before_item,
        "after_item": meta.after_item,
        "before_clear": meta.before_clear,
        "after_clear": meta.after_clear,
        "before_valid": meta.before_valid,
        "after_valid": meta.after_valid,
        "shift_dy": meta.coreg.shift_px[0],
        "shift_dx": meta.coreg.shift_px[1],
        "residual_px": meta.coreg.residual_px,
        "coreg_applied": meta.coreg.applied,
        "changed_fraction": facts.changed_fraction,
        "n_regions": facts.n_regions,
        "main_transition": main,
        "n_captions": len(captions),
        "n_qa": len(json.loads(members["qa.json"])),
        "annotator": meta.annotator,
        "tokens_in": meta.tokens_in,
        "tokens_out": meta.tokens_out,
        "cost_usd": meta.cost_usd,
        "captions": captions,
        "member_offsets": offsets,  # as written (what member_offsets reads back)
        "geometry": cell_footprint_wkb(meta.cell_id),
    }


def _quarantine_row(rec: QuarantineRecord) -> dict[str, Any]:
    return {**rec.model_dump(mode="json"), "geometry": cell_footprint_wkb(rec.cell_id)}


def sample_members(cfg: BuildConfig) -> tuple[str, ...]:
    """The members every sample of a release of ``cfg`` carries (pairs or sequences)."""
    return tuple(m.name for m in members_for("pair" if cfg.time.series is None else "series"))


class _Source:
    """Where the release reads a sample: the staging area, or the previous release for a
    sample a ``--from`` build linked (:mod:`.linked`)."""

    def __init__(self, staging: Staging, linked: LinkedSamples | None) -> None:
        self.staging, self.linked = staging, linked

    def member_names(self, key: str) -> set[str]:
        if self.linked is not None and key in self.linked:
            return self.linked.member_names(key)
        return self.staging.member_names(key)

    def read_member(self, key: str, name: str) -> bytes:
        if self.linked is not None and key in self.linked:
            return self.linked.read_member(key, name)
        return self.staging.read_member(key, name)

    def meta(self, key: str) -> SampleMeta:
        """The sample's ``json`` member as metadata (a linked one's as the reuse stage read it).

        Raises:
            StagingError, ReleaseError: it cannot be read; ValidationError: not a SampleMeta.
        """
        if self.linked is not None and key in self.linked:
            return self.linked.meta(key)
        return SampleMeta.model_validate_json(self.staging.read_member(key, "json"))


def _load_metas(
    source: _Source, keys: Iterable[str], cfg: BuildConfig
) -> tuple[dict[str, SampleMeta], list[QuarantineRecord]]:
    """Read and check the ``json`` member of every staged sample.

    A staged sample that cannot go into a shard (missing members, unreadable metadata) is
    quarantined at stage ``shard`` instead of failing the whole release.
    """
    metas: dict[str, SampleMeta] = {}
    dropped: list[QuarantineRecord] = []
    expected = set(sample_members(cfg))

    def drop(key: str, cell_id: str, reason: str, detail: str) -> None:
        dropped.append(
            QuarantineRecord(key=key, cell_id=cell_id, stage="shard", reason=reason, detail=detail)
        )

    for key in keys:
        cell_id = key.rsplit("_", 2)[0]  # key = {cell_id}_{t0}_{t1}
        try:
            present = source.member_names(key)
        except (StagingError, ReleaseError) as exc:
            drop(key, cell_id, "missing_sample", str(exc))
            continue
        if present != expected:
            drop(
                key,
                cell_id,
                "bad_members",
                f"staged members differ from the members table (missing="
                f"{sorted(expected - present)}, extra={sorted(present - expected)}); re-run the cell",
            )
            continue
        try:
            meta = source.meta(key)
        except ReleaseError as exc:  # a linked sample whose previous shard changed
            drop(key, cell_id, "missing_sample", str(exc))
            continue
        except ValidationError as exc:
            drop(
                key,
                cell_id,
                "bad_meta",
                f"the json member is not a valid SampleMeta ({exc.error_count()} errors, first: "
                f"{exc.errors()[0]['msg']}); re-run the cell",
            )
            continue
        if meta.key != key:
            drop(
                key,
                meta.cell_id,
                "key_mismatch",
                f"staged under {key!r} but its json says key={meta.key!r}; re-run the cell",
            )
            continue
        metas[key] = meta
    return metas, dropped


def _clean(release_dir: Path) -> None:
    """Remove what a previous run left that this run rewrites (manifest first)."""
    (release_dir / MANIFEST).unlink(missing_ok=True)
    (release_dir / MANIFEST_SHA256).unlink(missing_ok=True)
    (release_dir / INCREMENTAL).unlink(missing_ok=True)  # a --from run's: rewritten if --from
    (release_dir / DRIFT).unlink(missing_ok=True)  # idem
    (release_dir / SNAPSHOT).unlink(missing_ok=True)  # rewritten when the build made one
    clean_shards(release_dir)
    for path in release_dir.glob(".*.tmp"):
        path.unlink()


def _check_contract(
    root: Path,
    cfg: BuildConfig,
    source: _Source,
    metas: dict[str, SampleMeta],
    checkpoint: Checkpoint | None,
) -> list[QuarantineRecord]:
    """Run the Great Expectations checkpoint (``validation/``); failing samples leave ``metas``."""
    from geodelta.pipelines.release.gx import validate_release

    rejected = validate_release(root, cfg, metas, source.read_member, checkpoint=checkpoint)
    for rec in rejected:
        metas.pop(rec.key, None)
    return rejected


def write_release(
    release_dir: str | Path,
    cfg: BuildConfig,
    staging: Staging,
    *,
    code_version: str,
    extra_quarantine: Sequence[QuarantineRecord] = (),
    incremental: dict[str, Any] | None = None,
    drift: dict[str, Any] | None = None,
    linked: LinkedSamples | None = None,
    checkpoint: Checkpoint | None = None,
) -> ReleaseManifest:
    """Write a release from the marked cells of a staging area.

    Samples are grouped by split (their ``json`` member's ``split``) and written to
    ``shards/{split}-{i:06d}.tar`` laid out by place (:mod:`.shards`: place order, boundaries
    chosen by the samples' keys, at most ``shards.max_samples`` samples and
    ``shards.max_bytes`` bytes a shard). Stale shards of an earlier run are
    removed first. Staged samples that cannot be sharded (missing members, bad metadata) are
    quarantined at stage ``shard``. Before any shard is written, the Great Expectations
    checkpoint (:mod:`geodelta.pipelines.release.gx`) runs over the sample table; samples it
    rejects are quarantined at stage ``validate`` (reason ``gx:<expectation>:<column>``) and
    its results and Data Docs land in ``validation/`` (listed in the manifest).

    Args:
        release_dir: output folder (created when missing).
        cfg: the build config.
        staging: the staging area the workers filled.
        code_version: geodelta version building the release.
        extra_quarantine: records dropped outside the staged cells (e.g. plan or validate).
        incremental: a ``--from`` build's counts (:mod:`.incremental`): written to
            ``incremental.json`` and shown in the card.
        drift: a ``--from`` build's catalog drift (:mod:`.drift`): written to ``drift.json``.
        linked: the samples a ``--from`` build linked (:mod:`.linked`): read from the previous
            release, not the staging area.
        checkpoint: what runs the GX checkpoint (default :func:`.gx.run_checkpoint`; a build
            passes :meth:`.sidecar.Sidecar.run_checkpoint`).

    Returns:
        The manifest that was written to ``manifest.json``.
    """
    root = Path(release_dir)
    root.mkdir(parents=True, exist_ok=True)
    _clean(root)

    keys, staged_quarantine = staging.outcomes()
    source = _Source(staging, linked)
    metas, dropped = _load_metas(source, keys, cfg)
    dropped += _check_contract(root, cfg, source, metas, checkpoint)
    places = _places(root, cfg, staging)
    quarantine = sorted(
        (_portable(q, places) for q in (*staged_quarantine, *extra_quarantine, *dropped)),
        key=quarantine_sort_key,
    )
    shards, rows = write_shards(root, cfg, staging, metas, _sample_row, linked)

    splits = dict(sorted(Counter(m.split for m in metas.values()).items()))
    funnel = dict(sorted(Counter(f"{q.stage}:{q.reason}" for q in quarantine).items()))

    files: list[FileInfo] = []

    def put(name: str, data: bytes) -> None:
        write_atomic(root / name, data)
        files.append(FileInfo(path=name, bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))

    put(SAMPLES_TABLE, geoparquet_bytes(rows, SAMPLES_SCHEMA))
    put(
        QUARANTINE_TABLE,
        geoparquet_bytes([_quarantine_row(q) for q in quarantine], QUARANTINE_SCHEMA),
    )
    put(
        CARD,
        dataset_card(
            cfg,
            code_version=code_version,
            metas=metas,
            splits=splits,
            shards=shards,
            funnel=funnel,
            incremental=incremental,
        ),
    )
    if incremental is not None:
        put(INCREMENTAL, json_bytes(incremental))
    if drift is not None:
        put(DRIFT, json_bytes(drift))
    snapshot = release_snapshot(staging)  # the items the build searched (:mod:`.snapshot`)
    if snapshot is not None:
        put(SNAPSHOT, snapshot)
    files += files_under(root, VALIDATION_DIR)  # GX results and Data Docs (deterministic)
    put(COLLECTION, stac_collection(cfg, metas, splits, shards, files))  # lists the files above

    manifest = ReleaseManifest(
        name=cfg.name,
        version=cfg.version,
        code_version=code_version,
        config_hash=cfg.config_hash(),
        config=_scrub_urls(cfg.recorded()),  # no local folder: same bytes anywhere
        members=sample_members(cfg),
        mode="series" if cfg.time.series is not None else None,
        splits=splits,
        quarantined=funnel,
        shards=tuple(shards),
        files=tuple(files),
    )
    return write_manifest(root, manifest)  # with manifest.sha256; a secret by value: never
