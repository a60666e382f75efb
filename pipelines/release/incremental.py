"""Incremental versions: ``geodelta build CONFIG --from PREVIOUS_RELEASE``.

A sample's bytes are decided by its **inputs** (:func:`sample_inputs`):

* the cell: its id, AOI region, split, CRS, transform, shape and lon/lat box (the plan);
* the items it used: the before and after scenes (id, collection, datetime, cloud cover, the
  clear fraction the pair stage measured) and the label items, as the pair stage picks them;
  a sequence (``time.series``) adds every date: its item id, datetime, clear fraction, series
  window and land-cover item (:func:`series_picks`, recorded in its ``dates.json`` member);
* the config sections that shape a sample (:data:`RELEASE_SECTIONS` are the others): every
  section of the normalised config (:meth:`~geodelta.schemas.BuildConfig.normalised`) except
  the dataset's name, version and description, the AOI (which cells are planned: a cell's own
  part of it, its region, is compared per cell), ``shards``, ``reference`` and ``gate`` (how the
  release is cut, checked and modelled, after the samples exist). ``splits`` counts (its seed
  seeds the template captions), and so does any section not named here;
* the geodelta version (:data:`geodelta.__version__`): other code may write other bytes.

Each sample's ``json`` member records all of these but a sequence's middle dates (the shaping
sections by their hash, ``shaping_hash``). So, before the engines run, each planned cell
that had a sample in the previous release gets the pair stage again (search and pick: no
imagery read beyond the classification band the clear fraction needs, as in any build; a
sequence's pair stage, :meth:`~geodelta.pipelines.stages.worker.Worker.series_pair`, for a
sequence release); when it picks the items the previous sample recorded (a sequence: in its
``json`` and its ``dates.json`` members), and the shaping sections and the code version are
the same, the sample is **reused**: its members are taken byte for byte from the previous
release's shard, ``json`` included (it records no release-wide value): **linked**, not staged
(:mod:`.linked`: read from the previous shard when the release is written; a shard holding
exactly the samples a previous shard held is that file, copied whole).
Its bytes are then exactly what processing the cell would write; the cell is
marked done and the engines skip it. Every other cell is processed: **new** (not in the
previous release), **changed** (its items differ, or it was quarantined there and is
**retried**), while **removed** counts the previous samples whose cell is no longer planned.

Before that, the catalog drift since the previous release is measured (:mod:`.drift`: the
previous release's snapshot against this build's searches, over its cells this build plans)
and written to ``drift.json``; a sample that used an item which changed since (same id, other
fields: a new processing baseline, other asset hrefs or checksums; for a sequence, the item
of any of its dates) is processed again, not reused. A cell whose searches return the very
items they returned then, none changed (**steady**, :attr:`~.drift.Drift.steady`), picks what
it picked then: its pair stage is not run again.

A quarantined cell that is steady gets the same verdict again when the verdict is a function
of its items and the config alone (:data:`DATA_VERDICTS`: no clear scene, too few dates, a
valid fraction, a co-registration that cannot be trusted, a failed rule...; the ``validate``
rules only with the template annotator): its quarantine records are **carried** over from the
previous release's quarantine table (same code version and record layout required), the cell
is marked done with them and not processed. Any other reason (a read or fetch error, an
exception, the annotator, the LLM, the Great Expectations checkpoint, sharding) is retried.

The previous release may be a local folder or any fsspec URL (its manifest and tables are
fetched first, the shards of the reused samples when they are read).

The previous release's ``report/verified.json`` (the decode digest of each sample its report's
verify passed, :func:`~.verify.decode_digest`) is read too, when its manifest lists it with the
same sha256: this build's report does not decode again the PNG and GeoTIFF members of a sample
with one of those digests (the same checks passed on the same bytes; :attr:`Incremental.trusted`).
Every other check of verify (checksums, members, metadata, counts) still runs on every sample.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from geodelta._io import HashAhead, compact_json_bytes
from geodelta.pipelines.release.previous import (
    RELEASE_SECTIONS,
    Previous,
    differing_sections,
    open_previous,
    read_shard,
    section_hashes,
    verified_record,
)
from geodelta.schemas import (
    SCHEMA_VERSION,
    BuildConfig,
    QuarantineRecord,
    SampleMeta,
    ScenePair,
)

if TYPE_CHECKING:
    from geodelta.pipelines.release.verify import CarriedShard

__all__ = [
    "DATA_VERDICTS",
    "RELEASE_SECTIONS",
    "REUSED_FILE",
    "TEMPLATE_VERDICTS",
    "Incremental",
    "Previous",
    "differing_sections",
    "is_data_verdict",
    "open_previous",
    "reuse_previous",
    "sample_inputs",
    "section_hashes",
    "series_picks",
]

log = logging.getLogger(__name__)

#: In the staging area's root: the cells reused from the previous release, and those whose
#: quarantine records were carried over (a resumed build keeps its counts).
REUSED_FILE = "reused.json"
#: ``(stage, reason)`` of the quarantine records that are verdicts on the data: with the same
#: items (a steady cell), the same sample-shaping config and the same code version, processing
#: the cell again writes the same record, so ``--from`` carries it over instead. Each is decided
#: by the items' metadata (``pair``: what the searches return, which assets the items have) or
#: by pixels read from those items through deterministic code (clear fractions, valid
#: fractions, co-registration estimates, land-cover maps); a read that fails raises
#: (``read_error``, ``error:*``: retried) rather than producing one of these. Left out on
#: purpose: ``read_error`` and ``error:*`` (reads, fetches, signing, HTTP, timeouts: transient),
#: every ``annotate`` reason (annotator and LLM errors), ``validate:incomplete_sample`` (a stage
#: that did not run), ``validate:undecodable_member`` (an encoder's fault, not the data's),
#: ``validate:gx:*`` (the Great Expectations checkpoint judges the sample table, not one cell),
#: every ``shard`` reason (a staging area's problem) and any reason not named here.
DATA_VERDICTS: frozenset[tuple[str, str]] = frozenset(
    {
        # the pair stage (stages/pair.py, labels/*.pick): the items the searches return, their
        # assets and dates, the clear fraction of their classification band over the cell
        ("pair", "no_scene_t0"),
        ("pair", "no_scene_t1"),
        ("pair", "unknown_clear_fraction"),
        ("pair", "no_clear_scene_t0"),
        ("pair", "no_clear_scene_t1"),
        ("pair", "no_pair_in_gap"),
        ("pair", "no_landcover"),
        ("pair", "same_landcover_item"),
        ("pair", "no_change_mask"),
        # a sequence's pair stage (stages/sequence.py, series.py, labels/series.py): the same
        ("pair", "no_scenes"),
        ("pair", "too_few_dates"),
        ("label", "missing_label_year"),
        # the label items' assets (labels/landcover.py, labels/series.py)
        ("label", "no_landcover_asset"),
        # the pixels of the items (stages/load.py, coregister.py)
        ("load", "low_valid_fraction"),
        ("coregister", "coreg_failed"),
        ("coregister", "coreg_unreliable"),
        ("coregister", "shift_too_large"),
        ("coregister", "inconsistent"),
        ("coregister", "residual_too_large"),
    }
)
#: ``validate`` reasons (:data:`~geodelta.pipelines.stages.validate.PIXEL_RULES`,
#: :data:`~geodelta.pipelines.stages.validate.RULES`, the temporal claim check) carried over
#: only when the annotator is the template one: the record's detail lists every failed rule,
#: the caption and QA rules among them, which an LLM's reply decides.
TEMPLATE_VERDICTS: frozenset[tuple[str, str]] = frozenset(
    ("validate", name)
    for name in (
        "constant_band",
        "reflectance_range",
        "key_format",
        "time_order",
        "bbox_lonlat",
        "crs",
        "valid_fraction",
        "coreg_applied",
        "caption_count",
        "caption_length",
        "qa_types",
        "qa_answers",
        "caption_claims",
        "mask_codes",
        "mask_facts",
        "regions",
        "licence",
        "temporal_claim",
    )
)
#: The ``json`` member's fields that come from the plan and the pair stage (the inputs).
_PAIR_FIELDS = (
    "key",
    "cell_id",
    "region",
    "split",
    "crs",
    "transform",
    "shape",
    "bbox_lonlat",
    "collection",
    "before_item",
    "after_item",
    "t0",
    "t1",
    "gap_days",
    "before_clear",
    "after_clear",
    "before_cloud_cover",
    "after_cloud_cover",
    "label_items",
)


def sample_inputs(pair: ScenePair) -> dict[str, Any]:
    """What the plan and the pair stage put in a sample's ``json`` member: its cell and the
    items it uses (see the module docstring), as that member holds them (JSON values)."""
    job = pair.job
    if pair.series:  # a sequence's label items: the map of every date
        labels = tuple(r.item_id for r in pair.series_labels)
    else:
        labels = tuple(r.item_id for r in (pair.label_before, pair.label_after) if r is not None)
    values = {
        "key": pair.key,
        "cell_id": job.cell_id,
        "region": job.region,
        "split": job.split,
        "crs": job.crs,
        "transform": job.transform,
        "shape": job.shape,
        "bbox_lonlat": job.bbox_lonlat,
        "collection": pair.before.collection,
        "before_item": pair.before.item_id,
        "after_item": pair.after.item_id,
        "t0": pair.before.datetime,
        "t1": pair.after.datetime,
        "gap_days": pair.gap_days,
        "before_clear": pair.before_clear,
        "after_clear": pair.after_clear,
        "before_cloud_cover": pair.before.cloud_cover,
        "after_cloud_cover": pair.after.cloud_cover,
        "label_items": labels,
    }
    return {k: values[k] for k in _PAIR_FIELDS}


#: What :func:`series_picks` compares of each date (the fields of ``dates.json`` the pair
#: stage decides; valid fraction, shift and residual follow from the pixels).
_DATE_FIELDS = ("index", "window", "item_id", "datetime", "clear_fraction", "label_item")


def series_picks(pair: ScenePair) -> list[dict[str, Any]]:
    """What a sequence's pair stage picked for each date, as its ``dates.json`` member records
    it (:data:`_DATE_FIELDS` of each entry, JSON values)."""
    from geodelta.schemas.series import SeriesDateMeta

    labels: list[str | None] = [r.item_id for r in pair.series_labels]
    labels = labels or [None] * len(pair.series)
    out = []
    for i, scene in enumerate(pair.series):
        date = SeriesDateMeta(
            index=i,
            window=pair.series_windows[i],
            item_id=scene.item_id,
            datetime=scene.datetime,
            clear_fraction=pair.series_clear[i],
            valid_fraction=0.0,
            label_item=labels[i],
        ).model_dump(mode="json")
        out.append({k: date[k] for k in _DATE_FIELDS})
    return out


def _same_picks(recorded: list[dict[str, Any]] | None, picks: list[dict[str, Any]]) -> bool:
    """Whether a previous sample's ``dates.json`` entries record exactly these picks."""
    if recorded is None or len(recorded) != len(picks):
        return False
    return all(
        isinstance(r, dict) and {k: r.get(k) for k in _DATE_FIELDS} == p
        for r, p in zip(recorded, picks, strict=True)
    )


