"""The in-process runner with the stages' BLAS on one thread against BLAS's default threads.

Builds the SYNTHETIC demo catalog at ``--scale`` with the in-process runner, ``--repeat`` times
each way, alternated, each build in a fresh process:

* ``one thread``: as geodelta runs (``pipelines/stages/threads.py``: no thread variable set,
  the stages limit BLAS to one thread);
* ``BLAS default``: ``OPENBLAS_NUM_THREADS`` set to the machine's core count (a user's choice,
  which geodelta keeps): what every build did before the limit.

Prints wall, user and system CPU seconds per build (medians), and checks that both ways
write the same shards, byte for byte. Writes nothing else (figures go to RESULTS.md by hand,
with this command).

    .venv/bin/python benchmarks/bench_blas_threads.py --scale 1 --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from geodelta.pipelines.api import build
from pathlib import Path
from geodelta.sources.demo.catalog import DemoCatalog
from tests.factories import demo_config
root = Path({catalog!r})
cat = DemoCatalog(root, root / "catalog.json", tuple({aoi!r}), root / "truth")
cfg = demo_config(cat, {out!r}, runner={{"name": "inprocess"}})
t = time.perf_counter()
r = build(cfg, progress=False)
wall = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"wall": wall, "user": u.ru_utime, "sys": u.ru_stime, "release": str(r.release_dir)}}))
"""


def _shards(release: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((release / "shards").glob("*.tar"))
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="demo catalog scale")
    parser.add_argument("--repeat", type=int, default=3, help="builds each way")
    parser.add_argument("--work", type=Path, default=None, help="folder to build in (default tmp)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from geodelta.sources.demo.catalog import write_demo_catalog

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-blas-"))
    cat = write_demo_catalog(work / "catalog", seed=0, scale=args.scale)
    cores = os.cpu_count() or 1
    ways = {"one thread": {}, "BLAS default": {"OPENBLAS_NUM_THREADS": str(cores)}}
    runs: dict[str, list[dict[str, float]]] = {w: [] for w in ways}
    shards: dict[str, dict[str, str]] = {}
    load_before = os.getloadavg()[0]
    for i in range(args.repeat):
        for way, extra in ways.items():
            env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS",)}
            env.pop("OMP_NUM_THREADS", None)
            env.pop("MKL_NUM_THREADS", None)
            env.update(extra)
            out = work / f"{way.replace(' ', '-')}-{i}"
            code = _CHILD.format(
                root=str(ROOT), catalog=str(cat.root), aoi=list(cat.aoi_bbox), out=str(out)
            )
            done = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            runs[way].append(row)
            shards[way] = _shards(Path(row["release"]))
            print(
                f"{way:<13} run {i}: wall {row['wall']:.2f} s, user {row['user']:.2f} s, "
                f"sys {row['sys']:.2f} s",
                flush=True,
            )
    assert shards["one thread"] == shards["BLAS default"], "the shards differ"
    print(
        f"demo scale {args.scale}, in-process, {cores} cores, {args.repeat} builds each way "
        f"(alternated); load average (1 min) {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after"
    )
    print("| BLAS threads in the stages | wall s | user CPU s | system CPU s |")
    print("|---|---:|---:|---:|")
    for way, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("wall", "user", "sys")}
        label = "one (geodelta)" if way == "one thread" else f"{cores} (OpenBLAS default)"
        print(f"| {label} | {med['wall']:.2f} | {med['user']:.2f} | {med['sys']:.2f} |")
    print(f"shards identical both ways: {len(shards['one thread'])} shards")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
