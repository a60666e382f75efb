"""The per-version quality report: ``<release>/report/index.html``.

One self-contained HTML file that opens from disk with no network: inline CSS, every plot and
image a PNG ``data:`` URI, no script, no external link. Sections (in page order, each with an
``id``):

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
``validation``
    the Great Expectations summary written by the validate stage (``validation/summary.json``,
    with relative links into ``validation/`` for the Data Docs; "not run" when absent) and the
    per-sample validation score.
``gallery``
    before/after/mask, captions and QA of the WORST samples by validation score, then of a
    deterministic pick of the others (smallest sha256 of the key).
``reference``
    the reference model's metrics (``reference/metrics.json``; "not trained yet" when absent).
``diff``
    against a previous release (``previous=``): added/removed/changed keys, config changes,
    metric deltas, distribution shifts (overlaid histograms, Kolmogorov-Smirnov and total
    variation distances), a map of added/removed/changed footprints.

Validation score (per sample, 0..1, lower is worse): the smallest *headroom* the sample has to
any rule limit it had to pass, where a headroom is 1 far from the limit and 0 at the limit:

- ``clear``: ``(min(before_clear, after_clear) - t) / (1 - t)``, ``t = pairing.min_clear_fraction``
  (skipped when both clear fractions are unknown);
- ``valid``: the same with ``min(before_valid, after_valid)`` and ``pairing.min_valid_fraction``;
- ``shift``: ``1 - |(dy, dx)| / validation.max_abs_shift_px``;
- ``residual``: ``1 - residual_px / validation.max_residual_px``.

Each is clipped to [0, 1]; the component that sets the score is shown with it. Every released
sample passed the rules, so a low score means "close to being rejected": those are the samples
a reviewer should look at first.

Key diff: a key present in both releases is *changed* when any member other than ``json``
has a different sha256, or when a field of the ``json`` metadata differs, provenance fields
(``config_hash``, ``code_version``) excepted: a new build always changes those.

Everything is deterministic: the same release (and previous release) give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import re
import tarfile
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from geodelta.errors import ReleaseError
from geodelta.pipelines.release.layout import (
    QUARANTINE_TABLE,
    SAMPLES_TABLE,
    iter_tar_samples,
    read_manifest,
)
from geodelta.pipelines.report import plots
from geodelta.schemas import ReleaseManifest
from geodelta.schemas.classes import BINARY_CHANGE, N_CLASSES
from geodelta.schemas.config import AnnotationConfig, PairingConfig, ValidationConfig
from geodelta.schemas.records import QuarantineStage

__all__ = [
    "REFERENCE_METRICS",
    "REPORT_DIR",
    "REPORT_FILE",
    "VALIDATION_DIR",
    "VALIDATION_SUMMARY",
    "ReleaseDiff",
    "SampleScore",
    "diff_releases",
    "ks_distance",
    "render_report",
    "tv_distance",
    "validation_scores",
    "write_report",
]

REPORT_DIR = "report"
REPORT_FILE = "index.html"
#: Written by the validate stage (Great Expectations results and Data Docs).
VALIDATION_DIR = "validation"
VALIDATION_SUMMARY = "validation/summary.json"
#: Written by the reference-model training.
REFERENCE_METRICS = "reference/metrics.json"
REFERENCE_CARD = "reference/MODEL_CARD.md"
#: The ``format`` of the summary that pipelines/gx_validate.py writes.
GX_SUMMARY_FORMAT = "geodelta.gx-summary/1"

#: Pipeline order of the quarantine stages (unknown stages sort after these).
STAGE_ORDER: tuple[str, ...] = get_args(QuarantineStage)

#: Metadata fields that change with every build and are not counted as a sample change.
PROVENANCE_FIELDS: frozenset[str] = frozenset({"config_hash", "code_version"})

#: Colour of changed pixels in the mask preview, by the class they changed *to* (index 1..11).
_TO_CLASS_RGB: tuple[tuple[int, int, int], ...] = (
    (0, 100, 0),  # tree_cover
    (255, 187, 34),  # shrubland
    (255, 255, 76),  # grassland
    (240, 150, 255),  # cropland
    (250, 0, 0),  # built_up
    (180, 180, 180),  # bare
    (240, 240, 240),  # snow_ice
    (0, 100, 200),  # water
    (0, 150, 160),  # wetland
    (0, 207, 117),  # mangroves
    (250, 230, 160),  # moss_lichen
)

_WORD = re.compile(r"[a-z]+")
_LIST_LIMIT = 200  # keys listed per diff category

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
  padding: 0 1em; }
h1 { margin-bottom: 0.2em; } .sub { color: #666; margin-top: 0; }
h2 { border-bottom: 2px solid #eee; padding-bottom: 0.2em; margin-top: 1.6em; }
nav ul { columns: 3; list-style: none; padding: 0; } nav a { color: #2c5d8f; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bar { background: #c0392b; height: 12px; display: inline-block; }
.barcell { width: 320px; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
img.plot { max-width: 100%; border: 1px solid #eee; }
.sample { border: 1px solid #ddd; border-radius: 6px; padding: 10px; margin: 12px 0; }
.worst .sample { border-color: #c0392b; }
.imgs img { width: 160px; height: 160px; image-rendering: pixelated; margin-right: 6px; }
.imgs figure { display: inline-block; margin: 0 8px 0 0; text-align: center; }
figcaption { font-size: 0.8em; color: #666; }
.key { font-family: monospace; font-size: 0.9em; }
.muted { color: #777; } .pos { color: #1e7d32; } .neg { color: #b71c1c; }
.keys { font-family: monospace; font-size: 0.85em; max-height: 16em; overflow: auto; }
ul { margin: 0.3em 0; }
"""


# --------------------------------------------------------------------------------------------
# Reading a release


@dataclass
class _SampleInfo:
    """What the report needs of one sample read from its shard."""

    members: dict[str, str]  # member -> sha256, all members but ``json``
    meta_fields: dict[str, str]  # metadata field -> sha256 of its JSON (provenance excepted)
    transitions: list[tuple[str, str, int, float]]  # (from, to, pixels, area_m2)
    captions: list[str]
    qa: list[tuple[str, str]]  # (type, answer)


