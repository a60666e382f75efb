"""The prompt of the LLM annotator: the versioned prompt file, the facts summary, the reply schema.

A prompt file ``prompts/<version>.txt`` (config ``openai.prompt_version``) has three sections,
``=== system ===``, ``=== user ===`` and ``=== fix ===`` (:class:`PromptTemplate`). The user
message carries the sample's facts, a summary with the numbers rounded the way captions must
write them, and the task: the QA types that apply (:func:`geodelta.annotators.qa.types_for`)
and the answer format of each (from its :class:`~geodelta.annotators.qa.QASpec`). The reply
must match :func:`response_schema`, derived from the records.

A sequence sample (issue 15) gets the same pair prompt, byte for byte, and after it the
prompt file's ``=== series ===`` section: the sequence's facts
(:class:`~geodelta.schemas.series.SeriesFacts`), a summary with the dates written ISO, and the
temporal QA types that apply; its reply has ``temporal_captions`` besides the pair captions
(:class:`LLMSeriesOutput`, ``response_schema(n, series=True)``). A pair sample's request names
the pair QA types only (:data:`~geodelta.schemas.qa.PairQAType`), as before the temporal types.

Every byte of a rendered prompt is part of the request body and so of its cache key: change a
wording only with a new prompt version.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import string
from collections.abc import Sequence
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from geodelta.annotators.errors import AnnotatorConfigError
from geodelta.annotators.qa import REGISTRY, types_for
from geodelta.annotators.qa.base import has_change
from geodelta.annotators.template import format_hectares, format_percent
from geodelta.annotators.temporal import TEMPORAL_REGISTRY, iso_day, series_types_for
from geodelta.annotators.vocabulary import class_label
from geodelta.schemas import Annotation, ChangeFacts, QAItem
from geodelta.schemas.qa import PairQAType, QAType
from geodelta.schemas.records import change_ratio_bin, component_box_px, normalised_box
from geodelta.schemas.series import SeriesFacts

__all__ = [
    "LLMOutput",
    "LLMQAItem",
    "LLMSeriesOutput",
    "LLMSeriesQAItem",
    "PromptTemplate",
    "facts_summary",
    "response_schema",
    "series_summary",
]


class LLMQAItem(BaseModel):
    """One QA item as the model writes it (the evidence is added from the facts)."""

    model_config = ConfigDict(extra="forbid")

    type: PairQAType = Field(description=QAItem.model_fields["type"].description)
    question: str = Field(min_length=1, description=QAItem.model_fields["question"].description)
    answer: str = Field(min_length=1, description=QAItem.model_fields["answer"].description)


class LLMOutput(BaseModel):
    """What the model must return: captions and QA items."""

    model_config = ConfigDict(extra="forbid")

    captions: list[str] = Field(description=Annotation.model_fields["captions"].description)
    qa: list[LLMQAItem] = Field(description=Annotation.model_fields["qa"].description)


class LLMSeriesQAItem(BaseModel):
    """One QA item of a sequence sample: a pair type or a temporal type."""

    model_config = ConfigDict(extra="forbid")

    type: QAType = Field(description=QAItem.model_fields["type"].description)
    question: str = Field(min_length=1, description=QAItem.model_fields["question"].description)
    answer: str = Field(min_length=1, description=QAItem.model_fields["answer"].description)


class LLMSeriesOutput(BaseModel):
    """What the model must return for a sequence sample: captions, temporal captions, QA."""

    model_config = ConfigDict(extra="forbid")

    captions: list[str] = Field(description=Annotation.model_fields["captions"].description)
    temporal_captions: list[str] = Field(
        description="Captions about the sequence, each naming at least one date YYYY-MM-DD"
    )
    qa: list[LLMSeriesQAItem] = Field(description=Annotation.model_fields["qa"].description)


def _strict(schema: Any) -> Any:
    """OpenAI strict mode: every object closed and every property required."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items() if k not in ("title", "default")}
        if out.get("type") == "object" and "properties" in out:
            out["additionalProperties"] = False
            out["required"] = list(out["properties"])
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=32)
def response_schema(captions_per_sample: int, *, series: bool = False) -> dict[str, Any]:
    """The JSON schema of the reply, derived from :class:`LLMOutput` (hence from the records).

    The QA ``type`` enum is :data:`~geodelta.schemas.qa.PairQAType`; the caption count is
    fixed to ``captions_per_sample``. Strict-mode ready (closed objects, all required). Cached:
    do not modify the returned dict.

    Args:
        captions_per_sample: captions required.
        series: the schema of a sequence sample's reply (:class:`LLMSeriesOutput`: every QA
            type, and 1 to ``captions_per_sample`` temporal captions).
    """
    if series:
        schema = _strict(LLMSeriesOutput.model_json_schema())
        schema["properties"]["temporal_captions"]["minItems"] = 1
        schema["properties"]["temporal_captions"]["maxItems"] = captions_per_sample
    else:
        schema = _strict(LLMOutput.model_json_schema())
    schema["properties"]["captions"]["minItems"] = captions_per_sample
    schema["properties"]["captions"]["maxItems"] = captions_per_sample
    name = "geodelta_series_annotation" if series else "geodelta_annotation"
    return {"name": name, "strict": True, "schema": schema}


