"""The report's "Dates and temporal QA" section (series releases, issue 15): its figures against
plain counts of the hand-made series release, and no such section for a pair release."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geodelta._io import json_bytes
from geodelta.pipelines.release.layout import iter_tar_samples, read_manifest
from geodelta.pipelines.report.data import open_release
from geodelta.pipelines.report.render import render_report
from geodelta.pipelines.report.series import series_section
from geodelta.schemas.reference import TemporalRetrievalMetrics
from tests.factories import make_metrics
from tests.series_release import plan_of, series_release
from tests.test_report import _release

N = 12


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return series_release(tmp_path_factory.mktemp("series-report"), n=N)


@pytest.fixture(scope="module")
def page(release: Path) -> str:
    return render_report(release)


def _section(page: str, ident: str) -> str:
    m = re.search(rf"<section id='{ident}'>(.*?)</section>", page, re.S)
    assert m, f"section {ident} missing"
    return m.group(1)


def _rows(section_html: str, first_header: str) -> list[list[str]]:
    """The body rows of the table whose first header cell is ``first_header``."""
    for t in re.findall(r"<table>(.*?)</table>", section_html, re.S):
        heads = re.findall(r"<th>(.*?)</th>", t)
        if heads and html.unescape(heads[0]) == first_header:
            return [
                [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
                for row in re.findall(r"<tr>(<td.*?)</tr>", t, re.S)
            ]
    raise AssertionError(f"no table {first_header!r}")


def _members(release: Path) -> list[tuple[str, dict[str, bytes]]]:
    out = []
    for shard in read_manifest(release).shards:
        out += list(iter_tar_samples(release / shard.path))
    return out


def test_section_is_listed_after_the_time_gap(page: str) -> None:
    toc = re.findall(r"<li><a href='#([a-z]+)'>", page)
    assert toc[toc.index("time") + 1] == "series"
    ids = re.findall(r"<section id='([a-z]+)'>", page)
    assert ids == [i for i in toc]
    assert "Dates and temporal QA" in _section(page, "series")


def test_dates_per_sample_and_timeline(page: str) -> None:
    sec = _section(page, "series")
    plans = [plan_of(i) for i in range(N)]
    t_counts = Counter(len(p.windows) for p in plans)
    assert _rows(sec, "dates per sample") == [
        [str(t), str(n), f"{100 * n / N:.1f}%"] for t, n in sorted(t_counts.items())
    ]
    windows = _rows(sec, "window")
    assert [r[0] for r in windows] == ["0", "1", "2", "3", "4"]
    per_window = Counter(w for p in plans for w in p.windows)
    assert [int(r[3]) for r in windows] == [per_window[w] for w in range(5)]
    for w, r in enumerate(windows):  # the fixture's dates: June 10..24 of the window's year
        days = sorted(
            f"{2018 + w}-06-{10 + (i + p.windows.index(w)) % 15:02d}"
            for i, p in enumerate(plans)
            if w in p.windows
        )
        assert r[2] == f"{days[0]} .. {days[-1]}" and r[5] == "0.990"
    assert windows[0][1] == "2018-01-01 .. 2019-01-01"
    skipping = sum(len(p.windows) < 5 for p in plans)
    assert f"{skipping} samples skip one window or more" in sec
    assert "Every window has dates." in sec


def test_residual_per_date_index(page: str) -> None:
    rows = _rows(_section(page, "series"), "date index")
    plans = [plan_of(i) for i in range(N)]
    assert [r[0] for r in rows] == ["0 (reference)", "1", "2", "3", "4"]
    for r in rows[1:]:
        d = int(r[0])
        assert int(r[1]) == sum(len(p.windows) > d for p in plans)
        assert r[3] == f"{0.1 * d:.3f}" == r[4]  # every date d has residual 0.1 * d
        assert r[2] == f"{np.hypot(0.1 * d, 0.05 * d):.3f}"
    assert rows[0][1:] == [str(N), "0.000", "0.000", "0.000", "0"]


def test_first_change_steps_from_the_rasters(release: Path, page: str) -> None:
    first: Counter[int] = Counter()
    changed_at: Counter[int] = Counter()
    for _, m in _members(release):
        arr = np.asarray(Image.open(io.BytesIO(m["first_change.png"])))
        first.update(Counter(arr.ravel().tolist()))
        for step in json.loads(m["json"])["series"]["steps"]:
            changed_at[step["index"]] += step["changed_pixels"]
    sec = _section(page, "series")
    rows = _rows(sec, "step")
    total = sum(v for k, v in first.items() if k > 0)
    assert total == 64 * sum(p.change_step > 0 for p in map(plan_of, range(N)))  # 8x8 rectangle
    for r in rows:
        k = int(r[0])
        assert r[1] == f"date {k - 1} -> date {k}"
        assert int(r[2]) == first[k] and int(r[5]) == changed_at[k]
        assert int(r[4]) == sum(p.change_step == k for p in map(plan_of, range(N)))
    assert f"{total} pixels changed at some step, {first[0]} never" in sec
    plots = re.findall(r"<img class='plot' src='data:image/png;base64,([^']+)'", sec)
    assert len(plots) == 2
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in plots)


def test_regions_trends_and_temporal_qa_balance(release: Path, page: str) -> None:
    sec = _section(page, "series")
    plans = [plan_of(i) for i in range(N)]
    transient = sum(p.revert_step > 0 for p in plans)
    changed = sum(p.change_step > 0 for p in plans)
    assert f"<b>{changed - transient}</b> permanent" in sec
    assert f"<b>{transient}</b> transient" in sec
    answers: dict[str, Counter[str]] = {}
    for _, m in _members(release):
        for q in json.loads(m["qa.json"]):
            answers.setdefault(q["type"], Counter())[q["answer"]] += 1
    balance = _rows(sec, "type")  # the first "type" table: counts per temporal type
    by_type = {r[0]: r for r in balance}
    assert set(by_type) == {
        "when_appeared",
        "which_first",
        "change_count",
        "permanence",
        "class_trend",
        "max_area_date",
    }
    for t, row in by_type.items():
        assert int(row[1]) == sum(answers.get(t, Counter()).values())
    assert by_type["which_first"][1:] == ["0", "0.0%", "0", "–", "–"]
    perm = answers["permanence"]
    assert f"permanent {100 * perm['permanent'] / perm.total():.1f}%" in by_type["permanence"][5]
    # when_appeared answers are counted by year ("between 2019 and 2021")
    assert re.search(r"between \d{4} and \d{4} ", by_type["when_appeared"][5])
    closed = re.findall(
        r"<tr><td>(permanence|class_trend)</td><td>([a-z]+)</td><td class='n'>(\d+)</td>", sec
    )
    assert [(t, a) for t, a, _ in closed] == [
        ("permanence", "permanent"),
        ("permanence", "transient"),
        ("class_trend", "grew"),
        ("class_trend", "shrank"),
        ("class_trend", "stable"),
    ]
    for t, a, n in closed:
        assert int(n) == answers[t][a]
    trends = {r[0]: r[1:] for r in _rows(sec, "class")}
    assert trends["grassland"] == ["0", "0", str(N)]  # never touched by the change rectangle


def test_temporal_retrieval_metrics_when_present(release: Path, tmp_path: Path) -> None:
    rel = Path(shutil.copytree(release, tmp_path / "rel"))
    assert "not trained yet" in _section(render_report(rel), "series")
    (rel / "reference").mkdir()
    plain = make_metrics()
    (rel / "reference/metrics.json").write_bytes(json_bytes(plain.model_dump(mode="json")))
    assert "has no <code>retrieval_temporal</code>" in _section(render_report(rel), "series")
    t = TemporalRetrievalMetrics(
        recall_at_1=0.125,
        recall_at_5=0.5,
        recall_at_10=0.75,
        temporal_recall_at_1=0.375,
        queries=16,
        samples=3,
        hard_negatives=17,
        gallery=20,
        chance_recall_at_1=0.05,
        chance_temporal_recall_at_1=0.2,
    )
    metrics = plain.model_copy(update={"retrieval_temporal": t})
    (rel / "reference/metrics.json").write_bytes(json_bytes(metrics.model_dump(mode="json")))
    sec = _section(render_report(rel), "series")
    rows = _rows(sec, "metric")
    assert rows == [
        ["Recall@1 (samples + hard negatives)", "0.125", "0.050"],
        ["Recall@5 (samples + hard negatives)", "0.500", "0.250"],
        ["Recall@10 (samples + hard negatives)", "0.750", "0.500"],
        ["temporal Recall@1 (own place's intervals only)", "0.375", "0.200"],
    ]
    assert "17 hard negatives" in sec and "20 in all" in sec


def test_an_unreadable_shard_is_named(release: Path, tmp_path: Path) -> None:
    rel = Path(shutil.copytree(release, tmp_path / "rel"))
    shard = read_manifest(rel).shards[0].path
    (rel / shard).write_bytes(b"not a tar")
    sec = _section(render_report(rel), "series")
    assert f"{shard}: cannot be read" in sec


def test_a_pair_release_has_no_series_section(tmp_path: Path) -> None:
    pair = _release(tmp_path, range(4))
    assert series_section(open_release(pair)) is None
    page = render_report(pair)
    assert "<section id='series'>" not in page and "href='#series'" not in page
    assert "Dates and temporal QA" not in page


def test_answer_labels() -> None:
    from geodelta.pipelines.report.series import answer_label

    q = "Which area changed first, [10, 20, 300, 400] or [500, 0, 990, 250]?"
    assert answer_label("which_first", q, "[10, 20, 300, 400]") == "first named"
    assert answer_label("which_first", q, "[500,0,990,250]") == "second named"
    assert answer_label("which_first", q, "[1, 2, 3, 4]") == "not in the question"
    assert answer_label("when_appeared", "?", "between 2019-07-14 and 2020-06-30") == (
        "between 2019 and 2020"
    )
    assert answer_label("max_area_date", "?", "2021-08-01") == "2021"
    assert answer_label("permanence", "?", "transient") == "transient"
