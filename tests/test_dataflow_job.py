"""Remote engines (Dataflow, Flink, Spark, a Dask cluster): what their workers are given.

A remote engine's workers see nothing of the driver's disk, so a build that would need it is
refused before any work, naming the key to change (``output.staging``, ``catalog.url``,
``baseline.weights``). With every location a URL, ``geodelta build CONFIG --runner beam --
--runner=DataflowRunner --project P --region R --temp_location gs://BUCKET/tmp`` builds the whole
job; the test takes the job at the point it would be submitted (``Pipeline.run`` on the
DataflowRunner), checks that no transform of it references a local path, then runs that same
pipeline on Beam's in-memory FnApiRunner in place of Dataflow's workers, so the build finishes
end to end into the S3 test double (``tests/s3_server.py``).

Not covered here: the submission itself (``apache-beam[gcp]``, which DataflowRunner needs to
talk to Google Cloud, is not installed, and nothing here has credentials or a network), and
the workers' own environment on Dataflow (geodelta installed in their container).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from geodelta.pipelines.engines.run import RunnerError, check_remote, remote_engine
from geodelta.schemas import BuildConfig, parse_config
from geodelta.sources.demo.catalog import DemoCatalog
from tests.conftest import REPO, minimal_config
from tests.pgstac_server import RangeFileServer
from tests.s3_server import S3Bucket

DATAFLOW = [
    "--runner=DataflowRunner",
    "--project",
    "my-project",
    "--region",
    "europe-west4",
    "--temp_location",
    "gs://my-bucket/tmp",
]


def _cfg(runner: dict[str, Any], **output: Any) -> BuildConfig:
    return parse_config(
        minimal_config(
            runner=runner,
            catalog={"url": "https://example.com/catalog.json"},
            output={"dir": "release", **output},
        ),
        base_dir="/driver/configs",
    )


@pytest.mark.parametrize(
    ("runner", "remote"),
    [
        ({"name": "direct"}, None),
        ({"name": "inprocess"}, None),
        ({"name": "dask"}, None),  # a LocalCluster on this machine
        ({"name": "dask", "dask_address": "tcp://h:8786"}, "the Dask cluster at tcp://h:8786"),
        (
            {"name": "dask", "options": ["--dask_client_address=tcp://h:1"]},
            "the Dask cluster at tcp://h:1",
        ),
        ({"name": "beam", "options": DATAFLOW}, "DataflowRunner"),
        ({"name": "beam", "options": ["--runner=FlinkRunner"]}, None),  # embedded Flink
        (
            {"name": "beam", "options": ["--runner=FlinkRunner", "--flink_master=f:8081"]},
            "FlinkRunner",
        ),
        ({"name": "beam", "options": ["--runner=SparkRunner"]}, None),  # local[4]
        (
            {"name": "beam", "options": ["--runner=SparkRunner", "--spark_master_url=spark://s"]},
            "SparkRunner",
        ),
        (
            {"name": "beam", "options": ["--runner=PortableRunner", "--job_endpoint=j:8099"]},
            "PortableRunner",
        ),
        ({"name": "beam", "options": ["--runner=DirectRunner"]}, None),
    ],
)
def test_remote_engines_are_told_apart_from_local_ones(
    runner: dict[str, Any], remote: str | None
) -> None:
    assert remote_engine(_cfg(runner)) == remote


def test_a_remote_engine_with_a_local_staging_area_or_catalog_is_refused_naming_the_key() -> None:
    dataflow = {"name": "beam", "options": DATAFLOW}
    with pytest.raises(RunnerError, match=r"^DataflowRunner runs .*output\.staging is not set"):
        check_remote(_cfg(dataflow))
    with pytest.raises(
        RunnerError, match=r"output\.staging is the local folder /driver/configs/st"
    ):
        check_remote(_cfg(dataflow, staging="st"))
    with pytest.raises(RunnerError, match=r"output\.staging is memory://s, a filesystem in this"):
        check_remote(_cfg(dataflow, staging="memory://s"))
    ok = _cfg(dataflow, staging="gs://b/staging")
    check_remote(ok)
    local_catalog = ok.model_copy(
        update={"catalog": ok.catalog.model_copy(update={"url": "c.json"})}
    )
    with pytest.raises(
        RunnerError, match=r"catalog\.url is the local path /driver/configs/c\.json"
    ):
        check_remote(local_catalog)
    weights = ok.model_copy(
        update={"baseline": ok.baseline.model_copy(update={"weights": "/models/w.pt"})}
    )
    with pytest.raises(RunnerError, match=r"baseline\.weights is the local path /models/w\.pt"):
        check_remote(weights)
    # a mount every worker shares is said so with a file:// URL
    check_remote(_cfg(dataflow, staging="file:///shared/staging"))
    # local engines are never refused for local folders
    check_remote(_cfg({"name": "direct"}))
    check_remote(_cfg({"name": "dask"}))


def test_a_remote_job_carries_no_folder_of_the_driver_and_the_same_config_hash() -> None:
    from geodelta.pipelines.engines.run import worker_config

    local = _cfg({"name": "direct"}, work_dir="/driver/work")
    assert worker_config(local) is local  # local engines: the config as it is
    dataflow = {"name": "beam", "options": DATAFLOW}
    for out in ("release", "gs://b/release"):
        cfg = _cfg(dataflow, staging="gs://b/staging", work_dir="/driver/work")
        cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": out})})
        sent = worker_config(cfg)
        assert sent.base_dir == "." and sent.output.work_dir is None
        assert sent.output.dir == (out if "://" in out else ".")
        assert sent.output.staging == "gs://b/staging"
        assert sent.config_hash() == cfg.config_hash()
        assert "/driver" not in sent.model_dump_json()


def test_a_scheduler_address_that_is_not_one_is_refused_naming_the_key() -> None:
    cfg = _cfg({"name": "dask", "dask_address": "tcp://host:port"}, staging="s3://b/s")
    with pytest.raises(RunnerError, match=r"runner\.dask_address 'tcp://host:port' is not a"):
        check_remote(cfg)


def _config_file(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "driver" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_cli_refuses_dataflow_with_a_local_staging_area_in_one_line(tmp_path: Path) -> None:
    from geodelta.pipelines import cli

    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["output"] = {"dir": str(tmp_path / "release")}  # the driver assembles it: may be local
    config = _config_file(tmp_path, data)
    args = ["build", str(config), "--runner", "beam", "--", *DATAFLOW]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.output.strip().splitlines() if x.strip()]
    assert line.startswith("error: DataflowRunner runs the cells on other machines")
    assert "output.staging" in line
    # a mount every worker shares (file://): then the catalog, a local file, is refused
    data["output"]["staging"] = (tmp_path / "shared" / "staging").as_uri()
    config = _config_file(tmp_path, data)
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.output.strip().splitlines() if x.strip()]
    assert "catalog.url is the local path" in line
    assert not list(tmp_path.rglob(".staging"))
    assert not list(tmp_path.rglob("cells"))  # nothing planned, nothing staged


# -- the job, taken where it would be submitted ---------------------------------------------


@pytest.fixture(scope="module")
def catalog_server(demo_catalog: DemoCatalog) -> Iterator[RangeFileServer]:
    """The session's demo catalog over HTTP (byte ranges, as blob storage serves COGs)."""
    with RangeFileServer(demo_catalog.catalog_path.parent) as server:
        yield server


