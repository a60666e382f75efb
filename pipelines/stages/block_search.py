"""One STAC search per plan block, reused for every cell of the block.

:class:`BlockSearch` wraps a catalog (:class:`~geodelta.sources.catalog.SceneCatalog`) for the
pair stage. A cell's search (collections, its lon/lat box, a time window, a cloud-cover
pre-filter) is answered from one search of the cell's *block* (the square of
``runner.block_cells x runner.block_cells`` cells of the zone's grid,
:mod:`~geodelta.pipelines.stages.blocks`) with the same collections, window and filter, made
once and kept while the block's cells pass (they arrive one after the other on the same worker
after the block is expanded; a few blocks are kept, least recently used first out).

Exactness: the block's lon/lat box holds every cell's box, so an item that intersects a cell
intersects the block; each cell then keeps the block's items whose box overlaps the cell's box
and whose geometry intersects it, the test a static catalog's own search makes, in the
catalog's (datetime, item id) order. The candidates, hence the chosen pairs and every sample
byte, are those of a search per cell (a STAC API whose server tests intersection on a sphere
or with rounded shapes may differ on items that only touch a cell; such items never cover the
cell, so they are never chosen). Where this cannot be guaranteed the cell is searched on its
own: a block search the catalog reports as truncated (``catalog.max_items``, logged), a cell
box outside its block's box, a block box across the antimeridian. Retries and per-host limits
are the catalog's, as for any search.

:func:`snapshot_items` runs a build's searches through the same block search without reading
pixels, and :class:`ItemRecorder` keeps the STAC item of every scene they return: the items of
a search snapshot (:mod:`geodelta.sources.snapshot`, :mod:`geodelta.pipelines.release.snapshot`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar

from geodelta.pipelines.stages.plan import parse_cell_id
from geodelta.schemas import SceneRef, TileJob
from geodelta.schemas.records import BBox

__all__ = ["BlockSearch", "block_bbox"]

logger = logging.getLogger(__name__)

#: Block searches kept per worker (each a list of scenes); the cells of a block arrive together.
KEEP = 16
#: Margin added around a block's lon/lat box (degrees, ~1 cm): rounding never drops an edge item.
MARGIN_DEG = 1e-7

_T = TypeVar("_T")
_R = TypeVar("_R")

_PER_CELL = None  # a cache entry meaning: search each cell of this block on its own

_Key = tuple[tuple[int, bool, int, int, int], tuple[str, ...], tuple[datetime, datetime], Any]


@lru_cache(maxsize=256)
def block_bbox(zone: int, north: bool, size_m: int, bc: int, bcol: int, brow: int) -> BBox:
    """Lon/lat box of the block's square on the zone's grid (segmentized at 1/8 cell), with a
    margin of :data:`MARGIN_DEG`."""
    import shapely
    from pyproj import Transformer

    epsg = (32600 if north else 32700) + zone
    inv = Transformer.from_crs(epsg, 4326, always_xy=True)
    s = float(size_m)
    x0, y0 = bcol * bc * s, brow * bc * s
    square = shapely.segmentize(shapely.box(x0, y0, x0 + bc * s, y0 + bc * s), s / 8)
    b = shapely.transform(square, inv.transform, interleaved=False).bounds
    m = MARGIN_DEG
    return (b[0] - m, b[1] - m, b[2] + m, b[3] + m)


def _within(inner: BBox, outer: BBox) -> bool:
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and inner[2] <= outer[2]
        and inner[3] <= outer[3]
    )


def _overlaps(a: BBox, b: BBox) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _touching(scenes: Sequence[SceneRef], cell: BBox) -> list[SceneRef]:
    """The scenes the static catalog's search of ``cell`` returns, in order: box overlap, then
    geometry intersection (the cell's box built once, when a scene needs it)."""
    out: list[SceneRef] = []
    cell_box = None
    for scene in scenes:
        if not _overlaps(scene.bbox_lonlat, cell):
            continue
        if scene.geometry is not None:
            if cell_box is None:
                import shapely

                cell_box = shapely.box(*cell)  # the same polygon as shapely.geometry.box, 5x faster
            if not _shape(scene.geometry).intersects(cell_box):
                continue
        out.append(scene)
    return out


#: id(geometry dict) -> (the dict, its shapely shape), as pair's footprint cache (unbuffered:
#: the static catalog's own test).
_SHAPES: dict[int, tuple[dict[str, Any], Any]] = {}


def _shape(geometry: dict[str, Any]) -> Any:
    from shapely.geometry import shape

    hit = _SHAPES.get(id(geometry))
    if hit is not None and hit[0] is geometry:
        return hit[1]
    if len(_SHAPES) >= 4096:
        _SHAPES.clear()
    geom = shape(geometry)
    _SHAPES[id(geometry)] = (geometry, geom)
    return geom


class BlockSearch:
    """A catalog whose cell searches are answered from one search per block.

    Args:
        inner: the catalog searched (``search(collections, bbox, window, *,
            max_cloud_cover)``; a ``truncated`` counter, where it has one, marks a search cut
            at ``catalog.max_items``).
        block_cells: cells per block side (``runner.block_cells``).

    Attributes:
        searches: searches sent to ``inner`` (block searches and per-cell ones).
        per_cell: cell searches answered by a search of their own (see the module docstring).
    """

    def __init__(self, inner: Any, block_cells: int) -> None:
        self.inner = inner
        self.block_cells = block_cells
        self.searches = 0
        self.per_cell = 0
        self._cache: OrderedDict[_Key, list[SceneRef] | None] = OrderedDict()

    def for_cell(self, job: TileJob) -> _CellCatalog:
        """The catalog the pair stage searches for ``job``."""
        return _CellCatalog(self, job)

    def _inner_search(
        self,
        collections: Sequence[str],
        bbox: BBox,
        window: tuple[datetime, datetime],
        max_cloud_cover: float | None,
    ) -> list[SceneRef]:
        self.searches += 1
        found: list[SceneRef] = self.inner.search(
            collections, bbox, window, max_cloud_cover=max_cloud_cover
        )
        return found

    def search_cell(
        self,
        job: TileJob,
        collections: Sequence[str],
        window: tuple[datetime, datetime],
        max_cloud_cover: float | None,
    ) -> list[SceneRef]:
        """The items a search of ``job``'s box would return, from its block's search."""
        cell = job.bbox_lonlat
        c = parse_cell_id(job.cell_id)
        bc = self.block_cells
        place = (c.zone, c.north, c.size_m, c.col // bc, c.row // bc)
        bbox = block_bbox(c.zone, c.north, c.size_m, bc, place[3], place[4])
        if not _within(cell, bbox) or bbox[2] - bbox[0] > 90.0:
            self.per_cell += 1
            return self._inner_search(collections, cell, window, max_cloud_cover)
        key: _Key = (place, tuple(collections), window, max_cloud_cover)
        if key in self._cache:
            self._cache.move_to_end(key)
            found = self._cache[key]
        else:
            before = getattr(self.inner, "truncated", 0)
            found = self._inner_search(collections, bbox, window, max_cloud_cover)
            if getattr(self.inner, "truncated", 0) != before:
                logger.warning(
                    "the search of block %s (%s) was truncated by the catalog; its cells are "
                    "searched one by one",
                    job.cell_id,
                    list(collections),
                )
                found = _PER_CELL
            self._cache[key] = found
            while len(self._cache) > KEEP:
                self._cache.popitem(last=False)
        if found is _PER_CELL:
            self.per_cell += 1
            return self._inner_search(collections, cell, window, max_cloud_cover)
        return _touching(found, cell)


class _CellCatalog:
    """The catalog one cell's pair stage sees: its own box is served by the block search."""

    def __init__(self, owner: BlockSearch, job: TileJob) -> None:
        self.owner = owner
        self.job = job

    def search(
        self,
        collections: Sequence[str],
        bbox: BBox,
        window: tuple[datetime, datetime],
        *,
        max_cloud_cover: float | None = None,
    ) -> list[SceneRef]:
        """Items of ``collections`` intersecting ``bbox`` within ``window`` (see the module)."""
        if tuple(bbox) != tuple(self.job.bbox_lonlat):  # not this cell's box: pass through
            return self.owner._inner_search(collections, bbox, window, max_cloud_cover)
        return self.owner.search_cell(self.job, collections, window, max_cloud_cover)

    def __getattr__(self, name: str) -> Any:  # everything else: the catalog's own
        return getattr(self.owner.inner, name)


# --------------------------------------------------------------------------------------------
# search snapshots: the items the build's searches return, as STAC item dicts


class ItemRecorder:
    """A catalog that keeps the STAC item dict of every scene its searches return.

    Args:
        inner: the catalog searched: a STAC API (``search_items``: the profile-completed
            items), a snapshot (``item_dict``), a static catalog (``item_hrefs``: each item's
            JSON file, read once), or any other (an item made from the scene record).

    Attributes:
        items: (collection, item id) -> item dict, asset hrefs absolute.

    One recorder serves one thread; :func:`snapshot_items` gives each plan block its own and
    merges them in block order (:meth:`absorb`).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self._flagged = getattr(inner, "search_items_flagged", None)
        self._truncated = 0

    @property
    def truncated(self) -> int:
        """Searches cut at ``catalog.max_items``: this recorder's own, where the catalog
        flags each search (a STAC API, safe with other threads searching it), else the
        catalog's count."""
        if self._flagged is not None:
            return self._truncated
        return int(getattr(self.inner, "truncated", 0))

    def absorb(self, other: ItemRecorder) -> None:
        """Add the items ``other`` recorded after this recorder's, as if this recorder had made
        ``other``'s searches next: a STAC API's last copy of an item wins (as in
        :meth:`search`), another catalog's first."""
        if self._flagged is not None or getattr(self.inner, "search_items", None) is not None:
            self.items.update(other.items)
        else:
            for key, item in other.items.items():
                self.items.setdefault(key, item)

    def search(
        self,
        collections: Sequence[str],
        bbox: BBox,
        window: tuple[datetime, datetime],
        *,
        max_cloud_cover: float | None = None,
    ) -> list[SceneRef]:
        """The inner catalog's search; every item returned is kept in :attr:`items`."""
        from geodelta.sources.catalog import item_to_scene

        search_items = getattr(self.inner, "search_items", None)
        if search_items is not None:  # a STAC API: the items as the search returned them
            if self._flagged is not None:
                found, cut = self._flagged(
                    collections, bbox=bbox, window=window, max_cloud_cover=max_cloud_cover
                )
                self._truncated += int(cut)
            else:
                found = search_items(
                    collections, bbox=bbox, window=window, max_cloud_cover=max_cloud_cover
                )
            scenes = []
            for item in found:
                scene = item_to_scene(item)
                key = (scene.collection, scene.item_id)
                self.items[key] = item.to_dict(include_self_link=False, transform_hrefs=False)
                scenes.append(scene)
            scenes.sort(key=lambda s: (s.datetime, s.item_id))
            return scenes
        scenes = list(self.inner.search(collections, bbox, window, max_cloud_cover=max_cloud_cover))
        for scene in scenes:
            key = (scene.collection, scene.item_id)
            if key not in self.items:
                self.items[key] = self._item_dict(scene)
        return scenes

    def _item_dict(self, scene: SceneRef) -> dict[str, Any]:
        stored = getattr(self.inner, "item_dict", None)
        if stored is not None:  # a snapshot
            found: dict[str, Any] = stored(scene)
            return found
        href = getattr(self.inner, "item_hrefs", {}).get((scene.collection, scene.item_id))
        if href is not None:  # a static catalog: the item's own file
            import pystac

            item = pystac.Item.from_file(href)
            item.make_asset_hrefs_absolute()
            return item.to_dict(include_self_link=False, transform_hrefs=False)
        return scene_item(scene)


def scene_item(scene: SceneRef) -> dict[str, Any]:
    """A STAC item dict holding what a scene record holds (for catalogs without item dicts):
    :func:`~geodelta.sources.scenes.item_to_scene` of it gives the scene back."""
    x0, y0, x1, y1 = scene.bbox_lonlat
    geometry = scene.geometry or {
        "type": "Polygon",
        "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
    }
    props: dict[str, Any] = {"datetime": scene.datetime.isoformat().replace("+00:00", "Z")}
    for name, when in (
        ("start_datetime", scene.start_datetime),
        ("end_datetime", scene.end_datetime),
    ):
        if when is not None:
            props[name] = when.isoformat().replace("+00:00", "Z")
    if scene.cloud_cover is not None:
        props["eo:cloud_cover"] = scene.cloud_cover
    if scene.platform is not None:
        props["platform"] = scene.platform
    if scene.crs is not None:
        props["proj:code"] = scene.crs
    assets = {
        key: {
            "href": a.href,
            "roles": list(a.roles),
            "raster:bands": [
                {"scale": a.scale, "offset": a.offset}
                | ({} if a.nodata is None else {"nodata": a.nodata})
            ],
        }
        for key, a in scene.assets.items()
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": scene.item_id,
        "collection": scene.collection,
        "geometry": geometry,
        "bbox": [x0, y0, x1, y1],
        "properties": props,
        "assets": assets,
        "links": [],
    }


#: Block searches in flight per ``catalog.concurrency_per_host`` slot: while some threads wait
#: on the API, others parse and filter the answers they got (the per-host limit still holds).
THREADS_PER_SLOT = 2


def search_threads(cfg: Any, inner: Any) -> int:
    """Threads :func:`snapshot_items` searches ``inner`` with: ``catalog.concurrency_per_host
    x`` :data:`THREADS_PER_SLOT` for a STAC API (``search_items``), 1 for a catalog searched
    in memory (static, snapshot: threads only add overhead there, the work holds the GIL)."""
    if getattr(inner, "search_items", None) is None:
        return 1
    return max(1, int(cfg.catalog.concurrency_per_host) * THREADS_PER_SLOT)


def _in_order(fn: Callable[[_T], _R], args: Iterable[_T], threads: int) -> Iterator[_R]:
    """``map(fn, args)`` on ``threads`` threads, results in the order of ``args``; at most
    4 x ``threads`` calls submitted ahead (a continental plan's blocks stream). The first
    failure, in order, is raised (later calls are cancelled)."""
    if threads <= 1:
        yield from map(fn, args)
        return
    from concurrent.futures import Future, ThreadPoolExecutor

    ahead = 4 * threads
    pending: deque[Future[_R]] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="geodelta-search") as pool:
        try:
            for arg in args:
                pending.append(pool.submit(fn, arg))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def series_span(cfg: Any) -> tuple[datetime, datetime] | None:
    """The span a sequence build searches (first window's start, last window's end), or None
    for pairs."""
    if cfg.time.series is None:
        return None
    from geodelta.schemas.series import series_windows

    windows = series_windows(cfg.time.series)
    return windows[0].start, windows[-1].end


def cell_searches(cfg: Any, blocks: BlockSearch, job: TileJob) -> list[SceneRef]:
    """Every search the pair (or sequence) stage makes for one cell, through ``blocks``, and
    the items they return (imagery, then labels): the imagery of both windows (a sequence: of
    its span, :mod:`.sequence`), and the label collection (``labels.searched_collection``)
    over the widest window the stage could ask for (from the start of the first window or the
    earliest candidate to the end of the last or the latest), which holds the items the stage
    picks whatever the pixels decide."""
    coll = (cfg.imagery.collection,)
    cc = cfg.imagery.max_cloud_cover
    span = series_span(cfg)
    if span is not None:
        images = blocks.search_cell(job, coll, span, cc)
        lo, hi = span
    else:
        images = [
            *blocks.search_cell(job, coll, job.t0_window, cc),
            *blocks.search_cell(job, coll, job.t1_window, cc),
        ]
        lo, hi = job.t0_window[0], job.t1_window[1]
    labels = cfg.labels.searched_collection
    if labels is None:
        return images
    t_lo = min([lo, *(s.datetime for s in images)])
    t_hi = max([hi, *(s.datetime for s in images)])
    return [*images, *blocks.search_cell(job, (labels,), (t_lo, t_hi), None)]


def snapshot_items(cfg: Any, inner: Any, *, threads: int | None = None) -> list[dict[str, Any]]:
    """The item dicts of every search the build of ``cfg`` would make, without reading pixels.

    Per plan block, through :class:`BlockSearch` (one search per block, collection and
    window, as the build): the imagery of both windows, and the label collection
    (``labels.searched_collection``) over the widest window the pair stage could ask for a
    cell (from the start of ``time.t0`` or the earliest candidate, to the end of ``time.t1``
    or the latest): the pair chosen by pixels lies inside it, so a build from the snapshot
    finds every item the build's own searches would find.

    Blocks are searched on ``threads`` threads (default :func:`search_threads`), each block
    with its own :class:`BlockSearch` and :class:`ItemRecorder` (a block's searches never share
    a cache entry with another block's: their boxes differ); the recorders are merged in block
    order (:meth:`ItemRecorder.absorb`), so the items, hence the snapshot's bytes, are those of
    a serial run. A truncated search is the block's own (``search_items_flagged``).

    Args:
        cfg: the build config (profile defaults applied).
        inner: the catalog to search.
        threads: searching threads (1: serial).

    Returns:
        Item dicts (asset hrefs absolute), in (collection, id) order.
    """
    from geodelta.pipelines.stages.blocks import expand_block, iter_blocks

    bc = cfg.runner.block_cells

    def search_jobs(blocks: BlockSearch, jobs: list[TileJob]) -> None:
        for job in jobs:
            cell_searches(cfg, blocks, job)

    def search_block(jobs: list[TileJob]) -> ItemRecorder:
        recorder = ItemRecorder(inner)
        search_jobs(BlockSearch(recorder, bc), jobs)
        return recorder

    n = search_threads(cfg, inner) if threads is None else threads
    jobs = (expand_block(cfg, block) for block in iter_blocks(cfg))  # on this thread
    merged = ItemRecorder(inner)
    if n <= 1:  # one recorder: a static catalog's item file is read once, not once per block
        shared = BlockSearch(merged, bc)
        for block_jobs in jobs:
            search_jobs(shared, block_jobs)
    else:
        for recorder in _in_order(search_block, jobs, n):
            merged.absorb(recorder)
    return [merged.items[k] for k in sorted(merged.items)]
