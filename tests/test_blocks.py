"""Plan blocks: the engines' element, expanded into exactly the plan's cells on the worker."""

from __future__ import annotations

import hashlib
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from geodelta.pipelines.stages.blocks import (
    CellBlock,
    expand_block,
    iter_blocks,
    job_of,
    restrict,
    spread,
)
from geodelta.pipelines.stages.plan import count_blocks, parse_cell_id, plan_jobs
from geodelta.schemas import BuildConfig, parse_config
from tests.conftest import minimal_config
from tests.test_plan_stream import CASES, _geojson_aoi


def _cfg(tmp_path: Path, **over: Any) -> BuildConfig:
    return parse_config(minimal_config(**over), base_dir=str(tmp_path))


def _case(tmp_path: Path, case: str) -> BuildConfig:
    over = {"aoi": _geojson_aoi(tmp_path)} if case == "geojson" else CASES[case]
    return _cfg(tmp_path, **over)


@pytest.mark.parametrize("bc", [1, 3, 8])
@pytest.mark.parametrize("case", [*CASES, "geojson"])
def test_blocks_expand_to_exactly_the_plan(tmp_path: Path, case: str, bc: int) -> None:
    cfg = _case(tmp_path, case)
    jobs = plan_jobs(cfg)
    blocks = list(iter_blocks(cfg, bc))
    assert count_blocks(cfg, bc) == len(blocks)
    assert len({b.block_id for b in blocks}) == len(blocks)
    expanded = [expand_block(cfg, b) for b in blocks]
    for block, cells in zip(blocks, expanded, strict=True):
        assert cells and len(cells) == block.cells
        ids = [j.cell_id for j in cells]
        assert ids == sorted(ids)  # cell-id order inside a block
        for j in cells:  # every cell lies in its block's square
            c = parse_cell_id(j.cell_id)
            assert (c.zone, c.north, c.col // bc, c.row // bc) == (
                block.zone,
                block.north,
                block.bcol,
                block.brow,
            )
    got = sorted((j for cells in expanded for j in cells), key=lambda j: j.cell_id)
    assert got == jobs  # same ids, transforms, lon/lat boxes (bit for bit), splits, regions


