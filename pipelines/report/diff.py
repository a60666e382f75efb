"""The diff to a previous release: keys, config, metric deltas, distribution shifts, a map.

Key diff: a key present in both releases is *changed* when any member other than ``json``
has a different sha256, or when a field of the ``json`` metadata differs, provenance fields
(``config_hash``, ``code_version``) excepted: a new build always changes those.

Distribution shifts are Kolmogorov-Smirnov distances (numeric columns) and total variation
distances (categories), with overlaid histograms; the map shows added, removed and changed
footprints.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geodelta.pipelines.report import plots
from geodelta.pipelines.report.data import PROVENANCE_FIELDS, Release, load_release
from geodelta.pipelines.report.metrics import (
    SampleScore,
    Signed,
    caption_words,
    col,
    flatten,
    headline_metrics,
    ks_distance,
    num,
    qa_types,
    release_scores,
    scalar,
    shifts,
    transition_pixels,
    tv_distance,
)
from geodelta.pipelines.report.sections import LIST_LIMIT, Plot, Section, aoi, box, table
from geodelta.pipelines.report.verdict import metric_changes, reference_metrics

__all__ = ["ReleaseDiff", "Signed", "diff_releases", "diff_section"]


@dataclass(frozen=True)
class ReleaseDiff:
    """Keys added, removed and changed between a previous and the current release.

    ``changed`` maps each changed key to what changed: member names (sha256 differs) and
    ``meta.<field>`` names (metadata field differs; provenance fields excepted).
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: dict[str, tuple[str, ...]]
    unchanged: int


def _diff_keys(cur: Release, prev: Release) -> ReleaseDiff:
    a, b = set(prev.samples), set(cur.samples)
    changed: dict[str, tuple[str, ...]] = {}
    unchanged = 0
    for key in sorted(a & b):
        p, c = prev.samples[key], cur.samples[key]
        what = [
            m
            for m in sorted(set(p.members) | set(c.members))
            if p.members.get(m) != c.members.get(m)
        ]
        what += [
            f"meta.{f}"
            for f in sorted(set(p.meta_fields) | set(c.meta_fields))
            if p.meta_fields.get(f) != c.meta_fields.get(f)
        ]
        if what:
            changed[key] = tuple(what)
        else:
            unchanged += 1
    return ReleaseDiff(tuple(sorted(b - a)), tuple(sorted(a - b)), changed, unchanged)


def diff_releases(current_dir: str | Path, previous_dir: str | Path) -> ReleaseDiff:
    """Compare the samples of two releases key by key (reads every shard of both).

    Args:
        current_dir: the newer release.
        previous_dir: the release to compare against.

    Raises:
        ReleaseError: either release has no (valid) manifest.
    """
    return _diff_keys(load_release(current_dir), load_release(previous_dir))


def _key_list(
    keys: Sequence[str], what: dict[str, tuple[str, ...]] | None = None
) -> dict[str, Any]:
    """At most :data:`LIST_LIMIT` keys (with what changed), and how many more there are."""
    shown = keys[:LIST_LIMIT]
    return {
        "listed": [(k, ", ".join(what[k]) if what else None) for k in shown],
        "more": len(keys) - len(shown),
    }


def _metric_rows(
    prev: Release,
    cur: Release,
    prev_scores: Sequence[SampleScore],
    cur_scores: Sequence[SampleScore],
) -> list[tuple[str, str, str, Signed | None]]:
    pmet = headline_metrics(prev, prev_scores)
    cmet = headline_metrics(cur, cur_scores)
    rows = []
    for name in list(cmet) + [k for k in pmet if k not in cmet]:
        p, c = pmet.get(name, float("nan")), cmet.get(name, float("nan"))
        delta = c - p if math.isfinite(p) and math.isfinite(c) else float("nan")
        rows.append((name, num(p), num(c), Signed.of(delta)))
    return rows


def _shift_plots(
    prev: Release, cur: Release, numeric: list[tuple[str, list[float], list[float], str]]
) -> list[Plot]:
    pv, cv = prev.manifest.version, cur.manifest.version
    figs = []
    for name, before, after, unit in numeric:
        if not before or not after:
            continue
        png = plots.histogram(
            [(f"previous {pv}", before), (f"current {cv}", after)],
            title=f"{name}: previous vs current",
            xlabel=unit,
            density=True,
        )
        figs.append(Plot(png, f"{name} previous vs current"))
    qa_p, qa_c = qa_types(prev), qa_types(cur)
    qtypes = sorted(set(qa_p) | set(qa_c))
    if qtypes:
        sp, sc = max(1, sum(qa_p.values())), max(1, sum(qa_c.values()))
        png = plots.bars(
            qtypes,
            [[100.0 * qa_p[t] / sp for t in qtypes], [100.0 * qa_c[t] / sc for t in qtypes]],
            title="QA types: previous vs current",
            xlabel="% of QA items",
            series=[f"previous {pv}", f"current {cv}"],
        )
        figs.append(Plot(png, "QA types previous vs current"))
    return figs


