"""QA type ``change_ratio``: how much of the tile changed? Asked of every sample; answered with
a bin label of :data:`~geodelta.schemas.records.CHANGE_RATIO_BINS`."""

from __future__ import annotations

from geodelta.annotators.qa.base import Evidence, QASpec, always, ask_fixed, facts_only, one_of
from geodelta.annotators.qa.grounding import all_ids, grounding
from geodelta.schemas import CHANGE_RATIO_BINS, ChangeFacts, QAItem, change_ratio_bin

NAME = "change_ratio"
QUESTIONS = (
    "What fraction of the area changed?",
    "How much of the scene has changed?",
    "What share of the tile changed between the two dates?",
)


def _answer(facts: ChangeFacts, no_change_epsilon: float) -> str:
    """The bin of the changed fraction."""
    return change_ratio_bin(facts.changed_fraction)


def _evidence(facts: ChangeFacts) -> Evidence:
    """The changed fraction."""
    return {"changed_fraction": facts.changed_fraction, **grounding(facts, all_ids(facts))}


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
    answer_format=one_of(b[0] for b in CHANGE_RATIO_BINS),
    applies=always,
    ask=ask_fixed(NAME, QUESTIONS, _answer, _evidence),
    evidence=facts_only(_evidence),
    check=check,
)
