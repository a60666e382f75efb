"""The Batch API path of the LLM annotator (``annotation.openai.batch: true``).

The requests of one :meth:`~geodelta.annotators.llm.annotator.LLMAnnotator.annotate_batch`
call go into one JSONL file, uploaded with ``purpose="batch"``; a batch is created on it, polled
every ``batch_poll_s`` (at most ``batch_max_wait_s``) and its output and error files are read
back. Requests found in the cache are not sent; the budget is reserved at the batch price
(``batch_price_factor``); replies are checked as in the concurrent path, and the ones that fail
go into the next batch with the checker's complaints, at most ``max_fix_attempts`` times.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from geodelta.annotators.errors import (
    REASON_CLAIMS,
    REASON_UNAVAILABLE,
    AnnotationFailed,
    redact,
)
from geodelta.annotators.llm.prompt import PromptTemplate
from geodelta.annotators.llm.usage import LLMStats, Reply, Spend
from geodelta.schemas import Annotation, ChangeFacts
from geodelta.schemas.config import OpenAIConfig

__all__ = ["BatchHost", "run_batch_api"]


class BatchHost(Protocol):
    """What the batch path uses of the annotator: settings, counters, prompt, request steps."""

    settings: OpenAIConfig
    stats: LLMStats
    prompt: PromptTemplate

    def _messages(
        self, key: str, facts: ChangeFacts, images: tuple[bytes, bytes] | None
    ) -> list[dict[str, Any]]: ...

    def _body(self, messages: list[dict[str, Any]], key: str | None = None) -> dict[str, Any]: ...

    def _cached(self, body: dict[str, Any]) -> tuple[str, Reply | None]: ...

    def _store(self, ck: str, reply: Reply) -> None: ...

    def _cost(self, tokens_in: int, tokens_out: int, factor: float = 1.0) -> float: ...

    def _estimate_tokens(self, messages: list[dict[str, Any]]) -> int: ...

    def _reserve(self, key: str, estimate_usd: float) -> None: ...

    def _settle(self, reserved: float, actual: float) -> None: ...

    def _failed(self, exc: AnnotationFailed) -> AnnotationFailed: ...

    def _accept(
        self, key: str, facts: ChangeFacts, text: str, spent: Spend
    ) -> Annotation | tuple[list[str], bool]: ...

    def _rejected(
        self, key: str, complaints: list[str], malformed: bool, spent: Spend
    ) -> AnnotationFailed: ...

    def _client(self) -> Any: ...

    async def _with_retries(
        self, key: str, call: Callable[[], Awaitable[Any]], est_tokens: float
    ) -> Any: ...


@dataclass
class _State:
    """One sample of a batch: its conversation so far, what it spent, its result."""

    key: str
    facts: ChangeFacts
    messages: list[dict[str, Any]]
    spent: Spend = field(default_factory=Spend)
    result: Annotation | AnnotationFailed | None = None


async def run_batch_api(
    host: BatchHost,
    batch: list[tuple[str, ChangeFacts]],
    images: list[tuple[bytes, bytes] | None],
) -> list[Annotation | AnnotationFailed]:
    """Annotate a batch through the Batch API: one batch of requests per fix round.

    Every request goes through the cache and the budget as in the concurrent path; the
    replies that fail the checks are sent back with the complaints in the next round.

    Args:
        host: the annotator.
        batch: ``(key, facts)`` pairs.
        images: (before.png, after.png) per sample, or None.

    Returns:
        One annotation or failure per sample, in order.
    """
    states = [
        _State(key, facts, host._messages(key, facts, img))
        for (key, facts), img in zip(batch, images, strict=True)
    ]
    factor = host.settings.batch_price_factor
    for attempt in range(host.settings.max_fix_attempts + 1):
        todo = [st for st in states if st.result is None]
        if not todo:
            break
        replies: dict[int, Reply] = {}
        submit: list[tuple[int, str, dict[str, Any], float]] = []
        for i, st in enumerate(states):
            if st.result is not None:
                continue
            body = host._body(st.messages, st.key)
            ck, hit = host._cached(body)
            if hit is not None:
                replies[i] = hit
                continue
            reserved = host._cost(
                host._estimate_tokens(st.messages), host.settings.max_output_tokens, factor
            )
            try:
                host._reserve(st.key, reserved)
            except AnnotationFailed as exc:
                st.result = host._failed(exc)
                continue
            submit.append((i, ck, body, reserved))
        if submit:
            try:
                outputs = await _submit_batch(host, submit)
            except AnnotationFailed as exc:
                for i, _, _, reserved in submit:
                    host._settle(reserved, 0.0)
                    states[i].result = host._failed(
                        AnnotationFailed(states[i].key, exc.reason, exc.detail)
                    )
                outputs = {}
            for i, ck, _, reserved in submit:
                if states[i].result is not None:
                    continue
                out = outputs.get(ck)
                if out is None or "error" in out:
                    host._settle(reserved, 0.0)
                    problem = (out or {}).get("error", "no output line for the request")
                    states[i].result = host._failed(
                        AnnotationFailed(
                            states[i].key, REASON_UNAVAILABLE, f"batch request: {problem}"
                        )
                    )
                    continue
                cost = host._cost(out["tokens_in"], out["tokens_out"], factor)
                host._settle(reserved, cost)
                host.stats.tokens_in += out["tokens_in"]
                host.stats.tokens_out += out["tokens_out"]
                host.stats.cost_usd += cost
                reply = Reply(out["text"], out["tokens_in"], out["tokens_out"], cost, False)
                host._store(ck, reply)
                replies[i] = reply
        for i, reply in replies.items():
            st = states[i]
            st.spent.add(reply)
            outcome = host._accept(st.key, st.facts, reply.text, st.spent)
            if isinstance(outcome, Annotation):
                st.result = outcome
                continue
            complaints, malformed = outcome
            if attempt == host.settings.max_fix_attempts:
                st.result = host._failed(host._rejected(st.key, complaints, malformed, st.spent))
                continue
            host.stats.fix_rounds += 1
            st.messages = [
                *st.messages,
                {"role": "assistant", "content": reply.text},
                host.prompt.fix(complaints),
            ]
    return [
        st.result
        if st.result is not None
        else AnnotationFailed(st.key, REASON_CLAIMS, "no reply was accepted")
        for st in states
    ]


async def _submit_batch(
    host: BatchHost, submit: list[tuple[int, str, dict[str, Any], float]]
) -> dict[str, dict[str, Any]]:
    """Upload a JSONL of requests, create a batch, poll it, read its output lines."""
    s = host.settings
    lines = [
        json.dumps({"custom_id": ck, "method": "POST", "url": "/v1/chat/completions", "body": body})
        for _, ck, body, _ in submit
    ]
    data = ("\n".join(lines) + "\n").encode()
    client = host._client()
    est = sum(host._estimate_tokens(b["messages"]) for _, _, b, _ in submit)
    upload = await host._with_retries(
        "batch",
        lambda: client.files.create(file=("requests.jsonl", data), purpose="batch"),
        est,
    )
    batch = await host._with_retries(
        "batch",
        lambda: client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ),
        0,
    )
    host.stats.batches += 1
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
        batch = await host._with_retries(
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
        content = await host._with_retries(
            "batch", functools.partial(client.files.content, file_id), 0
        )
        for line in content.text.splitlines():
            if line.strip():
                ck, out = _batch_line(json.loads(line))
                outputs[ck] = out
    return outputs


def _batch_line(line: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(custom_id, {text, tokens_in, tokens_out} or {error})`` of one output line."""
    ck = str(line.get("custom_id"))
    response = line.get("response") or {}
    if line.get("error") or response.get("status_code") != 200:
        problem = line.get("error") or {"status_code": response.get("status_code")}
        return ck, {"error": redact(json.dumps(problem))[:300]}
    body = response.get("body") or {}
    usage = body.get("usage") or {}
    choices = body.get("choices") or [{}]
    text = (choices[0].get("message") or {}).get("content") or ""
    return ck, {
        "text": text,
        "tokens_in": int(usage.get("prompt_tokens", 0)),
        "tokens_out": int(usage.get("completion_tokens", 0)),
    }
