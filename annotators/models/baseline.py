"""The baseline change model as an annotator, mask fusion, and change-class metrics.

:class:`BaselineChangeAnnotator` is shaped like Beam's ``ModelHandler``: make it once per
worker, the weights load on first use (:meth:`~BaselineChangeAnnotator.load_model`), then
:meth:`~BaselineChangeAnnotator.run_inference` takes a batch of ``(before, after)`` stacks and
returns one change-probability map per pair. torch is imported only when the model loads, so
importing this module (or ``geodelta.annotators``) does not import torch.

:func:`fuse_masks` combines a label mask (land-cover transition codes, or a binary change
mask) with the model's probabilities:

- ``none``: the label mask unchanged (the model is only recorded);
- ``intersect``: a labelled change counts only where the model also sees change, which
  suppresses land-cover flicker (two maps disagreeing where nothing changed on the ground);
- ``union``: labelled changes, plus model changes the label missed, coded
  :data:`~geodelta.schemas.classes.BINARY_CHANGE` (change between unknown classes).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from geodelta._numerics import PINNED, pin_before_torch
from geodelta.errors import ModelError
from geodelta.schemas.classes import BINARY_CHANGE

__all__ = [
    "FUSION_MODES",
    "BaselineChangeAnnotator",
    "BaselineError",
    "ChangeMetrics",
    "FusionMode",
    "change_metrics",
    "fuse_masks",
]

log = logging.getLogger(__name__)

FusionMode = Literal["none", "intersect", "union"]
FUSION_MODES: tuple[str, ...] = get_args(FusionMode)


class BaselineError(ModelError):
    """A baseline-model input or setting that cannot be used; names the config key to change."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


