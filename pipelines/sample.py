"""The in-memory sample that flows through the raster stages (arrays + records).

Not a schema record: it holds numpy arrays and lives only inside one worker between
``load`` and ``encode``. Each stage returns a copy with more fields filled
(:func:`dataclasses.replace`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from geodelta.schemas import Annotation, ChangeFacts, CoregResult, ScenePair

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Sample:
    """A pair being turned into a sample.

    Attributes:
        pair: the chosen scenes and the cell.
        before: (C, H, W) float32 reflectance of the before scene on the cell grid; NaN = no data.
        after: (C, H, W) float32 reflectance of the after scene (co-registered once
            ``coreg`` is set); NaN = no data.
        coreg: co-registration result (set by the coregister stage).
        lc_before: (H, W) uint8 geodelta class index at t0, 0 = unknown (landcover labels).
        lc_after: (H, W) uint8 geodelta class index at t1, 0 = unknown (landcover labels).
        mask: (H, W) uint8 change mask: 0 no change, k = transition code (label stage).
        facts: facts computed from the mask (label stage).
        label_source: 'landcover:<collection>' or 'change_mask:<asset>' (label stage).
        label_items: STAC item ids the label came from (label stage).
        annotation: captions and QA (annotate stage).
    """

    pair: ScenePair
    before: np.ndarray
    after: np.ndarray
    coreg: CoregResult | None = None
    lc_before: np.ndarray | None = None
    lc_after: np.ndarray | None = None
    mask: np.ndarray | None = None
    facts: ChangeFacts | None = None
    label_source: str = ""
    label_items: tuple[str, ...] = ()
    annotation: Annotation | None = None

    @property
    def key(self) -> str:
        """Sample key."""
        return self.pair.key
