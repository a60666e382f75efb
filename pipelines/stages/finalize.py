"""The finalize stage: a sample's metadata, its rule validation, its encoded shard members.

The last per-cell stage: :func:`~geodelta.pipelines.stages.encode.build_meta` writes the
``json`` member's record, :func:`~geodelta.pipelines.stages.validate.validate_stage` checks the
rules (a failing sample goes to quarantine under stage ``validate``), and
:func:`~geodelta.pipelines.stages.encode.encode_members` encodes the members for the staging
area.
"""

from __future__ import annotations

from dataclasses import dataclass

from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import BuildConfig, QuarantineRecord

__all__ = ["StagedSample", "finalize_sample"]


@dataclass(frozen=True)
class StagedSample:
    """A finished sample: its encoded members, ready for the staging area."""

    cell_id: str
    key: str
    members: dict[str, bytes]


def finalize_sample(
    sample: Sample, cfg: BuildConfig, *, code_version: str, config_hash: str
) -> StagedSample | QuarantineRecord:
    """Metadata, rule validation and encoded members of an annotated sample.

    Args:
        sample: a sample after the annotate stage.
        cfg: the build config.
        code_version: the geodelta version building the sample (recorded).
        config_hash: :meth:`~geodelta.schemas.BuildConfig.config_hash` of ``cfg`` (recorded).

    Returns:
        The staged sample, or the validate stage's quarantine record.
    """
    from geodelta.pipelines.stages.encode import build_meta, encode_members
    from geodelta.pipelines.stages.validate import validate_stage

    meta = build_meta(sample, cfg, code_version=code_version, config_hash=config_hash)
    checked = validate_stage(sample, meta, cfg)
    if isinstance(checked, QuarantineRecord):
        return checked
    return StagedSample(
        cell_id=sample.pair.job.cell_id,
        key=sample.key,
        members=encode_members(sample, meta, cfg),
    )
