"""Temporal captions and QA (issue 15): the template's answers, from the label stage's
SeriesFacts, re-derived by the independent checker from the raw land-cover stack over 240
random sequences, and every wrong answer caught."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from geodelta.annotators.claims import check_qa_item
from geodelta.annotators.qa import REGISTRY
from geodelta.annotators.temporal import (
    TEMPORAL_REGISTRY,
    annotate_series,
    check_temporal_captions,
    check_temporal_qa,
    is_temporal_caption,
)
from geodelta.annotators.temporal.derive import derive_sequence
from geodelta.pipelines.stages.labels.series import label_series
from geodelta.schemas import QAItem
from geodelta.schemas.qa import (
    COUNT_QA_TYPES,
    PAIR_QA_TYPES,
    QA_TYPES,
    REQUIRED_QA_TYPES,
    TEMPORAL_QA_TYPES,
)
from geodelta.schemas.records import format_box
from geodelta.schemas.series import SeriesFacts
from tests.factories import make_sample

CASES = 240
ISO = re.compile(r"\d{4}-\d{2}-\d{2}")


def _dates(rng: np.random.Generator, t: int) -> list[datetime]:
    """T dates, one a year from a random start, on random days."""
    start = int(rng.integers(2016, 2020))
    return [
        datetime(start + i, int(rng.integers(1, 13)), int(rng.integers(1, 29)), 10, 30, tzinfo=UTC)
        for i in range(t)
    ]


def random_stack(seed: int) -> tuple[np.ndarray, list[datetime], int]:
    """A (T, H, W) land-cover stack with injected regions that change at known steps, some
    coming back (transient), some changing twice, plus speckle below ``min_region_px`` and
    unknown pixels."""
    rng = np.random.default_rng(seed)
    t = int(rng.integers(3, 7))
    h, w = int(rng.integers(20, 49)), int(rng.integers(20, 49))
    min_region_px = int(rng.integers(1, 9))
    base = np.empty((h, w), dtype=np.uint8)
    classes = rng.choice(np.arange(1, 12), size=4, replace=False)
    split_r, split_c = int(rng.integers(1, h)), int(rng.integers(1, w))
    base[:split_r, :split_c] = classes[0]
    base[:split_r, split_c:] = classes[1]
    base[split_r:, :split_c] = classes[2]
    base[split_r:, split_c:] = classes[3]
    lc = np.repeat(base[None], t, axis=0)
    for _ in range(int(rng.integers(0, 6))):
        rh, rw = int(rng.integers(2, max(3, h // 3))), int(rng.integers(2, max(3, w // 3)))
        r0, c0 = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
        k = int(rng.integers(1, t))
        new = int(rng.integers(1, 12))
        lc[k:, r0 : r0 + rh, c0 : c0 + rw] = new
        if rng.random() < 0.4 and k + 1 < t:  # transient: comes back later
            back = int(rng.integers(k + 1, t))
            lc[back:, r0 : r0 + rh, c0 : c0 + rw] = base[r0 : r0 + rh, c0 : c0 + rw]
        elif rng.random() < 0.3 and k + 1 < t:  # changes again
            again = int(rng.integers(k + 1, t))
            lc[again:, r0 : r0 + rh // 2 + 1, c0 : c0 + rw] = int(rng.integers(1, 12))
    speckle = rng.random((t, h, w)) < 0.01
    lc[speckle] = rng.integers(1, 12, size=int(speckle.sum()))
    lc[:, rng.random((h, w)) < 0.01] = 0  # unknown on every date
    lc[int(rng.integers(0, t)), rng.random((h, w)) < 0.005] = 0  # unknown on one date
    return lc, _dates(rng, t), min_region_px


def _facts(lc: np.ndarray, dates: list[datetime], min_region_px: int) -> SeriesFacts:
    return label_series(lc, dates, min_region_px=min_region_px).facts


def _with(item: QAItem, answer: str) -> QAItem:
    return item.model_copy(update={"answer": answer})


def _wrong_answers(item: QAItem, facts: SeriesFacts) -> list[str]:
    """Every kind of wrong answer for an item: another interval, a wrong count, the other
    permanence or trend words, another date, the other box."""
    days = [d.date().isoformat() for d in facts.dates]
    a = item.answer
    if item.type == "when_appeared":
        out = [f"between {x} and {y}" for x, y in itertools.pairwise(days)]
        out += [
            f"between {days[0]} and {days[-1]}",
            a.replace("between ", "between 1999-01-01 and "),
        ]
        m = ISO.findall(a)
        out.append(f"between {m[1]} and {m[0]}")
        return [o for o in out if o != a]
    if item.type == "which_first":
        boxes = re.findall(r"\[[^\]]*\]", item.question)
        return [b for b in boxes if b != a] + [f"{boxes[0]}, {boxes[1]}", "the first one"]
    if item.type == "change_count":
        n = int(a)
        return [str(n + 1), str(n + 2), *([str(n - 1)] if n else []), "twice"]
    if item.type == "permanence":
        return [{"permanent": "transient", "transient": "permanent"}[a], "yes"]
    if item.type == "class_trend":
        return [w for w in ("grew", "shrank", "stable") if w != a] + ["increased"]
    if item.type == "max_area_date":
        return [d for d in days if d != a] + ["2000-01-01", a[:4]]
    raise AssertionError(item.type)


@pytest.fixture(scope="module")
def cases() -> list[dict[str, Any]]:
    out = []
    for seed in range(CASES):
        lc, dates, mrp = random_stack(seed)
        facts = _facts(lc, dates, mrp)
        captions, qa = annotate_series(facts, key=f"cell{seed}_x", seed=0, captions_per_sample=5)
        out.append(
            {"lc": lc, "dates": dates, "mrp": mrp, "facts": facts, "captions": captions, "qa": qa}
        )
    return out


def test_the_temporal_types_are_data_and_not_required() -> None:
    assert QA_TYPES == PAIR_QA_TYPES + TEMPORAL_QA_TYPES
    assert TEMPORAL_QA_TYPES == (
        "when_appeared",
        "which_first",
        "change_count",
        "permanence",
        "class_trend",
        "max_area_date",
    )
    assert not set(TEMPORAL_QA_TYPES) & set(REQUIRED_QA_TYPES)
    assert tuple(TEMPORAL_REGISTRY) == TEMPORAL_QA_TYPES
    assert set(REGISTRY) == set(PAIR_QA_TYPES)
    # the pair release tables and suites split answers by pair types only (same bytes)
    assert COUNT_QA_TYPES == ("count_regions",)


def test_every_answer_is_rederived_by_the_checker(cases: list[dict[str, Any]]) -> None:
    seen: Counter[str] = Counter()
    answers: Counter[tuple[str, str]] = Counter()
    for i, c in enumerate(cases):
        for item in c["qa"]:
            assert item.type in TEMPORAL_QA_TYPES
            seen[item.type] += 1
            if item.type in ("permanence", "class_trend"):
                answers[(item.type, item.answer)] += 1
            problems = check_temporal_qa(item, c["lc"], c["dates"], min_region_px=c["mrp"])
            assert problems == [], (i, item, problems)
    assert len(cases) >= 200
    # every type asked often, and every answer word of the closed types occurs
    assert all(seen[t] >= 40 for t in TEMPORAL_QA_TYPES), seen
    for key in (
        ("permanence", "permanent"),
        ("permanence", "transient"),
        ("class_trend", "grew"),
        ("class_trend", "shrank"),
        ("class_trend", "stable"),
    ):
        assert answers[key] >= 10, answers


def test_every_wrong_answer_is_caught(cases: list[dict[str, Any]]) -> None:
    mutated = Counter[str]()
    for i, c in enumerate(cases):
        for item in c["qa"]:
            for wrong in _wrong_answers(item, c["facts"]):
                bad = _with(item, wrong)
                problems = check_temporal_qa(bad, c["lc"], c["dates"], min_region_px=c["mrp"])
                assert problems, (i, item.type, item.question, item.answer, wrong)
                mutated[item.type] += 1
    assert all(mutated[t] >= 40 for t in TEMPORAL_QA_TYPES), mutated


def test_a_question_about_another_region_or_false_evidence_is_caught(
    cases: list[dict[str, Any]],
) -> None:
    caught = 0
    for c in cases:
        for item in c["qa"]:
            if "boxes_px" in item.evidence:
                ids = list(item.evidence["region_ids"])  # type: ignore[arg-type]
                bad = item.model_copy(
                    update={"evidence": {**item.evidence, "region_ids": [i + 1 for i in ids]}}
                )
                assert check_temporal_qa(bad, c["lc"], c["dates"], min_region_px=c["mrp"])
                # a box that frames no region
                q = item.question.replace(
                    re.findall(r"\[[^\]]*\]", item.question)[0], "[0, 0, 1, 1]"
                )
                assert check_temporal_qa(
                    item.model_copy(update={"question": q}),
                    c["lc"],
                    c["dates"],
                    min_region_px=c["mrp"],
                )
                caught += 1
            elif "pixels" in item.evidence:
                px = list(item.evidence["pixels"])  # type: ignore[arg-type]
                bad = item.model_copy(
                    update={"evidence": {**item.evidence, "pixels": [px[0] + 1, *px[1:]]}}
                )
                assert check_temporal_qa(bad, c["lc"], c["dates"], min_region_px=c["mrp"])
                caught += 1
    assert caught > 200


def test_captions_name_dates_and_are_true(cases: list[dict[str, Any]]) -> None:
    n = 0
    for i, c in enumerate(cases):
        assert 1 <= len(c["captions"]) <= 5
        assert len(set(c["captions"])) == len(c["captions"])
        assert all(is_temporal_caption(x) for x in c["captions"])
        problems = check_temporal_captions(
            c["captions"], c["lc"], c["dates"], min_region_px=c["mrp"], template=True
        )
        assert problems == [], (i, c["captions"], problems)
        n += len(c["captions"])
    assert n >= 4 * len(cases)


def test_false_captions_are_caught(cases: list[dict[str, Any]]) -> None:
    flips = {
        "grew": "shrank",
        "expanded": "declined",
        "shrank": "grew",
        "declined": "expanded",
        "stayed stable": "grew",
        "remained stable": "shrank",
        "still holds on": "was reversed by",
        "was reversed by": "still holds on",
    }
    caught = Counter[str]()
    for c in cases:
        days = [d.date().isoformat() for d in c["dates"]]
        for caption in c["captions"]:
            # a date that is no acquisition
            wrong_day = caption.replace(ISO.findall(caption)[0], "1999-12-31")
            assert check_temporal_captions(
                [wrong_day], c["lc"], c["dates"], min_region_px=c["mrp"]
            ), caption
            caught["date"] += 1
            for a, b in flips.items():
                if f" {a}" in caption:
                    flipped = caption.replace(f" {a}", f" {b}")
                    assert check_temporal_captions(
                        [flipped], c["lc"], c["dates"], min_region_px=c["mrp"]
                    ), (caption, flipped)
                    caught[a] += 1
                    break
            if caption.startswith("Between ") and len(days) > 2:
                # the same change placed one step off
                d1, d2 = ISO.findall(caption)[:2]
                k = days.index(d2)
                other = k + 1 if k + 1 < len(days) else k - 1
                moved = caption.replace(f"{d1} and {d2}", f"{days[other - 1]} and {days[other]}")
                if moved != caption:
                    lc, dates, mrp = c["lc"], c["dates"], c["mrp"]
                    seq = derive_sequence(lc, dates, min_region_px=mrp)
                    box = re.findall(r"\[[^\]]*\]", caption)[0]
                    (r,) = [x for x in seq.regions if format_box(x.box) == box]
                    same = other in r.changed_steps and (
                        r.classes[other - 1],
                        r.classes[other],
                    ) == (r.classes[k - 1], r.classes[k])
                    if not same:
                        assert check_temporal_captions([moved], lc, dates, min_region_px=mrp)
                        caught["step"] += 1
    assert caught["date"] >= 4 * len(cases)
    assert caught["step"] >= 40 and sum(caught[a] for a in flips) >= 100, caught


def test_facts_that_disagree_with_the_stack_are_caught() -> None:
    """Annotating from facts of a different stack (a region's change moved one step) gives
    answers the checker rejects: it reads the stack, not the facts."""
    caught = 0
    for seed in range(60):
        lc, dates, mrp = random_stack(seed)
        if lc.shape[0] < 4:
            continue
        other = lc.copy()
        other[1:] = lc[:-1]  # every change one step later
        facts = _facts(other, dates, mrp)
        _, qa = annotate_series(facts, key=f"k{seed}", seed=1, captions_per_sample=3)
        complaints = [
            p
            for item in qa
            if item.type in ("when_appeared", "which_first")
            for p in check_temporal_qa(item, lc, dates, min_region_px=mrp)
        ]
        caught += bool(complaints)
    assert caught >= 10


def test_annotate_series_is_deterministic_per_key_and_seed(cases: list[dict[str, Any]]) -> None:
    c = cases[3]
    again = annotate_series(c["facts"], key="cell3_x", seed=0, captions_per_sample=5)
    assert again == (c["captions"], c["qa"])
    differ = 0
    for key in ("a", "b", "c", "d"):
        other = annotate_series(c["facts"], key=key, seed=0, captions_per_sample=5)
        differ += other != again
    assert differ >= 2


def test_a_sequence_without_change_gets_a_no_change_caption_and_class_questions() -> None:
    lc = np.full((4, 12, 12), 3, dtype=np.uint8)
    lc[:, :, 6:] = 8
    dates = [datetime(2018 + i, 7, 1, tzinfo=UTC) for i in range(4)]
    facts = _facts(lc, dates, 4)
    captions, qa = annotate_series(facts, key="k", seed=0, captions_per_sample=5)
    assert [q.type for q in qa] == ["class_trend"]
    assert qa[0].answer == "stable"
    assert "No region changed between 2018-07-01 and 2021-07-01." in captions
    assert check_temporal_captions(captions, lc, dates, min_region_px=4, template=True) == []


def test_a_hand_made_sequence_gives_the_expected_answers() -> None:
    """A 3-date sequence: a 4x4 block of cropland (4) turns built-up (5) at step 2 and stays; a
    3x3 block of grassland (3) becomes water (8) at step 1 and comes back at step 2."""
    lc = np.full((3, 20, 20), 4, dtype=np.uint8)
    lc[:, 10:, :] = 3
    lc[2, 0:4, 0:4] = 5
    lc[1, 15:18, 15:18] = 8
    dates = [
        datetime(2019, 6, 1, tzinfo=UTC),
        datetime(2020, 6, 3, tzinfo=UTC),
        datetime(2021, 6, 5, tzinfo=UTC),
    ]
    facts = _facts(lc, dates, 4)
    seq = derive_sequence(lc, dates, min_region_px=4)
    assert [(r.pixels, r.changed_steps, r.persistent) for r in seq.regions] == [
        (16, (2,), True),
        (9, (1, 2), False),
    ]
    built = "[0, 0, 200, 200]"
    water = "[750, 750, 900, 900]"
    items = {
        "when_appeared": (
            f"When did the area {built} first change?",
            "between 2020-06-03 and 2021-06-05",
        ),
        "which_first": (f"Which area changed first: {built} or {water}?", water),
        "change_count": (f"How many times did the land cover of the area {water} change?", "2"),
        "permanence": (f"Is the change in the area {water} permanent or transient?", "transient"),
        "max_area_date": ("On which date was the area of water largest?", "2020-06-03"),
        "class_trend": ("Did cropland grow, shrink or stay stable?", "shrank"),  # 200 -> 184
    }
    for kind, (question, answer) in items.items():
        item = QAItem(type=kind, question=question, answer=answer, evidence={})  # type: ignore[arg-type]
        assert check_temporal_qa(item, lc, dates, min_region_px=4) == [], kind
        evidence, problems = TEMPORAL_REGISTRY[kind].evidence(question, facts)
        assert problems == [] and evidence, kind
    grass = QAItem(
        type="class_trend", question="Did grassland grow or shrink?", answer="stable", evidence={}
    )
    assert check_temporal_qa(grass, lc, dates, min_region_px=4) == []  # 200 -> 191 -> 200
    for kind, wrong in (("permanence", "permanent"), ("change_count", "1"), ("which_first", built)):
        item = QAItem(type=kind, question=items[kind][0], answer=wrong, evidence={})  # type: ignore[arg-type]
        assert check_temporal_qa(item, lc, dates, min_region_px=4), kind


def test_pair_checking_refuses_temporal_items_by_name() -> None:
    item = QAItem(
        type="change_count", question="How many times? [0, 0, 1, 1]", answer="1", evidence={}
    )
    facts = make_sample().facts
    assert facts is not None
    assert check_qa_item(item, facts) == [
        "change_count: a temporal QA type is checked against the sequence "
        "(annotators.temporal.check_temporal_qa), not against the pair facts"
    ]


def test_the_checker_reads_every_stack_as_the_label_stage_does(
    cases: list[dict[str, Any]],
) -> None:
    """Two implementations of the series contract (label stage, checker) agree on every fact."""
    regions = 0
    for i, c in enumerate(cases):
        f: SeriesFacts = c["facts"]
        seq = derive_sequence(c["lc"], c["dates"], min_region_px=c["mrp"])
        assert seq.valid_pixels == f.valid_pixels, i
        assert seq.step_changed == tuple(s.changed_pixels for s in f.steps), i
        assert seq.ever_changed == f.ever_changed_pixels, i
        assert seq.threshold_px == f.threshold_px, i
        assert seq.class_pixels == {t.class_name: t.pixels for t in f.classes}, i
        assert [
            (r.id, r.pixels, r.classes, r.changed_steps, r.persistent, r.bbox_px, r.box)
            for r in seq.regions
        ] == [
            (r.id, r.pixels, r.classes, r.changed_steps, r.persistent, r.bbox_px, r.box)
            for r in f.regions
        ], i
        assert all(seq.trend(t.class_name) == t.trend for t in f.classes), i
        regions += len(f.regions)
    assert regions >= 2 * len(cases)


def test_check_series_annotation_gathers_every_complaint(cases: list[dict[str, Any]]) -> None:
    from geodelta.annotators.temporal import check_series_annotation

    c = next(c for c in cases if len(c["qa"]) >= 3)
    args = (c["lc"], c["dates"])
    assert check_series_annotation(c["captions"], c["qa"], *args, min_region_px=c["mrp"]) == []
    bad = [*c["qa"]]
    bad[1] = _with(bad[1], _wrong_answers(bad[1], c["facts"])[0])
    out = check_series_annotation(c["captions"], bad, *args, min_region_px=c["mrp"])
    assert len(out) >= 1 and all(m.startswith(f"qa 1 ({bad[1].type})") for m in out)


def _hand_made() -> tuple[np.ndarray, list[datetime]]:
    """The sequence of test_a_hand_made_sequence_gives_the_expected_answers."""
    lc = np.full((3, 20, 20), 4, dtype=np.uint8)
    lc[:, 10:, :] = 3
    lc[2, 0:4, 0:4] = 5
    lc[1, 15:18, 15:18] = 8
    dates = [datetime(2019, 6, 1, tzinfo=UTC), datetime(2020, 6, 3, tzinfo=UTC)]
    return lc, [*dates, datetime(2021, 6, 5, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("caption", "true"),
    [
        (
            "Cropland in the area [0, 0, 200, 200] turned into built-up area between "
            "2020-06-03 and 2021-06-05.",
            True,
        ),
        ("From 2019-06-01 to 2020-06-03 some grassland became water.", True),
        ("Over the sequence, from 2019-06-01 to 2021-06-05, grassland remained stable.", True),
        ("Between 2019-06-01 and 2021-06-05, cropland shrank.", True),
        ("The water in [750, 750, 900, 900] appeared between 2019-06-01 and 2020-06-03.", True),
        (
            "Cropland in the area [0, 0, 200, 200] turned into built-up area between "
            "2019-06-01 and 2020-06-03.",
            False,
        ),
        ("From 2019-06-01 to 2021-06-05 grassland became water.", False),
        ("Between 2019-06-01 and 2021-06-05, cropland grew.", False),
        ("Between 2021-06-05 and 2019-06-01, grassland became water.", False),
        ("The area [0, 0, 200, 200] changed between 2019-06-01 and 2020-06-03.", False),
        ("In 2020-06-04 water covered [750, 750, 900, 900].", False),
        ("The area [10, 10, 300, 300] changed between 2020-06-03 and 2021-06-05.", False),
        ("Water grew between the first and the last acquisition.", False),
    ],
)
def test_free_text_temporal_captions_are_checked(caption: str, true: bool) -> None:
    lc, dates = _hand_made()
    complaints = check_temporal_captions([caption], lc, dates, min_region_px=4)
    assert (complaints == []) is true, complaints


def test_the_qa_suite_admits_temporal_types_in_sequence_releases_only() -> None:
    from geodelta.schemas.expectations import release_suites
    from tests.factories import make_config

    def types_of(cfg: Any) -> list[str]:
        (qa,) = [s for s in release_suites(cfg) if s.table == "qa"]
        (spec,) = [
            e
            for e in qa.expectations
            if e.kwargs.get("column") == "type" and e.type == "expect_column_values_to_be_in_set"
        ]
        return list(spec.kwargs["value_set"])

    assert types_of(make_config()) == list(PAIR_QA_TYPES)  # pair releases: as before
    series = make_config(
        time={"series": {"start": "2018-01-01", "end": "2023-01-01", "step": "year"}}
    )
    assert types_of(series) == list(QA_TYPES)
