"""QA type ``has_change``: did anything change? Asked of every sample; answered 'yes' or 'no'."""

from __future__ import annotations

from geodelta.annotators.qa.base import (
    Evidence,
    QASpec,
    always,
    ask_fixed,
    facts_only,
    has_change,
    yes_no,
    yes_no_complaints,
    yes_no_mismatch,
)
from geodelta.annotators.qa.grounding import all_ids, grounding
from geodelta.schemas import ChangeFacts, QAItem

NAME = "has_change"
QUESTIONS = (
    "Has anything changed between the two images?",
    "Is there any change in this area?",
    "Did the scene change between the two dates?",
    "Are there any changes between the before and after images?",
)


def _answer(facts: ChangeFacts, no_change_epsilon: float) -> str:
    """'yes' when the tile reads as changed."""
    return yes_no(has_change(facts, no_change_epsilon))


def _evidence(facts: ChangeFacts) -> Evidence:
    """Changed and valid pixels, and the region count."""
    return {
        "changed_pixels": facts.changed_pixels,
        "valid_pixels": facts.valid_pixels,
        "regions": facts.n_regions,
        **grounding(facts, all_ids(facts)),
    }


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """'yes' exactly when the tile reads as changed."""
    out = yes_no_mismatch(
        NAME,
        answer,
        changed,
        lambda expected: (
            f"facts say {expected!r} "
            f"(changed_fraction={facts.changed_fraction:.4g}, regions={facts.n_regions})"
        ),
    )
    return out + yes_no_complaints(NAME, answer)


SPEC = QASpec(
    name=NAME,
    answer_format="'yes' or 'no'",
    applies=always,
    ask=ask_fixed(NAME, QUESTIONS, _answer, _evidence),
    evidence=facts_only(_evidence),
    check=check,
)
