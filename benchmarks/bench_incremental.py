"""An incremental version against a full build: the demo AOI grown by ~10 % (issue 14).

Writes the SYNTHETIC demo catalog at ``--scale``, builds the previous version over the AOI
without its west side (cut so that the whole AOI plans about ``--grow`` more cells), then builds
the whole AOI twice into fresh folders: from scratch, and with ``--from`` the previous version
(same config, so the same bytes are due). Checks that the two give the same shards, file for
file, and the same quarantine table, row for row (the records ``--from`` carried over are those
processing the cells writes), and that every reused sample's members equal the previous
release's (``json`` included); prints the wall time per stage of both, the ratio, and the
machine's load (1-minute load average before and after, cores). Writes nothing else (the
lead copies the figures into RESULTS.md with this command).

    .venv/bin/python benchmarks/bench_incremental.py                 # scale 1: 75 cells
    .venv/bin/python benchmarks/bench_incremental.py --scale 0.5 --no-gx
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _members(release: Path) -> dict[str, dict[str, bytes]]:
    from geodelta.pipelines.release.layout import iter_tar_samples, shard_files

    return {k: m for shard in shard_files(release) for k, m in iter_tar_samples(shard)}


def _check(prev: Path, full: Path, inc: Path) -> str:
    """The identity checks; raises AssertionError on a difference."""
    from geodelta.pipelines.release.layout import QUARANTINE_TABLE, read_table, shard_files

    a, b = shard_files(full), shard_files(inc)
    assert [p.name for p in a] == [p.name for p in b], "shard names differ"
    for x, y in zip(a, b, strict=True):
        assert x.read_bytes() == y.read_bytes(), f"{y.name} differs from the full build's"
    rows = [read_table(r, QUARANTINE_TABLE).to_pylist() for r in (full, inc)]
    assert rows[0] == rows[1], f"{QUARANTINE_TABLE} rows differ from the full build's"
    old, new = _members(prev), _members(inc)
    for key, members in old.items():
        assert new.get(key) == members, f"{key} differs from the previous release's"
    return (
        f"{len(a)} shards identical to the full build's; {len(rows[0])} quarantine rows equal; "
        f"{len(old)} previous samples equal"
    )


_FRESH = """
import json, sys, time, types
t = time.perf_counter()
sys.path.insert(0, {root!r})
from geodelta.pipelines.api import build
from geodelta.pipelines.release.sidecar import Sidecar
from tests.factories import demo_config
spec = json.loads({spec!r})
if spec["no_sidecar"]:
    Sidecar.MIN_CELLS = 10**9
