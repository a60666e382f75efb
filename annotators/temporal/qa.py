"""The temporal QA types of sequence samples: when each applies, how the template asks it, and
the evidence of an answer, all from :class:`~geodelta.schemas.series.SeriesFacts`.

Six types (``schemas/qa.py``, ``TEMPORAL_QA_TYPES``); a question about a region gives the
region's normalised box ``[x0, y0, x1, y1]`` (0..1000), and is asked only about regions whose
box is the box of no other region, so the box identifies the region. Dates are written ISO
``YYYY-MM-DD`` (the UTC day of the acquisition).

- ``when_appeared``: when did the area <box> first change? -> 'between <d[k-1]> and <d[k]>',
  k the region's first changed step;
- ``which_first``: which area changed first, <box A> or <box B>? -> the box of the earlier one
  (two regions whose first changed steps differ);
- ``change_count``: how many times did the land cover of <box> change? -> digits (the number
  of changed steps; 0 when the pixels changed but the dominant class never did);
- ``permanence``: is the change in <box> permanent or transient? -> 'permanent' when the last
  date's class differs from the first date's, else 'transient';
- ``class_trend``: did <class> grow, shrink or stay stable? -> the class's trend;
- ``max_area_date``: on which date was <class> largest? -> that date (asked only when the
  maximum is unique).

How an answer is checked, from the land-cover stack itself, is :mod:`.check`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from geodelta.annotators.qa.grounding import parse_boxes
from geodelta.annotators.temporal.derive import iso_day
from geodelta.annotators.vocabulary import area_of, class_label, mentioned_classes_free, pick
from geodelta.schemas import QAItem
from geodelta.schemas.qa import TEMPORAL_QA_TYPES
from geodelta.schemas.records import Evidence as EvidenceValue
from geodelta.schemas.records import format_box
from geodelta.schemas.series import ClassTrend, RegionHistory, SeriesFacts

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "TEMPORAL_REGISTRY",
    "TemporalSpec",
    "askable_regions",
    "series_types_for",
]

Evidence = dict[str, EvidenceValue]


@dataclass(frozen=True)
class TemporalSpec:
    """The behaviour of one temporal QA type.

    Attributes:
        name: the type name (``schemas/qa.py``).
        answer_format: how an LLM must write the answer (one line of its task).
        applies: ``facts -> bool``: whether the type has a well-defined answer.
        ask: ``(rng, facts) -> QAItem``: the template's question, answer and evidence.
        evidence: ``(question, facts) -> (evidence, complaints)``: the facts an answer to this
            question rests on, found from the question (never from the answer).
    """

    name: str
    answer_format: str
    applies: Callable[[SeriesFacts], bool]
    ask: Callable[[np.random.Generator, SeriesFacts], QAItem]
    evidence: Callable[[str, SeriesFacts], tuple[Evidence, list[str]]]


def _day(facts: SeriesFacts, i: int) -> str:
    return iso_day(facts.dates[i])


def _interval(facts: SeriesFacts, step: int) -> str:
    """'between <date k-1> and <date k>'."""
    return f"between {_day(facts, step - 1)} and {_day(facts, step)}"


def askable_regions(facts: SeriesFacts, *, changed: bool = False) -> list[RegionHistory]:
    """The regions a question may name by box: their box is the box of no other region.

    Args:
        facts: the sequence's facts.
        changed: only regions whose dominant class changed at some step.
    """
    boxes = [r.box for r in facts.regions]
    return [
        r for r in facts.regions if boxes.count(r.box) == 1 and (r.changed_steps or not changed)
    ]


def _region_evidence(regions: list[RegionHistory]) -> Evidence:
    return {
        "region_ids": [r.id for r in regions],
        "boxes_px": [list(r.bbox_px) for r in regions],
    }


def _qa(kind: str, question: str, answer: str, evidence: Evidence) -> QAItem:
    return QAItem.model_validate(
        {"type": kind, "question": question, "answer": answer, "evidence": evidence}
    )


def _regions_in(
    kind: str, question: str, facts: SeriesFacts, count: int
) -> tuple[list[RegionHistory], list[str]]:
    """The regions the boxes of a question name (``count`` boxes, each one region's)."""
    boxes = parse_boxes(question)
    if len(boxes) != count:
        return [], [f"the {kind} question must give {count} box(es) (it gives {len(boxes)})"]
    out, problems = [], []
    for box in boxes:
        hits = [r for r in facts.regions if r.box == box]
        if len(hits) != 1:
            problems.append(
                f"{kind}: the box {format_box(box)} is the box of {len(hits)} regions, not one"
            )
        else:
            out.append(hits[0])
    return out, problems


def _one_class(kind: str, question: str, facts: SeriesFacts) -> tuple[ClassTrend | None, list[str]]:
    named = list(dict.fromkeys(c for c, _, _ in mentioned_classes_free(question)))
    if len(named) != 1:
        return None, [
            f"the {kind} question must name exactly one land-cover class "
            f"(it names {', '.join(class_label(c) for c in named) or 'none'})"
        ]
    trend = next((c for c in facts.classes if c.class_name == named[0]), None)
    if trend is None:
        return None, [f"{kind}: {class_label(named[0])} is not in the sequence"]
    return trend, []


# --- when_appeared ------------------------------------------------------------------------


def _when_evidence_of(r: RegionHistory) -> Evidence:
    k = r.changed_steps[0]
    return _region_evidence([r]) | {
        "step": k,
        "from_class": r.classes[k - 1],
        "to_class": r.classes[k],
    }


def _when_ask(rng: np.random.Generator, facts: SeriesFacts) -> QAItem:
    options = askable_regions(facts, changed=True)
    r = options[int(rng.integers(len(options)))]
    k = r.changed_steps[0]
    box = format_box(r.box)
    a, b = class_label(r.classes[k - 1]), class_label(r.classes[k])
    question = pick(
        rng,
        (
            f"When did the area {box} first change?",
            f"Between which two acquisitions did the change in the area {box} appear?",
            f"When did {a} in the area {box} first become {b}?",
        ),
    )
    return _qa("when_appeared", question, _interval(facts, k), _when_evidence_of(r))


def _when_evidence(question: str, facts: SeriesFacts) -> tuple[Evidence, list[str]]:
    regions, problems = _regions_in("when_appeared", question, facts, 1)
    if problems:
        return {}, problems
    if not regions[0].changed_steps:
        return {}, [
            f"when_appeared: the region at {format_box(regions[0].box)} never changed class"
        ]
    return _when_evidence_of(regions[0]), []


# --- which_first --------------------------------------------------------------------------


def _first_pairs(facts: SeriesFacts) -> list[tuple[RegionHistory, RegionHistory]]:
    regions = askable_regions(facts, changed=True)
    return [
        (a, b)
        for i, a in enumerate(regions)
        for b in regions[i + 1 :]
        if a.changed_steps[0] != b.changed_steps[0]
    ]


def _which_evidence_of(regions: list[RegionHistory]) -> Evidence:
    return _region_evidence(regions) | {"first_steps": [r.changed_steps[0] for r in regions]}


def _which_ask(rng: np.random.Generator, facts: SeriesFacts) -> QAItem:
    pairs = _first_pairs(facts)
    a, b = pairs[int(rng.integers(len(pairs)))]
    if rng.random() < 0.5:
        a, b = b, a
    ba, bb = format_box(a.box), format_box(b.box)
    question = pick(
        rng,
        (
            f"Which area changed first: {ba} or {bb}?",
            f"Did the area {ba} or the area {bb} change earlier?",
            f"Of the areas {ba} and {bb}, which one changed first?",
        ),
    )
    first = a if a.changed_steps[0] < b.changed_steps[0] else b
    return _qa("which_first", question, format_box(first.box), _which_evidence_of([a, b]))


def _which_evidence(question: str, facts: SeriesFacts) -> tuple[Evidence, list[str]]:
    regions, problems = _regions_in("which_first", question, facts, 2)
    if problems:
        return {}, problems
    if any(not r.changed_steps for r in regions):
        return {}, ["which_first: one of the two areas never changed class"]
    if regions[0].changed_steps[0] == regions[1].changed_steps[0]:
        return {}, ["which_first: the two areas first changed at the same step"]
    return _which_evidence_of(regions), []


# --- change_count -------------------------------------------------------------------------


def _count_evidence_of(r: RegionHistory) -> Evidence:
    return _region_evidence([r]) | {"changed_steps": list(r.changed_steps)}


def _count_ask(rng: np.random.Generator, facts: SeriesFacts) -> QAItem:
    options = askable_regions(facts)
    r = options[int(rng.integers(len(options)))]
    box = format_box(r.box)
    question = pick(
        rng,
        (
            f"How many times did the land cover of the area {box} change?",
            f"How often did the main land cover in the area {box} change over the sequence?",
            f"How many changes of land cover does the area {box} go through?",
        ),
    )
    return _qa("change_count", question, str(len(r.changed_steps)), _count_evidence_of(r))


def _count_evidence(question: str, facts: SeriesFacts) -> tuple[Evidence, list[str]]:
    regions, problems = _regions_in("change_count", question, facts, 1)
    return ({}, problems) if problems else (_count_evidence_of(regions[0]), [])


# --- permanence ---------------------------------------------------------------------------


def _perm_evidence_of(r: RegionHistory) -> Evidence:
    return _region_evidence([r]) | {"class_first": r.classes[0], "class_last": r.classes[-1]}


def _perm_ask(rng: np.random.Generator, facts: SeriesFacts) -> QAItem:
    options = askable_regions(facts, changed=True)
    want = bool(rng.random() < 0.5)  # 'permanent' and 'transient' drawn half and half
    pool = [r for r in options if r.persistent == want] or options
    r = pool[int(rng.integers(len(pool)))]
    box = format_box(r.box)
    question = pick(
        rng,
        (
            f"Is the change in the area {box} permanent or transient?",
            f"Did the change in the area {box} last, or was it reversed? Answer permanent or "
            "transient.",
            f"Was the land-cover change in the area {box} permanent or transient?",
        ),
    )
    answer = "permanent" if r.persistent else "transient"
    return _qa("permanence", question, answer, _perm_evidence_of(r))


def _perm_evidence(question: str, facts: SeriesFacts) -> tuple[Evidence, list[str]]:
    regions, problems = _regions_in("permanence", question, facts, 1)
    if problems:
        return {}, problems
    if not regions[0].changed_steps:
        return {}, [f"permanence: the region at {format_box(regions[0].box)} never changed class"]
    return _perm_evidence_of(regions[0]), []


# --- class_trend --------------------------------------------------------------------------


def _trend_evidence_of(c: ClassTrend, facts: SeriesFacts) -> Evidence:
    return {"class": c.class_name, "pixels": list(c.pixels), "threshold_px": facts.threshold_px}


def _trend_ask(rng: np.random.Generator, facts: SeriesFacts) -> QAItem:
    words = sorted({c.trend for c in facts.classes})
    want = words[int(rng.integers(len(words)))]  # each trend present drawn equally often
    pool = [c for c in facts.classes if c.trend == want]
    c = pool[int(rng.integers(len(pool)))]
    label = class_label(c.class_name)
    first, last = _day(facts, 0), _day(facts, len(facts.dates) - 1)
    question = pick(
        rng,
        (
            f"Did {area_of(label)} grow, shrink or stay stable between {first} and {last}?",
            f"Over the whole sequence, did {label} grow, shrink or remain stable?",
            f"How did {area_of(label)} develop from {first} to {last}: grew, shrank or stable?",
        ),
    )
    return _qa("class_trend", question, c.trend, _trend_evidence_of(c, facts))


def _trend_evidence(question: str, facts: SeriesFacts) -> tuple[Evidence, list[str]]:
    c, problems = _one_class("class_trend", question, facts)
    return ({}, problems) if c is None else (_trend_evidence_of(c, facts), [])


# --- max_area_date ------------------------------------------------------------------------


def _unique_max(c: ClassTrend) -> bool:
    return c.pixels.count(max(c.pixels)) == 1


def _max_evidence_of(c: ClassTrend) -> Evidence:
    return {"class": c.class_name, "pixels": list(c.pixels), "date_index": c.max_index}


def _max_ask(rng: np.random.Generator, facts: SeriesFacts) -> QAItem:
    pool = [c for c in facts.classes if _unique_max(c)]
    pool = [c for c in pool if max(c.pixels) >= facts.min_region_px] or pool  # not speckle
    c = pool[int(rng.integers(len(pool)))]
    label = class_label(c.class_name)
    question = pick(
        rng,
        (
            f"On which date was {area_of(label)} largest?",
            f"At which acquisition did {label} cover the most ground?",
            f"When did {area_of(label)} reach its maximum?",
        ),
    )
    return _qa("max_area_date", question, _day(facts, c.max_index), _max_evidence_of(c))


def _max_evidence(question: str, facts: SeriesFacts) -> tuple[Evidence, list[str]]:
    c, problems = _one_class("max_area_date", question, facts)
    if c is None:
        return {}, problems
    if not _unique_max(c):
        return {}, [f"max_area_date: the area of {class_label(c.class_name)} has no unique maximum"]
    return _max_evidence_of(c), []


#: Type name -> behaviour, in the order a sequence's temporal items are asked.
TEMPORAL_REGISTRY: dict[str, TemporalSpec] = {
    s.name: s
    for s in (
        TemporalSpec(
            "when_appeared",
            "'between <YYYY-MM-DD> and <YYYY-MM-DD>': the two consecutive acquisitions around "
            "the first step at which the dominant class of the region whose box (series "
            "regions 'box') the question gives changed",
            lambda f: bool(askable_regions(f, changed=True)),
            _when_ask,
            _when_evidence,
        ),
        TemporalSpec(
            "which_first",
            "the box [x0, y0, x1, y1] of the one of the two regions (their boxes in the "
            "question) whose dominant class changed at an earlier step",
            lambda f: bool(_first_pairs(f)),
            _which_ask,
            _which_evidence,
        ),
        TemporalSpec(
            "change_count",
            "the number of steps at which the dominant class of the region whose box the "
            "question gives changed, in digits",
            lambda f: bool(askable_regions(f)),
            _count_ask,
            _count_evidence,
        ),
        TemporalSpec(
            "permanence",
            "'permanent' (the region's class at the last date differs from the first date's) or "
            "'transient' (it came back)",
            lambda f: bool(askable_regions(f, changed=True)),
            _perm_ask,
            _perm_evidence,
        ),
        TemporalSpec(
            "class_trend",
            "'grew', 'shrank' or 'stable' (series classes 'trend'); the question names exactly "
            "one class",
            lambda f: bool(f.classes),
            _trend_ask,
            _trend_evidence,
        ),
        TemporalSpec(
            "max_area_date",
            "the date 'YYYY-MM-DD' at which the one class the question names has its largest "
            "area (asked only when that maximum is unique)",
            lambda f: any(_unique_max(c) for c in f.classes),
            _max_ask,
            _max_evidence,
        ),
    )
}

if tuple(TEMPORAL_REGISTRY) != TEMPORAL_QA_TYPES:  # same types, same order as the schema
    raise TypeError(
        f"annotators/temporal: TEMPORAL_REGISTRY {tuple(TEMPORAL_REGISTRY)} differs from "
        f"schemas.qa.TEMPORAL_QA_TYPES {TEMPORAL_QA_TYPES}"
    )


def series_types_for(facts: SeriesFacts) -> list[str]:
    """The temporal QA types with a well-defined answer for these facts, in asking order."""
    return [name for name, s in TEMPORAL_REGISTRY.items() if s.applies(facts)]
