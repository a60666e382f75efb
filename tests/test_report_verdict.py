"""The report's first screen (PUBLISH / DO NOT PUBLISH), mask legends, the Data Docs index.

The verdict tests run over the small real releases of tests/test_gate.py (three factory samples
written by ``write_release``, hand-written reference metrics): every reason that can flip the
verdict is flipped on its own, and the verdict is checked against what the publisher decides
(strict verify + the gate) on the same release.
"""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from geodelta.pipelines.release.gate import check_gate
from geodelta.pipelines.release.manifest import list_files
from geodelta.pipelines.release.verify import verify_release
from geodelta.pipelines.report.data import open_release
from geodelta.pipelines.report.render import render_report
from geodelta.pipelines.report.samples import (
    mask_legend,
    mask_preview,
    predicted_legend,
    predicted_preview,
)
from geodelta.pipelines.report.verdict import Verdict, metric_changes, release_verdict
from geodelta.schemas.classes import transition_code
from tests.conftest import REPO
from tests.factories import make_metrics
from tests.test_gate import fake_release

MIN_F1 = {"rules": [{"metric": "masks.f1", "min": 0.3}]}
DROP_F1 = {"rules": [{"metric": "masks.f1", "max_drop": 0.05}]}


def _verdict(root: Path, previous: Path | None = None) -> Verdict:
    v = release_verdict(open_release(root), previous)
    # one source of truth: the page says PUBLISH exactly when the publisher's checks pass
    publishes = verify_release(root, strict=True).ok and check_gate(root, previous).ok
    assert v.publish == publishes
    return v


def _reason(v: Verdict, check: str) -> Any:
    found = [r for r in v.reasons if r.check == check]
    assert len(found) == 1, [r.check for r in v.reasons]
    return found[0]


def _banner(page: str) -> str:
    m = re.search(
        r"<div id='verdict-banner' class='verdict (\w+)'>\n<p class='word'>([^<]+)<", page
    )
    assert m, "no verdict banner"
    return f"{m.group(1)}: {m.group(2)}"


def test_a_release_that_passes_says_publish(tmp_path: Path) -> None:
    root = fake_release(tmp_path / "ok", gate=MIN_F1, ref=make_metrics(f1=0.5))
    v = _verdict(root)
    assert v.publish and v.blocking == ()
    assert _reason(v, "verify (strict)").state == "pass"
    rule = _reason(v, "gate.rules[0] masks.f1")
    assert (rule.state, rule.value, rule.threshold) == ("pass", "0.500", "min 0.3")
    page = render_report(root)
    assert _banner(page) == "publish: PUBLISH"
    # the verdict is the first section, before the summary
    assert page.index("<section id='verdict'>") < page.index("<section id='summary'>")


def test_a_failing_gate_rule_says_do_not_publish_with_value_and_threshold(tmp_path: Path) -> None:
    root = fake_release(tmp_path / "low", gate=MIN_F1, ref=make_metrics(f1=0.12))
    v = _verdict(root)
    assert not v.publish
    assert [r.check for r in v.blocking] == ["gate.rules[0] masks.f1"]
    rule = v.blocking[0]
    assert (rule.value, rule.threshold) == ("0.120", "min 0.3")
    assert "below the minimum 0.3 (gate.rules[0].min)" in rule.detail
    page = render_report(root)
    assert _banner(page) == "block: DO NOT PUBLISH"
    banner = page[page.index("<div id='verdict-banner'") :]
    assert "<p>masks.f1 = 0.120 (min 0.3)</p>" in banner[: banner.index("</div>")]


def test_a_drop_since_the_previous_version_flips_it(tmp_path: Path) -> None:
    prev = fake_release(tmp_path / "v1", ref=make_metrics(f1=0.43))
    small = fake_release(tmp_path / "v2a", version="2", gate=DROP_F1, ref=make_metrics(f1=0.40))
    big = fake_release(tmp_path / "v2b", version="2", gate=DROP_F1, ref=make_metrics(f1=0.12))
    assert _verdict(small, prev).publish
    v = _verdict(big, prev)
    assert not v.publish and v.previous == "1"
    rule = v.blocking[0]
    assert rule.check == "gate.rules[0] masks.f1"
    assert rule.threshold == "max_drop 0.05 below previous 0.430 (>= 0.380)"
    # without a previous version the drop cannot be checked: said, not hidden
    alone = _verdict(big)
    assert alone.publish
    assert (
        "max_drop not checked (no previous release)"
        in _reason(alone, "gate.rules[0] masks.f1").detail
    )
    # the metrics old -> new, the rule beside them
    f1 = next(c for c in v.metrics if c.label == "masks F1")
    assert (f1.previous, f1.current, f1.change and f1.change.text) == ("0.430", "0.120", "-0.310")
    assert f1.rule == "gate.rules[0]: max_drop 0.05 below previous 0.430 (>= 0.380)"


