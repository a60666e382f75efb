"""What a label source is: the :class:`LabelSource` protocol every label kind implements.

A label kind (config ``labels.kind``) says where a sample's change labels come from. Its source
answers the three questions the stages ask:

* **search** (the pair stage): which label items a cell needs. The collection the pair stage
  searches is config data (:attr:`geodelta.schemas.config.LabelConfig.searched_collection`,
  also read by the collection profiles); the pair stage searches it over both time windows and
  keeps the items covering the cell, then hands them to :meth:`LabelSource.pick`;
* **pick** (the pair stage): which of those items (or of the chosen scenes) label the pair;
* **label** (the label stage): read the label on the cell grid and turn it into the sample's
  change mask and facts (with :mod:`geodelta.pipelines.stages.label`).

A source that cannot serve a cell or a sample says why with a :class:`Rejection`; the stage
turns it into a quarantine record of its own stage. Adding a label kind is one module in this
package, one line in :mod:`geodelta.pipelines.stages.labels.registry` and one value of
``LabelConfig.kind``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from geodelta.pipelines.stages.sample import Sample
    from geodelta.schemas import ScenePair, SceneRef
    from geodelta.schemas.config import LabelConfig
    from geodelta.sources.raster import RasterAccess

__all__ = ["LabelSource", "Rejection"]


@dataclass(frozen=True)
class Rejection:
    """Why a label source cannot serve a cell or a sample.

    Attributes:
        reason: the quarantine reason (stable snake_case).
        detail: one line for a human, naming the item and the config key to check.
    """

    reason: str
    detail: str


class LabelSource(Protocol):
    """One label kind: how its label items are picked and how a sample is labelled.

    Attributes:
        kind: the ``labels.kind`` value it serves.
        maps_per_pair: label rasters read per pair (byte estimates of ``search --dry-run``).
    """

    kind: str
    maps_per_pair: int

    def pick(
        self, pair: ScenePair, items: Sequence[SceneRef], labels: LabelConfig
    ) -> ScenePair | Rejection:
        """Set the label items of a chosen pair.

        Args:
            pair: the chosen before/after scenes (no label items yet).
            items: the items of ``labels.searched_collection`` covering the cell over both
                windows (empty when the kind searches no collection).
            labels: the ``labels`` section of the build config.

        Returns:
            A copy of ``pair`` with ``label_before`` / ``label_after`` set, or why not.
        """
        ...

    def label(
        self, sample: Sample, labels: LabelConfig, access: RasterAccess
    ) -> Sample | Rejection:
        """Read the pair's label on the cell grid and label the sample.

        Args:
            sample: the co-registered sample (its pair carries the picked label items).
            labels: the ``labels`` section of the build config.
            access: GDAL options and href signer for the reads.

        Returns:
            A copy of ``sample`` with ``mask``, ``facts``, ``valid``, ``lc_before``,
            ``lc_after``, ``label_source`` and ``label_items`` set, or why not.
        """
        ...
