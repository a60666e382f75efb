"""The baseline change model trained and scored on a release's shards.

- :func:`train_from_shards` reads a release's WebDataset shards (``before.tif``, ``after.tif``,
  ``mask.png``, ``json``) through a torch ``DataLoader`` (a webdataset pipeline, shards split
  by node and by worker), trains FC-Siam-diff (:mod:`geodelta.annotators.models.change_model`) and
  saves the weights under their content hash with a model card naming the release (name,
  version, config hash, shard checksums) and the metrics on the held-out splits.
- :func:`evaluate_on_shards` scores weights on one split of a release.
- Fusing a sample's mask with the model is a stage: :mod:`geodelta.pipelines.stages.fuse`.

Reflectance is recovered from the shard's DN with the ``json``'s ``dn_scale``/``dn_offset``
(DN 0 = no data). A pixel changed when ``mask.png > 0``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
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

if TYPE_CHECKING:
    from geodelta.annotators.models.change_model import SavedModel, TrainConfig

__all__ = [
    "ShardSet",
    "decode_sample",
    "evaluate_on_shards",
    "find_shards",
    "iter_samples",
    "train_from_shards",
]


class ShardError(ValueError):
    """Shards that cannot be used for training or evaluation; says what was looked for."""


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """The shards of one split of a release, and what the release says about itself."""

    urls: tuple[str, ...]
    split: str
    manifest: dict[str, Any] | None

    def describe(self) -> dict[str, Any]:
        """Data version for a model card: release name, version, config hash, shard sums."""
        m = self.manifest or {}
        sums = {s["path"]: s["sha256"] for s in m.get("shards", [])}
        samples = {s["path"]: s["samples"] for s in m.get("shards", [])}
        shards = []
        for url in self.urls:
            rel = f"shards/{Path(url).name}"
            shards.append({"path": rel, "sha256": sums.get(rel), "samples": samples.get(rel)})
        return {
            "name": m.get("name"),
            "version": m.get("version"),
            "config_hash": m.get("config_hash"),
            "code_version": m.get("code_version"),
            "split": self.split,
            "samples": sum(s["samples"] or 0 for s in shards) if m else None,
            "shards": shards,
        }


def find_shards(path: str | Path, split: str) -> ShardSet:
    """The ``{split}-*.tar`` shards under a release folder, its ``shards/`` folder, or a folder.

    Args:
        path: a release folder (holds ``manifest.json`` and ``shards/``) or a folder of tars.
        split: ``train``, ``val`` or ``test``.

    Returns:
        The shards (sorted; possibly none) and the release manifest when there is one.

    Raises:
        ShardError: ``path`` is not a folder.
    """
    p = Path(path)
    if not p.is_dir():
        raise ShardError(f"{p} is not a folder; pass a release folder or its shards/ folder")
    folder = p / "shards" if (p / "shards").is_dir() else p
    manifest = None
    for candidate in (p / "manifest.json", folder.parent / "manifest.json"):
        if candidate.exists():
            manifest = json.loads(candidate.read_text())
            break
    urls = tuple(str(u) for u in sorted(folder.glob(f"{split}-*.tar")))
    return ShardSet(urls=urls, split=split, manifest=manifest)


def _read_tif(data: bytes, scale: float, offset: float) -> np.ndarray:
    import rasterio

    with rasterio.MemoryFile(data) as mf, mf.open() as ds:
        dn = ds.read()
    out = dn.astype(np.float32) * np.float32(scale) + np.float32(offset)
    out[dn == 0] = np.nan
    return out


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A raw webdataset sample (member -> bytes) as arrays.

    Returns:
        ``{"key", "bands", "before", "after", "target"}``: (C, H, W) float32 reflectance (NaN =
        no data), (H, W) uint8 target (1 = changed, from ``mask.png > 0``).
    """
    from PIL import Image

    meta = json.loads(sample["json"])
    scale, offset = float(meta["dn_scale"]), float(meta["dn_offset"])
    mask = np.asarray(Image.open(io.BytesIO(sample["mask.png"])))
    return {
        "key": sample["__key__"],
        "bands": tuple(meta["bands"]),
        "before": _read_tif(sample["before.tif"], scale, offset),
        "after": _read_tif(sample["after.tif"], scale, offset),
        "target": (mask > 0).astype(np.uint8),
    }