def _strings(obj: Any, seen: set[int] | None = None, depth: int = 0) -> Iterator[str]:
    """Every string reachable from a DoFn's state (attributes, containers, config models)."""
    from pydantic import BaseModel

    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 8:
        return
    seen.add(id(obj))
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Path):
        yield str(obj)
    elif isinstance(obj, BaseModel):
        yield from _strings(obj.model_dump(mode="json"), seen, depth + 1)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k, seen, depth + 1)
            yield from _strings(v, seen, depth + 1)
    elif isinstance(obj, list | tuple | set | frozenset):
        for v in obj:
            yield from _strings(v, seen, depth + 1)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith(("geodelta", "apache_beam")):
        yield from _strings(vars(obj), seen, depth + 1)
    elif callable(obj) and getattr(obj, "__module__", "").startswith("geodelta"):
        yield obj.__qualname__


def _configs(obj: Any, depth: int = 0) -> Iterator[BuildConfig]:
    """The build configs in a DoFn's state."""
    if isinstance(obj, BuildConfig):
        yield obj
    elif depth < 4 and isinstance(obj, list | tuple):
        for v in obj:
            yield from _configs(v, depth + 1)
    elif depth < 4 and type(obj).__module__.startswith("geodelta") and hasattr(obj, "__dict__"):
        for v in vars(obj).values():
            yield from _configs(v, depth + 1)


