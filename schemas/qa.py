"""The QA types as data: their names, the kind of answer each takes, and which are required.

The one list of QA types. Everything else derives from it: the ``QAItem.type`` literal
(:data:`QAType`, re-exported by :mod:`geodelta.schemas.records`), the required types that every
sample must carry (the validate stage, the GX suites, the LLM checker), and the groups by answer
kind (yes/no, count, ratio) that the GX ``qa`` table and the QA balance report split answers by.
How a type is asked, answered and checked is behaviour and lives one floor up, one module per
type, in :mod:`geodelta.annotators.qa`.

Pure data: this module imports nothing from geodelta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "CLASS_TREND_QA_TYPES",
    "COUNT_QA_TYPES",
    "GROUNDED_QA_TYPES",
    "QA_TYPES",
    "QA_TYPE_SPECS",
    "RATIO_QA_TYPES",
    "REQUIRED_QA_TYPES",
    "YES_NO_QA_TYPES",
    "AnswerKind",
    "QAType",
    "QATypeSpec",
    "qa_types_answered",
]

#: The QA types, in the order of the JSON-schema enum of ``QAItem.type`` (and of the LLM's
#: response schema: keep the order, it is part of every request body and so of its cache key).
QAType = Literal[
    "has_change",
    "class_increase",
    "class_decrease",
    "change_ratio",
    "largest_change",
    "smallest_change",
    "change_to_what",
    "count_regions",
    "location",
    "refer_change",
    "count_boxes",
    "what_changed_here",
    "segment_change",
]

#: What an answer is: ``yes_no`` ('yes' or 'no'), ``count`` (a non-negative integer in digits),
#: ``ratio`` (a label of :data:`~geodelta.schemas.records.CHANGE_RATIO_BINS`), ``transition``
#: ('<from class> to <to class>'), ``class`` (a class label), ``position`` (a position word),
#: ``boxes`` (normalised 0..1000 boxes ``[x0, y0, x1, y1]``, one per region, separated by
#: ", "), ``count_boxes`` ('<n>: ' then the boxes), ``region_ids`` (region ids in digits,
#: separated by ", ": the answer mask is their union in ``regions.png``).
AnswerKind = Literal[
    "yes_no",
    "count",
    "ratio",
    "transition",
    "class",
    "position",
    "boxes",
    "count_boxes",
    "region_ids",
]


@dataclass(frozen=True)
class QATypeSpec:
    """One QA type as data.

    Attributes:
        name: the type name (a :data:`QAType` value).
        answer: the kind of answer it takes.
        required: whether every sample must carry an item of this type.
    """

    name: str
    answer: AnswerKind
    required: bool = False


#: Type name -> spec, in :data:`QAType` order.
QA_TYPE_SPECS: dict[str, QATypeSpec] = {
    s.name: s
    for s in (
        QATypeSpec("has_change", "yes_no", required=True),
        QATypeSpec("class_increase", "yes_no"),
        QATypeSpec("class_decrease", "yes_no"),
        QATypeSpec("change_ratio", "ratio", required=True),
        QATypeSpec("largest_change", "transition"),
        QATypeSpec("smallest_change", "transition"),
        QATypeSpec("change_to_what", "class"),
        QATypeSpec("count_regions", "count", required=True),
        QATypeSpec("location", "position"),
        QATypeSpec("refer_change", "boxes"),
        QATypeSpec("count_boxes", "count_boxes"),
        QATypeSpec("what_changed_here", "transition"),
        QATypeSpec("segment_change", "region_ids"),
    )
}

#: Every QA type a sample may carry (the ``QAItem.type`` literal).
QA_TYPES: tuple[str, ...] = get_args(QAType)

if tuple(QA_TYPE_SPECS) != QA_TYPES:  # the two spellings of the list must agree, in order
    raise TypeError(
        f"schemas/qa.py: QA_TYPE_SPECS {tuple(QA_TYPE_SPECS)} differ from QAType {QA_TYPES}"
    )


def qa_types_answered(kind: AnswerKind) -> tuple[str, ...]:
    """The QA types whose answer is of one kind, in :data:`QAType` order."""
    return tuple(t for t, s in QA_TYPE_SPECS.items() if s.answer == kind)


#: QA types every sample must carry.
REQUIRED_QA_TYPES: tuple[str, ...] = tuple(t for t, s in QA_TYPE_SPECS.items() if s.required)
#: QA types answered 'yes' or 'no'.
YES_NO_QA_TYPES: tuple[str, ...] = qa_types_answered("yes_no")
#: QA types asking whether one class grew or shrank (yes/no; asked on changed tiles only).
CLASS_TREND_QA_TYPES: tuple[str, ...] = ("class_increase", "class_decrease")
#: QA types answered with a non-negative integer, written in digits.
COUNT_QA_TYPES: tuple[str, ...] = qa_types_answered("count")
#: QA types answered with a bin label of :data:`~geodelta.schemas.records.CHANGE_RATIO_BINS`.
RATIO_QA_TYPES: tuple[str, ...] = qa_types_answered("ratio")
#: QA types whose answer or question holds boxes or region ids (grounded change).
GROUNDED_QA_TYPES: tuple[str, ...] = (
    "refer_change",
    "count_boxes",
    "what_changed_here",
    "segment_change",
)