def fuse_masks(
    label_mask: np.ndarray,
    prob: np.ndarray,
    *,
    threshold: float,
    mode: FusionMode,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Fuse a label change mask with the model's change probabilities.

    Args:
        label_mask: (H, W) uint8 mask, 0 = no change, k = transition code (255 = binary change).
        prob: (H, W) model change probability in [0, 1].
        threshold: the model sees change where ``prob >= threshold``.
        mode: ``none`` | ``intersect`` | ``union`` (module docstring).
        valid: (H, W) bool, where the label is known; ``union`` adds model changes only there
            (None = everywhere).

    Returns:
        (H, W) uint8 fused mask (a new array).

    Raises:
        BaselineError: shapes differ, an unknown mode, or a threshold outside (0, 1).
    """
    label_mask = np.asarray(label_mask)
    prob = np.asarray(prob)
    if label_mask.ndim != 2 or label_mask.shape != prob.shape:
        raise BaselineError(
            f"label mask and probabilities must be 2-D of one shape (actual "
            f"{label_mask.shape}, {prob.shape})"
        )
    if valid is not None and np.shape(valid) != label_mask.shape:
        raise BaselineError(f"valid has shape {np.shape(valid)}, the mask {label_mask.shape}")
    if not 0.0 < threshold < 1.0:
        raise BaselineError(f"threshold must be in (0, 1) (actual {threshold})", key="baseline")
    mask = label_mask.astype(np.uint8)
    if mode == "none":
        return mask.copy()
    model_change = prob >= threshold
    if mode == "intersect":
        return np.where(model_change, mask, np.uint8(0)).astype(np.uint8)
    if mode == "union":
        add = model_change & (mask == 0)
        if valid is not None:
            add &= np.asarray(valid, dtype=bool)
        return np.where(add, np.uint8(BINARY_CHANGE), mask).astype(np.uint8)
    raise BaselineError(f"unknown fusion mode {mode!r} (known: {FUSION_MODES})", key="baseline")


@dataclass(frozen=True)
class ChangeMetrics:
    """Pixel counts and scores of the change class (an undefined ratio is 0.0)."""

    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float
    iou: float

    @property
    def pixels(self) -> int:
        """Pixels scored."""
        return self.tp + self.fp + self.fn + self.tn

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data (scores and counts)."""
        return {**asdict(self), "pixels": self.pixels}


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def change_metrics(
    pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None
) -> ChangeMetrics:
    """Precision, recall, F1 and IoU of the change class.

    Args:
        pred: predicted change (bool or 0/1), any shape.
        target: reference change (bool or 0/1), same shape.
        valid: pixels to score (None = all).

    Returns:
        The counts and scores over the valid pixels.
    """
    p = np.asarray(pred).astype(bool)
    t = np.asarray(target).astype(bool)
    if p.shape != t.shape:
        raise BaselineError(f"pred and target shapes differ ({p.shape} vs {t.shape})")
    v = np.ones(p.shape, bool) if valid is None else np.asarray(valid).astype(bool)
    tp = int((p & t & v).sum())
    fp = int((p & ~t & v).sum())
    fn = int((~p & t & v).sum())
    tn = int((~p & ~t & v).sum())
    return ChangeMetrics(
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        iou=_ratio(tp, tp + fp + fn),
    )


@functools.cache
def _pin_numerics() -> None:
    """The pinned torch numerics of :mod:`geodelta._numerics` for this process's inference, set
    once; where torch ran before with its per-CPU kernels, a warning says the masks may differ
    from another machine's in pixels whose probability is near the threshold."""
    try:
        pinned = pin_before_torch()
    except ImportError:
        return  # torch is not installed: load_model's import names the extra to install
    if not pinned:
        log.warning(
            "the baseline change model runs with this CPU's own torch kernels (torch was "
            "imported before the model loaded, without %s): its masks may differ from another "
            "machine's where a probability is near the threshold; build with the geodelta "
            "command, or set these variables before Python starts",
            " ".join(f"{k}={v}" for k, v in PINNED.items()),
        )


class BaselineChangeAnnotator:
    """Change-probability maps from trained FC-Siam-diff weights (a ``ModelHandler`` look-alike).

    Args:
        weights: ``weights.pt`` from ``geodelta baseline train``, or its folder.
        batch_size: pairs (or tiles) per forward pass.
        tile: inference window; ``"card"`` = the training patch size recorded in the model
            card (whole samples when it trained on whole samples), None = whole samples.
        threads: torch intra-op threads for inference (None = torch's default).
    """

    name = "baseline"

    def __init__(
        self,
        weights: str | Path,
        *,
        batch_size: int = 8,
        tile: int | Literal["card"] | None = "card",
        threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise BaselineError(f"batch_size must be >= 1 (actual {batch_size})", key="baseline")
        self.weights = Path(weights)
        self.batch_size = batch_size
        self._tile = tile
        self.threads = threads
        self._model: Any = None
        self._card: dict[str, Any] = {}
        self.loads = 0  # how many times the weights were read (1 per worker)

    @classmethod
    def from_model(
        cls, model: Any, card: dict[str, Any], *, batch_size: int = 8
    ) -> BaselineChangeAnnotator:
        """An annotator around a model already in memory (e.g. scoring right after training)."""
        self = cls("<in memory>", batch_size=batch_size)
        self._model, self._card = model, dict(card)
        return self

    # -- ModelHandler-like -------------------------------------------------------------------
    def load_model(self) -> Any:
        """Load the weights once (checks their content hash); later calls reuse them."""
        if self._model is None:
            _pin_numerics()  # before torch is imported, where it is not yet
            from geodelta.annotators.models.change_model import load_model

            if self.threads is not None:
                import torch

                torch.set_num_threads(self.threads)
            self._model, self._card = load_model(self.weights)
            self.loads += 1
        return self._model

    def batch_elements_kwargs(self) -> dict[str, int]:
        """Batching hints, as Beam's ``ModelHandler.batch_elements_kwargs``."""
        return {"min_batch_size": 1, "max_batch_size": self.batch_size}

    def run_inference(self, batch: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Change probabilities of a batch of ``(before, after)`` (C, H, W) reflectance stacks.

        Returns:
            One (H, W) float32 map in [0, 1] per pair (0 where a date has no data).

        Raises:
            BaselineError: a pair's band count differs from the model's.
        """
        model = self.load_model()  # first: it pins the numerics before torch is imported
        from geodelta.annotators.models.change_model import predict_proba

        for i, (b, _) in enumerate(batch):
            if b.ndim != 3 or b.shape[0] != model.in_channels:
                raise BaselineError(
                    f"pair {i} has shape {b.shape}; the model takes {model.in_channels} bands "
                    f"({self.card.get('bands')}); set imagery.bands to the model's bands or "
                    "train a model on these bands",
                    key="baseline.weights",
                )
        import torch

        onednn = bool(torch.backends.mkldnn.enabled)
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # geodelta._numerics
        try:
            return predict_proba(model, list(batch), batch_size=self.batch_size, tile=self.tile)
        finally:
            torch.backends.mkldnn.enabled = onednn  # type: ignore[assignment]

    # -- what samples record -----------------------------------------------------------------
    @property
    def card(self) -> dict[str, Any]:
        """The model card (loads the model)."""
        self.load_model()
        return self._card

    @property
    def model_id(self) -> str:
        """``fc-siam-diff@sha256:<hash of the weights>``."""
        return str(self.card.get("model_id", "fc-siam-diff@unsaved"))

    @property
    def tile(self) -> int | None:
        """Inference window in pixels (None = whole samples)."""
        if self._tile == "card":
            value = self.card.get("tile")
            return int(value) if value else None
        return self._tile

    def check_bands(self, bands: Sequence[str]) -> None:
        """Raise when the card's bands differ from ``bands`` (the config's imagery.bands)."""
        trained = self.card.get("bands")
        if trained is not None and list(trained) != list(bands):
            raise BaselineError(
                f"the model was trained on bands {list(trained)}, the config stacks "
                f"{list(bands)}; use the same imagery.bands or another model",
                key="baseline.weights",
            )
