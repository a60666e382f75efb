"""The figures and tables of the report's sections, as plain data for the templates.

Each ``*_section`` function reads a :class:`~geodelta.pipelines.report.data.Release` and
returns a :class:`Section`: its ``id`` (also the name of its template, ``templates/<id>.html``),
its title and a dict of what the template shows: :class:`Table` s of preformatted text,
:class:`Plot` s (PNG bytes), short texts. No HTML is written here; the templates escape
every value.

This module holds the sections about the samples' content (summary, quarantine funnel, class
transitions, captions, QA, co-registration, map, time gap); validation, gallery, reference and
diff have their own modules.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args
from urllib.parse import quote

import numpy as np

from geodelta.pipelines.release.layout import INCREMENTAL, QUARANTINE_TABLE, read_json
from geodelta.pipelines.report import plots
from geodelta.pipelines.report.data import Release, cfg
from geodelta.pipelines.report.metrics import col, eps, mean, median, num, pct, shifts, words
from geodelta.schemas import ReleaseManifest
from geodelta.schemas.config import PairingConfig, ValidationConfig
from geodelta.schemas.records import QuarantineStage

__all__ = [
    "LIST_LIMIT",
    "STAGE_ORDER",
    "Link",
    "Plot",
    "Section",
    "Table",
    "aoi",
    "box",
    "captions_section",
    "coregistration_section",
    "funnel_section",
    "map_section",
    "qa_section",
    "release_link",
    "summary_section",
    "table",
    "time_section",
    "transitions_section",
]

#: Rows listed per table of keys or records (diff key lists, GX records).
LIST_LIMIT = 200

#: Pipeline order of the quarantine stages (unknown stages sort after these).
STAGE_ORDER: tuple[str, ...] = get_args(QuarantineStage)


@dataclass(frozen=True)
class Table:
    """A table of text: header cells, rows of cells, the (right-aligned) numeric columns."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Plot:
    """One figure: PNG bytes, its alt text, and a colour legend ``(#rrggbb, label)`` (masks)."""

    png: bytes
    alt: str
    legend: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Link:
    """A link from ``report/index.html`` to a file of the release."""

    href: str
    text: str


def release_link(path: str, text: str | None = None) -> Link:
    """A relative, URL-quoted link to ``path`` (relative to the release folder)."""
    return Link("../" + quote(path, safe="/"), path if text is None else text)


@dataclass(frozen=True)
class Section:
    """One section of the page: ``<section id=...>`` with a title; ``data`` feeds its template.

    ``empty`` marks a section with nothing to show (the template is not used: "No samples.").
    """

    ident: str
    title: str
    data: dict[str, Any] = field(default_factory=dict)
    empty: bool = False


def _cell(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return num(value)
    return str(value)


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Iterable[int] = ()
) -> Table:
    """A :class:`Table`; numbers are written by :func:`~.metrics.num`, the rest as ``str``."""
    return Table(
        tuple(headers),
        tuple(tuple(_cell(v) for v in row) for row in rows),
        frozenset(numeric),
    )


def _empty(ident: str, title: str) -> Section:
    return Section(ident, title, empty=True)


# --------------------------------------------------------------------------------------------
# Summary and funnel


