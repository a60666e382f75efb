"""QA type ``refer_change`` (referring expression -> boxes): where did one class become another?

Asked on changed tiles. On a land-cover tile the question names one transition of the regions
("Where did tree cover become cropland?") and the answer gives the box of every region whose
dominant transition it is; on a binary tile it asks where the scene changed and the answer
gives the box of every region. Boxes are normalised 0..1000 ``[x0, y0, x1, y1]``, one per
region in region-id order, separated by ", "; the evidence names the regions and their pixel
boxes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodelta.annotators.qa.base import Evidence, QASpec, has_change, qa_item
from geodelta.annotators.qa.grounding import (
    BOX_RE,
    all_ids,
    box_of,
    boxes_text,
    grounding,
    ids_where,
    parse_boxes,
)
from geodelta.annotators.vocabulary import class_label, mentioned_classes_free, pick
from geodelta.schemas import ChangeFacts, QAItem

if TYPE_CHECKING:
    import numpy as np

NAME = "refer_change"
BINARY_QUESTIONS = (
    "Where did the scene change? Give the box of each changed region.",
    "Locate every region of change.",
    "Where are the changed areas?",
)


def applies(facts: ChangeFacts, no_change_epsilon: float) -> bool:
    """A changed tile."""
    return has_change(facts, no_change_epsilon)


def _transitions(facts: ChangeFacts) -> list[tuple[str, str]]:
    """The regions' dominant transitions, in order of their first region id."""
    comps = sorted(facts.components, key=lambda c: c.id)
    return list(dict.fromkeys((c.from_class, c.to_class) for c in comps))


def _ids(facts: ChangeFacts, transition: tuple[str, str] | None) -> list[int]:
    """The regions of one dominant transition (every region for None)."""
    if transition is None:
        return all_ids(facts)
    return ids_where(facts, lambda c: (c.from_class, c.to_class) == transition)


def _evidence_of(facts: ChangeFacts, transition: tuple[str, str] | None) -> Evidence:
    out: Evidence = {}
    if transition is not None:
        out = {"from_class": transition[0], "to_class": transition[1]}
    return out | grounding(facts, _ids(facts, transition), boxes=True)


def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
    """One transition of the regions drawn (every region on a binary tile); its boxes."""
    transition: tuple[str, str] | None = None
    if facts.binary:
        question = pick(rng, BINARY_QUESTIONS)
    else:
        options = _transitions(facts)
        transition = options[int(rng.integers(len(options)))]
        a, b = (class_label(c) for c in transition)
        question = pick(
            rng,
            (
                f"Where did {a} become {b}?",
                f"Where was {a} converted to {b}? Give the boxes.",
                f"Locate the areas where {a} turned into {b}.",
            ),
        )
    answer = boxes_text(facts, _ids(facts, transition))
    return qa_item(NAME, question, answer, _evidence_of(facts, transition))


def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
    """The transition the question names (none: every region) and the regions of it."""
    named = list(dict.fromkeys(c for c, _, _ in mentioned_classes_free(question)))
    if not named or facts.binary:
        return _evidence_of(facts, None), []
    if len(named) != 2:
        return {}, [
            f"the {NAME} question must name a from-class and a to-class, or no class "
            f"(it names {', '.join(class_label(c) for c in named)})"
        ]
    transition = (named[0], named[1])
    if not _ids(facts, transition):
        return {}, [
            f"{NAME} asks where {class_label(named[0])} became {class_label(named[1])}, "
            "which is the dominant transition of no region"
        ]
    return _evidence_of(facts, transition), []


def boxes_only(answer: str) -> bool:
    """Whether an answer holds nothing but boxes (separated by commas, spaces or 'and')."""
    rest = BOX_RE.sub("", answer).replace(",", " ").replace(" and ", " ").strip()
    return rest == "" and BOX_RE.search(answer) is not None


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """The boxes of exactly the regions of the transition asked about (every region if none)."""
    if not changed:
        return [f"{NAME}: asked about a tile without change"]
    src, dst = item.evidence.get("from_class"), item.evidence.get("to_class")
    transition = (str(src), str(dst)) if src is not None and dst is not None else None
    if transition is not None:
        in_question = [c for c, _, _ in mentioned_classes_free(item.question)]
        if in_question and list(dict.fromkeys(in_question)) != list(transition):
            return [
                f"{NAME}: evidence names {transition[0]} to {transition[1]} but the question "
                f"names {', '.join(dict.fromkeys(in_question))}"
            ]
    ids = _ids(facts, transition)
    out = []
    if not ids:
        out.append(f"{NAME}: no region has the dominant transition {transition}")
    if item.evidence.get("region_ids") != ids:
        out.append(
            f"{NAME}: evidence regions {item.evidence.get('region_ids')} but facts give {ids}"
        )
    expected = sorted(box_of(facts, i) for i in ids)
    if not boxes_only(answer):
        out.append(f"{NAME}: answer {answer!r} is not a list of boxes [x0, y0, x1, y1]")
    elif sorted(parse_boxes(answer)) != expected:
        out.append(f"{NAME}: answer {answer!r} but the regions' boxes are {boxes_text(facts, ids)}")
    return out


SPEC = QASpec(
    name=NAME,
    answer_format="the box of each region meant, as [x0, y0, x1, y1] integers 0-1000 "
    "(regions_detail 'box'), separated by ', '; the question names one from-to transition of "
    "the regions, or none to ask for every region",
    applies=applies,
    ask=ask,
    evidence=evidence,
    check=check,
)
