"""The LLM annotator: captions and QA from any OpenAI-compatible endpoint, checked against the facts.

Shaped like Beam's ``ModelHandler`` and behind the interface of
:class:`~geodelta.annotators.template.TemplateAnnotator`: make one :class:`LLMAnnotator` per
worker (it owns one ``openai.AsyncOpenAI`` client on a private event-loop thread), then call
:meth:`LLMAnnotator.annotate` per sample or :meth:`LLMAnnotator.annotate_batch` for many
(requests then run concurrently, up to ``concurrency``). A sequence sample (issue 15) passes
``series=`` (:class:`~geodelta.annotators.temporal.SeriesInput`: its sequence facts and
land-cover stack): the prompt then carries the sequence's facts, the reply adds temporal
captions and temporal QA, and every temporal claim is checked against the stack.

For each sample:

1. the prompt is rendered from the versioned prompt file ``prompts/<prompt_version>.txt`` and
   the sample's :class:`~geodelta.schemas.ChangeFacts` (optionally with before/after PNGs;
   :mod:`geodelta.annotators.llm.prompt`);
2. the request asks for structured output: a strict JSON schema derived from the records
   (:func:`~geodelta.annotators.llm.prompt.response_schema`), or JSON mode where the server
   does not support schemas (``structured_output: auto`` falls back on the first 400 that
   names ``response_format``);
3. the reply is validated (pydantic) and every claim is checked against the facts
   (:mod:`geodelta.annotators.llm.checks`): numbers, classes, directions, locations, answers;
4. a reply that fails is sent back with the checker's complaints, at most
   ``max_fix_attempts`` times; then the sample fails with :class:`AnnotationFailed`
   (the annotate stage quarantines it). Nothing unchecked is ever returned.

Every request goes through the on-disk cache (:mod:`geodelta.annotators.llm.cache`; a re-run makes
zero requests), the spending ledger (a hard ``budget_usd``: once it is reached, the remaining
samples fail with reason ``budget`` without a request), the rate limiter (requests and tokens
per minute) and bounded retries with jittered exponential back-off honouring ``Retry-After``
on 429, 5xx, timeouts and connection errors. With ``batch: true`` the requests of
:meth:`~LLMAnnotator.annotate_batch` go through the Batch API instead (JSONL file upload,
batch, poll, download; :mod:`geodelta.annotators.llm.batch`), with the same cache, checks and
fix rounds.

The API key is read from the environment variable named by ``api_key_env`` when the client is
made; it is never logged, cached, returned or written anywhere: the annotator registers its
value as a secret (:mod:`geodelta.secrets`), so an endpoint that echoes it (in an error body or a
completion) has it redacted from replies, the cache, quarantine details and log records.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Literal

from geodelta._optional import optional_import
from geodelta.annotators.errors import (
    REASON_BUDGET,
    REASON_CLAIMS,
    REASON_MALFORMED,
    REASON_REJECTED,
    REASON_UNAVAILABLE,
    AnnotationFailed,
    AnnotatorConfigError,
    redact,
)
from geodelta.annotators.llm.batch import run_batch_api
from geodelta.annotators.llm.cache import BudgetLedger, ResponseCache, cache_key
from geodelta.annotators.llm.checks import check_output
from geodelta.annotators.llm.prompt import PromptTemplate, response_schema
from geodelta.annotators.llm.ratelimit import RateLimiter, backoff_delay, retry_after_seconds
from geodelta.annotators.llm.usage import LLMStats, Reply, Spend
from geodelta.annotators.temporal import SeriesInput
from geodelta.errors import GeodeltaError
from geodelta.schemas import SCHEMA_VERSION, Annotation, BuildConfig, ChangeFacts
from geodelta.schemas.config import OpenAIConfig
from geodelta.secrets import register_env_secret

#: The reasons and :class:`AnnotationFailed` live in :mod:`geodelta.annotators.errors`.
__all__ = ["LLMAnnotator", "LLMStats"]

_IMAGE_TOKENS = 100  # estimate per low-detail image


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
        # the key is a secret by value in this process (each worker reads and registers it)
        register_env_secret(settings.api_key_env)
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
        self._series: dict[str, SeriesInput] = {}  # the running batch's sequence samples
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
        elif "://" in cfg.output.dir:  # a URL release: beside its local work folders
            cache_dir = Path(cfg.resolve(".geodelta-work")) / "llm-cache"
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
            openai = optional_import("openai", "llm", purpose="the openai annotator")
            env = self.settings.api_key_env
            client = openai.AsyncOpenAI(
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
        self,
        key: str,
        facts: ChangeFacts,
        *,
        images: tuple[bytes, bytes] | None = None,
        series: SeriesInput | None = None,
    ) -> Annotation:
        """Captions and QA for one sample, every claim checked against the facts.

        Args:
            key: sample key.
            facts: the sample's facts.
            images: (before.png, after.png) bytes for vision models (``openai.vision``).
            series: a sequence sample's facts and land-cover stack: the annotation then also
                holds temporal captions (after the pair ones) and temporal QA items, each
                checked against the stack.

        Returns:
            The checked annotation, with model, prompt version, tokens and cost.

        Raises:
            AnnotationFailed: budget reached, endpoint unavailable after the retries, or no
                reply passed the checks within ``max_fix_attempts``.
        """
        result = self.annotate_batch([(key, facts)], images=[images], series=[series])[0]
        if isinstance(result, AnnotationFailed):
            raise result
        return result

    def annotate_batch(
        self,
        batch: Sequence[tuple[str, ChangeFacts]],
        *,
        images: Sequence[tuple[bytes, bytes] | None] | None = None,
        series: Sequence[SeriesInput | None] | None = None,
    ) -> list[Annotation | AnnotationFailed]:
        """Annotate ``(key, facts)`` pairs concurrently (or through the Batch API), in order.

        ``series`` gives, per sample, its sequence input (None for a pair sample). Failures
        are returned in place (dead-letter), not raised.
        """
        imgs: list[tuple[bytes, bytes] | None] = (
            list(images) if images is not None else [None] * len(batch)
        )
        seqs = list(series) if series is not None else [None] * len(batch)
        self._series = {k: s for (k, _), s in zip(batch, seqs, strict=True) if s is not None}
        try:
            if self.settings.batch:
                run = run_batch_api(self, list(batch), imgs)
            else:
                run = self._run_concurrent(list(batch), imgs)
            out: list[Annotation | AnnotationFailed] = self._loop.run(run)
        finally:
            self._series = {}
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
        seq = self._series.get(key)
        return self.prompt.messages(
            key,
            facts,
            captions_per_sample=self.captions_per_sample,
            no_change_epsilon=self.no_change_epsilon,
            images=images if self.settings.vision else None,
            series=seq.facts if seq is not None else None,
        )

    async def _one(
        self, key: str, facts: ChangeFacts, images: tuple[bytes, bytes] | None
    ) -> Annotation | AnnotationFailed:
        messages = self._messages(key, facts, images)
        spent = Spend()
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
        self, key: str, facts: ChangeFacts, text: str, spent: Spend
    ) -> Annotation | tuple[list[str], bool]:
        parsed, complaints, malformed = check_output(
            text,
            facts,
            captions_per_sample=self.captions_per_sample,
            no_change_epsilon=self.no_change_epsilon,
            caption_chars=self.caption_chars,
            series=self._series.get(key),
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
        self, key: str, complaints: list[str], malformed: bool, spent: Spend
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

    def _body(self, messages: list[dict[str, Any]], key: str | None = None) -> dict[str, Any]:
        """The request body; a sequence sample's (``key`` in the running batch's series) asks
        for the sequence reply schema."""
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
                "json_schema": response_schema(
                    self.captions_per_sample, series=key is not None and key in self._series
                ),
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

    def _cached(self, body: dict[str, Any]) -> tuple[str, Reply | None]:
        ck = cache_key(body, schema_version=SCHEMA_VERSION)
        if self.cache is not None:
            hit = self.cache.get(ck)
            if hit is not None:
                self.stats.cache_hits += 1
                return ck, Reply.from_cache(hit)
        return ck, None

    def _store(self, ck: str, reply: Reply) -> None:
        if self.cache is not None:
            self.cache.put(ck, reply.cache_entry(self.settings.model))

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

    async def _complete(self, key: str, messages: list[dict[str, Any]]) -> Reply:
        """One chat completion: cache, budget, rate limit, bounded retries."""
        while True:
            body = self._body(messages, key)
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
            reply = Reply(text, tokens_in, tokens_out, cost, cached=False)
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
        openai = optional_import("openai", "llm", purpose="the openai annotator")
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
                message = redact(str(exc))
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
                last = f"connection error: {redact(str(exc))[:200]}"
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


class _SchemaUnsupported(GeodeltaError):
    """The server rejected ``response_format: json_schema`` (fall back to JSON mode)."""


def _names_response_format(exc: Any) -> bool:
    text = str(exc).lower()
    return "response_format" in text or "json_schema" in text
