"""The label sources by kind, and the label stage's use of them.

:data:`SOURCES` maps each ``labels.kind`` to its
:class:`~geodelta.pipelines.stages.labels.base.LabelSource`; the pair stage and the label stage
look the configured kind up here, so neither branches on the kind. A new kind is one module in
this package and one entry below (and its value in ``LabelConfig.kind``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from geodelta.errors import ConfigError
from geodelta.pipelines.stages.labels.base import LabelSource, Rejection
from geodelta.pipelines.stages.labels.change_mask import ChangeMaskLabels
from geodelta.pipelines.stages.labels.landcover import LandcoverLabels
from geodelta.schemas import QuarantineRecord

if TYPE_CHECKING:
    from geodelta.pipelines.stages.sample import Sample
    from geodelta.schemas.config import LabelConfig
    from geodelta.sources.raster import RasterAccess

__all__ = ["SOURCES", "label_sample", "label_source"]

#: ``labels.kind`` -> its label source.
SOURCES: Final[Mapping[str, LabelSource]] = {
    source.kind: source for source in (LandcoverLabels(), ChangeMaskLabels())
}


def label_source(kind: str) -> LabelSource:
    """The label source of a ``labels.kind``.

    Raises:
        ConfigError: no source serves ``kind``.
    """
    try:
        return SOURCES[kind]
    except KeyError:
        raise ConfigError(
            f"labels.kind {kind!r} has no label source (known: {sorted(SOURCES)})"
        ) from None


def label_sample(
    sample: Sample, labels: LabelConfig, access: RasterAccess
) -> Sample | QuarantineRecord:
    """The label stage without the baseline model: the configured source labels the sample.

    Args:
        sample: the co-registered sample (its pair carries the picked label items).
        labels: the ``labels`` section of the build config.
        access: GDAL options and href signer for the reads.

    Returns:
        The labelled sample, or a quarantine record (stage ``label``) saying why not.
    """
    out = label_source(labels.kind).label(sample, labels, access)
    if isinstance(out, Rejection):
        return sample.quarantine("label", out.reason, out.detail)
    return out
