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

    from geodelta.schemas.series import SeriesDateMeta, SeriesFacts


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
class SeriesArrays:
    """What a sequence sample holds beyond its pair (``time.series``; issue 15).

    The pair of a sequence sample is its first and its last date: ``Sample.before`` is
    ``stack[0]`` and ``Sample.after`` is ``stack[-1]`` (the same arrays, not copies).

    Attributes:
        dates: one record per date, in time order (shift and residual set by the coregister
            stage, the label item by the label stage).
        stack: (T, C, H, W) float32 reflectance on the cell grid; every date registered onto
            date 0 once the coregister stage has run; NaN = no data.
        context: per date, the registration band over the cell plus the margin (load stage,
            when ``coregistration.margin_px`` > 0); dropped by the coregister stage.
        lc: (T, H, W) uint8 land cover of each date (label stage).
        step_masks: (T-1, H, W) uint8 transition codes of each step (label stage).
        first_change: (H, W) uint8 first step at which each pixel changed, 0 = never.
        facts: the temporal facts (label stage).
        annotation: the temporal captions and QA (annotate stage), kept apart from the pair's
            own so that each is checked by its own checker.
    """

    dates: tuple[SeriesDateMeta, ...]
    stack: np.ndarray
    context: tuple[np.ndarray, ...] | None = None
    lc: np.ndarray | None = None
    step_masks: np.ndarray | None = None
    first_change: np.ndarray | None = None
    facts: SeriesFacts | None = None
    annotation: Annotation | None = None


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
        series: the dates, stack and temporal labels of a sequence sample; None for a pair.
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
    series: SeriesArrays | None = None

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
