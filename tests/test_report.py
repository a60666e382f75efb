"""The quality report (pipelines/report/) on small factory releases: figures, score, diff.

The releases here are built from :mod:`tests.factories` samples (32 x 32 px, one 8 x 8
cropland -> built_up rectangle per changed sample), with the Great Expectations checkpoint off
so that each test is fast; the GX section is checked against a summary written by the test in
the documented ``geodelta.gx-summary/1`` layout. The demo-release tests (real builds, a real
GX run, Chromium) are in tests/test_report_demo.py.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from geodelta.pipelines.cli import app
from geodelta.pipelines.release.assemble import write_release
from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.report.render import (
    diff_releases,
    ks_distance,
    tv_distance,
    validation_scores,
    write_report,
)
from geodelta.pipelines.stages.encode import build_meta, encode_members
from geodelta.schemas import BuildConfig, QuarantineRecord
from tests.factories import make_config, make_sample

SPLIT_OF = ("train", "train", "val", "test")


def _config(**extra: object) -> BuildConfig:
    return make_config(validation={"great_expectations": False}, **extra)  # type: ignore[arg-type]


def _release(
    root: Path, indices: range | list[int], *, no_change: frozenset[int] = frozenset()
) -> Path:
    """A release of factory samples ``i`` (cell column i, change unless i % 4 == 0 or listed)."""
    cfg = _config()
    staging = Staging(root / "staging")
    for i in indices:
        sample = make_sample(
            i, col=i, split=SPLIT_OF[i % 4], change=i % 4 != 0 and i not in no_change
        )
        meta = build_meta(sample, cfg, code_version="0.1.0", shaping_hash=cfg.shaping_hash())
        staging.put_sample(sample.key, encode_members(sample, meta, cfg))
        quarantine = []
        if i % 3 == 0:
            quarantine.append(
                QuarantineRecord(
                    key=f"{meta.cell_id}_20200101_20220101",
                    cell_id=meta.cell_id,
                    stage="validate",
                    reason="caption_too_short",
                    detail="caption 2 has 4 characters (min=10)",
                )
            )
        staging.mark_cell(meta.cell_id, keys=[sample.key], quarantine=quarantine)
    staging.mark_cell(
        "31N_0099_0099",
        keys=[],
        quarantine=[
            QuarantineRecord(
                key="31N_0099_0099",
                cell_id="31N_0099_0099",
                stage="pair",
                reason="no_clear_pair",
                detail="no scene pair with clear fraction >= 0.95",
            )
        ],
    )
    rel = root / "rel"
    write_release(rel, cfg, staging, code_version="0.1.0")
    return rel


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 samples: 9 changed (64 px each), 3 unchanged; quarantine: 4 validate + 1 pair."""
    return _release(tmp_path_factory.mktemp("report"), range(12))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def page(release: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The report of ``release`` (a copy), with a gallery of 5."""
    rel = _copy(release, tmp_path_factory.mktemp("page") / "rel")
    return write_report(rel, max_gallery=5).read_text()


def _section(page: str, ident: str) -> str:
    m = re.search(rf"<section id='{ident}'>(.*?)</section>", page, re.S)
    assert m, f"section {ident} missing"
    return m.group(1)


def _plots(html_text: str) -> list[bytes]:
    import base64

    return [
        base64.b64decode(b)
        for b in re.findall(r"<img class='plot' src='data:image/png;base64,([^']+)'", html_text)
    ]


# --- pure functions ---------------------------------------------------------------------------


def test_validation_scores_hand_computed() -> None:
    config = {
        "pairing": {"min_clear_fraction": 0.9, "min_valid_fraction": 0.98},
        "validation": {"max_abs_shift_px": 3.0, "max_residual_px": 0.5},
    }
    rows = [
        {  # clear (0.95-0.9)/0.1 = 0.5, valid (0.99-0.98)/0.02 = 0.5, shift 1-1/3, residual 0.8
            "key": "a",
            "before_clear": 0.95,
            "after_clear": 0.99,
            "before_valid": 1.0,
            "after_valid": 0.99,
            "shift_dy": 0.6,
            "shift_dx": 0.8,
            "residual_px": 0.1,
        },
        {  # clear unknown (skipped); residual 1 - 0.45/0.5 = 0.1
            "key": "b",
            "before_clear": None,
            "after_clear": None,
            "before_valid": 1.0,
            "after_valid": 1.0,
            "shift_dy": 0.0,
            "shift_dx": 0.0,
            "residual_px": 0.45,
        },
        {  # perfect, but a GX expectation failed on its rows
            "key": "c",
            "before_clear": 1.0,
            "after_clear": 1.0,
            "before_valid": 1.0,
            "after_valid": 1.0,
            "shift_dy": 0.0,
            "shift_dx": 0.0,
            "residual_px": 0.0,
        },
        {  # beyond a limit (a relaxed rule at build time): clipped to 0
            "key": "d",
            "before_clear": 0.5,
            "after_clear": 1.0,
            "before_valid": 1.0,
            "after_valid": 1.0,
            "shift_dy": 0.0,
            "shift_dx": 0.0,
            "residual_px": 0.0,
        },
    ]
    scores = validation_scores(rows, config, {"c": "gx:expect_x:caption"})
    assert [s.key for s in scores] == ["c", "d", "b", "a"]
    by = {s.key: s for s in scores}
    assert by["a"].score == pytest.approx(0.5) and by["a"].limit == "clear"  # tie: first in order
    assert by["a"].components["valid"] == pytest.approx(0.5)
    assert by["a"].components["shift"] == pytest.approx(1 - 1 / 3)
    assert by["a"].components["residual"] == pytest.approx(0.8)
    assert by["b"].score == pytest.approx(0.1) and by["b"].limit == "residual"
    assert "clear" not in by["b"].components
    assert by["c"].score == 0.0 and by["c"].limit == "gx:expect_x:caption"
    assert by["d"].score == 0.0 and by["d"].limit == "clear"
    # defaults when the config does not say: min_clear 0.95, max_residual 0.5
    assert validation_scores(rows[:1], {})[0].components["clear"] == pytest.approx(0.0)


def test_distances_hand_computed() -> None:
    assert ks_distance([1, 2, 3], [3, 2, 1]) == 0.0
    assert ks_distance([0, 1], [2, 3]) == 1.0
    assert ks_distance([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    assert ks_distance([], [1.0]) != ks_distance([], [1.0])  # NaN
    assert tv_distance({"a": 1, "b": 1}, {"a": 2}) == pytest.approx(0.5)
    assert tv_distance({"a": 3}, {"a": 1}) == 0.0
    assert tv_distance({"a": 1}, {"b": 1}) == 1.0


# --- the report of one release ----------------------------------------------------------------


def test_sections_and_figures(page: str) -> None:
    for ident in (
        "summary",
        "funnel",
        "transitions",
        "captions",
        "qa",
        "coregistration",
        "map",
        "time",
        "validation",
        "gallery",
        "reference",
    ):
        assert f"<section id='{ident}'>" in page and f"href='#{ident}'" in page
    assert "<section id='diff'>" not in page
    summary = _section(page, "summary")
    assert "<th>samples</th><td>12</td>" in summary
    assert "<th>quarantined</th><td>5</td>" in summary
    assert "<th>cells</th><td>12</td>" in summary
    assert "<tr><td>train</td><td class='n'>6</td>" in summary  # i % 4 in (0, 1)
    assert "<th>licence</th><td>CC-BY-4.0</td>" in summary
    funnel = _section(page, "funnel")
    # 17 records in: 12 kept + 1 pair + 4 validate (i = 0, 3, 6, 9)
    assert "<td>(records in)</td><td class='n'></td><td class='n'>17</td>" in funnel
    assert "<td>pair</td><td class='n'>1</td><td class='n'>16</td>" in funnel
    assert "<td>validate</td><td class='n'>4</td><td class='n'>12</td>" in funnel
    assert funnel.index("<td>pair</td>") < funnel.index("<td>validate</td>")  # pipeline order
    trans = _section(page, "transitions")
    assert "9 of 12 samples show change" in trans
    assert "1 distinct transitions, 576 changed pixels" in trans
    # 9 samples x 64 px x 100 m2 = 0.0576 km2
    assert (
        "<td>cropland -&gt; built_up</td><td class='n'>9</td><td class='n'>576</td>"
        "<td class='n'>100.0%</td><td class='n'>0.058</td>" in trans
    )
    caps = _section(page, "captions")
    assert "<td>captions</td><td>60</td>" in caps
    assert "<td>captions per sample (min / mean / max)</td><td>5 / 5.00 / 5</td>" in caps
    qa = _section(page, "qa")
    # has_change: 9 yes, 3 no; change_to_what only on changed samples (9 of 12 = 75%)
    assert "<td>has_change</td><td class='n'>12</td><td class='n'>100.0%</td>" in qa
    assert "yes 75.0% · no 25.0%" in qa
    assert "<td>change_to_what</td><td class='n'>9</td><td class='n'>75.0%</td>" in qa
    coreg = _section(page, "coregistration")
    assert "<td>shift applied</td><td>12 of 12</td>" in coreg
    assert "residual px (median / max)</td><td>0.040 / 0.040" in coreg
    assert "12 footprints within lon" in _section(page, "map")
    gaps = _section(page, "time")
    assert "735.0 / 735.0 / 735.0" in gaps  # 2020-06-15 -> 2022-06-20 (+ the same seed days)
    val = _section(page, "validation")
    assert "<b>not run</b>" in val
    ref = _section(page, "reference")
    assert "<b>not trained yet</b>" in ref
    # every plot is a decodable PNG without the Software/date chunks
    pngs = _plots(page)
    assert len(pngs) >= 10
    for png in pngs:
        with Image.open(io.BytesIO(png)) as img:
            assert img.format == "PNG" and img.size[0] > 100
            assert "Software" not in img.info and "Creation Time" not in img.info


def test_worst_samples_lead_the_gallery(release: Path, page: str) -> None:
    rows = pq.read_table(release / "samples.parquet").to_pylist()
    config = json.loads((release / "manifest.json").read_text())["config"]
    scores = validation_scores(rows, config)
    gallery = _section(page, "gallery")
    worst = re.search(r"<div id='gallery-worst' class='worst'>(.*?)<h3>", gallery, re.S)
    assert worst
    keys = re.findall(r"<span class='key'>([^<]+)</span>", worst.group(1))
    assert keys == [s.key for s in scores[:3]]  # ceil(5 / 2) worst, worst first
    assert gallery.count("class='sample'") == 5
    assert len(re.findall(r"<img src='data:image/png;base64,", gallery)) == 15


def test_gx_summary_and_reference_metrics(release: Path, tmp_path: Path) -> None:
    rel = _copy(release, tmp_path / "rel")
    victim = sorted(r["key"] for r in pq.read_table(rel / "samples.parquet").to_pylist())[5]
    (rel / "validation" / "data_docs").mkdir(parents=True)
    (rel / "validation" / "data_docs" / "index.html").write_text("<html></html>")
    summary = {
        "format": "geodelta.gx-summary/1",
        "gx_version": "1.24.1",
        "success": False,
        "samples_checked": 13,
        "samples_quarantined": 1,
        "quarantined": [
            {"key": "31N_0077_0000_x", "reason": "gx:expect_a:b", "detail": "1 row failed"}
        ],
        "data_docs": "data_docs/index.html",
        "suites": [
            {
                "name": "geodelta.samples",
                "table": "samples",
                "rows": 13,
                "success": False,
                "evaluated": 40,
                "failed": 1,
                "suite_file": "suites/samples.json",
                "results_file": "results/samples.json",
                "data_docs_page": None,
                "expectations": [
                    {
                        "name": "gx:expect_column_values_to_be_between:residual_px",
                        "description": "residual within bounds",
                        "success": False,
                        "element_count": 13,
                        "unexpected_count": 1,
                        "unexpected_keys": [victim],
                    },
                    {"name": "gx:ok", "success": True, "unexpected_keys": []},
                ],
            }
        ],
    }
    (rel / "validation" / "summary.json").write_text(json.dumps(summary))
    (rel / "reference").mkdir()
    (rel / "reference" / "metrics.json").write_text(
        json.dumps({"model": "fc-siam-diff", "test": {"f1": 0.8125, "iou": 0.684}})
    )
    page = write_report(rel, max_gallery=2).read_text()
    val = _section(page, "validation")
    assert "<b class='neg'>failed</b>: 39 of 40 expectations held over 13 samples" in val
    assert "href='../validation/data_docs/index.html'" in val
    assert "href='../validation/suites/samples.json'" in val
    assert "gx:expect_column_values_to_be_between:residual_px" in val
    assert "31N_0077_0000_x" in val  # quarantined by GX
    # the sample a failing expectation names scores 0 and leads the gallery
    worst = re.search(r"<div id='gallery-worst' class='worst'>(.*?)</div>\s*<h3>", page, re.S)
    assert worst and re.findall(r"<span class='key'>([^<]+)</span>", worst.group(1)) == [victim]
    assert "validation score 0.000 (limited by gx:expect_column_values" in worst.group(1)
    ref = _section(page, "reference")
    assert "<td>test.f1</td><td>0.8125</td>" in ref and "<td>model</td><td>fc-siam-diff</td>" in ref
    assert "href='../reference/metrics.json'" in ref


def test_values_are_escaped_and_side_file_problems_named(release: Path, tmp_path: Path) -> None:
    # the templates autoescape: markup in a side file shows as text, never as markup
    rel = _copy(release, tmp_path / "rel")
    (rel / "validation").mkdir()
    summary = {"format": "other/<b>2</b>", "note": "<script>alert(1)</script>", "ok": True}
    (rel / "validation" / "summary.json").write_text(json.dumps(summary))
    (rel / "reference").mkdir()
    (rel / "reference" / "metrics.json").write_text(json.dumps({"<img src=x>": "a & b"}))
    page = write_report(rel, max_gallery=0).read_text()
    val = _section(page, "validation")
    assert (
        "<p>Unknown summary format other/&lt;b&gt;2&lt;/b&gt;; its fields as they are:</p>" in val
    )
    assert "<td>note</td><td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in val
    assert "<script" not in page and "<img src=x" not in page
    assert "<td>&lt;img src=x&gt;</td><td>a &amp; b</td>" in _section(page, "reference")
    assert "<p class='muted'>No samples.</p>" in _section(page, "gallery")  # max_gallery=0
    # unreadable side files: the problem is named relative to the release (no absolute path)
    (rel / "validation" / "summary.json").write_text("{nope")
    (rel / "reference" / "metrics.json").write_bytes(b"\xff\xfe{")
    page = write_report(rel, max_gallery=0).read_text()
    assert "<p class='neg'>validation/summary.json is not valid JSON: " in page
    assert "<p class='neg'>reference/metrics.json " in _section(page, "reference")
    assert str(tmp_path) not in page
    (rel / "validation" / "summary.json").write_text("[1, 2]")
    page = write_report(rel, max_gallery=0).read_text()
    assert "<p class='neg'>validation/summary.json is not a JSON object</p>" in page


def test_package_exports_lazily() -> None:
    import subprocess
    import sys

    code = (
        "import sys, geodelta.pipelines.report as r; "
        "assert 'geodelta.pipelines.report.render' not in sys.modules; "
        "assert 'jinja2' not in sys.modules and 'numpy' not in sys.modules; "
        "from geodelta.pipelines.report.render import render_report, write_report; "
        "assert r.write_report is write_report and r.render_report is render_report"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_self_contained_and_deterministic(release: Path, page: str, tmp_path: Path) -> None:
    # the same release in another folder gives the same bytes: nothing time- or path-dependent
    b = _copy(release, tmp_path / "elsewhere" / "b")
    assert write_report(b, max_gallery=5).read_text(encoding="utf-8") == page
    assert str(tmp_path) not in page and "/tmp/" not in page
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:)?//""", page)
    for src in re.findall(r"""src\s*=\s*['"]([^'"]*)""", page):
        assert src.startswith("data:image/png;base64,")
    for href in re.findall(r"""href\s*=\s*['"]([^'"]*)""", page):
        assert href.startswith(("#", "../validation/", "../reference/")), href


