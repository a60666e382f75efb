"""On-disk response cache and spending ledger of the LLM annotator.

The cache maps ``sha256(model, messages, request parameters, schema version)`` to the text
and token usage of a completed request, one small JSON file per key written atomically (temp
file + rename), so any number of worker processes can share one folder: a re-run of the same
build makes zero requests, and a crashed run resumes where it stopped (every request that
finished is in the cache).

The ledger is the hard budget: a JSON file holding the US dollars spent, updated under an
exclusive ``flock`` so the worker processes of one build share it. Before a request the
worst-case cost is *reserved* (added); when the request finishes, the reservation is replaced
by the actual cost. A crash between the two leaves the worst case booked, which can only stop
annotation early, never overspend.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geodelta._io import write_atomic

__all__ = ["BudgetLedger", "ResponseCache", "cache_key"]


def cache_key(body: Mapping[str, Any], *, schema_version: str) -> str:
    """sha256 of a request body (model, messages, parameters) and the record schema version.

    The body is serialised as canonical JSON (sorted keys, no whitespace), so the key does not
    depend on dict order.
    """
    blob = json.dumps(
        {"body": body, "schema_version": schema_version},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Completed requests on disk, one JSON file per key (``<root>/<key[:2]>/<key>.json``).

    Args:
        root: cache folder (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached entry, or None (a missing or unreadable file is a miss)."""
        try:
            data = json.loads(self._path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def put(self, key: str, entry: Mapping[str, Any]) -> None:
        """Store an entry (atomically; a concurrent writer of the same key is harmless)."""
        write_atomic(self._path(key), json.dumps(dict(entry), sort_keys=True).encode())

    def __len__(self) -> int:
        if not self.root.exists():
            return 0
        return sum(1 for _ in self.root.glob("[0-9a-f][0-9a-f]/*.json"))


class BudgetLedger:
    """Spending of one build, shared by its worker processes through a locked file.

    Args:
        path: the ledger file (created when missing).
        budget_usd: the hard limit; None = count only.
    """

    def __init__(self, path: str | Path, budget_usd: float | None) -> None:
        self.path = Path(path)
        self.budget_usd = budget_usd

    @contextmanager
    def _locked(self) -> Iterator[dict[str, float]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    state = json.loads(self.path.read_text())
                except (FileNotFoundError, json.JSONDecodeError):
                    state = {"spent_usd": 0.0}
                yield state
                write_atomic(self.path, json.dumps(state, sort_keys=True).encode())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def spent(self) -> float:
        """US dollars booked so far (actual costs plus open reservations)."""
        with self._locked() as state:
            return float(state["spent_usd"])

    def reserve(self, amount_usd: float) -> bool:
        """Book ``amount_usd`` if it fits under the budget; False (nothing booked) if not."""
        with self._locked() as state:
            spent = float(state["spent_usd"])
            if self.budget_usd is not None and spent + amount_usd > self.budget_usd:
                return False
            state["spent_usd"] = spent + amount_usd
            return True

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        """Replace a reservation by the actual cost (0 for a request that failed)."""
        with self._locked() as state:
            state["spent_usd"] = max(0.0, float(state["spent_usd"]) - reserved_usd + actual_usd)
