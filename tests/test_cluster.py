"""A build on a real multi-process Dask cluster, into an S3 test double, with nothing shared on
disk between the driver and the workers.

The cluster is ``dask scheduler`` and two ``dask worker`` processes (``tests/dask_cluster.py``:
one thread each, no nanny, each in its own temporary folder); the object store is moto's server
mode (``tests/s3_server.py``: a TEST DOUBLE of S3, not S3); the demo catalog is served over HTTP
with byte ranges (``tests.pgstac_server.RangeFileServer``), so the workers read it as they would
read a catalog on blob storage, never from the driver's disk. The driver is the CLI,
``geodelta build CONFIG --runner dask --dask-address tcp://...``, in a process of its own; the
staging area (``output.staging``) and the release (``output.dir``) are ``s3://`` URLs.

The release must be byte-identical, file for file (manifest included), to the same config built
locally in this process; a worker killed (SIGKILL) while the cells run changes nothing: Dask runs
its tasks again on the other worker, commits are idempotent, no sample is lost or doubled.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from geodelta.sources.demo.catalog import DemoCatalog
from tests.conftest import REPO
from tests.dask_cluster import DaskCluster, dask_cluster, free_port
from tests.pgstac_server import RangeFileServer
from tests.s3_server import S3Bucket

GEODELTA = Path(sys.executable).parent / "geodelta"
#: Cells per side of a plan block: blocks of up to 4 cells, so the demo's ~15 cells make
#: several elements (a worker killed mid-build has work in flight). Outside the config hash.
BLOCK_CELLS = 2
#: Partitions of the Dask bag: one element each (a finished element shows as markers at once).
PARTITIONS = 16
BUILD_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def catalog_server(demo_catalog: DemoCatalog) -> Iterator[RangeFileServer]:
    """The session's demo catalog over HTTP (byte ranges, as blob storage serves COGs)."""
    with RangeFileServer(demo_catalog.catalog_path.parent) as server:
        yield server


def config_data(
    cat: DemoCatalog, catalog_url: str, output_dir: str, **extra: Any
) -> dict[str, Any]:
    """configs/demo.yaml over the demo catalog at ``catalog_url``, written to ``output_dir``."""
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["catalog"]["url"] = catalog_url
    data["aoi"] = {"bbox": list(cat.aoi_bbox)}
    data["output"] = {"dir": output_dir}
    data["runner"] = {"name": "inprocess", "block_cells": BLOCK_CELLS}
    data.update(extra)
    return data


