"""QA type ``largest_change``: which transition covers the most area? Asked on changed
land-cover tiles whose largest transition is unique; answered '<from class> to <to class>'."""

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

NAME = "largest_change"
QUESTIONS = (
    "What is the largest change between the two images?",
    "Which land-cover transition covers the most area?",
    "What is the main type of change?",
)


def applies(facts: ChangeFacts, no_change_epsilon: float) -> bool:
    """A changed land-cover tile with a unique largest transition."""
    ts = facts.transitions
    return (
        has_change(facts, no_change_epsilon)
        and not facts.binary
        and bool(ts)
        and (len(ts) == 1 or ts[0].pixels > ts[1].pixels)
    )


def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
    """The template's question; the first transition (transitions are by decreasing size)."""
    t = facts.transitions[0]
    question = pick(rng, QUESTIONS)
    return qa_item(NAME, question, transition_answer(t), transition_evidence(t))


def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
    """The transition with the most pixels."""
    return extreme_evidence(facts, largest=True)


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """The transition with the most pixels (any of them on a tie)."""
    return check_extreme(NAME, answer, facts, changed)


SPEC = QASpec(
    name=NAME,
    answer_format="'<from class> to <to class>' with the labels of the summary",
    applies=applies,
    ask=ask,
    evidence=evidence,
    check=check,
)
