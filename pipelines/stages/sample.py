"""The in-memory sample that flows through the raster stages (arrays + records).

Not a schema record: it holds numpy arrays and lives only inside one worker between
``load`` and ``encode``. Each stage returns a copy with more fields filled
(:func:`dataclasses.replace`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from geodelta.schemas import Annotation, ChangeFacts, CoregResult, QuarantineRecord, ScenePair

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class BaselineResult:
    """What the baseline change model said about a sample, and how it changed the mask.

    Attributes:
        model_id: ``fc-siam-diff@sha256:<hash of the weights>``.
        fusion: fusion mode applied to the label mask (``none`` | ``intersect`` | ``union``).
        threshold: probability at and above which the model sees change.
        prob: (H, W) float32 change probability.
        iou: IoU of the model's change and the label's change (before fusion) over valid
            pixels; 1.0 when both see no change.
    """

    model_id: str
    fusion: str
    threshold: float
    prob: np.ndarray
    iou: float


@dataclass(frozen=True)
class Sample:
    """A pair being turned into a sample.

    Attributes:
        pair: the chosen scenes and the cell.
        before: (C, H, W) float32 reflectance of the before scene on the cell grid; NaN = no data.
        after: (C, H, W) float32 reflectance of the after scene (co-registered once
            ``coreg`` is set); NaN = no data.
        coreg: co-registration result (set by the coregister stage).
        coreg_context: ``(before, after)`` 2-D registration band over the cell plus
            ``coregistration.margin_px`` per side (load stage, when the margin is > 0), for the
            tie points that check the cell's shift; dropped by the coregister stage.
        lc_before: (H, W) uint8 geodelta class index at t0, 0 = unknown (landcover labels).
        lc_after: (H, W) uint8 geodelta class index at t1, 0 = unknown (landcover labels).
        mask: (H, W) uint8 change mask: 0 no change, k = transition code (label stage).
        facts: facts computed from the mask (label stage).
        label_source: 'landcover:<collection>' or 'change_mask:<asset>' (label stage).
        label_items: STAC item ids the label came from (label stage).
        annotation: captions and QA (annotate stage).
        valid: (H, W) bool, where the label is known on both dates (label stage).
        baseline: the baseline change model's output and the mask fusion (label stage, only
            when ``baseline.weights`` is configured).
    """

    pair: ScenePair
    before: np.ndarray
    after: np.ndarray
    coreg: CoregResult | None = None
    coreg_context: tuple[np.ndarray, np.ndarray] | None = None
    lc_before: np.ndarray | None = None
    lc_after: np.ndarray | None = None
    mask: np.ndarray | None = None
    facts: ChangeFacts | None = None
    label_source: str = ""
    label_items: tuple[str, ...] = ()
    annotation: Annotation | None = None
    valid: np.ndarray | None = None
    baseline: BaselineResult | None = None

    @property
    def key(self) -> str:
        """Sample key."""
        return self.pair.key

    def quarantine(self, stage: str, reason: str, detail: str) -> QuarantineRecord:
        """The quarantine record of this sample, dropped at ``stage`` for ``reason``.

        Args:
            stage: the stage that dropped it (``coregister``, ``label``, ``annotate``...).
            reason: a short machine-readable reason.
            detail: what was wrong, for a person.
        """
        return QuarantineRecord(
            key=self.key,
            cell_id=self.pair.job.cell_id,
            stage=stage,
            reason=reason,
            detail=detail,
        )
