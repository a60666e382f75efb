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

__all__ = ["StagedSample", "check_temporal", "finalize_sample"]


@dataclass(frozen=True)
class StagedSample:
    """A finished sample: its encoded members, ready for the staging area, and the
    :func:`~.member_checks.decode_digest` of those members, whose decode
    checks passed here (recorded in the cell's marker: the build's report does not decode them
    again)."""

    cell_id: str
    key: str
    members: dict[str, bytes]
    decode_digest: str | None = None


def finalize_sample(
    sample: Sample, cfg: BuildConfig, *, code_version: str, shaping_hash: str
) -> StagedSample | QuarantineRecord:
    """Metadata, rule validation and encoded members of an annotated sample.

    Args:
        sample: a sample after the annotate stage.
        cfg: the build config.
        code_version: the geodelta version building the sample (recorded).
        shaping_hash: :meth:`~geodelta.schemas.BuildConfig.shaping_hash` of ``cfg`` (recorded).

    Returns:
        The staged sample, or the validate stage's quarantine record (a rule, a temporal claim,
        or a member that does not decode as its codec says: ``undecodable_member``).
    """
    from geodelta.pipelines.stages.encode import build_meta, encode_members
    from geodelta.pipelines.stages.validate import validate_stage

    meta = build_meta(sample, cfg, code_version=code_version, shaping_hash=shaping_hash)
    checked = validate_stage(sample, meta, cfg)
    if isinstance(checked, QuarantineRecord):
        return checked
    if sample.series is not None:
        wrong = check_temporal(sample, cfg)
        if wrong:
            return sample.quarantine("validate", "temporal_claim", "; ".join(wrong))
    members = encode_members(sample, meta, cfg)
    if sample.series is not None:  # a sequence: the series members follow the pair's
        from geodelta.pipelines.stages.encode_series import series_members

        members.update(series_members(sample, meta))
    # the decode checks of verify, here on the workers rather than serially in the report
    from geodelta.pipelines.stages.member_checks import decode_digest, decode_problems

    mode = "pair" if sample.series is None else "series"
    problems = decode_problems(members, meta, mode, where=sample.key)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return sample.quarantine("validate", "undecodable_member", problems[0] + more)
    return StagedSample(
        cell_id=sample.pair.job.cell_id,
        key=sample.key,
        members=members,
        decode_digest=decode_digest(members, meta, mode),
    )


def check_temporal(sample: Sample, cfg: BuildConfig) -> list[str]:
    """What is false in a sequence sample's temporal captions and QA, re-derived from its
    land-cover stack by the independent checker (:mod:`geodelta.annotators.temporal`); empty
    when everything holds. A pair sample has nothing to check."""
    series = sample.series
    if series is None:
        return []
    if series.lc is None or series.annotation is None:
        return ["the sequence has no land-cover stack or no temporal annotation"]
    from geodelta.annotators.temporal import check_series_annotation

    ann = series.annotation
    return check_series_annotation(
        ann.captions,
        ann.qa,
        series.lc,
        [d.datetime for d in series.dates],
        min_region_px=cfg.labels.min_region_px,
        template=ann.annotator == "template-temporal",  # its own sentence forms only
    )
