"""Assemble a release from the staging area: shards, tables, dataset card, STAC collection.

A release directory holds::

    shards/{split}-{i:06d}.tar   WebDataset tars, samples sorted by key within a split
    samples.parquet              one row per sample (metadata for filtering and reports)
    quarantine.parquet           what did not become a sample, and why
    README.md                    dataset card
    collection.json              STAC Collection describing the release (one asset per shard)
    manifest.json                sizes and sha256 of everything above (written last)
    validation/                  Great Expectations results, summary and Data Docs (not in
                                 the manifest: they carry run times)

Everything is deterministic: the same staging area and config give byte-identical files (fixed
tar mtime/owner/mode, sorted keys, JSON with sorted keys, no wall-clock time, no absolute
path). Each file is written atomically (temp file + :func:`os.replace`); ``manifest.json`` is
removed first and written last, so a release with a manifest is a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pystac
import webdataset as wds
from pydantic import ValidationError

from geodelta._io import sha256_file, tmp_name, write_atomic
from geodelta.pipelines.release.layout import (
    CARD,
    COLLECTION,
    MANIFEST,
    QUARANTINE_TABLE,
    SAMPLES_TABLE,
    SHARDS_DIR,
)
from geodelta.pipelines.release.staging import Staging, StagingError
from geodelta.schemas import (
    SAMPLE_MEMBERS,
    BuildConfig,
    FileInfo,
    QuarantineRecord,
    ReleaseManifest,
    SampleMeta,
    ShardInfo,
    strip_secret,
)
from geodelta.schemas.classes import BINARY_CHANGE, decode_transition

#: Fixed tar header fields, so shards are byte-deterministic.
TAR_MTIME = 0
TAR_USER = "geodelta"
TAR_GROUP = "geodelta"
TAR_MODE = 0o444


FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"

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
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("cell_id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)

#: Member table of the dataset card (DESIGN.md, "A sample in a shard").
MEMBER_DOCS: dict[str, str] = {
    "before.tif": "before scene, multispectral uint16 GeoTIFF (CRS + transform in the file)",
    "after.tif": "after scene, co-registered onto the before scene, same layout",
    "before.png": "8-bit true-colour rendering of the before scene",
    "after.png": "8-bit true-colour rendering of the after scene",
    "mask.png": "change mask: 0 no change, k = transition code (table below)",
    "lc_before.png": "land-cover class index at t0 (0 = unknown; all 0 for change-mask labels)",
    "lc_after.png": "land-cover class index at t1 (0 = unknown; all 0 for change-mask labels)",
    "json": "metadata (SampleMeta): STAC items, times, CRS, transform, bbox, cloud/valid "
    "fractions, co-registration, facts, annotator, licence",
    "captions.json": "list of change captions",
    "qa.json": "list of {type, question, answer, evidence}",
}


def _json_text(data: Any) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _tar_entry_bytes(name: str, size: int) -> int:
    """Bytes one member takes in a tar: a 512-byte header plus the data padded to 512."""
    return 512 + (size + 511) // 512 * 512 + (1024 if len(name) > 100 else 0)


def _scrub_urls(value: Any) -> Any:
    """Strip query strings (SAS tokens) from every URL string in a JSON-like value."""
    if isinstance(value, dict):
        return {k: _scrub_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_urls(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return strip_secret(value)
    return value


def _quarantine_sort_key(rec: QuarantineRecord) -> tuple[str, str, str, str, str]:
    return (rec.cell_id, rec.key, rec.stage, rec.reason, rec.detail)


@dataclass
class _ShardOut:
    """A shard being written: a temp file that becomes ``path`` on close."""

    path: Path
    tmp: Path
    stream: IO[bytes]
    writer: wds.TarWriter
    split: str
    samples: int = 0
    nbytes: int = 0


def _open_shard(path: Path, split: str) -> _ShardOut:
    tmp = tmp_name(path)
    stream = tmp.open("wb")
    writer = wds.TarWriter(
        stream,
        user=TAR_USER,
        group=TAR_GROUP,
        mode=TAR_MODE,
        encoder=False,
        mtime=TAR_MTIME,
        compress=False,
    )
    return _ShardOut(path=path, tmp=tmp, stream=stream, writer=writer, split=split)


def _close_shard(shard: _ShardOut, release_dir: Path) -> ShardInfo:
    shard.writer.close()
    shard.stream.close()
    os.replace(shard.tmp, shard.path)
    return ShardInfo(
        path=shard.path.relative_to(release_dir).as_posix(),
        split=shard.split,
        samples=shard.samples,
        bytes=shard.path.stat().st_size,
        sha256=sha256_file(shard.path),
    )


def _sample_row(meta: SampleMeta, shard: str, members: dict[str, bytes]) -> dict[str, Any]:
    facts = meta.facts
    main = ""
    if facts.transitions:
        t = facts.transitions[0]
        main = f"{t.from_class}->{t.to_class}"
    min_lon, min_lat, max_lon, max_lat = meta.bbox_lonlat
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
        "n_captions": len(json.loads(members["captions.json"])),
        "n_qa": len(json.loads(members["qa.json"])),
        "annotator": meta.annotator,
        "tokens_in": meta.tokens_in,
        "tokens_out": meta.tokens_out,
        "cost_usd": meta.cost_usd,
    }


def _parquet_bytes(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> bytes:
    columns = {name: [row[name] for row in rows] for name in schema.names}
    table = pa.Table.from_pydict(columns, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def _load_metas(
    staging: Staging, keys: Iterable[str]
) -> tuple[dict[str, SampleMeta], list[QuarantineRecord]]:
    """Read and check the ``json`` member of every staged sample.

    A staged sample that cannot go into a shard (missing members, unreadable metadata) is
    quarantined at stage ``shard`` instead of failing the whole release.
    """
    metas: dict[str, SampleMeta] = {}
    dropped: list[QuarantineRecord] = []
    expected = set(SAMPLE_MEMBERS)
    for key in keys:
        cell_id = key.rsplit("_", 2)[0]  # key = {cell_id}_{t0}_{t1}
        try:
            present = {p.name for p in staging.sample_dir(key).iterdir() if p.is_file()}
        except StagingError as exc:
            dropped.append(
                QuarantineRecord(
                    key=key,
                    cell_id=cell_id,
                    stage="shard",
                    reason="missing_sample",
                    detail=str(exc),
                )
            )
            continue
        if present != expected:
            detail = (
                f"staged members differ from SAMPLE_MEMBERS (missing={sorted(expected - present)}, "
                f"extra={sorted(present - expected)}); re-run the cell"
            )
            dropped.append(
                QuarantineRecord(
                    key=key, cell_id=cell_id, stage="shard", reason="bad_members", detail=detail
                )
            )
            continue
        try:
            meta = SampleMeta.model_validate_json(staging.read_member(key, "json"))
        except ValidationError as exc:
            dropped.append(
                QuarantineRecord(
                    key=key,
                    cell_id=cell_id,
                    stage="shard",
                    reason="bad_meta",
                    detail=f"the json member is not a valid SampleMeta ({exc.error_count()} "
                    f"errors, first: {exc.errors()[0]['msg']}); re-run the cell",
                )
            )
            continue
        if meta.key != key:
            dropped.append(
                QuarantineRecord(
                    key=key,
                    cell_id=meta.cell_id,
                    stage="shard",
                    reason="key_mismatch",
                    detail=f"staged under {key!r} but its json says key={meta.key!r}; re-run the cell",
                )
            )
            continue
        metas[key] = meta
    return metas, dropped


def _write_shards(
    release_dir: Path, cfg: BuildConfig, staging: Staging, metas: dict[str, SampleMeta]
) -> tuple[list[ShardInfo], list[dict[str, Any]]]:
    """Write every split's shards; returns the shard infos and the sample-table rows."""
    by_split: dict[str, list[str]] = defaultdict(list)
    for key, meta in metas.items():
        by_split[meta.split].append(key)
    shards_dir = release_dir / SHARDS_DIR
    infos: list[ShardInfo] = []
    rows: list[dict[str, Any]] = []
    max_samples, max_bytes = cfg.shards.max_samples, cfg.shards.max_bytes
    for split in sorted(by_split):
        index = 0
        current: _ShardOut | None = None
        for key in sorted(by_split[split]):
            members = staging.read_members(key)
            size = sum(_tar_entry_bytes(f"{key}.{n}", len(v)) for n, v in members.items())
            if current is not None and (
                current.samples >= max_samples or current.nbytes + size > max_bytes
            ):
                infos.append(_close_shard(current, release_dir))
                current = None
            if current is None:
                current = _open_shard(shards_dir / f"{split}-{index:06d}.tar", split)
                index += 1
            current.writer.write({"__key__": key, **members})
            current.samples += 1
            current.nbytes += size
            rel = current.path.relative_to(release_dir).as_posix()
            rows.append(_sample_row(metas[key], rel, members))
        if current is not None:
            infos.append(_close_shard(current, release_dir))
    return infos, rows


