"""The Airflow DAG against an object store: ``airflow dags test`` with ``output.staging`` and
``output.dir`` on the S3 test double (moto's server mode, ``tests/s3_server.py``: a TEST DOUBLE
of S3, not S3).

The mapped build tasks commit their cells to the staging area on S3, the release task assembles
the release from it, uploads it and removes the staging area, the validate task verifies the
release at its URL; train_reference and publish are skipped (both work on a local release
folder). Runs in ``.venv-airflow`` by subprocess, like ``tests/test_dags.py`` (whose helpers it
uses); skips without that venv except in CI.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from geodelta.sources.demo.catalog import DemoCatalog
from tests.conftest import REPO
from tests.s3_server import S3Bucket
from tests.test_dags import _airflow_env, airflow_venv  # noqa: F401 (a fixture)


@pytest.mark.slow
@pytest.mark.integration
def test_airflow_dags_test_builds_a_verified_release_into_s3(
    airflow_venv: Path,  # noqa: F811
    demo_catalog: DemoCatalog,
    s3_bucket: S3Bucket,
    tmp_path: Path,
) -> None:
    from geodelta.pipelines.release.verify import verify_release

    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["catalog"]["url"] = str(demo_catalog.catalog_path)
    data["aoi"] = {"bbox": list(demo_catalog.aoi_bbox)}
    data["output"] = {
        "dir": f"{s3_bucket.url}/releases/demo",
        "staging": f"{s3_bucket.url}/staging/demo",
    }
    data["runner"] = {"name": "inprocess"}
    data["validation"] = {"great_expectations": False}  # not what this test is about
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))

    env = _airflow_env(tmp_path / "airflow")  # this process's AWS_* (the fixture's) included
    assert env["AWS_ENDPOINT_URL"] == s3_bucket.server.endpoint

    def run(*args: str, timeout: float) -> str:
        proc = subprocess.run(
            [str(airflow_venv), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, (
            f"airflow {args[0]}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
        return proc.stdout + proc.stderr

    run("db", "migrate", timeout=300)
    run("pools", "set", "geodelta_llm", "2", "bounds LLM concurrency", timeout=120)
    conf = {"config": str(config), "cells_per_task": 8, "version": "0.1.0-s3"}
    log = run("dags", "test", "geodelta_release", "-c", json.dumps(conf), timeout=900)

    assert re.search(r"Marking run <DagRun geodelta_release .*> successful", log)
    # several mapped build tasks, each committing its cells to the staging area on S3
    built = set(re.findall(r"\[DAG TEST\] end task task_id=build map_index=(\d+)", log))
    assert len(built) >= 2, log[-4000:]
    # train_reference and publish need a local release folder: skipped, with the reason
    assert log.count("new_state=skipped") == 2
    assert "is a URL; the reference model trains on a local release folder" in log
    # the release is on S3, complete, verified; the staging area is gone from the bucket
    keys = s3_bucket.keys("releases/demo/")
    assert "releases/demo/manifest.json" in keys
    assert s3_bucket.keys("staging/") == []
    client = s3_bucket.server.client()
    local = tmp_path / "downloaded"
    for key in keys:
        dest = local / key.removeprefix("releases/demo/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read())
    check = verify_release(local)
    assert check.ok, check.problems
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["version"] == "0.1.0-s3"
    assert check.samples == sum(manifest["splits"].values()) > 0
    # no staging area on this machine's disk: the build tasks committed their cells to S3
    assert not list(tmp_path.rglob("cells"))