def summary_section(rel: Release) -> Section:
    """Dataset, counts, dates, licence, annotators, LLM spend; samples and shards per split."""
    manifest = rel.manifest
    config = rel.config
    rows = rel.rows
    t0s = [r["t0"] for r in rows if r.get("t0") is not None]
    t1s = [r["t1"] for r in rows if r.get("t1") is not None]
    annotators = sorted({str(r.get("annotator", "")) for r in rows})
    items = [
        ("dataset", f"{manifest.name} {manifest.version}"),
        ("samples", str(sum(manifest.splits.values()))),
        ("quarantined", str(sum(manifest.quarantined.values()))),
        ("shards", str(len(manifest.shards))),
        ("cells", str(len({r["cell_id"] for r in rows}))),
        ("regions", ", ".join(sorted({str(r.get("region", "")) for r in rows})) or "–"),
        ("before dates", f"{min(t0s):%Y-%m-%d} .. {max(t0s):%Y-%m-%d}" if t0s else "–"),
        ("after dates", f"{min(t1s):%Y-%m-%d} .. {max(t1s):%Y-%m-%d}" if t1s else "–"),
        ("imagery", str(cfg(config, "imagery", "collection", "–"))),
        ("labels", str(cfg(config, "labels", "kind", "–"))),
        ("annotators", ", ".join(annotators) or "–"),
        (
            "LLM tokens / cost",
            f"{sum(int(r.get('tokens_in', 0) + r.get('tokens_out', 0)) for r in rows)} / "
            f"{sum(float(r.get('cost_usd', 0.0)) for r in rows):.2f} USD",
        ),
        ("licence", str(config.get("licence", "–"))),
        ("attribution", str(config.get("attribution", "–"))),
        ("config hash", manifest.config_hash),
        ("code version", manifest.code_version),
        ("schema version", manifest.schema_version),
    ]
    if (rel.root / INCREMENTAL).is_file():  # a build --from: what it reused
        inc = read_json(rel.root, INCREMENTAL)
        items.append(
            (
                "built from",
                f"{inc['from']}: {inc['reused']} cells reused, {inc['new']} new, "
                f"{inc['changed']} changed ({inc['retried']} quarantined there, retried), "
                f"{inc.get('carried', 0)} carried over (quarantined there on the same data), "
                f"{inc['removed']} removed",
            )
        )
    shard_counts: dict[str, int] = defaultdict(int)
    for s in manifest.shards:
        shard_counts[s.split] += 1
    splits = [(split, n, shard_counts[split]) for split, n in sorted(manifest.splits.items())]
    return Section(
        "summary", "Summary", {"items": items, "splits": splits, "problems": rel.problems}
    )


def _funnel_rows(manifest: ReleaseManifest) -> list[tuple[int, str, str, int]]:
    rows = []
    for k, n in manifest.quarantined.items():
        stage, _, reason = k.partition(":")
        rank = STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)
        rows.append((rank, stage, reason, n))
    rows.sort(key=lambda r: (r[0], r[1], -r[3], r[2]))
    return rows


def funnel_section(rel: Release) -> Section:
    """Quarantined records by stage (pipeline order, what remained) and by ``stage:reason``."""
    manifest = rel.manifest
    if not manifest.quarantined:
        return Section("funnel", "Quarantine funnel", {"nothing": True})
    rows = _funnel_rows(manifest)
    kept = sum(manifest.splits.values())
    dropped = sum(manifest.quarantined.values())
    by_stage: dict[str, int] = {}
    for _, stage, _, n in rows:
        by_stage[stage] = by_stage.get(stage, 0) + n
    remaining = kept + dropped
    stage_rows: list[tuple[object, ...]] = [("(records in)", "", remaining)]
    for stage, n in by_stage.items():
        remaining -= n
        stage_rows.append((stage, n, remaining))
    top = max(r[3] for r in rows)
    reasons = [(stage, reason, n, f"{100.0 * n / top:.1f}") for _, stage, reason, n in rows]
    return Section(
        "funnel",
        "Quarantine funnel",
        {
            "nothing": False,
            "stages": table(["stage", "dropped", "remaining after"], stage_rows, numeric=(1, 2)),
            "reasons": reasons,
            "kept": kept,
            "dropped": dropped,
            "quarantine_table": QUARANTINE_TABLE,
        },
    )


# --------------------------------------------------------------------------------------------
# Change, captions, QA


def transitions_section(rel: Release) -> Section:
    """Class-transition distribution and the changed-fraction histogram."""
    title = "Change: class transitions and changed fraction"
    if not rel.rows:
        return _empty("transitions", title)
    pixels: Counter[str] = Counter()
    area: dict[str, float] = defaultdict(float)
    samples: Counter[str] = Counter()
    for s in rel.samples.values():
        seen = set()
        for a, b, px, a_m2 in s.transitions:
            name = f"{a} -> {b}"
            pixels[name] += px
            area[name] += a_m2
            seen.add(name)
        samples.update(seen)
    total_px = sum(pixels.values())
    ranked = sorted(pixels, key=lambda k: (-pixels[k], k))
    no_change = eps(rel.config)
    cf = col(rel.rows, "changed_fraction")
    n_none = sum(1 for x in cf if x <= no_change)
    figs = []
    if ranked:
        top = ranked[:12]
        png = plots.bars(
            top,
            [100.0 * pixels[k] / total_px for k in top],
            title="Class transitions (share of changed pixels)",
            xlabel="% of changed pixels",
        )
        figs.append(Plot(png, "class transitions"))
    hi = max(cf) if cf else 0.0
    png = plots.histogram(
        [("samples", cf)],
        title="Changed fraction per sample",
        xlabel="changed fraction of valid pixels",
        bins=list(np.linspace(0.0, max(hi, 0.01), 21)),
        limits=[("no-change epsilon", no_change)] if no_change > 0 else [],
    )
    figs.append(Plot(png, "changed fraction histogram"))
    ranking = None
    if ranked:
        ranking = table(
            ["transition", "samples", "pixels", "share of changed pixels", "area (km²)"],
            (
                (k, samples[k], pixels[k], pct(pixels[k] / total_px), f"{area[k] / 1e6:.3f}")
                for k in ranked[:20]
            ),
            numeric=(1, 2, 3, 4),
        )
    return Section(
        "transitions",
        title,
        {
            "changed": len(cf) - n_none,
            "samples": len(cf),
            "eps": f"{no_change:g}",
            "distinct": len(ranked),
            "pixels": total_px,
            "plots": figs,
            "ranking": ranking,
        },
    )


