"""The build benchmark runs end to end on a tiny catalog and writes its three variants."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_bench_build_quick_writes_results(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another section\n\nkept as is\n")
    work = tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_build.py"),
            "--quick",
            "--out",
            str(work),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    figures = json.loads((work / "bench_build.json").read_text())
    tiles = figures["geodelta_direct"]["samples"]
    assert tiles >= 1 and figures["geodelta_inprocess"]["samples"] == tiles
    assert figures["naive"]["tiles"] == figures["floor"]["tiles"] == tiles
    for variant in ("geodelta_direct", "geodelta_inprocess", "naive", "floor"):
        assert figures[variant]["tiles_s"] > 0, variant
    assert figures["geodelta_direct"]["peak_rss_mb"] > figures["geodelta_inprocess"]["peak_rss_mb"]
    assert figures["floor"]["bytes"] > 10_000  # 7 encoded members per tile
    assert set(figures["stages"]["stages"]) >= {"pair", "load", "coregister", "validate"}
    # the naive loop wrote its PNG files
    assert len(list((work / "naive").rglob("*.png"))) == 5 * tiles

    text = results.read_text()
    assert "## Another section\n\nkept as is" in text  # other sections are kept
    assert text.count("<!-- bench_build:start -->") == 1
    section = text.split("<!-- bench_build:start -->")[1].split("<!-- bench_build:end -->")[0]
    assert "## Build throughput" in section and "--quick" in section
    for row in ("geodelta, Beam direct runner", "naive loop", "I/O floor", "geodelta / naive"):
        assert row in section, row


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_build", REPO / "benchmarks" / "bench_build.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_results_replaces_only_its_section(tmp_path: Path) -> None:
    bench = load_bench()
    path = tmp_path / "RESULTS.md"
    bench.write_results(path, f"{bench.START}\n## Build throughput\n\nfirst\n{bench.END}\n")
    with path.open("a") as f:
        f.write("\n## Later section\n\nkept\n")
    bench.write_results(path, f"{bench.START}\n## Build throughput\n\nsecond\n{bench.END}\n")
    text = path.read_text()
    assert text.startswith("# Benchmark results\n")
    assert text.count("## Build throughput") == 1 and "second" in text and "first" not in text
    assert text.endswith("## Later section\n\nkept\n")


# --------------------------------------------------------------------------------------------
# bench_scale.py: workers, AOI size, memory


def load_bench_scale() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_scale", REPO / "benchmarks" / "bench_scale.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_scale_splits_wall_time_into_fixed_and_per_tile() -> None:
    bench = load_bench_scale()
    # a build process started at t=100 s: plan at 103, cells from 104, release at 125,
    # report at 133, end at 136, exited at 137; 11 markers from 106 to 121 (10 intervals)
    marks = {
        "start": 100.0,
        "plan": 103.0,
        "process": 104.0,
        "release": 125.0,
        "report": 133.0,
        "end": 136.0,
        "exit": 137.0,
    }
    run = {
        "cells": 11,
        "samples": 10,
        "wall_s": 37.0,
        "marks": marks,
        "markers": {"count": 11, "first": 106.0, "last": 121.0},
    }
    split = bench.split_wall(run)
    assert split["per_tile_part_s"] == pytest.approx(15.0 * 11 / 10)  # 16.5 s
    assert split["serial_s"] == pytest.approx(11.0)  # release 8 s + report 3 s
    assert split["fixed_s"] == pytest.approx(37.0 - 16.5 - 11.0)
    assert split["s_per_tile_part"] == pytest.approx(1.65)
    assert split["tiles_s"] == pytest.approx(10 / 37.0)
    parts = split["split"]
    assert (parts["startup"], parts["plan"], parts["to_first_cell"]) == (3.0, 1.0, 2.0)
    assert (parts["after_last_cell"], parts["release"], parts["report"], parts["exit"]) == (
        4.0,
        8.0,
        3.0,
        1.0,
    )
    # every second of the wall time is in exactly one part (cells counted once)
    fixed_parts = sum(v for k, v in parts.items() if k != "cells")
    assert fixed_parts + 15.0 == pytest.approx(37.0)

    # one marker: no steady state, the whole process stage counts as per-tile time
    one = bench.split_wall({**run, "markers": {"count": 1, "first": 106.0, "last": 106.0}})
    assert one["per_tile_part_s"] == pytest.approx(21.0)


def test_bench_scale_memory_peaks_per_phase() -> None:
    bench = load_bench_scale()
    mb = 2**20
    marks = {
        "start": 0.0,
        "plan": 1.0,
        "process": 2.0,
        "release": 5.0,
        "report": 7.0,
        "end": 8.0,
        "exit": 9.0,
    }
    # (time, tree RSS, build-process RSS)
    samples = [
        (0.5, 100 * mb, 100 * mb),
        (1.5, 120 * mb, 120 * mb),
        (3.0, 700 * mb, 150 * mb),
        (4.9, 650 * mb, 160 * mb),
        (6.0, 300 * mb, 300 * mb),
        (7.5, 280 * mb, 280 * mb),
    ]
    mem = bench.memory_figures(samples, {11: 250 * mb, 12: 280 * mb}, marks)
    assert mem["tree_peak_mb"] == 700 and mem["main_sampled_peak_mb"] == 300
    assert mem["worker_sampled_peak_mb"] == 280 and mem["workers_seen"] == 2
    assert mem["tree_peak_by_phase_mb"] == {
        "startup": 100,
        "plan": 120,
        "process": 700,
        "release": 300,
        "report": 280,
        "exit": 0,
    }
    assert mem["main_peak_by_phase_mb"]["process"] == 160

    # CPU of the build process per phase: the counter at the phase's last sample minus the
    # counter at the last sample before the phase; workers below 0.5 s (/bin/sh) left out
    counters = [1.0, 1.5, 2.0, 2.5, 6.0, 7.0]
    timed = [(t, 0, 0, cpu) for (t, _, _), cpu in zip(samples, counters, strict=True)]
    cpu = bench.cpu_figures(timed, {11: 30.0, 12: 0.01, 13: 31.5}, marks)
    assert cpu["workers_s"] == [31.5, 30.0]
    assert cpu["main_by_phase_s"]["process"] == pytest.approx(1.0)  # 2.5 - 1.5
    assert cpu["main_by_phase_s"]["release"] == pytest.approx(3.5)  # 6.0 - 2.5
    assert cpu["main_by_phase_s"]["startup"] == pytest.approx(1.0)


def test_bench_scale_worker_cpu_between_markers() -> None:
    bench = load_bench_scale()
    # CPU counters of two workers (pids 1, 2) and a /bin/sh (pid 3), sampled at t = 0..4
    samples = [
        (0.0, {1: 0.0, 2: 0.0, 3: 0.0}),
        (1.0, {1: 2.0, 2: 1.5, 3: 0.0}),
        (2.0, {1: 3.0, 2: 2.5, 3: 0.0}),
        (3.0, {1: 4.0, 2: 3.0, 3: 0.0}),
        (4.0, {1: 5.0, 2: 3.5, 3: 0.0}),
    ]
    # markers at 1.5 s and 3.5 s: counters at the last samples before them (t=1 and t=3)
    assert bench.span_cpu(samples, 1.5, 3.5) == [2.0, 1.5]


def test_bench_scale_linear_fit() -> None:
    bench = load_bench_scale()
    a, b = bench.linear_fit([75, 221, 761], [20 + 0.1 * 75, 20 + 0.1 * 221, 20 + 0.1 * 761])
    assert (a, b) == (pytest.approx(20.0), pytest.approx(0.1))


def test_bench_scale_aoi_and_results_section(tmp_path: Path) -> None:
    bench = load_bench_scale()
    from geodelta.sources.demo.catalog import DEMO_AOI

    assert bench.aoi_bbox(1.0) == pytest.approx(list(DEMO_AOI))
    w, h = DEMO_AOI[2] - DEMO_AOI[0], DEMO_AOI[3] - DEMO_AOI[1]
    big = bench.aoi_bbox(3.0)
    assert big[2] - big[0] == pytest.approx(3 * w) and big[3] - big[1] == pytest.approx(3 * h)
    assert big[0] < 6.0 < big[2]  # still straddles the UTM 31/32 boundary

    path = tmp_path / "RESULTS.md"
    path.write_text(
        "# Benchmark results\n\n<!-- bench_build:start -->\nbuild\n<!-- bench_build:end -->\n"
    )
    bench.write_results(path, f"{bench.START}\n## Scaling\n\nfirst\n{bench.END}\n")
    bench.write_results(path, f"{bench.START}\n## Scaling\n\nsecond\n{bench.END}\n")
    text = path.read_text()
    assert text.count(bench.START) == 1 and "second" in text and "first" not in text
    assert "<!-- bench_build:start -->\nbuild\n<!-- bench_build:end -->" in text


@pytest.mark.slow
def test_bench_scale_quick_writes_results(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another section\n\nkept as is\n")
    work = tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_scale.py"),
            "--quick",
            "--out",
            str(work),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    figures = json.loads((work / "bench_scale.json").read_text())
    series, one = figures["series"], figures["one_worker"]
    # quick AOIs: 2, 8 and 15 cells, the same cells as the plan gives for those bboxes
    assert [r["cells"] for r in series] == [2, 8, 15]
    assert [r["workers"] for r in series] == [2, 2, 2] and one["workers"] == 1
    assert one["cells"] == 15 and one["samples"] == series[-1]["samples"] >= 1
    for run in [*series, one]:
        assert run["markers"]["count"] == run["cells"]  # one completion marker per cell
        assert 0 < run["per_tile_part_s"] < run["wall_s"]
        parts = run["fixed_s"] + run["per_tile_part_s"] + run["serial_s"]
        assert parts == pytest.approx(run["wall_s"])
        mem = run["memory"]
        assert mem["samples"] > 20  # sampled every 50 ms over a build of several seconds
        # the tree holds the build process, so its peak is at least the process's own
        assert mem["tree_peak_mb"] >= mem["main_sampled_peak_mb"] > 100
        # getrusage's exact peak and the 50 ms samples agree on the build process
        assert mem["main_rusage_mb"] == pytest.approx(mem["main_sampled_peak_mb"], rel=0.1)
        assert run["cpu"]["main_by_phase_s"]["release"] > 0  # the release runs in the build
    # the cells ran on both workers (and on the one worker of the 1-worker run)
    assert len(series[-1]["cpu"]["cells_by_worker_s"]) == 2
    assert len(one["cpu"]["cells_by_worker_s"]) == 1
    # Beam's worker processes (and the /bin/sh that starts each) were seen
    assert all(r["memory"]["workers_seen"] >= 4 for r in series)
    assert one["memory"]["workers_seen"] >= 1
    # two workers hold more memory than one (each a Python process with Beam and the stages)
    assert series[-1]["memory"]["tree_peak_mb"] > one["memory"]["tree_peak_mb"]

    text = results.read_text()
    assert "## Another section\n\nkept as is" in text
    section = text.split("<!-- bench_scale:start -->")[1].split("<!-- bench_scale:end -->")[0]
    assert "## Scaling" in section and "--quick" in section
    for row in ("2 workers / 1 worker throughput", "time per tile", "peak memory", "tree peak"):
        assert row in section, row


@pytest.mark.slow
def test_bench_build_series_runs_on_a_tiny_catalog(tmp_path: Path) -> None:
    """``bench_build.py --series`` (issue 15) at scale 0.3: the same cells for T = 3, 4, 5, the
    pair build and the floor, and its own section of the results file (others kept)."""
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another section\n\nkept as is\n")
    work = tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_build.py"),
            "--series",
            "--scale",
            "0.3",
            "--out",
            str(work),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((work / "bench_build_series.json").read_text())
    by_t = figures["by_t"]
    assert sorted(by_t) == ["3", "4", "5"]
    samples = {r["samples"] for r in by_t.values()}
    assert len(samples) == 1 and samples.pop() >= 1  # the same cells whatever T
    assert figures["floor"]["samples"] == by_t["5"]["samples"]
    assert all(r["rss_mb"] > 50 for r in by_t.values())
    text = results.read_text()
    assert "kept as is" in text and "## Sequence build throughput (issue 15)" in text
    assert text.count("<!-- bench_build_series:start -->") == 1
