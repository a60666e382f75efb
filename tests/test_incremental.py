"""``geodelta build CONFIG --from PREVIOUS_RELEASE`` (issue 14, incremental versions).

The previous release is the demo over its AOI cut by 30 % of its width (11 of 15 cells); the
new version grows it back to the whole demo AOI. Reused samples must hold exactly the bytes a
full build writes (the shards of the ``--from`` build equal a full build's, file for file), the
new cells are processed, the counts are right, and ``--from`` refuses another dataset, another
sample-shaping config and a folder that is not a release, in one line (exit 2).

Quarantined cells: the demo's three cells without a clear t0 scene (``pair:no_clear_scene_t0``,
a verdict on the data) are carried over when their searches did not move (not processed; the
quarantine table equals a full build's); a transient reason (``load:read_error``, an asset file
missing while the previous version was built) is retried, and so is a verdict whose cell's
searches now return a changed item.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from typer.testing import CliRunner

from geodelta.errors import BuildError
from geodelta.pipelines.api import build, summary_rows, verify
from geodelta.pipelines.cli import app
from geodelta.pipelines.release.incremental import (
    DATA_VERDICTS,
    RELEASE_SECTIONS,
    TEMPLATE_VERDICTS,
    differing_sections,
    is_data_verdict,
    open_previous,
    sample_inputs,
)
from geodelta.pipelines.release.layout import (
    DRIFT,
    INCREMENTAL,
    QUARANTINE_TABLE,
    SAMPLES_TABLE,
    VERIFIED,
    iter_tar_samples,
    read_table,
    shard_files,
)
from geodelta.schemas import QuarantineRecord
from geodelta.schemas.config import recorded_shaping_hash
from tests.conftest import REPO
from tests.factories import demo_config, make_config, record_cells

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


def _shaping(result: Any) -> str:
    """The shaping hash of the config a release's manifest embeds."""
    return recorded_shaping_hash(result.manifest.config)


def _members(release: Path) -> dict[str, dict[str, bytes]]:
    """key -> members of every sample in a release's shards."""
    return {k: m for shard in shard_files(release) for k, m in iter_tar_samples(shard)}


def _quarantine(release: Path) -> list[dict[str, Any]]:
    """The rows of a release's quarantine table."""
    return read_table(release, QUARANTINE_TABLE).to_pylist()


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
    # the previous version's quarantined cells: no clear t0 scene, the catalog did not move ->
    # the same verdict, carried over, not retried
    assert {r["reason"] for r in _quarantine(prev.release_dir)} == {"no_clear_scene_t0"}
    assert inc["carried"] == len(prev_quarantined) == 3
    assert inc["retried"] == inc["changed"] == 0
    assert inc["removed"] == 0
    assert inc["reused"] + inc["new"] + inc["changed"] + inc["carried"] == grown.cells
    assert grown.resumed_cells == 0
    # the carried records are what processing the cells writes: the full build's table
    assert _quarantine(grown.release_dir) == _quarantine(full.release_dir)
    assert grown.manifest.quarantined == full.manifest.quarantined
    # what the release, its card and its report say
    assert json.loads((grown.release_dir / INCREMENTAL).read_bytes()) == inc
    assert INCREMENTAL in {f.path for f in grown.manifest.files}
    card = (grown.release_dir / "README.md").read_text()
    assert "## Built incrementally" in card
    row = f"| {inc['reused']} | {inc['new']} | {inc['changed']} | {inc['carried']} | 0 |"
    assert row in card
    report = (grown.release_dir / "report" / "index.html").read_text()
    assert f"{inc['reused']} cells reused, {inc['new']} new" in report
    assert f"{inc['carried']} carried over (quarantined there on the same data)" in report
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
    for key, members in old.items():  # copied byte for byte, json included
        assert new[key] == members, key
    # version 0.2.0 and the grown AOI differ from the previous release's config, not the
    # sections that shape a sample: every json records the same shaping hash
    assert grown.manifest.config_hash != full.manifest.config_hash != prev.manifest.config_hash
    hashes = {json.loads(m["json"])["shaping_hash"] for m in (*old.values(), *new.values())}
    assert hashes == {_shaping(grown)} == {_shaping(prev)}
    fresh = _members(full.release_dir)
    assert fresh == new


