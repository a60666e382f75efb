"""Answer balance of a release's QA: yes/no shares and answer-class distributions per type.

A QA set whose yes/no questions are mostly "yes" (or whose ``location`` answers are mostly
"centre") teaches a model to guess. :func:`qa_balance` counts the answers of every ``qa.json``
member of a release's shards; :func:`format_balance` renders the counts as a Markdown table
(``geodelta qa-balance RELEASE`` prints it).
"""

from __future__ import annotations

import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geodelta.data import decode_member
from geodelta.errors import ReleaseError
from geodelta.pipelines.release.layout import iter_tar_samples, shard_files
from geodelta.schemas.qa import CLASS_TREND_QA_TYPES, YES_NO_QA_TYPES

__all__ = ["YES_NO_TYPES", "QABalance", "balance_of", "format_balance", "qa_balance"]

#: QA types answered 'yes' or 'no' (:data:`geodelta.schemas.qa.YES_NO_QA_TYPES`).
YES_NO_TYPES: tuple[str, ...] = YES_NO_QA_TYPES


@dataclass
class QABalance:
    """Answer counts of a set of samples.

    Attributes:
        samples: samples counted.
        items: QA items counted.
        answers: QA type -> answer -> count.
        per_sample: QA type -> samples that carry at least one item of it.
        answers_changed: the same as ``answers``, over the samples whose ``has_change`` answer
            is 'yes' (tiles without change can only answer 'no' to class questions).
    """

    samples: int = 0
    items: int = 0
    answers: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    per_sample: Counter[str] = field(default_factory=Counter)
    answers_changed: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def yes_share(self, qa_type: str) -> float | None:
        """Share of 'yes' among the yes/no answers of a type (None when it has none)."""
        c = self.answers.get(qa_type, Counter())
        total = c["yes"] + c["no"]
        return c["yes"] / total if total else None

    def yes_no(self) -> tuple[int, int]:
        """('yes', 'no') counts over every yes/no type together."""
        yes = sum(self.answers.get(t, Counter())["yes"] for t in YES_NO_TYPES)
        no = sum(self.answers.get(t, Counter())["no"] for t in YES_NO_TYPES)
        return yes, no

    def majority_share(self, qa_type: str) -> float:
        """Share of the most frequent answer of a type (1.0 = every answer the same)."""
        c = self.answers.get(qa_type, Counter())
        total = sum(c.values())
        return max(c.values()) / total if total else 0.0


def balance_of(qa_lists: Iterable[list[Mapping[str, Any]]]) -> QABalance:
    """Count the answers of QA lists (one list of ``{type, question, answer, ...}`` per sample)."""
    out = QABalance()
    for qa in qa_lists:
        out.samples += 1
        seen = set()
        changed = any(
            q["type"] == "has_change" and str(q["answer"]).strip().lower() == "yes" for q in qa
        )
        for item in qa:
            kind, answer = str(item["type"]), str(item["answer"]).strip().lower()
            out.answers[kind][answer] += 1
            if changed:
                out.answers_changed[kind][answer] += 1
            out.items += 1
            seen.add(kind)
        out.per_sample.update(seen)
    return out


def qa_balance(release_dir: str | Path) -> QABalance:
    """Answer balance of every sample in a release's shards (reads the ``qa.json`` members).

    Raises:
        ReleaseError: a shard is not a readable tar, or a ``qa.json`` member does not decode;
            names the shard.
    """
    shards = shard_files(release_dir)

    def lists() -> Iterable[list[Mapping[str, Any]]]:
        for shard in shards:
            try:
                for key, members in iter_tar_samples(shard):
                    if "qa.json" in members:
                        yield decode_member("qa.json", members["qa.json"], key=key)
            except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
                raise ReleaseError(
                    f"shard {shard} cannot be read ({exc}); rebuild the release or restore the "
                    "file (geodelta verify lists every damaged file)",
                    path=str(shard),
                ) from None

    return balance_of(lists())


def format_balance(b: QABalance, *, top: int = 6) -> str:
    """A Markdown report: yes/no shares, then the answer distribution of each type."""
    yes, no = b.yes_no()
    lines = [
        f"QA balance over {b.samples} samples, {b.items} items",
        "",
        f"All yes/no answers: yes {yes}, no {no}"
        + (f" (yes share {yes / (yes + no):.2f})" if yes + no else ""),
        "",
        "| type | samples with it | items | answers (count) | majority share |",
        "|---|---:|---:|---|---:|",
    ]
    changed = b.answers_changed
    parts = [
        f"{t} yes {changed[t]['yes']} / no {changed[t]['no']}"
        for t in CLASS_TREND_QA_TYPES
        if t in changed
    ]
    if parts:
        lines[3:3] = ["", "On tiles with change: " + "; ".join(parts)]
    for kind in sorted(b.answers):
        c = b.answers[kind]
        shown = ", ".join(f"{a} ({n})" for a, n in c.most_common(top))
        if len(c) > top:
            shown += f", ... {len(c) - top} more"
        lines.append(
            f"| {kind} | {b.per_sample[kind]} | {sum(c.values())} | {shown} | "
            f"{b.majority_share(kind):.2f} |"
        )
    return "\n".join(lines) + "\n"
