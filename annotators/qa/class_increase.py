"""QA type ``class_increase``: did the area of one class grow? Asked on changed land-cover tiles;
answered 'yes' or 'no' (the class is drawn so that both answers occur about equally)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodelta.annotators.qa.base import (
    Evidence,
    QASpec,
    ask_trend,
    check_trend,
    trend_applies,
    trend_question_evidence,
)
from geodelta.annotators.vocabulary import area_of
from geodelta.schemas import ChangeFacts, QAItem

if TYPE_CHECKING:
    import numpy as np

NAME = "class_increase"


def _questions(label: str, is_are: str, has_have: str) -> tuple[str, ...]:
    return (
        f"Did {area_of(label)} increase?",
        f"{is_are} there more {label} in the second image than in the first?",
        f"{has_have} {label} expanded between the two dates?",
    )


def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
    """The template's question about one class of the class totals."""
    return ask_trend(rng, facts, NAME, increase=True, questions=_questions)


def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
    """The totals of the one class the question names."""
    return trend_question_evidence(NAME, question, facts)


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """'yes' exactly when the class has more pixels after than before."""
    return check_trend(item, answer, facts, increase=True)


SPEC = QASpec(
    name=NAME,
    answer_format="'yes' or 'no'; the question names exactly one class of the class totals",
    applies=trend_applies,
    ask=ask,
    evidence=evidence,
    check=check,
)
