"""Catalog drift: what changed in the catalog since a release searched it.

A release freezes the items its build searched in ``snapshot/items.parquet``
(:mod:`.snapshot`). :func:`release_drift` (``geodelta drift RELEASE``) runs the release's
searches again, with its own config (``manifest.json``), against the catalog it records or
another one (``--catalog``), and compares what they return with that snapshot:

* the searches are the build's (:func:`~geodelta.pipelines.stages.block_search.snapshot_items`:
  one search per plan block, collection and window, through the same
  :class:`~geodelta.pipelines.stages.block_search.BlockSearch`), over the cells the release
  planned (its samples and its quarantined cells: every planned cell is one or the other), so
  no AOI file is needed; no pixel is read;
* the items found are written as the release's snapshot is written (hrefs without any signing
  query string, local hrefs relative to the catalog's folder) and read back, so an unchanged
  catalog gives the very same items, and a SAS token that changed is no change;
* an item is **added** (found now, not in the snapshot), **removed** (in the snapshot, not found
  now: withdrawn, or moved out of the searched boxes or windows) or **changed**: its fields are
  compared one by one and named: a property by its key (``s2:processing_baseline``,
  ``datetime``, ``eo:cloud_cover``), ``geometry``, ``bbox``, an asset field as
  ``assets.<key>.<field>`` (``assets.B04.href``, ``assets.B04.file:checksum``), an asset that
  appeared or went as ``assets.<key>``;
* the **affected samples**: those whose pair used a removed or changed item (its before or after
  item; a sequence: the item of any of its dates, as its ``dates.json`` member records them),
  and those of the cells whose searches return an added item, or a removed or changed
  item of the label collection (label items are not in ``samples.parquet``: a label item
  counts for every cell whose label search returns it); cells without a sample (quarantined)
  where an item was added, removed or changed are listed too: a new build may now make one.

:func:`snapshot_drift` compares two snapshots the same way: ``build --from PREVIOUS`` writes
the drift between the previous release's snapshot and its own searches (over the previous
release's cells it still plans) to ``drift.json`` (:data:`~.layout.DRIFT`), and its samples
that use a changed item are processed again, not reused (:mod:`.incremental`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geodelta.errors import GeodeltaError, ReleaseError
from geodelta.schemas import BuildConfig, parse_config

__all__ = [
    "Drift",
    "FieldChange",
    "ItemDrift",
    "changed_fields",
    "compare_items",
    "drift_lines",
    "release_cells",
    "release_drift",
    "series_dates",
    "snapshot_drift",
]

#: (collection, item id)
Key = tuple[str, str]
#: Changes the short (human) output lists; ``--json`` lists them all.
SHOWN = 10
#: Fields whose values are not repeated in a change (long; the snapshots hold them).
_NO_VALUES = frozenset({"geometry"})


@dataclass(frozen=True)
class FieldChange:
    """One field of an item that differs: its name (see the module docstring) and the two
    values (None for ``geometry``, and for a field present on one side only)."""

    name: str
    before: Any = None
    after: Any = None


@dataclass(frozen=True)
class ItemDrift:
    """One item that was added, removed or changed.

    Attributes:
        collection: its collection.
        item_id: its id.
        change: ``added``, ``removed`` or ``changed``.
        fields: what changed (``changed`` only).
        samples: keys of the release's samples it affects (see the module docstring).
        cells: ids of the cells whose searches return it (now, or in the snapshot).
    """

    collection: str
    item_id: str
    change: Literal["added", "removed", "changed"]
    fields: tuple[FieldChange, ...] = ()
    samples: tuple[str, ...] = ()
    cells: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``drift.json``, ``geodelta drift --json``)."""
        return {
            "collection": self.collection,
            "id": self.item_id,
            "change": self.change,
            "fields": [{"name": f.name, "before": f.before, "after": f.after} for f in self.fields],
            "samples": list(self.samples),
            "cells": list(self.cells),
        }