def test_count_blocks_is_the_distinct_block_squares(tmp_path: Path) -> None:
    cfg = _case(tmp_path, "intersects")
    for bc in (1, 2, 8, 64):
        squares = {
            (c.zone, c.north, c.col // bc, c.row // bc)
            for c in (parse_cell_id(j.cell_id) for j in plan_jobs(cfg))
        }
        assert count_blocks(cfg, bc) == len(squares)
    assert count_blocks(cfg) == count_blocks(cfg, cfg.runner.block_cells)  # default: 8


def test_a_block_shared_by_two_regions_keeps_each_cells_region(tmp_path: Path) -> None:
    cfg = _case(tmp_path, "geojson")
    mixed = [b for b in iter_blocks(cfg, 8) if len(b.regions) > 1]
    assert mixed  # the two features share blocks
    by_id = {j.cell_id: j.region for j in plan_jobs(cfg)}
    for block in mixed:
        assert len(set(block.regions)) == 2
        assert [by_id[j.cell_id] for j in expand_block(cfg, block)] == list(block.regions)


def test_block_is_small_and_picklable(tmp_path: Path) -> None:
    cfg = _case(tmp_path, "utm31_32")
    block = next(iter_blocks(cfg))
    back = pickle.loads(pickle.dumps(block))
    assert back == block and expand_block(cfg, back) == expand_block(cfg, block)
    assert len(pickle.dumps(block)) < 400  # one record per block, never one per cell


def test_restrict_and_spread_keep_every_cell_once(tmp_path: Path) -> None:
    cfg = _case(tmp_path, "intersects")
    blocks = list(iter_blocks(cfg, 8))
    ids = [c for b in blocks for c in b.cell_ids()]
    drop = set(ids[::3])
    kept = [r for b in blocks if (r := restrict(b, lambda c: c not in drop)) is not None]
    assert sorted(c for b in kept for c in b.cell_ids()) == sorted(set(ids) - drop)
    full = next(b for b in blocks if b.cells == 64)
    assert restrict(full, lambda c: True) is full
    assert restrict(full, lambda c: False) is None
    few = [b for b in blocks if b.cells == 64][:2]
    parts = spread(few, 16)
    assert len(parts) == 16 and all(isinstance(p, CellBlock) and p.cells == 8 for p in parts)
    tiny = [b for b in blocks if b.cells < 4][:2]
    assert len(spread(tiny, 16)) == sum(b.cells for b in tiny)  # at most one part per cell
    assert sorted(c for p in parts for c in p.cell_ids()) == sorted(
        c for b in few for c in b.cell_ids()
    )
    assert spread(blocks, 4) == blocks  # enough blocks already: untouched


def test_job_of_is_the_plans_job(tmp_path: Path) -> None:
    cfg = _case(tmp_path, "south_equator")
    for job in plan_jobs(cfg)[::37]:
        assert job_of(cfg, job.cell_id, job.region) == job


def test_todo_blocks_leave_out_done_cells_and_keep_only_wanted(tmp_path: Path) -> None:
    from geodelta.pipelines.build import _check_done, _plan_ids, _todo_blocks

    cfg = _case(tmp_path, "intersects")
    ids = [j.cell_id for j in plan_jobs(cfg)]
    done = set(ids[::2])
    todo, total, _ = _todo_blocks(cfg, done)
    assert total == len(ids)
    assert sorted(c for b in todo for c in b.cell_ids()) == sorted(set(ids) - done)
    wanted = set(ids[5:40])
    todo, total, found = _todo_blocks(cfg, done, wanted)
    assert found == wanted and total == len(wanted)
    assert {c for b in todo for c in b.cell_ids()} == wanted - done
    _, _, found = _todo_blocks(cfg, (), {*ids[:3], "31N-1280-0001-0001", "nonsense"})
    assert found == set(ids[:3])

    class _Staging:
        def done_cells(self) -> set[str]:
            return set(ids[1:])

    from geodelta.pipelines.build import IncompleteBuildError

    with pytest.raises(IncompleteBuildError, match=rf"^1 cells .*\['{ids[0]}'\]"):
        _check_done(_Staging(), _plan_ids(cfg))


def _release_hashes(release: Path) -> dict[str, str]:
    return {
        p.relative_to(release).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(release.rglob("*"))
        if p.is_file() and "report" not in p.relative_to(release).parts
    }


@pytest.mark.slow  # a demo build in process (~8 s) besides the session's demo release
def test_block_size_changes_no_release_byte(
    demo_catalog: Any, demo_release: Any, tmp_path: Path
) -> None:
    """The demo as it ships (Beam, 8 x 8 blocks, one search per block) and built in process
    with one cell, one element and one search per block: the same manifest and shards."""
    from geodelta.pipelines.api import build
    from tests.factories import demo_config

    cfg = demo_config(
        demo_catalog, tmp_path / "release", runner={"name": "inprocess", "block_cells": 1}
    )
    one = build(cfg, mode="fresh", progress=False)
    assert demo_release.manifest.config_hash == one.manifest.config_hash  # runner: not hashed
    a, b = _release_hashes(Path(demo_release.release_dir)), _release_hashes(Path(one.release_dir))
    assert Counter(Path(k).suffix for k in a)[".tar"] >= 1
    assert a == b


@pytest.mark.parametrize("keep", ["within", "intersects"])
def test_a_wide_concave_aoi_plans_the_same_cells_in_every_zone(tmp_path: Path, keep: str) -> None:
    """An AOI across three zones, concave with a hole: each zone's solver sees only its share of
    the boundary (cut in lon/lat), and still keeps exactly plan_jobs' cells."""
    import json

    from geodelta.pipelines.stages.plan import count_cells, iter_cells

    ring = [[3.0, 44.0], [15.0, 44.3], [14.6, 45.6], [11.0, 44.9], [8.0, 45.8], [3.4, 45.2]]
    hole = [[8.0, 44.4], [9.0, 44.4], [8.5, 44.8], [8.0, 44.4]]
    fc = {"type": "Polygon", "coordinates": [[*ring, ring[0]], hole]}
    (tmp_path / "wide.geojson").write_text(json.dumps(fc))
    cfg = _cfg(
        tmp_path,
        aoi={"geojson": "wide.geojson"},
        grid={"keep": keep, "cell_size_px": 1000},  # 10 km cells: plan_jobs stays quick
    )
    jobs = plan_jobs(cfg)
    assert {j.cell_id[:3] for j in jobs} == {"31N", "32N", "33N"}
    assert list(iter_cells(cfg)) == [(j.cell_id, j.split, j.region) for j in jobs]
    assert count_cells(cfg).total == len(jobs)
    got = [j for b in iter_blocks(cfg, 4) for j in expand_block(cfg, b)]
    assert sorted(got, key=lambda j: j.cell_id) == jobs


def test_cell_groups_stream_the_plan_per_region(tmp_path: Path) -> None:
    """The DAG's groups come from the streamed plan: the same ids, per region, in plan order."""
    from geodelta.pipelines.api import cell_groups

    cfg = _case(tmp_path, "geojson")
    by_region: dict[str, list[str]] = {}
    for job in plan_jobs(cfg):
        by_region.setdefault(job.region, []).append(job.cell_id)
    want = [ids[i : i + 7] for _, ids in sorted(by_region.items()) for i in range(0, len(ids), 7)]
    assert len(by_region) == 2 and cell_groups(cfg, 7) == want
