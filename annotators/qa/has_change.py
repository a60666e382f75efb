"""QA type ``has_change``: did anything change? Asked of every sample; answered 'yes' or 'no'."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodelta.annotators.qa.base import (
    Evidence,
    QASpec,
    always,
    has_change,
    qa_item,
    yes_no_complaints,
)
from geodelta.annotators.vocabulary import pick
from geodelta.schemas import ChangeFacts, QAItem

if TYPE_CHECKING:
    import numpy as np

NAME = "has_change"
QUESTIONS = (
    "Has anything changed between the two images?",
    "Is there any change in this area?",
    "Did the scene change between the two dates?",
    "Are there any changes between the before and after images?",
)


def _evidence(facts: ChangeFacts) -> Evidence:
    return {
        "changed_pixels": facts.changed_pixels,
        "valid_pixels": facts.valid_pixels,
        "regions": facts.n_regions,
    }


def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
    """The template's question; 'yes' when the tile reads as changed."""
    question = pick(rng, QUESTIONS)
    answer = "yes" if has_change(facts, no_change_epsilon) else "no"
    return qa_item(NAME, question, answer, _evidence(facts))


def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
    """Changed and valid pixels, and the region count."""
    return _evidence(facts), []


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """'yes' exactly when the tile reads as changed."""
    out = []
    expected = "yes" if changed else "no"
    if answer != expected:
        out.append(
            f"has_change: answer {answer!r} but facts say {expected!r} "
            f"(changed_fraction={facts.changed_fraction:.4g}, regions={facts.n_regions})"
        )
    return out + yes_no_complaints(NAME, answer)


SPEC = QASpec(
    name=NAME,
    answer_format="'yes' or 'no'",
    applies=always,
    ask=ask,
    evidence=evidence,
    check=check,
)
