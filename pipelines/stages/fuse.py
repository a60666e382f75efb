"""Fuse a labelled sample's mask with the baseline change model's probabilities.

The label stage's use of the model (:mod:`geodelta.annotators.models.baseline`): the fused mask
is cleaned of small regions and the facts are recomputed from it, so facts, mask and captions
keep agreeing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from geodelta.annotators.models.baseline import (
    BaselineChangeAnnotator,
    FusionMode,
    change_metrics,
    fuse_masks,
)
from geodelta.pipelines.stages.label import LabelError, clean_mask, compute_facts, pixel_area
from geodelta.pipelines.stages.sample import BaselineResult, Sample
from geodelta.schemas import BuildConfig

__all__ = ["fuse_sample", "fuse_with_model"]


def fuse_with_model(sample: Sample, model: BaselineChangeAnnotator, cfg: BuildConfig) -> Sample:
    """Run the baseline change model on a labelled sample and fuse its mask (config ``baseline``).

    Args:
        sample: a sample after the label source (``mask``, ``facts`` and ``valid`` set).
        model: the worker's baseline change model (weights load on first use).
        cfg: the build config (``baseline``, ``imagery.bands``, ``labels.min_region_px``).

    Returns:
        A copy with the fused ``mask``, its ``facts`` and ``baseline`` set (:func:`fuse_sample`).
    """
    b = cfg.baseline
    model.check_bands(cfg.imagery.bands)
    (prob,) = model.run_inference([(sample.before, sample.after)])
    return fuse_sample(
        sample,
        prob,
        model_id=model.model_id,
        mode=b.fusion,
        threshold=b.threshold,
        min_region_px=cfg.labels.min_region_px,
    )


def fuse_sample(
    sample: Sample,
    prob: np.ndarray,
    *,
    model_id: str,
    mode: FusionMode,
    threshold: float,
    min_region_px: int,
) -> Sample:
    """Fuse a labelled sample's mask with the model's change probabilities.

    The fused mask is cleaned of regions smaller than ``min_region_px`` and the facts are
    recomputed from it, so facts, mask and captions keep agreeing.

    Args:
        sample: a sample after the label stage (``mask``, ``facts`` and ``valid`` set).
        prob: (H, W) change probability of the sample.
        model_id: the model's id (recorded).
        mode: ``none`` | ``intersect`` | ``union``.
        threshold: the model sees change where ``prob >= threshold``.
        min_region_px: ``labels.min_region_px``.

    Returns:
        A copy with the fused ``mask``, its ``facts`` and ``baseline`` set.
    """
    if sample.mask is None or sample.facts is None or sample.valid is None:
        raise LabelError("fusion needs a labelled sample (mask, facts, valid)", key=sample.key)
    valid = sample.valid
    label_change = sample.mask > 0
    model_change = (prob >= threshold) & valid
    iou = change_metrics(model_change, label_change, valid).iou
    if not label_change.any() and not model_change.any():
        iou = 1.0
    record = BaselineResult(
        model_id=model_id, fusion=mode, threshold=threshold, prob=prob, iou=float(iou)
    )
    if mode == "none":
        return dataclasses.replace(sample, baseline=record)
    fused = clean_mask(
        fuse_masks(sample.mask, prob, threshold=threshold, mode=mode, valid=valid), min_region_px
    )
    binary = sample.facts.binary
    facts = compute_facts(
        fused,
        valid,
        pixel_area_m2=pixel_area(sample),
        min_region_px=min_region_px,
        binary=binary,
        lc_before=None if binary else sample.lc_before,
        lc_after=None if binary else sample.lc_after,
    )
    return dataclasses.replace(sample, mask=fused, facts=facts, baseline=record)
