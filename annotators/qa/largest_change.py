"""QA type ``largest_change``: which transition covers the most area? Asked on changed
land-cover tiles whose largest transition is unique; answered '<from class> to <to class>'."""

from __future__ import annotations

from geodelta.annotators.qa.base import extreme_spec, has_change
from geodelta.schemas import ChangeFacts

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


#: The first transition (transitions are by decreasing size); checked against the transition
#: with the most pixels (any of them on a tie).
SPEC = extreme_spec(NAME, largest=True, questions=QUESTIONS, applies=applies)
