"""The release gate, ``publish_release``, ``geodelta release`` and ``--promote``.

Unit tests run over small real releases (three factory samples written by ``write_release``,
so they verify) with hand-written ``reference/metrics.json`` files, so every figure in a
message is computed by hand. The
end-to-end tests (``slow``) build small demo releases, train the reference model on them, and
show the gate blocking a release whose labeller is broken on purpose (a test double).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from geodelta.pipelines.cli import app
from geodelta.pipelines.release.gate import GateError, PublishError, check_gate
from geodelta.pipelines.release.layout import (
    BASELINE_POINTER,
    LATEST,
    PROMOTION_RECORD,
    read_manifest,
)
from geodelta.pipelines.release.publish import (
    default_previous,
    latest_release,
    promote_reference,
    publish_release,
)
from geodelta.schemas import ConfigError, parse_config
from geodelta.schemas.config import GateConfig
from geodelta.schemas.reference import (
    REFERENCE_METRICS,
    ReferenceMetrics,
    WeightsRef,
)
from tests.conftest import minimal_config
from tests.factories import make_metrics

# --- hand-written releases -------------------------------------------------------------------


#: Reference metrics with chosen gate values (tests/factories.py).
metrics = make_metrics


def fake_release(
    root: Path,
    *,
    name: str = "demo",
    version: str = "1",
    config_hash: str = "h1",
    gate: dict[str, Any] | None = None,
    ref: ReferenceMetrics | None = None,
) -> Path:
    """A small real release: one factory sample per split, written by ``write_release`` (GX off),
    so it verifies; ``ref`` is written as ``reference/metrics.json`` and listed in the manifest.

    ``config_hash`` names the config: releases given the same token share one config (the token
    is its description), so their real config hashes agree and differ from another token's.
    Metrics that carry the release's token are stamped with its real hash (they are current);
    metrics carrying another token stay stale.
    """
    from geodelta.pipelines.release.assemble import write_release
    from geodelta.pipelines.release.manifest import list_files
    from geodelta.pipelines.release.staging import Staging
    from geodelta.pipelines.stages.encode import build_meta, encode_members
    from tests.factories import make_config, make_sample

    sections: dict[str, Any] = {"validation": {"great_expectations": False}}
    if gate is not None:
        sections["gate"] = gate
    cfg = make_config(name=name, version=version, description=f"config {config_hash}", **sections)
    staging = Staging(root.with_name(f"{root.name}-staging"))
    for i, split in enumerate(("train", "val", "test")):
        sample = make_sample(i, col=i, row=0, split=split, change=True)
        meta = build_meta(sample, cfg, code_version="test", shaping_hash=cfg.shaping_hash())
        staging.put_sample(sample.key, encode_members(sample, meta, cfg))
        staging.mark_cell(meta.cell_id, keys=[sample.key], quarantine=[])
    write_release(root, cfg, staging, code_version="test")
    if ref is not None:
        if ref.config_hash == config_hash:
            ref = ref.model_copy(update={"config_hash": cfg.config_hash()})
        (root / "reference").mkdir()
        (root / REFERENCE_METRICS).write_text(ref.model_dump_json())
        list_files(root, [REFERENCE_METRICS])
    return root


F1_RULE = {"rules": [{"metric": "masks.f1", "max_drop": 0.05}]}


# --- check_gate over hand-written metrics ----------------------------------------------------


def test_min_rule_passes_at_the_floor_and_fails_below_it(tmp_path: Path) -> None:
    gate = {"rules": [{"metric": "masks.f1", "min": 0.3}]}
    at = fake_release(tmp_path / "at", gate=gate, ref=metrics(f1=0.3))
    below = fake_release(tmp_path / "below", gate=gate, ref=metrics(f1=0.12))

    ok = check_gate(at)
    assert ok.ok and ok.problems == ()
    assert [(r.metric, r.value, r.passed) for r in ok.rules] == [("masks.f1", 0.3, True)]

    bad = check_gate(below)
    assert not bad.ok
    assert [r.metric for r in bad.failed] == ["masks.f1"]
    assert bad.problems[0].startswith(
        "gate: masks.f1 = 0.12, below the minimum 0.3 (gate.rules[0].min)"
    )


def test_max_drop_rule_against_the_previous_release(tmp_path: Path) -> None:
    prev = fake_release(tmp_path / "v1", ref=metrics(f1=0.43))
    small = fake_release(tmp_path / "v2a", version="2", gate=F1_RULE, ref=metrics(f1=0.40))
    big = fake_release(tmp_path / "v2b", version="2", gate=F1_RULE, ref=metrics(f1=0.12))

    ok = check_gate(small, prev)  # a drop of 0.03 <= 0.05
    assert ok.ok
    assert ok.rules[0].previous == 0.43
    assert ok.rules[0].drop == pytest.approx(0.03)

    bad = check_gate(big, prev)  # a drop of 0.31 > 0.05
    assert not bad.ok
    (rule,) = bad.failed
    assert (rule.metric, rule.value, rule.previous, rule.max_drop) == ("masks.f1", 0.12, 0.43, 0.05)
    assert bad.problems[0].startswith(
        "gate: masks.f1 = 0.12, 0.31 below the previous release 0.43 (gate.rules[0] max_drop "
        "0.05); "
    )
    assert "raise gate.rules[0].max_drop" in bad.problems[0]
    # a rise is never a failure
    assert check_gate(prev, big).ok


def test_both_parts_of_a_rule_and_several_rules(tmp_path: Path) -> None:
    gate = {
        "rules": [
            {"metric": "masks.f1", "min": 0.2, "max_drop": 0.05},
            {"metric": "retrieval.recall_at_5", "max_drop": 0.1},
            {"metric": "captions.cider", "min": 0.5},
        ]
    }
    prev = fake_release(tmp_path / "v1", ref=metrics(f1=0.5, recall_at_5=0.6, cider=1.0))
    cur = fake_release(
        tmp_path / "v2",
        version="2",
        gate=gate,
        ref=metrics(f1=0.1, recall_at_5=0.55, cider=0.4),
    )
    result = check_gate(cur, prev)
    assert [(r.metric, r.passed) for r in result.rules] == [
        ("masks.f1", False),
        ("retrieval.recall_at_5", True),
        ("captions.cider", False),
    ]
    f1_msg = result.rules[0].message
    assert "below the minimum 0.2 (gate.rules[0].min)" in f1_msg
    assert "0.4 below the previous release 0.5 (gate.rules[0] max_drop 0.05)" in f1_msg
    assert result.problems[1].startswith("gate: captions.cider = 0.4, below the minimum 0.5")


def test_missing_metrics_fail_when_required_and_name_the_command(tmp_path: Path) -> None:
    rel = fake_release(tmp_path / "r")
    result = check_gate(rel)
    assert not result.ok
    assert "reference/metrics.json is missing" in result.problems[0]
    assert f"geodelta train-reference {rel}" in result.problems[0]
    assert all(r.value is None and not r.passed for r in result.rules)

    lax = fake_release(tmp_path / "lax", gate={"require_reference": False, **F1_RULE})
    lax_result = check_gate(lax)
    assert lax_result.ok
    assert any("no rule was checked" in n for n in lax_result.notes)


def test_stale_or_corrupt_metrics_fail(tmp_path: Path) -> None:
    stale = fake_release(tmp_path / "stale", config_hash="h2", ref=metrics(config_hash="h1"))
    result = check_gate(stale)
    assert not result.ok
    release_hash = read_manifest(stale).config_hash[:12]
    assert f"computed for config h1, the release is config {release_hash}" in result.problems[0]

    corrupt = fake_release(tmp_path / "corrupt")
    (corrupt / "reference").mkdir()
    (corrupt / REFERENCE_METRICS).write_text("{not json")
    result = check_gate(corrupt)
    assert not result.ok
    assert "cannot be read as reference metrics" in result.problems[0]


def test_missing_previous_or_previous_without_metrics_skips_max_drop(tmp_path: Path) -> None:
    cur = fake_release(tmp_path / "v2", version="2", gate=F1_RULE, ref=metrics(f1=0.01))
    alone = check_gate(cur, None)
    assert alone.ok
    assert alone.rules[0].skipped == ("masks.f1: max_drop not checked (no previous release)",)
    assert "no previous release: max_drop rules were not checked" in alone.notes

    bare = fake_release(tmp_path / "v1")
    with_bare = check_gate(cur, bare)
    assert with_bare.ok
    assert "previous release has no reference metrics" in with_bare.rules[0].skipped[0]
    assert any("has no reference/metrics.json" in n for n in with_bare.notes)

    with pytest.raises(PublishError, match="is not a release"):
        check_gate(cur, tmp_path / "nowhere")


def test_unknown_metric_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(minimal_config(gate={"rules": [{"metric": "masks.f2", "min": 0.1}]}))
    assert "gate.rules.0" in str(err.value)
    assert "gate metric 'masks.f2' is unknown; use one of: masks.precision" in str(err.value)
    with pytest.raises(ConfigError, match="sets neither 'min' nor 'max_drop'"):
        parse_config(minimal_config(gate={"rules": [{"metric": "masks.f1"}]}))

    # a release whose manifest carries such a gate (hand-edited) is refused with the key
    rel = fake_release(
        tmp_path / "r", gate={"rules": [{"metric": "masks.f1", "min": 0.1}]}, ref=metrics()
    )
    data = json.loads((rel / "manifest.json").read_text())
    data["config"]["gate"]["rules"][0]["metric"] = "masks.f2"
    (rel / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PublishError) as perr:
        check_gate(rel)
    assert "gate.rules.0" in str(perr.value) and "'masks.f2' is unknown" in str(perr.value)


def test_defaults_apply_when_the_manifest_has_no_gate(tmp_path: Path) -> None:
    rel = fake_release(tmp_path / "r", ref=metrics())
    result = check_gate(rel)
    assert result.gate == GateConfig()
    assert [r.metric for r in result.rules] == [r.metric for r in GateConfig().rules]


# --- publish_release over hand-written releases ----------------------------------------------


def test_publish_moves_then_points_latest_and_is_idempotent(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    src = fake_release(tmp_path / "build" / "v1", gate=F1_RULE, ref=metrics(f1=0.43))
    (src / ".staging").mkdir()
    out = publish_release(src, releases)
    target = releases / "demo-1"
    assert out.target == target and not out.already_published
    assert out.gate is not None and out.gate.ok and out.gate.previous is None
    assert not src.exists() and (target / REFERENCE_METRICS).is_file()
    assert not (target / ".staging").exists()
    assert (releases / LATEST).read_text() == "demo-1\n"
    assert latest_release(releases) == target
    assert default_previous(target, releases) is None  # never compared with itself
    v2 = fake_release(tmp_path / "build" / "v2", version="2")
    assert default_previous(v2, releases) == target

    again = publish_release(target, releases)  # re-run: nothing moves
    assert again.already_published and again.leftover is None
    assert sorted(p.name for p in releases.iterdir()) == [LATEST, "demo-1", "published"]

    rebuilt = fake_release(tmp_path / "build" / "v1b", gate=F1_RULE, ref=metrics(f1=0.43))
    dup = publish_release(rebuilt, releases)  # same version, same config: left for the caller
    assert dup.already_published and dup.leftover == rebuilt and rebuilt.exists()

    other = fake_release(tmp_path / "build" / "v1c", config_hash="h9", ref=metrics())
    with pytest.raises(PublishError, match="built from another config"):
        publish_release(other, releases)
    assert other.exists()


def test_gate_refusal_moves_nothing_and_keeps_latest(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    publish_release(fake_release(tmp_path / "b1", gate=F1_RULE, ref=metrics(f1=0.43)), releases)
    src = fake_release(
        tmp_path / "b2",
        version="2",
        config_hash="h2",
        gate=F1_RULE,
        ref=metrics(f1=0.12, config_hash="h2", release="demo-2"),
    )
    with pytest.raises(GateError) as err:
        publish_release(src, releases)  # previous = LATEST = demo-1
    assert [r.metric for r in err.value.failed] == ["masks.f1"]
    assert err.value.result.previous == releases / "demo-1"
    assert "gate: masks.f1 = 0.12, 0.31 below the previous release 0.43" in str(err.value)
    assert src.is_dir() and (src / "manifest.json").is_file()
    assert sorted(p.name for p in releases.iterdir()) == [LATEST, "demo-1", "published"]
    assert (releases / LATEST).read_text() == "demo-1\n"

    # an explicit previous without metrics: max_drop not checked, so it publishes
    bare = fake_release(tmp_path / "bare", version="0")
    out = publish_release(src, releases, previous=bare)
    assert out.target == releases / "demo-2"
    assert (releases / LATEST).read_text() == "demo-2\n"


def test_a_release_that_does_not_verify_is_refused(tmp_path: Path) -> None:
    src = fake_release(tmp_path / "b", ref=metrics())
    data = json.loads((src / "manifest.json").read_text())
    data["files"] = [{"path": "absent.parquet", "bytes": 3, "sha256": "0" * 64}]
    (src / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PublishError, match="does not verify") as err:
        publish_release(src, tmp_path / "releases")
    assert "absent.parquet: missing" in "\n".join(err.value.problems)
    assert not (tmp_path / "releases" / LATEST).exists()


# --- the CLI ---------------------------------------------------------------------------------


def _text(res: Any) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(str(res.output).split())


def test_cli_release_check_and_refusal(tmp_path: Path) -> None:
    runner = CliRunner()
    releases = tmp_path / "releases"
    v1 = fake_release(tmp_path / "b1", gate=F1_RULE, ref=metrics(f1=0.43))
    res = runner.invoke(app, ["release", str(v1), "--releases", str(releases), "--check"])
    assert res.exit_code == 0, res.output
    assert "the gate passes" in res.output and v1.exists()
    assert not (releases / LATEST).exists()  # --check moves nothing

    res = runner.invoke(app, ["release", str(v1), "--releases", str(releases)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == str(releases / "demo-1")

    v2 = fake_release(
        tmp_path / "b2", version="2", gate=F1_RULE, ref=metrics(f1=0.12, release="demo-2")
    )
    for extra in ([], ["--check"]):
        res = runner.invoke(app, ["release", str(v2), "--releases", str(releases), *extra])
        assert res.exit_code == 1, res.output
        assert "masks.f1 = 0.12, 0.31 below the previous release 0.43" in _text(res)
        assert "FAIL" in res.output
        assert v2.is_dir() and (releases / LATEST).read_text() == "demo-1\n"

    res = runner.invoke(app, ["release", str(tmp_path / "nope"), "--releases", str(releases)])
    assert res.exit_code != 0 and "has no manifest.json" in _text(res)


# --- promote (a tiny real model, no build) ---------------------------------------------------


def _release_with_model(root: Path, version: str = "1") -> tuple[Path, str]:
    """A hand-written release whose reference/ holds a small saved FC-Siam-diff."""
    import hashlib

    import torch

    from geodelta.annotators.models.change_model import FCSiamDiff, save_model
    from geodelta.pipelines.release.manifest import list_files

    torch.manual_seed(0)
    model = FCSiamDiff(in_channels=4, base_channels=4)
    rel = fake_release(root, version=version)
    saved = save_model(model, rel / "reference" / "change_model", {"bands": ["B02", "B03"]})
    data = saved.weights.read_bytes()
    ref = WeightsRef(
        path=saved.weights.relative_to(rel).as_posix(),
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
    )
    real_hash = read_manifest(rel).config_hash
    (rel / REFERENCE_METRICS).parent.mkdir(exist_ok=True)
    (rel / REFERENCE_METRICS).write_text(
        metrics(
            release=f"demo-{version}", weights={"change_model": ref}, config_hash=real_hash
        ).model_dump_json()
    )
    written = [p.relative_to(rel).as_posix() for p in (rel / "reference").rglob("*") if p.is_file()]
    list_files(rel, written)
    return rel, saved.sha256


def test_promote_copies_weights_under_their_content_hash(tmp_path: Path) -> None:
    from geodelta.annotators.models.baseline import BaselineChangeAnnotator

    releases = tmp_path / "releases"
    src, digest = _release_with_model(tmp_path / "b1")
    out = publish_release(src, releases, promote=True)
    p = out.promotion
    assert p is not None
    assert p.sha256 == digest and p.model_id == f"fc-siam-diff@sha256:{digest}"
    assert p.directory == (releases / "baselines" / digest[:16]).resolve()
    assert sorted(x.name for x in p.directory.iterdir()) == ["card.json", "card.md", "weights.pt"]
    assert p.config_line == f"baseline.weights: {p.weights}"
    # the baseline annotator loads the promoted copy and names the same hash
    assert BaselineChangeAnnotator(p.weights).model_id == p.model_id
    pointer = json.loads((releases / BASELINE_POINTER).read_text())
    assert pointer["sha256"] == digest and pointer["release"] == "demo-1"
    assert pointer["weights"] == f"baselines/{digest[:16]}/weights.pt"
    assert json.loads((out.target / PROMOTION_RECORD).read_text()) == pointer
    # idempotent: the same promotion, no file touched
    stamps = {
        x: x.stat().st_mtime_ns for x in (releases / BASELINE_POINTER, *p.directory.iterdir())
    }
    again = promote_reference(out.target, releases)
    assert again == p
    assert {x: x.stat().st_mtime_ns for x in stamps} == stamps

    # a weights file changed after training is refused
    w = (
        out.target
        / json.loads((out.target / REFERENCE_METRICS).read_text())["weights"]["change_model"][
            "path"
        ]
    )
    w.write_bytes(w.read_bytes() + b"x")
    with pytest.raises(PublishError, match="changed after training"):
        promote_reference(out.target, releases)


def test_cli_promote_prints_the_config_line(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    src, digest = _release_with_model(tmp_path / "b1")
    res = CliRunner().invoke(app, ["release", str(src), "--releases", str(releases), "--promote"])
    assert res.exit_code == 0, res.output
    weights = (releases / "baselines" / digest[:16] / "weights.pt").resolve()
    assert f"baseline.weights: {weights}" in res.output
    assert f"fc-siam-diff@sha256:{digest}" in _text(res)


def test_promote_without_metrics_is_refused(tmp_path: Path) -> None:
    rel = fake_release(tmp_path / "r")
    with pytest.raises(PublishError, match="train-reference"):
        promote_reference(rel, tmp_path / "releases")
    rel2 = fake_release(tmp_path / "r2", ref=metrics())
    with pytest.raises(PublishError, match="names no 'change_model' weights"):
        promote_reference(rel2, tmp_path / "releases")


# --- end to end: demo releases, the reference model, a broken labeller ----------------------


def _demo_config(root: Path, catalog: Any, version: str, **overrides: Any) -> Any:
    """The demo config at the smallest scale that has train and test samples, short training."""
    from geodelta.schemas import load_config
    from tests.conftest import REPO

    base: dict[str, Any] = {
        "version": version,
        "catalog": {"url": str(catalog.catalog_path)},
        "output": {"dir": str(root / f"build-{version}")},
        "aoi": {"bbox": list(catalog.aoi_bbox)},
        "runner": {"name": "inprocess"},
        # 9 train / 6 test cells at this scale (the demo's 80/10/10 leaves 2 test cells)
        "splits": {
            "fractions": {"train": 0.6, "val": 0.0, "test": 0.4},
            "block_cells": 1,
            "seed": 2,
        },
        "shards": {"max_samples": 4},
        "validation": {"great_expectations": False},
        "reference": E2E_REFERENCE,
        "gate": {"rules": [{"metric": "masks.f1", "max_drop": 0.05}]},
    }
    base.update(overrides)
    return load_config(REPO / "configs" / "demo.yaml", base)


#: Short reference training for the tests (the reference section is part of the config).
E2E_REFERENCE: dict[str, Any] = {"epochs": 20, "batch_size": 2, "retrieval_epochs": 2, "workers": 0}


def _build_and_train(cfg: Any) -> Path:
    from geodelta.pipelines.api import build, train_reference

    result = build(cfg, mode="overwrite", progress=False)
    train_reference(result.release_dir, code_version="test", report=True)
    return Path(result.release_dir)


def _upside_down_land_cover(monkeypatch: pytest.MonkeyPatch) -> None:
    """TEST DOUBLE of a broken labeller: the land-cover reader returns every map upside down
    (a south-up bug), so masks, facts, captions and QA describe changes where the imagery has
    none. The masks keep their changed fraction; only their place is wrong."""
    import numpy as np

    from geodelta.sources import raster

    real = raster.read_classes

    def flipped(*args: Any, **kwargs: Any) -> Any:
        return np.ascontiguousarray(np.flipud(real(*args, **kwargs)))

    monkeypatch.setattr(raster, "read_classes", flipped)


@pytest.fixture(scope="module")
def e2e(demo_catalog: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """v1 (a good demo release) built, trained and published with --promote, over the
    session's demo catalog (tests/conftest.py)."""
    root = tmp_path_factory.mktemp("gate_e2e")
    catalog = demo_catalog
    releases = root / "releases"
    v1 = _build_and_train(_demo_config(root, catalog, "1.0.0"))
    published = publish_release(v1, releases, promote=True)
    return {"root": root, "catalog": catalog, "releases": releases, "v1": published}


