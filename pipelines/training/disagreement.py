"""Disagreement between the reference change model and a release's labels, per sample.

Every sample of every split is scored with the reference change model: a smoothed
``1 - IoU(model change, label change)`` over the pixels valid on both dates
(:data:`DISAGREEMENT_DEFINITION`, :func:`disagreement_score`). The scores become the float
column :data:`DISAGREEMENT_COLUMN` of ``samples.parquet`` and order samples for human review.
Samples of the train split were seen in training: their scores are optimistic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geodelta.pipelines.training.change_model import predict_on_shards
from geodelta.schemas.reference import DisagreementSummary

__all__ = [
    "DISAGREEMENT_COLUMN",
    "DISAGREEMENT_DEFINITION",
    "disagreement_score",
    "disagreement_summary",
    "score_disagreements",
]

#: The samples.parquet column train_reference adds.
DISAGREEMENT_COLUMN = "disagreement"

DISAGREEMENT_DEFINITION = (
    "1 - (|M & L| + s) / (|M | L| + s): M = the reference change model's change at the "
    "threshold, L = label mask > 0, over the pixels valid on both dates, s = {smoothing} x those "
    "pixels (smoothed IoU: stray pixels on an unchanged tile do not score 1; s = 0 is plain "
    "1 - IoU, 0 when both are empty)"
)


def disagreement_score(
    pred: np.ndarray, label: np.ndarray, valid: np.ndarray, *, smoothing: float = 0.0
) -> float:
    """Smoothed ``1 - IoU(pred, label)`` over the ``valid`` pixels.

    ``1 - (|P & L| + s) / (|P | L| + s)`` with ``s = smoothing * (valid pixels)``. With
    ``smoothing = 0`` it is the plain ``1 - IoU`` (0.0 when both are empty). With a small
    positive ``s``, a handful of stray pixels on an unchanged tile no longer scores 1.0 (plain
    IoU ranks 5 false pixels as badly as a missed field) while large disagreements still
    approach ``1 - IoU``. The score is in [0, 1]: 0 = the model and the label agree.

    Args:
        pred: model change (bool or 0/1), (H, W).
        label: label change (bool or 0/1), (H, W).
        valid: pixels that count, (H, W).
        smoothing: ``s`` as a share of the valid pixels (``reference.disagreement_smoothing``).

    Raises:
        ValueError: the shapes differ or ``smoothing`` is negative.
    """
    p = np.asarray(pred).astype(bool)
    t = np.asarray(label).astype(bool)
    v = np.asarray(valid).astype(bool)
    if not p.shape == t.shape == v.shape:
        raise ValueError(f"pred, label, valid shapes differ ({p.shape}, {t.shape}, {v.shape})")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0 (actual {smoothing})")
    s = smoothing * int(v.sum())
    union = int(((p | t) & v).sum()) + s
    if union == 0:
        return 0.0
    return float(1.0 - (int((p & t & v).sum()) + s) / union)


def score_disagreements(
    urls: Sequence[str], scorer: Any, threshold: float, smoothing: float
) -> dict[str, float]:
    """Disagreement of every sample of some shards (in shard order).

    Args:
        urls: shard paths.
        scorer: a :class:`~geodelta.annotators.models.baseline.BaselineChangeAnnotator`.
        threshold: probability at or above which the model calls a pixel changed.
        smoothing: see :func:`disagreement_score`.

    Returns:
        Sample key -> score.
    """
    return {
        s["key"]: disagreement_score(prob >= threshold, s["target"] > 0, valid, smoothing=smoothing)
        for s, prob, valid in predict_on_shards(scorer, urls)
    }


def disagreement_summary(
    scores: dict[str, float], *, smoothing: float, top: int
) -> DisagreementSummary:
    """The definition, count, mean and the ``top`` samples to review (highest score first)."""
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return DisagreementSummary(
        definition=DISAGREEMENT_DEFINITION.format(smoothing=smoothing),
        samples=len(scores),
        mean=float(np.mean(list(scores.values()))) if scores else 0.0,
        top=tuple(k for k, _ in ranked[:top]),
    )
