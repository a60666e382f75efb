"""One read of a release's shards for the whole report: verify's own (issue 13).

The page needs of every sample: verify's checks (the verdict must be what ``geodelta release``
decides), the digests and text of :func:`~.data.scan_shards` and the members of the samples the
page shows, the regions, QA and grounded captions of the grounding section and, for a series
release, what the series section counts. :func:`scan_release` runs
:func:`~geodelta.pipelines.release.verify.verify_release` (strict, as ``geodelta release``
does) with a :class:`~.data.Fanout` as its visitor, which hands every sample verify reads to
each of those readers: each shard is parsed once, not four times. Each reader keeps its own
error handling, as if it had read the shard alone (:class:`~.data.Fanout`); a shard verify
does not read (missing on disk) is read for the readers, so they say what they always said.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from geodelta.pipelines.release.verify import CarriedShard, VerifyResult, verify_release
from geodelta.pipelines.report.data import (
    Fanout,
    Release,
    SampleInfoReader,
    ShardReader,
    read_shards,
)
from geodelta.pipelines.report.grounding import GroundingScan
from geodelta.pipelines.report.series import SeriesScan, is_series

__all__ = ["ReleaseScan", "scan_release"]


@dataclass(frozen=True)
class ReleaseScan:
    """What one read of the shards gave the report.

    Attributes:
        verified: ``verify_release(root, strict=True)``, as ``geodelta release`` verifies.
        grounding: the grounding section's samples.
        series: the series section's counts; None for a pair release.
    """

    verified: VerifyResult
    grounding: GroundingScan
    series: SeriesScan | None


def scan_release(
    rel: Release,
    keep: Iterable[str] = (),
    *,
    digests: bool = True,
    trusted: Collection[str] = frozenset(),
    carried: Mapping[str, CarriedShard] | None = None,
) -> ReleaseScan:
    """Verify the release and read what the page needs of every sample, in one read.

    Fills ``rel.samples``, ``rel.kept`` (the ``keep`` keys) and ``rel.problems`` as
    :func:`~.data.scan_shards` does.

    Args:
        rel: the release, as :func:`~.data.open_release` opened it (no shard read yet).
        keep: the keys whose members the page shows.
        digests: compute the member and metadata digests of :class:`~.data.SampleInfo` (only
            a diff with a previous release reads them).
        trusted: decode digests verify need not check again (``verify_release(trusted=)``);
            ``verified.passed`` holds every sample's digest either way.
        carried: shards verified before (``verify_release(carried=)``): verify does not read
            them; the readers get the members they read of them, sliced at the samples
            table's offsets (:meth:`~.data.Fanout.carried`).
    """
    keep = tuple(keep)

    def readers() -> tuple[list[ShardReader], GroundingScan, SeriesScan | None]:
        grounding = GroundingScan()
        series = SeriesScan() if is_series(rel) else None
        info = SampleInfoReader(rel, keep, digests=digests)
        return [info, grounding, *([series] if series is not None else [])], grounding, series

    parts, grounding, series = readers()
    fanout = Fanout(rel.root, parts)
    verified = verify_release(
        rel.root, strict=True, visitor=fanout, digests=True, trusted=trusted, carried=carried
    )
    if fanout.shards != [s.path for s in rel.manifest.shards]:
        # verify read another manifest (or none: it reports why): read the page's own shards
        rel.samples.clear()
        rel.kept.clear()
        rel.problems.clear()
        parts, grounding, series = readers()
        read_shards(rel, parts)
    return ReleaseScan(verified, grounding, series)