def test_the_from_report_records_what_a_full_build_records(builds: dict[str, Any]) -> None:
    """The --from build's report trusts the previous release's report/verified.json for the
    bytes copied from it (the spared count is logged: tests/test_worker_decode.py) and records
    what a full build's report records."""
    prev, full, grown = builds["prev"], builds["full"], builds["grown"]
    assert 0 < grown.incremental["reused"] < grown.samples
    records = [json.loads((b.release_dir / VERIFIED).read_bytes()) for b in (prev, full, grown)]
    assert records[2] == records[1]  # every sample of the release, as a full build decodes them
    assert set(records[0]["samples"].items()) < set(records[2]["samples"].items())


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
    than the previous sample recorded -> processed; the same -> its json reused as it is."""
    from geodelta.pipelines.build import planned
    from geodelta.pipelines.release.incremental import _unchanged
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
    shaping = meta["shaping_hash"]
    assert _unchanged(members["json"], inputs, shaping, meta["code_version"])
    for field, value in (
        ("before_item", "another-item"),
        ("label_items", ("lc-x", "lc-y")),
        ("split", "test" if meta["split"] != "test" else "train"),
        ("after_clear", 0.5),
    ):
        assert not _unchanged(
            members["json"], {**inputs, field: value}, shaping, meta["code_version"]
        ), field
    assert not _unchanged(members["json"], inputs, shaping, "0.0.0-other")  # other code
    assert not _unchanged(members["json"], inputs, "0" * 64, meta["code_version"])  # config


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
    running their pair stage again (no classification band read), the quarantined cells'
    verdicts are carried over without processing them, and the release is still byte for byte
    the previous one (same config)."""
    prev = builds["prev"]
    paired = _paired(monkeypatch)
    again = build(
        demo_config(
            demo_catalog, tmp_path / "again", aoi={"bbox": _small_bbox(demo_catalog)}, **FAST
        ),
        progress=False,
        from_release=prev.release_dir,
    )
    sampled = set(read_table(prev.release_dir, SAMPLES_TABLE).column("cell_id").to_pylist())
    assert again.incremental["reused"] == len(sampled) == prev.samples
    assert (again.incremental["carried"], again.incremental["retried"]) == (prev.quarantined, 0)
    assert paired == []  # no cell ran: every one reused or carried over
    a, b = shard_files(prev.release_dir), shard_files(again.release_dir)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    for table in (SAMPLES_TABLE, QUARANTINE_TABLE):
        assert (prev.release_dir / table).read_bytes() == (again.release_dir / table).read_bytes()


# -- quarantined cells: carried over or retried ------------------------------------------------

IMAGERY = "geodelta-demo-s2l2a"


def _catalog_copy(demo_catalog: DemoCatalog, dest: Path) -> Path:
    """A copy of the demo catalog (its ``catalog.json``)."""
    shutil.copytree(demo_catalog.root, dest)
    return dest / "catalog.json"


def _on(cfg: Any, catalog: Path) -> Any:
    """``cfg`` searching ``catalog`` (its url is provenance only: same config hash)."""
    return cfg.model_copy(update={"catalog": cfg.catalog.model_copy(update={"url": str(catalog)})})


def _paired(monkeypatch: Any) -> list[str]:
    """The cells whose pair stage runs from now on (processed, or compared by ``--from``)."""
    from geodelta.pipelines.stages.worker import Worker

    return record_cells(monkeypatch, Worker, "pair")


def test_a_transient_quarantine_is_retried(
    builds: dict[str, Any], demo_catalog: DemoCatalog, tmp_path: Path, monkeypatch: Any
) -> None:
    """The previous version was built while one band file of an item was missing (the cells
    whose pair used it: ``load:read_error``); the file is back, the item's metadata never
    changed (steady cells): the read errors are retried, the no-clear-scene verdicts carried,
    and the release is byte for byte the clean build's (``builds["prev"]``, same config)."""
    prev = builds["prev"]
    catalog = _catalog_copy(demo_catalog, tmp_path / "catalog")
    rows = read_table(prev.release_dir, SAMPLES_TABLE).to_pylist()
    item = sorted(r["after_item"] for r in rows)[-1]  # used by some samples, not all
    users = {r["cell_id"] for r in rows if item in (r["before_item"], r["after_item"])}
    assert 0 < len(users) < len(rows)
    band = catalog.parent / IMAGERY / item / "B04.tif"
    small = {"aoi": {"bbox": _small_bbox(demo_catalog)}}
    band.rename(band.with_name("B04.away"))
    broken = build(
        _on(demo_config(demo_catalog, tmp_path / "broken", **small, **FAST), catalog),
        progress=False,
    )
    band.with_name("B04.away").rename(band)
    reasons = {r["cell_id"]: r["reason"] for r in _quarantine(broken.release_dir)}
    assert {c for c, r in reasons.items() if r == "read_error"} == users
    paired = _paired(monkeypatch)
    again = build(
        _on(demo_config(demo_catalog, tmp_path / "again", **small, **FAST), catalog),
        progress=False,
        from_release=broken.release_dir,
    )
    inc = again.incremental
    assert (inc["retried"], inc["changed"]) == (len(users), len(users))
    assert inc["carried"] == prev.quarantined == len(reasons) - len(users)
    assert inc["reused"] == prev.samples - len(users)
    assert sorted(paired) == sorted(users)  # the read errors ran, nothing else
    assert json.loads((again.release_dir / DRIFT).read_bytes())["items"] == []
    assert again.manifest.config_hash == prev.manifest.config_hash
    a, b = shard_files(prev.release_dir), shard_files(again.release_dir)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    for table in (SAMPLES_TABLE, QUARANTINE_TABLE):
        assert (prev.release_dir / table).read_bytes() == (again.release_dir / table).read_bytes()


