"""The QA types' behaviour: one module per type, and :data:`REGISTRY` (type name -> spec).

Each module (``has_change.py``, ``change_ratio.py``, ...) holds a :class:`~.base.QASpec`: when
the type applies to a sample's facts, how the template annotator asks and answers it, how the
evidence of an answer is found, and how the claim checker re-derives the answer. The type
names, their answer kinds and which types are required are data in :mod:`geodelta.schemas.qa`.

The template annotator (:mod:`geodelta.annotators.template`), the claim checker
(:mod:`geodelta.annotators.claims`) and the LLM annotator (:mod:`geodelta.annotators.llm`)
dispatch through :data:`REGISTRY`. A new QA type is: its name in ``schemas/qa.py``, one module
here, and one line in :data:`REGISTRY`.

The temporal types of sequence samples (``schemas/qa.py`` ``TEMPORAL_QA_TYPES``) are not here:
they are answered from the sequence, not from the pair facts, by
:mod:`geodelta.annotators.temporal`.
"""

from __future__ import annotations

from geodelta.annotators.qa import (
    change_ratio,
    change_to_what,
    class_decrease,
    class_increase,
    count_boxes,
    count_regions,
    has_change,
    largest_change,
    location,
    refer_change,
    segment_change,
    smallest_change,
    what_changed_here,
)
from geodelta.annotators.qa.base import QASpec
from geodelta.schemas import ChangeFacts
from geodelta.schemas.qa import PAIR_QA_TYPES, REQUIRED_QA_TYPES

__all__ = ["REGISTRY", "QASpec", "required_types", "spec", "types_for"]

#: Type name -> behaviour, in the order a sample's QA items are asked (and listed in the LLM's
#: task). The order is part of every template annotation: keep it.
REGISTRY: dict[str, QASpec] = {
    s.name: s
    for s in (
        has_change.SPEC,
        change_ratio.SPEC,
        count_regions.SPEC,
        class_increase.SPEC,
        class_decrease.SPEC,
        largest_change.SPEC,
        smallest_change.SPEC,
        change_to_what.SPEC,
        location.SPEC,
        # grounded types last: the wording of the types above draws first, unchanged
        refer_change.SPEC,
        count_boxes.SPEC,
        what_changed_here.SPEC,
        segment_change.SPEC,
    )
}

if set(REGISTRY) != set(PAIR_QA_TYPES):  # every pair type has behaviour, and only those
    raise TypeError(
        f"annotators/qa: REGISTRY {sorted(REGISTRY)} differs from schemas.qa.PAIR_QA_TYPES "
        f"{sorted(PAIR_QA_TYPES)}"
    )


def spec(name: str) -> QASpec:
    """The behaviour of one QA type.

    Raises:
        KeyError: not a pair QA type (:data:`geodelta.schemas.qa.PAIR_QA_TYPES`).
    """
    return REGISTRY[name]


def required_types() -> tuple[str, ...]:
    """The QA types every sample must carry (:data:`geodelta.schemas.qa.REQUIRED_QA_TYPES`)."""
    return REQUIRED_QA_TYPES


def types_for(facts: ChangeFacts, no_change_epsilon: float = 0.0) -> list[str]:
    """The QA types with a well-defined answer for these facts, in the order they are asked."""
    return [name for name, s in REGISTRY.items() if s.applies(facts, no_change_epsilon)]
