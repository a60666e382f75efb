"""Sequence build throughput (issue 15): T = 5 dates per cell vs pairs vs the I/O floor, and the
memory of a worker as T grows.

    .venv/bin/python benchmarks/bench_build.py --series            # or this script directly
    .venv/bin/python benchmarks/bench_build_series.py --scale 0.5 --out /tmp/bs --results /tmp/bs/R.md

On the SYNTHETIC series demo catalog (five summers 2018-2022, ``configs/demo-series.yaml``) and
the pair demo catalog at the same scale (``configs/demo.yaml``), both written once under
``--out`` and not timed, it measures, each build in a fresh process on the in-process runner
(one process = one core = one worker; numeric libraries single-threaded):

* **series T=5**: the sequence build, wall time, samples/s and peak RSS of the process;
* **pairs**: the pair build of the same cells (two dates), the same figures;
* **floor**: in this process, only what any sequence build must do for the same samples: read
  the T dates' bands and the T land-cover maps onto the cell grid (geodelta's own reads,
  datasets reused) and encode the members with geodelta's encoders (the pair members plus
  ``series.tif``, ``step_masks.tif`` and ``first_change.png``);
* **memory vs T**: the series build with T = 3, 4, 5 (windows from 2020, 2019, 2018), peak RSS
  of the worker process; flat in T means no whole-sequence copies per stage.

The figures go to ``--results`` (the "Sequence build throughput" section between markers) and to
``<out>/bench_build_series.json``.
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before numpy is imported: one process = one core

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SERIES_CONFIG = REPO / "configs" / "demo-series.yaml"
PAIR_CONFIG = REPO / "configs" / "demo.yaml"
DEFAULT_OUT = REPO / "build" / "bench-series"
DEFAULT_RESULTS = REPO / "benchmarks" / "RESULTS.md"
START = "<!-- bench_build_series:start -->"
END = "<!-- bench_build_series:end -->"
DEFAULT_SCALE = 1.0
#: First window of the series for T = 3, 4, 5 (one summer a year up to 2022).
T_START = {3: "2020-06-01", 4: "2019-06-01", 5: "2018-06-01"}


#: Co-registration limits for every T (the demo config's, with room for two shifted dates).
SHIFT_LIMITS = {"band": "B08", "upsample_factor": 50, "max_shift_px": 4.5, "max_residual_px": 0.5}


def catalog(out: Path, scale: float, series: bool) -> Any:
    """The demo catalog under ``out`` (written once)."""
    from geodelta.sources.demo.catalog import DemoCatalog, write_demo_catalog
    from geodelta.sources.demo.world import scaled_aoi

    root = out / f"catalog-{'series' if series else 'pair'}-scale{scale:g}"
    if not (root / "catalog.json").is_file():
        write_demo_catalog(root, seed=0, scale=scale, series=series)
    return DemoCatalog(
        root=root,
        catalog_path=root / "catalog.json",
        aoi_bbox=scaled_aoi(scale),
        truth_dir=root / "truth",
    )


def _overrides(cat: Any, release: Path, t: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "catalog": {"url": str(cat.catalog_path)},
        "output": {"dir": str(release)},
        "aoi": {"bbox": list(cat.aoi_bbox)},
        "runner": {"name": "inprocess"},
    }
    if t is not None:
        import yaml

        series = yaml.safe_load(SERIES_CONFIG.read_text())["time"]["series"]
        out["time"] = {"series": {**series, "start": T_START[t], "min_dates": 3}}
        # from 2019 on every date of the demo is shifted (2018 is the unshifted reference): two
        # shifted dates are up to 4.2 px apart, beyond the demo's max_shift_px of 3
        out["coregistration"] = {**SHIFT_LIMITS}
    return out


def _driver(args: dict[str, Any]) -> dict[str, Any]:
    from geodelta.pipelines.api import build
    from geodelta.schemas import load_config

    t = time.perf_counter()
    cfg = load_config(Path(args["config"]), args["overrides"])
    result = build(cfg, mode="overwrite", progress=False)
    return {
        "build_s": time.perf_counter() - t,
        "cells": result.cells,
        "samples": result.samples,
        "stage_seconds": result.stage_seconds,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_build(config: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """One build in a fresh process: its figures and wall time."""
    args = json.dumps({"config": str(config), "overrides": overrides}, default=str)
    cmd = [sys.executable, str(Path(__file__).resolve()), "_build", args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"build failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t
    out["samples_per_s"] = out["samples"] / out["wall_s"]
    return out


def run_floor(release: Path, cat: Any) -> dict[str, Any]:
    """Read and encode what the release's sequence samples hold, nothing else."""
    import numpy as np

    from geodelta.pipelines.release.layout import iter_tar_samples, shard_files
    from geodelta.pipelines.stages.encode import geotiff_bytes, index_png, rgb_png, to_dn
    from geodelta.pipelines.stages.encode_series import index_geotiff_bytes
    from geodelta.pipelines.stages.label import transition_mask
    from geodelta.schemas import SampleMeta, TileJob
    from geodelta.sources.landcover import to_geodelta
    from geodelta.sources.raster import close_cached, read_bands, read_classes
    from geodelta.sources.static import StaticCatalog

    static = StaticCatalog(str(cat.catalog_path))
    scenes = {s.item_id: s for c in static.collections for s in static.scenes(c)}
    work = []
    for _, members in (x for shard in shard_files(release) for x in iter_tar_samples(shard)):
        m = SampleMeta.model_validate_json(members["json"])
        assert m.series is not None
        job = TileJob(
            cell_id=m.cell_id,
            crs=m.crs,
            transform=m.transform,
            shape=m.shape,
            bbox_lonlat=m.bbox_lonlat,
            t0_window=(m.t0, m.t0),
            t1_window=(m.t1, m.t1),
        )
        dates = json.loads(members["dates.json"])
        work.append(
            (job, [scenes[d["item_id"]] for d in dates], [scenes[d["label_item"]] for d in dates])
        )
    bands = ["B02", "B03", "B04", "B08"]
    rgb = (2, 1, 0)
    close_cached()
    size = 0
    t, cpu = time.perf_counter(), time.process_time()
    for job, imgs, lcs in work:
        stack = np.stack([read_bands(s, bands, job) for s in imgs])
        raw = [read_classes(s.assets["map"], job) for s in lcs]
        lc = np.stack([to_geodelta(r, "worldcover") for r in raw]).astype(np.uint8)
        steps = np.stack([transition_mask(a, b) for a, b in itertools.pairwise(lc)])
        changed = steps > 0
        first = np.where(changed.any(0), changed.argmax(0) + 1, 0).astype(np.uint8)
        n, c, h, w = stack.shape
        geo = {"crs": job.crs, "transform": job.transform}
        members = [
            geotiff_bytes(to_dn(stack[0]), band_names=bands, **geo),
            geotiff_bytes(to_dn(stack[-1]), band_names=bands, **geo),
            rgb_png(stack[0], rgb, 0.3),
            rgb_png(stack[-1], rgb, 0.3),
            index_png(transition_mask(lc[0], lc[-1])),
            index_png(lc[0]),
            index_png(lc[-1]),
            geotiff_bytes(to_dn(stack).reshape(n * c, h, w), band_names=bands * n, **geo),
            index_geotiff_bytes(steps.astype(np.uint8), band_names=["s"] * (n - 1), **geo),
            index_png(first),
        ]
        size += sum(len(x) for x in members)
    wall = time.perf_counter() - t
    return {
        "samples": len(work),
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu,
        "samples_per_s": len(work) / wall,
        "bytes": size,
    }