def test_a_verdict_whose_searches_moved_is_retried(
    builds: dict[str, Any], demo_catalog: DemoCatalog, tmp_path: Path, monkeypatch: Any
) -> None:
    """An item the no-clear-scene cells' searches return got a new processing baseline: those
    cells are not steady any more, so they are processed again (same verdict: same pixels),
    none carried; the quarantine table is still the previous one's."""
    prev = builds["prev"]
    catalog = _catalog_copy(demo_catalog, tmp_path / "catalog")
    (row, *_) = _quarantine(prev.release_dir)
    item = row["detail"].split("clear fractions: ")[1].split("=")[0]  # a scene the cell rated
    path = catalog.parent / IMAGERY / item / f"{item}.json"
    data = json.loads(path.read_text())
    data["properties"]["s2:processing_baseline"] = "05.11"
    path.write_text(json.dumps(data))
    paired = _paired(monkeypatch)
    small = {"aoi": {"bbox": _small_bbox(demo_catalog)}}
    again = build(
        _on(demo_config(demo_catalog, tmp_path / "again", **small, **FAST), catalog),
        progress=False,
        from_release=prev.release_dir,
    )
    drift = json.loads((again.release_dir / DRIFT).read_bytes())
    (entry,) = drift["items"]
    assert (entry["id"], entry["change"]) == (item, "changed")
    quarantined = {r["cell_id"] for r in _quarantine(prev.release_dir)}
    assert quarantined <= set(entry["cells"])  # the demo's items cover a whole zone
    inc = again.incremental
    assert (inc["carried"], inc["retried"]) == (0, len(quarantined))
    assert quarantined <= set(paired)  # processed
    assert _quarantine(again.release_dir) == _quarantine(prev.release_dir)


def test_which_reasons_are_verdicts_on_the_data() -> None:
    from geodelta.pipelines.stages.validate import PIXEL_RULES, RULES

    template = make_config()
    assert template.annotation.annotator == "template"
    llm = template.model_copy(
        update={"annotation": template.annotation.model_copy(update={"annotator": "openai"})}
    )

    def rec(stage: str, reason: str) -> QuarantineRecord:
        return QuarantineRecord(key="c", cell_id="c", stage=stage, reason=reason, detail="d")

    for what in (
        ("pair", "no_clear_scene_t0"),
        ("pair", "too_few_dates"),
        ("load", "low_valid_fraction"),
        ("coregister", "residual_too_large"),
        ("label", "missing_label_year"),
    ):
        assert is_data_verdict(rec(*what), template) and is_data_verdict(rec(*what), llm), what
    for what in (
        ("load", "read_error"),
        ("pair", "read_error"),
        ("pair", "error:TimeoutError"),
        ("label", "error:HTTPError"),
        ("annotate", "llm_error"),
        ("annotate", "claims"),
        ("validate", "incomplete_sample"),
        ("validate", "undecodable_member"),
        ("validate", "gx:expect_column_values_to_be_between:before_valid"),
        ("shard", "bad_members"),
    ):
        assert not is_data_verdict(rec(*what), template), what
    # the validate rules: every one, and only with the template annotator
    rules = {("validate", n) for n, _ in (*PIXEL_RULES, *RULES)} | {("validate", "temporal_claim")}
    assert rules == TEMPLATE_VERDICTS and not DATA_VERDICTS & TEMPLATE_VERDICTS
    assert is_data_verdict(rec("validate", "caption_claims"), template)
    assert not is_data_verdict(rec("validate", "caption_claims"), llm)