def captions_section(rel: Release) -> Section:
    """Captions per sample, caption length, vocabulary, distinct captions, top words."""
    caps = [c for s in rel.samples.values() for c in s.captions]
    if not caps:
        return _empty("captions", "Captions")
    tokens = [words(c) for c in caps]
    counts: Counter[str] = Counter(w for ws in tokens for w in ws)
    n_words = [len(ws) for ws in tokens]
    n_chars = [len(c) for c in caps]
    per_sample = [len(s.captions) for s in rel.samples.values()]
    stats = [
        ("captions", len(caps)),
        (
            "captions per sample (min / mean / max)",
            f"{min(per_sample)} / {mean(per_sample):.2f} / {max(per_sample)}",
        ),
        ("characters (min / mean / max)", f"{min(n_chars)} / {mean(n_chars):.1f} / {max(n_chars)}"),
        ("words (min / mean / max)", f"{min(n_words)} / {mean(n_words):.1f} / {max(n_words)}"),
        ("vocabulary (distinct words)", len(counts)),
        ("type-token ratio", f"{len(counts) / max(1, sum(counts.values())):.4f}"),
        ("distinct captions", f"{len(set(caps))} ({pct(len(set(caps)) / len(caps))})"),
    ]
    lo, hi = cfg(rel.config, "validation", "caption_chars", ValidationConfig().caption_chars)
    length = plots.histogram(
        [("captions", n_chars)],
        title="Caption length",
        xlabel="characters",
        ylabel="captions",
        limits=[("min chars", float(lo)), ("max chars", float(hi))]
        if max(n_chars) * 1.5 >= hi
        else [("min chars", float(lo))],
    )
    top = sorted(counts, key=lambda w: (-counts[w], w))[:20]
    top_words = plots.bars(
        top, [counts[w] for w in top], title="Most frequent words", xlabel="count"
    )
    return Section(
        "captions",
        "Captions: length and vocabulary",
        {
            "stats": table(["statistic", "value"], stats),
            "plots": [Plot(length, "caption length histogram"), Plot(top_words, "top words")],
        },
    )


def qa_section(rel: Release) -> Section:
    """QA type counts and answer balance per type."""
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for s in rel.samples.values():
        for t, a in s.qa:
            by_type[t][a] += 1
    if not by_type:
        return _empty("qa", "Questions and answers")
    types = sorted(by_type, key=lambda t: (-sum(by_type[t].values()), t))
    n_samples = max(1, len(rel.samples))
    rows = []
    for t in types:
        c = by_type[t]
        n = sum(c.values())
        ranked = sorted(c, key=lambda a: (-c[a], a))
        top = " · ".join(f"{a} {pct(c[a] / n)}" for a in ranked[:5])
        if len(ranked) > 5:
            top += f" · ({len(ranked) - 5} more)"
        rows.append((t, n, pct(n / n_samples), len(c), pct(c[ranked[0]] / n), top))
    png = plots.bars(
        types, [sum(by_type[t].values()) for t in types], title="QA items per type", xlabel="items"
    )
    return Section(
        "qa",
        "Questions and answers: types and answer balance",
        {
            "types": table(
                ["type", "items", "coverage", "distinct answers", "majority share", "answers"],
                rows,
                numeric=(1, 2, 3, 4),
            ),
            "plots": [Plot(png, "QA types")],
        },
    )


# --------------------------------------------------------------------------------------------
# Co-registration, map, time


