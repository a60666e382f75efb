"""The same pipeline on Beam's DaskRunner, and pipeline options passed straight through.

The end-to-end test builds the smallest demo with shards in every split twice, on the default
runner (FnApiRunner) and on the DaskRunner over a ``distributed.LocalCluster`` of 2 worker
processes, and compares every file of the two releases byte for byte. Dataflow, Flink and
Spark cannot run here (no cluster, no network): their options are checked to reach Beam's
``PipelineOptions`` and pick the runner, with ``Pipeline.run`` stubbed out.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from geodelta.pipelines.api import BuildResult, build
from geodelta.pipelines.engines.run import RunnerError, check_runner
from geodelta.schemas import QuarantineRecord, TileJob, parse_config
from geodelta.sources.demo.catalog import DemoCatalog
from tests import factories
from tests.conftest import REPO, SMALL_SHARDS, minimal_config

JOB = TileJob(
    cell_id="31N-1280-0569-3902",
    crs="EPSG:32631",
    transform=(10.0, 0.0, 728320.0, 0.0, -10.0, 4995840.0),
    shape=(128, 128),
    bbox_lonlat=(5.90, 45.06, 5.92, 45.08),
    t0_window=(datetime(2020, 6, 1, tzinfo=UTC), datetime(2020, 8, 31, tzinfo=UTC)),
    t1_window=(datetime(2021, 6, 1, tzinfo=UTC), datetime(2021, 8, 31, tzinfo=UTC)),
)


def demo_config(cat: DemoCatalog, out: Path, **extra: Any) -> Any:
    """The shared small-shards demo config (several shards from 12 samples, GX off)."""
    return factories.demo_config(cat, out, **{**SMALL_SHARDS, **extra})


@pytest.fixture(scope="module")
def default_build(
    demo_catalog: DemoCatalog, small_shards_release: BuildResult
) -> tuple[DemoCatalog, BuildResult]:
    """The session's small-shards demo release on the default runner (tests/conftest.py)."""
    return demo_catalog, small_shards_release


def release_bytes(release: Path) -> dict[str, bytes]:
    """manifest.json and every file and shard it lists."""
    manifest = json.loads((release / "manifest.json").read_text())
    paths = [s["path"] for s in manifest["shards"]] + [f["path"] for f in manifest["files"]]
    return {p: (release / p).read_bytes() for p in ["manifest.json", *paths]}


@pytest.mark.slow  # two builds (~40 s on 2 busy cores)
def test_dask_build_equals_the_default_build_byte_for_byte(
    default_build: tuple[DemoCatalog, BuildResult], tmp_path: Path
) -> None:
    cat, expected = default_build
    m = expected.manifest
    assert set(m.splits) == {"train", "val", "test"}  # shards in every split
    assert {s.split for s in m.shards} == {"train", "val", "test"}
    assert sum(m.quarantined.values()) > 0  # quarantine records travel the single chain too

    got = build(
        demo_config(cat, tmp_path / "dask", runner={"name": "dask", "workers": 2}),
        mode="fresh",
        progress=False,
    )
    assert got.cells == expected.cells and got.resumed_cells == 0
    want, have = release_bytes(expected.release_dir), release_bytes(got.release_dir)
    assert sorted(have) == sorted(want)
    differ = [p for p in want if have[p] != want[p]]
    assert differ == [], differ
    assert got.manifest.quarantined == m.quarantined


# -- the single chain ---------------------------------------------------------------------------


@pytest.mark.slow  # imports apache_beam (~5 s)
def test_single_chain_has_one_commit_after_the_last_stage(tmp_path: Path) -> None:
    """DaskRunner computes only the last transform and mixes tagged outputs: one chain."""
    import apache_beam as beam

    from geodelta.pipelines.engines.beam import build_pipeline
    from geodelta.pipelines.stages.worker import Worker

    cfg = parse_config(minimal_config())
    p = beam.Pipeline()
    build_pipeline(p, [JOB], cfg, tmp_path, "0", single_chain=True)
    proto = p.to_runner_api()
    top = [t for t in proto.components.transforms.values() if "/" not in t.unique_name]
    names = [t.unique_name for t in top if t.unique_name]
    stages = [s for s, _ in Worker(cfg, code_version="0").steps()]
    assert [n for n in names if n.startswith("commit")] == ["commit"]
    # every stage has exactly one output and feeds the next; the commit reads the last stage
    by_name = {t.unique_name: t for t in top}
    for before, after in zip([*stages], [*stages[1:], "commit"], strict=True):
        (out,) = by_name[before].outputs.values()
        (inp,) = by_name[after].inputs.values()
        assert out == inp, (before, after)


