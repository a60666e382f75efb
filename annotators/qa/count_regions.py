"""QA type ``count_regions``: how many regions changed? Asked of every sample; answered with
the number in digits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodelta.annotators.qa.base import Evidence, QASpec, always, qa_item
from geodelta.annotators.vocabulary import pick
from geodelta.schemas import ChangeFacts, QAItem

if TYPE_CHECKING:
    import numpy as np

NAME = "count_regions"
QUESTIONS = (
    "How many regions of change are there?",
    "How many separate areas changed?",
    "In how many places did the scene change?",
)


def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
    """The template's question; the number of changed regions."""
    question = pick(rng, QUESTIONS)
    return qa_item(NAME, question, str(facts.n_regions), evidence(question, facts)[0])


def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
    """The region count and the smallest region size kept."""
    return {"regions": facts.n_regions, "min_region_px": facts.min_region_px}, []


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """The number of regions, in digits."""
    if answer.isdigit() and int(answer) == facts.n_regions:
        return []
    return [f"count_regions: answer {answer} but facts have {facts.n_regions} regions"]


SPEC = QASpec(
    name=NAME,
    answer_format="the number of regions, as digits",
    applies=always,
    ask=ask,
    evidence=evidence,
    check=check,
)
