"""The image-pair side of the reference model's text-to-pair retrieval (a small dual encoder).

The text side is a FROZEN sentence encoder (all-MiniLM-L6-v2, 384-d, L2-normalised; see
:mod:`geodelta.pipelines.training.reference`); only the image-pair side trains here. :class:`PairEncoder`
takes the 8-bit true-colour renderings of both dates (``before.png``, ``after.png``, scaled to
[0, 1]) and stacks before, after and after - before (9 channels). Four 3x3 convolutions (batch
norm, ReLU; the first three with stride 2) give a feature map at 1/8 of the input size, pooled
two ways: an average over a 3x3 grid (so the embedding keeps WHERE the change is: the captions
say "in the north-west") and a global maximum (so a small change is not averaged away). A
linear layer projects both to the text encoder's width and the result is L2-normalised.

Training (:func:`fit_pair_encoder`) minimises the symmetric InfoNCE loss (CLIP's) between the
pair embeddings of a batch and one caption embedding per pair, with a learned temperature.
Weights are saved under their content hash (:func:`save_pair_encoder`), like the change model.

This module imports torch; nothing imports it at package import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geodelta.annotators.models._torch import F, nn, torch
from geodelta.annotators.models.change_model import (
    load_checkpoint,
    train_epochs,
    write_checkpoint,
)

__all__ = [
    "ARCHITECTURE",
    "PairBatch",
    "PairEncoder",
    "SavedPairEncoder",
    "embed_pairs",
    "fit_pair_encoder",
    "info_nce",
    "load_pair_encoder",
    "save_pair_encoder",
]

#: Name recorded in the card and in reference/metrics.json.
ARCHITECTURE = "pair-encoder-cnn"
#: Grid the feature map is average-pooled to (keeps the 3x3 position words apart).
_GRID = 3
#: Largest logit scale (CLIP clips at 100).
_MAX_LOGIT_SCALE = math.log(100.0)

#: A training batch: before (N,3,H,W), after (N,3,H,W) in [0, 1], text embeddings (N, D).
PairBatch = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class PairEncoder(nn.Module):
    """Embeds a (before, after) image pair into the text encoder's space (module docstring).

    Args:
        in_channels: channels of one date (3 for the RGB renderings).
        width: channels of the first convolution (x1, x2, x4, x4 after it).
        embed_dim: output width (the text encoder's, 384 for all-MiniLM-L6-v2).
        downsample: average-pool the input by this factor first (1 = none; 2 is a quarter of
            the cost, but scored lower on the demo: R@5 0.78 against 0.85).
    """

    def __init__(
        self, in_channels: int = 3, width: int = 16, embed_dim: int = 384, downsample: int = 1
    ) -> None:
        super().__init__()
        if min(in_channels, width, embed_dim, downsample) < 1:
            raise ValueError(
                f"need in_channels, width, embed_dim, downsample >= 1 (actual {in_channels}, "
                f"{width}, {embed_dim}, {downsample})"
            )
        self.in_channels = in_channels
        self.width = width
        self.embed_dim = embed_dim
        self.downsample = downsample
        c = 3 * in_channels
        self.features = nn.Sequential(
            nn.BatchNorm2d(c),
            _block(c, width, 2),
            _block(width, 2 * width, 2),
            _block(2 * width, 4 * width, 2),
            _block(4 * width, 4 * width, 1),
        )
        self.project = nn.Linear(4 * width * (_GRID * _GRID + 1), embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """(N, D) L2-normalised embeddings of (N, C, H, W) before/after images in [0, 1]."""
        if before.shape != after.shape or before.ndim != 4 or before.shape[1] != self.in_channels:
            raise ValueError(
                f"before/after must be (N, {self.in_channels}, H, W) of one shape (actual "
                f"{tuple(before.shape)}, {tuple(after.shape)})"
            )
        x = torch.cat([before, after, after - before], dim=1)
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample, ceil_mode=True)
        x = self.features(x)
        grid = F.adaptive_avg_pool2d(x, _GRID).flatten(1)
        peak = torch.amax(x, dim=(2, 3))
        return F.normalize(self.project(torch.cat([grid, peak], dim=1)), dim=1)

    def scale(self) -> torch.Tensor:
        """The logit scale (inverse temperature), clipped at 100."""
        return self.logit_scale.clamp(max=_MAX_LOGIT_SCALE).exp()

    def hparams(self) -> dict[str, Any]:
        """Constructor arguments (stored with the weights)."""
        return {
            "in_channels": self.in_channels,
            "width": self.width,
            "embed_dim": self.embed_dim,
            "downsample": self.downsample,
        }


def info_nce(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: pair i should match caption i among the batch's captions and back.

    Args:
        image: (N, D) L2-normalised pair embeddings.
        text: (N, D) L2-normalised caption embeddings (caption i describes pair i).
        scale: logit scale (inverse temperature).

    Returns:
        The mean of the image->text and text->image cross-entropies (a scalar).
    """
    logits = scale * image @ text.T
    target = torch.arange(image.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@dataclass
class PairTrainResult:
    """What :func:`fit_pair_encoder` did."""

    losses: list[float]
    batches: int


def fit_pair_encoder(
    model: PairEncoder,
    batches: Callable[[int], Iterable[PairBatch]],
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 1e-4,
    on_epoch: Callable[[int, float], None] | None = None,
) -> PairTrainResult:
    """Train ``model`` in place with :func:`info_nce` (AdamW).

    Args:
        model: the network.
        batches: ``epoch -> iterable of (before, after, caption embedding)`` batches.
        epochs: passes over the data.
        lr: learning rate.
        weight_decay: AdamW weight decay.
        on_epoch: called with ``(epoch, mean loss)``.

    Returns:
        Mean loss per epoch and the number of batches (batches of one pair are skipped: the
        loss needs a negative).

    Raises:
        ValueError: an epoch had no batch of at least two pairs.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def loss_of(batch: PairBatch) -> torch.Tensor | None:
        before, after, text = batch
        if before.shape[0] < 2:
            return None
        return info_nce(model(before.float(), after.float()), text.float(), model.scale())

    losses, count = train_epochs(
        model,
        opt,
        batches,
        epochs,
        loss_of,
        on_epoch=on_epoch,
        empty="had no batch of two or more pairs; is the data empty?",
    )
    return PairTrainResult(losses=losses, batches=count)


@torch.no_grad()
def embed_pairs(
    model: PairEncoder,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    batch_size: int = 32,
) -> np.ndarray:
    """(N, D) float32 embeddings of ``(before, after)`` (C, H, W) images in [0, 1]."""
    model.eval()
    out = [np.zeros((0, model.embed_dim), np.float32)]
    for k in range(0, len(pairs), batch_size):
        chunk = pairs[k : k + batch_size]
        b = torch.from_numpy(np.stack([p[0] for p in chunk]).astype(np.float32))
        a = torch.from_numpy(np.stack([p[1] for p in chunk]).astype(np.float32))
        out.append(model(b, a).numpy().astype(np.float32))
    return np.concatenate(out, axis=0)


@dataclass(frozen=True)
class SavedPairEncoder:
    """Where :func:`save_pair_encoder` put the weights and the card."""

    directory: Path
    weights: Path
    card_json: Path
    sha256: str

    @property
    def model_id(self) -> str:
        """``pair-encoder-cnn@sha256:<hash>``."""
        return f"{ARCHITECTURE}@sha256:{self.sha256}"


def save_pair_encoder(
    model: PairEncoder, out_dir: str | Path, card: dict[str, Any]
) -> SavedPairEncoder:
    """Save weights under their content hash: ``<out_dir>/<sha256[:16]>/{weights.pt,card.json}``.

    Args:
        model: the trained network.
        out_dir: parent folder.
        card: card fields (data, training, text encoder); architecture, hyper-parameters,
            sha256 and model id are added here.

    Returns:
        The paths and the hash.
    """
    folder, weights, card_json, digest, _ = write_checkpoint(
        model, ARCHITECTURE, model.hparams(), out_dir, card
    )
    return SavedPairEncoder(folder, weights, card_json, digest)


def load_pair_encoder(path: str | Path) -> tuple[PairEncoder, dict[str, Any]]:
    """Load weights saved by :func:`save_pair_encoder` and check their content hash.

    Args:
        path: the ``weights.pt`` file or its folder.

    Returns:
        ``(model in eval mode, card)``; the card is ``{}`` when ``card.json`` is missing.

    Raises:
        FileNotFoundError: no weights there.
        ModelIntegrityError: not a pair-encoder file, or the weights' hash differs from the card's.
    """
    model, card, _ = load_checkpoint(
        path,
        ARCHITECTURE,
        PairEncoder,
        missing="no pair-encoder weights at {weights}",
        foreign=f"not a {ARCHITECTURE} weights file",
    )
    return model, card