@pytest.mark.slow  # imports apache_beam (~5 s)
def test_stage_fn_passes_quarantine_through_and_emits_its_own_on_the_main_output() -> None:
    import apache_beam as beam

    from geodelta.pipelines.engines.beam import StageFn

    cfg = parse_config(minimal_config())
    earlier = QuarantineRecord(
        key=JOB.cell_id, cell_id=JOB.cell_id, stage="pair", reason="no_pair", detail="test"
    )
    fn = StageFn("load", cfg, "0", single_chain=True)
    fn.setup()
    assert list(fn.process(earlier)) == [earlier]  # untouched, not run through the stage

    def boom(record: Any) -> Any:
        raise OSError("disk on fire")

    fn.fn = boom
    (out,) = fn.process(JOB)
    assert isinstance(out, QuarantineRecord)
    assert (out.stage, out.reason, out.cell_id) == ("load", "error:OSError", JOB.cell_id)
    tagged = StageFn("load", cfg, "0")
    tagged.setup()
    tagged.fn = boom
    (out,) = tagged.process(JOB)
    assert isinstance(out, beam.pvalue.TaggedOutput) and out.tag == "quarantine"


@pytest.mark.slow  # imports apache_beam (~5 s)
def test_dask_options_scheduler_partitions_and_user_options() -> None:
    from apache_beam.runners.dask.dask_runner import DaskOptions

    from geodelta.pipelines.engines.dask import dask_partitions, dask_pipeline_options

    assert dask_partitions(15, 2) == 4  # two per worker
    assert dask_partitions(1000, 2) == 125  # at most 8 cells a partition
    assert dask_partitions(3, 8) == 3 and dask_partitions(1, 2) == 1
    cfg = parse_config(minimal_config(runner={"name": "dask", "workers": 2}))
    opts = dask_pipeline_options(cfg, 15, "tcp://10.0.0.5:8786").view_as(DaskOptions)
    assert opts.address == "tcp://10.0.0.5:8786" and opts.npartitions == 4
    user = parse_config(
        minimal_config(runner={"name": "dask", "options": ["--dask_partition_size=2"]})
    )
    opts = dask_pipeline_options(user, 15, None).view_as(DaskOptions)
    assert opts.partition_size == 2 and opts.npartitions is None and opts.address is None


# -- pass-through options (Dataflow, Flink, Spark) ----------------------------------------------

DATAFLOW = [
    "--runner=DataflowRunner",
    "--project",  # Beam also takes an option's value as the next argument
    "my-project",
    "--region=europe-west4",
    "--temp_location=gs://my-bucket/tmp",
]
FLINK = ["--runner=FlinkRunner", "--flink_master=flink.example:8081", "--parallelism=8"]
SPARK = ["--runner=SparkRunner", "--spark_master_url=spark://spark.example:7077"]


