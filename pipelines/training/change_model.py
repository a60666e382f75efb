"""The baseline change model trained and scored on a release's shards.

- :func:`train_from_shards` reads a release's WebDataset shards (``before.tif``, ``after.tif``,
  ``mask.png``, ``json``) through a torch ``DataLoader`` (:func:`~.shards.epoch_loader`: shards
  split by node and by worker), trains FC-Siam-diff
  (:mod:`geodelta.annotators.models.change_model`) and saves the weights under their content
  hash with a model card naming the release (name, version, config hash, shard checksums) and
  the metrics on the held-out splits.
- :func:`evaluate_on_shards` scores weights on some shards of a release
  (:func:`predict_on_shards`: the model's probabilities, sample by sample).
- Fusing a sample's mask with the model is a stage: :mod:`geodelta.pipelines.stages.fuse`.

Samples are decoded by :mod:`geodelta.data` (:func:`~.shards.change_sample`): reflectance from
the shard's DN with the ``json``'s ``dn_scale``/``dn_offset`` (DN 0 = no data); a pixel changed
when ``mask.png > 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geodelta.annotators.models.baseline import (
    BaselineChangeAnnotator,
    ChangeMetrics,
    change_metrics,
)
from geodelta.errors import ModelError
from geodelta.pipelines.training.shards import (
    ShardError,
    change_sample,
    epoch_loader,
    find_shards,
    iter_change_samples,
    sample_seed,
)

if TYPE_CHECKING:
    from geodelta.annotators.models.change_model import SavedModel, TrainConfig

__all__ = ["evaluate_on_shards", "make_loader", "predict_on_shards", "train_from_shards"]


def _to_example(
    raw: dict[str, Any], *, patch: int | None, augment: bool, seed: int, epoch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One training example: crop, flips/rotations (seeded per sample and epoch), NaN -> 0."""
    s = change_sample(raw)
    before, after, target = s["before"], s["after"], s["target"]
    rng = np.random.default_rng(sample_seed(seed, epoch, s["key"]))
    _, h, w = before.shape
    if patch is not None and (h > patch or w > patch):
        ph, pw = min(patch, h), min(patch, w)
        r0 = int(rng.integers(0, h - ph + 1))
        c0 = int(rng.integers(0, w - pw + 1))
        before = before[:, r0 : r0 + ph, c0 : c0 + pw]
        after = after[:, r0 : r0 + ph, c0 : c0 + pw]
        target = target[r0 : r0 + ph, c0 : c0 + pw]
    valid = np.isfinite(before).all(axis=0) & np.isfinite(after).all(axis=0)
    if augment:
        k = int(rng.integers(0, 4))
        flip = bool(rng.integers(0, 2))
        before, after = np.rot90(before, k, axes=(1, 2)), np.rot90(after, k, axes=(1, 2))
        target, valid = np.rot90(target, k), np.rot90(valid, k)
        if flip:
            before, after = before[:, :, ::-1], after[:, :, ::-1]
            target, valid = target[:, ::-1], valid[:, ::-1]

    def clean(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.where(np.isfinite(a), a, 0.0).astype(np.float32))

    return (
        clean(before),
        clean(after),
        np.ascontiguousarray(target.astype(np.float32)),
        np.ascontiguousarray(valid.astype(np.float32)),
    )


def make_loader(urls: Sequence[str], cfg: TrainConfig, epoch: int) -> Any:
    """The change model's DataLoader for one epoch (:func:`~.shards.epoch_loader`).

    Args:
        urls: the training shards.
        cfg: training settings (seed, batch, workers, shuffle buffer, crop, augmentation).
        epoch: the epoch (0-based).

    Returns:
        A DataLoader of ``(before, after, target, valid)`` float32 batches.
    """
    return epoch_loader(
        urls,
        cfg,
        epoch,
        partial(_to_example, patch=cfg.patch, augment=cfg.augment, seed=cfg.seed, epoch=epoch),
    )


def predict_on_shards(
    annotator: BaselineChangeAnnotator, urls: Sequence[str]
) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    """The model's change probability for every sample of some shards, in shard order.

    Samples go through the model in batches of ``annotator.batch_size``.

    Args:
        annotator: the model, with its batch size.
        urls: shard paths (read in this order).

    Yields:
        ``(sample, probability, valid)``: the :func:`~.shards.change_sample`, the (H, W)
        probability and the (H, W) pixels valid on both dates.
    """
    batch: list[dict[str, Any]] = []

    def flush() -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
        probs = annotator.run_inference([(s["before"], s["after"]) for s in batch])
        for s, prob in zip(batch, probs, strict=True):
            valid = np.isfinite(s["before"]).all(axis=0) & np.isfinite(s["after"]).all(axis=0)
            yield s, prob, valid
        batch.clear()

    for sample in iter_change_samples(urls):
        batch.append(sample)
        if len(batch) == annotator.batch_size:
            yield from flush()
    if batch:
        yield from flush()


