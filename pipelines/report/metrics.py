"""The numbers of the report: validation scores, distances, headline figures, value formatting.

Validation score (per sample, 0..1, lower is worse): the smallest *headroom* the sample has to
any rule limit it had to pass, where a headroom is 1 far from the limit and 0 at the limit:

- ``clear``: ``(min(before_clear, after_clear) - t) / (1 - t)``, ``t = pairing.min_clear_fraction``
  (skipped when both clear fractions are unknown);
- ``valid``: the same with ``min(before_valid, after_valid)`` and ``pairing.min_valid_fraction``;
- ``shift``: ``1 - |(dy, dx)| / validation.max_abs_shift_px``;
- ``residual``: ``1 - residual_px / validation.max_residual_px``.

Each is clipped to [0, 1]; the component that sets the score is shown with it. Every released
sample passed the rules, so a low score means "close to being rejected": those are the samples
a reviewer should look at first.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geodelta.pipelines.report.data import Release, cfg, gx_failed_keys
from geodelta.schemas.config import AnnotationConfig, PairingConfig, ValidationConfig

__all__ = [
    "SampleScore",
    "Signed",
    "caption_words",
    "col",
    "eps",
    "flatten",
    "headline_metrics",
    "ks_distance",
    "mean",
    "median",
    "num",
    "pct",
    "qa_types",
    "release_scores",
    "scalar",
    "shifts",
    "transition_pixels",
    "tv_distance",
    "validation_scores",
    "words",
]

_WORD = re.compile(r"[a-z]+")


# --------------------------------------------------------------------------------------------
# Validation score


@dataclass(frozen=True)
class SampleScore:
    """Validation score of one sample (see the module docstring)."""

    key: str
    score: float
    limit: str
    components: dict[str, float]


def _headroom_fraction(value: float, threshold: float) -> float:
    if threshold >= 1.0:
        return 1.0 if value >= 1.0 else 0.0
    return (value - threshold) / (1.0 - threshold)


def _clip(x: float) -> float:
    return 0.0 if not math.isfinite(x) else min(1.0, max(0.0, x))


def validation_scores(
    rows: Sequence[dict[str, Any]],
    config: dict[str, Any],
    gx_failed: Mapping[str, str] | None = None,
) -> list[SampleScore]:
    """Per-sample validation scores, worst first (ties by key).

    Args:
        rows: rows of ``samples.parquet`` (``key``, clear/valid fractions, shift, residual).
        config: the normalised build config of the release (``manifest.config``); missing keys
            take the config defaults.
        gx_failed: sample key -> name of a Great Expectations expectation its rows failed
            (``unexpected_keys`` of ``validation/summary.json``); such a sample scores 0 with
            that name as its limit.

    Returns:
        One :class:`SampleScore` per row, sorted by ``(score, key)``.
    """
    pairing, val = PairingConfig(), ValidationConfig()
    min_clear = float(cfg(config, "pairing", "min_clear_fraction", pairing.min_clear_fraction))
    min_valid = float(cfg(config, "pairing", "min_valid_fraction", pairing.min_valid_fraction))
    max_shift = float(cfg(config, "validation", "max_abs_shift_px", val.max_abs_shift_px))
    max_res = float(cfg(config, "validation", "max_residual_px", val.max_residual_px))
    out = []
    for r in rows:
        comps: dict[str, float] = {}
        clear = [v for v in (r.get("before_clear"), r.get("after_clear")) if v is not None]
        if clear:
            comps["clear"] = _clip(_headroom_fraction(min(clear), min_clear))
        valid = min(float(r.get("before_valid", 1.0)), float(r.get("after_valid", 1.0)))
        comps["valid"] = _clip(_headroom_fraction(valid, min_valid))
        shift = math.hypot(float(r.get("shift_dy", 0.0)), float(r.get("shift_dx", 0.0)))
        comps["shift"] = _clip(1.0 - shift / max_shift)
        comps["residual"] = _clip(1.0 - float(r.get("residual_px", 0.0)) / max_res)
        key = str(r["key"])
        if gx_failed and key in gx_failed:
            comps[gx_failed[key]] = 0.0
        limit = min(comps, key=lambda k: comps[k])  # first minimum in the fixed order above
        out.append(SampleScore(key, comps[limit], limit, comps))
    return sorted(out, key=lambda s: (s.score, s.key))


def release_scores(rel: Release) -> list[SampleScore]:
    """:func:`validation_scores` of a release, with the samples its GX summary names."""
    return validation_scores(rel.rows, rel.config, gx_failed_keys(rel.gx_summary))


# --------------------------------------------------------------------------------------------
# Statistics


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two ECDFs.

    Returns NaN when either sample is empty.
    """
    x = np.sort(np.asarray(a, dtype=float))
    y = np.sort(np.asarray(b, dtype=float))
    if x.size == 0 or y.size == 0:
        return float("nan")
    grid = np.concatenate([x, y])
    fx = np.searchsorted(x, grid, side="right") / x.size
    fy = np.searchsorted(y, grid, side="right") / y.size
    return float(np.max(np.abs(fx - fy)))


def tv_distance(p: dict[str, float], q: dict[str, float]) -> float:
    """Total variation distance between two categorical distributions given as counts.

    ``0.5 * sum |p_i - q_i|`` after normalising each to sum 1; NaN when either is empty.
    """
    sp, sq = sum(p.values()), sum(q.values())
    if sp <= 0 or sq <= 0:
        return float("nan")
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0) / sp - q.get(k, 0) / sq) for k in keys)


