"""QA type ``location``: where is the largest region of change? Asked on changed tiles;
answered with a position word of the tile's 3x3 grid."""

from __future__ import annotations

from geodelta.annotators.qa.base import Evidence, QASpec, ask_fixed, facts_only, has_change, one_of
from geodelta.annotators.qa.grounding import grounding
from geodelta.schemas import ChangeFacts, QAItem
from geodelta.schemas.records import POSITION_WORDS

NAME = "location"
QUESTIONS = (
    "Where is the largest change?",
    "In which part of the image is the biggest changed region?",
    "Where does the largest region of change lie?",
)


def applies(facts: ChangeFacts, no_change_epsilon: float) -> bool:
    """A changed tile."""
    return has_change(facts, no_change_epsilon)


def _answer(facts: ChangeFacts, no_change_epsilon: float) -> str:
    """The position of the largest region (regions are by decreasing size)."""
    return facts.components[0].position


def _evidence(facts: ChangeFacts) -> Evidence:
    """The largest region (none on a tile without regions)."""
    if not facts.components:
        return {"region_ids": []}
    big = facts.components[0]
    return {
        "component": big.id,
        "pixels": big.pixels,
        "centroid_row": big.centroid[0],
        "centroid_col": big.centroid[1],
        # the largest region, and any other of the same size (an answer may name either)
        **grounding(facts, [c.id for c in facts.components if c.pixels == big.pixels]),
    }


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """The position of the largest region (of any of several equally large ones)."""
    if not changed:
        return ["location: asked about a tile without change"]
    top = max(c.pixels for c in facts.components)
    accepted = {c.position for c in facts.components if c.pixels == top}
    if answer not in POSITION_WORDS:
        return [f"location: answer {answer!r} is not a position word"]
    if answer not in accepted:
        return [
            f"location: answer {answer!r} but the largest region is in the "
            f"{' or '.join(sorted(accepted))}"
        ]
    return []


SPEC = QASpec(
    name=NAME,
    answer_format=one_of(POSITION_WORDS),
    applies=applies,
    ask=ask_fixed(NAME, QUESTIONS, _answer, _evidence),
    evidence=facts_only(_evidence),
    check=check,
)