def series_summary(facts: SeriesFacts) -> dict[str, Any]:
    """A sequence's facts as captions and answers must write them: dates ISO ``YYYY-MM-DD``,
    class labels, each region's box and its changes with the acquisitions around them."""
    days = [iso_day(d) for d in facts.dates]
    steps = {
        s.index: {
            "from": days[s.index - 1],
            "to": days[s.index],
            "changed_pixels": s.changed_pixels,
        }
        for s in facts.steps
    }
    return {
        "dates": days,
        "steps": [steps[k] for k in sorted(steps)],
        "regions": [
            {
                "id": r.id,
                "box": list(r.box),
                "position": r.position,
                "pixels": r.pixels,
                "class_at_each_date": [class_label(c) for c in r.classes],
                "changes": [
                    {
                        "between": f"between {days[k - 1]} and {days[k]}",
                        "from": class_label(r.classes[k - 1]),
                        "to": class_label(r.classes[k]),
                    }
                    for k in r.changed_steps
                ],
                "change_count": len(r.changed_steps),
                "permanence": (
                    ("permanent" if r.persistent else "transient") if r.changed_steps else None
                ),
            }
            for r in facts.regions
        ],
        "classes": [
            {
                "class": class_label(c.class_name),
                "pixels_at_each_date": list(c.pixels),
                "trend": c.trend,
                "largest_on": (
                    days[c.max_index] if c.pixels.count(max(c.pixels)) == 1 else "no single date"
                ),
            }
            for c in facts.classes
        ],
    }


def facts_summary(facts: ChangeFacts, no_change_epsilon: float) -> dict[str, Any]:
    """The facts with numbers rounded as captions write them, and labels instead of class names."""
    px_ha = facts.pixel_area_m2 / 10_000.0
    valid = max(facts.valid_pixels, 1)
    changed = max(facts.changed_pixels, 1)
    out: dict[str, Any] = {
        "has_change": has_change(facts, no_change_epsilon),
        "label": "binary change mask (no classes)" if facts.binary else "land-cover maps",
        "changed_area_ha": format_hectares(facts.changed_pixels * facts.pixel_area_m2),
        "changed_percent_of_tile": format_percent(facts.changed_fraction),
        "change_ratio_bin": change_ratio_bin(facts.changed_fraction),
        "regions": facts.n_regions,
    }
    if not facts.binary:
        out["transitions"] = [
            {
                "from": class_label(t.from_class),
                "to": class_label(t.to_class),
                "area_ha": format_hectares(t.area_m2),
                "percent_of_tile": format_percent(t.pixels / valid),
                "percent_of_change": format_percent(t.pixels / changed),
            }
            for t in facts.transitions
        ]
        totals = []
        for cls in sorted(set(facts.class_pixels_before) | set(facts.class_pixels_after)):
            before = facts.class_pixels_before.get(cls, 0)
            after = facts.class_pixels_after.get(cls, 0)
            trend = "increased" if after > before else "decreased" if after < before else "same"
            totals.append(
                {
                    "class": class_label(cls),
                    "before_ha": format_hectares(before * px_ha * 10_000.0),
                    "after_ha": format_hectares(after * px_ha * 10_000.0),
                    "trend": trend,
                }
            )
        out["class_totals"] = totals
    out["regions_detail"] = [
        {
            "id": c.id,
            "box": list(normalised_box(component_box_px(c.bbox), facts.shape)),
            "position": c.position,
            "area_ha": format_hectares(c.area_m2),
            **(
                {}
                if facts.binary
                else {"from": class_label(c.from_class), "to": class_label(c.to_class)}
            ),
        }
        for c in facts.components
    ]
    return out


def _load_prompt_text(version: str) -> str:
    """The text of ``prompts/<version>.txt`` (package data of geodelta.annotators.llm)."""
    try:
        return (
            resources.files("geodelta.annotators.llm") / "prompts" / f"{version}.txt"
        ).read_text()
    except FileNotFoundError:
        raise AnnotatorConfigError(
            "openai.prompt_version",
            f"no prompt file prompts/{version}.txt in geodelta.annotators.llm",
        ) from None


