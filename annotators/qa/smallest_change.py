"""QA type ``smallest_change``: which transition covers the least area? Asked on changed
land-cover tiles with two regions or more and a unique smallest transition; answered
'<from class> to <to class>'."""

from __future__ import annotations

from geodelta.annotators.qa.base import extreme_spec, has_change
from geodelta.schemas import ChangeFacts

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


#: The last transition (transitions are by decreasing size); checked against the transition
#: with the fewest pixels (any of them on a tie).
SPEC = extreme_spec(NAME, largest=False, questions=QUESTIONS, applies=applies)
