"""The LLM annotator: captions and QA from any OpenAI-compatible endpoint, checked against the facts.

Shaped like Beam's ``ModelHandler`` and behind the interface of
:class:`~geodelta.annotators.template.TemplateAnnotator`: make one :class:`LLMAnnotator` per
worker (it owns one ``openai.AsyncOpenAI`` client on a private event-loop thread), then call
:meth:`LLMAnnotator.annotate` per sample or :meth:`LLMAnnotator.annotate_batch` for many
(requests then run concurrently, up to ``concurrency``).

For each sample:

1. the prompt is rendered from the versioned prompt file ``prompts/<prompt_version>.txt`` and
   the sample's :class:`~geodelta.schemas.ChangeFacts` (optionally with before/after PNGs);
2. the request asks for structured output: a strict JSON schema derived from the records
   (:func:`response_schema`), or JSON mode where the server does not support schemas
   (``structured_output: auto`` falls back on the first 400 that names ``response_format``);
3. the reply is validated (pydantic) and every claim is checked against the facts
   (:mod:`geodelta.annotators.claims`): numbers, classes, directions, locations, answers;
4. a reply that fails is sent back with the checker's complaints, at most
   ``max_fix_attempts`` times; then the sample fails with :class:`AnnotationFailed`
   (the annotate stage quarantines it). Nothing unchecked is ever returned.

Every request goes through the on-disk cache (:mod:`geodelta.annotators.llm.cache`; a re-run makes
zero requests), the spending ledger (a hard ``budget_usd``: once it is reached, the remaining
samples fail with reason ``budget`` without a request), the rate limiter (requests and tokens
per minute) and bounded retries with jittered exponential back-off honouring ``Retry-After``
on 429, 5xx, timeouts and connection errors. With ``batch: true`` the requests of
:meth:`~LLMAnnotator.annotate_batch` go through the Batch API instead (JSONL file upload,
batch, poll, download), with the same cache, checks and fix rounds.

The API key is read from the environment variable named by ``api_key_env`` when the client is
made; it is never logged, cached, returned or written anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import re
import string
import threading
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geodelta.annotators.claims import (
    check_captions,
    check_qa_item,
    check_text,
    mentioned_classes_free,
)
from geodelta.annotators.llm.cache import BudgetLedger, ResponseCache, cache_key
from geodelta.annotators.llm.ratelimit import RateLimiter, backoff_delay, retry_after_seconds
from geodelta.annotators.template import (
    AnnotatorConfigError,
    format_hectares,
    format_percent,
    has_change,
)
from geodelta.schemas import SCHEMA_VERSION, Annotation, BuildConfig, ChangeFacts, QAItem
from geodelta.schemas.classes import CLASS_LABELS
from geodelta.schemas.config import OpenAIConfig
from geodelta.schemas.records import CHANGE_RATIO_BINS, POSITION_WORDS, QAType, change_ratio_bin

__all__ = [
    "AnnotationFailed",
    "LLMAnnotator",
    "LLMOutput",
    "LLMStats",
    "PromptTemplate",
    "check_output",
    "qa_types_for",
    "response_schema",
]

#: Quarantine reasons of the annotate stage.
REASON_BUDGET = "budget"
REASON_CLAIMS = "claims_failed"
REASON_MALFORMED = "malformed_output"
REASON_UNAVAILABLE = "llm_unavailable"
REASON_REJECTED = "llm_request_rejected"

_POSITIONS = POSITION_WORDS
_IMAGE_TOKENS = 100  # estimate per low-detail image


class AnnotationFailed(Exception):
    """A sample the LLM annotator could not annotate; the annotate stage quarantines it.

    Attributes:
        key: sample key.
        reason: short machine-readable reason (``budget``, ``claims_failed``, ...).
        detail: what happened and what to change.
    """

    def __init__(self, key: str, reason: str, detail: str) -> None:
        self.key = key
        self.reason = reason
        self.detail = detail
        super().__init__(f"{key}: {reason}: {detail}")


@dataclass
class LLMStats:
    """Counters of one annotator (one worker)."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    fix_rounds: int = 0
    batches: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    annotated: int = 0
    failed: Counter[str] = field(default_factory=Counter)


# --- structured output ----------------------------------------------------------------------


class LLMQAItem(BaseModel):
    """One QA item as the model writes it (the evidence is added from the facts)."""

    model_config = ConfigDict(extra="forbid")

    type: QAType = Field(description=QAItem.model_fields["type"].description)
    question: str = Field(min_length=1, description=QAItem.model_fields["question"].description)
    answer: str = Field(min_length=1, description=QAItem.model_fields["answer"].description)


