"""Plan blocks: the element the engines distribute, expanded into its cells on the worker.

A block is the square of ``runner.block_cells x runner.block_cells`` cells of one UTM zone's
grid (:mod:`~geodelta.pipelines.stages.plan`) holding cell ``(col, row)`` at
``(col // block_cells, row // block_cells)``. :func:`iter_blocks` enumerates the non-empty
blocks of a plan lazily (one block column in memory at a time); each :class:`CellBlock` is a
small picklable record: the block's place on the grid, a bit mask of its planned cells and
their AOI regions. :func:`expand_block` turns it into exactly the :class:`TileJob` records
:func:`~geodelta.pipelines.stages.plan.plan_jobs` makes for those cells (same ids, transforms,
lon/lat boxes, splits, regions), in cell-id order, from grid arithmetic alone: a worker needs
neither the AOI file nor the rest of the plan.

So a driver holds one record per block (a 5 M-cell AOI at the default 8 x 8 is ~80 k blocks),
never one per cell, and the cells of a block reach the pair stage one after the other on the
same worker, where one STAC search per block serves them all
(:mod:`~geodelta.pipelines.stages.block_search`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from geodelta.pipelines.stages.plan import (
    PlanError,
    _cell_size,
    _id_key,
    block_id,
    format_cell_id,
    iter_columns,
    split_of_block,
)
from geodelta.schemas import BuildConfig, TileJob

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "CellBlock",
    "Element",
    "blocks_cells",
    "cells_of",
    "expand_block",
    "iter_blocks",
    "job_of",
    "restrict",
    "spread",
]


@dataclass(frozen=True)
class CellBlock:
    """One block of a plan: a square of the zone's grid and which of its cells are planned.

    Attributes:
        zone: UTM zone number.
        north: northern hemisphere.
        size_m: cell size in metres.
        block_cells: cells per side of the block.
        bcol: block column (``col // block_cells``).
        brow: block row (``row // block_cells``).
        mask: ``np.packbits`` of the ``block_cells**2`` flags, flag ``c * block_cells + r``
            for cell ``(bcol * block_cells + c, brow * block_cells + r)``.
        regions: the AOI region of the planned cells: one name for all, or one per cell in
            cell-id order.
    """

    zone: int
    north: bool
    size_m: int
    block_cells: int
    bcol: int
    brow: int
    mask: bytes
    regions: tuple[str, ...]

    @property
    def block_id(self) -> str:
        """``31N-1280-b8-57-439``: zone, cell size, block size, block column and row."""
        h = "N" if self.north else "S"
        return f"{self.zone:02d}{h}-{self.size_m}-b{self.block_cells}-{self.bcol}-{self.brow}"

    @property
    def epsg(self) -> int:
        """EPSG code of the block's UTM zone."""
        return (32600 if self.north else 32700) + self.zone

    def flags(self) -> np.ndarray:
        """The ``block_cells**2`` planned-cell flags (bool)."""
        n = self.block_cells * self.block_cells
        return np.unpackbits(np.frombuffer(self.mask, np.uint8), count=n).astype(bool)

    def grid_cells(self) -> list[tuple[int, int]]:
        """(col, row) of the planned cells, in cell-id order."""
        bc = self.block_cells
        idx = np.flatnonzero(self.flags())
        cells = [(self.bcol * bc + int(i) // bc, self.brow * bc + int(i) % bc) for i in idx]
        return sorted(cells, key=lambda cr: (_id_key(cr[0]), _id_key(cr[1])))

    def cell_ids(self) -> list[str]:
        """Ids of the planned cells, in cell-id order."""
        z, n, s = self.zone, self.north, self.size_m
        return [format_cell_id(z, n, s, c, r) for c, r in self.grid_cells()]

    @property
    def cells(self) -> int:
        """Planned cells in the block."""
        return int(self.flags().sum())

    def region_of(self) -> list[str]:
        """The region of each planned cell, in cell-id order."""
        if len(self.regions) == 1:
            return list(self.regions) * self.cells
        return list(self.regions)


#: What an engine distributes: a block (expanded on the worker) or one cell's job.
Element = CellBlock | TileJob


def restrict(block: CellBlock, keep: Callable[[str], bool]) -> CellBlock | None:
    """The block with only the cells whose id ``keep`` accepts (None: none left)."""
    ids = block.cell_ids()
    kept = [keep(c) for c in ids]
    if all(kept):
        return block
    if not any(kept):
        return None
    bc = block.block_cells
    flags = np.zeros(bc * bc, bool)
    regions = block.region_of()
    names = []
    for (col, row), ok, name in zip(block.grid_cells(), kept, regions, strict=True):
        if ok:
            flags[(col - block.bcol * bc) * bc + (row - block.brow * bc)] = True
            names.append(name)
    single = len(set(names)) == 1
    return replace(
        block,
        mask=np.packbits(flags).tobytes(),
        regions=(names[0],) if single else tuple(names),
    )


def iter_blocks(cfg: BuildConfig, block_cells: int | None = None) -> Iterator[CellBlock]:
    """The non-empty blocks of a plan (``block_cells``: default ``runner.block_cells``), lazily.

    Blocks come zone by zone (in cell-id order of zones), then by block column and row; the
    cells of all blocks are exactly :func:`~geodelta.pipelines.stages.plan.iter_cells`'s, each
    in one block. Memory: the columns of the open block columns (one, except where column ids
    pass 9999 and sort as text).
    """
    bc = cfg.runner.block_cells if block_cells is None else block_cells
    zone_key: tuple[int, bool] | None = None
    size_m = 0
    open_groups: dict[int, list[tuple[int, np.ndarray, list[str]]]] = {}

    def flush(bcols: Iterable[int]) -> Iterator[CellBlock]:
        if zone_key is None:
            return
        for b in sorted(bcols):
            yield from _group_blocks(zone_key, size_m, bc, b, open_groups.pop(b))

    for cc in iter_columns(cfg):
        if (cc.zone, cc.north) != zone_key:
            yield from flush(list(open_groups))
            zone_key, size_m = (cc.zone, cc.north), cc.size_m
        key = _id_key(cc.col)
        done = [b for b in open_groups if b != cc.col // bc and _last_key(b, bc) < key]
        yield from flush(done)
        open_groups.setdefault(cc.col // bc, []).append((cc.col, cc.rows, cc.regions))
    yield from flush(list(open_groups))


def _last_key(bcol: int, bc: int) -> str:
    """The largest column id key of a block column: once a later key arrives, it is complete."""
    return max(_id_key(c) for c in range(bcol * bc, (bcol + 1) * bc))


def _group_blocks(
    zone_key: tuple[int, bool],
    size_m: int,
    bc: int,
    bcol: int,
    parts: Sequence[tuple[int, np.ndarray, list[str]]],
) -> Iterator[CellBlock]:
    """The blocks of one block column from its columns' kept rows."""
    cols = np.concatenate([np.full(len(r), c, np.int64) for c, r, _ in parts])
    rows = np.concatenate([r for _, r, _ in parts]).astype(np.int64)
    names = [n for _, _, ns in parts for n in ns]
    brows = rows // bc
    idx = (cols - bcol * bc) * bc + (rows - brows * bc)
    order = np.lexsort((idx, brows))
    ub, start, count = np.unique(brows[order], return_index=True, return_counts=True)
    flags = np.zeros((len(ub), bc * bc), bool)
    flags[np.repeat(np.arange(len(ub)), count), idx[order]] = True
    masks = np.packbits(flags, axis=1)
    single = len(set(names)) == 1
    zone, north = zone_key
    for k, b in enumerate(ub.tolist()):
        if single:
            regions: tuple[str, ...] = (names[0],)
        else:
            sel = order[start[k] : start[k] + count[k]].tolist()
            by_cell = {(int(cols[i]), int(rows[i])): names[i] for i in sel}
            cells = sorted(by_cell, key=lambda cr: (_id_key(cr[0]), _id_key(cr[1])))
            regions = tuple(by_cell[c] for c in cells)
            if len(set(regions)) == 1:
                regions = regions[:1]
        yield CellBlock(zone, north, size_m, bc, bcol, b, masks[k].tobytes(), regions)


@lru_cache(maxsize=8)
def _to_lonlat(epsg: int) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(epsg, 4326, always_xy=True)


def expand_block(cfg: BuildConfig, block: CellBlock) -> list[TileJob]:
    """The TileJobs of a block's planned cells, in cell-id order, as ``plan_jobs`` makes them.

    Grid arithmetic only (the AOI is not read): the lon/lat box of each cell is its square
    segmentized at 1/8 of a cell and transformed, as in ``plan_jobs``; its split is the
    ``splits.block_cells`` block's.
    """
    import shapely

    res = cfg.grid.resolution_m
    n = cfg.grid.cell_size_px
    size, size_m = _cell_size(cfg)
    if size_m != block.size_m:
        raise PlanError(
            "grid",
            f"block {block.block_id} was planned with {block.size_m} m cells, the config has "
            f"{size_m} m (grid.resolution_m x grid.cell_size_px); plan again with this config",
        )
    cells = block.grid_cells()
    if not cells:
        return []
    cols = [c for c, _ in cells]
    rows = [r for _, r in cells]
    boxes = [shapely.box(c * size, r * size, (c + 1) * size, (r + 1) * size) for c, r in cells]
    rings = shapely.segmentize(np.array(boxes, dtype=object), size / 8)
    inv = _to_lonlat(block.epsg)
    bounds = shapely.bounds(shapely.transform(rings, inv.transform, interleaved=False))
    splits: dict[str, str] = {}
    jobs = []
    crs = f"EPSG:{block.epsg}"
    for (col, row), b, region in zip(
        zip(cols, rows, strict=True), bounds.tolist(), block.region_of(), strict=True
    ):
        cid = format_cell_id(block.zone, block.north, size_m, col, row)
        sb = block_id(cid, cfg.splits.block_cells)
        if sb not in splits:
            splits[sb] = split_of_block(sb, cfg.splits)
        jobs.append(
            TileJob(
                cell_id=cid,
                crs=crs,
                transform=(res, 0.0, col * size, 0.0, -res, (row + 1) * size),
                shape=(n, n),
                bbox_lonlat=(b[0], b[1], b[2], b[3]),
                t0_window=cfg.time.t0,
                t1_window=cfg.time.t1,
                region=region,
                split=splits[sb],
            )
        )
    return jobs


def cells_of(cfg: BuildConfig, element: Element) -> list[TileJob]:
    """The cells of an engine element: a block's, expanded, or the one job itself."""
    if isinstance(element, TileJob):
        return [element]
    return expand_block(cfg, element)


def blocks_cells(elements: Sequence[Element]) -> int:
    """Cells in a list of engine elements."""
    return sum(1 if isinstance(e, TileJob) else e.cells for e in elements)


def spread(elements: Sequence[Element], at_least: int) -> list[Element]:
    """``elements`` with blocks cut into parts (cell-id order) until there are about
    ``at_least`` elements (or one per cell), so a build of a few blocks still keeps every
    worker busy. A part keeps its block's place: the pair stage's block search still searches
    the whole block once per worker that gets a part of it.
    """
    out = list(elements)
    cells = blocks_cells(out)
    if len(out) >= at_least or cells <= len(out):
        return out
    target = min(at_least, cells)
    parts: list[Element] = []
    for e in out:
        if isinstance(e, TileJob):
            parts.append(e)
            continue
        ids = e.cell_ids()
        k = max(1, min(len(ids), round(target * len(ids) / cells)))
        for i in range(k):
            chunk = set(ids[i * len(ids) // k : (i + 1) * len(ids) // k])
            part = restrict(e, chunk.__contains__)
            if part is not None:
                parts.append(part)
    return parts


def job_of(cfg: BuildConfig, cell_id: str, region: str) -> TileJob:
    """The TileJob of one planned cell (its id and region from the plan), as plan_jobs makes it."""
    from geodelta.pipelines.stages.plan import parse_cell_id

    c = parse_cell_id(cell_id)
    flags = np.zeros(1, bool)
    flags[0] = True
    block = CellBlock(
        c.zone, c.north, c.size_m, 1, c.col, c.row, np.packbits(flags).tobytes(), (region,)
    )
    (job,) = expand_block(cfg, block)
    return job
