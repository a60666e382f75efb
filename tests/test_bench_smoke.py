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
