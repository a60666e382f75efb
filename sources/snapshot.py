"""Search snapshots: the STAC items a build considered, frozen in one stac-geoparquet file.

A snapshot freezes what a catalog answered, so a build can be repeated after the catalog moved
(items reprocessed, replaced, withdrawn) or without calling it at all
(``catalog.kind: snapshot``, :class:`SnapshotCatalog`).

:func:`write_snapshot` writes item dicts with the `stac-geoparquet
<https://github.com/stac-utils/stac-geoparquet>`_ library, with deterministic bytes: the
items deduplicated and sorted by (collection, id), ``links`` dropped (a self link names the
folder the items were read from), asset hrefs stripped of any secret (the query string of a
signed URL) and, for local files under ``relative_to``, written relative to it; fixed writer
options; no time stamp. The file's metadata also records where the items came from (``origin``:
the catalog section of the config that searched them), so that a build from the snapshot has
the identity (config hash) and the bytes of the build that searched the catalog itself.

:func:`read_snapshot` reads one back (a local path or any fsspec URL); a relative href resolves
against the snapshot's own folder, as a relative href in a STAC item does. A file that is not
stac-geoparquet, or that misses a required column, is refused with one line naming what is
missing (:class:`SnapshotError`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from geodelta.schemas import SceneRef, strip_secret
from geodelta.schemas.config import SNAPSHOT_ORIGIN_KEY
from geodelta.schemas.records import BBox
from geodelta.sources.scenes import CatalogError, item_to_scene
from geodelta.sources.static import StaticCatalog

__all__ = [
    "ORIGIN_KEY",
    "REQUIRED_COLUMNS",
    "Snapshot",
    "SnapshotCatalog",
    "SnapshotError",
    "clean_item",
    "read_snapshot",
    "snapshot_bytes",
    "snapshot_items_of",
    "snapshot_metadata",
    "write_snapshot",
]

#: Parquet metadata key of the catalog section the items were searched with.
ORIGIN_KEY = SNAPSHOT_ORIGIN_KEY
#: Columns every snapshot must hold (plus ``datetime`` or ``start_datetime``).
REQUIRED_COLUMNS = ("id", "collection", "geometry", "bbox", "assets")
#: Writer options: fixed, so the same items give the same bytes.
_WRITER = {
    "compression": "zstd",
    "compression_level": 9,
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_version": "2.0",
    "version": "2.6",
}
_SCHEMA_VERSION: Literal["1.1.0"] = "1.1.0"


#: The item whose columns an empty snapshot has (no row of it is written).
_EMPTY: dict[str, Any] = {
    "type": "Feature",
    "stac_version": "1.0.0",
    "id": "",
    "collection": "",
    "geometry": {"type": "Point", "coordinates": [0.0, 0.0]},
    "bbox": [0.0, 0.0, 0.0, 0.0],
    "properties": {"datetime": "2000-01-01T00:00:00Z"},
    "assets": {"data": {"href": ""}},
    "links": [],
}


class SnapshotError(CatalogError):
    """A snapshot file that cannot be used: not stac-geoparquet, a missing column, no item of
    the configured collections. A :class:`~geodelta.errors.SourceError` (exit 2 from the CLI)."""


def _is_local(href: str) -> bool:
    parts = urlsplit(href)
    return not parts.scheme or len(parts.scheme) == 1 or parts.scheme == "file"


def _map_hrefs(obj: Any, fn: Any) -> Any:
    """``obj`` with ``fn`` applied to every ``href`` value, at any depth (assets, alternates)."""
    if isinstance(obj, dict):
        return {
            k: (fn(v) if k == "href" and isinstance(v, str) else _map_hrefs(v, fn))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_map_hrefs(v, fn) for v in obj]
    return obj


def clean_item(item: dict[str, Any], *, relative_to: str | None = None) -> dict[str, Any]:
    """An item dict as a snapshot stores it: no links, hrefs without secrets, local hrefs under
    ``relative_to`` (a folder) made relative to it."""
    root = os.path.abspath(relative_to) if relative_to is not None else None

    def href(h: str) -> str:
        h = strip_secret(h)
        if root is not None and _is_local(h):
            path = os.path.abspath(h.removeprefix("file://"))
            if path == root or path.startswith(root + os.sep):
                return Path(os.path.relpath(path, root)).as_posix()
        return h

    out = dict(item)
    out["links"] = []
    out["assets"] = _map_hrefs(out.get("assets") or {}, href)
    return _canonical(out)


def _canonical(item: dict[str, Any]) -> dict[str, Any]:
    """Keys sorted at every depth (the column order, hence the bytes, never depends on the
    order an API listed keys in) and null values dropped (a Parquet column is the union of
    every item's fields: the fields an item lacks read back as nulls, dropped again here), but
    for ``properties.datetime`` (null when the item has a start/end period)."""
    out: dict[str, Any] = {k: _no_nulls(v) for k, v in sorted(item.items()) if v is not None}
    if item.get("geometry") is not None:  # GeoJSON as it is (stored as WKB anyway)
        out["geometry"] = item["geometry"]
    props = item.get("properties")
    if isinstance(props, dict) and "datetime" in props and props["datetime"] is None:
        out["properties"] = dict(sorted({**out.get("properties", {}), "datetime": None}.items()))
    return out


def _no_nulls(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _no_nulls(obj[k]) for k in sorted(obj) if obj[k] is not None}
    if isinstance(obj, list):
        return [_no_nulls(v) for v in obj]
    return obj


def _drop_schema_dump(record: logging.LogRecord) -> bool:
    """stac-geoparquet 0.6 logs ``logger.debug(batch.schema, batch)``: a schema as the format
    string with an argument it has no place for, which fails in any handler formatting DEBUG
    records (pytest's re-raises, stopping the build). That one record is dropped."""
    return isinstance(record.msg, str)


def _to_arrow(items: list[dict[str, Any]]) -> Any:
    """``parse_stac_items_to_arrow(items, schema="FullFile").read_all()``, without its
    ``memlog``: stac-geoparquet 0.8 reads the process's memory map (psutil's ``smaps_rollup``)
    for a log line on every call, logged or not (~8 ms in a build process of 1 GB). The same
    function it calls for a whole file in memory, when the installed version has it."""
    import pyarrow as pa

    try:
        from stac_geoparquet.arrow._api import stac_items_to_arrow
    except ImportError:  # another layout of the library: its public call
        from stac_geoparquet.arrow import parse_stac_items_to_arrow

        return parse_stac_items_to_arrow(items, schema="FullFile").read_all()
    return pa.Table.from_batches([stac_items_to_arrow(items, drop_invalid_properties=True)])


def _mend_stac_geoparquet_logging() -> None:
    logger = logging.getLogger("stac_geoparquet.arrow._api")
    if _drop_schema_dump not in logger.filters:
        logger.addFilter(_drop_schema_dump)


def snapshot_bytes(
    items: Iterable[dict[str, Any]],
    *,
    origin: dict[str, Any] | None = None,
    relative_to: str | None = None,
) -> bytes:
    """The stac-geoparquet bytes of ``items`` (see the module docstring).

    Args:
        items: STAC item dicts (any order, duplicates allowed: the last copy of a
            (collection, id) wins); none gives a snapshot of no item.
        origin: the catalog section the items were searched with (recorded in the metadata).
        relative_to: folder under which local hrefs are written relative to it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from stac_geoparquet.arrow import stac_table_to_items
    from stac_geoparquet.arrow._to_parquet import create_parquet_metadata

    _mend_stac_geoparquet_logging()
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for item in items:
        unique[(str(item.get("collection") or ""), str(item["id"]))] = item
    cleaned = [clean_item(unique[k], relative_to=relative_to) for k in sorted(unique)]
    if cleaned:
        table = _to_arrow(cleaned)
        # once more from the table's own items: stac-geoparquet moves a few fields on the way
        # (a property colliding with a top-level key, nulls of the union schema); its items
        # read back write the same bytes again: a snapshot of a snapshot's items is the same
        again = [_canonical(d) for d in stac_table_to_items(table)]
        table = _to_arrow(again)
    else:  # the searches found nothing: the columns of an item, no row
        table = _to_arrow([_EMPTY]).slice(0, 0)
    empty = [f.name for f in table.schema if pa.types.is_struct(f.type) and f.type.num_fields == 0]
    table = table.drop_columns(empty)
    meta = create_parquet_metadata(table.schema, schema_version=_SCHEMA_VERSION)
    meta[ORIGIN_KEY] = json.dumps(origin or {}, sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    sink = io.BytesIO()
    pq.write_table(table, sink, **_WRITER)
    return sink.getvalue()


def write_snapshot(
    items: Iterable[dict[str, Any]],
    out: str | Path,
    *,
    origin: dict[str, Any] | None = None,
    relative_to: str | None = None,
) -> str:
    """Write ``items`` as a snapshot at ``out`` (a local path, atomically, or an fsspec URL).

    Returns:
        sha256 (hex) of the file written.
    """
    data = snapshot_bytes(items, origin=origin, relative_to=relative_to)
    dest = str(out)
    if _is_local(dest):
        from geodelta._io import write_atomic

        path = Path(dest.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    else:
        import fsspec

        with fsspec.open(dest, "wb") as fh:
            fh.write(data)
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Snapshot:
    """A snapshot read back.

    Attributes:
        url: where it was read from.
        items: the STAC item dicts, in (collection, id) order, relative hrefs resolved.
        origin: the catalog section the items were searched with (empty when unknown).
        sha256: sha256 of the file's bytes.
    """

    url: str
    items: list[dict[str, Any]]
    origin: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


def _read_bytes(url: str) -> bytes:
    if _is_local(url):
        path = Path(url.removeprefix("file://"))
        if not path.is_file():
            raise SnapshotError(url, "snapshot file not found; check catalog.url in the config")
        return path.read_bytes()
    import fsspec

    try:
        with fsspec.open(url, "rb") as fh:
            data: bytes = fh.read()
            return data
    except FileNotFoundError:
        raise SnapshotError(url, "snapshot file not found; check catalog.url") from None


def _resolver(url: str) -> Any:
    """Resolves a relative href against the snapshot's folder."""
    if _is_local(url):
        base = os.path.dirname(os.path.abspath(url.removeprefix("file://")))

        def local(h: str) -> str:
            if not _is_local(h) or os.path.isabs(h.removeprefix("file://")):
                return h
            return os.path.normpath(os.path.join(base, h))

        return local

    def remote(h: str) -> str:
        if urlsplit(h).scheme or h.startswith("/"):
            return h
        return urljoin(url, posixpath.normpath(h))

    return remote


def snapshot_metadata(data: bytes, url: str) -> tuple[Any, dict[str, Any]]:
    """(the parquet table, the origin) of a snapshot's bytes; refuses what is not one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise SnapshotError(url, f"not a stac-geoparquet file: not Parquet ({exc})") from None
    meta = table.schema.metadata or {}
    if b"geo" not in meta:
        raise SnapshotError(
            url,
            "not a stac-geoparquet file: no GeoParquet 'geo' metadata; write it with "
            "`geodelta snapshot` or the stac-geoparquet library",
        )
    names = set(table.column_names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if "datetime" not in names and "start_datetime" not in names:
        missing.append("datetime")
    if missing:
        raise SnapshotError(
            url, f"not a usable stac-geoparquet snapshot: missing column(s) {missing}"
        )
    try:
        origin = json.loads(meta.get(ORIGIN_KEY, b"{}"))
    except ValueError:
        origin = {}
    return table, origin if isinstance(origin, dict) else {}


def snapshot_items_of(data: bytes, url: str, *, resolve: bool = True) -> Snapshot:
    """A snapshot's bytes read back (``url``: where they came from, for messages and for
    resolving relative hrefs).

    Args:
        data: the file's bytes.
        url: where they were read from.
        resolve: resolve relative hrefs against ``url``'s folder; False keeps every href as
            the file stores it (how :mod:`geodelta.pipelines.release.drift` compares two
            snapshots written the same way).

    Raises:
        SnapshotError: not stac-geoparquet, or a required column is missing.
    """
    from stac_geoparquet.arrow import stac_table_to_items

    table, origin = snapshot_metadata(data, url)
    fix = _resolver(url) if resolve else None
    try:
        items = [
            _canonical(d if fix is None else _map_hrefs(d, fix)) for d in stac_table_to_items(table)
        ]
    except Exception as exc:  # stac-geoparquet: a column of an unexpected type
        raise SnapshotError(url, f"not a usable stac-geoparquet snapshot ({exc})") from None
    return Snapshot(url=url, items=items, origin=origin, sha256=hashlib.sha256(data).hexdigest())


def read_snapshot(url: str, *, resolve: bool = True) -> Snapshot:
    """Read a snapshot (a local path or an fsspec URL); see :func:`snapshot_items_of`.

    Raises:
        SnapshotError: the file is missing, not stac-geoparquet, or misses a required column.
    """
    return snapshot_items_of(_read_bytes(url), url, resolve=resolve)


class SnapshotCatalog(StaticCatalog):
    """``catalog.kind: snapshot``: the items of a snapshot file, searched in process with the
    static catalog's filters and order (:meth:`StaticCatalog.search`); no STAC API call.

    Args:
        url: the snapshot (local path or fsspec URL).
        collections: collections the config searches; one without any item is refused.
    """

    def __init__(self, url: str, collections: Sequence[str] = ()) -> None:
        import pystac

        snap = read_snapshot(url)
        self.url = url
        self.snapshot = snap
        self._items = {}
        self.item_hrefs = {}
        self._dicts: dict[tuple[str, str], dict[str, Any]] = {}
        for d in snap.items:
            try:
                scene = item_to_scene(pystac.Item.from_dict(d, preserve_dict=True))
            except CatalogError:
                raise
            except Exception as exc:  # a malformed bbox, datetime, asset...
                raise SnapshotError(
                    url, f"item {d.get('id')!r} is not a valid STAC item ({exc})"
                ) from None
            self._items.setdefault(scene.collection, []).append(scene)
            self._dicts[(scene.collection, scene.item_id)] = d
        for scenes in self._items.values():
            scenes.sort(key=lambda s: (s.datetime, s.item_id))
        missing = [c for c in collections if c not in self._items]
        if missing:
            raise SnapshotError(
                url,
                f"holds no item of collection(s) {missing} (it holds {self.collections}); "
                "snapshot those collections or change the config",
            )

    def search(
        self,
        collections: Sequence[str],
        bbox: BBox,
        window: tuple[datetime, datetime],
        *,
        max_cloud_cover: float | None = None,
    ) -> list[SceneRef]:
        """:meth:`StaticCatalog.search`, where a collection the snapshot holds no item of
        gives no item (the searches it froze found none), not an error."""
        known = [c for c in collections if c in self._items]
        if not known:
            return []
        return super().search(known, bbox, window, max_cloud_cover=max_cloud_cover)

    def item_dict(self, scene: SceneRef) -> dict[str, Any]:
        """The stored item dict of a scene (hrefs resolved)."""
        return self._dicts[(scene.collection, scene.item_id)]

    def pystac_item(self, scene: SceneRef) -> Any:
        """The pystac Item of a scene (for the pre-flight's checks)."""
        import pystac

        return pystac.Item.from_dict(self.item_dict(scene), preserve_dict=True)
