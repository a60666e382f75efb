"""``geodelta build CONFIG --from PREVIOUS_RELEASE`` (issue 14, incremental versions).

The previous release is the demo over its AOI cut by 30 % of its width (11 of 15 cells); the
new version grows it back to the whole demo AOI. Reused samples must hold exactly the bytes a
full build writes (the shards of the ``--from`` build equal a full build's, file for file), the
new cells are processed, the counts are right, and ``--from`` refuses another dataset, another
sample-shaping config and a folder that is not a release, in one line (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from typer.testing import CliRunner

from geodelta.errors import BuildError
from geodelta.pipelines.api import build, summary_rows, verify
from geodelta.pipelines.cli import app
from geodelta.pipelines.release.incremental import (
    RELEASE_SECTIONS,
    differing_sections,
    open_previous,
    sample_inputs,
)
from geodelta.pipelines.release.layout import (
    DRIFT,
    INCREMENTAL,
    SAMPLES_TABLE,
    iter_tar_samples,
    read_table,
    shard_files,
)
from tests.conftest import REPO
from tests.factories import demo_config

if TYPE_CHECKING:
    from geodelta.sources.demo.catalog import DemoCatalog

#: Share of the demo AOI's width the previous version leaves out (its west side).
CUT = 0.3
#: All builds here: in-process, no Great Expectations (both sections alike in every build).
FAST: dict[str, Any] = {
    "runner": {"name": "inprocess"},
    "validation": {"great_expectations": False},
}


def _small_bbox(catalog: DemoCatalog) -> list[float]:
    x0, y0, x1, y1 = catalog.aoi_bbox
    return [x0 + CUT * (x1 - x0), y0, x1, y1]


def _members(release: Path) -> dict[str, dict[str, bytes]]:
    """key -> members of every sample in a release's shards."""
    return {k: m for shard in shard_files(release) for k, m in iter_tar_samples(shard)}