def is_data_verdict(record: QuarantineRecord, cfg: BuildConfig) -> bool:
    """Whether a quarantine record is a verdict on the data that processing the cell again
    with the same items, config and code writes again (:data:`DATA_VERDICTS`;
    :data:`TEMPLATE_VERDICTS` with the template annotator)."""
    what = (record.stage, record.reason)
    if what in DATA_VERDICTS:
        return True
    return cfg.annotation.annotator == "template" and what in TEMPLATE_VERDICTS


# -- reuse ------------------------------------------------------------------------------------


@dataclass
class Incremental:
    """What ``--from`` did: the counts the report and the card show.

    Attributes:
        source: ``<name> <version>`` of the previous release.
        source_hash: its config hash.
        reused: cells whose sample was copied from it.
        new: planned cells it did not have.
        changed: planned cells it had, processed again (their items differ, or it quarantined
            them: ``retried`` of those).
        retried: of ``changed``, the cells it had quarantined.
        carried: cells it had quarantined whose quarantine records were carried over (a
            verdict on the same data: :data:`DATA_VERDICTS`), not processed.
        removed: its samples whose cell is not planned any more.
        reused_cells: the ids of the cells done by ``--from``: reused, and carried.
        drift: the catalog drift since the previous release (:class:`~.drift.Drift`, written
            to ``drift.json``); None when the previous release has no snapshot.
        trusted: the decode digests the previous release's report recorded in
            ``report/verified.json`` (empty when it has none, or not as its manifest lists it).
        carried_shards: the shards that report's verify found without a problem, by sha256
            (:class:`~.verify.CarriedShard`; the report does not read those this build copies
            whole again).
        linked: the keys of the samples reused now, left in the previous release's shards
            (:class:`~.linked.LinkedSamples` reads them for the release).
        metas: their metadata as the reuse stage read it (sample key -> :class:`SampleMeta`):
            the release does not parse their ``json`` again.
    """

    source: str
    source_hash: str
    reused: int = 0
    new: int = 0
    changed: int = 0
    retried: int = 0
    carried: int = 0
    removed: int = 0
    reused_cells: set[str] = field(default_factory=set)
    drift: Any = None
    trusted: frozenset[str] = frozenset()
    carried_shards: Mapping[str, CarriedShard] = field(default_factory=dict)
    linked: frozenset[str] = frozenset()
    metas: dict[str, SampleMeta] = field(default_factory=dict)

    def drift_dict(self) -> dict[str, Any] | None:
        """The drift as written to ``drift.json`` of the release (None: no drift check)."""
        return None if self.drift is None else dict(self.drift.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """The counts as written to ``incremental.json`` of the release."""
        return {
            "from": self.source,
            "from_config_hash": self.source_hash,
            "reused": self.reused,
            "new": self.new,
            "changed": self.changed,
            "retried": self.retried,
            "carried": self.carried,
            "removed": self.removed,
        }


def _reused_before(staging: Any) -> set[str]:
    raw = staging.get_file(REUSED_FILE)
    return set() if raw is None else {str(c) for c in json.loads(raw)}


#: The ``json`` member's fields that come from the plan alone (no search, no pixel).
_PLAN_FIELDS = ("cell_id", "region", "split", "crs", "transform", "shape", "bbox_lonlat")


def _candidates(
    cfg: BuildConfig,
    prev: Previous,
    done: Collection[str],
    code_version: str,
    steady: Collection[str] = (),
    stale: Collection[str] = (),
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Planned cells (not ``done``) whose pair stage, run now, picks the items of the previous
    sample's key: cell id -> :func:`sample_inputs`, and for a sequence, cell id ->
    :func:`series_picks` (compared with its ``dates.json`` member next). The full comparison
    of the inputs follows on the ``json`` member (:func:`_unchanged`).

    A ``steady`` cell (its searches return the very items they returned for the previous
    release, none changed: :attr:`~.drift.Drift.steady`) does not run the pair stage again
    (no classification band read): with the same items, the same sample-shaping config and the
    same code version it picks what it picked then, so only its plan fields are compared. A
    ``stale`` cell (its sample used an item that changed) is processed whatever it picks: its
    pair stage is not run here either."""
    from geodelta.pipelines.stages.blocks import expand_block, iter_blocks, restrict
    from geodelta.pipelines.stages.worker import Worker

    worker = Worker(cfg, code_version=code_version)
    series = cfg.time.series is not None
    pair_stage = worker.series_pair if series else worker.pair
    out: dict[str, dict[str, Any]] = {}
    picks: dict[str, list[dict[str, Any]]] = {}
    for whole in iter_blocks(cfg):
        block = restrict(whole, lambda c: c in prev.samples and c not in done and c not in stale)
        if block is None:
            continue
        for job in expand_block(cfg, block):
            if job.cell_id in steady:
                plan = job.model_dump(mode="json")
                out[job.cell_id] = {k: plan[k] for k in _PLAN_FIELDS}
                continue
            try:
                pair = pair_stage(job)
            except Exception as exc:  # the engines run it again and quarantine it if need be
                log.info("--from: cell %s is processed (pair stage: %s)", job.cell_id, exc)
                continue
            if isinstance(pair, ScenePair) and pair.key == prev.samples[job.cell_id][0]:
                out[job.cell_id] = sample_inputs(pair)
                if series:
                    picks[job.cell_id] = series_picks(pair)
    return out, picks


def _unchanged(
    raw: bytes, inputs: dict[str, Any], shaping_hash: str, code_version: str
) -> SampleMeta | None:
    """The metadata when a build of this config writes ``raw`` as the ``json`` member of the
    sample whose previous ``json`` it is (its inputs (items, cell), shaping hash, code version
    and record layout are this build's), else None. The metadata with this build's inputs put
    in must write back to ``raw`` byte for byte: so ``raw`` held those inputs already, and is
    what this code writes (and the metadata returned is what ``raw`` reads as)."""
    from geodelta.pipelines.stages.encode import meta_json

    try:
        recorded = json.loads(raw)
        expected = SampleMeta.model_validate({**recorded, **inputs})
    except (ValueError, TypeError):  # no JSON object, or no valid SampleMeta
        return None
    same = (
        expected.shaping_hash == shaping_hash
        and expected.code_version == code_version
        and expected.schema_version == SampleMeta.model_fields["schema_version"].default
        and compact_json_bytes(meta_json(expected)) == raw
    )
    return expected if same else None


def _copy(
    prev: Previous,
    candidates: dict[str, dict[str, Any]],
    staging: Any,
    cfg: BuildConfig,
    code_version: str,
    ahead: HashAhead | None = None,
    metas: dict[str, SampleMeta] | None = None,
) -> dict[str, str]:
    """Link the candidates' samples whose inputs are unchanged (their cells marked done, their
    members left in the previous release: :mod:`.linked`); returns ``{cell id: sample key}`` of
    the cells reused. ``ahead``: the previous shards' sha256, hashed ahead; ``metas``: filled
    with the metadata of the samples linked (sample key -> its ``json`` as read)."""
    shaping_hash = cfg.shaping_hash()
    by_shard: dict[str, dict[str, str]] = {}
    for cell_id in candidates:
        key, shard = prev.samples[cell_id]
        by_shard.setdefault(shard, {})[key] = cell_id
    reused: dict[str, str] = {}  # in one marker file, not one per cell
    for rel, wanted in sorted(by_shard.items()):
        samples = read_shard(prev, rel, wanted, ("json",), ahead)  # the rest stays there
        if samples is None:
            log.warning("--from: shard %s does not match its manifest entry; its cells run", rel)
            continue
        for sample_key, members in samples:
            cell = wanted.get(sample_key)
            if cell is None or "json" not in members:
                continue
            meta = _unchanged(members["json"], candidates[cell], shaping_hash, code_version)
            if meta is None:
                continue
            reused[cell] = sample_key
            if metas is not None:
                metas[sample_key] = meta
    staging.mark_cells([(c, [k], []) for c, k in sorted(reused.items())], linked=True)
    return reused


def _previous_dates(prev: Previous, cells: Collection[str]) -> dict[str, list[dict[str, Any]]]:
    """sample key -> the ``dates.json`` entries of the previous release's sequence samples of
    ``cells`` (only that member is read; a shard that cannot be read gives none: its samples
    are not reused, as :func:`_copy` would find)."""
    from geodelta.pipelines.release.drift import series_dates

    by_shard: dict[str, set[str]] = {}
    for cell in cells:
        key, shard = prev.samples[cell]
        by_shard.setdefault(shard, set()).add(key)
    out: dict[str, list[dict[str, Any]]] = {}
    for rel, keys in sorted(by_shard.items()):
        try:
            out.update(series_dates(prev.path(rel), keys))
        except (OSError, ValueError, tarfile.TarError) as exc:
            log.warning(
                "--from: the dates of shard %s cannot be read (%s); its cells run", rel, exc
            )
    return out


def _drift(
    cfg: BuildConfig,
    prev: Previous,
    search: BuildConfig,
    cells: set[str],
    staging: Any,
    dates: dict[str, list[dict[str, Any]]] | None,
) -> Any:
    """The catalog drift between the previous release's snapshot and this build's searches
    over ``cells`` (:func:`~.drift.snapshot_drift`; ``dates``: a sequence release's
    ``dates.json`` entries by sample key); None when it has no snapshot."""
    from geodelta.pipelines.release.layout import SNAPSHOT
    from geodelta.pipelines.release.snapshot import release_snapshot

    if not prev.has(SNAPSHOT):
        log.info("--from: %s has no %s: no drift check", prev.manifest.version, SNAPSHOT)
        return None
    from geodelta.pipelines.release.drift import snapshot_drift
    from geodelta.sources.catalog import open_catalog

    prev.path(SNAPSHOT)  # fetched when the release is at a URL
    current = open_catalog(search.catalog, resolve=search.resolve)
    used = None if dates is None else {k: [str(d["item_id"]) for d in v] for k, v in dates.items()}
    return snapshot_drift(prev.root, cfg, current, cells, release_snapshot(staging), dates=used)


def _carry(
    cfg: BuildConfig, prev: Previous, cells: Collection[str], staging: Any, code_version: str
) -> set[str]:
    """Mark the ``cells`` (steady, quarantined by the previous release) whose every quarantine
    record there is a verdict on the data (:func:`is_data_verdict`) done with those records;
    returns their ids. Nothing is carried from a release of another code version or record
    layout (its verdicts may differ)."""
    m = prev.manifest
    if m.code_version != code_version or m.schema_version != SCHEMA_VERSION:
        return set()
    carried: dict[str, list[QuarantineRecord]] = {}
    for cell in sorted(cells):
        records = prev.quarantine.get(cell, ())
        if records and all(r.cell_id == cell and is_data_verdict(r, cfg) for r in records):
            carried[cell] = list(records)
    staging.mark_cells([(c, [], r) for c, r in carried.items()])  # one marker file
    return set(carried)


def reuse_previous(
    cfg: BuildConfig,
    prev: Previous,
    staging: Any,
    done: Collection[str],
    plan_ids: Iterable[str],
    *,
    code_version: str,
    search: BuildConfig | None = None,
) -> Incremental:
    """Link the previous release's unchanged samples (:mod:`.linked`), carry its
    quarantine verdicts on unchanged data over (see the module docstring) and count reused /
    new / changed / retried / carried / removed cells.

    First the catalog drift since the previous release (:mod:`.drift`: its snapshot against
    the items this build searches, over its cells this build plans): a sample that used an
    item that changed since (a new processing baseline, other asset hrefs or checksums...) or
    went is processed again, not reused, even when the pair stage picks the same item ids.

    Args:
        cfg: this build's config (profiles applied), accepted by :func:`open_previous`.
        prev: the previous release.
        staging: this build's :class:`~geodelta.pipelines.release.staging.Staging`.
        done: cells already done (a resumed build): left as they are.
        plan_ids: the planned cell ids (a stream).
        code_version: this geodelta version.
        search: the config the workers search with (``cfg`` searching the build's snapshot;
            same config hash), default ``cfg``: the pair stage runs on the items they will see.

    Returns:
        The counts; ``reused_cells`` holds the cells reused or carried now or by the run a
        ``--resume`` finishes; ``drift`` the catalog drift (None: the previous release has no
        snapshot).
    """
    search = search or cfg
    planned = 0
    still: set[str] = set()  # the previous release's sample cells still planned
    quarantined: set[str] = set()  # its quarantined cells still planned
    for cell_id in plan_ids:
        planned += 1
        if cell_id in prev.samples:
            still.add(cell_id)
        elif cell_id in prev.quarantined:
            quarantined.add(cell_id)
    series = cfg.time.series is not None
    # the shards of its samples still planned, hashed by a child process while the drift check
    # and the pair stage run here (a release at a URL: each hashed in _copy, once fetched)
    shards = sorted({prev.samples[c][1] for c in still}) if prev.remote is None else []
    with HashAhead(prev.root / rel for rel in shards) as ahead:
        dates = _previous_dates(prev, still) if series else None
        drift = _drift(cfg, prev, search, still | quarantined, staging, dates)
        stale: set[str] = set()  # cells whose sample used an item that changed or went
        if drift is not None:
            keys = {k for i in drift.items if i.change != "added" for k in i.samples}
            stale = {c for c, (key, _) in prev.samples.items() if key in keys}
        steady = set() if drift is None else drift.steady
        candidates, picks = _candidates(search, prev, done, code_version, steady, stale)
        candidates = {
            c: v
            for c, v in candidates.items()
            if c not in picks or _same_picks((dates or {}).get(prev.samples[c][0]), picks[c])
        }
        reused = _reused_before(staging) & set(done)
        metas: dict[str, SampleMeta] = {}
        linked = _copy(prev, candidates, staging, cfg, code_version, ahead, metas)
    reused |= set(linked)
    reused |= _carry(cfg, prev, (quarantined & steady) - set(done), staging, code_version)
    staging.put_file(REUSED_FILE, json.dumps(sorted(reused)))
    m = prev.manifest
    verified = verified_record(prev) if reused else None
    out = Incremental(
        source=f"{m.name} {m.version}",
        source_hash=m.config_hash,
        drift=drift,
        trusted=frozenset() if verified is None else verified.digests,
        carried_shards={} if verified is None else verified.shards,
    )
    out.reused_cells = reused
    out.linked = frozenset(linked.values())
    out.metas = metas
    out.reused = len(reused & still)
    out.carried = len(reused & quarantined)
    out.retried = len(quarantined) - out.carried
    out.changed = len(still) - out.reused + out.retried
    out.new = planned - len(still) - len(quarantined)
    out.removed = len(prev.samples) - len(still)
    return out
