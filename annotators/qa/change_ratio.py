"""QA type ``change_ratio``: how much of the tile changed? Asked of every sample; answered with
a bin label of :data:`~geodelta.schemas.records.CHANGE_RATIO_BINS`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodelta.annotators.qa.base import Evidence, QASpec, always, qa_item
from geodelta.annotators.vocabulary import pick
from geodelta.schemas import CHANGE_RATIO_BINS, ChangeFacts, QAItem, change_ratio_bin

if TYPE_CHECKING:
    import numpy as np

NAME = "change_ratio"
QUESTIONS = (
    "What fraction of the area changed?",
    "How much of the scene has changed?",
    "What share of the tile changed between the two dates?",
)


def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
    """The template's question; the bin of the changed fraction."""
    question = pick(rng, QUESTIONS)
    answer = change_ratio_bin(facts.changed_fraction)
    return qa_item(NAME, question, answer, evidence(question, facts)[0])


def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
    """The changed fraction."""
    return {"changed_fraction": facts.changed_fraction}, []


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """The bin of the changed fraction."""
    expected = change_ratio_bin(facts.changed_fraction)
    if answer == expected:
        return []
    return [
        f"change_ratio: answer {answer!r} but changed_fraction="
        f"{facts.changed_fraction:.4g} is in bin {expected!r}"
    ]


SPEC = QASpec(
    name=NAME,
    answer_format="one of: " + ", ".join(f"'{b[0]}'" for b in CHANGE_RATIO_BINS),
    applies=always,
    ask=ask,
    evidence=evidence,
    check=check,
)
