"""QA type ``count_regions``: how many regions changed? Asked of every sample; answered with
the number in digits."""

from __future__ import annotations

from geodelta.annotators.qa.base import Evidence, QASpec, always, ask_fixed, facts_only
from geodelta.annotators.qa.grounding import all_ids, grounding
from geodelta.schemas import ChangeFacts, QAItem

NAME = "count_regions"
QUESTIONS = (
    "How many regions of change are there?",
    "How many separate areas changed?",
    "In how many places did the scene change?",
)


def _answer(facts: ChangeFacts, no_change_epsilon: float) -> str:
    """The number of changed regions, in digits."""
    return str(facts.n_regions)


def _evidence(facts: ChangeFacts) -> Evidence:
    """The region count and the smallest region size kept."""
    return {
        "regions": facts.n_regions,
        "min_region_px": facts.min_region_px,
        **grounding(facts, all_ids(facts)),
    }


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """The number of regions, in digits."""
    if answer.isdigit() and int(answer) == facts.n_regions:
        return []
    return [f"count_regions: answer {answer} but facts have {facts.n_regions} regions"]


SPEC = QASpec(
    name=NAME,
    answer_format="the number of regions, as digits",
    applies=always,
    ask=ask_fixed(NAME, QUESTIONS, _answer, _evidence),
    evidence=facts_only(_evidence),
    check=check,
)
