"""Quiet by default: a build's console carries geodelta's lines, not Beam's harness logging;
``geodelta --verbose`` shows it (issue 17: 43 of the demo's 80 console lines were Beam's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from geodelta.pipelines.engines.beam import WORKER_MODULE, fn_api_runner, pipeline_options
from geodelta.sources.demo.catalog import DemoCatalog
from tests.factories import REPO, demo_config

#: What Beam's harness and driver print when nothing keeps them quiet.
BEAM_NOISE = ("apitools not found", "sdk harness", "semi_persistent_directory", "apache_beam")


def _config_file(catalog: DemoCatalog, out: Path, path: Path) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw["catalog"] = {**raw.get("catalog", {}), "url": str(catalog.catalog_path)}
    raw["aoi"] = {"bbox": list(catalog.aoi_bbox)}
    raw["output"] = {**raw.get("output", {}), "dir": str(out)}
    raw["validation"] = {**raw.get("validation", {}), "great_expectations": False}
    path.write_text(yaml.safe_dump(raw))
    return path


def _build(args: list[str], cfg: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GEODELTA_VERBOSE"}
    return subprocess.run(
        [sys.executable, "-m", "geodelta.pipelines.cli", *args, "build", str(cfg), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.integration
def test_build_console_is_quiet_unless_verbose(demo_catalog: DemoCatalog, tmp_path: Path) -> None:
    cfg = _config_file(demo_catalog, tmp_path / "quiet", tmp_path / "quiet.yaml")
    quiet = _build([], cfg)
    assert quiet.returncode == 0, quiet.stderr
    console = (quiet.stdout + quiet.stderr).lower()
    assert not [n for n in BEAM_NOISE if n in console], console
    assert "samples" in console  # geodelta's own summary is there
    loud_cfg = _config_file(demo_catalog, tmp_path / "loud", tmp_path / "loud.yaml")
    loud = _build(["--verbose"], loud_cfg)
    assert loud.returncode == 0, loud.stderr
    # two worker processes (runner.workers: 2 in the demo config) each say they started
    assert loud.stderr.lower().count("python sdk harness starting") >= 2


def test_multi_processing_workers_run_the_quiet_entry_point(
    demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    cfg = demo_config(demo_catalog, tmp_path)
    assert cfg.runner.mode == "multi_processing"
    runner = fn_api_runner(cfg)
    env = runner._default_environment  # the environment every worker process is started in
    assert f"-m {WORKER_MODULE}" in env.command_string
    assert env.command_string.startswith(sys.executable)
    opts = pipeline_options(cfg).get_all_options()
    assert opts["direct_num_workers"] == cfg.runner.workers
    # the runner keeps the given environment only outside its own multi_processing branch
    assert opts["direct_running_mode"] == "in_memory"
    threads = demo_config(demo_catalog, tmp_path, runner={"mode": "multi_threading"})
    assert pipeline_options(threads).get_all_options()["direct_running_mode"] == "multi_threading"


@pytest.mark.integration
def test_an_api_caller_logging_at_info_gets_no_beam_chatter(
    demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    """An Airflow task calls the API in a process whose root logger is at INFO: Beam's import
    warning and its workers' start-up logging stay out of that log too."""
    cfg = _config_file(demo_catalog, tmp_path / "api", tmp_path / "api.yaml")
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from geodelta.pipelines import api\n"
        f"r = api.build(api.load_config({str(cfg)!r}), mode='fresh', progress=False)\n"
        "print(r.samples)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GEODELTA_VERBOSE"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.strip().splitlines()[-1]) > 0
    noise = [n for n in BEAM_NOISE if n in proc.stderr.lower()]
    assert noise == [], proc.stderr[-3000:]
