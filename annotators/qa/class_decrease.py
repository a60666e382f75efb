"""QA type ``class_decrease``: did the area of one class shrink? Asked on changed land-cover tiles;
answered 'yes' or 'no' (the class is drawn so that both answers occur about equally)."""

from __future__ import annotations

from geodelta.annotators.qa.base import trend_spec
from geodelta.annotators.vocabulary import area_of

NAME = "class_decrease"


def _questions(label: str, is_are: str, has_have: str) -> tuple[str, ...]:
    return (
        f"Did {area_of(label)} decrease?",
        f"{is_are} there less {label} in the second image than in the first?",
        f"{has_have} {label} shrunk between the two dates?",
    )


#: 'yes' exactly when the class has fewer pixels after than before.
SPEC = trend_spec(NAME, increase=False, questions=_questions)
