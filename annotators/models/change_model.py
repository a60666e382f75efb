"""The baseline change model: a Siamese fully-convolutional change detector (FC-Siam-diff).

Architecture after R. Caye Daudt, B. Le Saux, A. Boulch, "Fully Convolutional Siamese Networks
for Change Detection", ICIP 2018: one encoder with shared weights runs on both dates (4 levels of
3x3 conv + batch norm + ReLU + dropout, 2-2-3-3 convolutions, max pooling), and the decoder
(transposed convolutions) is fed at every level with the absolute difference of the two dates'
skip features. One departure from the reference code: the decoder starts from the absolute
difference of the two bottlenecks (the reference starts from the second date's), so the output
is exactly invariant to swapping the dates. Any band count; the input is standardised per
sample, per date and per band inside the model, so no dataset statistics are needed.

Also here: the loss (weighted BCE + soft Dice for the rare change class), the training loop,
tiled batched inference, content-hashed weights and the model card. This module imports torch;
nothing imports it at package import (``geodelta.annotators.models.baseline`` loads it lazily).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from geodelta._io import write_atomic
from geodelta.annotators.models._torch import F, nn, torch
from geodelta.errors import ModelError

__all__ = [
    "ARCHITECTURE",
    "Batch",
    "FCSiamDiff",
    "ModelIntegrityError",
    "SavedModel",
    "TrainConfig",
    "change_loss",
    "fit",
    "load_model",
    "predict_proba",
    "save_model",
    "seed_everything",
    "state_dict_sha256",
    "train_epochs",
]

#: Name recorded in model cards and sample metadata.
ARCHITECTURE = "fc-siam-diff"
#: Spatial size the input is padded to a multiple of (4 poolings).
_MULTIPLE = 16
#: Smallest standard deviation used when standardising a band (reflectance units).
_MIN_STD = 1e-2

#: A network type (what :func:`load_checkpoint` builds).
_M = TypeVar("_M", bound="nn.Module")

#: A training batch: before (N,C,H,W), after (N,C,H,W), target (N,H,W) in {0,1}, valid (N,H,W).
Batch = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]


class ModelIntegrityError(ModelError):
    """Weights whose content does not match their recorded hash, or a file that is not ours."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


def _conv_block(c_in: int, c_out: int, n: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, kernel_size=3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Dropout2d(p=dropout),
        ]
    return nn.Sequential(*layers)


def _decoder_block(c_in: int, c_mid: int, c_out: int, n: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        last = i == n - 1
        layers += [
            nn.Conv2d(c_in if i == 0 else c_mid, c_out if last else c_mid, 3, padding=1),
            nn.BatchNorm2d(c_out if last else c_mid),
            nn.ReLU(inplace=True),
            nn.Dropout2d(p=dropout),
        ]
    return nn.Sequential(*layers)


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Per sample and band: subtract the mean, divide by the std (at least ``_MIN_STD``)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True, unbiased=False).clamp_min(_MIN_STD)
    return (x - mean) / std


