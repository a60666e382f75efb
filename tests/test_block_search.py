"""One STAC search per plan block: every cell gets exactly what its own search returns."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from geodelta.pipelines.stages.block_search import BlockSearch, block_bbox
from geodelta.pipelines.stages.blocks import expand_block, iter_blocks
from geodelta.pipelines.stages.plan import parse_cell_id
from geodelta.schemas import SceneRef, TileJob, parse_config
from geodelta.sources.static import StaticCatalog
from tests.conftest import minimal_config

T0 = (datetime(2020, 6, 1, tzinfo=UTC), datetime(2020, 8, 31, tzinfo=UTC))
T1 = (datetime(2021, 6, 1, tzinfo=UTC), datetime(2021, 8, 31, tzinfo=UTC))


def _scene(i: int, ring: list[tuple[float, float]], when: datetime, cc: float) -> SceneRef:
    xs, ys = [x for x, _ in ring], [y for _, y in ring]
    return SceneRef(
        collection="s2",
        item_id=f"item-{i:04d}",
        datetime=when,
        bbox_lonlat=(min(xs), min(ys), max(xs), max(ys)),
        geometry={"type": "Polygon", "coordinates": [[list(p) for p in [*ring, ring[0]]]]},
        assets={},
        cloud_cover=cc,
    )


def _static(scenes: list[SceneRef]) -> StaticCatalog:
    """A StaticCatalog over ``scenes`` (its own search: the reference a cell search gives)."""
    cat = object.__new__(StaticCatalog)
    cat.url = "memory"
    cat._items = {"s2": sorted(scenes, key=lambda s: (s.datetime, s.item_id))}
    cat.item_hrefs = {}
    return cat


class Counting:
    def __init__(self, inner: Any, truncate_above: int | None = None) -> None:
        self.inner = inner
        self.calls: list[tuple[float, ...]] = []
        self.truncated = 0
        self.truncate_above = truncate_above

    def search(self, collections: Any, bbox: Any, window: Any, **kw: Any) -> list[SceneRef]:
        self.calls.append(tuple(bbox))
        found: list[SceneRef] = self.inner.search(collections, bbox, window, **kw)
        if self.truncate_above is not None and len(found) > self.truncate_above:
            self.truncated += 1  # as StacApiCatalog does at catalog.max_items
            return found[: self.truncate_above]
        return found


@pytest.fixture(scope="module")
def grid() -> tuple[Any, list[TileJob], list[SceneRef]]:
    """Cells of a few blocks across the 31/32 zone line, and small random footprints around
    them, many with a vertex or an edge exactly on a cell's box."""
    cfg = parse_config(minimal_config(aoi={"bbox": [5.90, 45.00, 6.10, 45.09]}))
    jobs = [j for b in iter_blocks(cfg, 8) for j in expand_block(cfg, b)]
    rng = random.Random(7)
    scenes = []
    x0 = min(j.bbox_lonlat[0] for j in jobs) - 0.02
    x1 = max(j.bbox_lonlat[2] for j in jobs) + 0.02
    y0 = min(j.bbox_lonlat[1] for j in jobs) - 0.02
    y1 = max(j.bbox_lonlat[3] for j in jobs) + 0.02
    for i in range(400):
        if i % 3 == 0:  # a triangle whose vertex is a cell's corner, or on its edge
            b = rng.choice(jobs).bbox_lonlat
            cx, cy = rng.choice([(b[0], b[1]), (b[2], b[3]), (b[0], (b[1] + b[3]) / 2)])
        else:
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        dx, dy = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)
        ring = [(cx, cy), (cx + dx, cy), (cx, cy + dy)] if dx and dy else [(cx, cy)] * 3
        when = rng.choice([T0[0], T1[0]]).replace(day=rng.randint(1, 28))
        scenes.append(_scene(i, ring, when, rng.uniform(0, 100)))
    return cfg, jobs, scenes


@pytest.mark.parametrize("bc", [2, 8])
def test_each_cell_gets_exactly_its_own_search(grid: Any, bc: int) -> None:
    _, jobs, scenes = grid
    static = _static(scenes)
    counting = Counting(static)
    blocks = BlockSearch(counting, bc)
    keys = [(T0, None), (T1, 40.0), ((T0[0], T1[1]), None)]
    touched = 0
    for job in jobs:
        view = blocks.for_cell(job)
        for window, cc in keys:
            want = static.search(["s2"], job.bbox_lonlat, window, max_cloud_cover=cc)
            got = view.search(["s2"], job.bbox_lonlat, window, max_cloud_cover=cc)
            assert [s.item_id for s in got] == [s.item_id for s in want], job.cell_id
            touched += len(want)
    assert touched > 100  # the footprints do meet the cells
    squares = {
        (c.zone, c.col // bc, c.row // bc) for c in map(parse_cell_id, (j.cell_id for j in jobs))
    }
    assert len(counting.calls) == len(squares) * len(keys)  # one search per block and key
    assert blocks.per_cell == 0


def test_the_block_box_holds_every_cell_box(grid: Any) -> None:
    _, jobs, _ = grid
    for job in jobs:
        c = parse_cell_id(job.cell_id)
        b = block_bbox(c.zone, c.north, c.size_m, 8, c.col // 8, c.row // 8)
        x0, y0, x1, y1 = job.bbox_lonlat
        assert b[0] <= x0 and b[1] <= y0 and x1 <= b[2] and y1 <= b[3]


def test_a_truncated_block_search_falls_back_to_a_search_per_cell(
    grid: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, jobs, scenes = grid
    static = _static(scenes)
    counting = Counting(static, truncate_above=60)  # block searches find more: truncated
    blocks = BlockSearch(counting, 8)
    with caplog.at_level(logging.WARNING):
        for job in jobs:
            got = blocks.for_cell(job).search(["s2"], job.bbox_lonlat, T0)
            want = static.search(["s2"], job.bbox_lonlat, T0)
            assert [s.item_id for s in got] == [s.item_id for s in want]
    assert blocks.per_cell == len(jobs)
    assert "truncated" in caplog.text and "one by one" in caplog.text


def test_another_box_passes_through(grid: Any) -> None:
    _, jobs, scenes = grid
    counting = Counting(_static(scenes))
    view = BlockSearch(counting, 8).for_cell(jobs[0])
    box = (5.0, 44.0, 7.0, 46.0)
    assert view.search(["s2"], box, T0) == _static(scenes).search(["s2"], box, T0)
    assert counting.calls == [box]
    assert view.truncated == 0  # anything else is the catalog's own


def test_worker_searches_per_block_unless_block_cells_is_1(tmp_path: Path) -> None:
    from geodelta.pipelines.stages.worker import Worker

    one = parse_config(minimal_config(runner={"block_cells": 1}))
    assert Worker(one, code_version="0").block_search is None
    eight = Worker(parse_config(minimal_config()), code_version="0")
    eight.__dict__["catalog"] = "the catalog"
    assert eight.block_search.block_cells == 8 and eight.block_search.inner == "the catalog"