@pytest.fixture(scope="module")
def builds(demo_catalog: DemoCatalog, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """prev (the cut AOI), full (the whole AOI, from scratch), grown (the whole AOI --from
    prev), shrunk (the cut AOI --from full)."""
    root = tmp_path_factory.mktemp("incremental")
    small = {"aoi": {"bbox": _small_bbox(demo_catalog)}}
    out: dict[str, Any] = {}
    out["prev"] = build(demo_config(demo_catalog, root / "prev", **small, **FAST), progress=False)
    out["full"] = build(demo_config(demo_catalog, root / "full", **FAST), progress=False)
    out["grown"] = build(
        demo_config(demo_catalog, root / "grown", version="0.2.0", **FAST),
        progress=False,
        from_release=out["prev"].release_dir,
    )
    out["shrunk"] = build(
        demo_config(demo_catalog, root / "shrunk", **small, **FAST),
        progress=False,
        from_release=out["full"].release_dir,
    )
    return out


def test_grown_aoi_counts(builds: dict[str, Any]) -> None:
    prev, full, grown = builds["prev"], builds["full"], builds["grown"]
    assert (prev.cells, full.cells) == (11, 15)  # the fixture's premise: 4 cells more
    prev_cells = set(read_table(prev.release_dir, SAMPLES_TABLE).column("cell_id").to_pylist())
    prev_quarantined = set(
        read_table(prev.release_dir, "quarantine.parquet")["cell_id"].to_pylist()
    )
    inc = grown.incremental
    assert inc["from"] == "geodelta-demo 0.1.0"
    assert inc["from_config_hash"] == prev.manifest.config_hash
    assert inc["reused"] == len(prev_cells) == prev.samples
    assert inc["new"] == full.cells - prev.cells
    assert inc["retried"] == len(prev_quarantined) and inc["changed"] == inc["retried"]
    assert inc["removed"] == 0
    assert inc["reused"] + inc["new"] + inc["changed"] == grown.cells
    assert grown.resumed_cells == 0
    # what the release, its card and its report say
    assert json.loads((grown.release_dir / INCREMENTAL).read_bytes()) == inc
    assert INCREMENTAL in {f.path for f in grown.manifest.files}
    card = (grown.release_dir / "README.md").read_text()
    assert "## Built incrementally" in card
    assert f"| {inc['reused']} | {inc['new']} | {inc['changed']} | 0 |" in card
    report = (grown.release_dir / "report" / "index.html").read_text()
    assert f"{inc['reused']} cells reused, {inc['new']} new" in report
    assert not (full.release_dir / INCREMENTAL).exists()
    # the catalog did not move: a drift check over the previous release's cells, no drift
    drift = json.loads((grown.release_dir / DRIFT).read_bytes())
    assert DRIFT in {f.path for f in grown.manifest.files}
    assert (drift["added"], drift["removed"], drift["changed"], drift["affected_samples"]) == (
        0,
        0,
        0,
        0,
    )
    assert drift["cells_searched"] == prev.cells and drift["items_before"] > 0
    assert drift["items_before"] == drift["items_after"] and drift["items"] == []
    assert "No drift: the catalog returns the items" in report
    assert grown.drift == drift and full.drift is None
    row = ("catalog drift", "0 added, 0 removed, 0 changed items; 0 samples affected")
    assert row in summary_rows(grown)
    checked = verify(grown.release_dir, strict=True)  # every file listed, every member decodes
    assert checked.ok and not checked.notes, (checked.problems, checked.notes)


def test_reused_samples_are_the_bytes_a_full_build_writes(builds: dict[str, Any]) -> None:
    prev, full, grown = builds["prev"], builds["full"], builds["grown"]
    old, new = _members(prev.release_dir), _members(grown.release_dir)
    assert set(old) < set(new)
    for key, members in old.items():  # copied byte for byte, but the release's config hash
        assert set(new[key]) == set(members)
        for name, data in members.items():
            if name != "json":
                assert new[key][name] == data, (key, name)
        was, now = json.loads(members["json"]), json.loads(new[key]["json"])
        assert now["config_hash"] == grown.manifest.config_hash != was["config_hash"]
        assert {**was, "config_hash": now["config_hash"]} == now
    # version 0.2.0 differs from the full build's 0.1.0: the hash in every json member too
    assert grown.manifest.config_hash != full.manifest.config_hash
    fresh = _members(full.release_dir)
    assert set(fresh) == set(new)
    for key in fresh:
        for name in fresh[key]:
            if name != "json":
                assert fresh[key][name] == new[key][name]


def test_shrunk_from_full_is_byte_identical_to_a_fresh_build(builds: dict[str, Any]) -> None:
    """Same config as prev (same hash): every shard and table equals prev's, file for file."""
    prev, shrunk = builds["prev"], builds["shrunk"]
    inc = shrunk.incremental
    assert inc["reused"] == prev.samples and inc["new"] == 0
    assert inc["removed"] == builds["full"].samples - prev.samples > 0
    assert shrunk.manifest.config_hash == prev.manifest.config_hash
    a, b = shard_files(prev.release_dir), shard_files(shrunk.release_dir)
    assert [p.name for p in a] == [p.name for p in b]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    for table in (SAMPLES_TABLE, "quarantine.parquet"):
        assert (prev.release_dir / table).read_bytes() == (shrunk.release_dir / table).read_bytes()
    # collection.json lists the card, incremental.json and drift.json, which a --from build
    # adds to; the rest (extent, links, summaries, shards, tables) is the same
    roots = (prev.release_dir, shrunk.release_dir)
    cols = [json.loads((r / "collection.json").read_text()) for r in roots]
    for col in cols:
        col["assets"] = {
            k: v for k, v in col["assets"].items() if k not in ("card", "incremental", "drift")
        }
    assert cols[0] == cols[1]


def test_changed_items_are_not_reused(builds: dict[str, Any], demo_catalog: DemoCatalog) -> None:
    """The identity rule on one sample: other items (or another cell, split, clear fraction)
    than the previous sample recorded -> processed; the same -> its json re-stamped only."""
    from geodelta.pipelines.build import planned
    from geodelta.pipelines.release.incremental import _restamped
    from geodelta.pipelines.stages.worker import Worker
    from geodelta.schemas import ScenePair
    from geodelta.sources.profiles import apply_defaults

    prev = builds["prev"]
    cfg = apply_defaults(demo_config(demo_catalog, prev.release_dir, **FAST))
    key, members = next(iter(_members(prev.release_dir).items()))
    meta = json.loads(members["json"])
    job = next(j for j in planned(cfg) if j.cell_id == meta["cell_id"])
    pair = Worker(cfg, code_version=meta["code_version"]).pair(job)
    assert isinstance(pair, ScenePair) and pair.key == key
    inputs = sample_inputs(pair)
    same = _restamped(members["json"], inputs, "0" * 64, meta["code_version"])
    assert same is not None and json.loads(same) == {**meta, "config_hash": "0" * 64}
    for field, value in (
        ("before_item", "another-item"),
        ("label_items", ("lc-x", "lc-y")),
        ("split", "test" if meta["split"] != "test" else "train"),
        ("after_clear", 0.5),
    ):
        assert (
            _restamped(members["json"], {**inputs, field: value}, "0" * 64, meta["code_version"])
            is None
        ), field
    assert _restamped(members["json"], inputs, "0" * 64, "0.0.0-other") is None  # other code


def test_sections_that_shape_samples() -> None:
    base = {"name": "d", "version": "1", "aoi": {"bbox": [0, 0, 1, 1]}, "imagery": {"b": 1}}
    grown = {**base, "version": "2", "aoi": {"bbox": [0, 0, 2, 1]}, "shards": {"n": 3}}
    assert differing_sections(base, grown) == []
    assert differing_sections(base, {**base, "imagery": {"b": 2}, "splits": {}}) == [
        "imagery",
        "splits",
    ]
    assert {"splits", "annotation", "labels", "licence"}.isdisjoint(RELEASE_SECTIONS)


def _yaml_config(tmp: Path, catalog: DemoCatalog, out: Path, **extra: Any) -> Path:
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["catalog"]["url"] = str(catalog.catalog_path)
    data["aoi"] = {"bbox": list(catalog.aoi_bbox)}
    data["output"] = {"dir": str(out)}
    data.update(FAST)
    data.update(extra)
    path = tmp / f"config-{len(list(tmp.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _refused(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_refusals(builds: dict[str, Any], demo_catalog: DemoCatalog, tmp_path: Path) -> None:
    prev = str(builds["prev"].release_dir)
    out = tmp_path / "out"
    other_name = _yaml_config(tmp_path, demo_catalog, out, name="another-dataset")
    line = _refused(["build", str(other_name), "--from", prev, "--no-progress"])
    assert "'geodelta-demo'" in line and "'another-dataset'" in line
    shaped = _yaml_config(
        tmp_path,
        demo_catalog,
        out,
        annotation={"annotator": "template", "captions_per_sample": 6},
        pairing={"min_clear_fraction": 0.9, "min_gap_days": 180},
    )
    line = _refused(["build", str(shaped), "--from", prev, "--no-progress"])
    assert "(annotation, pairing)" in line
    ok = _yaml_config(tmp_path, demo_catalog, out)
    line = _refused(["build", str(ok), "--from", str(tmp_path), "--no-progress"])
    assert "is not a release" in line and "manifest.json is missing" in line
    line = _refused(["build", str(ok), "--from", str(tmp_path / "nowhere"), "--no-progress"])
    assert "is not a release (no such folder)" in line
    assert not out.exists()  # refused before anything was written


def test_open_previous_accepts_another_version_and_aoi(
    builds: dict[str, Any], demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    cfg = demo_config(demo_catalog, tmp_path, version="9.9.9", description="other", **FAST)
    prev = open_previous(builds["prev"].release_dir, cfg)
    assert len(prev.samples) == builds["prev"].samples
    with pytest.raises(BuildError, match=r"\(labels\)"):
        open_previous(
            builds["prev"].release_dir,
            demo_config(
                demo_catalog,
                tmp_path,
                labels={**cfg.labels.model_dump(), "min_region_px": 9},
                **FAST,
            ),
        )


def test_check_runs_the_from_refusals_before_any_work(
    builds: dict[str, Any], demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    """``build --check --from``: the same one-line refusals, exit 2; accepted: exit 0 with a
    line saying so; nothing written either way."""
    prev = str(builds["prev"].release_dir)
    out = tmp_path / "out"
    other_name = _yaml_config(tmp_path, demo_catalog, out, name="another-dataset")
    line = _refused(["build", str(other_name), "--check", "--from", prev])
    assert "'geodelta-demo'" in line and "'another-dataset'" in line
    shaped = _yaml_config(tmp_path, demo_catalog, out, pairing={"min_gap_days": 180})
    line = _refused(["build", str(shaped), "--check", "--from", prev])
    assert "(pairing)" in line
    ok = _yaml_config(tmp_path, demo_catalog, out)
    line = _refused(["build", str(ok), "--check", "--from", str(tmp_path / "nowhere")])
    assert "is not a release (no such folder)" in line
    res = CliRunner().invoke(app, ["build", str(ok), "--check", "--from", prev])
    assert res.exit_code == 0, res.output
    assert f"ok  from: geodelta-demo 0.1.0 ({builds['prev'].samples} samples)" in res.stdout
    assert "pre-flight passed" in res.stdout
    assert not out.exists()


@pytest.fixture(params=["memory", pytest.param("s3", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> str:
    """Where a previous release is uploaded: ``memory://``, or a bucket of the S3 test double
    (moto's server, tests/s3_server.py)."""
    if request.param == "memory":
        return "memory://geodelta-from-test"
    return str(request.getfixturevalue("s3_bucket").url)


def test_from_a_release_at_a_url(
    builds: dict[str, Any], demo_catalog: DemoCatalog, tmp_path: Path, store: str
) -> None:
    """``--from`` an fsspec URL: the manifest and tables are fetched first, the shards of
    reused samples when copied; same counts and bytes as from the folder."""
    import fsspec

    from geodelta.pipelines.release.upload import upload_release

    prev = builds["prev"]
    url = f"{store}/prev-0.1.0"
    upload_release(prev.release_dir, url)
    grown = build(
        demo_config(demo_catalog, tmp_path / "grown", version="0.2.0", **FAST),
        progress=False,
        from_release=url,
    )
    assert grown.incremental == builds["grown"].incremental
    assert [p.read_bytes() for p in shard_files(grown.release_dir)] == [
        p.read_bytes() for p in shard_files(builds["grown"].release_dir)
    ]
    assert (grown.release_dir / DRIFT).read_bytes() == (
        builds["grown"].release_dir / DRIFT
    ).read_bytes()
    fs, path = fsspec.core.url_to_fs(url)
    fs.rm(f"{path}/manifest.json")
    with pytest.raises(BuildError, match=r"is not a release \(manifest.json is missing\)"):
        open_previous(url, demo_config(demo_catalog, tmp_path))
    fs.rm(path, recursive=True)


def test_cells_whose_searches_did_not_move_are_reused_without_the_pair_stage(
    builds: dict[str, Any], demo_catalog: DemoCatalog, tmp_path: Path, monkeypatch: Any
) -> None:
    """The catalog did not move (drift.json: none): the previous samples are copied without
    running their pair stage again (no classification band read), and the release is still
    byte for byte the previous one (same config)."""
    from geodelta.pipelines.stages.worker import Worker

    prev = builds["prev"]
    real = Worker.pair
    paired: list[str] = []

    def pair(self: Any, job: Any) -> Any:
        paired.append(job.cell_id)
        return real(self, job)

    monkeypatch.setattr(Worker, "pair", pair)
    again = build(
        demo_config(
            demo_catalog, tmp_path / "again", aoi={"bbox": _small_bbox(demo_catalog)}, **FAST
        ),
        progress=False,
        from_release=prev.release_dir,
    )
    sampled = set(read_table(prev.release_dir, SAMPLES_TABLE).column("cell_id").to_pylist())
    assert again.incremental["reused"] == len(sampled) == prev.samples
    assert paired and not set(paired) & sampled  # only the retried (quarantined) cells ran
    a, b = shard_files(prev.release_dir), shard_files(again.release_dir)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