@dataclass
class Drift:
    """The drift of a catalog against a snapshot.

    Attributes:
        release: ``<name> <version>`` of the release whose snapshot is compared.
        version: that release's version.
        catalog: the catalog searched now (a URL without query string, or a file name).
        cells: cells searched.
        before: items of the snapshot (over those cells).
        after: items found now.
        items: the added, removed and changed items, in (collection, id) order.
        samples: keys of the affected samples, sorted.
        cells_without_sample: cells searched that have no sample (quarantined) where an item
            was added, removed or changed.
        steady: (:func:`snapshot_drift` only; not in the JSON form) the cells whose searches
            return exactly the items they returned then, none of them changed: their pair
            stage would pick what it picked then (``build --from`` trusts their samples'
            recorded items instead of running it again).
    """

    release: str
    version: str
    catalog: str
    cells: int
    before: int
    after: int
    items: list[ItemDrift] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    cells_without_sample: list[str] = field(default_factory=list)
    steady: set[str] = field(default_factory=set)

    def count(self, change: str) -> int:
        """Items with this change (``added``, ``removed``, ``changed``)."""
        return sum(1 for i in self.items if i.change == change)

    @property
    def drifted(self) -> bool:
        """Whether any item was added, removed or changed."""
        return bool(self.items)

    def as_dict(self) -> dict[str, Any]:
        """JSON form: ``drift.json`` of a ``build --from`` release, ``geodelta drift --json``."""
        return {
            "previous_version": self.version,
            "release": self.release,
            "catalog": self.catalog,
            "cells_searched": self.cells,
            "items_before": self.before,
            "items_after": self.after,
            "added": self.count("added"),
            "removed": self.count("removed"),
            "changed": self.count("changed"),
            "affected_samples": len(self.samples),
            "affected_sample_keys": list(self.samples),
            "cells_without_sample": list(self.cells_without_sample),
            "items": [i.as_dict() for i in self.items],
        }


# -- comparing items --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON value (stac-geoparquet may hand back numpy scalars, datetimes...)."""
    return json.loads(json.dumps(value, default=str))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(_plain(a) == _plain(b))


def _values(name: str, a: Any, b: Any) -> FieldChange:
    if name in _NO_VALUES:
        return FieldChange(name)
    return FieldChange(name, _plain(a), _plain(b))


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldChange]:
    """The fields two versions of one item differ in (see the module docstring for names)."""
    out: list[FieldChange] = []
    skip = {"id", "collection", "links", "type", "properties", "assets"}
    for key in sorted((set(old) | set(new)) - skip):
        if not _same(old.get(key), new.get(key)):
            out.append(_values(key, old.get(key), new.get(key)))
    a, b = old.get("properties") or {}, new.get("properties") or {}
    for key in sorted(set(a) | set(b)):
        if not _same(a.get(key), b.get(key)):
            out.append(_values(key, a.get(key), b.get(key)))
    a, b = old.get("assets") or {}, new.get("assets") or {}
    for asset in sorted(set(a) | set(b)):
        if asset not in a or asset not in b:
            out.append(FieldChange(f"assets.{asset}", asset in a, asset in b))
            continue
        x, y = a[asset] or {}, b[asset] or {}
        for key in sorted(set(x) | set(y)):
            if not _same(x.get(key), y.get(key)):
                out.append(_values(f"assets.{asset}.{key}", x.get(key), y.get(key)))
    out.sort(key=lambda f: f.name)
    return out


# -- searching ---------------------------------------------------------------------------------


