"""Co-registration on real OSCD pairs: the cell's own window vs the neighbourhood check.

    .venv/bin/python benchmarks/bench_coregister_oscd.py                      # 11 cities
    .venv/bin/python benchmarks/bench_coregister_oscd.py --cities beirut,mumbai --results X.md

For every OSCD city of ``../shared/data/oscd`` (PROVENANCE.md section 2; each date read with its
own transform, as the pipeline does), 64-px cells of 10 m are laid on the city's UTM grid inside
its footprint. Each cell goes through the load and coregister
stages' own code, twice on the same pixels:

* **cell only** (``coregistration.margin_px: 0``, the behaviour before the neighbourhood check):
  phase correlation on the cell's 64-px window, checked against itself;
* **neighbourhood** (the defaults: ``margin_px: 64``): the cell's estimate checked against the
  consensus of 9 tie points (3 x 3 windows of 64 px) over the cell plus 64 px per side, corrected with the consensus
  or quarantined ('inconsistent').

The reference is one estimate over a 384-px window around the cell (``estimate_shift``; the
part beyond the scene is no data). Figures:
samples shipped, quarantined (per reason), shipped more than 0.5 px from the reference, the
largest distance, and the coregister stage's CPU time per cell (plus the context read's). Runs
single-threaded (one process, one core). Figures go to ``--results`` (between markers) and to
``<out>/bench_coregister_oscd.json``.
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before numpy is imported: one process = one core

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OSCD = REPO.parent / "shared" / "data" / "oscd"
CITIES = (
    "abudhabi",
    "aguasclaras",
    "beihai",
    "beirut",
    "bercy",
    "bordeaux",
    "cupertino",
    "mumbai",
    "paris",
    "pisa",
    "saclay_e",
)
CELL = 64
REF_MARGIN = 160  # 64 + 2 * 160 = 384 px reference window
START, END = "<!-- bench_coregister:start -->", "<!-- bench_coregister:end -->"
DEFAULT_OUT = REPO / "build" / "bench"


def _band(city: str, date: int, band: str) -> Path:
    (path,) = (OSCD / city / f"imgs_{date}").glob(f"*_{band}.tif")
    return path


def _jobs(city: str) -> list[Any]:
    """64-px 10 m cells on the city's UTM grid, inside its footprint."""
    import rasterio
    from pyproj import Transformer

    from geodelta.schemas import TileJob

    with rasterio.open(_band(city, 1, "B02")) as ref:
        left, bottom, right, top = ref.bounds
    lon, lat = (left + right) / 2, (top + bottom) / 2
    epsg = (32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1
    fwd = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    xs, ys = fwd.transform([left, right, left, right], [bottom, bottom, top, top])
    pad = 20.0  # cells wholly inside the scene; the reference window may reach beyond it
    x0, x1 = max(xs[0], xs[2]) + pad, min(xs[1], xs[3]) - pad
    y0, y1 = max(ys[0], ys[1]) + pad, min(ys[2], ys[3]) - pad
    size = CELL * 10.0
    jobs = []
    t = datetime(2000, 1, 1, tzinfo=UTC)
    for row in range(int((y1 - y0) // size)):
        for col in range(int((x1 - x0) // size)):
            cx, cy = math.floor(x0 / size) * size + (col + 1) * size, y1 - row * size
            jobs.append(
                TileJob(
                    cell_id=f"{city}-{row:02d}-{col:02d}",
                    crs=f"EPSG:{epsg}",
                    transform=(10.0, 0.0, cx, 0.0, -10.0, cy),
                    shape=(CELL, CELL),
                    bbox_lonlat=(left, bottom, right, top),
                    t0_window=(t, t),
                    t1_window=(t, t),
                )
            )
    return jobs


def _pair(city: str, job: Any, band: str) -> Any:
    from geodelta.schemas import AssetRef, ScenePair, SceneRef

    def scene(date: int) -> SceneRef:
        return SceneRef(
            collection="oscd",
            item_id=f"{city}-{date}",
            datetime=datetime(2015 + date, 1, 1, tzinfo=UTC),
            bbox_lonlat=job.bbox_lonlat,
            assets={band: AssetRef(href=str(_band(city, date, band)), scale=0.0001)},
        )

    return ScenePair(job=job, before=scene(1), after=scene(2), before_clear=1.0, after_clear=1.0)


def run_city(city: str, band: str) -> dict[str, Any]:
    from geodelta.pipelines.stages.coregister import coregister, estimate_shift
    from geodelta.pipelines.stages.load import context_job
    from geodelta.pipelines.stages.sample import Sample
    from geodelta.schemas import QuarantineRecord
    from geodelta.schemas.config import CoregConfig
    from geodelta.sources.raster import read_bands

    configs = {"cell_only": CoregConfig(margin_px=0), "neighbourhood": CoregConfig()}
    out: dict[str, Any] = {
        name: {"shipped": 0, "off": 0, "worst": 0.0, "reasons": Counter(), "cpu_s": 0.0}
        for name in configs
    }
    out["cells"] = 0
    out["context_read_s"] = 0.0
    for job in _jobs(city):
        pair = _pair(city, job, band)
        before = read_bands(pair.before, [band], job)
        after = read_bands(pair.after, [band], job)
        wide = context_job(job, REF_MARGIN)
        ref_before = read_bands(pair.before, [band], wide)[0]
        ref_after = read_bands(pair.after, [band], wide)[0]
        if not (np.isfinite(before).all() and np.isfinite(after).all()):
            continue
        (ry, rx), _ = estimate_shift(ref_before, ref_after)
        out["cells"] += 1
        t0 = time.process_time()
        ctx_job = context_job(job, configs["neighbourhood"].margin_px)
        context = (
            read_bands(pair.before, [band], ctx_job)[0],
            read_bands(pair.after, [band], ctx_job)[0],
        )
        out["context_read_s"] += time.process_time() - t0
        for name, cfg in configs.items():
            sample = Sample(
                pair=pair,
                before=before,
                after=after,
                coreg_context=context if cfg.margin_px else None,
            )
            t0 = time.process_time()
            got = coregister(sample, cfg, band_index=0)
            stats = out[name]
            stats["cpu_s"] += time.process_time() - t0
            if isinstance(got, QuarantineRecord):
                stats["reasons"][got.reason] += 1
                continue
            assert got.coreg is not None
            dy, dx = got.coreg.shift_px
            off = math.hypot(dy - ry, dx - rx)
            stats["shipped"] += 1
            stats["off"] += off > 0.5
            stats["worst"] = max(stats["worst"], off)
    for name in configs:
        out[name]["reasons"] = dict(out[name]["reasons"])
    return out


def _table(per_city: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| city | cells | cell only: shipped / > 0.5 px / worst | neighbourhood: shipped / "
        "> 0.5 px / worst | neighbourhood: quarantined (reason) |",
        "| --- | ---: | --- | --- | --- |",
    ]
    total: dict[str, Counter[str]] = {"cell_only": Counter(), "neighbourhood": Counter()}
    worst = {"cell_only": 0.0, "neighbourhood": 0.0}
    cells = 0
    for city, r in per_city.items():
        cells += r["cells"]
        cols = []
        for name in ("cell_only", "neighbourhood"):
            s = r[name]
            total[name].update({"shipped": s["shipped"], "off": s["off"]})
            worst[name] = max(worst[name], s["worst"])
            cols.append(f"{s['shipped']} / {s['off']} / {s['worst']:.2f} px")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["neighbourhood"]["reasons"].items()))
        lines.append(f"| {city} | {r['cells']} | {cols[0]} | {cols[1]} | {reasons or '-'} |")
    c, n = total["cell_only"], total["neighbourhood"]
    lines.append(
        f"| **all** | **{cells}** | **{c['shipped']} / {c['off']} / {worst['cell_only']:.2f} "
        f"px** | **{n['shipped']} / {n['off']} / {worst['neighbourhood']:.2f} px** | |"
    )
    return lines


def write_results(path: Path, report: dict[str, Any]) -> None:
    cpu = report["cpu_ms_per_cell"]
    block = [
        START,
        "## Co-registration on real OSCD pairs: cell only vs neighbourhood check",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}, one core. {report['total_s']:.0f} s in all.",
        "",
        "64-px cells of 10 m on each city's UTM grid (B08, each date read with its own "
        "transform, as the load stage does); reference: one estimate over 384 px around the "
        "cell. 'Cell only' = `coregistration.margin_px: 0` (the cell's own window, the "
        "behaviour before the check); 'neighbourhood' = the defaults "
        f"({report['defaults']}).",
        "",
        *_table(report["cities"]),
        "",
        f"CPU per cell (coregister stage, this process): cell only {cpu['cell_only']:.1f} ms, "
        f"neighbourhood {cpu['neighbourhood']:.1f} ms, plus {cpu['context_read']:.1f} ms to "
        "read the context (2 single-band warped reads of 192 px).",
        END,
    ]
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + "\n".join(block) + rest.split(END, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text else "") + "\n".join(block) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cities", default=",".join(CITIES), help="comma-separated OSCD cities")
    parser.add_argument("--band", default="B08", help="registration band")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--results", type=Path, default=DEFAULT_OUT / "coregister_oscd.md", help="markdown file"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    per_city: dict[str, dict[str, Any]] = {}
    for city in args.cities.split(","):
        per_city[city] = run_city(city, args.band)
        print(city, json.dumps(per_city[city]), flush=True)
    cells = max(1, sum(r["cells"] for r in per_city.values()))
    from geodelta.schemas.config import CoregConfig

    keys = ("margin_px", "tie_window_px", "consistency_tolerance_px", "tie_agreement_px")
    defaults = CoregConfig()
    report = {
        "defaults": ", ".join(f"`{k}` {getattr(defaults, k)}" for k in (*keys, "min_tie_points")),
        "command": "python " + " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "total_s": time.perf_counter() - started,
        "cities": per_city,
        "cpu_ms_per_cell": {
            "cell_only": 1000 * sum(r["cell_only"]["cpu_s"] for r in per_city.values()) / cells,
            "neighbourhood": 1000
            * sum(r["neighbourhood"]["cpu_s"] for r in per_city.values())
            / cells,
            "context_read": 1000 * sum(r["context_read_s"] for r in per_city.values()) / cells,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_coregister_oscd.json").write_text(json.dumps(report, indent=1))
    write_results(args.results, report)
    print("\n".join(_table(per_city)))
    print(report["cpu_ms_per_cell"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