@pytest.fixture(scope="module")
def local_release(
    demo_catalog: DemoCatalog,
    catalog_server: RangeFileServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The same config built locally, in this process (in-process runner, local folder)."""
    from geodelta.pipelines.api import build
    from geodelta.schemas import parse_config

    root = tmp_path_factory.mktemp("cluster-local")
    url = catalog_server.url_of(demo_catalog.catalog_path)
    cfg = parse_config(config_data(demo_catalog, url, str(root / "release")), base_dir=str(root))
    return build(cfg, mode="fresh", progress=False).release_dir


def local_files(release: Path) -> dict[str, bytes]:
    """Every file of a local release folder, by path relative to it."""
    return {
        p.relative_to(release).as_posix(): p.read_bytes()
        for p in sorted(release.rglob("*"))
        if p.is_file()
    }


def s3_files(bucket: S3Bucket, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix/`` in the bucket, by key relative to it."""
    client = bucket.server.client()
    return {
        key.removeprefix(prefix + "/"): client.get_object(Bucket=bucket.name, Key=key)[
            "Body"
        ].read()
        for key in bucket.keys(prefix + "/")
    }


def sample_keys(files: dict[str, bytes]) -> list[str]:
    """The sample keys of a release's ``samples.parquet``, in file order."""
    import io

    import pyarrow.parquet as pq

    return [str(k) for k in pq.read_table(io.BytesIO(files["samples.parquet"])).column("key")]


def assert_same_release(got: dict[str, bytes], want: dict[str, bytes]) -> None:
    """Same files, same bytes; every sample once (the counts of the manifest, the keys)."""
    assert sorted(got) == sorted(want)
    differ = [p for p in want if got[p] != want[p]]
    assert differ == [], differ
    manifest = json.loads(got["manifest.json"])
    keys = sample_keys(got)
    assert len(keys) == len(set(keys)) == sum(manifest["splits"].values()) > 0
    assert sum(s["samples"] for s in manifest["shards"]) == len(keys)
    assert keys == sample_keys(want)


def write_cluster_config(
    tmp_path: Path,
    cat: DemoCatalog,
    server: RangeFileServer,
    bucket: S3Bucket,
) -> Path:
    """The cluster build's config: staging and release on the S3 test double."""
    data = config_data(
        cat,
        server.url_of(cat.catalog_path),
        f"{bucket.url}/release",
    )
    data["output"]["staging"] = f"{bucket.url}/staging"
    data["runner"]["options"] = [f"--dask_npartitions={PARTITIONS}"]
    path = tmp_path / "driver" / "cluster.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_build(config: Path, cluster: DaskCluster, env: dict[str, str]) -> subprocess.Popen[str]:
    """``geodelta build CONFIG --runner dask --dask-address ADDRESS`` in a process of its own."""
    cmd = [str(GEODELTA), "build", str(config), "--runner", "dask"]
    cmd += ["--dask-address", cluster.address, "--no-progress"]
    return subprocess.Popen(
        cmd,
        cwd=config.parent,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(
    proc: subprocess.Popen[str], cluster: DaskCluster, bucket: S3Bucket, seen: int = 0
) -> tuple[str, str, int]:
    """Wait for the driver, watching the staging area on the object store; the driver's
    stdout (the release's location), its stderr (the summary table) and the most cell markers
    seen there at once (the test fails with every log when the build failed)."""
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        seen = max(seen, len(bucket.keys("staging/cells/")))
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate()
    assert proc.returncode == 0, f"{out[-3000:]}\n{err[-6000:]}\n{cluster.logs()}"
    return out, err, seen


def planned_cells(output: str) -> int:
    """The cells the build planned, from its summary table."""
    found = re.search(r"cells planned\D+(\d+)", output)
    assert found is not None, output
    return int(found.group(1))


@pytest.mark.slow
@pytest.mark.integration
def test_a_build_on_a_dask_cluster_into_s3_equals_the_local_build(
    demo_catalog: DemoCatalog,
    catalog_server: RangeFileServer,
    local_release: Path,
    s3_bucket: S3Bucket,
    tmp_path: Path,
) -> None:
    config = write_cluster_config(tmp_path, demo_catalog, catalog_server, s3_bucket)
    env = s3_bucket.server.env()
    with dask_cluster(tmp_path / "cluster", 2, env=env) as cluster:
        out, err, seen = finish(start_build(config, cluster, env), cluster, s3_bucket)
        worker_files = {
            p.relative_to(cluster.root).as_posix()
            for p in cluster.root.rglob("*")
            if p.is_file() and "dask-scratch" not in p.parts
        }
    assert out.strip().splitlines()[-1] == f"{s3_bucket.url}/release"
    assert_same_release(s3_files(s3_bucket, "release"), local_files(local_release))
    # the cells were committed to the staging area on the object store (removed once the
    # release was uploaded), never to a folder of the driver
    assert 0 < seen <= planned_cells(err)
    assert s3_bucket.keys("staging/") == []
    assert not list((tmp_path / "driver").rglob("cells"))
    # the workers wrote nothing of the build into their own folders: only their logs
    assert worker_files == {"scheduler.log", "worker-0/worker.log", "worker-1/worker.log"}


@pytest.mark.slow
@pytest.mark.integration
def test_a_worker_killed_mid_build_changes_no_byte(
    demo_catalog: DemoCatalog,
    catalog_server: RangeFileServer,
    local_release: Path,
    s3_bucket: S3Bucket,
    tmp_path: Path,
) -> None:
    config = write_cluster_config(tmp_path, demo_catalog, catalog_server, s3_bucket)
    env = s3_bucket.server.env()
    want = local_files(local_release)
    with dask_cluster(tmp_path / "cluster", 2, env=env) as cluster:
        proc = start_build(config, cluster, env)
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        while not (seen := s3_bucket.keys("staging/cells/")):  # the first cells are committed
            assert proc.poll() is None, proc.communicate()[1][-6000:]
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.2)
        killed_while_running = proc.poll() is None
        cluster.kill_worker(0)
        _, err, _ = finish(proc, cluster, s3_bucket, len(seen))
        assert cluster.workers[0].proc.returncode == -9  # SIGKILL: no clean shutdown
        assert cluster.workers[1].proc.poll() is None  # the other one finished the build
        log = (cluster.root / "scheduler.log").read_text(errors="replace")
    assert killed_while_running
    assert 0 < len(seen) < planned_cells(err)  # the worker died with cells still to run
    assert "Remove worker" in log, log[-3000:]  # the scheduler saw it go
    assert_same_release(s3_files(s3_bucket, "release"), want)


def test_an_unreachable_scheduler_is_refused_before_any_work(tmp_path: Path) -> None:
    from geodelta.pipelines import cli

    port = free_port()  # nothing listens there
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["output"] = {"dir": str(tmp_path / "release")}
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    address = f"tcp://127.0.0.1:{port}"
    res = CliRunner().invoke(cli.app, ["build", str(config), "--dask-address", address])
    assert res.exit_code == 2, res.output  # refused: nothing ran
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: cannot reach the Dask scheduler at " + address)
    assert "--dask-address" in lines[-1]
    assert not (tmp_path / "release" / ".staging").exists()  # nothing planned or staged