class LLMOutput(BaseModel):
    """What the model must return: captions and QA items."""

    model_config = ConfigDict(extra="forbid")

    captions: list[str] = Field(description=Annotation.model_fields["captions"].description)
    qa: list[LLMQAItem] = Field(description=Annotation.model_fields["qa"].description)


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
def response_schema(captions_per_sample: int) -> dict[str, Any]:
    """The JSON schema of the reply, derived from :class:`LLMOutput` (hence from the records).

    The QA ``type`` enum is :data:`~geodelta.schemas.records.QAType`; the caption count is
    fixed to ``captions_per_sample``. Strict-mode ready (closed objects, all required). Cached:
    do not modify the returned dict.
    """
    schema = _strict(LLMOutput.model_json_schema())
    schema["properties"]["captions"]["minItems"] = captions_per_sample
    schema["properties"]["captions"]["maxItems"] = captions_per_sample
    return {"name": "geodelta_annotation", "strict": True, "schema": schema}


# --- prompt ---------------------------------------------------------------------------------


def _label(name: str) -> str:
    return CLASS_LABELS.get(name, name.replace("_", " "))


def qa_types_for(facts: ChangeFacts, no_change_epsilon: float = 0.0) -> list[str]:
    """The QA types that have a well-defined answer for these facts (as the template asks)."""
    changed = has_change(facts, no_change_epsilon)
    types = ["has_change", "change_ratio", "count_regions"]
    if changed and not facts.binary and (facts.class_pixels_before or facts.class_pixels_after):
        types += ["class_increase", "class_decrease"]
    ts = facts.transitions
    if changed and not facts.binary and ts:
        if len(ts) == 1 or ts[0].pixels > ts[1].pixels:
            types.append("largest_change")
        if facts.n_regions >= 2 and len(ts) >= 2 and ts[-1].pixels < ts[-2].pixels:
            types.append("smallest_change")
        types.append("change_to_what")
    if changed:
        types.append("location")
    return types


_ANSWER_FORMATS: dict[str, str] = {
    "has_change": "'yes' or 'no'",
    "change_ratio": "one of: " + ", ".join(f"'{b[0]}'" for b in CHANGE_RATIO_BINS),
    "count_regions": "the number of regions, as digits",
    "class_increase": "'yes' or 'no'; the question names exactly one class of the class totals",
    "class_decrease": "'yes' or 'no'; the question names exactly one class of the class totals",
    "largest_change": "'<from class> to <to class>' with the labels of the summary",
    "smallest_change": "'<from class> to <to class>' with the labels of the summary",
    "change_to_what": "the label of a class; the question names one from-class of the transitions",
    "location": "one of: " + ", ".join(f"'{p}'" for p in _POSITIONS),
}


def _summary(facts: ChangeFacts, no_change_epsilon: float) -> dict[str, Any]:
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
                "from": _label(t.from_class),
                "to": _label(t.to_class),
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
                    "class": _label(cls),
                    "before_ha": format_hectares(before * px_ha * 10_000.0),
                    "after_ha": format_hectares(after * px_ha * 10_000.0),
                    "trend": trend,
                }
            )
        out["class_totals"] = totals
    out["regions_detail"] = [
        {
            "id": c.id,
            "position": c.position,
            "area_ha": format_hectares(c.area_m2),
            **({} if facts.binary else {"from": _label(c.from_class), "to": _label(c.to_class)}),
        }
        for c in facts.components
    ]
    return out


def _load_prompt_text(version: str) -> str:
    try:
        return (
            resources.files("geodelta.annotators.llm") / "prompts" / f"{version}.txt"
        ).read_text()
    except FileNotFoundError:
        raise AnnotatorConfigError(
            "openai.prompt_version",
            f"no prompt file prompts/{version}.txt in geodelta.annotators",
        ) from None