def _present_codes(metas: Iterable[SampleMeta]) -> list[int]:
    codes = {t.code for m in metas for t in m.facts.transitions}
    codes.add(BINARY_CHANGE)
    return sorted(codes)


def _llm_lines(metas: Iterable[SampleMeta]) -> list[str]:
    """Card lines on LLM annotation (models, prompt versions, tokens, cost); none without it."""
    llm = [m for m in metas if m.prompt_version is not None]
    if not llm:
        return []
    who = sorted({f"{m.annotator} {m.annotator_version}, model `{m.model}`" for m in llm})
    prompts = sorted({str(m.prompt_version) for m in llm})
    return [
        f"- LLM annotation: {len(llm)} samples by {'; '.join(who)}; prompt(s) "
        + ", ".join(f"`{p}`" for p in prompts),
        f"- LLM tokens: {sum(m.tokens_in for m in llm)} in, {sum(m.tokens_out for m in llm)} "
        f"out; cost ${sum(m.cost_usd for m in llm):.6f} (samples of this release; per sample "
        f"in `{SAMPLES_TABLE}`)",
    ]


def _card(
    cfg: BuildConfig,
    *,
    code_version: str,
    metas: dict[str, SampleMeta],
    splits: dict[str, int],
    shards: Sequence[ShardInfo],
    funnel: dict[str, int],
) -> bytes:
    title = f"{cfg.name} {cfg.version}"
    desc = cfg.description.strip() or "(no description given in the config)"
    lines = [f"# {title}", "", desc, ""]
    if "synthetic" in cfg.description.lower():
        lines += [
            "> **Synthetic data.** The imagery and labels of this release are generated, not "
            "observed: use it to test pipelines and models, not to draw conclusions about the "
            "Earth's surface.",
            "",
        ]
    total = sum(splits.values())
    lines += [
        "## Licence and attribution",
        "",
        f"- Licence: {cfg.licence}",
        f"- Attribution: {cfg.attribution}",
        "",
        "## Contents",
        "",
        f"- Samples: {total} in {len(shards)} shard(s) under `{SHARDS_DIR}/`",
        f"- Imagery: `{cfg.imagery.collection}`, bands {', '.join(cfg.imagery.bands)}",
        f"- Labels: {cfg.labels.kind}"
        + (f" (`{cfg.labels.collection}`)" if cfg.labels.collection else ""),
        f"- Quarantined: {sum(funnel.values())}",
        *_llm_lines(metas.values()),
        "",
        "| split | samples | shards |",
        "|---|---:|---:|",
    ]
    shard_count = Counter(s.split for s in shards)
    for split in sorted(splits):
        lines.append(f"| {split} | {splits[split]} | {shard_count[split]} |")
    lines += [
        "",
        "## Sample members",
        "",
        "Key: `{cell_id}_{t0:%Y%m%d}_{t1:%Y%m%d}`. Each sample carries:",
        "",
        "| member | content |",
        "|---|---|",
    ]
    lines += [f"| `{m}` | {MEMBER_DOCS.get(m, '')} |" for m in SAMPLE_MEMBERS]
    lines += [
        "",
        "GeoTIFF values: reflectance = DN * 0.0001 - 0.1 (scale/offset also in the files); "
        "DN 0 = no data.",
        "",
        "## Change mask codes",
        "",
        "| code | from | to |",
        "|---:|---|---|",
    ]
    for code in _present_codes(metas.values()):
        decoded = decode_transition(code)
        frm, to = decoded if decoded is not None else ("", "")
        note = " (binary change, classes unknown)" if code == BINARY_CHANGE else ""
        lines.append(f"| {code} | {frm} | {to}{note} |")
    lines += ["", "0 = no change.", "", "## Quarantine funnel", ""]
    if funnel:
        lines += ["| stage:reason | records |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(funnel.items())]
        lines += ["", f"Details per record in `{QUARANTINE_TABLE}`."]
    else:
        lines.append("Nothing was quarantined.")
    lines += [
        "",
        "## Reading the data",
        "",
        "```python",
        "import glob, json",
        "import webdataset as wds",
        "",
        'urls = sorted(glob.glob("shards/train-*.tar"))',
        "for sample in wds.WebDataset(urls, shardshuffle=False):",
        '    meta = json.loads(sample["json"])',
        '    captions = json.loads(sample["captions.json"])',
        '    before_tif = sample["before.tif"]  # bytes: open with rasterio.io.MemoryFile',
        "```",
        "",
        f"`{SAMPLES_TABLE}` has one row per sample (split, shard, bbox, times, fractions, "
        f"co-registration, facts summary, annotator); `{MANIFEST}` the sha256 of every file.",
        "",
        "## Provenance",
        "",
        f"- Config hash: `{cfg.config_hash()}`",
        f"- Code version: `{code_version}`",
        "",
    ]
    return "\n".join(lines).encode()


def _collection(
    cfg: BuildConfig,
    metas: dict[str, SampleMeta],
    splits: dict[str, int],
    shards: Sequence[ShardInfo],
) -> bytes:
    if metas:
        boxes = [m.bbox_lonlat for m in metas.values()]
        bbox = [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
        start: datetime = min(m.t0 for m in metas.values())
        end: datetime = max(m.t1 for m in metas.values())
    else:  # an empty release still describes what was asked for
        bbox = list(cfg.aoi.bbox) if cfg.aoi.bbox is not None else [-180.0, -90.0, 180.0, 90.0]
        start, end = cfg.time.t0[0], cfg.time.t1[1]
    collection = pystac.Collection(
        id=f"{cfg.name}-{cfg.version}",
        title=f"{cfg.name} {cfg.version}",
        description=cfg.description.strip() or f"geodelta release {cfg.name} {cfg.version}",
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[start, end]])),
        license=cfg.licence,
        stac_extensions=[FILE_EXTENSION],
        extra_fields={"geodelta:attribution": cfg.attribution},
        summaries=pystac.Summaries(
            {
                "geodelta:splits": sorted(splits),
                "geodelta:bands": list(cfg.imagery.bands),
                "geodelta:imagery_collection": [cfg.imagery.collection],
            }
        ),
    )
    for shard in shards:
        name = Path(shard.path).name.removesuffix(".tar")
        collection.add_asset(
            name,
            pystac.Asset(
                href=shard.path,
                title=f"{shard.split} shard ({shard.samples} samples)",
                media_type="application/x-tar",
                roles=["data"],
                extra_fields={
                    "file:size": shard.bytes,
                    "file:checksum": "1220" + shard.sha256,
                    "geodelta:split": shard.split,
                    "geodelta:samples": shard.samples,
                },
            ),
        )
    data = collection.to_dict(include_self_link=False, transform_hrefs=False)
    data["links"] = []
    return _json_text(data)


