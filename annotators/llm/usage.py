"""What the LLM annotator's requests returned and cost, per request, per sample and per worker.

:class:`Reply` is one completed request (from the endpoint or the cache), :class:`Spend` the
tokens and dollars of one sample over its fix rounds (recorded in its
:class:`~geodelta.schemas.Annotation`), :class:`LLMStats` the counters of one annotator.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from geodelta.secrets import redact

__all__ = ["LLMStats", "Reply", "Spend"]


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


@dataclass
class Reply:
    """One completed chat request: the message text, its tokens and its cost."""

    text: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    cached: bool

    def __post_init__(self) -> None:
        # an endpoint may echo a secret (the API key) in a completion: it must reach neither
        # the cache, nor the fact checker's complaints, nor a caption
        self.text = redact(self.text)

    @classmethod
    def from_cache(cls, entry: dict[str, Any]) -> Reply:
        """A reply read from a :class:`~geodelta.annotators.llm.cache.ResponseCache` entry."""
        return cls(
            text=str(entry["text"]),
            tokens_in=int(entry["tokens_in"]),
            tokens_out=int(entry["tokens_out"]),
            cost_usd=float(entry["cost_usd"]),
            cached=True,
        )

    def cache_entry(self, model: str) -> dict[str, Any]:
        """What the response cache stores of this reply."""
        return {
            "text": self.text,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd,
            "model": model,
        }


@dataclass
class Spend:
    """Tokens and US dollars of one sample, summed over its replies."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    def add(self, reply: Reply) -> None:
        """Count one more reply."""
        self.tokens_in += reply.tokens_in
        self.tokens_out += reply.tokens_out
        self.cost_usd += reply.cost_usd