def _distributions(
    prev: Release,
    cur: Release,
    prev_scores: Sequence[SampleScore],
    cur_scores: Sequence[SampleScore],
) -> dict[str, Any]:
    pm, cm = prev.manifest, cur.manifest
    numeric = [
        (
            "changed fraction",
            col(prev.rows, "changed_fraction"),
            col(cur.rows, "changed_fraction"),
            "changed fraction",
        ),
        ("time gap (days)", col(prev.rows, "gap_days"), col(cur.rows, "gap_days"), "days"),
        ("|shift| (px)", shifts(prev.rows), shifts(cur.rows), "px"),
        ("residual (px)", col(prev.rows, "residual_px"), col(cur.rows, "residual_px"), "px"),
        ("caption words", caption_words(prev), caption_words(cur), "words"),
        (
            "validation score",
            [s.score for s in prev_scores],
            [s.score for s in cur_scores],
            "score",
        ),
    ]
    categorical = [
        (
            "split",
            Counter(str(r["split"]) for r in prev.rows),
            Counter(str(r["split"]) for r in cur.rows),
        ),
        ("QA type", qa_types(prev), qa_types(cur)),
        ("transition (pixels)", transition_pixels(prev), transition_pixels(cur)),
        ("quarantine stage:reason", Counter(pm.quarantined), Counter(cm.quarantined)),
    ]
    rows: list[tuple[object, ...]] = [
        (name, "Kolmogorov-Smirnov D", f"{ks_distance(p, c):.3f}" if p and c else "–")
        for name, p, c, _ in numeric
    ]
    rows += [
        (name, "total variation", f"{tv_distance(dict(p), dict(c)):.3f}" if p and c else "–")
        for name, p, c in categorical
    ]
    return {
        "distances": table(["distribution", "distance", "value"], rows, numeric=(2,)),
        "plots": _shift_plots(prev, cur, numeric),
    }


def diff_section(cur: Release, prev: Release, cur_scores: Sequence[SampleScore]) -> Section:
    """The diff of ``cur`` against ``prev`` (both scanned: every shard read)."""
    d = _diff_keys(cur, prev)
    pm, cm = prev.manifest, cur.manifest
    prev_scores = release_scores(prev)
    pc, cc = dict(flatten(pm.config)), dict(flatten(cm.config))
    cfg_rows = [
        (k, scalar(pc.get(k, "(absent)")), scalar(cc.get(k, "(absent)")))
        for k in sorted(set(pc) | set(cc))
        if pc.get(k) != cc.get(k)
    ]
    what = Counter(w for ws in d.changed.values() for w in ws)
    by_what = sorted(what.items(), key=lambda kv: (-kv[1], kv[0]))
    reasons = sorted(set(pm.quarantined) | set(cm.quarantined))
    status = {k: "added" for k in d.added} | {k: "changed" for k in d.changed}
    boxes = [(box(r), status.get(str(r["key"]), "unchanged")) for r in cur.rows]
    removed = set(d.removed)
    boxes += [(box(r), "removed") for r in prev.rows if r["key"] in removed]
    diff_map = None
    if boxes:
        png = plots.footprint_map(
            boxes,
            colours=plots.DIFF_COLOURS,
            title="Footprints: diff to the previous version",
            aoi=aoi(cm.config),
        )
        diff_map = Plot(png, "diff map")
    data: dict[str, Any] = {
        "prev": pm,
        "reference": metric_changes(
            reference_metrics(cur.reference), reference_metrics(prev.reference)
        ),
        "provenance": ", ".join(sorted(PROVENANCE_FIELDS)),
        "counts": table(
            ["previous", "current", "added", "removed", "changed", "unchanged"],
            [
                (
                    len(prev.samples),
                    len(cur.samples),
                    len(d.added),
                    len(d.removed),
                    len(d.changed),
                    d.unchanged,
                )
            ],
            numeric=range(6),
        ),
        "problems": prev.problems,
        "config": table(["key", "previous", "current"], cfg_rows) if cfg_rows else None,
        "what": table(["what changed", "samples"], by_what, numeric=(1,)) if what else None,
        "key_lists": [
            ("Added", len(d.added), _key_list(d.added)),
            ("Removed", len(d.removed), _key_list(d.removed)),
            ("Changed", len(d.changed), _key_list(sorted(d.changed), d.changed)),
        ],
        "metrics": _metric_rows(prev, cur, prev_scores, cur_scores),
        "quarantine": [
            (
                r,
                pm.quarantined.get(r, 0),
                cm.quarantined.get(r, 0),
                Signed.of(float(cm.quarantined.get(r, 0) - pm.quarantined.get(r, 0))),
            )
            for r in reasons
        ],
        "map": diff_map,
        **_distributions(prev, cur, prev_scores, cur_scores),
    }
    return Section("diff", f"Diff against {pm.name} {pm.version}", data)