def evaluate_on_shards(
    annotator: BaselineChangeAnnotator, urls: Sequence[str], *, threshold: float = 0.5
) -> ChangeMetrics:
    """Score a model on shards: change-class metrics over all pixels valid on both dates.

    Args:
        annotator: the model, with its batch size.
        urls: shard paths (read in this order).
        threshold: probability at or above which a pixel is predicted changed.

    Returns:
        The metrics over every pixel of every sample (counts summed, then the ratios).
    """
    counts = np.zeros(4, np.int64)
    for s, prob, valid in predict_on_shards(annotator, urls):
        m = change_metrics(prob >= threshold, s["target"] > 0, valid)
        counts[:] += (m.tp, m.fp, m.fn, m.tn)
    tp, fp, fn, tn = (int(c) for c in counts)
    pred = np.r_[np.ones(tp + fp, bool), np.zeros(fn + tn, bool)]
    target = np.r_[np.ones(tp, bool), np.zeros(fp, bool), np.ones(fn, bool), np.zeros(tn, bool)]
    return change_metrics(pred, target)


def torch_device(name: str) -> Any:
    """The torch device ``cpu``, ``cuda`` or ``auto`` names (``auto``: CUDA when present).

    Raises:
        ModelError: ``cuda`` where torch sees no CUDA device, or an unknown name.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda: torch sees no CUDA device here; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ModelError(f"--device {name}: use cpu, cuda or auto")
    return torch.device(name)


def train_from_shards(
    shards: str | Path,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    split: str = "train",
    eval_splits: Sequence[str] = ("val", "test"),
    threshold: float = 0.5,
    code_version: str = "",
    on_epoch: Callable[[int, float], None] | None = None,
    device: str = "cpu",
) -> tuple[SavedModel, dict[str, dict[str, Any]]]:
    """Train the baseline change model on a release and save it with its card.

    Args:
        shards: release folder (or its ``shards/`` folder).
        out_dir: parent folder of the saved model (``<out_dir>/<sha256[:16]>/``).
        cfg: training settings.
        split: split to train on.
        eval_splits: splits scored after training (those without shards are skipped).
        threshold: probability threshold of the metrics.
        code_version: geodelta version (for the card).
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when present) for training; the model is
            scored and saved from the CPU either way.
        on_epoch: called with ``(epoch, mean loss)``.

    Returns:
        The saved model and ``split -> metrics``.

    Raises:
        ShardError: no shards of ``split``, or shards whose samples disagree on the bands.
    """
    from geodelta.annotators.models.change_model import (
        FCSiamDiff,
        fit,
        save_model,
        seed_everything,
        train_config_dict,
    )

    train = find_shards(shards, split)
    if not train.urls:
        raise ShardError(
            f"no {split}-*.tar shards under {shards}; pass a release folder (or its shards/ "
            "folder) that has a train split"
        )
    first = next(iter_change_samples(train.urls[:1]), None)
    if first is None:
        raise ShardError(f"{train.urls[0]} holds no samples")
    bands = first["bands"]
    seed_everything(cfg.seed)
    model = FCSiamDiff(len(bands), base_channels=cfg.base_channels, dropout=cfg.dropout)
    model.to(torch_device(device))
    result = fit(model, partial(make_loader, train.urls, cfg), cfg, on_epoch=on_epoch)
    model.to("cpu")

    metrics: dict[str, dict[str, Any]] = {}
    card = {
        "bands": list(bands),
        "tile": cfg.patch,
        "trained_on": train.describe(),
        "training": {
            **train_config_dict(cfg),
            "losses": [round(x, 6) for x in result.losses],
            "batches": result.batches,
        },
        "metrics": metrics,
        "threshold": threshold,
        "code_version": code_version,
    }
    scorer = BaselineChangeAnnotator.from_model(
        model, {"bands": list(bands), "tile": cfg.patch}, batch_size=cfg.batch_size
    )
    for name in eval_splits:
        held_out = find_shards(shards, name)
        if held_out.urls:
            scores = evaluate_on_shards(scorer, held_out.urls, threshold=threshold)
            metrics[name] = {**scores.as_dict(), "threshold": threshold}
    saved = save_model(model, out_dir, card)
    return saved, metrics