def _clean(release_dir: Path) -> None:
    """Remove what a previous run left that this run rewrites (manifest first)."""
    (release_dir / MANIFEST).unlink(missing_ok=True)
    shards_dir = release_dir / SHARDS_DIR
    shards_dir.mkdir(parents=True, exist_ok=True)
    for path in shards_dir.iterdir():
        if path.is_file() and (path.suffix == ".tar" or path.name.endswith(".tmp")):
            path.unlink()
    for path in release_dir.glob(".*.tmp"):
        path.unlink()


def _check_contract(
    root: Path, cfg: BuildConfig, staging: Staging, metas: dict[str, SampleMeta]
) -> list[QuarantineRecord]:
    """Run the Great Expectations checkpoint (``validation/``); failing samples leave ``metas``."""
    from geodelta.pipelines.release.gx import validate_release

    rejected = validate_release(root, cfg, metas, staging.read_member)
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
) -> ReleaseManifest:
    """Write a release from the marked cells of a staging area.

    Samples are grouped by split (their ``json`` member's ``split``), sorted by key and written
    to ``shards/{split}-{i:06d}.tar``: a shard takes samples until it holds
    ``shards.max_samples`` or the next sample would push it past ``shards.max_bytes`` (a
    single larger sample still gets a shard of its own). Stale shards of an earlier run are
    removed first. Staged samples that cannot be sharded (missing members, bad metadata) are
    quarantined at stage ``shard``. Before any shard is written, the Great Expectations
    checkpoint (:mod:`geodelta.pipelines.release.gx`) runs over the sample table; samples it
    rejects are quarantined at stage ``validate`` (reason ``gx:<expectation>:<column>``) and
    its results and Data Docs land in ``validation/`` (not in the manifest).

    Args:
        release_dir: output folder (created when missing).
        cfg: the build config.
        staging: the staging area the workers filled.
        code_version: geodelta version building the release.
        extra_quarantine: records dropped outside the staged cells (e.g. plan or validate).

    Returns:
        The manifest that was written to ``manifest.json``.
    """
    root = Path(release_dir)
    root.mkdir(parents=True, exist_ok=True)
    _clean(root)

    keys, staged_quarantine = staging.outcomes()
    metas, dropped = _load_metas(staging, keys)
    dropped += _check_contract(root, cfg, staging, metas)
    quarantine = sorted([*staged_quarantine, *extra_quarantine, *dropped], key=_quarantine_sort_key)
    shards, rows = _write_shards(root, cfg, staging, metas)

    splits = dict(sorted(Counter(m.split for m in metas.values()).items()))
    funnel = dict(sorted(Counter(f"{q.stage}:{q.reason}" for q in quarantine).items()))

    files: list[FileInfo] = []

    def put(name: str, data: bytes) -> None:
        write_atomic(root / name, data)
        files.append(FileInfo(path=name, bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))

    put(SAMPLES_TABLE, _parquet_bytes(rows, SAMPLES_SCHEMA))
    put(
        QUARANTINE_TABLE,
        _parquet_bytes([q.model_dump(mode="json") for q in quarantine], QUARANTINE_SCHEMA),
    )
    put(
        CARD,
        _card(
            cfg,
            code_version=code_version,
            metas=metas,
            splits=splits,
            shards=shards,
            funnel=funnel,
        ),
    )
    put(COLLECTION, _collection(cfg, metas, splits, shards))

    manifest = ReleaseManifest(
        name=cfg.name,
        version=cfg.version,
        code_version=code_version,
        config_hash=cfg.config_hash(),
        config=_scrub_urls(cfg.normalised()),
        members=SAMPLE_MEMBERS,
        splits=splits,
        quarantined=funnel,
        shards=tuple(shards),
        files=tuple(files),
    )
    write_atomic(root / MANIFEST, _json_text(manifest.model_dump(mode="json")))
    return manifest