class PromptTemplate:
    """A versioned prompt file: ``=== system ===``, ``=== user ===`` and ``=== fix ===``.

    Args:
        version: file stem under ``annotators/llm/prompts/`` (config ``openai.prompt_version``).
    """

    SECTIONS = ("system", "user", "fix")
    #: Sections a prompt file may have: ``series``, appended to the user message of a sequence
    #: sample.
    OPTIONAL_SECTIONS = ("series",)

    def __init__(self, version: str) -> None:
        self.version = version
        text = _load_prompt_text(version)
        parts = re.split(r"^=== (\w+) ===\n", text, flags=re.MULTILINE)
        sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
        missing = [s for s in self.SECTIONS if s not in sections]
        if missing:
            raise AnnotatorConfigError(
                "openai.prompt_version",
                f"prompt file {version}.txt lacks section(s) {', '.join(missing)}",
            )
        self.templates = {
            k: string.Template(sections[k])
            for k in (*self.SECTIONS, *self.OPTIONAL_SECTIONS)
            if k in sections
        }

    def messages(
        self,
        key: str,
        facts: ChangeFacts,
        *,
        captions_per_sample: int,
        no_change_epsilon: float = 0.0,
        images: tuple[bytes, bytes] | None = None,
        series: SeriesFacts | None = None,
    ) -> list[dict[str, Any]]:
        """The chat messages for one sample (system + user, images appended when given).

        Args:
            key: the sample key.
            facts: the pair facts (date 0 -> date T-1 for a sequence sample).
            captions_per_sample: captions (and at most as many temporal captions) to write.
            no_change_epsilon: changed fractions at or below this read as "no change".
            images: (before.png, after.png) for vision models.
            series: a sequence sample's facts: the prompt file's ``series`` section is
                appended to the user message (the pair part unchanged).

        Raises:
            AnnotatorConfigError: ``series`` given and the prompt file has no ``series``
                section.
        """
        types = types_for(facts, no_change_epsilon)
        task = {
            "captions": captions_per_sample,
            "qa_types": types,
            "answer_formats": {t: REGISTRY[t].answer_format for t in types},
        }
        changed = has_change(facts, no_change_epsilon)
        positions = sorted({c.position for c in facts.components})
        user = self.templates["user"].substitute(
            key=key,
            facts=json.dumps(facts.model_dump(mode="json"), sort_keys=True),
            summary=json.dumps(facts_summary(facts, no_change_epsilon), indent=1),
            task=json.dumps(task),
            n_captions=captions_per_sample,
            positions=", ".join(positions) if positions else "none (no region changed)",
            no_change_rule=(
                "The tile changed: never say that nothing changed."
                if changed
                else "Nothing changed in this tile: every caption must say so (e.g. 'no "
                "change', 'unchanged'), with no class, number or location."
            ),
        )
        if series is not None:
            user += "\n\n" + self._series_text(series, captions_per_sample)
        content: Any = user
        if images is not None:
            content = [{"type": "text", "text": user}]
            for name, png in zip(("before", "after"), images, strict=True):
                content.append({"type": "text", "text": f"The {name} image:"})
                url = "data:image/png;base64," + base64.b64encode(png).decode()
                content.append({"type": "image_url", "image_url": {"url": url, "detail": "low"}})
        return [
            {"role": "system", "content": self.templates["system"].substitute()},
            {"role": "user", "content": content},
        ]

    def _series_text(self, series: SeriesFacts, captions_per_sample: int) -> str:
        """The ``series`` section for one sequence sample."""
        template = self.templates.get("series")
        if template is None:
            raise AnnotatorConfigError(
                "openai.prompt_version",
                f"prompt file {self.version}.txt has no '=== series ===' section, which a "
                "sequence sample needs; use a prompt version with one (e.g. change_v1)",
            )
        types = series_types_for(series)
        task = {
            "temporal_captions": f"1 to {captions_per_sample}",
            "temporal_qa_types": types,
            "answer_formats": {t: TEMPORAL_REGISTRY[t].answer_format for t in types},
        }
        return template.substitute(
            series_facts=json.dumps(series.model_dump(mode="json"), sort_keys=True),
            series_summary=json.dumps(series_summary(series), indent=1),
            series_task=json.dumps(task),
            n_temporal=captions_per_sample,
        )

    def fix(self, complaints: Sequence[str]) -> dict[str, Any]:
        """The follow-up user message carrying the checker's complaints."""
        text = "\n".join(f"- {c}" for c in complaints[:20])
        return {"role": "user", "content": self.templates["fix"].substitute(complaints=text)}
