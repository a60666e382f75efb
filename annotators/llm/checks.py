"""Checking one reply of the LLM: parse it, validate it against the schema, check every claim.

:func:`check_output` is the gate between a model and a sample: the reply must be JSON of
:class:`~geodelta.annotators.llm.prompt.LLMOutput`; every caption is checked against the facts
(:func:`~geodelta.annotators.claims.check_captions`, strict), every question for what it
claims, and every answer re-derived by its QA type (:data:`geodelta.annotators.qa.REGISTRY`).
The evidence of an answer is found from the facts by the QA type, never taken from the model.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from geodelta.annotators.claims import check_captions, check_qa_item, check_text
from geodelta.annotators.llm.prompt import LLMOutput
from geodelta.annotators.qa import REGISTRY
from geodelta.schemas import ChangeFacts, QAItem
from geodelta.schemas.qa import REQUIRED_QA_TYPES, AnswerKind

__all__ = ["check_output"]

#: Answer kinds from a closed vocabulary: compared and stored in lower case ('Yes' -> 'yes').
#: Class and transition answers keep the labels as written.
_CLOSED_ANSWERS: frozenset[AnswerKind] = frozenset({"yes_no", "count", "ratio", "position"})


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
) -> tuple[tuple[tuple[str, ...], tuple[QAItem, ...]] | None, list[str], bool]:
    """Validate and fact-check one reply.

    Args:
        text: the reply's message content.
        facts: the sample's facts.
        captions_per_sample: captions required (extra ones are dropped).
        no_change_epsilon: changed fractions at or below this read as "no change".
        caption_chars: (min, max) caption length (config ``validation.caption_chars``).

    Returns:
        ``(captions, qa)`` or None, the complaints (``[]`` = accepted), and whether the reply
        was malformed (not JSON or not of the schema) rather than wrong.
    """
    try:
        data = _parse_json(text)
    except json.JSONDecodeError as exc:
        return None, [f"the reply is not valid JSON ({exc.msg} at char {exc.pos})"], True
    try:
        out = LLMOutput.model_validate(data)
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
    qa: list[QAItem] = []
    for i, item in enumerate(out.qa):
        prefix = f"qa {i} ({item.type})"
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
