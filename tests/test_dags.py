"""The Airflow DAG in dags/, driven in the separate Airflow environment ``.venv-airflow``.

Airflow 3.3 cannot share the project venv (airflow-core pins fastapi<0.137, stac-fastapi-types 7
needs fastapi>=0.141.1), so ``make test`` builds ``.venv-airflow`` and these tests run Airflow
there by subprocess. Without that venv they skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.prerequisites import missing

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_VENV = REPO / ".venv-airflow"
AIRFLOW_PY = AIRFLOW_VENV / "bin" / "python"
AIRFLOW_BIN = AIRFLOW_VENV / "bin" / "airflow"
DAGS = REPO / "dags"
MAX_PARSE_S = 10.0


@pytest.fixture(scope="module")
def airflow_venv() -> Path:
    if not AIRFLOW_BIN.exists():
        msg = (
            f"{AIRFLOW_BIN} is missing: the Airflow environment is built by `make test` "
            "(target .venv-airflow/.installed in the Makefile)"
        )
        missing(msg)
    return AIRFLOW_BIN


def _airflow_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PYTHONWARNINGS": "ignore",
            "NO_COLOR": "1",
        }
    )
    env.pop("VIRTUAL_ENV", None)
    return env


_DAGBAG_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - t1
dag = bag.dags.get("geodelta_release")
heavy = sorted(m for m in ("rasterio", "apache_beam", "torch", "geodelta.pipelines", "skimage")
               if m in sys.modules)
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "seconds": seconds,
    "import_seconds": t1 - t0,
    "tasks": sorted(dag.task_ids) if dag else [],
    "pools": sorted({t.pool for t in dag.tasks}) if dag else [],
    "build_pool": dag.get_task("build").pool if dag else None,
    "has_doc": bool(dag and dag.doc_md and all(t.doc_md for t in dag.tasks)),
    "retries": {t.task_id: t.retries for t in dag.tasks} if dag else {},
    "timeouts": all(t.execution_timeout for t in dag.tasks) if dag else False,
    "heavy": heavy,
}))
"""