@dataclass
class _Release:
    root: Path
    manifest: ReleaseManifest
    rows: list[dict[str, Any]]  # samples.parquet, by key
    quarantine: list[dict[str, Any]]
    samples: dict[str, _SampleInfo]
    kept: dict[str, dict[str, bytes]]  # members of the gallery samples
    problems: list[str] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.config


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_sha(value: Any) -> str:
    return _sha(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def _read_table(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return list(pq.read_table(path).to_pylist())


def _sample_info(members: dict[str, bytes]) -> _SampleInfo:
    meta = json.loads(members.get("json", b"{}"))
    facts = meta.get("facts", {}) if isinstance(meta, dict) else {}
    captions = json.loads(members.get("captions.json", b"[]"))
    qa = json.loads(members.get("qa.json", b"[]"))
    return _SampleInfo(
        members={n: _sha(v) for n, v in sorted(members.items()) if n != "json"},
        meta_fields={
            k: _json_sha(v) for k, v in sorted(meta.items()) if k not in PROVENANCE_FIELDS
        },
        transitions=[
            (
                str(t.get("from_class", "")),
                str(t.get("to_class", "")),
                int(t.get("pixels", 0)),
                float(t.get("area_m2", 0.0)),
            )
            for t in facts.get("transitions", [])
        ],
        captions=[str(c) for c in captions],
        qa=[(str(q.get("type", "")), str(q.get("answer", ""))) for q in qa],
    )


def _open(root: Path) -> _Release:
    """Read the manifest and both tables (no shard yet)."""
    manifest = read_manifest(root)
    rows = sorted(_read_table(root / SAMPLES_TABLE), key=lambda r: str(r["key"]))
    quarantine = _read_table(root / QUARANTINE_TABLE)
    return _Release(root, manifest, rows, quarantine, samples={}, kept={})


def _scan(rel: _Release, keep: Iterable[str] = ()) -> _Release:
    """One pass over every shard: per-sample digests and text, members of the ``keep`` keys."""
    root = rel.root
    wanted = set(keep)
    for shard in rel.manifest.shards:
        path = root / shard.path
        try:
            for key, members in iter_tar_samples(path):
                rel.samples[key] = _sample_info(members)
                if key in wanted:
                    rel.kept[key] = members
        except (OSError, tarfile.TarError, json.JSONDecodeError) as exc:
            rel.problems.append(f"{shard.path}: cannot be read ({type(exc).__name__}: {exc})")
    return rel


def _load(root: Path, keep: Iterable[str] = ()) -> _Release:
    return _scan(_open(root), keep)


# --------------------------------------------------------------------------------------------
# Validation score


@dataclass(frozen=True)
class SampleScore:
    """Validation score of one sample (see the module docstring)."""

    key: str
    score: float
    limit: str
    components: dict[str, float]


def _cfg(config: dict[str, Any], section: str, name: str, default: Any) -> Any:
    value = config.get(section, {})
    return value.get(name, default) if isinstance(value, dict) else default


def _headroom_fraction(value: float, threshold: float) -> float:
    if threshold >= 1.0:
        return 1.0 if value >= 1.0 else 0.0
    return (value - threshold) / (1.0 - threshold)


def _clip(x: float) -> float:
    return 0.0 if not math.isfinite(x) else min(1.0, max(0.0, x))


def validation_scores(
    rows: Sequence[dict[str, Any]],
    config: dict[str, Any],
    gx_failed: Mapping[str, str] | None = None,
) -> list[SampleScore]:
    """Per-sample validation scores, worst first (ties by key).

    Args:
        rows: rows of ``samples.parquet`` (``key``, clear/valid fractions, shift, residual).
        config: the normalised build config of the release (``manifest.config``); missing keys
            take the config defaults.
        gx_failed: sample key -> name of a Great Expectations expectation its rows failed
            (``unexpected_keys`` of ``validation/summary.json``); such a sample scores 0 with
            that name as its limit.

    Returns:
        One :class:`SampleScore` per row, sorted by ``(score, key)``.
    """
    pairing, val = PairingConfig(), ValidationConfig()
    min_clear = float(_cfg(config, "pairing", "min_clear_fraction", pairing.min_clear_fraction))
    min_valid = float(_cfg(config, "pairing", "min_valid_fraction", pairing.min_valid_fraction))
    max_shift = float(_cfg(config, "validation", "max_abs_shift_px", val.max_abs_shift_px))
    max_res = float(_cfg(config, "validation", "max_residual_px", val.max_residual_px))
    out = []
    for r in rows:
        comps: dict[str, float] = {}
        clear = [v for v in (r.get("before_clear"), r.get("after_clear")) if v is not None]
        if clear:
            comps["clear"] = _clip(_headroom_fraction(min(clear), min_clear))
        valid = min(float(r.get("before_valid", 1.0)), float(r.get("after_valid", 1.0)))
        comps["valid"] = _clip(_headroom_fraction(valid, min_valid))
        shift = math.hypot(float(r.get("shift_dy", 0.0)), float(r.get("shift_dx", 0.0)))
        comps["shift"] = _clip(1.0 - shift / max_shift)
        comps["residual"] = _clip(1.0 - float(r.get("residual_px", 0.0)) / max_res)
        key = str(r["key"])
        if gx_failed and key in gx_failed:
            comps[gx_failed[key]] = 0.0
        limit = min(comps, key=lambda k: comps[k])  # first minimum in the fixed order above
        out.append(SampleScore(key, comps[limit], limit, comps))
    return sorted(out, key=lambda s: (s.score, s.key))


def _scores(rel: _Release) -> list[SampleScore]:
    summary, _ = _read_gx_summary(rel.root)
    return validation_scores(rel.rows, rel.config, _gx_failed_keys(summary))


# --------------------------------------------------------------------------------------------
# Statistics


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two ECDFs.

    Returns NaN when either sample is empty.
    """
    x = np.sort(np.asarray(a, dtype=float))
    y = np.sort(np.asarray(b, dtype=float))
    if x.size == 0 or y.size == 0:
        return float("nan")
    grid = np.concatenate([x, y])
    fx = np.searchsorted(x, grid, side="right") / x.size
    fy = np.searchsorted(y, grid, side="right") / y.size
    return float(np.max(np.abs(fx - fy)))


def tv_distance(p: dict[str, float], q: dict[str, float]) -> float:
    """Total variation distance between two categorical distributions given as counts.

    ``0.5 * sum |p_i - q_i|`` after normalising each to sum 1; NaN when either is empty.
    """
    sp, sq = sum(p.values()), sum(q.values())
    if sp <= 0 or sq <= 0:
        return float("nan")
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0) / sp - q.get(k, 0) / sq) for k in keys)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _eps(config: dict[str, Any]) -> float:
    return float(
        _cfg(config, "annotation", "no_change_epsilon", AnnotationConfig().no_change_epsilon)
    )


def _col(rows: Sequence[dict[str, Any]], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name) is not None]


def _shifts(rows: Sequence[dict[str, Any]]) -> list[float]:
    return [math.hypot(float(r["shift_dy"]), float(r["shift_dx"])) for r in rows]


def _caption_words(rel: _Release) -> list[float]:
    return [float(len(_words(c))) for s in rel.samples.values() for c in s.captions]


def _transition_pixels(rel: _Release) -> Counter[str]:
    c: Counter[str] = Counter()
    for s in rel.samples.values():
        for a, b, px, _ in s.transitions:
            c[f"{a} -> {b}"] += px
    return c


def _qa_types(rel: _Release) -> Counter[str]:
    return Counter(t for s in rel.samples.values() for t, _ in s.qa)


def _mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def _median(xs: Sequence[float]) -> float:
    return float(np.median(xs)) if len(xs) else float("nan")


def _metrics(rel: _Release, scores: Sequence[SampleScore]) -> dict[str, float]:
    """Headline figures of a release (also the rows of the diff's metric-delta table)."""
    m = rel.manifest
    rows = rel.rows
    eps = _eps(rel.config)
    cf = _col(rows, "changed_fraction")
    caps = [c for s in rel.samples.values() for c in s.captions]
    vocab = {w for c in caps for w in _words(c)}
    qa = [a for s in rel.samples.values() for a in s.qa]
    has_change = [ans for t, ans in qa if t == "has_change"]
    out: dict[str, float] = {
        "samples": float(sum(m.splits.values())),
    }
    for split, n in sorted(m.splits.items()):
        out[f"split {split}"] = float(n)
    out |= {
        "quarantined": float(sum(m.quarantined.values())),
        "shards": float(len(m.shards)),
        "cells": float(len({r["cell_id"] for r in rows})),
        "changed fraction: mean": _mean(cf),
        "changed fraction: median": _median(cf),
        "no-change samples (share)": _mean([1.0 if x <= eps else 0.0 for x in cf]),
        "change regions per sample: mean": _mean(_col(rows, "n_regions")),
        "time gap (days): median": _median(_col(rows, "gap_days")),
        "|shift| (px): mean": _mean(_shifts(rows)),
        "residual (px): mean": _mean(_col(rows, "residual_px")),
        "co-registration applied (share)": _mean(
            [1.0 if r.get("coreg_applied") else 0.0 for r in rows]
        ),
        "captions per sample: mean": _mean(_col(rows, "n_captions")),
        "caption words: mean": _mean(_caption_words(rel)),
        "caption vocabulary (distinct words)": float(len(vocab)),
        "distinct captions (share)": len(set(caps)) / len(caps) if caps else float("nan"),
        "QA per sample: mean": _mean(_col(rows, "n_qa")),
        "has_change answered 'yes' (share)": _mean(
            [1.0 if a == "yes" else 0.0 for a in has_change]
        ),
        "validation score: mean": _mean([s.score for s in scores]),
        "validation score: min": min((s.score for s in scores), default=float("nan")),
        "LLM tokens": float(sum(int(r.get("tokens_in", 0) + r.get("tokens_out", 0)) for r in rows)),
        "LLM cost (USD)": float(sum(float(r.get("cost_usd", 0.0)) for r in rows)),
    }
    return out


# --------------------------------------------------------------------------------------------
# HTML helpers


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(x: float) -> str:
    if isinstance(x, float) and not math.isfinite(x):
        return "–"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4g}"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _plot(png: bytes, alt: str) -> str:
    """A plot image; the ``class`` comes first so sample images stay ``<img src=...``."""
    return f"<img class='plot' src='{_data_uri(png)}' alt='{_e(alt)}'>"


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()
) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"]
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            text = _num(v) if isinstance(v, int | float) and not isinstance(v, bool) else _e(v)
            cells.append(f"<td class='n'>{text}</td>" if i in numeric else f"<td>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _section(ident: str, title: str, body: Iterable[str]) -> str:
    return f"<section id='{ident}'>\n<h2>{_e(title)}</h2>\n" + "\n".join(body) + "\n</section>"


def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100.0 * x:.1f}%"


def _rel_href(path: str) -> str:
    """A link from ``report/index.html`` to a file of the release (relative, URL-quoted)."""
    return "../" + quote(path, safe="/")


# --------------------------------------------------------------------------------------------
# Sections


_NO_SAMPLES = "<p class='muted'>No samples.</p>"


def _summary(rel: _Release) -> str:
    manifest = rel.manifest
    total = sum(manifest.splits.values())
    quarantined = sum(manifest.quarantined.values())
    cfg = rel.config
    rows = rel.rows
    t0s = [r["t0"] for r in rows if r.get("t0") is not None]
    t1s = [r["t1"] for r in rows if r.get("t1") is not None]
    annotators = sorted({str(r.get("annotator", "")) for r in rows})
    items = [
        ("dataset", f"{manifest.name} {manifest.version}"),
        ("samples", str(total)),
        ("quarantined", str(quarantined)),
        ("shards", str(len(manifest.shards))),
        ("cells", str(len({r["cell_id"] for r in rows}))),
        ("regions", ", ".join(sorted({str(r.get("region", "")) for r in rows})) or "–"),
        (
            "before dates",
            f"{min(t0s):%Y-%m-%d} .. {max(t0s):%Y-%m-%d}" if t0s else "–",
        ),
        ("after dates", f"{min(t1s):%Y-%m-%d} .. {max(t1s):%Y-%m-%d}" if t1s else "–"),
        ("imagery", str(_cfg(cfg, "imagery", "collection", "–"))),
        ("labels", str(_cfg(cfg, "labels", "kind", "–"))),
        ("annotators", ", ".join(annotators) or "–"),
        (
            "LLM tokens / cost",
            f"{sum(int(r.get('tokens_in', 0) + r.get('tokens_out', 0)) for r in rows)} / "
            f"{sum(float(r.get('cost_usd', 0.0)) for r in rows):.2f} USD",
        ),
        ("licence", str(cfg.get("licence", "–"))),
        ("attribution", str(cfg.get("attribution", "–"))),
        ("config hash", manifest.config_hash),
        ("code version", manifest.code_version),
        ("schema version", manifest.schema_version),
    ]
    out = ["<table>"]
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items]
    out.append("</table>")
    out += ["<table><tr><th>split</th><th>samples</th><th>shards</th></tr>"]
    shard_counts: dict[str, int] = defaultdict(int)
    for s in manifest.shards:
        shard_counts[s.split] += 1
    for split, n in sorted(manifest.splits.items()):
        out.append(
            f"<tr><td>{_e(split)}</td><td class='n'>{n}</td>"
            f"<td class='n'>{shard_counts[split]}</td></tr>"
        )
    out.append("</table>")
    for problem in rel.problems:
        out.append(f"<p class='neg'>{_e(problem)}</p>")
    return _section("summary", "Summary", out)


