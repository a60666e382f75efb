"""Shards laid out by place (pipelines/release/shards.py): samples in place order, each shard
ending where a hash of a sample's key says (or at a cap), so samples added in one place leave
the shards of every other place byte-identical."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from geodelta.pipelines.release.shards import (
    PLACE_CELLS,
    ends_shard,
    place_order,
    write_shards,
)
from geodelta.pipelines.stages.plan import format_cell_id
from tests.factories import make_config


class _Staged:
    """A staging area's reading side over a dict (write_shards reads nothing else)."""

    def __init__(self, samples: dict[str, dict[str, bytes]]) -> None:
        self.samples = samples

    def iter_members(self, keys: Iterable[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
        for key in keys:
            yield key, self.samples[key]


def _key(col: int, row: int) -> str:
    return f"{format_cell_id(31, True, 1280, col, row)}_20200101_20210101"


def _members(key: str) -> dict[str, bytes]:
    body = hashlib.sha256(key.encode()).digest() * (1 + len(key) % 7)
    return {"json": key.encode(), "x.bin": body}


def _write(root: Path, keys: list[str], max_samples: int) -> list[tuple[list[str], bytes]]:
    """Write the keys (all in split train) and return each shard's (keys, bytes)."""
    (root / "shards").mkdir(parents=True)
    metas: Any = {k: SimpleNamespace(split="train", key=k) for k in keys}
    cfg = make_config(shards={"max_samples": max_samples, "max_bytes": 1 << 30})
    staged: Any = _Staged({k: _members(k) for k in keys})
    infos, rows = write_shards(
        root, cfg, staged, metas, lambda m, shard, _, __: {"k": m.key, "s": shard}
    )
    out = []
    for info in infos:
        held = [r["k"] for r in rows if r["s"] == info.path]
        assert len(held) == info.samples
        out.append((held, (root / info.path).read_bytes()))
    return out


def test_place_order_groups_squares_column_by_column_then_keys() -> None:
    keys = [_key(c, r) for c in (0, 5, 16, 40) for r in (0, 17, 3)]
    ordered = sorted(keys, key=place_order)
    squares = [(place_order(k)[2], place_order(k)[3]) for k in ordered]
    assert squares == sorted(squares)  # square by square, column-major
    assert ordered[:4] == sorted(
        k
        for k in keys
        if int(k.split("-")[2]) < PLACE_CELLS and int(k.split("-")[3][:4]) < PLACE_CELLS
    )
    assert place_order("not-a-cell_20200101_20210101")[0] == 1  # after every grid cell


def test_ends_shard_is_a_function_of_the_key_at_the_asked_rate() -> None:
    keys = [_key(c, r) for c in range(100) for r in range(100)]
    ends = [k for k in keys if ends_shard(k, 16)]
    assert 0.05 < len(ends) / len(keys) < 0.075  # one in 16 (0.0625)
    quarter = [k for k in keys if ends_shard(k, 4)]
    assert 0.23 < len(quarter) / len(keys) < 0.27  # one in 4
    # not a function of place: the ends fall in every 10-column band of the grid about alike
    bands = [sum(int(k.split("-")[2]) // 10 == b for k in ends) for b in range(10)]
    assert min(bands) > 0.6 * len(ends) / 10
    assert all(ends_shard(k, 1) for k in keys[:10])


def test_samples_added_in_another_place_leave_the_other_shards_byte_identical(
    tmp_path: Path,
) -> None:
    old = [_key(c, r) for c in range(16, 48) for r in range(0, 16)]  # two squares
    west = [_key(c, r) for c in range(0, 16) for r in range(0, 16)]  # a new square, before
    before = _write(tmp_path / "a", old, max_samples=8)
    after = _write(tmp_path / "b", old + west, max_samples=8)
    assert sum(len(k) for k, _ in after) == len(old) + len(west)
    assert all(1 <= len(k) <= 8 for k, _ in before + after)
    files = {data for _, data in after}
    ordered = sorted(old, key=place_order)
    kept = 0
    for held, data in before:
        at = ordered.index(held[0])
        if at > 0 and ends_shard(ordered[at - 1], 4):  # starts where a key ended a shard
            assert data in files, held[0]
            kept += 1
    assert kept >= len(before) // 2  # most shards start after a key's end, not a cap
    # the west square comes first
    assert after[0][0][0] == sorted(west, key=place_order)[0]


def test_the_layout_is_the_same_whatever_order_the_samples_come_in(tmp_path: Path) -> None:
    keys = [_key(c, r) for c in range(0, 40, 3) for r in range(0, 40, 2)]
    a = _write(tmp_path / "a", keys, max_samples=6)
    b = _write(tmp_path / "b", list(reversed(keys)), max_samples=6)
    assert a == b
    assert max(len(k) for k, _ in a) == 6  # the cap holds, and is reached
