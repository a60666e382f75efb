"""QA type ``what_changed_here`` (box -> transition): what changed inside a given box?

Asked on changed land-cover tiles: the question gives the normalised 0..1000 box
``[x0, y0, x1, y1]`` of one region, the answer is that region's dominant transition
('<from class> to <to class>').
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodelta.annotators.qa.base import Evidence, QASpec, has_change, qa_item
from geodelta.annotators.qa.grounding import box_of, by_id, grounding, parse_boxes
from geodelta.annotators.vocabulary import class_forms, class_label, pick
from geodelta.schemas import ChangeFacts, QAItem
from geodelta.schemas.records import format_box

if TYPE_CHECKING:
    import numpy as np

NAME = "what_changed_here"


def applies(facts: ChangeFacts, no_change_epsilon: float) -> bool:
    """A changed land-cover tile."""
    return has_change(facts, no_change_epsilon) and not facts.binary and bool(facts.components)


def _evidence_of(facts: ChangeFacts, ids: list[int]) -> Evidence:
    """The regions the box frames; their transition when they share one (several regions
    can have the same normalised box)."""
    comps = by_id(facts)
    transitions = {(comps[i].from_class, comps[i].to_class) for i in ids}
    out: Evidence = {}
    if len(transitions) == 1:
        ((src, dst),) = transitions
        out = {"from_class": src, "to_class": dst}
    return out | grounding(facts, ids, boxes=True)


def _regions_at(facts: ChangeFacts, box: tuple[int, int, int, int]) -> list[int]:
    """The regions whose normalised box is ``box``."""
    return sorted(c.id for c in facts.components if box_of(facts, c.id) == box)


def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
    """One region drawn; the question gives its box, the answer its transition."""
    ids = sorted(c.id for c in facts.components)
    region = by_id(facts)[ids[int(rng.integers(len(ids)))]]
    box = format_box(box_of(facts, region.id))
    question = pick(
        rng,
        (
            f"What changed in the area {box}?",
            f"What kind of change happened inside {box}?",
            f"Which land-cover transition took place in the box {box}?",
        ),
    )
    answer = f"{class_label(region.from_class)} to {class_label(region.to_class)}"
    return qa_item(
        NAME, question, answer, _evidence_of(facts, _regions_at(facts, box_of(facts, region.id)))
    )


def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
    """The region(s) whose box the question gives."""
    boxes = parse_boxes(question)
    if len(boxes) != 1:
        return {}, [f"the {NAME} question must give exactly one box (it gives {len(boxes)})"]
    ids = _regions_at(facts, boxes[0])
    if not ids:
        return {}, [f"{NAME}: the box {format_box(boxes[0])} is the box of no region"]
    return _evidence_of(facts, ids), []


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """The transition of the region the question's box frames (any of several equal boxes)."""
    if facts.binary or not changed:
        return [f"{NAME}: needs a land-cover label with change"]
    boxes = parse_boxes(item.question)
    if len(boxes) != 1:
        return [f"{NAME}: the question gives {len(boxes)} boxes, not one"]
    ids = _regions_at(facts, boxes[0])
    if not ids:
        return [f"{NAME}: the box {format_box(boxes[0])} is the box of no region"]
    out = []
    if item.evidence.get("region_ids") != ids:
        out.append(
            f"{NAME}: evidence regions {item.evidence.get('region_ids')} but the box frames {ids}"
        )
    comps = by_id(facts)
    ok = any(
        answer == f"{a} to {b}"
        for i in ids
        for a in class_forms(comps[i].from_class)
        for b in class_forms(comps[i].to_class)
    )
    if not ok:
        expected = " or ".join(
            f"{class_label(comps[i].from_class)} to {class_label(comps[i].to_class)}" for i in ids
        )
        out.append(f"{NAME}: answer {answer!r} but region(s) {ids} went {expected}")
    return out


SPEC = QASpec(
    name=NAME,
    answer_format="'<from class> to <to class>' of the region whose box [x0, y0, x1, y1] "
    "(regions_detail 'box', integers 0-1000) the question gives",
    applies=applies,
    ask=ask,
    evidence=evidence,
    check=check,
)