# --- the diff ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory, release: Path) -> tuple[Path, Path]:
    """previous = samples 0..11; current = 2..13 with sample 5 turned into a no-change sample."""
    current = _release(tmp_path_factory.mktemp("current"), range(2, 14), no_change=frozenset({5}))
    return release, current


def _keys(rel: Path) -> set[str]:
    return set(pq.read_table(rel / "samples.parquet").column("key").to_pylist())


def _members(rel: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted((rel / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                key, _, member = info.name.partition(".")
                f = tar.extractfile(info)
                assert f is not None
                out.setdefault(key, {})[member] = f.read()
    return out


def test_diff_keys_match_independent_sets(two_versions: tuple[Path, Path]) -> None:
    prev, cur = two_versions
    d = diff_releases(cur, prev)
    assert set(d.added) == _keys(cur) - _keys(prev) and len(d.added) == 2
    assert set(d.removed) == _keys(prev) - _keys(cur) and len(d.removed) == 2
    pm, cm = _members(prev), _members(cur)
    changed = {k for k in _keys(prev) & _keys(cur) if pm[k] != cm[k]}
    five = make_sample(5, col=5).key
    assert set(d.changed) == changed == {five}
    assert {"mask.png", "captions.json", "qa.json", "meta.facts"} <= set(d.changed[five])
    assert d.unchanged == 9


@pytest.fixture(scope="module")
def diff_page(two_versions: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    prev, cur = two_versions
    rel = _copy(cur, tmp_path_factory.mktemp("diff") / "cur")
    return write_report(rel, previous=prev, max_gallery=2).read_text()


def test_diff_section(diff_page: str) -> None:
    diff = _section(diff_page, "diff")
    assert "href='#diff'" in diff_page
    assert (
        "<tr><td class='n'>12</td><td class='n'>12</td><td class='n'>2</td><td class='n'>2</td>"
        "<td class='n'>1</td><td class='n'>9</td></tr>" in diff
    )
    assert "<p class='muted'>Same normalised config.</p>" in diff
    assert "<td>mask.png</td><td class='n'>1</td>" in diff  # what changed, per member
    # metric deltas: changed samples 9 -> 8 of 12 (sample 5 now unchanged; 12, 13 changed;
    # 0 (no change) and 1 (change) removed): mean changed fraction 9/12 -> 8/12 of 64/1024
    m = re.search(
        r"<td>changed fraction: mean</td><td class='n'>([^<]+)</td><td class='n'>([^<]+)</td>",
        diff,
    )
    assert m and float(m.group(1)) == pytest.approx(9 / 12 * 64 / 1024, rel=1e-3)
    assert float(m.group(2)) == pytest.approx(8 / 12 * 64 / 1024, rel=1e-3)
    assert "<td>Kolmogorov-Smirnov D</td>" in diff and "<td>total variation</td>" in diff
    split_tv = re.search(r"<td>split</td><td>total variation</td><td class='n'>([^<]+)<", diff)
    assert split_tv and float(split_tv.group(1)) == pytest.approx(0.0)  # same split shares
    cf_ks = re.search(
        r"<td>changed fraction</td><td>Kolmogorov-Smirnov D</td><td class='n'>([^<]+)<", diff
    )
    assert cf_ks and float(cf_ks.group(1)) == pytest.approx(1 / 12, abs=1e-3)  # 9/12 vs 8/12
    assert len(_plots(diff)) >= 5  # overlaid histograms, QA types, diff map


def test_cli_report_previous(
    two_versions: tuple[Path, Path], diff_page: str, tmp_path: Path
) -> None:
    prev, cur = two_versions
    rel = _copy(cur, tmp_path / "cur")
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(rel), "--previous", str(prev), "--max-gallery", "2"])
    assert result.exit_code == 0, result.output
    out = Path(result.stdout.strip())
    assert out == rel / "report" / "index.html"
    assert out.read_text() == diff_page  # the same report, byte for byte
    bad = runner.invoke(app, ["report", str(rel), "--previous", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "has no manifest.json" in " ".join(bad.output.split())
    same = runner.invoke(app, ["report", str(rel), "--previous", str(rel)])
    assert same.exit_code == 2 and "is the release itself" in " ".join(same.output.split())