def words(text: str) -> list[str]:
    """The lower-case words of a caption (runs of a-z)."""
    return _WORD.findall(text.lower())


def eps(config: dict[str, Any]) -> float:
    """``annotation.no_change_epsilon``: the changed fraction at or below which is no change."""
    return float(
        cfg(config, "annotation", "no_change_epsilon", AnnotationConfig().no_change_epsilon)
    )


def col(rows: Sequence[dict[str, Any]], name: str) -> list[float]:
    """The non-null values of one column, as floats."""
    return [float(r[name]) for r in rows if r.get(name) is not None]


def shifts(rows: Sequence[dict[str, Any]]) -> list[float]:
    """|shift| in pixels per row."""
    return [math.hypot(float(r["shift_dy"]), float(r["shift_dx"])) for r in rows]


def caption_words(rel: Release) -> list[float]:
    """Words per caption, over every caption of the release."""
    return [float(len(words(c))) for s in rel.samples.values() for c in s.captions]


def transition_pixels(rel: Release) -> Counter[str]:
    """Changed pixels per ``from -> to`` transition."""
    c: Counter[str] = Counter()
    for s in rel.samples.values():
        for a, b, px, _ in s.transitions:
            c[f"{a} -> {b}"] += px
    return c


def qa_types(rel: Release) -> Counter[str]:
    """QA items per type."""
    return Counter(t for s in rel.samples.values() for t, _ in s.qa)


def mean(xs: Sequence[float]) -> float:
    """The mean, NaN when empty."""
    return float(np.mean(xs)) if len(xs) else float("nan")


def median(xs: Sequence[float]) -> float:
    """The median, NaN when empty."""
    return float(np.median(xs)) if len(xs) else float("nan")


def headline_metrics(rel: Release, scores: Sequence[SampleScore]) -> dict[str, float]:
    """Headline figures of a release (the rows of the diff's metric-delta table)."""
    m = rel.manifest
    rows = rel.rows
    no_change = eps(rel.config)
    cf = col(rows, "changed_fraction")
    caps = [c for s in rel.samples.values() for c in s.captions]
    vocab = {w for c in caps for w in words(c)}
    qa = [a for s in rel.samples.values() for a in s.qa]
    has_change = [ans for t, ans in qa if t == "has_change"]
    out: dict[str, float] = {
        "samples": float(sum(m.splits.values())),
    }
    for split, n in sorted(m.splits.items()):
        out[f"split {split}"] = float(n)
    out |= {
        "quarantined": float(sum(m.quarantined.values())),
        "shards": float(len(m.shards)),
        "cells": float(len({r["cell_id"] for r in rows})),
        "changed fraction: mean": mean(cf),
        "changed fraction: median": median(cf),
        "no-change samples (share)": mean([1.0 if x <= no_change else 0.0 for x in cf]),
        "change regions per sample: mean": mean(col(rows, "n_regions")),
        "time gap (days): median": median(col(rows, "gap_days")),
        "|shift| (px): mean": mean(shifts(rows)),
        "residual (px): mean": mean(col(rows, "residual_px")),
        "co-registration applied (share)": mean(
            [1.0 if r.get("coreg_applied") else 0.0 for r in rows]
        ),
        "captions per sample: mean": mean(col(rows, "n_captions")),
        "caption words: mean": mean(caption_words(rel)),
        "caption vocabulary (distinct words)": float(len(vocab)),
        "distinct captions (share)": len(set(caps)) / len(caps) if caps else float("nan"),
        "QA per sample: mean": mean(col(rows, "n_qa")),
        "has_change answered 'yes' (share)": mean([1.0 if a == "yes" else 0.0 for a in has_change]),
        "validation score: mean": mean([s.score for s in scores]),
        "validation score: min": min((s.score for s in scores), default=float("nan")),
        "LLM tokens": float(sum(int(r.get("tokens_in", 0) + r.get("tokens_out", 0)) for r in rows)),
        "LLM cost (USD)": float(sum(float(r.get("cost_usd", 0.0)) for r in rows)),
    }
    return out


# --------------------------------------------------------------------------------------------
# Values as text


def num(x: float) -> str:
    """A number for a table cell: integers as such, others with 4 significant digits, NaN –."""
    if isinstance(x, float) and not math.isfinite(x):
        return "–"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4g}"


def pct(x: float) -> str:
    """A share as a percentage with one decimal, NaN –."""
    return "–" if not math.isfinite(x) else f"{100.0 * x:.1f}%"


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as ``(dotted.key, value)`` pairs, keys sorted."""
    if isinstance(value, dict):
        out = []
        for k in sorted(value, key=str):
            out += flatten(value[k], f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, value)]


def scalar(value: Any) -> str:
    """A value of a JSON file as short text (lists and dicts as JSON, cut at 120 characters)."""
    if isinstance(value, float):
        return num(value)
    if isinstance(value, str | int | bool) or value is None:
        return str(value)
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class Signed:
    """A delta for display: its text with a sign and its class (``pos``, ``neg``, ``muted``)."""

    text: str
    cls: str

    @classmethod
    def of(cls, x: float) -> Signed | None:
        """The delta ``x``, or ``None`` (a dash) when it is not finite."""
        if not math.isfinite(x):
            return None
        kind = "pos" if x > 0 else "neg" if x < 0 else "muted"
        return cls(f"{'+' if x > 0 else ''}{num(x)}", kind)
