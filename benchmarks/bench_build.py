"""Build throughput: geodelta end to end vs a naive per-tile loop vs the I/O floor.

    .venv/bin/python benchmarks/bench_build.py                  # ~1-minute geodelta build
    .venv/bin/python benchmarks/bench_build.py --quick --out /tmp/b --results /tmp/b/RESULTS.md

On a synthetic demo catalog (written once under ``--out`` and reused; its generation is not
timed) the script measures, for the same cells and the same scene pairs:

* **geodelta**: the real build (``configs/demo.yaml`` pointed at the catalog) in a subprocess,
  once on the Beam direct runner (2 worker processes) and once on the in-process runner (one
  core): wall time, tiles/s and the peak RSS of the whole process tree (Beam's workers
  included), plus the build's own plan/process/release/report split; then every stage of
  :class:`geodelta.pipelines.stages.worker.Worker` timed in this process over the cells; and the fixed
  cost of a Beam run (worker start-up and imports, a 2-cell run);
* **naive**: one process, per tile: open each band COG afresh, read the window covering the cell,
  reproject it onto the cell grid, write the before/after/land-cover/mask PNGs to files; no
  batching, no reuse;
* **floor**: one process, only what any build must do: decode the needed windows onto the cell
  grid (geodelta's own reads, open datasets reused: 4 bands x 2 scenes + 2 land-cover maps) and
  encode the output members with geodelta's own encoders (2 GeoTIFFs, 2 RGB PNGs, 3 index PNGs).

Tiles are output samples (cells that yield one); geodelta's figures divide them by the wall time
of everything it did, quarantined cells, Beam start-up, release and report included. The figures
go to ``--results`` (the "Build throughput" section between markers; other sections are kept)
and to ``<out>/bench_build.json``.

Every process of the benchmark runs numeric libraries single-threaded (``OPENBLAS_NUM_THREADS=1``
and friends, set below before numpy loads), so one process is one core.
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before numpy is imported: one process = one core

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "demo.yaml"
DEFAULT_OUT = REPO / "build" / "bench"
DEFAULT_RESULTS = REPO / "benchmarks" / "RESULTS.md"
START = "<!-- bench_build:start -->"
END = "<!-- bench_build:end -->"
#: ~1 minute of geodelta build on the 2-core machine the first results came from.
DEFAULT_SCALE = 3.0
QUICK_SCALE = 0.3
TARGET_FLOOR_RATIO = 0.7


# --------------------------------------------------------------------------------------------
# catalog and config


def demo_catalog(out: Path, seed: int, scale: float) -> tuple[Path, list[float], float]:
    """The demo catalog for (seed, scale) under ``out``, written once; (catalog.json, aoi, s)."""
    from geodelta.sources.demo.catalog import write_demo_catalog

    root = out / f"catalog-seed{seed}-scale{scale:g}"
    stamp = out / f"catalog-seed{seed}-scale{scale:g}.json"
    if (root / "catalog.json").is_file() and stamp.is_file():
        return root / "catalog.json", json.loads(stamp.read_text())["aoi_bbox"], 0.0
    t = time.perf_counter()
    cat = write_demo_catalog(root, seed=seed, scale=scale)
    seconds = time.perf_counter() - t
    stamp.write_text(json.dumps({"seed": seed, "scale": scale, "aoi_bbox": list(cat.aoi_bbox)}))
    return cat.catalog_path, list(cat.aoi_bbox), seconds


def overrides(catalog: Path, aoi: list[float], release: Path, runner: str) -> dict[str, Any]:
    """Config overrides of configs/demo.yaml for one benchmark build."""
    return {
        "catalog": {"url": str(catalog)},
        "output": {"dir": str(release)},
        "aoi": {"bbox": aoi},
        "runner": {"name": runner, "workers": 2, "mode": "multi_processing"},
    }


# --------------------------------------------------------------------------------------------
# subprocess drivers (``bench_build.py _build ARGS_JSON`` / ``_beam_fixed``)


def _driver_build(args: dict[str, Any]) -> dict[str, Any]:
    from geodelta.pipelines.api import build
    from geodelta.schemas import load_config

    t = time.perf_counter()
    cfg = load_config(CONFIG, args["overrides"])
    result = build(cfg, mode="overwrite", progress=False)
    return {
        "build_s": time.perf_counter() - t,
        "cells": result.cells,
        "samples": result.samples,
        "quarantined": result.quarantined,
        "stage_seconds": result.stage_seconds,
    }


def _driver_beam_fixed(args: dict[str, Any]) -> dict[str, Any]:
    """The real Beam pipeline over 2 cells: what a run costs before the cells (start-up)."""
    from geodelta import __version__
    from geodelta.pipelines.engines.run import run_cells
    from geodelta.pipelines.stages.plan import plan_jobs
    from geodelta.schemas import load_config

    cfg = load_config(CONFIG, args["overrides"])
    jobs = plan_jobs(cfg)[:2]
    staging = Path(args["staging"])
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    t = time.perf_counter()
    run_cells(jobs, cfg, staging, code_version=__version__)
    return {"beam_2_cells_s": time.perf_counter() - t, "cells": len(jobs)}


class _RssSampler:
    """Peak of the summed RSS of a process and all its descendants, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(0.1)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_driver(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run a driver in a fresh Python process; its result, wall time and peak tree RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), kind, json.dumps(args)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = _RssSampler(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t
    peak = sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the whole tree: every process in it was waited for by its parent (Beam waits for
    # its worker processes), so their times roll up into this process's children times
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(wall_s=wall, cpu_s=cpu, peak_rss_mb=peak / 2**20)
    return result


# --------------------------------------------------------------------------------------------
# the work list: same cells, same scene pairs as geodelta's release


def work_list(catalog: Path, aoi: list[float], release: Path) -> list[dict[str, Any]]:
    """Per sample of the release: its TileJob, before/after scenes and land-cover items."""
    import pyarrow.parquet as pq

    from geodelta.pipelines.stages.labels.landcover import pick_landcover
    from geodelta.pipelines.stages.plan import plan_jobs
    from geodelta.schemas import load_config
    from geodelta.sources.catalog import open_catalog

    cfg = load_config(CONFIG, overrides(catalog, aoi, release, "inprocess"))
    jobs = {j.cell_id: j for j in plan_jobs(cfg)}
    cat = open_catalog(cfg.catalog, resolve=cfg.resolve)
    bbox = (aoi[0], aoi[1], aoi[2], aoi[3])
    ever = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    scenes = {s.item_id: s for s in cat.search([cfg.imagery.collection], bbox, ever)}
    assert cfg.labels.collection is not None  # the demo config labels from land cover
    landcover = cat.search([cfg.labels.collection], bbox, ever)
    rows = pq.read_table(release / "samples.parquet").to_pylist()
    work = []
    for row in sorted(rows, key=lambda r: r["key"]):
        before, after = scenes[row["before_item"]], scenes[row["after_item"]]
        work.append(
            {
                "job": jobs[row["cell_id"]],
                "before": before,
                "after": after,
                "lc_before": pick_landcover(landcover, before.datetime),
                "lc_after": pick_landcover(landcover, after.datetime),
            }
        )
    return work


# --------------------------------------------------------------------------------------------
# naive: per tile, open, read, reproject, write PNG files; nothing reused


def _naive_read(href: str, job: Any, resampling: Any, dtype: str) -> Any:
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import Window, from_bounds

    height, width = job.shape
    with rasterio.open(href) as src:
        left, bottom, right, top = transform_bounds(job.crs, src.crs, *job.bounds())
        win = from_bounds(left, bottom, right, top, src.transform)
        col0 = max(0, math.floor(win.col_off) - 2)
        row0 = max(0, math.floor(win.row_off) - 2)
        col1 = min(src.width, math.ceil(win.col_off + win.width) + 2)
        row1 = min(src.height, math.ceil(win.row_off + win.height) + 2)
        window = Window(col0, row0, col1 - col0, row1 - row0)
        data = src.read(1, window=window)
        out = np.zeros((height, width), dtype=dtype)
        reproject(
            data,
            out,
            src_transform=src.window_transform(window),
            src_crs=src.crs,
            src_nodata=src.nodata,
            dst_transform=Affine(*job.transform),
            dst_crs=job.crs,
            dst_nodata=0,
            resampling=resampling,
        )
    return out


def run_naive(work: list[dict[str, Any]], bands: list[str], out_dir: Path) -> tuple[float, float]:
    """The naive loop over the work list; (wall seconds, CPU seconds)."""
    import numpy as np
    from PIL import Image
    from rasterio.enums import Resampling

    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    rgb = [bands.index(b) for b in ("B04", "B03", "B02")]
    t, cpu = time.perf_counter(), time.process_time()
    for w in work:
        job = w["job"]
        folder = out_dir / job.cell_id
        folder.mkdir()
        for name in ("before", "after"):
            scene = w[name]
            stack = [
                _naive_read(scene.assets[b].href, job, Resampling.bilinear, "uint16") for b in bands
            ]
            refl = np.stack([stack[i] * 0.0001 - 0.1 for i in rgb], axis=-1)
            png = np.clip(refl / 0.3 * 255.0, 0, 255).astype(np.uint8)
            Image.fromarray(png, mode="RGB").save(folder / f"{name}.png")
        maps = []
        for name in ("lc_before", "lc_after"):
            item = w[name]
            lc = _naive_read(item.assets["map"].href, job, Resampling.nearest, "uint8")
            Image.fromarray(lc, mode="L").save(folder / f"{name}.png")
            maps.append(lc)
        mask = np.where(maps[0] != maps[1], 255, 0).astype(np.uint8)
        Image.fromarray(mask, mode="L").save(folder / "mask.png")
    return time.perf_counter() - t, time.process_time() - cpu


# --------------------------------------------------------------------------------------------
# floor: decode the needed windows, encode the members; nothing else


def run_floor(work: list[dict[str, Any]], bands: list[str]) -> tuple[float, float, int]:
    """The I/O floor over the work list; (wall seconds, CPU seconds, bytes encoded)."""
    import numpy as np

    from geodelta.pipelines.stages.encode import geotiff_bytes, index_png, rgb_png, to_dn
    from geodelta.sources.raster import close_cached, read_bands, read_classes

    rgb = (bands.index("B04"), bands.index("B03"), bands.index("B02"))
    close_cached()
    size = 0
    t, cpu = time.perf_counter(), time.process_time()
    for w in work:
        job = w["job"]
        before = read_bands(w["before"], bands, job)
        after = read_bands(w["after"], bands, job)
        lc0 = read_classes(w["lc_before"].assets["map"], job)
        lc1 = read_classes(w["lc_after"].assets["map"], job)
        mask = np.where(lc0 != lc1, 255, 0).astype(np.uint8)
        members = [
            geotiff_bytes(to_dn(before), crs=job.crs, transform=job.transform, band_names=bands),
            geotiff_bytes(to_dn(after), crs=job.crs, transform=job.transform, band_names=bands),
            rgb_png(before, rgb, 0.3),
            rgb_png(after, rgb, 0.3),
            index_png(mask),
            index_png(lc0),
            index_png(lc1),
        ]
        size += sum(len(m) for m in members)
    return time.perf_counter() - t, time.process_time() - cpu, size


# --------------------------------------------------------------------------------------------
# per-stage times: the Worker's stages, in this process


#: The parts of the finalize stage (``finalize_sample``), timed apart on the same samples.
FINALIZE_PARTS = ("finalize: meta", "finalize: validate", "finalize: encode")


def _finalize_parts(
    worker: Any, sample: Any, total: dict[str, float], count: dict[str, int]
) -> None:
    """CPU of each part of the finalize stage on one sample (run again, apart from the stage)."""
    from geodelta.pipelines.stages.encode import build_meta, encode_members
    from geodelta.pipelines.stages.validate import validate_stage
    from geodelta.schemas import QuarantineRecord

    meta_name, validate_name, encode_name = FINALIZE_PARTS
    t = time.process_time()
    meta = build_meta(
        sample, worker.cfg, code_version=worker.code_version, shaping_hash=worker.shaping_hash
    )
    total[meta_name] += time.process_time() - t
    t = time.process_time()
    checked = validate_stage(sample, meta, worker.cfg)
    total[validate_name] += time.process_time() - t
    count[meta_name] += 1
    count[validate_name] += 1
    if isinstance(checked, QuarantineRecord):
        return
    t = time.process_time()
    encode_members(sample, meta, worker.cfg)
    total[encode_name] += time.process_time() - t
    count[encode_name] += 1


def stage_times(catalog: Path, aoi: list[float], release: Path, limit: int) -> dict[str, Any]:
    """CPU seconds per stage over the first ``limit`` cells (every stage a cell reaches), and
    per part of the finalize stage (:data:`FINALIZE_PARTS`, each sample finalized again)."""
    from geodelta import __version__
    from geodelta.pipelines.stages.plan import plan_jobs
    from geodelta.pipelines.stages.sample import Sample
    from geodelta.pipelines.stages.worker import Worker, guarded
    from geodelta.schemas import QuarantineRecord, load_config
    from geodelta.sources.raster import close_cached

    cfg = load_config(CONFIG, overrides(catalog, aoi, release, "inprocess"))
    jobs = plan_jobs(cfg)[:limit]
    worker = Worker(cfg, code_version=__version__)
    close_cached()
    t = time.perf_counter()
    _ = worker.catalog, worker.annotator
    setup = time.perf_counter() - t
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for job in jobs:
        record: Any = job
        for stage, fn in worker.steps():
            if stage == "validate" and isinstance(record, Sample):
                _finalize_parts(worker, record, total, count)
            t = time.process_time()  # CPU: robust to other jobs on the machine
            record = guarded(stage, fn, record)
            total[stage] += time.process_time() - t
            count[stage] += 1
            if isinstance(record, QuarantineRecord):
                break
    order = [name for name in total if name not in FINALIZE_PARTS]
    order += [name for name in FINALIZE_PARTS if count[name]]
    return {
        "cells": len(jobs),
        "setup_s": setup,
        "load": _load(),
        "stages": {
            name: {"calls": count[name], "ms_per_call": 1000 * total[name] / count[name]}
            for name in order
        },
    }


def stage_table(stages: dict[str, Any]) -> list[str]:
    """The per-stage table (markdown rows) of :func:`stage_times`' result."""
    lines = ["| stage | calls | CPU ms per call |", "|---|---:|---:|"]
    for name, s in stages["stages"].items():
        if name == "validate":
            label = "finalize (meta + validate + encode)"
        elif name in FINALIZE_PARTS:
            label = f"- of which {name.split(': ')[1]}"
        else:
            label = name
        lines.append(f"| {label} | {s['calls']} | {s['ms_per_call']:.1f} |")
    return lines


# --------------------------------------------------------------------------------------------
# machine and report


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model and library versions."""
    import apache_beam
    import numpy
    import rasterio

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = float("nan")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 2**20
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "apache_beam": apache_beam.__version__,
        "platform": platform.platform(),
    }


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def render(res: dict[str, Any]) -> str:
    """The "Build throughput" section of RESULTS.md."""
    m, g, gi, nv, fl = (
        res["machine"],
        res["geodelta_direct"],
        res["geodelta_inprocess"],
        res["naive"],
        res["floor"],
    )
    r = res["ratios"]
    lines = [
        START,
        "## Build throughput",
        "",
        f"Command: `{res['command']}`  ",
        f"Date: {res['date']}  ",
        f"Machine: {m['cores']} cores, {m['memory_gb']} GiB RAM, {m['cpu']}; {m['platform']}  ",
        f"Versions: Python {m['python']}, numpy {m['numpy']}, rasterio {m['rasterio']}, "
        f"GDAL {m['gdal']}, apache-beam {m['apache_beam']}  ",
        f"Load average at start: {res['load_start']} (other jobs share this machine; "
        "figures on a busy machine are noisy)",
        "",
        f"Catalog: synthetic demo, seed {res['seed']}, scale {res['scale']:g} "
        f"({g['cells']} cells, {g['samples']} samples, {g['quarantined']} quarantined; "
        "generation not timed). Tiles = output samples; naive and floor process exactly "
        "geodelta's samples with geodelta's scene pairs. Every process runs BLAS "
        "single-threaded (one process = one core).",
        "",
        "| variant | processes | wall s | tiles/s | tiles/s per core | CPU s | tiles per CPU s "
        "| peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| geodelta, Beam direct runner (end to end) | {g['workers']} | {g['wall_s']:.1f} | "
        f"{g['tiles_s']:.2f} | {g['tiles_s'] / g['workers']:.2f} | {g['cpu_s']:.1f} | "
        f"{g['tiles_cpu_s']:.2f} | {g['peak_rss_mb']:.0f} |",
        f"| geodelta, in-process runner (end to end) | 1 | {gi['wall_s']:.1f} | "
        f"{gi['tiles_s']:.2f} | {gi['tiles_s']:.2f} | {gi['cpu_s']:.1f} | "
        f"{gi['tiles_cpu_s']:.2f} | {gi['peak_rss_mb']:.0f} |",
        f"| naive loop | 1 | {nv['seconds']:.1f} | {nv['tiles_s']:.2f} | {nv['tiles_s']:.2f} "
        f"| {nv['cpu_s']:.1f} | {nv['tiles_cpu_s']:.2f} | - |",
        f"| I/O floor | 1 | {fl['seconds']:.1f} | {fl['tiles_s']:.2f} | {fl['tiles_s']:.2f} "
        f"| {fl['cpu_s']:.1f} | {fl['tiles_cpu_s']:.2f} | - |",
        "",
        "`tiles per CPU s` divides by the CPU time (user + system) of the whole process tree, "
        "Beam's workers and driver included: on a machine shared with other jobs it is the "
        "steadier per-core measure; wall-clock figures there depend on what else ran.",
        "",
        "Ratios (target: geodelta per core >= "
        f"{TARGET_FLOOR_RATIO} x floor, and faster than the naive loop):",
        "",
        "| ratio | Beam direct | in-process |",
        "|---|---:|---:|",
        f"| geodelta per core / floor, wall clock | {r['direct_per_core_vs_floor']:.2f} "
        f"{_verdict(r['direct_per_core_vs_floor'] >= TARGET_FLOOR_RATIO)} | "
        f"{r['inprocess_vs_floor']:.2f} {_verdict(r['inprocess_vs_floor'] >= TARGET_FLOOR_RATIO)} |",
        f"| geodelta per core / floor, CPU time | {r['direct_cpu_vs_floor']:.2f} "
        f"{_verdict(r['direct_cpu_vs_floor'] >= TARGET_FLOOR_RATIO)} | "
        f"{r['inprocess_cpu_vs_floor']:.2f} "
        f"{_verdict(r['inprocess_cpu_vs_floor'] >= TARGET_FLOOR_RATIO)} |",
        f"| geodelta / naive, wall clock | {r['direct_vs_naive']:.2f} "
        f"{_verdict(r['direct_vs_naive'] > 1)} | "
        f"{r['inprocess_vs_naive']:.2f} {_verdict(r['inprocess_vs_naive'] > 1)} |",
        f"| geodelta / naive, CPU time | {r['direct_cpu_vs_naive']:.2f} "
        f"{_verdict(r['direct_cpu_vs_naive'] > 1)} | "
        f"{r['inprocess_cpu_vs_naive']:.2f} {_verdict(r['inprocess_cpu_vs_naive'] > 1)} |",
        f"| geodelta per core / floor, cell processing only (wall; no start-up, release, "
        f"report) | {r['direct_process_per_core_vs_floor']:.2f} | "
        f"{r['inprocess_process_vs_floor']:.2f} |",
        "",
        "Where geodelta's wall time goes (seconds; `startup` = process start, imports and "
        "config before `build()`, `other` = what `build()` spends outside its stages):",
        "",
        "| run | wall | startup | plan | process | release | report | other |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in (("Beam direct", g), ("in-process", gi)):
        st = run["stage_seconds"]
        other = run["build_s"] - sum(st.values())
        lines.append(
            f"| {name} | {run['wall_s']:.1f} | {run['wall_s'] - run['build_s']:.1f} | "
            f"{st.get('plan', 0):.2f} | {st.get('process', 0):.1f} | {st.get('release', 0):.2f} "
            f"| {st.get('report', 0):.2f} | {other:.1f} |"
        )
    bf = res["beam_fixed"]
    lines += [
        "",
        f"Fixed cost of a Beam run: the real pipeline over {bf['cells']} cells takes "
        f"{bf['beam_2_cells_s']:.1f} s (2 worker processes started, each importing Beam and "
        "geodelta's stages once; per-worker resources are made once per DoFn in `setup`).",
        "",
        f"Per stage, in one process (`Worker` stages over the first {res['stages']['cells']} "
        f"cells; catalog + annotator setup {res['stages']['setup_s'] * 1000:.0f} ms once):",
        "",
        *stage_table(res["stages"]),
    ]
    lines += ["", *res.get("notes", []), END]
    return "\n".join(lines) + "\n"


def write_results(path: Path, section: str, start: str = START, end: str = END) -> None:
    """Replace the section between the markers in ``path`` (or append it); keep the rest."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


NOTES = [
    "Notes:",
    "",
    "- The floor reads with geodelta's own raster reads (a WarpedVRT per asset onto the cell "
    "grid, datasets opened once) and encodes with geodelta's encoders, so any speed-up of either "
    "speeds up the floor as much as geodelta: the floor ratio measures what geodelta adds "
    "(pairing, co-registration, labels, captions, validation, staging, Beam, release).",
    "- The naive loop writes 5 PNGs per tile and no GeoTIFF; geodelta writes 10 members per "
    "sample and its release (shards, parquet tables, report).",
    "- Beam direct figures include Beam's worker start-up and Python's import time, the release "
    "and report; on a 2-core machine the two Beam workers share the cores with the driver.",
]


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--series" in argv:  # sequences: benchmarks/bench_build_series.py, same options
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_build_series

        return int(bench_build_series.main([a for a in argv if a != "--series"]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"tiny catalog (scale {QUICK_SCALE})")
    parser.add_argument("--scale", type=float, default=None, help="demo catalog scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="work folder")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results file")
    parser.add_argument("--stage-cells", type=int, default=150, help="cells for per-stage times")
    parser.add_argument(
        "--stages-only",
        action="store_true",
        help="only the per-stage CPU times (one process, --stage-cells cells): printed, "
        "RESULTS.md untouched",
    )
    args = parser.parse_args(argv)
    scale = args.scale if args.scale is not None else (QUICK_SCALE if args.quick else DEFAULT_SCALE)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    load_start = _load()

    def say(msg: str) -> None:
        sys.stderr.write(f"[bench_build {time.strftime('%H:%M:%S')}] {msg}\n")

    say(f"catalog seed={args.seed} scale={scale:g} under {out}")
    catalog, aoi, gen_s = demo_catalog(out, args.seed, scale)
    if gen_s:
        say(f"catalog written in {gen_s:.0f} s (not timed)")
    if args.stages_only:
        stages = stage_times(catalog, aoi, out / "release-stages", args.stage_cells)
        print(
            f"Per stage, CPU, {stages['cells']} cells, scale {scale:g}, load average "
            f"{load_start} at start, {stages['load']} at end:\n"
        )
        print("\n".join(stage_table(stages)))
        return 0

    runs: dict[str, dict[str, Any]] = {}
    for runner in ("direct", "inprocess"):
        release = out / f"release-{runner}"
        say(f"geodelta build, runner {runner}")
        run = run_driver("_build", {"overrides": overrides(catalog, aoi, release, runner)})
        run["workers"] = 2 if runner == "direct" else 1
        run["tiles_s"] = run["samples"] / run["wall_s"]
        run["tiles_cpu_s"] = run["samples"] / run["cpu_s"]
        run["cells_s"] = run["cells"] / run["wall_s"]
        runs[runner] = run
        say(f"  {run['samples']} tiles in {run['wall_s']:.1f} s: {run['tiles_s']:.2f} tiles/s")
    if runs["direct"]["samples"] != runs["inprocess"]["samples"]:
        raise RuntimeError("the direct and in-process builds made different numbers of samples")

    say("Beam fixed cost (2 cells)")
    beam_fixed = run_driver(
        "_beam_fixed",
        {
            "overrides": overrides(catalog, aoi, out / "release-fixed", "direct"),
            "staging": str(out / "release-fixed" / ".staging"),
        },
    )

    from geodelta.schemas import load_config

    bands = list(load_config(CONFIG, overrides(catalog, aoi, out, "inprocess")).imagery.bands)
    work = work_list(catalog, aoi, out / "release-inprocess")
    say(f"naive loop over {len(work)} tiles")
    naive_s, naive_cpu = run_naive(work, bands, out / "naive")
    say(f"floor over {len(work)} tiles")
    floor_s, floor_cpu, floor_bytes = run_floor(work, bands)
    say("per-stage times")
    stages = stage_times(catalog, aoi, out / "release-stages", args.stage_cells)

    g, gi = runs["direct"], runs["inprocess"]
    naive = {
        "seconds": naive_s,
        "cpu_s": naive_cpu,
        "tiles": len(work),
        "tiles_s": len(work) / naive_s,
        "tiles_cpu_s": len(work) / naive_cpu,
    }
    floor = {
        "seconds": floor_s,
        "cpu_s": floor_cpu,
        "tiles": len(work),
        "tiles_s": len(work) / floor_s,
        "tiles_cpu_s": len(work) / floor_cpu,
        "bytes": floor_bytes,
    }
    ratios = {
        "direct_per_core_vs_floor": g["tiles_s"] / g["workers"] / floor["tiles_s"],
        "inprocess_vs_floor": gi["tiles_s"] / floor["tiles_s"],
        "direct_vs_naive": g["tiles_s"] / naive["tiles_s"],
        "inprocess_vs_naive": gi["tiles_s"] / naive["tiles_s"],
        "direct_process_per_core_vs_floor": g["samples"]
        / g["stage_seconds"]["process"]
        / g["workers"]
        / floor["tiles_s"],
        "inprocess_process_vs_floor": gi["samples"]
        / gi["stage_seconds"]["process"]
        / floor["tiles_s"],
        "direct_cpu_vs_floor": g["tiles_cpu_s"] / floor["tiles_cpu_s"],
        "inprocess_cpu_vs_floor": gi["tiles_cpu_s"] / floor["tiles_cpu_s"],
        "direct_cpu_vs_naive": g["tiles_cpu_s"] / naive["tiles_cpu_s"],
        "inprocess_cpu_vs_naive": gi["tiles_cpu_s"] / naive["tiles_cpu_s"],
    }
    command = "python benchmarks/bench_build.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    res = {
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_start": load_start,
        "seed": args.seed,
        "scale": scale,
        "geodelta_direct": g,
        "geodelta_inprocess": gi,
        "beam_fixed": beam_fixed,
        "naive": naive,
        "floor": floor,
        "stages": stages,
        "ratios": ratios,
        "notes": NOTES,
    }
    (out / "bench_build.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    write_results(args.results, render(res))
    say(
        f"direct {g['tiles_s']:.2f} tiles/s, in-process {gi['tiles_s']:.2f}, naive "
        f"{naive['tiles_s']:.2f}, floor {floor['tiles_s']:.2f}; per core / floor: direct "
        f"{ratios['direct_per_core_vs_floor']:.2f}, in-process {ratios['inprocess_vs_floor']:.2f}"
    )
    say(f"wrote {args.results} and {out / 'bench_build.json'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("_build", "_beam_fixed"):
        driver = _driver_build if sys.argv[1] == "_build" else _driver_beam_fixed
        print(json.dumps(driver(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