def test_failed_verification_flips_it(tmp_path: Path) -> None:
    root = fake_release(tmp_path / "extra", gate=MIN_F1, ref=make_metrics(f1=0.5))
    (root / "notes.txt").write_text("not in the manifest")
    v = _verdict(root)
    assert [r.check for r in v.blocking] == ["verify (strict)"]
    assert "notes.txt: in the release folder, not in manifest.json" in v.blocking[0].detail
    assert "<p>verify (strict): notes.txt: in the release folder" in render_report(root)
    assert str(tmp_path) not in render_report(root)  # the page names no absolute path


def test_missing_reference_metrics_flip_it(tmp_path: Path) -> None:
    root = fake_release(tmp_path / "noref", gate=MIN_F1)
    v = _verdict(root)
    assert not v.publish
    assert any("reference/metrics.json is missing" in r.detail for r in v.blocking)
    assert _reason(v, "reference model").state == "skip"
    assert v.metrics == ()


def test_informational_reasons_are_shown_and_do_not_flip_it(tmp_path: Path) -> None:
    root = fake_release(tmp_path / "info", gate=MIN_F1, ref=make_metrics(f1=0.5))
    v = _verdict(root)
    assert _reason(v, "Great Expectations").state == "skip"
    assert _reason(v, "catalog drift").detail == "no drift check (no previous snapshot)"
    assert _reason(v, "quarantine rate").value == "0.0% (0 of 3 records)"
    # a drift record and a GX summary with quarantined rows and a failed table-level expectation
    drift = {
        "previous_version": "0",
        "added": 2,
        "removed": 1,
        "changed": 3,
        "affected_samples": 4,
        "items": [],
    }
    (root / "drift.json").write_text(json.dumps(drift))
    exp = {"success": False, "name": "gx:row", "per_row": True, "unexpected_keys": ["k"]}
    whole = {"success": False, "name": "gx:whole", "per_row": False}
    summary = {
        "format": "geodelta.gx-summary/1",
        "success": False,
        "samples_quarantined": 1,
        "suites": [{"name": "s", "evaluated": 5, "failed": 2, "expectations": [exp, whole]}],
    }
    (root / "validation").mkdir()
    (root / "validation" / "summary.json").write_text(json.dumps(summary))
    list_files(root, ["drift.json", "validation/summary.json"])
    v = _verdict(root)
    assert v.publish
    d = _reason(v, "catalog drift")
    assert (d.state, d.value) == ("info", "2 added, 1 removed, 3 changed item(s)")
    assert "4 sample(s) affected" in d.detail and "since the snapshot of 0" in d.detail
    gx = _reason(v, "Great Expectations")
    assert (gx.state, gx.value) == ("warn", "3 of 5 expectations held")
    assert "gx:whole" in gx.detail


def test_metric_changes_old_to_new() -> None:
    rows = metric_changes(make_metrics(f1=0.732, cider=0.973), make_metrics(f1=0.708, cider=0.671))
    by = {c.label: c for c in rows}
    assert (by["masks F1"].previous, by["masks F1"].current) == ("0.708", "0.732")
    assert by["masks F1"].change is not None and by["masks F1"].change.text == "+0.024"
    assert by["masks F1"].change.cls == "pos"
    assert by["captions CIDEr"].change is not None and by["captions CIDEr"].change.text == "+0.302"
    assert {c.label for c in rows} >= {"retrieval R@1", "captions BLEU-4", "captions ROUGE-L"}
    assert metric_changes(None, None) == ()


