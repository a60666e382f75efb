"""The staging area's commit and read costs: a local folder against an S3-compatible endpoint.

The endpoint is moto's server mode on 127.0.0.1 (tests/s3_server.py), a TEST DOUBLE of S3: its
figures are request counts times moto's cost per request (a Python server, CPU-bound, ~4-5 ms a
request on the 2-core dev machine), not S3's latency or throughput. Prints one table; writes
nothing (the lead copies the figures into RESULTS.md with this command).

    .venv/bin/python benchmarks/bench_staging_store.py            # 100 cells
    .venv/bin/python benchmarks/bench_staging_store.py --cells 300
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: A sample like the demo's: six 40 kB rasters and a 1 kB json (random bytes).
MEMBER_BYTES = 40_000
RASTERS = 6


def _members() -> dict[str, bytes]:
    out = {f"m{i}.tif": os.urandom(MEMBER_BYTES) for i in range(RASTERS)}
    out["json"] = b"{}" * 500
    return out


def _measure(root: str | Path, cells: int) -> dict[str, float]:
    from geodelta.pipelines.release.staging import Staging

    st = Staging(root)
    members = _members()
    t = time.perf_counter()
    for i in range(cells):
        st.put_sample(f"c{i}_a", members)
        st.mark_cell(f"c{i}", keys=[f"c{i}_a"], quarantine=[])
    commit = (time.perf_counter() - t) / cells
    t = time.perf_counter()
    assert len(st.done_cells()) == cells
    listing = time.perf_counter() - t
    keys = [f"c{i}_a" for i in range(cells)]
    t = time.perf_counter()
    for key in keys:
        st.read_members(key)
    read = (time.perf_counter() - t) / cells
    t = time.perf_counter()
    assert sum(1 for _ in st.iter_members(keys)) == cells
    ahead = (time.perf_counter() - t) / cells
    return {
        "commit_ms": commit * 1e3,
        "read_ms": read * 1e3,
        "ahead_ms": ahead * 1e3,
        "list_ms": listing * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.s3_server import run_s3_server

    with tempfile.TemporaryDirectory() as tmp:
        rows = {"local folder": _measure(Path(tmp) / "stg", args.cells)}
        with run_s3_server(Path(tmp)) as server:
            os.environ.update(server.env())
            rows["s3:// (moto, test double)"] = _measure(
                f"s3://{server.new_bucket()}/stg", args.cells
            )
    print(f"{args.cells} cells, one sample each ({RASTERS} x {MEMBER_BYTES // 1000} kB + json)")
    print(
        "| staging | commit ms/cell | read_members ms/sample | iter_members ms/sample "
        "| done_cells ms (all) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['commit_ms']:.1f} | {r['read_ms']:.1f} | {r['ahead_ms']:.1f} "
            f"| {r['list_ms']:.0f} |"
        )


if __name__ == "__main__":
    main()
