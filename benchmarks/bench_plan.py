"""Streaming plan: count_cells, the engines' blocks and the GeoParquet writer on a ~50 k and a
~5 M cell AOI.

Each size runs in a fresh subprocess so its peak RSS (resource.getrusage ru_maxrss) is its own.
Prints the RESULTS.md section; ``--write`` also appends it to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_plan.py            # both sizes, prints the section
    .venv/bin/python benchmarks/bench_plan.py --write    # ... and appends it to RESULTS.md
    .venv/bin/python benchmarks/bench_plan.py --small    # 50 k only
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AOIS = {"50k": [5.0, 45.0, 9.0, 47.5], "5M": [-10.0, 36.0, 30.0, 60.0]}


def _one(bbox: list[float]) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from geodelta.pipelines import api
    from geodelta.pipelines.stages.blocks import iter_blocks
    from geodelta.schemas import parse_config
    from tests.conftest import minimal_config

    cfg = parse_config(minimal_config(aoi={"bbox": bbox}))
    t = time.perf_counter()
    count = api.plan_count(cfg)
    t_count = time.perf_counter() - t
    t = time.perf_counter()
    blocks = cells = 0
    for b in iter_blocks(cfg):  # what a build's driver enumerates (runner.block_cells = 8)
        blocks += 1
        cells += b.cells
    t_blocks = time.perf_counter() - t
    assert cells == count.total
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        n = api.write_plan(cfg, Path(d) / "cells.parquet")
        t_write = time.perf_counter() - t
    assert n == count.total
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "cells": n,
        "count_s": t_count,
        "blocks": blocks,
        "blocks_s": t_blocks,
        "write_s": t_write,
        "rate": n / t_write,
        "rss_mb": rss,
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(_one(json.loads(sys.argv[2]))))
        return
    sizes = ["50k"] if "--small" in sys.argv else ["50k", "5M"]
    rows = {}
    for name in sizes:
        p = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(AOIS[name])],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        rows[name] = json.loads(p.stdout.strip().splitlines()[-1])
        print(name, rows[name], flush=True)
    if "--small" in sys.argv:
        return
    big, small = rows["5M"], rows["50k"]
    lines = [
        "",
        "## Streaming plan (bench_plan.py)",
        "",
        "`.venv/bin/python benchmarks/bench_plan.py` (2 cores; 1,280 m cells, keep=within; each size in",
        "its own process, peak RSS = ru_maxrss)",
        "",
        "| AOI | cells | count_cells s | blocks (8x8) | iter_blocks s | write_plan s "
        "| cells/s written | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in sizes:
        r = rows[name]
        lines.append(
            f"| {name} {AOIS[name]} | {r['cells']:,} | {r['count_s']:.2f} | {r['blocks']:,} "
            f"| {r['blocks_s']:.2f} | {r['write_s']:.2f} | {r['rate']:,.0f} | {r['rss_mb']:.0f} |"
        )
    ok = lambda c: "met" if c else "NOT met"  # noqa: E731
    lines += [
        "",
        f"- count 5 M < 5 s: {ok(big['count_s'] < 5)} ({big['count_s']:.2f} s)",
        f"- stream >= 200 k cells/s under 300 MB: {ok(big['rate'] >= 200_000 and big['rss_mb'] < 300)}"
        f" ({big['rate']:,.0f} cells/s, {big['rss_mb']:.0f} MB)",
        f"- memory flat 50 k -> 5 M: {ok(big['rss_mb'] < 1.5 * small['rss_mb'])}"
        f" ({small['rss_mb']:.0f} -> {big['rss_mb']:.0f} MB)",
        "",
    ]
    print("\n".join(lines))
    if "--write" in sys.argv:
        with (ROOT / "benchmarks" / "RESULTS.md").open("a") as f:
            f.write("\n".join(lines))


if __name__ == "__main__":
    main()