def coregistration_section(rel: Release) -> Section:
    """Shift and residual distributions against the validation limits."""
    rows = rel.rows
    if not rows:
        return _empty("coregistration", "Co-registration")
    val = ValidationConfig()
    max_shift = float(cfg(rel.config, "validation", "max_abs_shift_px", val.max_abs_shift_px))
    max_res = float(cfg(rel.config, "validation", "max_residual_px", val.max_residual_px))
    shift = shifts(rows)
    res = col(rows, "residual_px")
    applied = sum(1 for r in rows if r.get("coreg_applied"))
    stats = [
        ("shift applied", f"{applied} of {len(rows)}"),
        ("|shift| px (median / max)", f"{median(shift):.3f} / {max(shift):.3f}"),
        ("residual px (median / max)", f"{median(res):.3f} / {max(res):.3f}"),
        ("limits", f"|shift| <= {max_shift:g}, residual <= {max_res:g} (validation.*)"),
    ]
    figs = [
        Plot(
            plots.histogram(
                [("samples", shift)],
                title="Co-registration shift",
                xlabel="|shift| (px)",
                from_zero=True,
                limits=[("max_abs_shift_px", max_shift)],
            ),
            "shift histogram",
        ),
        Plot(
            plots.histogram(
                [("samples", res)],
                title="Co-registration residual",
                xlabel="residual (px)",
                from_zero=True,
                limits=[("max_residual_px", max_res)],
            ),
            "residual histogram",
        ),
        Plot(
            plots.scatter(
                col(rows, "shift_dx"),
                col(rows, "shift_dy"),
                title="Shift applied (dx, dy)",
                xlabel="dx (px)",
                ylabel="dy (px)",
                radius=max_shift,
            ),
            "shift scatter",
        ),
    ]
    return Section(
        "coregistration",
        "Co-registration: shift and residual",
        {"stats": table(["statistic", "value"], stats), "plots": figs},
    )


def box(r: dict[str, Any]) -> plots.Box:
    """The lon/lat footprint of a ``samples.parquet`` row."""
    return (float(r["min_lon"]), float(r["min_lat"]), float(r["max_lon"]), float(r["max_lat"]))


def aoi(config: dict[str, Any]) -> plots.Box | None:
    """The AOI box of a build config, if it has one."""
    bbox = cfg(config, "aoi", "bbox", None)
    if isinstance(bbox, list | tuple) and len(bbox) == 4:
        return (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    return None


def map_section(rel: Release) -> Section:
    """The sample footprints in lon/lat, coloured by split, the AOI box dashed."""
    if not rel.rows:
        return _empty("map", "Map of sample footprints")
    boxes = [(box(r), str(r["split"])) for r in rel.rows]
    lons = [v for b, _ in boxes for v in (b[0], b[2])]
    lats = [v for b, _ in boxes for v in (b[1], b[3])]
    png = plots.footprint_map(
        boxes, colours=plots.SPLIT_COLOURS, title="Sample footprints by split", aoi=aoi(rel.config)
    )
    return Section(
        "map",
        "Map of sample footprints",
        {
            "count": len(boxes),
            "lon": f"{min(lons):.4f}..{max(lons):.4f}",
            "lat": f"{min(lats):.4f}..{max(lats):.4f}",
            "plots": [Plot(png, "map of sample footprints")],
        },
    )


def time_section(rel: Release) -> Section:
    """The distribution of the time gap t1 - t0."""
    title = "Time gap between before and after"
    gaps = col(rel.rows, "gap_days")
    if not gaps:
        return _empty("time", title)
    pairing = PairingConfig()
    lo = float(cfg(rel.config, "pairing", "min_gap_days", pairing.min_gap_days))
    hi = float(cfg(rel.config, "pairing", "max_gap_days", pairing.max_gap_days))
    limits = [("min_gap_days", lo)]
    if hi <= 2 * max(gaps):
        limits.append(("max_gap_days", hi))
    stats = [
        (
            "gap days (min / median / max)",
            f"{min(gaps):.1f} / {median(gaps):.1f} / {max(gaps):.1f}",
        )
    ]
    png = plots.histogram(
        [("samples", gaps)], title="Time gap t1 - t0", xlabel="days", limits=limits
    )
    return Section(
        "time",
        title,
        {"stats": table(["statistic", "value"], stats), "plots": [Plot(png, "time gap histogram")]},
    )