class PromptTemplate:
    """A versioned prompt file: ``=== system ===``, ``=== user ===`` and ``=== fix ===``.

    Args:
        version: file stem under ``annotators/prompts/`` (config ``openai.prompt_version``).
    """

    SECTIONS = ("system", "user", "fix")

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
        self.templates = {k: string.Template(sections[k]) for k in self.SECTIONS}

    def messages(
        self,
        key: str,
        facts: ChangeFacts,
        *,
        captions_per_sample: int,
        no_change_epsilon: float = 0.0,
        images: tuple[bytes, bytes] | None = None,
    ) -> list[dict[str, Any]]:
        """The chat messages for one sample (system + user, images appended when given)."""
        types = qa_types_for(facts, no_change_epsilon)
        task = {
            "captions": captions_per_sample,
            "qa_types": types,
            "answer_formats": {t: _ANSWER_FORMATS[t] for t in types},
        }
        changed = has_change(facts, no_change_epsilon)
        positions = sorted({c.position for c in facts.components})
        user = self.templates["user"].substitute(
            key=key,
            facts=json.dumps(facts.model_dump(mode="json"), sort_keys=True),
            summary=json.dumps(_summary(facts, no_change_epsilon), indent=1),
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

    def fix(self, complaints: Sequence[str]) -> dict[str, Any]:
        """The follow-up user message carrying the checker's complaints."""
        text = "\n".join(f"- {c}" for c in complaints[:20])
        return {"role": "user", "content": self.templates["fix"].substitute(complaints=text)}


# --- checking a reply -----------------------------------------------------------------------


def _parse_json(text: str) -> Any:
    stripped = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, flags=re.DOTALL)
    return json.loads(fence.group(1) if fence else stripped)


def _evidence(item: LLMQAItem, facts: ChangeFacts) -> tuple[dict[str, Any], list[str]]:
    """The facts an answer rests on, found from the facts (never from the model)."""
    kind = item.type
    if kind == "has_change":
        ev: dict[str, Any] = {
            "changed_pixels": facts.changed_pixels,
            "valid_pixels": facts.valid_pixels,
            "regions": facts.n_regions,
        }
        return ev, []
    if kind == "change_ratio":
        return {"changed_fraction": facts.changed_fraction}, []
    if kind == "count_regions":
        return {"regions": facts.n_regions, "min_region_px": facts.min_region_px}, []
    named = list(dict.fromkeys(c for c, _, _ in mentioned_classes_free(item.question)))
    if kind in ("class_increase", "class_decrease", "change_to_what"):
        if len(named) != 1:
            return {}, [
                f"the {kind} question must name exactly one land-cover class "
                f"(it names {', '.join(_label(c) for c in named) or 'none'})"
            ]
        cls = named[0]
        if kind == "change_to_what":
            from_cls = [t for t in facts.transitions if t.from_class == cls]
            if not from_cls:
                return {}, [f"change_to_what asks about {_label(cls)}, which did not change"]
            top = max(from_cls, key=lambda t: t.pixels)
            return {"from_class": cls, "to_class": top.to_class, "pixels": top.pixels}, []
        return {
            "class": cls,
            "pixels_before": facts.class_pixels_before.get(cls, 0),
            "pixels_after": facts.class_pixels_after.get(cls, 0),
        }, []
    if kind in ("largest_change", "smallest_change") and facts.transitions:
        pick = max if kind == "largest_change" else min
        t = pick(facts.transitions, key=lambda t: t.pixels)
        return {"from_class": t.from_class, "to_class": t.to_class, "pixels": t.pixels}, []
    if kind == "location" and facts.components:
        big = facts.components[0]
        return {
            "component": big.id,
            "pixels": big.pixels,
            "centroid_row": big.centroid[0],
            "centroid_col": big.centroid[1],
        }, []
    return {}, []


_CANONICAL_ANSWER = {"has_change", "class_increase", "class_decrease", "count_regions"}


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
        evidence, problems = _evidence(item, facts)
        complaints += [f"{prefix}: {m}" for m in problems]
        answer = item.answer.strip().rstrip(".").strip()
        if item.type in _CANONICAL_ANSWER or item.type in ("location", "change_ratio"):
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
    required = ("has_change", "change_ratio", "count_regions")
    missing = [t for t in required if t not in present]
    if missing:
        complaints.append(f"QA items of type(s) {', '.join(missing)} are missing")
    if complaints:
        return None, list(dict.fromkeys(complaints)), False
    return (tuple(captions), tuple(qa)), [], False


# --- the annotator --------------------------------------------------------------------------