def _blocks(cfg: BuildConfig, cells: Iterable[str]) -> list[Any]:
    """The plan blocks (``runner.block_cells``) holding ``cells``, in block order."""
    import numpy as np

    from geodelta.pipelines.stages.blocks import CellBlock
    from geodelta.pipelines.stages.plan import parse_cell_id

    bc = cfg.runner.block_cells
    groups: dict[tuple[int, bool, int, int, int], np.ndarray] = {}
    for cell_id in cells:
        try:
            c = parse_cell_id(cell_id)
        except ValueError:
            continue  # a quarantine record of no cell
        place = (c.zone, c.north, c.size_m, c.col // bc, c.row // bc)
        flags = groups.setdefault(place, np.zeros(bc * bc, bool))
        flags[(c.col - place[3] * bc) * bc + (c.row - place[4] * bc)] = True
    return [
        CellBlock(z, n, s, bc, bcol, brow, np.packbits(flags).tobytes(), ("",))
        for (z, n, s, bcol, brow), flags in sorted(groups.items())
    ]


def search_cells(
    cfg: BuildConfig, inner: Any, cells: Iterable[str]
) -> tuple[Any, dict[str, set[Key]]]:
    """Run the build's searches (as
    :func:`~geodelta.pipelines.stages.block_search.snapshot_items` runs them, one search per
    block, collection and window) for ``cells`` against ``inner``.

    Returns:
        The :class:`~geodelta.pipelines.stages.block_search.ItemRecorder` (its ``items``: the
        item dicts found) and, per cell, the (collection, id) of the items its searches return.
    """
    from geodelta.pipelines.stages.block_search import BlockSearch, ItemRecorder, cell_searches
    from geodelta.pipelines.stages.blocks import expand_block

    recorder = ItemRecorder(inner)
    blocks = BlockSearch(recorder, cfg.runner.block_cells)
    found: dict[str, set[Key]] = {}
    for block in _blocks(cfg, cells):
        for job in expand_block(cfg, block):
            found[job.cell_id] = {
                (s.collection, s.item_id) for s in cell_searches(cfg, blocks, job)
            }
    return recorder, found


# -- the release -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Release:
    root: Path
    name: str
    version: str
    config: dict[str, Any]
    samples: list[dict[str, Any]]  # cell_id, key, before_item, after_item
    cells: list[str]  # samples' and quarantined cells, sorted
    dates: dict[str, list[str]] = field(default_factory=dict)  # sequence key -> item per date


def series_dates(
    shard: str | Path, keys: Collection[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """sample key -> the entries of its ``dates.json`` member, for the sequence samples of one
    shard (those of ``keys`` only, when given). Only that member is read
    (:func:`~geodelta.pipelines.release.layout.read_tar_member`).

    Raises:
        OSError, tarfile.TarError: the shard cannot be read; ValueError: a ``dates.json``
            member is not JSON.
    """
    from geodelta.pipelines.release.layout import read_tar_member

    return {k: json.loads(raw) for k, raw in read_tar_member(shard, "dates.json", keys).items()}


def _open_release(path: str | Path, *, read_dates: bool = True) -> _Release:
    from geodelta.pipelines.release.layout import (
        QUARANTINE_TABLE,
        SAMPLES_TABLE,
        read_manifest,
        read_table,
    )

    root = Path(path)
    if not root.is_dir():
        raise ReleaseError(f"{path} is not a release folder (no such folder)", path=str(path))
    manifest = read_manifest(root)
    cols = ["cell_id", "key", "before_item", "after_item"]
    samples = read_table(root, SAMPLES_TABLE, columns=cols).to_pylist()
    quarantine = read_table(root, QUARANTINE_TABLE, columns=["cell_id"]).to_pylist()
    cells = sorted({str(r["cell_id"]) for r in (*samples, *quarantine) if r["cell_id"]})
    dates: dict[str, list[str]] = {}
    if manifest.mode == "series" and read_dates:  # every date's item: dates.json says which
        from geodelta.pipelines.release.layout import shard_files

        for shard in shard_files(root):
            for key, entries in series_dates(shard).items():
                dates[key] = [str(d["item_id"]) for d in entries]
    return _Release(
        root, manifest.name, manifest.version, dict(manifest.config), samples, cells, dates
    )


def release_cells(path: str | Path) -> list[str]:
    """The cells a release planned: its samples' and its quarantined cells."""
    return _open_release(path).cells


def _affected(
    rel: _Release,
    items: list[ItemDrift],
    found: Mapping[str, set[Key]],
    label_collection: str | None,
) -> tuple[list[ItemDrift], list[str], list[str]]:
    """The items with their samples and cells; all affected sample keys; cells without a
    sample that are affected."""
    by_item: dict[Key, set[str]] = {}
    for cell, found_keys in found.items():
        for k in found_keys:
            by_item.setdefault(k, set()).add(cell)
    used: dict[str, set[str]] = {}  # imagery item id -> sample keys using it
    at_cell: dict[str, list[str]] = {}
    for r in rel.samples:
        at_cell.setdefault(str(r["cell_id"]), []).append(str(r["key"]))
        for item_id in rel.dates.get(str(r["key"]), [r["before_item"], r["after_item"]]):
            used.setdefault(str(item_id), set()).add(str(r["key"]))
    out: list[ItemDrift] = []
    samples: set[str] = set()
    bare: set[str] = set()
    for item in items:
        cells = by_item.get((item.collection, item.item_id), set())
        keys: set[str] = set()
        if item.change != "added" and item.collection != label_collection:
            keys |= used.get(item.item_id, set())
        if item.change == "added" or item.collection == label_collection:
            keys |= {k for c in cells for k in at_cell.get(c, ())}
        bare |= {c for c in cells if c not in at_cell}
        samples |= keys
        out.append(
            ItemDrift(
                item.collection,
                item.item_id,
                item.change,
                item.fields,
                tuple(sorted(keys)),
                tuple(sorted(cells)),
            )
        )
    return out, sorted(samples), sorted(bare)


def compare_items(old: Iterable[dict[str, Any]], new: Iterable[dict[str, Any]]) -> list[ItemDrift]:
    """The items added, removed and changed (with their fields) between two lists of item
    dicts as snapshots store them (:func:`~geodelta.sources.snapshot.clean_item`: hrefs
    without signing), in (collection, id) order; samples and cells not filled in."""
    a, b = _by_key(old), _by_key(new)
    out: list[ItemDrift] = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            out.append(ItemDrift(key[0], key[1], "added"))
        elif key not in b:
            out.append(ItemDrift(key[0], key[1], "removed"))
        else:
            fields = changed_fields(a[key], b[key])
            if fields:
                out.append(ItemDrift(key[0], key[1], "changed", tuple(fields)))
    return out


def _by_key(items: Iterable[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    return {(str(d.get("collection") or ""), str(d["id"])): d for d in items}


def _as_stored(
    cfg: BuildConfig, items: Iterable[dict[str, Any]], url: str
) -> dict[Key, dict[str, Any]]:
    """``items`` as a release's snapshot stores them (written and read back)."""
    from geodelta.pipelines.release.snapshot import catalog_folder
    from geodelta.sources.snapshot import snapshot_bytes, snapshot_items_of

    data = snapshot_bytes(items, relative_to=catalog_folder(cfg))
    return _by_key(snapshot_items_of(data, url, resolve=False).items)


def _fresh_catalog(cfg: BuildConfig) -> Any:
    """The catalog, opened anew (not the process's cached one: a local catalog may have
    changed since it was opened)."""
    from geodelta.sources.catalog import open_catalog
    from geodelta.sources.snapshot import SnapshotCatalog
    from geodelta.sources.static import StaticCatalog

    if cfg.catalog.kind == "static":
        return StaticCatalog(cfg.resolve(cfg.catalog.url))
    if cfg.catalog.kind == "snapshot":
        return SnapshotCatalog(cfg.resolve(cfg.catalog.url))
    return open_catalog(cfg.catalog, resolve=cfg.resolve)


def _catalog_override(recorded: dict[str, Any], url: str) -> dict[str, Any]:
    """The release's catalog section pointed at ``url`` (``--catalog``): a ``.parquet`` file is
    a snapshot, a local ``.json`` file (or a folder holding ``catalog.json``) a static catalog;
    else the recorded kind."""
    local = "://" not in url or url.startswith("file://")
    if url.endswith(".parquet"):
        kind = "snapshot"
    elif local or url.endswith(".json"):
        kind = "static"
    else:
        kind = recorded.get("kind", "stac-api")
        if kind in ("static", "snapshot"):
            kind = "stac-api"
    if local:
        path = Path(url.removeprefix("file://")).resolve()
        url = str(path / "catalog.json" if path.is_dir() else path)
    return {**recorded, "kind": kind, "url": url}


def _release_config(rel: _Release, catalog: str | None) -> BuildConfig:
    from geodelta.sources.profiles import apply_defaults

    data = json.loads(json.dumps(rel.config))
    recorded = dict(data.get("catalog") or {})
    if catalog is not None:
        data["catalog"] = _catalog_override(recorded, catalog)
    else:
        url = str(recorded.get("url", ""))
        if "://" not in url:
            raise ReleaseError(
                f"{rel.root} was built from a local catalog ({url or 'no url recorded'}); "
                "pass --catalog PATH (its catalog.json, or a snapshot .parquet)",
                path=str(rel.root),
            )
    data["output"] = {"dir": "."}
    if isinstance(data.get("aoi"), dict) and data["aoi"].get("geojson"):
        data["aoi"] = {"bbox": [0.0, 0.0, 1.0, 1.0]}  # the cells come from the release
    try:
        cfg = parse_config(data, source=f"{rel.root}/manifest.json")
    except GeodeltaError as exc:
        raise ReleaseError(
            f"{rel.root}: its recorded config cannot be used ({exc})", path=str(rel.root)
        ) from None
    return apply_defaults(cfg)


def release_drift(path: str | Path, *, catalog: str | None = None) -> Drift:
    """Run a release's searches again and compare with its snapshot (``geodelta drift``).

    Args:
        path: the release folder.
        catalog: search this catalog instead of the one the release records (a STAC API URL,
            a local ``catalog.json``, a snapshot ``.parquet``); needed when the release was
            built from a local catalog (it records only the file name).

    Raises:
        ReleaseError: not a release; no snapshot in it; its config cannot be used.
        SnapshotError: its snapshot is not a usable stac-geoparquet file.
        CatalogError: the catalog cannot be opened or searched (unreachable, not found).
    """
    from geodelta.pipelines.release.layout import SNAPSHOT
    from geodelta.pipelines.release.upload import shown
    from geodelta.sources.snapshot import SnapshotCatalog, read_snapshot

    rel = _open_release(path)
    snap_path = rel.root / SNAPSHOT
    if not snap_path.is_file():
        raise ReleaseError(
            f"{rel.root} has no {SNAPSHOT} (built before search snapshots); nothing to compare "
            "with: build it again to get one",
            path=str(rel.root),
        )
    cfg = _release_config(rel, catalog)
    stored = read_snapshot(str(snap_path), resolve=False)
    old = _by_key(stored.items)
    # which cells returned which stored item: the same searches against the snapshot
    _, found_then = search_cells(cfg, SnapshotCatalog(str(snap_path)), rel.cells)
    recorder, found_now = search_cells(cfg, _fresh_catalog(cfg), rel.cells)
    new = _as_stored(cfg, recorder.items.values(), str(snap_path))
    found = {c: found_then.get(c, set()) | found_now.get(c, set()) for c in rel.cells}
    items, samples, bare = _affected(
        rel, compare_items(old.values(), new.values()), found, cfg.labels.searched_collection
    )
    where = cfg.catalog.url if "://" in cfg.catalog.url else Path(cfg.catalog.url).name
    return Drift(
        release=f"{rel.name} {rel.version}",
        version=rel.version,
        catalog=shown(where) if "://" in where else where,
        cells=len(rel.cells),
        before=len(old),
        after=len(new),
        items=items,
        samples=samples,
        cells_without_sample=bare,
    )


def snapshot_drift(
    previous: str | Path,
    cfg: BuildConfig,
    current: Any,
    cells: Iterable[str],
    stored: bytes | None = None,
    *,
    dates: Mapping[str, list[str]] | None = None,
) -> Drift:
    """The drift between a previous release's snapshot and this build's searches
    (``build --from``), over ``cells`` (the previous release's cells this build plans).

    Args:
        previous: the previous release's folder (with ``snapshot/items.parquet``).
        cfg: this build's config (profiles applied; its catalog names the catalog searched).
        current: the catalog this build's workers search (its staged snapshot).
        cells: the cells compared.
        stored: the bytes of this build's own release snapshot, when written already: the
            items found are taken from it as stored (not written and read again).
        dates: for a sequence release, sample key -> the item of each of its dates (its
            ``dates.json`` member), as the caller read them (for a release at a URL, from the
            shards it fetched); None: read from the shards in ``previous``.
    """
    from geodelta.pipelines.release.layout import SNAPSHOT
    from geodelta.sources.snapshot import SnapshotCatalog, read_snapshot

    rel = _open_release(previous, read_dates=dates is None)
    keep = set(cells)
    kept_samples = [r for r in rel.samples if str(r["cell_id"]) in keep]
    used = rel.dates if dates is None else dates
    rel = _Release(
        rel.root,
        rel.name,
        rel.version,
        rel.config,
        kept_samples,
        [c for c in rel.cells if c in keep],
        {str(r["key"]): list(used[str(r["key"])]) for r in kept_samples if str(r["key"]) in used},
    )
    snap_path = rel.root / SNAPSHOT
    kept = _by_key(read_snapshot(str(snap_path), resolve=False).items)
    _, found_then = search_cells(cfg, SnapshotCatalog(str(snap_path)), rel.cells)
    then = {k for keys in found_then.values() for k in keys}
    old = {k: v for k, v in kept.items() if k in then}
    recorder, found_now = search_cells(cfg, current, rel.cells)
    if stored is None:
        new = _as_stored(cfg, recorder.items.values(), str(snap_path))
    else:
        from geodelta.sources.snapshot import snapshot_items_of

        now = {k for keys in found_now.values() for k in keys}
        every = _by_key(snapshot_items_of(stored, "this build's snapshot", resolve=False).items)
        new = {k: v for k, v in every.items() if k in now}
    found = {c: found_then.get(c, set()) | found_now.get(c, set()) for c in rel.cells}
    items, samples, bare = _affected(
        rel, compare_items(old.values(), new.values()), found, cfg.labels.searched_collection
    )
    return Drift(
        release=f"{rel.name} {rel.version}",
        version=rel.version,
        catalog=cfg.catalog.recorded_url,
        cells=len(rel.cells),
        before=len(old),
        after=len(new),
        items=items,
        samples=samples,
        cells_without_sample=bare,
        steady=_steady(rel.cells, found_then, found_now, items),
    )


def _steady(
    cells: Iterable[str],
    then: Mapping[str, set[Key]],
    now: Mapping[str, set[Key]],
    items: Iterable[ItemDrift],
) -> set[str]:
    """The cells whose searches return the same items now as then, none of them changed."""
    moved = {(i.collection, i.item_id) for i in items}
    return {
        c
        for c in cells
        if then.get(c, set()) == now.get(c, set()) and not (now.get(c, set()) & moved)
    }


# -- what the command prints -------------------------------------------------------------------


def _short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _what(item: ItemDrift) -> str:
    parts = []
    for f in item.fields[:4]:
        if f.name in _NO_VALUES or (f.name.startswith("assets.") and f.name.count(".") == 1):
            parts.append(f.name)
        else:
            parts.append(f"{f.name} {_short(f.before)} -> {_short(f.after)}")
    if len(item.fields) > 4:
        parts.append(f"+{len(item.fields) - 4} more fields")
    return "; ".join(parts)


def drift_lines(drift: Drift, first: int = SHOWN) -> list[str]:
    """The short report of ``geodelta drift``: counts, then the ``first`` changes."""
    head = (
        f"{drift.release} against {drift.catalog}: {drift.count('added')} added, "
        f"{drift.count('removed')} removed, {drift.count('changed')} changed of "
        f"{drift.before} items ({drift.cells} cells searched); "
        f"{len(drift.samples)} samples affected"
    )
    if drift.cells_without_sample:
        head += f", {len(drift.cells_without_sample)} cells without a sample"
    lines = [head]
    for item in drift.items[:first]:
        line = f"  {item.change:<8} {item.collection}/{item.item_id}"
        if item.fields:
            line += f": {_what(item)}"
        if item.samples:
            more = f" +{len(item.samples) - 3}" if len(item.samples) > 3 else ""
            line += f" [samples {', '.join(item.samples[:3])}{more}]"
        lines.append(line)
    if len(drift.items) > first:
        lines.append(f"  ... {len(drift.items) - first} more (--json lists them all)")
    if not drift.drifted:
        lines.append("no drift: the catalog returns the items the release was built from")
    return lines