def _job_strings(proto: Any) -> tuple[list[str], list[Any]]:
    """The names of the job's ParDo transforms, and the unpickled state of their DoFns."""
    from apache_beam.internal import pickler
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    names, states = [], []
    for t in proto.components.transforms.values():
        if t.spec.urn != common_urns.primitives.PAR_DO.urn:
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
        names.append(t.unique_name)
        states.append(pickler.loads(payload.do_fn.payload))
    return names, states


@pytest.mark.slow
@pytest.mark.integration
def test_a_dataflow_job_references_no_local_path_and_builds_into_s3(
    demo_catalog: DemoCatalog,
    catalog_server: RangeFileServer,
    s3_bucket: S3Bucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from geodelta.pipelines import cli
    from geodelta.pipelines.release.verify import verify_release

    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["catalog"]["url"] = catalog_server.url_of(demo_catalog.catalog_path)
    data["aoi"] = {"bbox": list(demo_catalog.aoi_bbox)}
    data["output"] = {
        "dir": f"{s3_bucket.url}/release",
        "staging": f"{s3_bucket.url}/staging",
        "work_dir": str(tmp_path / "work"),  # where the driver assembles the release
    }
    data["validation"] = {"great_expectations": False}
    config = _config_file(tmp_path, data)
    jobs: list[dict[str, Any]] = []

    def submit(self: beam.Pipeline) -> Any:
        """Where DataflowRunner would submit the job: keep it, run it on the FnApiRunner."""
        jobs.append(
            {"runner": self.runner, "options": self._options, "proto": self.to_runner_api()}
        )
        result = FnApiRunner().run_pipeline(self, self._options)
        jobs[-1]["markers"] = s3_bucket.keys("staging/cells/")  # the cells, committed
        return result

    monkeypatch.setattr(beam.Pipeline, "run", submit)
    args = ["build", str(config), "--runner", "beam", "--no-progress", "--", *DATAFLOW]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 0, res.output

    (job,) = jobs
    assert type(job["runner"]).__name__ == "DataflowRunner"
    assert job["options"].view_as(StandardOptions).runner == "DataflowRunner"
    gcp = job["options"].view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region) == ("my-project", "europe-west4")
    assert gcp.temp_location == "gs://my-bucket/tmp"
    names, states = _job_strings(job["proto"])
    assert names, "no ParDo in the job"
    strings = {s for state in states for s in _strings(state)}
    staging = f"{s3_bucket.url}/staging"
    assert staging in strings  # the commits and the breaker write to the object store
    # the workers search the build's snapshot of the catalog (searched over HTTP by the driver
    # before any work), staged on the object store beside the cells
    assert f"{staging}/snapshot.parquet" in strings
    assert data["catalog"]["url"] not in strings  # never the live catalog
    # no local path: not the config's folder (base_dir), not the driver's work folder
    local = sorted(s for s in strings if s.startswith(("/", "file:")) or str(tmp_path) in s)
    assert local == [], local
    workers_cfg = [v for state in states for v in _configs(state)]
    assert workers_cfg and all(c.base_dir == "." for c in workers_cfg)
    # the workers' config stands for the same data (its snapshot is gone with the staging area
    # once the build is done: the release's config hash below is the check)
    assert {c.catalog.kind for c in workers_cfg} == {"snapshot"}

    # the build went through: release on S3, staging on S3, verified
    assert res.output.strip().splitlines()[-1] == f"{s3_bucket.url}/release"
    assert s3_bucket.keys("staging/") == []  # removed once the release was uploaded
    keys = s3_bucket.keys("release/")
    assert "release/manifest.json" in keys
    client = s3_bucket.server.client()
    local_copy = tmp_path / "downloaded"
    for key in keys:
        dest = local_copy / key.removeprefix("release/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read())
    check = verify_release(local_copy)
    assert check.ok, check.problems
    manifest = json.loads((local_copy / "manifest.json").read_text())
    assert check.samples == sum(manifest["splits"].values()) > 0
    assert manifest["config_hash"] == parse_config(data).config_hash()  # same data, same hash
    # every cell was committed to the staging area on S3: one sample or one quarantine each
    cells = sum(manifest["splits"].values()) + sum(manifest["quarantined"].values())
    assert len(job["markers"]) == cells