def test_diff_shows_reference_metrics_right_after_the_verdict(tmp_path: Path) -> None:
    prev = fake_release(tmp_path / "v1", ref=make_metrics(f1=0.708))
    cur = fake_release(tmp_path / "v2", version="2", ref=make_metrics(f1=0.732))
    page = render_report(cur, previous=prev)
    ids = re.findall(r"<section id='([\w-]+)'>", page)
    assert ids[:3] == ["verdict", "diff", "summary"]
    diff = page[page.index("<section id='diff'>") :]
    diff = diff[: diff.index("</section>")]
    assert "<h3 id='diff-reference'>Reference model metrics</h3>" in diff
    assert (
        "<tr><td>masks F1</td><td class='n'>0.708</td><td class='n'>0.732</td>"
        "<td class='n'><span class='pos'>+0.024</span></td></tr>"
    ) in diff
    assert diff.index("diff-reference") < diff.index("Config changes")


# -- mask legends ------------------------------------------------------------------------------


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def test_mask_legend_names_the_colours_the_preview_shows() -> None:
    codes = np.zeros((4, 4), dtype=np.uint8)
    codes[0, 0] = transition_code("tree_cover", "built_up")
    codes[1, 1] = transition_code("cropland", "built_up")
    codes[2, 2] = transition_code("grassland", "water")
    codes[3, 3] = 255
    mask = _png(codes)
    legend = mask_legend(mask)
    assert [label for _, label in legend] == [
        "no change",
        "→ built-up area",
        "→ water",
        "change (classes unknown)",
    ]
    with Image.open(io.BytesIO(mask_preview(mask))) as img:
        rgb = np.asarray(img.convert("RGB"))
    colours = {label: colour for colour, label in legend}
    for (y, x), label in (
        ((0, 0), "→ built-up area"),
        ((2, 2), "→ water"),
        ((3, 3), "change (classes unknown)"),
        ((0, 1), "no change"),
    ):
        assert "#{:02x}{:02x}{:02x}".format(*rgb[y, x]) == colours[label]
    assert [label for _, label in mask_legend(_png(np.zeros((2, 2))))] == ["no change"]


def test_predicted_mask_preview_and_legend() -> None:
    changed = np.zeros((3, 3), dtype=bool)
    changed[1, 1] = True
    legend = dict((label, colour) for colour, label in predicted_legend(changed))
    with Image.open(io.BytesIO(predicted_preview(changed))) as img:
        rgb = np.asarray(img.convert("RGB"))
    assert "#{:02x}{:02x}{:02x}".format(*rgb[1, 1]) == legend["change (model)"]
    assert "#{:02x}{:02x}{:02x}".format(*rgb[0, 0]) == legend["no change"]
    assert [label for _, label in predicted_legend(np.zeros((2, 2), bool))] == ["no change"]


# -- Data Docs index --------------------------------------------------------------------------


def test_data_docs_index_lists_every_page_with_its_status(tmp_path: Path) -> None:
    from geodelta.pipelines.release.datadocs import make_offline

    site = tmp_path / "validation" / "data_docs"
    page = site / "validations" / "geodelta-qa" / "run-1" / "t" / "geodelta-qa.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html><head></head><body><table><tr><td>ok</td></tr></table></body></html>")
    (site / "expectations").mkdir()
    (site / "expectations" / "geodelta-qa.html").write_text("<html><head></head></html>")
    blank = "<html><head><script src='https://cdn/x.js'></script></head><body><table data-toggle='table'></table></body></html>"
    (site / "index.html").write_text(blank)
    (tmp_path / "validation" / "results").mkdir()
    result = {
        "suite_name": "geodelta-qa",
        "success": False,
        "statistics": {
            "evaluated_expectations": 7,
            "successful_expectations": 6,
            "unsuccessful_expectations": 1,
        },
        "meta": {"run_id": {"run_name": "demo-0.1.0"}, "great_expectations_version": "1.2"},
    }
    (tmp_path / "validation" / "results" / "qa.json").write_text(json.dumps(result))
    make_offline(site)
    index = (site / "index.html").read_text()
    assert "<script" not in index and "data-toggle" not in index
    assert (
        "<tr><td>geodelta-qa</td><td>demo-0.1.0</td><td><b class='neg'>failed</b></td>"
        "<td class='n'>7</td><td class='n'>6</td><td class='n'>1</td>"
    ) in index
    links = re.findall(r"href='([^']+)'", index)
    assert links == [
        "validations/geodelta-qa/run-1/t/geodelta-qa.html",
        "expectations/geodelta-qa.html",
    ]
    assert all((site / link).is_file() for link in links)