def _funnel_rows(manifest: ReleaseManifest) -> list[tuple[int, str, str, int]]:
    rows = []
    for k, n in manifest.quarantined.items():
        stage, _, reason = k.partition(":")
        rank = STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)
        rows.append((rank, stage, reason, n))
    rows.sort(key=lambda r: (r[0], r[1], -r[3], r[2]))
    return rows


def _funnel(rel: _Release) -> str:
    manifest = rel.manifest
    out = []
    if not manifest.quarantined:
        out.append("<p>Nothing was quarantined.</p>")
        return _section("funnel", "Quarantine funnel", out)
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
    out.append(
        "<p>Records entering = samples kept + records quarantined (a record is a cell without "
        "a usable pair, or a sample key).</p>"
    )
    out.append(_table(["stage", "dropped", "remaining after"], stage_rows, numeric=(1, 2)))
    top = max(r[3] for r in rows)
    out.append(
        "<table><tr><th>stage</th><th>reason</th><th>records</th><th class='barcell'></th></tr>"
    )
    for _, stage, reason, n in rows:
        width = 100.0 * n / top
        out.append(
            f"<tr><td>{_e(stage)}</td><td>{_e(reason)}</td>"
            f"<td class='n'>{n}</td><td class='barcell'>"
            f"<span class='bar' style='width: {width:.1f}%'></span></td></tr>"
        )
    out.append("</table>")
    out.append(
        f"<p>{kept} samples kept, {dropped} records quarantined "
        f"(details in <code>{QUARANTINE_TABLE}</code>).</p>"
    )
    return _section("funnel", "Quarantine funnel", out)


def _transitions(rel: _Release) -> str:
    out = []
    if not rel.rows:
        return _section(
            "transitions", "Change: class transitions and changed fraction", [_NO_SAMPLES]
        )
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
    eps = _eps(rel.config)
    cf = _col(rel.rows, "changed_fraction")
    n_none = sum(1 for x in cf if x <= eps)
    out.append(
        f"<p>{len(cf) - n_none} of {len(cf)} samples show change (changed fraction above "
        f"{eps:g}); {len(ranked)} distinct transitions, {total_px} changed pixels.</p>"
    )
    figs = []
    if ranked:
        top = ranked[:12]
        figs.append(
            _plot(
                plots.bars(
                    top,
                    [100.0 * pixels[k] / total_px for k in top],
                    title="Class transitions (share of changed pixels)",
                    xlabel="% of changed pixels",
                ),
                "class transitions",
            )
        )
    hi = max(cf) if cf else 0.0
    figs.append(
        _plot(
            plots.histogram(
                [("samples", cf)],
                title="Changed fraction per sample",
                xlabel="changed fraction of valid pixels",
                bins=list(np.linspace(0.0, max(hi, 0.01), 21)),
                limits=[("no-change epsilon", eps)] if eps > 0 else [],
            ),
            "changed fraction histogram",
        )
    )
    out.append("<div class='plots'>" + "".join(figs) + "</div>")
    if ranked:
        out.append(
            _table(
                ["transition", "samples", "pixels", "share of changed pixels", "area (km²)"],
                (
                    (k, samples[k], pixels[k], _pct(pixels[k] / total_px), f"{area[k] / 1e6:.3f}")
                    for k in ranked[:20]
                ),
                numeric=(1, 2, 3, 4),
            )
        )
    return _section("transitions", "Change: class transitions and changed fraction", out)