def test_dagbag_imports_without_errors_quickly(airflow_venv: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(AIRFLOW_PY), "-c", _DAGBAG_SNIPPET, str(DAGS)],
        env=_airflow_env(tmp_path / "airflow"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"] == {}
    assert out["dag_ids"] == ["geodelta_release"]
    assert out["tasks"] == [
        "build",
        "plan",
        "publish",
        "release",
        "train_reference",
        "validate",
    ]
    assert out["build_pool"] == "geodelta_llm"
    assert out["has_doc"] is True
    assert out["timeouts"] is True
    assert out["retries"]["build"] == 2
    assert out["retries"]["validate"] == 0
    assert out["heavy"] == [], f"heavy modules imported at parse time: {out['heavy']}"
    # parse time of the dags folder (DagBag fill; Airflow's own import is reported apart)
    sys.stderr.write(
        f"\nDagBag parse time: {out['seconds']:.2f} s "
        f"(import of Airflow before it: {out['import_seconds']:.2f} s)\n"
    )
    assert out["seconds"] < MAX_PARSE_S


@pytest.mark.slow
@pytest.mark.integration
def test_airflow_dags_test_publishes_a_verified_release(airflow_venv: Path, tmp_path: Path) -> None:
    from geodelta.pipelines.release.verify import verify_release
    from geodelta.schemas import load_config
    from geodelta.schemas.reference import REFERENCE_METRICS, ReferenceMetrics
    from geodelta.sources.demo.catalog import write_demo_catalog

    cat = write_demo_catalog(tmp_path / "catalog", seed=0, scale=0.5)
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["catalog"]["url"] = str(cat.catalog_path)
    data["output"]["dir"] = str(tmp_path / "work" / "release")
    data["aoi"] = {"bbox": list(cat.aoi_bbox)}
    data["runner"] = {"name": "inprocess"}
    data["reference"] = {"epochs": 2, "retrieval_epochs": 2, "workers": 0}  # short training
    # the demo's floors are for its full scale; at this scale only drops are gated
    data["gate"] = {"rules": [{"metric": "masks.f1", "max_drop": 0.05}]}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_config(config)

    home = tmp_path / "airflow"
    env = _airflow_env(home)
    airflow = str(airflow_venv)

    def run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [airflow, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path
        )
        assert proc.returncode == 0, (
            f"airflow {args[0]}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
        return proc

    run("db", "migrate", timeout=300)
    run("pools", "set", "geodelta_llm", "2", "bounds LLM concurrency", timeout=120)
    # over budget: the plan task refuses, naming the limit and the DAG's param; nothing staged
    tight = tmp_path / "tight.yaml"
    tight.write_text(yaml.safe_dump({**data, "budget": {"max_cells": 3}}, sort_keys=False))
    refused = subprocess.run(
        [airflow, "dags", "test", "geodelta_release", "-c", json.dumps({"config": str(tight)})],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    said = refused.stdout + refused.stderr
    assert "budget.max_cells 3" in said and "param yes=true" in said, said[-3000:]
    assert not (tmp_path / "work" / "release").exists()
    conf = {"config": str(config), "cells_per_task": 4, "version": "0.1.0-af", "promote": True}
    proc = run("dags", "test", "geodelta_release", "-c", json.dumps(conf), timeout=900)
    log = proc.stdout + proc.stderr

    releases = tmp_path / "work" / "releases"
    target = releases / f"{cfg.name}-0.1.0-af"
    assert (releases / "LATEST").read_text() == target.name + "\n"
    assert not (tmp_path / "work" / "release").exists()  # moved, not copied
    assert not (target / ".staging").exists()
    check = verify_release(target)
    assert check.ok, check.problems
    assert check.samples > 0
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["version"] == "0.1.0-af"
    assert (target / "report" / "index.html").exists()
    # every task ran: the reference model was trained and gated the release
    assert re.search(r"Marking run <DagRun geodelta_release .*> successful", log)
    assert "new_state=skipped" not in log
    ref = ReferenceMetrics.model_validate_json((target / REFERENCE_METRICS).read_bytes())
    assert ref.config_hash == manifest["config_hash"]
    assert ref.release == target.name
    assert "reference/metrics.json" in {f["path"] for f in manifest["files"]}
    report = (target / "report" / "index.html").read_text()  # re-rendered after training
    assert "not trained yet" not in report and "Text-to-pair retrieval" in report
    assert f"<td class='n'>{ref.masks.f1:.3f}</td>" in report
    # promote=true: the reference change model is the next version's baseline
    baseline = json.loads((releases / "BASELINE").read_text())
    assert baseline["release"] == target.name
    assert baseline["file_sha256"] == ref.weights["change_model"].sha256
    assert (releases / baseline["weights"]).is_file()
    assert f"baseline.weights: {(releases / baseline['weights']).resolve()}" in log

    # a second run of the same version changes nothing that was published
    before = {p.relative_to(target): p.stat().st_mtime_ns for p in target.rglob("*")}
    proc = run("dags", "test", "geodelta_release", "-c", json.dumps(conf), timeout=900)
    log = proc.stdout + proc.stderr
    assert log.count("new_state=skipped") == 1  # train_reference: nothing new to train
    assert "is already published from this config" in log
    assert (releases / "LATEST").read_text() == target.name + "\n"
    assert sorted(p.name for p in releases.iterdir()) == sorted(
        ["BASELINE", "LATEST", "baselines", "published", target.name]
    )
    assert not (tmp_path / "work" / "release").exists()
    after = {p.relative_to(target): p.stat().st_mtime_ns for p in target.rglob("*")}
    assert after == before

    # the same version from another config is refused before any cell is built
    data["shards"] = {"max_samples": 4}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = subprocess.run(
        [airflow, "dags", "test", "geodelta_release", "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "built from another config; bump 'version'" in log
    assert log.count("new_state=failed") == 1  # plan, at once: no retry of a config error
    assert "up_for_retry" not in log
    assert "running task <TaskInstance: geodelta_release.build" not in log
    assert not (tmp_path / "work" / "release").exists()
    assert (releases / "LATEST").read_text() == target.name + "\n"
    after = {p.relative_to(target): p.stat().st_mtime_ns for p in target.rglob("*")}
    assert after == before

    # a new version the gate refuses: publish fails at once with the metric named, moves nothing
    data.pop("shards")
    data["gate"] = {"rules": [{"metric": "masks.f1", "min": 1.0}]}  # only a perfect model
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    conf2 = {**conf, "version": "0.2.0-af", "promote": False}
    proc = subprocess.run(
        [airflow, "dags", "test", "geodelta_release", "-c", json.dumps(conf2)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(
        r"gate: masks\.f1 = [0-9.e-]+, below the minimum 1 \(gate\.rules\[0\]\.min\)", log
    )
    assert log.count("new_state=failed") == 1  # publish, without retry
    assert "up_for_retry" not in log
    assert (releases / "LATEST").read_text() == target.name + "\n"
    assert sorted(p.name for p in releases.iterdir()) == sorted(
        ["BASELINE", "LATEST", "baselines", "published", target.name]
    )
    refused = tmp_path / "work" / "release"
    assert json.loads((refused / "manifest.json").read_text())["version"] == "0.2.0-af"
    assert (refused / REFERENCE_METRICS).is_file()
