"""QA type ``class_increase``: did the area of one class grow? Asked on changed land-cover tiles;
answered 'yes' or 'no' (the class is drawn so that both answers occur about equally)."""

from __future__ import annotations

from geodelta.annotators.qa.base import trend_spec
from geodelta.annotators.vocabulary import area_of

NAME = "class_increase"


def _questions(label: str, is_are: str, has_have: str) -> tuple[str, ...]:
    return (
        f"Did {area_of(label)} increase?",
        f"{is_are} there more {label} in the second image than in the first?",
        f"{has_have} {label} expanded between the two dates?",
    )


#: 'yes' exactly when the class has more pixels after than before.
SPEC = trend_spec(NAME, increase=True, questions=_questions)
