"""The dataset :func:`geodelta.data.load` returns: a webdataset pipeline with ``len()`` and ``plot``.

Imported by :func:`geodelta.data.load` only (webdataset imports torch): ``import geodelta.data``
stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import webdataset as wds

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["ReleaseDataset"]


class ReleaseDataset(wds.DataPipeline):  # webdataset ships no type hints
    """A torch IterableDataset over a release's shards (a ``webdataset.DataPipeline``).

    ``len(ds)`` is the number of samples this rank reads in an epoch, from the manifest's
    per-shard counts (exact without shard shuffling; with ``shuffle > 0`` and several ranks, the
    rank's share of the split rounded up, since which shards a rank draws changes). Explicit
    shard lists have no manifest: ``len()`` raises ``TypeError`` then.
    """

    def __init__(self, *stages: Any, length: int | None) -> None:
        super().__init__(*stages)
        self._samples = length

    def __len__(self) -> int:
        if self._samples is None:
            raise TypeError(
                "len() of a dataset over explicit shards is unknown (no manifest); pass the "
                "release folder or URL to geodelta.data.load"
            )
        return self._samples

    @staticmethod
    def plot(sample: Mapping[str, Any], **kwargs: Any) -> Figure:
        """Plot a sample of this dataset (:func:`geodelta.plot.plot`), as TorchGeo datasets do."""
        from geodelta.plot import plot

        return plot(sample, **kwargs)

    @staticmethod
    def collate_fn(samples: Any) -> dict[str, Any]:
        """The padding collate (:func:`geodelta.collate.collate`) for ``DataLoader``."""
        from geodelta.collate import collate

        return collate(samples)