class FCSiamDiff(nn.Module):
    """FC-Siam-diff: shared encoder on both dates, decoder fed with ``|skip_t0 - skip_t1|``.

    Args:
        in_channels: bands per date.
        base_channels: width of the first level (16 in the paper); levels are x1, x2, x4, x8.
        dropout: dropout after every convolution (0.2 in the paper).

    ``forward(before, after)`` takes two (N, C, H, W) float tensors of any H, W (padded
    internally to a multiple of 16) and returns (N, 1, H, W) change logits.
    """

    def __init__(self, in_channels: int, base_channels: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        if in_channels < 1 or base_channels < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"need in_channels >= 1, base_channels >= 1, 0 <= dropout < 1 (actual "
                f"{in_channels}, {base_channels}, {dropout})"
            )
        self.in_channels = in_channels
        self.base_channels = base_channels
        self.dropout = dropout
        w = [base_channels * m for m in (1, 2, 4, 8)]
        n = (2, 2, 3, 3)
        self.encoder = nn.ModuleList(
            _conv_block(in_channels if i == 0 else w[i - 1], w[i], n[i], dropout) for i in range(4)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(w[i], w[i], 3, stride=2, padding=1, output_padding=1)
            for i in range(4)
        )
        # level i decodes [up(x), |skip_i diff|] (2*w[i]) down to w[i-1] (level 0: w[0])
        self.decoder = nn.ModuleList(
            _decoder_block(2 * w[i], w[i], w[i - 1] if i > 0 else w[0], n[i], dropout)
            for i in range(4)
        )
        self.head = nn.Conv2d(w[0], 1, kernel_size=1)

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return skips, x

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Change logits (N, 1, H, W) of two (N, C, H, W) stacks."""
        if before.shape != after.shape or before.ndim != 4 or before.shape[1] != self.in_channels:
            raise ValueError(
                f"before/after must both be (N, {self.in_channels}, H, W) (actual "
                f"{tuple(before.shape)}, {tuple(after.shape)})"
            )
        h, w = before.shape[-2:]
        ph, pw = (-h) % _MULTIPLE, (-w) % _MULTIPLE
        x1, x2 = standardise(before), standardise(after)
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            x1 = F.pad(x1, (0, pw, 0, ph), mode=mode)
            x2 = F.pad(x2, (0, pw, 0, ph), mode=mode)
        s1, b1 = self._encode(x1)
        s2, b2 = self._encode(x2)
        x = torch.abs(b1 - b2)
        for i in reversed(range(4)):
            x = self.up[i](x)
            x = torch.cat([x, torch.abs(s1[i] - s2[i])], dim=1)
            x = self.decoder[i](x)
        return self.head(x)[..., :h, :w]

    def hparams(self) -> dict[str, Any]:
        """Constructor arguments (stored with the weights)."""
        return {
            "in_channels": self.in_channels,
            "base_channels": self.base_channels,
            "dropout": self.dropout,
        }


def change_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    *,
    pos_weight: float | None = None,
    max_pos_weight: float = 50.0,
    dice_weight: float = 1.0,
) -> torch.Tensor:
    """Weighted BCE + soft Dice over the valid pixels.

    Args:
        logits: (N, 1, H, W) or (N, H, W) change logits.
        target: (N, H, W), 1 = change.
        valid: (N, H, W), 1 where the pixel counts.
        pos_weight: weight of a changed pixel in the BCE; None = ``#unchanged / #changed`` of
            the batch, clipped to [1, ``max_pos_weight``].
        max_pos_weight: upper bound of the automatic weight.
        dice_weight: weight of the Dice term (0 = weighted BCE only).

    Returns:
        A scalar tensor.
    """
    logits = logits.reshape(target.shape)
    t = target.float()
    v = valid.float()
    n_valid = v.sum().clamp_min(1.0)
    if pos_weight is None:
        pos = (t * v).sum()
        neg = n_valid - pos
        pw = (neg / pos.clamp_min(1.0)).clamp(1.0, max_pos_weight).detach()
    else:
        pw = torch.tensor(float(pos_weight))
    bce = F.binary_cross_entropy_with_logits(logits, t, pos_weight=pw, reduction="none")
    loss = (bce * v).sum() / n_valid
    if dice_weight > 0:
        p = torch.sigmoid(logits) * v
        inter = (p * t * v).sum()
        dice = 1.0 - (2.0 * inter + 1.0) / (p.sum() + (t * v).sum() + 1.0)
        loss = loss + dice_weight * dice
    return loss


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (recorded in the model card).

    Attributes:
        epochs: passes over the data.
        batch_size: samples per batch.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: seed of weights init, shuffling and augmentation.
        base_channels: width of the first level of the network.
        dropout: dropout after every convolution.
        pos_weight: BCE weight of changed pixels; None = per batch from the class ratio.
        dice_weight: weight of the soft Dice term.
        patch: random crop size in pixels (None = whole samples).
        augment: random flips and 90-degree rotations.
        workers: DataLoader worker processes.
        threads: torch intra-op threads in the training process (None = leave as is).
        shuffle_buffer: samples in the loader's shuffle buffer (0 = shard order only).
    """

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    base_channels: int = 16
    dropout: float = 0.2
    pos_weight: float | None = None
    dice_weight: float = 1.0
    patch: int | None = None
    augment: bool = True
    workers: int = 2
    threads: int | None = None
    shuffle_buffer: int = 64

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "base_channels": self.base_channels >= 1,
            "patch": self.patch is None or self.patch >= 8,
            "workers": self.workers >= 0,
            "shuffle_buffer": self.shuffle_buffer >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid training settings {bad}: {self}")