def _cli_config(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> Any:
    """The config ``geodelta build`` would run with ``args`` (the build itself stubbed)."""
    from geodelta.pipelines import cli

    seen: dict[str, Any] = {}

    def fake_run_build(cfg: Any, mode: str, progress: bool, **_: Any) -> Any:
        seen["cfg"] = cfg
        raise cli._fail("stubbed")

    monkeypatch.setattr(cli, "_run_build", fake_run_build)
    res = CliRunner().invoke(cli.app, ["build", str(REPO / "configs" / "demo.yaml"), *args])
    assert "cfg" in seen, res.output
    return seen["cfg"]


@pytest.mark.slow  # imports apache_beam (~5 s)
@pytest.mark.parametrize(
    ("options", "runner", "expected"),
    [
        (
            DATAFLOW,
            "DataflowRunner",
            {
                ("GoogleCloudOptions", "project"): "my-project",
                ("GoogleCloudOptions", "region"): "europe-west4",
                ("GoogleCloudOptions", "temp_location"): "gs://my-bucket/tmp",
            },
        ),
        (
            FLINK,
            "FlinkRunner",
            {
                ("FlinkRunnerOptions", "flink_master"): "flink.example:8081",
                ("FlinkRunnerOptions", "parallelism"): 8,
            },
        ),
        (
            SPARK,
            "SparkRunner",
            {("SparkRunnerOptions", "spark_master_url"): "spark://spark.example:7077"},
        ),
    ],
)
def test_engine_options_pass_straight_through_to_pipeline_options(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    options: list[str],
    runner: str,
    expected: dict[tuple[str, str], Any],
) -> None:
    import apache_beam as beam
    from apache_beam.options import pipeline_options

    from geodelta.pipelines.engines import beam as beam_adapter

    cfg = _cli_config(monkeypatch, ["--runner", "beam", "--", *options])
    assert cfg.runner.name == "beam" and cfg.runner.options == options
    check_runner(cfg)

    seen: dict[str, Any] = {}

    def fake_build(p: Any, *args: Any, single_chain: bool = False) -> None:
        seen["options"], seen["runner"], seen["single_chain"] = p.options, p.runner, single_chain

    class Done:
        def wait_until_finish(self) -> str:
            return "DONE"

    monkeypatch.setattr(beam_adapter, "build_pipeline", fake_build)
    monkeypatch.setattr(beam.Pipeline, "run", lambda self: Done())  # no engine here
    beam_adapter.run_beam_options([JOB], cfg, tmp_path, code_version="0")
    assert type(seen["runner"]).__name__ == runner
    assert seen["single_chain"] is False
    got = {
        (view, name): getattr(seen["options"].view_as(getattr(pipeline_options, view)), name)
        for view, name in expected
    }
    assert got == expected


def test_cli_dask_address_selects_the_dask_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cli_config(monkeypatch, ["--dask-address", "tcp://10.0.0.5:8786"])
    assert (cfg.runner.name, cfg.runner.dask_address) == ("dask", "tcp://10.0.0.5:8786")
    cfg = _cli_config(monkeypatch, ["--runner", "dask", "--", "--dask_npartitions=7"])
    assert cfg.runner.options == ["--dask_npartitions=7"] and cfg.runner.dask_address is None


def test_cli_refuses_a_stray_argument_before_the_options() -> None:
    from geodelta.pipelines import cli

    args = ["build", str(REPO / "configs" / "demo.yaml"), "stray", "--runner=X"]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 2 and "unexpected argument 'stray'" in res.output


def test_runner_sections_that_cannot_run_are_refused_naming_the_key() -> None:
    with pytest.raises(RunnerError, match=r"runner.options names no runner.*--runner="):
        check_runner(parse_config(minimal_config(runner={"name": "beam"})))
    with pytest.raises(RunnerError, match=r"--runner=FlinkRunner but runner.name is 'direct'"):
        check_runner(parse_config(minimal_config(runner={"options": FLINK})))
    with pytest.raises(RunnerError, match="'inprocess' has none"):
        check_runner(
            parse_config(minimal_config(runner={"name": "inprocess", "options": ["--x=1"]}))
        )
    check_runner(parse_config(minimal_config(runner={"name": "beam", "options": SPARK})))


def test_runner_and_output_location_leave_the_config_hash_alone() -> None:
    base = parse_config(minimal_config())
    moved = parse_config(
        minimal_config(
            runner={"name": "dask", "dask_address": "tcp://h:8786", "options": ["--x=1"]},
            output={"dir": "s3://bucket/release", "work_dir": "/scratch/w"},
        )
    )
    assert moved.config_hash() == base.config_hash()


def test_stage_counts_pass_every_stage_before_the_one_that_quarantined() -> None:
    from geodelta.pipelines.engines.commit import StageCounts
    from geodelta.pipelines.stages.worker import StagedSample

    stages = ["pair", "load", "coregister"]
    counts = StageCounts()
    dropped = QuarantineRecord(
        key=JOB.cell_id, cell_id=JOB.cell_id, stage="load", reason="read_error", detail="x"
    )
    counts.add_outcome(stages, dropped)
    counts.add_outcome(stages, StagedSample(cell_id=JOB.cell_id, key="k", members={"json": b""}))
    assert counts.rows() == [("pair", 2, 0), ("load", 1, 1), ("coregister", 1, 0)]


def test_cli_staging_sets_output_staging(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--staging`` overrides output.staging: a URL as given, a folder made absolute."""
    cfg = _cli_config(monkeypatch, ["--staging", "s3://bucket/runs/stg"])
    assert cfg.output.staging == "s3://bucket/runs/stg"
    monkeypatch.chdir(tmp_path)
    cfg = _cli_config(monkeypatch, ["--staging", "stg"])
    assert cfg.output.staging == str(tmp_path / "stg")
    assert _cli_config(monkeypatch, []).output.staging is None
