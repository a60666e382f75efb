"""The per-version quality report: ``<release>/report/index.html``, from Jinja2 templates.

One self-contained HTML file that opens from disk with no network: inline CSS, every plot and
image a PNG ``data:`` URI, no script, no external link. Sections (in page order, each with an
``id``; the template of each is ``templates/<id>.html``):

``verdict``
    the first screen: PUBLISH or DO NOT PUBLISH, what ``geodelta release`` would decide (strict
    verify + the gate, from the same code), every gate rule with its value and threshold, and
    the informational reasons: GX, quarantine rate, reference metrics old -> new, catalog drift
    (:mod:`.verdict`).
``diff``
    against a previous release (``previous=``), right after the verdict: the reference model's
    metrics old -> new, added/removed/changed keys, config changes, dataset metric deltas,
    distribution shifts (overlaid histograms, Kolmogorov-Smirnov and total variation
    distances), a map of added/removed/changed footprints (:mod:`.diff`).
``summary``
    dataset, counts, splits, licence and attribution, annotators, LLM spend.
``funnel``
    quarantined records by stage (pipeline order, with what remained after each stage) and by
    ``stage:reason``.
``transitions``
    class-transition distribution (changed pixels and samples per ``from -> to``) and the
    changed-fraction histogram.
``captions``
    captions per sample, caption length, vocabulary size, distinct captions, top words.
``qa``
    QA type counts and answer balance per type.
``coregistration``
    shift and residual distributions against the validation limits.
``map``
    the sample footprints in lon/lat (rectangles coloured by split, the AOI box dashed).
``time``
    time-gap distribution.
``series``
    series releases only: dates per sample, the dates timeline, registration residual per date
    index, first-change steps, regions and class trends, temporal QA balance, retrieval with
    hard negatives (:mod:`.series`).
``validation``
    the Great Expectations summary written by the validate stage (``validation/summary.json``,
    with relative links into ``validation/`` for the Data Docs; "not run" when absent) and the
    per-sample validation score (:mod:`.metrics`).
``gallery``
    before/after/mask (every mask with its colour legend), captions and QA of the WORST samples
    by validation score, then of a deterministic pick of the others (smallest sha256 of the key).
``reference``
    the reference model's metrics (``reference/metrics.json``; "not trained yet" when absent)
    and the samples to review first: before/after/label and the model's own mask.

The modules by role: :mod:`.data` reads the release, :mod:`.scan` reads its shards once for
the whole page (verify's read, shown to every section that reads each sample), :mod:`.metrics`
computes the numbers, :mod:`.sections`, :mod:`.validation`, :mod:`.samples`, :mod:`.reference`
and :mod:`.diff` turn them into plain data per section, :mod:`.plots` draws the figures, and
this module renders the templates (autoescaped) and writes the page.

Everything is deterministic: the same release (and previous release) give the same bytes.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from geodelta._io import write_atomic
from geodelta.errors import ReleaseError
from geodelta.pipelines.release.datadocs import templates_environment
from geodelta.pipelines.release.layout import REPORT_DIR, REPORT_FILE, VERIFIED
from geodelta.pipelines.release.manifest import list_files
from geodelta.pipelines.report.data import (
    PROVENANCE_FIELDS,
    load_release,
    open_release,
    review_count,
    review_keys,
)
from geodelta.pipelines.report.diff import ReleaseDiff, diff_releases, diff_section
from geodelta.pipelines.report.drift import drift_section
from geodelta.pipelines.report.grounding import grounding_section
from geodelta.pipelines.report.metrics import (
    SampleScore,
    ks_distance,
    release_scores,
    tv_distance,
    validation_scores,
)
from geodelta.pipelines.report.reference import reference_section
from geodelta.pipelines.report.samples import REVIEW_THUMBNAILS, gallery_keys, gallery_section
from geodelta.pipelines.report.sections import (
    captions_section,
    coregistration_section,
    funnel_section,
    map_section,
    qa_section,
    summary_section,
    time_section,
    transitions_section,
)
from geodelta.pipelines.report.series import series_section
from geodelta.pipelines.report.validation import validation_section
from geodelta.pipelines.report.verdict import verdict_section
from geodelta.secrets import redact_values

if TYPE_CHECKING:
    from geodelta.pipelines.release.sidecar import Sidecar
    from geodelta.pipelines.release.verify import CarriedShard, VerifyResult
    from geodelta.pipelines.report.data import Release

__all__ = [
    "PROVENANCE_FIELDS",
    "REPORT_DIR",
    "REPORT_FILE",
    "ReleaseDiff",
    "SampleScore",
    "diff_releases",
    "ks_distance",
    "plain_sections",
    "render_report",
    "tv_distance",
    "validation_scores",
    "write_report",
]

_log = logging.getLogger(__name__)

_TOC = (
    ("verdict", "Verdict"),
    ("diff", "Diff to previous"),
    ("summary", "Summary"),
    ("funnel", "Quarantine funnel"),
    ("transitions", "Class transitions"),
    ("captions", "Captions"),
    ("qa", "Questions and answers"),
    ("coregistration", "Co-registration"),
    ("map", "Map"),
    ("time", "Time gap"),
    ("series", "Dates and temporal QA"),
    ("validation", "Validation"),
    ("gallery", "Samples"),
    ("reference", "Reference model"),
    ("drift", "Catalog drift"),
    ("grounding", "Grounding"),
)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@cache
def _environment() -> jinja2.Environment:
    """The templates of this package (``templates/``), autoescaped, undefined names an error."""
    env: jinja2.Environment = templates_environment()
    env.filters["data_uri"] = _data_uri
    return env


def render_report(
    release_dir: str | Path, *, previous: str | Path | None = None, max_gallery: int = 8
) -> str:
    """The report page of a release as HTML text (what :func:`write_report` writes).

    Args:
        release_dir: a release written by :func:`geodelta.pipelines.release.assemble.write_release`.
        previous: an earlier release to diff against, or ``None``.
        max_gallery: samples shown in the gallery (half of them, rounded up, the worst by
            validation score).

    Raises:
        ReleaseError: a release has no (valid) manifest.
    """
    return _render(Path(release_dir), previous, max_gallery, frozenset())[0]


#: How many sections :func:`plain_sections` draws.
_PLAIN = 6


def _plain_sections(rel: Release, scores: Sequence[SampleScore]) -> list[Any]:
    """The sections drawn from the release's tables and files alone (not from the samples
    the scan reads from the shards, nor from a previous release), in page order: funnel,
    co-registration, map, time, validation, drift."""
    return [
        funnel_section(rel),
        coregistration_section(rel),
        map_section(rel),
        time_section(rel),
        validation_section(rel, scores),
        drift_section(rel),
    ]


def plain_sections(release_dir: str) -> list[Any]:
    """:func:`_plain_sections` of the release in ``release_dir``: what a build's sidecar
    (:mod:`~geodelta.pipelines.release.sidecar`) draws while the report reads the shards."""
    rel = open_release(Path(release_dir))
    return _plain_sections(rel, release_scores(rel))


def _render(
    release_dir: Path,
    previous: str | Path | None,
    max_gallery: int,
    trusted: Collection[str],
    carried: Mapping[str, CarriedShard] | None = None,
    sidecar: Sidecar | None = None,
) -> tuple[str, VerifyResult]:
    """The page and its verify's result (decode digests recorded; ``trusted``, ``carried``
    and ``sidecar``: see :func:`write_report`)."""
    from geodelta.pipelines.report.scan import scan_release  # verify's imports: GDAL, PIL

    rel = open_release(release_dir)
    manifest = rel.manifest
    scores = release_scores(rel)
    worst, others = gallery_keys(rel.rows, scores, max_gallery)
    review = review_keys(rel.rows, review_count(rel.reference))
    # the sections drawn from the tables alone, by the build's sidecar meanwhile (if any)
    if sidecar is not None:
        sidecar.submit(f"{__name__}:plain_sections", release_dir=str(release_dir.resolve()))
    # one read of each shard: verify's, shared by the sections that read every sample
    scan = scan_release(
        rel,
        [*worst, *others, *review[:REVIEW_THUMBNAILS]],
        digests=previous is not None,
        trusted=trusted,
        carried=carried,
    )
    prev = load_release(previous) if previous is not None else None
    # this process's sections (they read the samples the scan read), drawn before it takes the
    # sidecar's: the two draw side by side
    verdict = verdict_section(rel, previous, verified=scan.verified)
    diff = [diff_section(rel, prev, scores)] if prev is not None else []
    summary = summary_section(rel)
    samples = [transitions_section(rel), captions_section(rel), qa_section(rel)]
    series = series_section(rel, scan.series)  # None for a pair release
    gallery = gallery_section(rel, worst, others, scores)
    reference = reference_section(rel, review)
    grounding = grounding_section(rel, scan.grounding)
    # (False, None) when it was not asked (no child) or has no answer: drawn here then
    ok, plain = sidecar.collect() if sidecar is not None else (False, None)
    if not ok or not isinstance(plain, list) or len(plain) != _PLAIN:
        plain = _plain_sections(rel, scores)
    funnel, coregistration, where, when, validation, drift = plain
    sections = [
        verdict,  # the first screen: PUBLISH or DO NOT PUBLISH, and why
        *diff,
        summary,
        funnel,
        *samples,  # transitions, captions, QA
        coregistration,
        where,
        when,
        *([series] if series is not None else []),
        validation,
        gallery,
        reference,
        drift,
        grounding,
    ]
    page = (
        _environment()
        .get_template("report.html")
        .render(
            title=f"{manifest.name} {manifest.version}: quality report",
            code_version=manifest.code_version,
            config_hash=manifest.config_hash[:12],
            compared=prev.manifest.version if prev is not None else None,
            toc=[
                (i, t)
                for i, t in _TOC
                if (i != "diff" or prev is not None) and (i != "series" or series is not None)
            ],
            sections=sections,
        )
    )
    return page, scan.verified


def write_report(
    release_dir: str | Path,
    *,
    previous: str | Path | None = None,
    max_gallery: int = 8,
    trusted: Collection[str] = frozenset(),
    carried: Mapping[str, CarriedShard] | None = None,
    sidecar: Sidecar | None = None,
) -> Path:
    """Write ``<release_dir>/report/index.html`` and ``report/verified.json`` (atomically) and
    list them in the manifest.

    ``verified.json`` records the decode digest (:func:`~geodelta.pipelines.release.verify.decode_digest`)
    of every sample the page's verify found without a problem: a later ``build --from`` that
    copies those samples byte for byte passes them as ``trusted``.

    Args:
        release_dir: a release written by :func:`geodelta.pipelines.release.assemble.write_release`.
        previous: an earlier release to diff against (``geodelta report --previous``).
        max_gallery: samples shown in the gallery.
        trusted: decode digests whose samples passed the same decode checks before (see
            :func:`~geodelta.pipelines.release.verify.verify_release`): the workers' of the
            build, a previous release's ``verified.json``; how many samples were spared their
            decodes is logged (INFO), not on the page, which reads the same either way.
        carried: shards verified before, by sha256 (a previous release's ``verified.json``, for
            the shards ``build --from`` copied whole): their checks are not run again nor their
            images read (:func:`~geodelta.pipelines.release.verify.verify_release`); the page
            reads the same either way.
        sidecar: a build's sidecar process (:mod:`~geodelta.pipelines.release.sidecar`): it
            draws the sections that read only the tables (:func:`plain_sections`) while this
            process reads the shards; drawn here when it has no answer. The same page.

    Returns:
        Path of the HTML file.

    Raises:
        ReleaseError: the release (or the previous one) has no (valid) manifest.
    """
    root = Path(release_dir)
    if previous is not None and Path(previous).resolve() == root.resolve():
        raise ReleaseError(
            f"--previous {previous} is the release itself; give the earlier release's folder",
            path=str(previous),
        )
    page, verified = _render(root, previous, max_gallery, trusted, carried, sidecar)
    if verified.carried:  # not on the page: it reads the same however its verify went
        _log.info(
            "report: the PNG and GeoTIFF decodes of %d of %d samples were not repeated (the same "
            "checks passed on the same bytes before: on the workers that encoded them, or in "
            "the previous release's %s)",
            verified.carried,
            verified.samples,
            VERIFIED,
        )
    out = root / REPORT_DIR / REPORT_FILE
    write_atomic(out, redact_values(page))  # no secret by value in the report's text
    write_atomic(root / VERIFIED, verified_json(verified))
    # the manifest lists the page and the record as they are now
    list_files(root, [f"{REPORT_DIR}/{REPORT_FILE}", VERIFIED])
    return out


def verified_json(verified: VerifyResult) -> bytes:
    """The bytes of ``report/verified.json`` for a verify's result (keys sorted, one line)."""
    from geodelta.pipelines.release.verify import DECODE_CHECKS

    record = {
        "decode_checks": DECODE_CHECKS,
        "samples": dict(verified.passed),
        "shards": {
            sha: {"context": context, "keys": list(keys)}
            for sha, (context, keys) in verified.shards.items()
        },
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