cat = types.SimpleNamespace(**spec["cat"])  # what demo_config reads of a DemoCatalog
kw = {{"from_release": spec["from"]}} if spec["from"] else {{}}
res = build(demo_config(cat, spec["out"], **spec["extra"], series=spec["series"]), progress=False, **kw)
stages = {{k: round(v, 2) for k, v in res.stage_seconds.items()}}
print(json.dumps({{"wall": time.perf_counter() - t, "stages": stages}}))
"""


def _fresh(
    cat: Any, out: Path, extra: dict[str, Any], series: bool, kw: dict[str, Any], no_sidecar: bool
) -> Any:
    """One build in a fresh interpreter (wall time from its first line: imports included)."""
    import subprocess

    spec = {
        "cat": {"catalog_path": str(cat.catalog_path), "aoi_bbox": list(cat.aoi_bbox)},
        "out": str(out),
        "extra": extra,
        "series": series,
        "from": str(kw["from_release"]) if kw else None,
        "no_sidecar": no_sidecar,
    }
    code = _FRESH.format(root=str(ROOT), spec=json.dumps(spec))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="demo catalog scale")
    parser.add_argument("--grow", type=float, default=0.10, help="share of cells added")
    parser.add_argument("--runner", default="inprocess", help="runner.name of the builds")
    parser.add_argument("--no-gx", action="store_true", help="validation.great_expectations off")
    parser.add_argument(
        "--no-sidecar",
        action="store_true",
        help="no build starts its sidecar process (pipelines/release/sidecar.py): GX and the "
        "report's figures in the build's process, as before session 14",
    )
    parser.add_argument("--work", type=Path, default=None, help="folder to build in (default tmp)")
    parser.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help="a demo catalog this benchmark wrote before with the same --scale and --series "
        "(seed 0: the same files; writing one at scale 4 takes ~5 min); default: write one",
    )
    parser.add_argument(
        "--series",
        action="store_true",
        help="the series demo catalog and configs/demo-series.yaml (sequences of 5 dates)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="also time the full and --from builds each in a fresh process (as from the command "
        "line: imports and Great Expectations' first run included), into other folders",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from geodelta.pipelines.api import build
    from geodelta.pipelines.release.sidecar import Sidecar

    if args.no_sidecar:
        Sidecar.MIN_CELLS = 10**9
    from geodelta.sources.demo.catalog import write_demo_catalog
    from tests.factories import demo_config

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    load_before = os.getloadavg()[0]
    if args.catalog is None:
        cat = write_demo_catalog(work / "catalog", seed=0, scale=args.scale, series=args.series)
    else:  # the AOI is the one write_demo_catalog uses at that scale
        from geodelta.sources.demo.catalog import DemoCatalog
        from geodelta.sources.demo.world import scaled_aoi

        root = args.catalog.resolve()
        if not (root / "catalog.json").is_file():
            parser.error(f"--catalog {root}: no catalog.json there; leave --catalog out")
        cat = DemoCatalog(root, root / "catalog.json", scaled_aoi(args.scale), root / "truth")
    x0, y0, x1, y1 = cat.aoi_bbox
    small = [x0 + args.grow / (1 + args.grow) * (x1 - x0), y0, x1, y1]
    extra: dict[str, Any] = {"runner": {"name": args.runner}}
    if args.no_gx:
        extra["validation"] = {"great_expectations": False}

    def run(name: str, **kw: Any) -> Any:
        aoi = {"aoi": {"bbox": small}} if name == "previous" else {}
        cfg = demo_config(cat, work / name, **aoi, **extra, series=args.series)
        t = time.perf_counter()
        result = build(cfg, progress=False, **kw)
        return result, time.perf_counter() - t

    prev, _ = run("previous")
    full, t_full = run("full")
    inc, t_inc = run("incremental", from_release=prev.release_dir)
    checked = _check(prev.release_dir, full.release_dir, inc.release_dir)
    fresh = {}
    if args.fresh:  # the same two builds, each in a process of its own
        for name, kw in (("full", {}), ("incremental", {"from_release": prev.release_dir})):
            out = work / f"fresh-{name}"
            fresh[name] = _fresh(cat, out, extra, args.series, kw, args.no_sidecar)
    load_after = os.getloadavg()[0]
    counts = inc.incremental
    kind = "series demo" if args.series else "demo"
    print(f"{kind} scale {args.scale}: previous {prev.cells} cells, grown {full.cells} cells")
    print(
        f"--from counts: reused {counts['reused']}, new {counts['new']}, changed "
        f"{counts['changed']} (retried {counts['retried']}), carried {counts['carried']}, "
        f"removed {counts['removed']}"
    )
    print(f"check: {checked}")
    stages = sorted(set(full.stage_seconds) | set(inc.stage_seconds))
    print(f"{'stage':<10} {'full s':>8} {'--from s':>9}")
    for s in stages:
        print(f"{s:<10} {full.stage_seconds.get(s, 0):>8.2f} {inc.stage_seconds.get(s, 0):>9.2f}")
    print(f"{'total':<10} {t_full:>8.2f} {t_inc:>9.2f}   --from / full = {t_inc / t_full:.1%}")
    cells_full = sum(full.stage_seconds.get(s, 0) for s in ("plan", "process"))
    cells_inc = sum(inc.stage_seconds.get(s, 0) for s in ("reuse", "plan", "process"))
    print(f"cell work (reuse+plan+process): --from / full = {cells_inc / cells_full:.1%}")
    if fresh:
        f, i = fresh["full"], fresh["incremental"]
        print(
            f"fresh processes: full {f['wall']:.2f} s {f['stages']}, --from {i['wall']:.2f} s "
            f"{i['stages']}: --from / full = {i['wall'] / f['wall']:.1%}"
        )
    print(
        f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after; "
        f"{os.cpu_count()} cores; runner {args.runner}; GX {'off' if args.no_gx else 'on'}"
        f"; sidecar {'off' if args.no_sidecar else 'on'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