# -- HTML only from templates -------------------------------------------------------------------

_TAG = re.compile(r"<(?:!DOCTYPE|[a-z][a-z0-9]*)(?:\s[^<>]*)?>", re.IGNORECASE)


def _html_literals(path: Path) -> list[str]:
    """String literals of a module that look like HTML markup, docstrings and regular
    expressions (``re.compile`` arguments) excepted."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            skip.add(id(body[0].value))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "compile":
            skip.update(id(a) for a in node.args)
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant)
        and isinstance(n.value, str)
        and id(n) not in skip
        and _TAG.search(n.value)
    ]


@pytest.mark.parametrize(
    "path",
    [
        *sorted((REPO / "pipelines" / "report").glob("*.py")),
        REPO / "pipelines" / "release" / "datadocs.py",
    ],
    ids=lambda p: p.name,
)
def test_no_html_is_built_in_python(path: Path) -> None:
    assert _html_literals(path) == []


def test_the_html_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('"""<p>a docstring may</p>"""\nx = "<td>" + "1" + "</td>"\n')
    assert _html_literals(bad) == ["<td>"]


# -- the model's mask in the review list ---------------------------------------------------------


def test_review_list_shows_the_model_mask_next_to_the_label(tmp_path: Path) -> None:
    """A small untrained change model (seeded) stands in for the reference model: the review
    cards show before, after, label and its mask, which is its probability at the threshold."""
    import torch

    from geodelta.annotators.models.change_model import FCSiamDiff, predict_proba, save_model
    from geodelta.pipelines.release.layout import SAMPLES_TABLE, iter_tar_samples, read_manifest
    from geodelta.pipelines.report.data import scan_shards
    from geodelta.pipelines.report.reference import predicted_masks, reference_section
    from geodelta.pipelines.training.reference import _add_disagreement
    from geodelta.pipelines.training.shards import change_sample
    from geodelta.schemas.reference import WeightsRef

    root = fake_release(tmp_path / "rel", gate=MIN_F1)
    raw = {
        k: m for shard in read_manifest(root).shards for k, m in iter_tar_samples(root / shard.path)
    }
    first = change_sample({**next(iter(raw.values())), "__key__": "x"})
    torch.manual_seed(0)
    model = FCSiamDiff(first["before"].shape[0], base_channels=2, dropout=0.0).eval()
    card = {"bands": list(first["bands"])}
    saved = save_model(model, root / "reference" / "change_model", card)
    weights = saved.weights.relative_to(root).as_posix()
    ref = make_metrics(
        f1=0.5,
        weights={"change_model": WeightsRef(path=weights, sha256="0" * 64, bytes=1)},
    )
    ref = ref.model_copy(update={"config_hash": read_manifest(root).config_hash})
    (root / "reference" / "metrics.json").write_text(ref.model_dump_json())
    keys = sorted(raw)
    _add_disagreement(root, {k: 0.1 * (i + 1) for i, k in enumerate(keys)})
    list_files(root, [SAMPLES_TABLE, "reference/metrics.json"])

    rel = scan_shards(open_release(root), keep=keys)
    masks, note = predicted_masks(rel, ref, keys)
    assert note == "" and sorted(masks) == keys
    for k in keys:
        s = change_sample({**raw[k], "__key__": k})
        prob = predict_proba(model, [(s["before"], s["after"])])[0]
        assert np.array_equal(masks[k], prob >= 0.5)
    review = reference_section(rel, list(reversed(keys))).data["review"]
    cards = review["cards"]
    assert [c["key"] for c in cards] == list(reversed(keys))
    for c in cards:
        assert [f.alt for f in c["images"]] == ["before", "after", "label", "model"]
        label, pred = c["images"][2], c["images"][3]
        assert label.legend and label.legend[0][1] == "no change"
        assert pred.legend == predicted_legend(masks[c["key"]])
    # weights that are gone: no model mask, and the page says why
    saved.weights.unlink()
    masks, note = predicted_masks(rel, ref, keys)
    assert masks == {} and note == f"the change model's weights {weights} are missing"