def render(res: dict[str, Any]) -> str:
    s, p, f = res["series"], res["pair"], res["floor"]
    lines = [
        START,
        "## Sequence build throughput (issue 15)",
        "",
        f"`{res['command']}` on {res['when']} ({res['machine']}); SYNTHETIC demo catalogs at "
        f"scale {res['scale']:g}, in-process runner (one process = one core = one worker).",
        "",
        "| run | cells | samples | wall s | samples/s | peak RSS MB |",
        "|---|---|---|---|---|---|",
        f"| series T=5 | {s['cells']} | {s['samples']} | {s['wall_s']:.1f} | "
        f"{s['samples_per_s']:.3f} | {s['rss_mb']:.0f} |",
        f"| pairs (same cells, 2 dates) | {p['cells']} | {p['samples']} | {p['wall_s']:.1f} | "
        f"{p['samples_per_s']:.3f} | {p['rss_mb']:.0f} |",
        f"| floor: read + encode the same T=5 dates | - | {f['samples']} | {f['wall_s']:.1f} | "
        f"{f['samples_per_s']:.3f} | - |",
        "",
        f"Series per core / floor: **{s['samples_per_s'] / f['samples_per_s']:.2f}**; series "
        f"/ pairs: {s['samples_per_s'] / p['samples_per_s']:.2f} samples/s "
        f"(T=5 reads 2.5x the dates of a pair).",
        "",
        "Memory of the worker as T grows (same cells):",
        "",
        "(`coregistration.max_shift_px` 4.5 for every T: from 2019 on every demo date is shifted, so "
        "two dates can be 4.2 px apart.)",
        "",
        "| T | samples | peak RSS MB | wall s |",
        "|---|---|---|---|",
    ]
    for t, r in sorted(res["by_t"].items()):
        lines.append(f"| {t} | {r['samples']} | {r['rss_mb']:.0f} | {r['wall_s']:.1f} |")
    rss = [r["rss_mb"] for r in res["by_t"].values()]
    lines += [
        "",
        f"Peak RSS from T=3 to T=5: {min(rss):.0f} -> {max(rss):.0f} MB "
        f"({(max(rss) - min(rss)) / min(rss) * 100:.0f} % spread).",
        END,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_build"]:
        print(json.dumps(_driver(json.loads(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    series_cat = catalog(out, args.scale, series=True)
    pair_cat = catalog(out, args.scale, series=False)
    res: dict[str, Any] = {
        "command": "python benchmarks/bench_build_series.py " + " ".join(argv),
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores",
        "scale": args.scale,
        "by_t": {},
    }
    for t in (3, 4, 5):
        release = out / f"release-series-t{t}"
        res["by_t"][t] = run_build(SERIES_CONFIG, _overrides(series_cat, release, t))
        print(f"T={t}: {res['by_t'][t]}", file=sys.stderr)
    res["series"] = res["by_t"][5]
    res["pair"] = run_build(PAIR_CONFIG, _overrides(pair_cat, out / "release-pair", None))
    res["floor"] = run_floor(out / "release-series-t5", series_cat)
    (out / "bench_build_series.json").write_text(json.dumps(res, indent=2, default=str))
    section = render(res)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_build import write_results  # the same results-file editing

    write_results(args.results, section, START, END)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
