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
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from geodelta.pipelines.stages.plan import parse_cell_id
from geodelta.schemas import SceneRef, TileJob
from geodelta.schemas.records import BBox

__all__ = ["BlockSearch", "block_bbox"]

logger = logging.getLogger(__name__)

#: Block searches kept per worker (each a list of scenes); the cells of a block arrive together.
KEEP = 16
#: Margin added around a block's lon/lat box (degrees, ~1 cm): rounding never drops an edge item.
MARGIN_DEG = 1e-7

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


def _touches_cell(scene: SceneRef, cell: BBox) -> bool:
    """The static catalog's search test: box overlap, then geometry intersection."""
    if not _overlaps(scene.bbox_lonlat, cell):
        return False
    if scene.geometry is None:
        return True
    from shapely.geometry import box

    return bool(_shape(scene.geometry).intersects(box(*cell)))


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
        return [s for s in found if _touches_cell(s, cell)]


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
