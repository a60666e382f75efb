"""Checking one reply of the LLM: parse it, validate it against the schema, check every claim.

:func:`check_output` is the gate between a model and a sample: the reply must be JSON of
:class:`~geodelta.annotators.llm.prompt.LLMOutput`; every caption is checked against the facts
(:func:`~geodelta.annotators.claims.check_captions`, strict), every question for what it
claims, and every answer re-derived by its QA type (:data:`geodelta.annotators.qa.REGISTRY`).
The evidence of an answer is found from the facts by the QA type, never taken from the model.

A sequence sample's reply (:class:`~geodelta.annotators.llm.prompt.LLMSeriesOutput`) is checked
the same way, and more: its temporal captions by
:func:`~geodelta.annotators.temporal.check_temporal_captions` and its temporal answers by
:func:`~geodelta.annotators.temporal.check_temporal_qa`, both against the land-cover stack.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from geodelta.annotators.claims import check_captions, check_qa_item, check_text
from geodelta.annotators.llm.prompt import LLMOutput, LLMQAItem, LLMSeriesOutput, LLMSeriesQAItem
from geodelta.annotators.qa import REGISTRY
from geodelta.annotators.temporal import (
    TEMPORAL_REGISTRY,
    SeriesInput,
    check_temporal_captions,
    check_temporal_qa,
)
from geodelta.annotators.temporal.captions import ISO_DATE_RE
from geodelta.annotators.temporal.derive import iso_day
from geodelta.schemas import ChangeFacts, QAItem
from geodelta.schemas.qa import QA_TYPE_SPECS, REQUIRED_QA_TYPES, AnswerKind

__all__ = ["check_output"]

#: Answer kinds from a closed vocabulary: compared and stored in lower case ('Yes' -> 'yes').
#: Class and transition answers keep the labels as written.
_CLOSED_ANSWERS: frozenset[AnswerKind] = frozenset(
    {"yes_no", "count", "ratio", "position", "interval", "date", "permanence", "trend"}
)


def _parse_json(text: str) -> Any:
    """The JSON of a reply, also inside a Markdown code fence."""
    stripped = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, flags=re.DOTALL)
    return json.loads(fence.group(1) if fence else stripped)


def check_output(
    text: str,
    facts: ChangeFacts,
    *,
    captions_per_sample: int,
    no_change_epsilon: float = 0.0,
    caption_chars: tuple[int, int] = (10, 400),
    series: SeriesInput | None = None,
) -> tuple[tuple[tuple[str, ...], tuple[QAItem, ...]] | None, list[str], bool]:
    """Validate and fact-check one reply.

    Args:
        text: the reply's message content.
        facts: the sample's facts.
        captions_per_sample: captions required (extra ones are dropped).
        no_change_epsilon: changed fractions at or below this read as "no change".
        caption_chars: (min, max) caption length (config ``validation.caption_chars``).
        series: a sequence sample's facts and land-cover stack: the reply is a
            :class:`LLMSeriesOutput`, its temporal captions and answers are checked against the
            stack; the returned captions are the pair captions then the temporal ones.

    Returns:
        ``(captions, qa)`` or None, the complaints (``[]`` = accepted), and whether the reply
        was malformed (not JSON or not of the schema) rather than wrong.
    """
    try:
        data = _parse_json(text)
    except json.JSONDecodeError as exc:
        return None, [f"the reply is not valid JSON ({exc.msg} at char {exc.pos})"], True
    try:
        out: LLMOutput | LLMSeriesOutput = (
            LLMOutput.model_validate(data)
            if series is None
            else LLMSeriesOutput.model_validate(data)
        )
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in exc.errors()
        ]
        return None, ["the reply does not match the JSON schema: " + "; ".join(problems[:8])], True
    complaints: list[str] = []
    captions = [" ".join(c.split()) for c in out.captions]
    if len(captions) < captions_per_sample:
        complaints.append(f"{len(captions)} captions, {captions_per_sample} are required")
    captions = captions[:captions_per_sample]
    if len(set(captions)) < len(captions):
        complaints.append("captions repeat each other; each must be worded differently")
    low, high = caption_chars
    complaints += [
        f"caption {i} has {len(c)} characters, outside {low}..{high}"
        for i, c in enumerate(captions)
        if not low <= len(c) <= high
    ]
    complaints += check_captions(captions, facts, no_change_epsilon=no_change_epsilon, strict=True)
    if isinstance(out, LLMSeriesOutput) and series is not None:
        temporal, more = _check_temporal_captions(
            out.temporal_captions[:captions_per_sample], series, caption_chars
        )
        complaints += more
        captions += temporal
    qa: list[QAItem] = []
    items: list[LLMQAItem | LLMSeriesQAItem] = list(out.qa)
    for i, item in enumerate(items):
        prefix = f"qa {i} ({item.type})"
        if item.type in TEMPORAL_REGISTRY:
            checked, more = _check_temporal_item(
                prefix, item.type, item.question, item.answer, series
            )
            complaints += more
            if checked is not None:
                qa.append(checked)
            continue
        complaints += [
            f"{prefix} question: {m}" for m in check_text(item.question, facts, role="question")
        ]
        spec = REGISTRY[item.type]
        evidence, problems = spec.evidence(item.question, facts)
        complaints += [f"{prefix}: {m}" for m in problems]
        answer = item.answer.strip().rstrip(".").strip()
        if spec.answer_kind in _CLOSED_ANSWERS:
            answer = answer.lower()
        try:
            qa_item = QAItem(
                type=item.type, question=item.question.strip(), answer=answer, evidence=evidence
            )
        except ValidationError as exc:
            complaints.append(f"{prefix}: {exc.errors()[0]['msg']}")
            continue
        if not problems:
            complaints += [
                f"{prefix}: {m}"
                for m in check_qa_item(qa_item, facts, no_change_epsilon=no_change_epsilon)
            ]
        qa.append(qa_item)
    present = {q.type for q in qa}
    missing = [t for t in REQUIRED_QA_TYPES if t not in present]
    if missing:
        complaints.append(f"QA items of type(s) {', '.join(missing)} are missing")
    if complaints:
        return None, list(dict.fromkeys(complaints)), False
    return (tuple(captions), tuple(qa)), [], False


def _check_temporal_captions(
    texts: list[str], series: SeriesInput, caption_chars: tuple[int, int]
) -> tuple[list[str], list[str]]:
    """The temporal captions of a sequence reply, normalised, and the complaints about them."""
    captions = [" ".join(c.split()) for c in texts]
    complaints = []
    if not captions:
        complaints.append("no temporal_captions; write at least one, naming a date")
    if len(set(captions)) < len(captions):
        complaints.append("temporal captions repeat each other; each must be worded differently")
    low, high = caption_chars
    complaints += [
        f"temporal caption {i} has {len(c)} characters, outside {low}..{high}"
        for i, c in enumerate(captions)
        if not low <= len(c) <= high
    ]
    complaints += [
        f"temporal {m}"
        for m in check_temporal_captions(
            captions, series.lc, series.facts.dates, min_region_px=series.facts.min_region_px
        )
    ]
    return captions, complaints


def _check_temporal_item(
    prefix: str, kind: str, question: str, answer: str, series: SeriesInput | None
) -> tuple[QAItem | None, list[str]]:
    """One temporal QA item of a reply: its evidence from the sequence's facts, its answer
    re-derived from the land-cover stack."""
    if series is None:  # not reachable through LLMOutput (pair types only); kept as a guard
        return None, [f"{prefix}: a temporal QA type on a sample that is not a sequence"]
    spec = TEMPORAL_REGISTRY[kind]
    evidence, problems = spec.evidence(question, series.facts)
    complaints = [f"{prefix}: {m}" for m in problems]
    days = {iso_day(d) for d in series.facts.dates}
    complaints += [
        f"{prefix} question: names {day}, which is no acquisition of the sequence"
        for day in dict.fromkeys(ISO_DATE_RE.findall(question))
        if day not in days
    ]
    text = answer.strip().rstrip(".").strip()
    if QA_TYPE_SPECS[kind].answer in _CLOSED_ANSWERS:
        text = text.lower()
    try:
        item = QAItem.model_validate(
            {"type": kind, "question": question.strip(), "answer": text, "evidence": evidence}
        )
    except ValidationError as exc:
        return None, [*complaints, f"{prefix}: {exc.errors()[0]['msg']}"]
    if not problems:
        complaints += [
            f"{prefix}: {m}"
            for m in check_temporal_qa(
                item, series.lc, series.facts.dates, min_region_px=series.facts.min_region_px
            )
        ]
    return item, complaints
