"""The QA types as data: their names, the kind of answer each takes, and which are required.

The one list of QA types. Everything else derives from it: the ``QAItem.type`` literal
(:data:`QAType`, re-exported by :mod:`geodelta.schemas.records`), the required types that every
sample must carry (the validate stage, the GX suites, the LLM checker), and the groups by answer
kind (yes/no, count, ratio) that the GX ``qa`` table and the QA balance report split answers by.
How a type is asked, answered and checked is behaviour and lives one floor up, one module per
type, in :mod:`geodelta.annotators.qa`. The temporal types of sequence samples (issue 15,
:data:`TEMPORAL_QA_TYPES`, never required) come after the pair types; their behaviour and
independent checker are :mod:`geodelta.annotators.temporal`.

Pure data: this module imports nothing from geodelta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "CLASS_TREND_QA_TYPES",
    "COUNT_QA_TYPES",
    "GROUNDED_QA_TYPES",
    "PAIR_QA_TYPES",
    "QA_TYPES",
    "QA_TYPE_SPECS",
    "RATIO_QA_TYPES",
    "REQUIRED_QA_TYPES",
    "TEMPORAL_QA_TYPES",
    "YES_NO_QA_TYPES",
    "AnswerKind",
    "PairQAType",
    "QAType",
    "QATypeSpec",
    "TemporalQAType",
    "qa_types_answered",
]

#: The QA types of pair samples, in the order of the JSON-schema enum of the LLM's response
#: schema for a pair sample: keep the order, it is part of every request body and so of its
#: cache key.
PairQAType = Literal[
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
#: The temporal QA types of sequence samples (issue 15), asked besides the pair types.
TemporalQAType = Literal[
    "when_appeared",
    "which_first",
    "change_count",
    "permanence",
    "class_trend",
    "max_area_date",
]
#: Every QA type, in the order of the JSON-schema enum of ``QAItem.type``: the pair types,
#: then the temporal ones (a pair sample's LLM request names the pair types only).
QAType = Literal[PairQAType, TemporalQAType]

#: What an answer is: ``yes_no`` ('yes' or 'no'), ``count`` (a non-negative integer in digits),
#: ``ratio`` (a label of :data:`~geodelta.schemas.records.CHANGE_RATIO_BINS`), ``transition``
#: ('<from class> to <to class>'), ``class`` (a class label), ``position`` (a position word),
#: ``boxes`` (normalised 0..1000 boxes ``[x0, y0, x1, y1]``, one per region, separated by
#: ", "), ``count_boxes`` ('<n>: ' then the boxes), ``region_ids`` (region ids in digits,
#: separated by ", ": the answer mask is their union in ``regions.png``); for the temporal
#: types: ``interval`` ('between <date> and <date>', two consecutive acquisition dates written
#: ISO ``YYYY-MM-DD``), ``date`` (one acquisition date, ISO), ``permanence`` ('permanent' or
#: 'transient'), ``trend`` ('grew', 'shrank' or 'stable').
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
    "interval",
    "date",
    "permanence",
    "trend",
]


@dataclass(frozen=True)
class QATypeSpec:
    """One QA type as data.

    Attributes:
        name: the type name (a :data:`QAType` value).
        answer: the kind of answer it takes.
        required: whether every sample must carry an item of this type.
        temporal: asked of sequence samples only (issue 15), answered from their
            :class:`~geodelta.schemas.series.SeriesFacts`; never required.
    """

    name: str
    answer: AnswerKind
    required: bool = False
    temporal: bool = False


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
        QATypeSpec("when_appeared", "interval", temporal=True),
        QATypeSpec("which_first", "boxes", temporal=True),
        QATypeSpec("change_count", "count", temporal=True),
        QATypeSpec("permanence", "permanence", temporal=True),
        QATypeSpec("class_trend", "trend", temporal=True),
        QATypeSpec("max_area_date", "date", temporal=True),
    )
}

#: Every QA type a sample may carry (the ``QAItem.type`` literal).
QA_TYPES: tuple[str, ...] = get_args(QAType)

if (
    tuple(QA_TYPE_SPECS) != QA_TYPES or get_args(PairQAType) + get_args(TemporalQAType) != QA_TYPES
):  # the spellings of the list must agree, in order
    raise TypeError(
        f"schemas/qa.py: QA_TYPE_SPECS {tuple(QA_TYPE_SPECS)} differ from QAType {QA_TYPES}"
    )


#: The QA types of pair samples (every sample carries only these unless it is a sequence).
PAIR_QA_TYPES: tuple[str, ...] = tuple(t for t, s in QA_TYPE_SPECS.items() if not s.temporal)
#: The temporal QA types of sequence samples (issue 15), asked besides the pair types.
TEMPORAL_QA_TYPES: tuple[str, ...] = tuple(t for t, s in QA_TYPE_SPECS.items() if s.temporal)


def qa_types_answered(kind: AnswerKind, *, temporal: bool = False) -> tuple[str, ...]:
    """The QA types whose answer is of one kind, in :data:`QAType` order.

    Args:
        kind: the answer kind.
        temporal: also the temporal types (default: the pair types only, which the release
            tables and suites of pair releases split answers by).
    """
    return tuple(
        t for t, s in QA_TYPE_SPECS.items() if s.answer == kind and (temporal or not s.temporal)
    )


#: QA types every sample must carry.
REQUIRED_QA_TYPES: tuple[str, ...] = tuple(t for t, s in QA_TYPE_SPECS.items() if s.required)
#: QA types answered 'yes' or 'no'.
YES_NO_QA_TYPES: tuple[str, ...] = qa_types_answered("yes_no")
#: QA types asking whether one class grew or shrank (yes/no; asked on changed tiles only).
CLASS_TREND_QA_TYPES: tuple[str, ...] = ("class_increase", "class_decrease")
#: Pair QA types answered with a non-negative integer, written in digits (``change_count``, a
#: temporal type, is answered so too: ``qa_types_answered("count", temporal=True)``).
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