@dataclass
class TrainResult:
    """What :func:`fit` did."""

    losses: list[float] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    """Seed torch's generator (weights init, dropout); CPU kernels are deterministic."""
    torch.manual_seed(seed)


def fit(
    model: FCSiamDiff,
    batches: Callable[[int], Iterable[Batch]],
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place.

    Args:
        model: the network (its weights are the starting point).
        batches: ``epoch -> iterable of (before, after, target, valid)`` tensors.
        cfg: training settings.
        on_epoch: called with ``(epoch, mean loss)`` after every epoch.

    Returns:
        Mean loss per epoch, number of batches, seconds.
    """
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = time.perf_counter()

    device = next(model.parameters()).device  # batches follow the model (CPU or CUDA)

    def loss_of(batch: Batch) -> torch.Tensor:
        before, after, target, valid = (t.to(device) for t in batch)
        logits = model(before.float(), after.float())
        return change_loss(
            logits, target, valid, pos_weight=cfg.pos_weight, dice_weight=cfg.dice_weight
        )

    losses, count = train_epochs(model, opt, batches, cfg.epochs, loss_of, on_epoch=on_epoch)
    return TrainResult(losses, count, time.perf_counter() - start)


def train_epochs(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batches: Callable[[int], Iterable[Any]],
    epochs: int,
    loss_of: Callable[[Any], torch.Tensor | None],
    *,
    on_epoch: Callable[[int, float], None] | None = None,
    empty: str = "had no batches; is the data empty?",
) -> tuple[list[float], int]:
    """The training loop every geodelta model shares: epochs of zero-grad, loss, step.

    Args:
        model: the network (put in train mode per epoch, left in eval mode).
        opt: its optimiser.
        batches: ``epoch -> iterable of batches``.
        epochs: passes over the data.
        loss_of: ``batch -> loss`` (the forward pass), or None to skip the batch.
        on_epoch: called with ``(epoch, mean loss)`` after every epoch.
        empty: the end of the message when an epoch had no batch (``epoch <n> ...``).

    Returns:
        ``(mean loss per epoch, number of batches trained on)``.

    Raises:
        ValueError: an epoch had no batch.
    """
    losses: list[float] = []
    n_batches = 0
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for batch in batches(epoch):
            opt.zero_grad(set_to_none=True)
            loss = loss_of(batch)
            if loss is None:
                continue
            loss.backward()
            opt.step()
            total += float(loss.detach())
            count += 1
        if count == 0:
            raise ValueError(f"epoch {epoch} {empty}")
        losses.append(total / count)
        n_batches += count
        if on_epoch is not None:
            on_epoch(epoch, total / count)
    model.eval()
    return losses, n_batches


def _nan_to_zero(arr: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(arr), arr, 0.0).astype(np.float32)


def _tiles(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


@torch.no_grad()
def predict_proba(
    model: FCSiamDiff,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    batch_size: int = 8,
    tile: int | None = None,
    overlap: float = 0.5,
) -> list[np.ndarray]:
    """Change probabilities of image pairs, in batches.

    Args:
        model: a trained network (switched to eval mode here).
        pairs: ``(before, after)`` (C, H, W) float reflectance arrays; NaN = no data.
        batch_size: pairs (or tiles) per forward pass.
        tile: predict in ``tile`` x ``tile`` windows (the training patch size) overlapping by
            ``overlap`` and average; None = each pair in one pass.
        overlap: fraction of a tile shared with its neighbour.

    Returns:
        One (H, W) float32 array in [0, 1] per pair; 0 where either date has no data.
    """
    model.eval()
    device = next(model.parameters()).device  # inputs follow the model (CPU or CUDA)
    windows: list[tuple[int, int, int, int, int]] = []  # (pair, r0, c0, h, w)
    for i, (b, a) in enumerate(pairs):
        if b.shape != a.shape or b.ndim != 3:
            raise ValueError(
                f"pair {i}: before/after must be (C, H, W) of one shape "
                f"(actual {b.shape}, {a.shape})"
            )
        _, h, w = b.shape
        if tile is None:
            windows.append((i, 0, 0, h, w))
            continue
        stride = max(1, round(tile * (1.0 - overlap)))
        th, tw = min(tile, h), min(tile, w)
        for r0 in _tiles(h, th, stride):
            for c0 in _tiles(w, tw, stride):
                windows.append((i, r0, c0, th, tw))
    sums = [np.zeros(p[0].shape[1:], np.float64) for p in pairs]
    hits = [np.zeros(p[0].shape[1:], np.float64) for p in pairs]
    # group windows of one shape into batches
    by_shape: dict[tuple[int, int], list[tuple[int, int, int, int, int]]] = {}
    for win in windows:
        by_shape.setdefault((win[3], win[4]), []).append(win)
    for group in by_shape.values():
        for k in range(0, len(group), batch_size):
            chunk = group[k : k + batch_size]
            b = np.stack(
                [_nan_to_zero(pairs[i][0][:, r : r + h, c : c + w]) for i, r, c, h, w in chunk]
            )
            a = np.stack(
                [_nan_to_zero(pairs[i][1][:, r : r + h, c : c + w]) for i, r, c, h, w in chunk]
            )
            logits = model(torch.from_numpy(b).to(device), torch.from_numpy(a).to(device))
            prob = torch.sigmoid(logits)[:, 0].cpu().numpy()
            for (i, r, c, h, w), p in zip(chunk, prob, strict=True):
                sums[i][r : r + h, c : c + w] += p
                hits[i][r : r + h, c : c + w] += 1.0
    out = []
    for (b, a), s, n in zip(pairs, sums, hits, strict=True):
        prob = (s / np.maximum(n, 1.0)).astype(np.float32)
        valid = np.isfinite(b).all(axis=0) & np.isfinite(a).all(axis=0)
        out.append(np.where(valid, prob, np.float32(0.0)))
    return out


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of the weights' content: names, dtypes, shapes and raw bytes, in name order.

    Independent of how the file was serialised, so identical weights always hash alike.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class SavedModel:
    """Where :func:`save_model` put the weights and the card."""

    directory: Path
    weights: Path
    card_json: Path
    card_md: Path
    sha256: str

    @property
    def model_id(self) -> str:
        """``fc-siam-diff@sha256:<hash>``: what samples record."""
        return f"{ARCHITECTURE}@sha256:{self.sha256}"


def write_checkpoint(
    model: nn.Module,
    architecture: str,
    hparams: dict[str, Any],
    out_dir: str | Path,
    card: dict[str, Any],
) -> tuple[Path, Path, Path, str, dict[str, Any]]:
    """Save weights under their content hash: ``<out_dir>/<sha256[:16]>/{weights.pt,card.json}``.

    Shared by every geodelta model (the change model, the reference pair encoder).

    Returns:
        ``(folder, weights.pt, card.json, sha256, full card)``; the card gains the architecture,
        hyper-parameters, sha256 and ``<architecture>@sha256:<hash>`` model id.
    """
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    digest = state_dict_sha256(sd)
    folder = Path(out_dir) / digest[:16]
    folder.mkdir(parents=True, exist_ok=True)
    full_card = {
        **card,
        "architecture": architecture,
        "hparams": hparams,
        "sha256": digest,
        "model_id": f"{architecture}@sha256:{digest}",
    }
    buf = io.BytesIO()
    torch.save({"architecture": architecture, "hparams": hparams, "state_dict": sd}, buf)
    weights = folder / "weights.pt"
    card_json = folder / "card.json"
    write_atomic(weights, buf.getvalue())
    # ASCII-escaped, unlike geodelta._io.json_bytes: the card's bytes are part of releases.
    write_atomic(card_json, (json.dumps(full_card, indent=2, sort_keys=True) + "\n").encode())
    return folder, weights, card_json, digest, full_card


def load_checkpoint(
    path: str | Path,
    architecture: str,
    build: Callable[..., _M],
    *,
    missing: str,
    foreign: str,
) -> tuple[_M, dict[str, Any], str]:
    """Load what :func:`write_checkpoint` saved, checking the weights' content hash.

    Args:
        path: the ``weights.pt`` file or its folder.
        architecture: the architecture the file must hold.
        build: ``**hparams -> network`` of that architecture.
        missing: message when there are no weights (``{weights}`` is filled in).
        foreign: message when the file holds another architecture.

    Returns:
        ``(network in eval mode, card, sha256)``; the card is ``{}`` when ``card.json`` is
        missing.

    Raises:
        FileNotFoundError: no weights there.
        ModelIntegrityError: another architecture, or the weights' hash differs from the card's.
    """
    p = Path(path)
    weights = p / "weights.pt" if p.is_dir() else p
    if not weights.exists():
        raise FileNotFoundError(missing.format(weights=weights))
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("architecture") != architecture:
        raise ModelIntegrityError(foreign, path=str(weights))
    digest = state_dict_sha256(blob["state_dict"])
    card_path = weights.parent / "card.json"
    card: dict[str, Any] = json.loads(card_path.read_text()) if card_path.exists() else {}
    expected = card.get("sha256")
    if expected is not None and expected != digest:
        raise ModelIntegrityError(
            f"weights sha256 {digest[:16]} differs from the card's {str(expected)[:16]}; "
            "the file was changed after training",
            path=str(weights),
        )
    model = build(**blob["hparams"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, card, digest


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _card_markdown(card: dict[str, Any]) -> str:
    data = card.get("trained_on") or {}
    training = card.get("training") or {}
    losses = training.get("losses") or []
    lines = [
        f"# Baseline change model {card['model_id']}",
        "",
        f"- architecture: {card['architecture']} ({card['hparams']})",
        f"- bands ({len(card.get('bands') or [])}): {', '.join(card.get('bands') or [])}",
        f"- trained on: {data.get('name', '?')} {data.get('version', '')} "
        f"(config hash {str(data.get('config_hash', '?'))[:12]}, split "
        f"{data.get('split', '?')}, {data.get('samples', '?')} samples)",
        f"- epochs: {training.get('epochs', '?')}, final loss "
        f"{_fmt(losses[-1]) if losses else 'n/a'}",
        f"- inference tile: {card.get('tile') or 'whole sample'}",
        "",
        "## Metrics (change class)",
        "",
    ]
    metrics = card.get("metrics") or {}
    if not metrics:
        lines.append("No evaluation split was available.")
    for split, m in metrics.items():
        lines.append(
            f"- {split}: precision {_fmt(m['precision'])}, recall {_fmt(m['recall'])}, "
            f"F1 {_fmt(m['f1'])}, IoU {_fmt(m['iou'])} (threshold {m.get('threshold', 0.5)}, "
            f"{m.get('pixels', '?')} pixels)"
        )
    lines += ["", f"Weights sha256: `{card['sha256']}`", ""]
    return "\n".join(lines)


def save_model(model: FCSiamDiff, out_dir: str | Path, card: dict[str, Any]) -> SavedModel:
    """Save weights under their content hash, with a model card (JSON + markdown).

    Layout: ``<out_dir>/<sha256[:16]>/{weights.pt, card.json, card.md}``. Saving identical
    weights twice writes the same folder.

    Args:
        model: the trained network.
        out_dir: parent folder.
        card: model card fields (bands, trained_on, training, metrics, tile, ...); the
            architecture, hyper-parameters, sha256 and model id are added here.

    Returns:
        The paths and the hash.
    """
    folder, weights, card_json, digest, full_card = write_checkpoint(
        model, ARCHITECTURE, model.hparams(), out_dir, card
    )
    card_md = folder / "card.md"
    write_atomic(card_md, _card_markdown(full_card).encode())
    return SavedModel(folder, weights, card_json, card_md, digest)


def load_model(path: str | Path) -> tuple[FCSiamDiff, dict[str, Any]]:
    """Load weights saved by :func:`save_model` and check their content hash.

    Args:
        path: the ``weights.pt`` file or its folder.

    Returns:
        ``(model in eval mode, card)``; the card is ``{}`` when ``card.json`` is missing.

    Raises:
        FileNotFoundError: no weights there.
        ModelIntegrityError: not a geodelta baseline model, or the weights' hash differs from
            the card's.
    """
    model, card, digest = load_checkpoint(
        path,
        ARCHITECTURE,
        FCSiamDiff,
        missing="no baseline weights at {weights}; check baseline.weights",
        foreign=f"not a {ARCHITECTURE} weights file (train one with `geodelta baseline train`)",
    )
    card.setdefault("sha256", digest)
    card.setdefault("model_id", f"{ARCHITECTURE}@sha256:{digest}")
    return model, card


def train_config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The settings as plain JSON data (for the model card)."""
    return asdict(cfg)