def iter_samples(urls: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Decoded samples of some shards, in shard order, in this process."""
    import webdataset as wds

    dataset = wds.WebDataset(list(urls), shardshuffle=False, empty_check=False)
    for raw in dataset:
        yield decode_sample(raw)


def _sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{epoch}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _to_example(
    raw: dict[str, Any], *, patch: int | None, augment: bool, seed: int, epoch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One training example: crop, flips/rotations (seeded per sample and epoch), NaN -> 0."""
    s = decode_sample(raw)
    before, after, target = s["before"], s["after"], s["target"]
    rng = _sample_rng(seed, epoch, s["key"])
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


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # one core per loader worker


def epoch_loader(
    urls: Sequence[str],
    *,
    seed: int,
    epoch: int,
    shuffle_buffer: int,
    batch_size: int,
    workers: int,
    to_example: Callable[[dict[str, Any]], Any],
) -> Any:
    """A torch DataLoader over shards for one epoch (shared by every geodelta training loop).

    A webdataset pipeline: the shard list shuffled with ``seed + epoch``, shards split by node
    (rank) and by worker, a seeded shuffle buffer of ``shuffle_buffer`` samples, ``to_example``
    (decoding, augmentation) in the workers. Deterministic for a given seed, epoch and number
    of workers.
    """
    import torch
    import webdataset as wds

    order = list(urls)
    random.Random(seed * 100_003 + epoch).shuffle(order)
    dataset = (
        wds.WebDataset(
            order,
            shardshuffle=False,
            nodesplitter=wds.split_by_node,
            workersplitter=wds.split_by_worker,
            empty_check=False,
        )
        .shuffle(shuffle_buffer, rng=random.Random(seed * 7919 + epoch))
        .map(to_example)
    )
    n_workers = min(workers, len(order))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=n_workers,
        worker_init_fn=_worker_init if n_workers else None,
    )


def make_loader(urls: Sequence[str], cfg: TrainConfig, epoch: int) -> Any:
    """The change model's DataLoader for one epoch (:func:`epoch_loader` over ``_to_example``)."""
    return epoch_loader(
        urls,
        seed=cfg.seed,
        epoch=epoch,
        shuffle_buffer=cfg.shuffle_buffer,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        to_example=partial(
            _to_example, patch=cfg.patch, augment=cfg.augment, seed=cfg.seed, epoch=epoch
        ),
    )


def evaluate_on_shards(
    annotator: BaselineChangeAnnotator, urls: Sequence[str], *, threshold: float = 0.5
) -> ChangeMetrics:
    """Score a model on shards: change-class metrics over all pixels valid on both dates."""
    counts = np.zeros(4, np.int64)
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        probs = annotator.run_inference([(s["before"], s["after"]) for s in batch])
        for s, prob in zip(batch, probs, strict=True):
            valid = np.isfinite(s["before"]).all(axis=0) & np.isfinite(s["after"]).all(axis=0)
            m = change_metrics(prob >= threshold, s["target"] > 0, valid)
            counts[:] += (m.tp, m.fp, m.fn, m.tn)
        batch.clear()

    for sample in iter_samples(urls):
        batch.append(sample)
        if len(batch) == annotator.batch_size:
            flush()
    if batch:
        flush()
    tp, fp, fn, tn = (int(c) for c in counts)
    pred = np.r_[np.ones(tp + fp, bool), np.zeros(fn + tn, bool)]
    target = np.r_[np.ones(tp, bool), np.zeros(fp, bool), np.ones(fn, bool), np.zeros(tn, bool)]
    return change_metrics(pred, target)


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
    first = next(iter_samples(train.urls[:1]), None)
    if first is None:
        raise ShardError(f"{train.urls[0]} holds no samples")
    bands = first["bands"]
    seed_everything(cfg.seed)
    model = FCSiamDiff(len(bands), base_channels=cfg.base_channels, dropout=cfg.dropout)
    result = fit(model, partial(make_loader, train.urls, cfg), cfg, on_epoch=on_epoch)

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