class _LoopThread:
    """An event loop running forever on a daemon thread (one per annotator)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="geodelta-llm", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("the LLM annotator was closed; make a new one")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


def _shutdown(loop_thread: _LoopThread, holder: dict[str, Any]) -> None:
    loop = loop_thread.loop
    if loop.is_closed():
        return
    client = holder.pop("client", None)
    if client is not None and loop_thread.thread.is_alive():
        with contextlib.suppress(Exception):  # closing is best effort
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
    if loop_thread.thread.is_alive():
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.thread.join(timeout=10)
    if not loop.is_running():
        loop.close()


@dataclass
class _Reply:
    text: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    cached: bool


_SECRET_RE = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{6,})")


class LLMAnnotator:
    """Captions and QA through an OpenAI-compatible endpoint, every claim checked.

    Args:
        settings: the ``annotation.openai`` config section.
        captions_per_sample: captions per sample (``annotation.captions_per_sample``).
        no_change_epsilon: changed fractions at or below this read as "no change".
        caption_chars: (min, max) caption length (``validation.caption_chars``).
        cache_dir: response cache folder; None = no cache.
        ledger_path: spending ledger file (shared by the workers of one build); None = a file
            in ``cache_dir`` (or in memory only when there is no cache).
        rate_share: this worker's share of the rate limits (1 / number of workers).

    Raises:
        AnnotatorConfigError: missing API key variable, missing prompt file, or a budget for a
            model that has no price.
    """

    name = "openai"
    version = "1.0.0"

    def __init__(
        self,
        settings: OpenAIConfig,
        *,
        captions_per_sample: int = 5,
        no_change_epsilon: float = 0.0,
        caption_chars: tuple[int, int] = (10, 400),
        cache_dir: str | Path | None = None,
        ledger_path: str | Path | None = None,
        rate_share: float = 1.0,
    ) -> None:
        self.settings = settings
        self.captions_per_sample = captions_per_sample
        self.no_change_epsilon = no_change_epsilon
        self.caption_chars = caption_chars
        self.prompt = PromptTemplate(settings.prompt_version)
        self.price = settings.prices.get(settings.model)
        if settings.budget_usd is not None and self.price is None:
            raise AnnotatorConfigError(
                "openai.prices",
                f"a budget needs the price of model {settings.model!r}; add it to "
                f"annotation.openai.prices (known: {', '.join(sorted(settings.prices))})",
            )
        if settings.api_key_env is not None and not os.environ.get(settings.api_key_env):
            raise AnnotatorConfigError(
                "openai.api_key_env",
                f"environment variable {settings.api_key_env} is not set; export the API key "
                "there (or set annotation.openai.api_key_env: null for a server without keys)",
            )
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        if ledger_path is None and cache_dir is not None:
            ledger_path = Path(cache_dir) / "ledger" / "default.json"
        self.ledger = (
            BudgetLedger(ledger_path, settings.budget_usd) if ledger_path is not None else None
        )
        self._memory_spent = 0.0
        self._budget_exhausted = False
        self.mode: Literal["json_schema", "json_object"] = (
            "json_object" if settings.structured_output == "json_object" else "json_schema"
        )
        share = max(min(rate_share, 1.0), 1e-6)
        rpm, tpm = settings.requests_per_minute, settings.tokens_per_minute
        self.limiter = RateLimiter(rpm * share if rpm else None, tpm * share if tpm else None)
        self.stats = LLMStats()
        self._loop = _LoopThread()
        self._holder: dict[str, Any] = {}
        self._sem: asyncio.Semaphore | None = None
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._holder)

    @classmethod
    def from_config(cls, cfg: BuildConfig, *, scope: str | None = None) -> LLMAnnotator:
        """The annotator a build config asks for (once per worker).

        Args:
            cfg: the build config (``annotation``, ``validation.caption_chars``, ``runner``).
            scope: ledger name, e.g. the config hash: the workers of one build share one
                budget; default the config hash.
        """
        o = cfg.annotation.openai
        if o.cache_dir is not None:
            cache_dir = Path(cfg.resolve(o.cache_dir))
        else:
            cache_dir = Path(cfg.resolve(cfg.output.dir)).parent / "llm-cache"
        scope = scope or cfg.config_hash()
        workers = cfg.runner.workers if cfg.runner.name == "direct" else 1
        return cls(
            o,
            captions_per_sample=cfg.annotation.captions_per_sample,
            no_change_epsilon=cfg.annotation.no_change_epsilon,
            caption_chars=cfg.validation.caption_chars,
            cache_dir=cache_dir,
            ledger_path=cache_dir / "ledger" / f"{scope[:32]}.json",
            rate_share=1.0 / workers,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the client and stop the event-loop thread (also done at garbage collection)."""
        self._finalizer()

    def __enter__(self) -> LLMAnnotator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self) -> Any:
        client = self._holder.get("client")
        if client is None:
            try:
                from openai import AsyncOpenAI
            except ImportError:  # pragma: no cover - the llm extra is installed in dev
                raise AnnotatorConfigError(
                    "annotator", "the openai annotator needs: pip install 'geodelta[llm]'"
                ) from None
            env = self.settings.api_key_env
            client = AsyncOpenAI(
                api_key=os.environ[env] if env is not None else "not-needed",
                base_url=self.settings.base_url,
                timeout=self.settings.timeout_s,
                max_retries=0,  # retries are ours: bounded, jittered, counted
            )
            self._holder["client"] = client
        return client

    async def _chat(self, body: dict[str, Any]) -> Any:
        """POST /chat/completions with the client's auth, errors and response model.

        ``client.post`` rather than ``chat.completions.create``: the body is already plain
        JSON, and ``create`` re-walks it through its TypedDict transforms (~10 ms of CPU per
        request with a JSON schema and a long prompt, a third of the annotator's CPU).
        """
        from openai.types.chat import ChatCompletion

        return await self._client().post("/chat/completions", cast_to=ChatCompletion, body=body)

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.settings.concurrency)
        return self._sem

    # -- interface -----------------------------------------------------------------------------

    def annotate(
        self, key: str, facts: ChangeFacts, *, images: tuple[bytes, bytes] | None = None
    ) -> Annotation:
        """Captions and QA for one sample, every claim checked against the facts.

        Args:
            key: sample key.
            facts: the sample's facts.
            images: (before.png, after.png) bytes for vision models (``openai.vision``).

        Returns:
            The checked annotation, with model, prompt version, tokens and cost.

        Raises:
            AnnotationFailed: budget reached, endpoint unavailable after the retries, or no
                reply passed the checks within ``max_fix_attempts``.
        """
        result = self.annotate_batch([(key, facts)], images=[images])[0]
        if isinstance(result, AnnotationFailed):
            raise result
        return result

    def annotate_batch(
        self,
        batch: Sequence[tuple[str, ChangeFacts]],
        *,
        images: Sequence[tuple[bytes, bytes] | None] | None = None,
    ) -> list[Annotation | AnnotationFailed]:
        """Annotate ``(key, facts)`` pairs concurrently (or through the Batch API), in order.

        Failures are returned in place (dead-letter), not raised.
        """
        imgs: list[tuple[bytes, bytes] | None] = (
            list(images) if images is not None else [None] * len(batch)
        )
        run = self._run_batch_api if self.settings.batch else self._run_concurrent
        out: list[Annotation | AnnotationFailed] = self._loop.run(run(list(batch), imgs))
        return out

    # -- one sample ----------------------------------------------------------------------------

    async def _run_concurrent(
        self,
        batch: list[tuple[str, ChangeFacts]],
        images: list[tuple[bytes, bytes] | None],
    ) -> list[Annotation | AnnotationFailed]:
        tasks = [
            self._one(key, facts, img) for (key, facts), img in zip(batch, images, strict=True)
        ]
        return list(await asyncio.gather(*tasks))

    def _messages(
        self, key: str, facts: ChangeFacts, images: tuple[bytes, bytes] | None
    ) -> list[dict[str, Any]]:
        return self.prompt.messages(
            key,
            facts,
            captions_per_sample=self.captions_per_sample,
            no_change_epsilon=self.no_change_epsilon,
            images=images if self.settings.vision else None,
        )

    async def _one(
        self, key: str, facts: ChangeFacts, images: tuple[bytes, bytes] | None
    ) -> Annotation | AnnotationFailed:
        messages = self._messages(key, facts, images)
        spent = _Spend()
        async with self._semaphore():
            for attempt in range(self.settings.max_fix_attempts + 1):
                try:
                    reply = await self._complete(key, messages)
                except AnnotationFailed as exc:
                    return self._failed(exc)
                spent.add(reply)
                outcome = self._accept(key, facts, reply.text, spent)
                if isinstance(outcome, Annotation):
                    return outcome
                complaints, malformed = outcome
                if attempt == self.settings.max_fix_attempts:
                    return self._failed(self._rejected(key, complaints, malformed, spent))
                self.stats.fix_rounds += 1
                messages = [
                    *messages,
                    {"role": "assistant", "content": reply.text},
                    self.prompt.fix(complaints),
                ]
        raise AssertionError("unreachable")  # pragma: no cover

    def _accept(
        self, key: str, facts: ChangeFacts, text: str, spent: _Spend
    ) -> Annotation | tuple[list[str], bool]:
        parsed, complaints, malformed = check_output(
            text,
            facts,
            captions_per_sample=self.captions_per_sample,
            no_change_epsilon=self.no_change_epsilon,
            caption_chars=self.caption_chars,
        )
        if parsed is None:
            return complaints, malformed
        captions, qa = parsed
        self.stats.annotated += 1
        return Annotation(
            captions=captions,
            qa=qa,
            annotator=self.name,
            annotator_version=self.version,
            prompt_version=self.prompt.version,
            model=self.settings.model,
            tokens_in=spent.tokens_in,
            tokens_out=spent.tokens_out,
            cost_usd=round(spent.cost_usd, 12),
        )

    def _rejected(
        self, key: str, complaints: list[str], malformed: bool, spent: _Spend
    ) -> AnnotationFailed:
        rounds = self.settings.max_fix_attempts + 1
        return AnnotationFailed(
            key,
            REASON_MALFORMED if malformed else REASON_CLAIMS,
            f"{rounds} replies of {self.settings.model} (prompt {self.prompt.version}) failed "
            f"the fact checker; last: {'; '.join(complaints[:6])} "
            f"(spent ${spent.cost_usd:.6f}; raise annotation.openai.max_fix_attempts or try "
            "another model)",
        )

    def _failed(self, exc: AnnotationFailed) -> AnnotationFailed:
        self.stats.failed[exc.reason] += 1
        return exc

    # -- one request ---------------------------------------------------------------------------

    def _body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "model": s.model,
            "messages": messages,
            "temperature": s.temperature,
            "max_tokens": s.max_output_tokens,
        }
        if self.mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": response_schema(self.captions_per_sample),
            }
        else:
            body["response_format"] = {"type": "json_object"}
        return body

    def _cost(self, tokens_in: int, tokens_out: int, factor: float = 1.0) -> float:
        if self.price is None:
            return 0.0
        return factor * (tokens_in * self.price.input + tokens_out * self.price.output) / 1e6

    @staticmethod
    def _estimate_tokens(messages: list[dict[str, Any]]) -> int:
        chars, images = 0, 0
        for m in messages:
            content = m["content"]
            if isinstance(content, str):
                chars += len(content)
            else:
                for part in content:
                    if part.get("type") == "image_url":
                        images += 1
                    else:
                        chars += len(part.get("text", ""))
        return chars // 3 + 16 * len(messages) + _IMAGE_TOKENS * images

    def _cached(self, body: dict[str, Any]) -> tuple[str, _Reply | None]:
        ck = cache_key(body, schema_version=SCHEMA_VERSION)
        if self.cache is not None:
            hit = self.cache.get(ck)
            if hit is not None:
                self.stats.cache_hits += 1
                return ck, _Reply(
                    text=str(hit["text"]),
                    tokens_in=int(hit["tokens_in"]),
                    tokens_out=int(hit["tokens_out"]),
                    cost_usd=float(hit["cost_usd"]),
                    cached=True,
                )
        return ck, None

    def _store(self, ck: str, reply: _Reply) -> None:
        if self.cache is not None:
            self.cache.put(
                ck,
                {
                    "text": reply.text,
                    "tokens_in": reply.tokens_in,
                    "tokens_out": reply.tokens_out,
                    "cost_usd": reply.cost_usd,
                    "model": self.settings.model,
                },
            )

    def _reserve(self, key: str, estimate_usd: float) -> None:
        """Book the worst case of one request, or fail the sample with reason ``budget``."""
        budget = self.settings.budget_usd
        if self._budget_exhausted:
            ok = False
        elif self.ledger is not None:
            ok = self.ledger.reserve(estimate_usd)
        else:
            ok = budget is None or self._memory_spent + estimate_usd <= budget
            if ok:
                self._memory_spent += estimate_usd
        if not ok:
            self._budget_exhausted = True
            spent = self.ledger.spent() if self.ledger is not None else self._memory_spent
            raise AnnotationFailed(
                key,
                REASON_BUDGET,
                f"annotation.openai.budget_usd={budget} reached (spent ${spent:.6f}; the next "
                f"request could cost up to ${estimate_usd:.6f}); raise the budget and re-run "
                "with --resume: finished requests come from the cache",
            )

    def _settle(self, reserved: float, actual: float) -> None:
        if self.ledger is not None:
            self.ledger.settle(reserved, actual)
        else:
            self._memory_spent += actual - reserved

    async def _complete(self, key: str, messages: list[dict[str, Any]]) -> _Reply:
        """One chat completion: cache, budget, rate limit, bounded retries."""
        while True:
            body = self._body(messages)
            ck, hit = self._cached(body)
            if hit is not None:
                return hit
            est_tokens = self._estimate_tokens(messages) + self.settings.max_output_tokens
            reserved = self._cost(self._estimate_tokens(messages), self.settings.max_output_tokens)
            self._reserve(key, reserved)
            try:
                response = await self._with_retries(
                    key,
                    functools.partial(self._chat, body),
                    est_tokens,
                    schema_request=body["response_format"]["type"] == "json_schema",
                )
            except _SchemaUnsupported:
                self._settle(reserved, 0.0)
                self.mode = "json_object"
                continue
            except AnnotationFailed:
                self._settle(reserved, 0.0)
                raise
            usage = getattr(response, "usage", None)
            tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
            tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
            cost = self._cost(tokens_in, tokens_out)
            self._settle(reserved, cost)
            self.limiter.refund_tokens(est_tokens - tokens_in - tokens_out)
            self.stats.tokens_in += tokens_in
            self.stats.tokens_out += tokens_out
            self.stats.cost_usd += cost
            choices = getattr(response, "choices", None) or []
            text = (choices[0].message.content or "") if choices else ""
            reply = _Reply(text, tokens_in, tokens_out, cost, cached=False)
            self._store(ck, reply)
            return reply

    async def _with_retries(
        self,
        key: str,
        call: Callable[[], Awaitable[Any]],
        est_tokens: float,
        *,
        schema_request: bool = False,
    ) -> Any:
        """Run one API call with bounded, jittered retries on 429/5xx/timeouts/connection errors."""
        import openai

        s = self.settings
        last = ""
        for attempt in range(s.max_retries + 1):
            await self.limiter.acquire(est_tokens)
            retry_after: float | None = None
            try:
                self.stats.requests += 1
                return await call()
            except openai.RateLimitError as exc:
                retry_after = retry_after_seconds(dict(exc.response.headers))
                last = f"429 rate limited (Retry-After={retry_after})"
            except openai.APIStatusError as exc:
                status = exc.status_code
                message = _redact(str(exc))
                if (
                    status == 400
                    and schema_request
                    and s.structured_output == "auto"
                    and _names_response_format(exc)
                ):
                    raise _SchemaUnsupported() from None
                if status < 500 and status not in (408, 409):
                    raise AnnotationFailed(
                        key,
                        REASON_REJECTED,
                        f"{s.base_url} answered {status}: {message[:300]}; check "
                        "annotation.openai (model, structured_output, api_key_env)",
                    ) from None
                retry_after = retry_after_seconds(dict(exc.response.headers))
                last = f"{status}: {message[:200]}"
            except openai.APITimeoutError:
                last = f"timeout after {s.timeout_s} s"
            except openai.APIConnectionError as exc:
                last = f"connection error: {_redact(str(exc))[:200]}"
            if attempt < s.max_retries:
                self.stats.retries += 1
                delay = backoff_delay(attempt, cap_s=s.max_backoff_s, retry_after_s=retry_after)
                await asyncio.sleep(delay)
        raise AnnotationFailed(
            key,
            REASON_UNAVAILABLE,
            f"{s.max_retries + 1} attempts at {s.base_url} failed; last: {last}; raise "
            "annotation.openai.max_retries or lower the rate limits, then re-run with --resume",
        )

    # -- Batch API -----------------------------------------------------------------------------

    async def _run_batch_api(
        self,
        batch: list[tuple[str, ChangeFacts]],
        images: list[tuple[bytes, bytes] | None],
    ) -> list[Annotation | AnnotationFailed]:
        states = [
            _State(key, facts, self._messages(key, facts, img))
            for (key, facts), img in zip(batch, images, strict=True)
        ]
        factor = self.settings.batch_price_factor
        for attempt in range(self.settings.max_fix_attempts + 1):
            todo = [st for st in states if st.result is None]
            if not todo:
                break
            replies: dict[int, _Reply] = {}
            submit: list[tuple[int, str, dict[str, Any], float]] = []
            for i, st in enumerate(states):
                if st.result is not None:
                    continue
                body = self._body(st.messages)
                ck, hit = self._cached(body)
                if hit is not None:
                    replies[i] = hit
                    continue
                reserved = self._cost(
                    self._estimate_tokens(st.messages), self.settings.max_output_tokens, factor
                )
                try:
                    self._reserve(st.key, reserved)
                except AnnotationFailed as exc:
                    st.result = self._failed(exc)
                    continue
                submit.append((i, ck, body, reserved))
            if submit:
                try:
                    outputs = await self._submit_batch(submit)
                except AnnotationFailed as exc:
                    for i, _, _, reserved in submit:
                        self._settle(reserved, 0.0)
                        states[i].result = self._failed(
                            AnnotationFailed(states[i].key, exc.reason, exc.detail)
                        )
                    outputs = {}
                for i, ck, _, reserved in submit:
                    if states[i].result is not None:
                        continue
                    out = outputs.get(ck)
                    if out is None or "error" in out:
                        self._settle(reserved, 0.0)
                        problem = (out or {}).get("error", "no output line for the request")
                        states[i].result = self._failed(
                            AnnotationFailed(
                                states[i].key, REASON_UNAVAILABLE, f"batch request: {problem}"
                            )
                        )
                        continue
                    cost = self._cost(out["tokens_in"], out["tokens_out"], factor)
                    self._settle(reserved, cost)
                    self.stats.tokens_in += out["tokens_in"]
                    self.stats.tokens_out += out["tokens_out"]
                    self.stats.cost_usd += cost
                    reply = _Reply(out["text"], out["tokens_in"], out["tokens_out"], cost, False)
                    self._store(ck, reply)
                    replies[i] = reply
            for i, reply in replies.items():
                st = states[i]
                st.spent.add(reply)
                outcome = self._accept(st.key, st.facts, reply.text, st.spent)
                if isinstance(outcome, Annotation):
                    st.result = outcome
                    continue
                complaints, malformed = outcome
                if attempt == self.settings.max_fix_attempts:
                    st.result = self._failed(
                        self._rejected(st.key, complaints, malformed, st.spent)
                    )
                    continue
                self.stats.fix_rounds += 1
                st.messages = [
                    *st.messages,
                    {"role": "assistant", "content": reply.text},
                    self.prompt.fix(complaints),
                ]
        return [
            st.result
            if st.result is not None
            else AnnotationFailed(st.key, REASON_CLAIMS, "no reply was accepted")
            for st in states
        ]

    async def _submit_batch(
        self, submit: list[tuple[int, str, dict[str, Any], float]]
    ) -> dict[str, dict[str, Any]]:
        """Upload a JSONL of requests, create a batch, poll it, read its output lines."""
        s = self.settings
        lines = [
            json.dumps(
                {"custom_id": ck, "method": "POST", "url": "/v1/chat/completions", "body": body}
            )
            for _, ck, body, _ in submit
        ]
        data = ("\n".join(lines) + "\n").encode()
        client = self._client()
        est = sum(self._estimate_tokens(b["messages"]) for _, _, b, _ in submit)
        upload = await self._with_retries(
            "batch",
            lambda: client.files.create(file=("requests.jsonl", data), purpose="batch"),
            est,
        )
        batch = await self._with_retries(
            "batch",
            lambda: client.batches.create(
                input_file_id=upload.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            ),
            0,
        )
        self.stats.batches += 1
        started = time.monotonic()
        terminal = {"completed", "failed", "expired", "cancelled"}
        while batch.status not in terminal:
            if time.monotonic() - started > s.batch_max_wait_s:
                raise AnnotationFailed(
                    "batch",
                    REASON_UNAVAILABLE,
                    f"batch {batch.id} not done after annotation.openai.batch_max_wait_s="
                    f"{s.batch_max_wait_s} s (status {batch.status})",
                )
            await asyncio.sleep(s.batch_poll_s)
            batch = await self._with_retries(
                "batch", functools.partial(client.batches.retrieve, batch.id), 0
            )
        if batch.status != "completed":
            raise AnnotationFailed(
                "batch", REASON_UNAVAILABLE, f"batch {batch.id} ended with status {batch.status}"
            )
        outputs: dict[str, dict[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._with_retries(
                "batch", functools.partial(client.files.content, file_id), 0
            )
            for line in content.text.splitlines():
                if line.strip():
                    ck, out = _batch_line(json.loads(line))
                    outputs[ck] = out
        return outputs


class _SchemaUnsupported(Exception):
    """The server rejected ``response_format: json_schema`` (fall back to JSON mode)."""


def _names_response_format(exc: Any) -> bool:
    text = str(exc).lower()
    return "response_format" in text or "json_schema" in text


def _redact(text: str) -> str:
    """Mask anything that looks like an API key in an error message."""
    return _SECRET_RE.sub("sk-***", text)


def _batch_line(line: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ck = str(line.get("custom_id"))
    response = line.get("response") or {}
    if line.get("error") or response.get("status_code") != 200:
        problem = line.get("error") or {"status_code": response.get("status_code")}
        return ck, {"error": _redact(json.dumps(problem))[:300]}
    body = response.get("body") or {}
    usage = body.get("usage") or {}
    choices = body.get("choices") or [{}]
    text = (choices[0].get("message") or {}).get("content") or ""
    return ck, {
        "text": text,
        "tokens_in": int(usage.get("prompt_tokens", 0)),
        "tokens_out": int(usage.get("completion_tokens", 0)),
    }


@dataclass
class _Spend:
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    def add(self, reply: _Reply) -> None:
        self.tokens_in += reply.tokens_in
        self.tokens_out += reply.tokens_out
        self.cost_usd += reply.cost_usd


@dataclass
class _State:
    key: str
    facts: ChangeFacts
    messages: list[dict[str, Any]]
    spent: _Spend = field(default_factory=_Spend)
    result: Annotation | AnnotationFailed | None = None
