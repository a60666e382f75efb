"""QA type ``smallest_change``: which transition covers the least area? Asked on changed
land-cover tiles with two regions or more and a unique smallest transition; answered
'<from class> to <to class>'."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodelta.annotators.qa.base import (
    Evidence,
    QASpec,
    check_extreme,
    extreme_evidence,
    has_change,
    qa_item,
    transition_answer,
    transition_evidence,
)
from geodelta.annotators.vocabulary import pick
from geodelta.schemas import ChangeFacts, QAItem

if TYPE_CHECKING:
    import numpy as np

NAME = "smallest_change"
QUESTIONS = (
    "What is the smallest change between the two images?",
    "Which land-cover transition covers the least area?",
    "What is the least extensive type of change?",
)


def applies(facts: ChangeFacts, no_change_epsilon: float) -> bool:
    """A changed land-cover tile, two regions or more, a unique smallest transition."""
    ts = facts.transitions
    return (
        has_change(facts, no_change_epsilon)
        and not facts.binary
        and facts.n_regions >= 2
        and len(ts) >= 2
        and ts[-1].pixels < ts[-2].pixels
    )


def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
    """The template's question; the last transition (transitions are by decreasing size)."""
    t = facts.transitions[-1]
    question = pick(rng, QUESTIONS)
    return qa_item(NAME, question, transition_answer(t), transition_evidence(t))


def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
    """The transition with the fewest pixels."""
    return extreme_evidence(facts, largest=False)


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """The transition with the fewest pixels (any of them on a tie)."""
    return check_extreme(NAME, answer, facts, changed)


SPEC = QASpec(
    name=NAME,
    answer_format="'<from class> to <to class>' with the labels of the summary",
    applies=applies,
    ask=ask,
    evidence=evidence,
    check=check,
)