@pytest.mark.slow
def test_e2e_good_release_publishes_with_reference_metrics(e2e: dict[str, Any]) -> None:
    from geodelta.pipelines.release.verify import verify_release

    out = e2e["v1"]
    assert out.target == e2e["releases"] / "geodelta-demo-1.0.0"
    assert (e2e["releases"] / LATEST).read_text() == "geodelta-demo-1.0.0\n"
    assert out.gate is not None and out.gate.ok
    assert out.gate.rules[0].value is not None and out.gate.rules[0].value > 0
    assert verify_release(out.target).ok
    ref = ReferenceMetrics.model_validate_json((out.target / REFERENCE_METRICS).read_bytes())
    manifest = json.loads((out.target / "manifest.json").read_text())
    assert ref.config_hash == manifest["config_hash"] and ref.release == "geodelta-demo-1.0.0"


@pytest.mark.slow
def test_e2e_gate_blocks_a_release_with_a_broken_labeller(
    e2e: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    releases, v1 = e2e["releases"], e2e["v1"]
    with monkeypatch.context() as m:
        _upside_down_land_cover(m)
        v2 = _build_and_train(_demo_config(e2e["root"], e2e["catalog"], "2.0.0"))
    before = {p.relative_to(releases) for p in releases.rglob("*")}

    with pytest.raises(GateError) as err:
        publish_release(v2, releases)
    failed = {r.metric: r for r in err.value.failed}
    assert "masks.f1" in failed
    f1 = failed["masks.f1"]
    assert f1.previous == pytest.approx(v1.gate.rules[0].value)
    assert f1.drop is not None and f1.drop > 0.05
    assert f"gate: masks.f1 = {f1.value:.4g}, {f1.drop:.4g} below the previous release" in str(
        err.value
    )
    # nothing moved, LATEST still v1
    assert v2.is_dir() and (v2 / "manifest.json").is_file()
    assert {p.relative_to(releases) for p in releases.rglob("*")} == before
    assert (releases / LATEST).read_text() == "geodelta-demo-1.0.0\n"

    res = CliRunner().invoke(app, ["release", str(v2), "--releases", str(releases)])
    assert res.exit_code == 1, res.output
    assert "gate: masks.f1 = " in _text(res) and "below the previous release" in _text(res)
    assert v2.is_dir() and (releases / LATEST).read_text() == "geodelta-demo-1.0.0\n"


@pytest.mark.slow
def test_e2e_promoted_weights_are_recorded_in_the_next_versions_samples(
    e2e: dict[str, Any],
) -> None:
    import pyarrow.parquet as pq

    from geodelta.pipelines.api import build
    from geodelta.pipelines.release.layout import iter_tar_samples

    promotion = e2e["v1"].promotion
    assert promotion is not None
    cfg = _demo_config(
        e2e["root"],
        e2e["catalog"],
        "3.0.0",
        baseline={"weights": promotion.config_line.split(": ", 1)[1]},
    )
    release = build(cfg, mode="overwrite", progress=False).release_dir
    ids = [
        json.loads(members["json"])["baseline_model"]
        for shard in sorted((release / "shards").glob("*.tar"))
        for _, members in iter_tar_samples(shard)
    ]
    assert ids and set(ids) == {promotion.model_id}
    assert promotion.model_id == f"fc-siam-diff@sha256:{promotion.sha256}"
    keys = pq.read_table(release / "samples.parquet", columns=["key"]).column("key").to_pylist()
    assert len(ids) == len(keys)  # every sample of the release
