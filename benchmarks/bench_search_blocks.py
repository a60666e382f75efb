"""STAC searches per 1,000 cells: one search per cell (runner.block_cells=1) vs one per block.

Runs the pair stage's search and pairing (no pixel reads: scenes rated by their scene-wide
cloud cover, as ``geodelta search --dry-run`` does) over every planned cell of the SYNTHETIC
demo catalog, through the worker's block search
(:mod:`geodelta.pipelines.stages.block_search`), and counts the searches the catalog answers.
Asserts the chosen pairs and quarantine reasons are the same at every block size.

    .venv/bin/python benchmarks/bench_search_blocks.py             # demo scale 3, sizes 1 4 8 16
    .venv/bin/python benchmarks/bench_search_blocks.py --scale 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class CountingCatalog:
    """A catalog that counts the searches it answers."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.searches = 0

    def search(self, *args: Any, **kwargs: Any) -> Any:
        self.searches += 1
        return self.inner.search(*args, **kwargs)


def run(scale: float, sizes: list[int]) -> dict[int, dict[str, float]]:
    sys.path.insert(0, str(ROOT))
    from geodelta.pipelines.stages.blocks import expand_block, iter_blocks
    from geodelta.pipelines.stages.pair import search_and_pair
    from geodelta.pipelines.stages.search import scene_clear_estimate
    from geodelta.pipelines.stages.worker import Worker
    from geodelta.schemas import QuarantineRecord
    from geodelta.sources.catalog import StaticCatalog
    from geodelta.sources.demo.catalog import write_demo_catalog
    from geodelta.sources.profiles import apply_defaults
    from tests.factories import demo_config

    rows: dict[int, dict[str, float]] = {}
    outcomes: dict[int, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as d:
        cat = write_demo_catalog(Path(d) / "catalog", seed=0, scale=scale)
        static = StaticCatalog(str(cat.catalog_path))
        for bc in sizes:
            cfg = apply_defaults(
                demo_config(cat, Path(d) / "out", runner={"name": "inprocess", "block_cells": bc})
            )
            counting = CountingCatalog(static)
            worker = Worker(cfg, code_version="bench")
            worker.__dict__["catalog"] = counting  # the cached property, pre-filled
            got: dict[str, str] = {}
            blocks = 0
            for block in iter_blocks(cfg):
                blocks += 1
                for job in expand_block(cfg, block):
                    view = worker.block_search.for_cell(job) if worker.block_search else counting
                    out = search_and_pair(job, cfg, view, scene_clear_estimate)
                    got[job.cell_id] = (
                        f"q:{out.reason}"
                        if isinstance(out, QuarantineRecord)
                        else f"{out.before.item_id}>{out.after.item_id}:"
                        f"{out.label_before.item_id if out.label_before else ''}"
                    )
            cells = len(got)
            outcomes[bc] = got
            rows[bc] = {
                "cells": cells,
                "blocks": blocks,
                "searches": counting.searches,
                "per_1000_cells": 1000 * counting.searches / cells,
            }
            print(bc, json.dumps(rows[bc]), flush=True)
    first = outcomes[sizes[0]]
    for bc in sizes[1:]:
        assert outcomes[bc] == first, f"block_cells={bc} chose other pairs than {sizes[0]}"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=3.0)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    args = ap.parse_args()
    rows = run(args.scale, args.sizes)
    print()
    print("| runner.block_cells | cells | blocks | searches | searches per 1,000 cells |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for bc, r in rows.items():
        print(
            f"| {bc} | {r['cells']:.0f} | {r['blocks']:.0f} | {r['searches']:.0f} "
            f"| {r['per_1000_cells']:,.0f} |"
        )
    print("\nsame pairs and quarantine reasons at every block size: yes")


if __name__ == "__main__":
    main()