def _captions(rel: _Release) -> str:
    caps = [c for s in rel.samples.values() for c in s.captions]
    if not caps:
        return _section("captions", "Captions", [_NO_SAMPLES])
    words = [_words(c) for c in caps]
    counts: Counter[str] = Counter(w for ws in words for w in ws)
    n_words = [len(ws) for ws in words]
    n_chars = [len(c) for c in caps]
    per_sample = [len(s.captions) for s in rel.samples.values()]
    stats = [
        ("captions", len(caps)),
        (
            "captions per sample (min / mean / max)",
            f"{min(per_sample)} / {_mean(per_sample):.2f} / {max(per_sample)}",
        ),
        (
            "characters (min / mean / max)",
            f"{min(n_chars)} / {_mean(n_chars):.1f} / {max(n_chars)}",
        ),
        ("words (min / mean / max)", f"{min(n_words)} / {_mean(n_words):.1f} / {max(n_words)}"),
        ("vocabulary (distinct words)", len(counts)),
        ("type-token ratio", f"{len(counts) / max(1, sum(counts.values())):.4f}"),
        ("distinct captions", f"{len(set(caps))} ({_pct(len(set(caps)) / len(caps))})"),
    ]
    val = ValidationConfig()
    lo, hi = _cfg(rel.config, "validation", "caption_chars", val.caption_chars)
    out = [_table(["statistic", "value"], stats)]
    figs = [
        _plot(
            plots.histogram(
                [("captions", n_chars)],
                title="Caption length",
                xlabel="characters",
                ylabel="captions",
                limits=[("min chars", float(lo)), ("max chars", float(hi))]
                if max(n_chars) * 1.5 >= hi
                else [("min chars", float(lo))],
            ),
            "caption length histogram",
        )
    ]
    top = sorted(counts, key=lambda w: (-counts[w], w))[:20]
    figs.append(
        _plot(
            plots.bars(top, [counts[w] for w in top], title="Most frequent words", xlabel="count"),
            "top words",
        )
    )
    out.append("<div class='plots'>" + "".join(figs) + "</div>")
    return _section("captions", "Captions: length and vocabulary", out)


def _qa(rel: _Release) -> str:
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for s in rel.samples.values():
        for t, a in s.qa:
            by_type[t][a] += 1
    if not by_type:
        return _section("qa", "Questions and answers", [_NO_SAMPLES])
    types = sorted(by_type, key=lambda t: (-sum(by_type[t].values()), t))
    n_samples = max(1, len(rel.samples))
    rows = []
    for t in types:
        c = by_type[t]
        n = sum(c.values())
        ranked = sorted(c, key=lambda a: (-c[a], a))
        top = " · ".join(f"{a} {_pct(c[a] / n)}" for a in ranked[:5])
        if len(ranked) > 5:
            top += f" · ({len(ranked) - 5} more)"
        rows.append((t, n, _pct(n / n_samples), len(c), _pct(c[ranked[0]] / n), top))
    out = [
        "<p>Coverage = share of samples asking the type (at most one per sample and type in "
        "the template annotator); majority share = share of the most frequent answer (1.0 = "
        "no balance at all).</p>",
        _table(
            ["type", "items", "coverage", "distinct answers", "majority share", "answers"],
            rows,
            numeric=(1, 2, 3, 4),
        ),
        "<div class='plots'>"
        + _plot(
            plots.bars(
                types,
                [sum(by_type[t].values()) for t in types],
                title="QA items per type",
                xlabel="items",
            ),
            "QA types",
        )
        + "</div>",
    ]
    return _section("qa", "Questions and answers: types and answer balance", out)


def _coreg(rel: _Release) -> str:
    rows = rel.rows
    if not rows:
        return _section("coregistration", "Co-registration", [_NO_SAMPLES])
    val = ValidationConfig()
    max_shift = float(_cfg(rel.config, "validation", "max_abs_shift_px", val.max_abs_shift_px))
    max_res = float(_cfg(rel.config, "validation", "max_residual_px", val.max_residual_px))
    shifts = _shifts(rows)
    res = _col(rows, "residual_px")
    applied = sum(1 for r in rows if r.get("coreg_applied"))
    stats = [
        ("shift applied", f"{applied} of {len(rows)}"),
        ("|shift| px (median / max)", f"{_median(shifts):.3f} / {max(shifts):.3f}"),
        ("residual px (median / max)", f"{_median(res):.3f} / {max(res):.3f}"),
        ("limits", f"|shift| <= {max_shift:g}, residual <= {max_res:g} (validation.*)"),
    ]
    figs = [
        _plot(
            plots.histogram(
                [("samples", shifts)],
                title="Co-registration shift",
                xlabel="|shift| (px)",
                from_zero=True,
                limits=[("max_abs_shift_px", max_shift)],
            ),
            "shift histogram",
        ),
        _plot(
            plots.histogram(
                [("samples", res)],
                title="Co-registration residual",
                xlabel="residual (px)",
                from_zero=True,
                limits=[("max_residual_px", max_res)],
            ),
            "residual histogram",
        ),
        _plot(
            plots.scatter(
                _col(rows, "shift_dx"),
                _col(rows, "shift_dy"),
                title="Shift applied (dx, dy)",
                xlabel="dx (px)",
                ylabel="dy (px)",
                radius=max_shift,
            ),
            "shift scatter",
        ),
    ]
    return _section(
        "coregistration",
        "Co-registration: shift and residual",
        [_table(["statistic", "value"], stats), "<div class='plots'>" + "".join(figs) + "</div>"],
    )


def _box(r: dict[str, Any]) -> plots.Box:
    return (float(r["min_lon"]), float(r["min_lat"]), float(r["max_lon"]), float(r["max_lat"]))


