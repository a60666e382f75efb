"""Request and token rate limits (token buckets) and retry back-off for the LLM annotator.

A :class:`TokenBucket` refills continuously at ``rate_per_minute / 60`` per second and holds at
most one second's worth (or the largest single request), so a run never bursts far above the
configured rate. :class:`RateLimiter` combines a request bucket and a token bucket.
:func:`backoff_delay` is exponential back-off with full jitter, bounded, and never shorter than
a server's ``Retry-After`` (itself bounded).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Mapping

__all__ = ["RateLimiter", "TokenBucket", "backoff_delay", "retry_after_seconds"]


class TokenBucket:
    """An asyncio token bucket.

    Args:
        rate_per_minute: refill rate.
        capacity: most tokens held (default: one second's worth, at least 1).
    """

    def __init__(self, rate_per_minute: float, capacity: float | None = None) -> None:
        if not rate_per_minute > 0:
            raise ValueError(f"rate_per_minute must be > 0 (actual {rate_per_minute})")
        self.rate = rate_per_minute / 60.0
        self.capacity = capacity if capacity is not None else max(1.0, self.rate)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until ``amount`` tokens are available and take them (first come, first served).

        An amount above the capacity is clipped to it (such a request waits for a full bucket).
        """
        amount = min(amount, self.capacity)
        async with self._lock:
            self._refill()
            while self._tokens < amount:
                await asyncio.sleep((amount - self._tokens) / self.rate)
                self._refill()
            self._tokens -= amount

    def refund(self, amount: float) -> None:
        """Give back tokens that were over-estimated."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + max(0.0, amount))


class RateLimiter:
    """Requests per minute and tokens per minute; either may be None (no limit)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None

    async def acquire(self, tokens: float) -> None:
        """Wait for one request slot and ``tokens`` tokens."""
        if self.requests is not None:
            await self.requests.acquire(1.0)
        if self.tokens is not None:
            await self.tokens.acquire(tokens)

    def refund_tokens(self, amount: float) -> None:
        """Return the difference between the estimated and the actual tokens."""
        if self.tokens is not None:
            self.tokens.refund(amount)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a response asks to wait: ``retry-after-ms``, ``Retry-After`` (seconds or date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def backoff_delay(
    attempt: int,
    *,
    base_s: float = 0.5,
    cap_s: float = 30.0,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Wait before retry number ``attempt`` (0-based): full jitter over ``base * 2**attempt``.

    The result is at least ``retry_after_s`` and at most ``cap_s`` (a server asking for more
    than the cap gets the cap: the retries stay bounded in time).
    """
    r = rng.random() if rng is not None else random.random()
    delay = r * min(cap_s, base_s * (2.0**attempt))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(cap_s, delay)
