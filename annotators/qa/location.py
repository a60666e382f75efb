"""QA type ``location``: where is the largest region of change? Asked on changed tiles;
answered with a position word of the tile's 3x3 grid."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodelta.annotators.qa.base import Evidence, QASpec, has_change, qa_item
from geodelta.annotators.vocabulary import pick
from geodelta.schemas import ChangeComponent, ChangeFacts, QAItem
from geodelta.schemas.records import POSITION_WORDS

if TYPE_CHECKING:
    import numpy as np

NAME = "location"
QUESTIONS = (
    "Where is the largest change?",
    "In which part of the image is the biggest changed region?",
    "Where does the largest region of change lie?",
)


def applies(facts: ChangeFacts, no_change_epsilon: float) -> bool:
    """A changed tile."""
    return has_change(facts, no_change_epsilon)


def _evidence(big: ChangeComponent) -> Evidence:
    return {
        "component": big.id,
        "pixels": big.pixels,
        "centroid_row": big.centroid[0],
        "centroid_col": big.centroid[1],
    }


def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
    """The template's question; the position of the largest region."""
    big = facts.components[0]
    question = pick(rng, QUESTIONS)
    return qa_item(NAME, question, big.position, _evidence(big))


def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
    """The largest region (none on a tile without regions)."""
    if not facts.components:
        return {}, []
    return _evidence(facts.components[0]), []


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
    answer_format="one of: " + ", ".join(f"'{p}'" for p in POSITION_WORDS),
    applies=applies,
    ask=ask,
    evidence=evidence,
    check=check,
)
