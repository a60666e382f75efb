"""QA type ``segment_change`` (referring change segmentation): which regions form the change
a question refers to?

Asked on changed tiles: the question names a part of the tile (a position word of the 3x3
grid holding the centroid of some region); the answer lists, in digits separated by ", ", the
ids of every region whose centroid lies there. The answer mask is the union of those ids in
``regions.png`` (question / answer / mask triplets, as in CDQAG).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodelta.annotators.qa.base import Evidence, QASpec, has_change, qa_item
from geodelta.annotators.qa.grounding import grounding, ids_where, parse_ids, position_in
from geodelta.annotators.vocabulary import pick
from geodelta.schemas import ChangeFacts, QAItem

if TYPE_CHECKING:
    import numpy as np

NAME = "segment_change"


def applies(facts: ChangeFacts, no_change_epsilon: float) -> bool:
    """A changed tile."""
    return has_change(facts, no_change_epsilon)


def _ids(facts: ChangeFacts, position: str) -> list[int]:
    return ids_where(facts, lambda c: c.position == position)


def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
    """One position of the regions drawn; the ids of the regions there."""
    comps = sorted(facts.components, key=lambda c: c.id)
    positions = list(dict.fromkeys(c.position for c in comps))
    pos = positions[int(rng.integers(len(positions)))]
    question = pick(
        rng,
        (
            f"Segment the change in the {pos} of the image.",
            f"Which regions of change lie in the {pos}?",
            f"Mark the changed areas in the {pos} of the tile.",
        ),
    )
    ids = _ids(facts, pos)
    return qa_item(
        NAME, question, ", ".join(str(i) for i in ids), {"position": pos, **grounding(facts, ids)}
    )


def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
    """The regions in the one part of the tile the question names."""
    named = position_in(question)
    if len(named) != 1:
        return {}, [f"the {NAME} question must name exactly one position (names {named})"]
    ids = _ids(facts, named[0])
    if not ids:
        return {}, [f"{NAME}: no region lies in the {named[0]}"]
    return {"position": named[0], **grounding(facts, ids)}, []


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """The ids of exactly the regions whose centroid lies in the position asked about."""
    if not changed:
        return [f"{NAME}: asked about a tile without change"]
    pos = item.evidence.get("position")
    named = position_in(item.question)
    if not isinstance(pos, str) or named != [pos]:
        return [f"{NAME}: evidence position {pos!r} but the question names {named}"]
    ids = _ids(facts, pos)
    out = []
    if not ids:
        out.append(f"{NAME}: no region lies in the {pos}")
    if item.evidence.get("region_ids") != ids:
        out.append(
            f"{NAME}: evidence regions {item.evidence.get('region_ids')} but facts give {ids}"
        )
    given = parse_ids(answer)
    if given is None or sorted(given) != ids:
        out.append(
            f"{NAME}: answer {answer!r} but the regions in the {pos} are "
            f"{', '.join(str(i) for i in ids)}"
        )
    return out


SPEC = QASpec(
    name=NAME,
    answer_format="the ids of the regions (regions_detail 'id') whose position is the one "
    "the question names, as digits separated by ', '",
    applies=applies,
    ask=ask,
    evidence=evidence,
    check=check,
)