def _aoi(config: dict[str, Any]) -> plots.Box | None:
    bbox = _cfg(config, "aoi", "bbox", None)
    if isinstance(bbox, list | tuple) and len(bbox) == 4:
        return (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    return None


def _map(rel: _Release) -> str:
    if not rel.rows:
        return _section("map", "Map of sample footprints", [_NO_SAMPLES])
    boxes = [(_box(r), str(r["split"])) for r in rel.rows]
    lons = [v for b, _ in boxes for v in (b[0], b[2])]
    lats = [v for b, _ in boxes for v in (b[1], b[3])]
    png = plots.footprint_map(
        boxes, colours=plots.SPLIT_COLOURS, title="Sample footprints by split", aoi=_aoi(rel.config)
    )
    return _section(
        "map",
        "Map of sample footprints",
        [
            f"<p>{len(boxes)} footprints within lon {min(lons):.4f}..{max(lons):.4f}, "
            f"lat {min(lats):.4f}..{max(lats):.4f} (EPSG:4326; no basemap).</p>",
            "<div class='plots'>" + _plot(png, "map of sample footprints") + "</div>",
        ],
    )


def _time(rel: _Release) -> str:
    gaps = _col(rel.rows, "gap_days")
    if not gaps:
        return _section("time", "Time gap between before and after", [_NO_SAMPLES])
    pairing = PairingConfig()
    lo = float(_cfg(rel.config, "pairing", "min_gap_days", pairing.min_gap_days))
    hi = float(_cfg(rel.config, "pairing", "max_gap_days", pairing.max_gap_days))
    limits = [("min_gap_days", lo)]
    if hi <= 2 * max(gaps):
        limits.append(("max_gap_days", hi))
    stats = [
        (
            "gap days (min / median / max)",
            f"{min(gaps):.1f} / {_median(gaps):.1f} / {max(gaps):.1f}",
        )
    ]
    png = plots.histogram(
        [("samples", gaps)], title="Time gap t1 - t0", xlabel="days", limits=limits
    )
    return _section(
        "time",
        "Time gap between before and after",
        [
            _table(["statistic", "value"], stats),
            "<div class='plots'>" + _plot(png, "time gap histogram") + "</div>",
        ],
    )


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out = []
        for k in sorted(value, key=str):
            out += _flatten(value[k], f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, value)]


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, str | int | bool) or value is None:
        return str(value)
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _read_gx_summary(root: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``validation/summary.json`` as a dict, or ``(None, why)``; ``(None, None)`` = not run."""
    path = root / VALIDATION_SUMMARY
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{VALIDATION_SUMMARY} cannot be read: {exc}"
    if not isinstance(data, dict):
        return None, f"{VALIDATION_SUMMARY} is not a JSON object"
    return data, None


def _gx_failed_keys(summary: dict[str, Any] | None) -> dict[str, str]:
    """Sample key -> first failing expectation, from the ``unexpected_keys`` of the summary."""
    out: dict[str, str] = {}
    if summary is None:
        return out
    for suite in summary.get("suites", []) if isinstance(summary.get("suites"), list) else []:
        for exp in suite.get("expectations", []) if isinstance(suite, dict) else []:
            if not isinstance(exp, dict) or exp.get("success", True):
                continue
            for key in exp.get("unexpected_keys", []) or []:
                out.setdefault(str(key), str(exp.get("name", "gx")))
    return out


def _validation_link(path: Any) -> str:
    """A link to a file under ``validation/`` named in the summary (relative), or a dash."""
    if not isinstance(path, str) or not path or "://" in path or path.startswith(("/", "..")):
        return "–"
    target = f"{VALIDATION_DIR}/{path}"
    return f"<a href='{_e(_rel_href(target))}'>{_e(path)}</a>"


def _gx_generic(summary: dict[str, Any]) -> list[str]:
    """Any other summary layout: its scalar fields and its lists of records as tables."""
    out = []
    scalars = [
        (k, _scalar(v))
        for k, v in _flatten({k: v for k, v in summary.items() if not isinstance(v, list)})
    ]
    if scalars:
        out.append(_table(["field", "value"], scalars))
    for name in sorted(k for k, v in summary.items() if isinstance(v, list)):
        items = [i for i in summary[name] if isinstance(i, dict)]
        cols: list[str] = []
        for item in items:
            cols += [k for k, v in item.items() if k not in cols and not isinstance(v, dict | list)]
        if items and cols:
            out.append(f"<h4>{_e(name)}</h4>")
            rows = ([_scalar(i.get(c, "")) for c in cols[:8]] for i in items[:_LIST_LIMIT])
            out.append(_table(cols[:8], rows))
    return out


def _gx_geodelta(summary: dict[str, Any]) -> list[str]:
    """The ``geodelta.gx-summary/1`` layout (pipelines/gx_validate.py)."""
    suites = [s for s in summary.get("suites", []) if isinstance(s, dict)]
    evaluated = sum(int(s.get("evaluated", 0)) for s in suites)
    failed = sum(int(s.get("failed", 0)) for s in suites)
    ok = bool(summary.get("success"))
    result = "<b class='pos'>passed</b>" if ok else "<b class='neg'>failed</b>"
    out = [
        f"<p>Checkpoint {result}: {evaluated - failed} of {evaluated} expectations held over "
        f"{_e(summary.get('samples_checked', '–'))} samples; "
        f"{_e(summary.get('samples_quarantined', 0))} samples quarantined by an expectation "
        f"(Great Expectations {_e(summary.get('gx_version', '?'))}).</p>",
        f"<p>Data Docs: {_validation_link(summary.get('data_docs'))} "
        f"&middot; raw summary: <a href='{_e(_rel_href(VALIDATION_SUMMARY))}'>"
        f"{_e(VALIDATION_SUMMARY)}</a></p>",
    ]
    rows = [
        "<table><tr><th>suite</th><th>table</th><th>rows</th><th>expectations</th>"
        "<th>failed</th><th>result</th><th>suite</th><th>results</th><th>Data Docs</th></tr>"
    ]
    for s in suites:
        rows.append(
            f"<tr><td>{_e(s.get('name', ''))}</td><td>{_e(s.get('table', ''))}</td>"
            f"<td class='n'>{_e(s.get('rows', ''))}</td>"
            f"<td class='n'>{_e(s.get('evaluated', ''))}</td>"
            f"<td class='n'>{_e(s.get('failed', ''))}</td>"
            f"<td>{'ok' if s.get('success') else 'FAILED'}</td>"
            f"<td>{_validation_link(s.get('suite_file'))}</td>"
            f"<td>{_validation_link(s.get('results_file'))}</td>"
            f"<td>{_validation_link(s.get('data_docs_page'))}</td></tr>"
        )
    rows.append("</table>")
    out.append("\n".join(rows))
    failing = [
        (str(s.get("name", "")), e)
        for s in suites
        for e in s.get("expectations", [])
        if isinstance(e, dict) and not e.get("success", True)
    ]
    if failing:
        out.append("<h4>Failed expectations</h4>")
        out.append(
            _table(
                ["suite", "expectation", "description", "unexpected / rows", "sample keys"],
                (
                    (
                        suite,
                        e.get("name", ""),
                        e.get("description", ""),
                        f"{e.get('unexpected_count', '–')} / {e.get('element_count', '–')}",
                        ", ".join(map(str, (e.get("unexpected_keys") or [])[:3]))
                        + (" ..." if len(e.get("unexpected_keys") or []) > 3 else ""),
                    )
                    for suite, e in failing
                ),
            )
        )
    quarantined = [q for q in summary.get("quarantined", []) if isinstance(q, dict)]
    if quarantined:
        out.append(f"<h4>Quarantined by an expectation ({len(quarantined)})</h4>")
        out.append(
            _table(
                ["key", "reason", "detail"],
                (
                    (q.get("key", ""), q.get("reason", ""), q.get("detail", ""))
                    for q in quarantined[:_LIST_LIMIT]
                ),
            )
        )
    return out


def _gx(rel: _Release, scores: Sequence[SampleScore], summary: dict[str, Any] | None) -> str:
    out = ["<h3>Great Expectations</h3>"]
    _, problem = _read_gx_summary(rel.root)
    if problem is not None:
        out.append(f"<p class='neg'>{_e(problem)}</p>")
    elif summary is None:
        out.append(
            f"<p>Great Expectations validation: <b>not run</b> (no <code>{VALIDATION_SUMMARY}"
            "</code> in this release).</p>"
        )
    elif summary.get("format") == GX_SUMMARY_FORMAT:
        out += _gx_geodelta(summary)
    else:
        out.append(
            f"<p>Unknown summary format {_e(summary.get('format'))!s}; its fields as they are:</p>"
        )
        out += _gx_generic(summary)
    out.append("<h3>Per-sample validation score</h3>")
    if not scores:
        out.append(_NO_SAMPLES)
        return _section("validation", "Validation", out)
    out.append(
        "<p>Score = the smallest headroom to any rule limit (1 = far from every limit, 0 = at a "
        "limit): clear and valid fractions against <code>pairing.min_clear_fraction</code> / "
        "<code>pairing.min_valid_fraction</code>, |shift| and residual against "
        "<code>validation.max_abs_shift_px</code> / <code>validation.max_residual_px</code>.</p>"
    )
    limits = Counter(s.limit for s in scores)
    by_limit = sorted(limits.items(), key=lambda kv: (-kv[1], kv[0]))
    out.append(
        _table(
            ["limited by", "samples"],
            by_limit,
            numeric=(1,),
        )
    )
    png = plots.histogram(
        [("samples", [s.score for s in scores])],
        title="Validation score",
        xlabel="score (0 = at a rule limit)",
        bins=list(np.linspace(0.0, 1.0, 21)),
    )
    out.append("<div class='plots'>" + _plot(png, "validation score histogram") + "</div>")
    worst = scores[:10]
    out.append(
        _table(
            ["worst samples", "score", "limited by", "clear", "valid", "shift", "residual"],
            (
                (
                    s.key,
                    f"{s.score:.3f}",
                    s.limit,
                    *(
                        f"{s.components[c]:.3f}" if c in s.components else "–"
                        for c in ("clear", "valid", "shift", "residual")
                    ),
                )
                for s in worst
            ),
            numeric=(1, 3, 4, 5, 6),
        )
    )
    return _section("validation", "Validation", out)


def _mask_preview(mask_png: bytes) -> bytes:
    """Colour a mask for viewing: black = no change, class colour of the new class, white = 255."""
    with Image.open(io.BytesIO(mask_png)) as img:
        codes = np.asarray(img.convert("L"), dtype=np.int32)
    rgb = np.zeros((*codes.shape, 3), dtype=np.uint8)
    known = (codes >= 1) & (codes <= N_CLASSES * N_CLASSES)
    to_idx = (codes - 1) % N_CLASSES
    palette = np.array(_TO_CLASS_RGB, dtype=np.uint8)
    rgb[known] = palette[to_idx[known]]
    rgb[codes == BINARY_CHANGE] = (255, 255, 255)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _choose(keys: Sequence[str], n: int) -> list[str]:
    """The ``n`` keys with the smallest sha256: deterministic, spread over splits and regions."""
    return sorted(keys, key=lambda k: hashlib.sha256(k.encode()).hexdigest())[: max(n, 0)]


def _gallery_keys(
    rows: Sequence[dict[str, Any]], scores: Sequence[SampleScore], max_gallery: int
) -> tuple[list[str], list[str]]:
    """(worst, others): half the gallery (rounded up) by validation score, the rest by sha256."""
    if max_gallery <= 0 or not rows:
        return [], []
    worst = [s.key for s in scores[: (max_gallery + 1) // 2]]
    rest = [str(r["key"]) for r in rows if r["key"] not in set(worst)]
    return worst, _choose(rest, max_gallery - len(worst))


def _gallery(
    rel: _Release, worst: Sequence[str], others: Sequence[str], scores: Sequence[SampleScore]
) -> str:
    out = []
    if not worst and not others:
        return _section("gallery", "Samples", [_NO_SAMPLES])
    split_of = {str(r["key"]): str(r["split"]) for r in rel.rows}
    score_of = {s.key: s for s in scores}
    for ident, title, keys in (
        ("gallery-worst", "Worst samples by validation score", worst),
        ("gallery-others", "Other samples (deterministic pick by sha256 of the key)", others),
    ):
        if not keys:
            continue
        cls = "worst" if ident == "gallery-worst" else "others"
        out.append(f"<h3>{_e(title)}</h3>\n<div id='{ident}' class='{cls}'>")
        for key in keys:
            if key not in rel.kept:
                out.append(f"<div class='sample'><p>{_e(key)}: not found in its shard</p></div>")
                continue
            out.append(_sample_card(key, split_of[key], rel.kept[key], score_of.get(key)))
        out.append("</div>")
    return _section("gallery", "Samples", out)


def _frac(value: Any) -> str:
    return "unknown" if value is None else f"{float(value):.4f}"


def _sample_card(key: str, split: str, members: dict[str, bytes], score: SampleScore | None) -> str:
    meta = json.loads(members.get("json", b"{}"))
    captions = json.loads(members.get("captions.json", b"[]"))
    qa = json.loads(members.get("qa.json", b"[]"))
    figs = []
    for name, label in (("before.png", "before"), ("after.png", "after"), ("mask.png", "change")):
        if name not in members:
            continue
        png = _mask_preview(members[name]) if name == "mask.png" else members[name]
        figs.append(
            f"<figure><img src='{_data_uri(png)}' alt='{_e(label)}'>"
            f"<figcaption>{_e(label)}</figcaption></figure>"
        )
    t0, t1 = str(meta.get("t0", ""))[:10], str(meta.get("t1", ""))[:10]
    facts = meta.get("facts", {})
    coreg = meta.get("coreg", {})
    score_text = ""
    if score is not None:
        score_text = f" &middot; validation score {score.score:.3f} (limited by {_e(score.limit)})"
    head = (
        f"<p><span class='key'>{_e(key)}</span> &middot; {_e(split)} &middot; "
        f"{_e(t0)} &rarr; {_e(t1)} &middot; changed "
        f"{100.0 * float(facts.get('changed_fraction', 0.0)):.1f}%{score_text}</p>"
        f"<p class='muted'>clear {_frac(meta.get('before_clear'))} / "
        f"{_frac(meta.get('after_clear'))}"
        f" &middot; valid {float(meta.get('before_valid', 0)):.4f} / "
        f"{float(meta.get('after_valid', 0)):.4f} &middot; shift "
        f"({', '.join(f'{float(v):.2f}' for v in coreg.get('shift_px', ()))}) px, residual {float(coreg.get('residual_px', 0)):.3f} px"
        f" &middot; {_e(meta.get('before_item', ''))} &rarr; {_e(meta.get('after_item', ''))}</p>"
    )
    caps = "".join(f"<li>{_e(c)}</li>" for c in captions)
    qas = "".join(
        f"<li><b>{_e(q.get('question', ''))}</b> {_e(q.get('answer', ''))} "
        f"<span class='muted'>({_e(q.get('type', ''))})</span></li>"
        for q in qa
    )
    return (
        f"<div class='sample'>{head}<div class='imgs'>{''.join(figs)}</div>"
        f"<p>Captions</p><ul>{caps}</ul><p>Questions</p><ul>{qas}</ul></div>"
    )


#: Review-list samples shown with their before/after/mask thumbnails (the rest as table rows).
_REVIEW_THUMBNAILS = 8


def _review_keys(rows: Sequence[dict[str, Any]], n: int) -> list[str]:
    """The ``n`` keys with the highest ``disagreement`` (samples.parquet), ties by key."""
    scored = [r for r in rows if isinstance(r.get("disagreement"), int | float)]
    scored.sort(key=lambda r: (-float(r["disagreement"]), str(r["key"])))
    return [str(r["key"]) for r in scored[: max(n, 0)]]


def _review_count(root: Path) -> int:
    """How many samples the review list shows (``reference.review_top`` of the metrics)."""
    try:
        data = json.loads((root / REFERENCE_METRICS).read_text(encoding="utf-8"))
        return int(data["training"]["reference_config"]["review_top"])
    except (OSError, ValueError, KeyError, TypeError):
        return 20


def _reference_generic(data: Any) -> list[str]:
    rows = [(k, _scalar(v)) for k, v in _flatten(data)]
    return [
        f"<p>From <a href='{_e(_rel_href(REFERENCE_METRICS))}'>{REFERENCE_METRICS}</a>.</p>",
        _table(["metric", "value"], rows),
    ]


def _thumbs(members: dict[str, bytes]) -> str:
    figs = []
    for name, label in (("before.png", "before"), ("after.png", "after"), ("mask.png", "label")):
        if name in members:
            png = _mask_preview(members[name]) if name == "mask.png" else members[name]
            figs.append(
                f"<figure><img src='{_data_uri(png)}' alt='{_e(label)}'>"
                f"<figcaption>{_e(label)}</figcaption></figure>"
            )
    return "".join(figs)


def _review(rel: _Release, review: Sequence[str], definition: str) -> list[str]:
    out = ["<h3 id='review'>Samples to review first</h3>"]
    if not review:
        out.append(f"<p class='muted'>No <code>disagreement</code> column in {SAMPLES_TABLE}.</p>")
        return out
    by_key = {str(r["key"]): r for r in rel.rows}
    out.append(
        f"<p>Highest disagreement between the reference change model and the label first "
        f"({_e(definition)}). Train-split samples were seen in training.</p>"
    )
    out.append(
        _table(
            ["#", "key", "split", "disagreement", "label changed"],
            [
                (
                    i + 1,
                    k,
                    str(by_key[k].get("split", "")),
                    f"{float(by_key[k]['disagreement']):.3f}",
                    _pct(float(by_key[k].get("changed_fraction") or 0.0)),
                )
                for i, k in enumerate(review)
            ],
            numeric=(0, 3, 4),
        )
    )
    cards = []
    for k in review[:_REVIEW_THUMBNAILS]:
        if k in rel.kept:
            cards.append(
                f"<div class='sample'><p><span class='key'>{_e(k)}</span> &middot; "
                f"{_e(by_key[k].get('split', ''))} &middot; disagreement "
                f"{float(by_key[k]['disagreement']):.3f}</p>"
                f"<div class='imgs'>{_thumbs(rel.kept[k])}</div></div>"
            )
    if cards:
        out.append("<div id='review-samples'>" + "\n".join(cards) + "</div>")
    return out


def _reference_tables(rel: _Release, m: Any, review: Sequence[str]) -> list[str]:
    """Readable tables of a :class:`~geodelta.schemas.reference.ReferenceMetrics`."""
    masks, ret, caps = m.masks, m.retrieval, m.captions
    base = m.training.get("baselines", {}) if isinstance(m.training, dict) else {}
    rand = base.get("captions_random_train_caption", {})
    gallery = max(int(ret.gallery), 1)

    def chance(k: int) -> str:
        return f"{min(k, gallery) / gallery:.3f}"

    def ref(key: str) -> str:
        value = rand.get(key)
        return f"{float(value):.3f}" if isinstance(value, int | float) else "–"

    out = [
        f"<p>Trained on split <b>{_e(m.train_split)}</b> ({m.train_samples} samples), "
        f"evaluated on split <b>{_e(m.eval_split)}</b> ({m.eval_samples} samples) of "
        f"{_e(m.release)}; geodelta {_e(m.code_version or '?')}. From "
        f"<a href='{_e(_rel_href(REFERENCE_METRICS))}'>{REFERENCE_METRICS}</a>; model card "
        f"<a href='{_e(_rel_href(REFERENCE_CARD))}'>{REFERENCE_CARD}</a>.</p>",
        "<h3>Change masks</h3>",
        _table(
            ["precision", "recall", "F1", "IoU", "threshold", "samples", "pixels", "changed"],
            [
                (
                    f"{masks.precision:.3f}",
                    f"{masks.recall:.3f}",
                    f"{masks.f1:.3f}",
                    f"{masks.iou:.3f}",
                    masks.threshold,
                    masks.samples,
                    masks.pixels,
                    _pct(masks.changed_fraction),
                )
            ],
            numeric=range(8),
        ),
        "<h3>Text-to-pair retrieval</h3>",
        _table(
            ["metric", "value", "chance"],
            [
                ("Recall@1", f"{ret.recall_at_1:.3f}", chance(1)),
                ("Recall@5", f"{ret.recall_at_5:.3f}", chance(5)),
                ("Recall@10", f"{ret.recall_at_10:.3f}", chance(10)),
            ],
            numeric=(1, 2),
        ),
        f"<p class='muted'>{ret.queries} caption queries, gallery of {ret.gallery} pairs; text "
        f"encoder {_e(ret.text_encoder)}.</p>",
        "<h3>Captions</h3>",
        _table(
            ["metric", "value", "random training caption"],
            [
                ("BLEU-4", f"{caps.bleu4:.3f}", ref("bleu4")),
                ("ROUGE-L", f"{caps.rouge_l:.3f}", ref("rouge_l")),
                ("CIDEr", f"{caps.cider:.3f}", ref("cider")),
            ],
            numeric=(1, 2),
        ),
        f"<p class='muted'>{caps.samples} samples; {_e(caps.method)}; tokenizer "
        f"{_e(caps.tokenizer)}.</p>",
        "<h3>Weights</h3>",
        _table(
            ["model", "file", "sha256", "bytes"],
            [(n, w.path, w.sha256[:16], w.bytes) for n, w in sorted(m.weights.items())],
            numeric=(3,),
        ),
    ]
    definition = m.disagreement.definition if m.disagreement is not None else ""
    return out + _review(rel, review, definition)


def _reference(rel: _Release, review: Sequence[str] = ()) -> str:
    from pydantic import ValidationError

    from geodelta.schemas.reference import ReferenceMetrics

    path = rel.root / REFERENCE_METRICS
    if not path.is_file():
        return _section(
            "reference",
            "Reference model",
            [
                f"<p>Reference model: <b>not trained yet</b> (no <code>{REFERENCE_METRICS}</code> "
                "in this release).</p>"
            ],
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return _section(
            "reference",
            "Reference model",
            [f"<p class='neg'>{REFERENCE_METRICS} cannot be read: {_e(exc)}</p>"],
        )
    try:
        metrics = ReferenceMetrics.model_validate(data)
    except ValidationError:
        return _section("reference", "Reference model", _reference_generic(data))
    return _section("reference", "Reference model", _reference_tables(rel, metrics, review))


# --------------------------------------------------------------------------------------------
# Diff


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


def _diff_keys(cur: _Release, prev: _Release) -> ReleaseDiff:
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
    return _diff_keys(_load(Path(current_dir)), _load(Path(previous_dir)))


def _signed(x: float) -> str:
    if not math.isfinite(x):
        return "–"
    cls = "pos" if x > 0 else "neg" if x < 0 else "muted"
    return f"<span class='{cls}'>{'+' if x > 0 else ''}{_num(x)}</span>"


def _key_list(keys: Sequence[str], what: dict[str, tuple[str, ...]] | None = None) -> str:
    if not keys:
        return "<p class='muted'>none</p>"
    shown = keys[:_LIST_LIMIT]
    lines = [
        _e(k) + (f" <span class='muted'>({_e(', '.join(what[k]))})</span>" if what else "")
        for k in shown
    ]
    more = f"<br>... and {len(keys) - len(shown)} more" if len(keys) > len(shown) else ""
    return f"<div class='keys'>{'<br>'.join(lines)}{more}</div>"


def _diff(cur: _Release, prev: _Release, cur_scores: Sequence[SampleScore]) -> str:
    d = _diff_keys(cur, prev)
    pm, cm = prev.manifest, cur.manifest
    out = [
        f"<p>Previous version: <b>{_e(pm.name)} {_e(pm.version)}</b> (config "
        f"{_e(pm.config_hash[:12])}, geodelta {_e(pm.code_version)}). Keys are "
        "<code>{cell_id}_{t0}_{t1}</code>, stable across versions. Changed = same key, a member "
        "with another sha256 or another metadata field (provenance fields "
        f"{', '.join(sorted(PROVENANCE_FIELDS))} excepted).</p>",
        _table(
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
            numeric=(0, 1, 2, 3, 4, 5),
        ),
    ]
    for problem in prev.problems:
        out.append(f"<p class='neg'>previous: {_e(problem)}</p>")
    # config changes
    pc, cc = dict(_flatten(pm.config)), dict(_flatten(cm.config))
    cfg_rows = [
        (k, _scalar(pc.get(k, "(absent)")), _scalar(cc.get(k, "(absent)")))
        for k in sorted(set(pc) | set(cc))
        if pc.get(k) != cc.get(k)
    ]
    out.append("<h3>Config changes</h3>")
    out.append(
        _table(["key", "previous", "current"], cfg_rows)
        if cfg_rows
        else "<p class='muted'>Same normalised config.</p>"
    )
    # keys
    what = Counter(w for ws in d.changed.values() for w in ws)
    out.append("<h3>Keys</h3>")
    if what:
        by_what = sorted(what.items(), key=lambda kv: (-kv[1], kv[0]))
        out.append(
            _table(
                ["what changed", "samples"],
                by_what,
                numeric=(1,),
            )
        )
    out.append(f"<p>Added ({len(d.added)})</p>" + _key_list(d.added))
    out.append(f"<p>Removed ({len(d.removed)})</p>" + _key_list(d.removed))
    out.append(f"<p>Changed ({len(d.changed)})</p>" + _key_list(sorted(d.changed), d.changed))
    # metric deltas
    prev_scores = _scores(prev)
    pmet = _metrics(prev, prev_scores)
    cmet = _metrics(cur, cur_scores)
    names = list(cmet) + [k for k in pmet if k not in cmet]
    out.append("<h3>Metric deltas</h3>")
    rows_html = ["<table><tr><th>metric</th><th>previous</th><th>current</th><th>delta</th></tr>"]
    for name in names:
        p, c = pmet.get(name, float("nan")), cmet.get(name, float("nan"))
        delta = c - p if math.isfinite(p) and math.isfinite(c) else float("nan")
        rows_html.append(
            f"<tr><td>{_e(name)}</td><td class='n'>{_num(p)}</td><td class='n'>{_num(c)}</td>"
            f"<td class='n'>{_signed(delta)}</td></tr>"
        )
    rows_html.append("</table>")
    out.append("\n".join(rows_html))
    # quarantine deltas
    reasons = sorted(set(pm.quarantined) | set(cm.quarantined))
    if reasons:
        out.append("<h3>Quarantine deltas</h3>")
        qrows = [
            "<table><tr><th>stage:reason</th><th>previous</th><th>current</th><th>delta</th></tr>"
        ]
        for r in reasons:
            p_n, c_n = pm.quarantined.get(r, 0), cm.quarantined.get(r, 0)
            qrows.append(
                f"<tr><td>{_e(r)}</td><td class='n'>{p_n}</td><td class='n'>{c_n}</td>"
                f"<td class='n'>{_signed(float(c_n - p_n))}</td></tr>"
            )
        qrows.append("</table>")
        out.append("\n".join(qrows))
    # distribution shifts
    out.append("<h3>Distribution shifts</h3>")
    numeric = [
        (
            "changed fraction",
            _col(prev.rows, "changed_fraction"),
            _col(cur.rows, "changed_fraction"),
            "changed fraction",
        ),
        ("time gap (days)", _col(prev.rows, "gap_days"), _col(cur.rows, "gap_days"), "days"),
        ("|shift| (px)", _shifts(prev.rows), _shifts(cur.rows), "px"),
        ("residual (px)", _col(prev.rows, "residual_px"), _col(cur.rows, "residual_px"), "px"),
        ("caption words", _caption_words(prev), _caption_words(cur), "words"),
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
        ("QA type", _qa_types(prev), _qa_types(cur)),
        ("transition (pixels)", _transition_pixels(prev), _transition_pixels(cur)),
        ("quarantine stage:reason", Counter(pm.quarantined), Counter(cm.quarantined)),
    ]
    dist_rows: list[tuple[object, ...]] = [
        (name, "Kolmogorov-Smirnov D", f"{ks_distance(p, c):.3f}" if p and c else "–")
        for name, p, c, _ in numeric
    ]
    dist_rows += [
        (name, "total variation", f"{tv_distance(dict(p), dict(c)):.3f}" if p and c else "–")
        for name, p, c in categorical
    ]
    out.append(
        "<p>0 = same distribution, 1 = disjoint (KS: largest gap between the two cumulative "
        "distributions; TV: half the L1 distance between the normalised counts).</p>"
    )
    out.append(_table(["distribution", "distance", "value"], dist_rows, numeric=(2,)))
    figs = []
    for name, before, after, unit in numeric:
        if not before or not after:
            continue
        figs.append(
            _plot(
                plots.histogram(
                    [(f"previous {pm.version}", before), (f"current {cm.version}", after)],
                    title=f"{name}: previous vs current",
                    xlabel=unit,
                    density=True,
                ),
                f"{name} previous vs current",
            )
        )
    qa_p, qa_c = _qa_types(prev), _qa_types(cur)
    qtypes = sorted(set(qa_p) | set(qa_c))
    if qtypes:
        sp, sc = max(1, sum(qa_p.values())), max(1, sum(qa_c.values()))
        figs.append(
            _plot(
                plots.bars(
                    qtypes,
                    [
                        [100.0 * qa_p[t] / sp for t in qtypes],
                        [100.0 * qa_c[t] / sc for t in qtypes],
                    ],
                    title="QA types: previous vs current",
                    xlabel="% of QA items",
                    series=[f"previous {pm.version}", f"current {cm.version}"],
                ),
                "QA types previous vs current",
            )
        )
    out.append("<div class='plots'>" + "".join(figs) + "</div>")
    # map
    status = {k: "added" for k in d.added} | {k: "changed" for k in d.changed}
    boxes = [(_box(r), status.get(str(r["key"]), "unchanged")) for r in cur.rows]
    removed = set(d.removed)
    boxes += [(_box(r), "removed") for r in prev.rows if r["key"] in removed]
    if boxes:
        png = plots.footprint_map(
            boxes,
            colours=plots.DIFF_COLOURS,
            title="Footprints: diff to the previous version",
            aoi=_aoi(cm.config),
        )
        out.append("<div class='plots'>" + _plot(png, "diff map") + "</div>")
    return _section("diff", f"Diff against {pm.name} {pm.version}", out)


# --------------------------------------------------------------------------------------------
# Page


_TOC = (
    ("summary", "Summary"),
    ("funnel", "Quarantine funnel"),
    ("transitions", "Class transitions"),
    ("captions", "Captions"),
    ("qa", "Questions and answers"),
    ("coregistration", "Co-registration"),
    ("map", "Map"),
    ("time", "Time gap"),
    ("validation", "Validation"),
    ("gallery", "Samples"),
    ("reference", "Reference model"),
    ("diff", "Diff to previous"),
)


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
    rel = _open(Path(release_dir))
    manifest = rel.manifest
    gx_summary, _ = _read_gx_summary(rel.root)
    scores = validation_scores(rel.rows, manifest.config, _gx_failed_keys(gx_summary))
    worst, others = _gallery_keys(rel.rows, scores, max_gallery)
    review = _review_keys(rel.rows, _review_count(rel.root))
    _scan(rel, keep=[*worst, *others, *review[:_REVIEW_THUMBNAILS]])
    prev = _load(Path(previous)) if previous is not None else None
    title = f"{manifest.name} {manifest.version}: quality report"
    toc = [(i, t) for i, t in _TOC if i != "diff" or prev is not None]
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='sub'>geodelta {_e(manifest.code_version)} &middot; config "
        f"{_e(manifest.config_hash[:12])}"
        + (f" &middot; compared with {_e(prev.manifest.version)}" if prev is not None else "")
        + "</p>",
        "<nav><ul>"
        + "".join(f"<li><a href='#{i}'>{_e(t)}</a></li>" for i, t in toc)
        + "</ul></nav>",
        _summary(rel),
        _funnel(rel),
        _transitions(rel),
        _captions(rel),
        _qa(rel),
        _coreg(rel),
        _map(rel),
        _time(rel),
        _gx(rel, scores, gx_summary),
        _gallery(rel, worst, others, scores),
        _reference(rel, review),
    ]
    if prev is not None:
        body.append(_diff(rel, prev, scores))
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_report(
    release_dir: str | Path, *, previous: str | Path | None = None, max_gallery: int = 8
) -> Path:
    """Write ``<release_dir>/report/index.html`` (atomically).

    Args:
        release_dir: a release written by :func:`geodelta.pipelines.release.assemble.write_release`.
        previous: an earlier release to diff against (``geodelta report --previous``).
        max_gallery: samples shown in the gallery.

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
    page = render_report(root, previous=previous, max_gallery=max_gallery)
    out_dir = root / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / REPORT_FILE
    tmp = out_dir / f".{REPORT_FILE}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
