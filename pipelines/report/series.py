"""The report's ``series`` section, "Dates and temporal QA": series releases only (issue 15).

Read from the shards (each sample's ``dates.json``, ``first_change.png``, the ``series`` facts
of its ``json`` and its ``qa.json``) and from the release's config (``time.series``):

- dates per sample (the distribution of T);
- the dates timeline: which windows (years, seasons...) got dates in how many samples, the
  windows no sample has a date in, the samples that skip one window or more;
- the co-registration residual (and shift) per date index, against ``validation.max_residual_px``;
- the first-change step distribution: pixels per step k whose first change is at k, beside the
  pixels changed at k at all (``SeriesFacts.steps``);
- regions (permanent vs transient, changes per region) and class trends (grew / shrank /
  stable per class);
- the temporal QA types: items, coverage and answer balance (every canonical answer of a
  closed answer set listed, with its count, zeros too; dates by year, the which_first box by
  its place in the question);
- the reference model's retrieval with hard negatives (``retrieval_temporal`` of
  ``reference/metrics.json``) when it is there.

A pair release has no such section: :func:`series_section` returns None.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from geodelta.pipelines.release.layout import REFERENCE_METRICS
from geodelta.pipelines.report import plots
from geodelta.pipelines.report.data import Release, cfg, read_shards
from geodelta.pipelines.report.metrics import median, pct
from geodelta.pipelines.report.sections import Plot, Section, Table, table
from geodelta.schemas.config import ValidationConfig
from geodelta.schemas.qa import QA_TYPE_SPECS, TEMPORAL_QA_TYPES
from geodelta.schemas.series import SERIES_TREND_WORDS

__all__ = [
    "CLOSED_ANSWERS",
    "SeriesScan",
    "answer_label",
    "is_series",
    "scan_series",
    "series_section",
]

_IDENT, _TITLE = "series", "Dates and temporal QA"
#: Answer kinds counted by a label rather than by value: a ``boxes`` answer (``which_first``:
#: the box of the region that changed first, of the two the question names) by the place of
#: the answer in the question (a bias to one place shows).
FIRST_NAMED, SECOND_NAMED, NOT_NAMED = "first named", "second named", "not in the question"
#: The canonical answers of the temporal answer kinds that have a closed set (listed with
#: their counts, zeros included, so an imbalance shows).
CLOSED_ANSWERS: dict[str, tuple[str, ...]] = {
    "permanence": ("permanent", "transient"),
    "trend": SERIES_TREND_WORDS,
    "boxes": (FIRST_NAMED, SECOND_NAMED),
}
_ISO = re.compile(r"(\d{4})-\d{2}-\d{2}")
_BOX = re.compile(r"\[\s*\d+\s*,\s*\d+\s*,\s*\d+\s*,\s*\d+\s*\]")


def is_series(rel: Release) -> bool:
    """Whether a release was built in series mode (``manifest.mode`` or ``time.series``)."""
    if getattr(rel.manifest, "mode", None) == "series":
        return True
    time = rel.config.get("time")
    return isinstance(time, dict) and bool(time.get("series"))


@dataclass
class SeriesScan:
    """What the section reads of every sample of a series release (one pass over the shards)."""

    samples: int = 0
    lacking: list[str] = field(default_factory=list)  # keys without dates.json or series facts
    dates: list[list[dict[str, Any]]] = field(default_factory=list)  # dates.json per sample
    first_change: Counter[int] = field(default_factory=Counter)  # step -> pixels (0 = never)
    first_change_samples: Counter[int] = field(default_factory=Counter)  # step -> samples
    step_changed: Counter[int] = field(default_factory=Counter)  # step -> changed pixels
    regions: list[dict[str, Any]] = field(default_factory=list)
    trends: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    qa: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    qa_samples: Counter[str] = field(default_factory=Counter)  # type -> samples asking it
    problems: list[str] = field(default_factory=list)

    #: The errors that end the read of a shard (a :class:`~.data.ShardReader`).
    catches: ClassVar[tuple[type[Exception], ...]] = (
        OSError,
        tarfile.TarError,
        ValueError,
        KeyError,
    )

    def add(self, key: str, members: dict[str, bytes]) -> None:
        """Count one sample."""
        _add_sample(self, key, members)

    def needs(self, key: str) -> frozenset[str] | None:
        """Its members: the metadata, the dates, the first-change map and the QA items."""
        return frozenset({"json", "dates.json", "first_change.png", "qa.json"})

    def fail(self, shard: str, error: Exception) -> None:
        """A shard that could not be read."""
        self.problems.append(f"{shard}: cannot be read ({type(error).__name__})")


def _add_sample(scan: SeriesScan, key: str, members: dict[str, bytes]) -> None:
    from geodelta.data import decode_member

    scan.samples += 1
    meta = json.loads(members.get("json", b"{}"))
    facts = meta.get("series") if isinstance(meta, dict) else None
    if "dates.json" not in members or not isinstance(facts, dict):
        scan.lacking.append(key)
    else:
        scan.dates.append(list(json.loads(members["dates.json"])))
        for step in facts.get("steps", []):
            scan.step_changed[int(step["index"])] += int(step["changed_pixels"])
        scan.regions += list(facts.get("regions", []))
        for c in facts.get("classes", []):
            scan.trends[str(c["class_name"])][str(c["trend"])] += 1
    if "first_change.png" in members:
        first = np.asarray(decode_member("first_change.png", members["first_change.png"]))
        values, counts = np.unique(first, return_counts=True)
        for v, n in zip(values.tolist(), counts.tolist(), strict=True):
            scan.first_change[int(v)] += int(n)
            if v > 0:
                scan.first_change_samples[int(v)] += 1
    asked = set()
    for q in json.loads(members.get("qa.json", b"[]")):
        t = str(q.get("type", ""))
        if t in TEMPORAL_QA_TYPES:
            scan.qa[t][answer_label(t, str(q.get("question", "")), str(q.get("answer", "")))] += 1
            asked.add(t)
    scan.qa_samples.update(asked)


def scan_series(rel: Release) -> SeriesScan:
    """One pass over the release's shards (shard order); unreadable shards become problems."""
    scan = SeriesScan()
    read_shards(rel, [scan])
    return scan


# --------------------------------------------------------------------------------------------
# Tables


def _windows(rel: Release) -> list[tuple[int, str]]:
    """``(index, 'start .. end')`` of the config's series windows; [] when it cannot say."""
    from pydantic import ValidationError

    from geodelta.schemas.series import SeriesConfig, series_windows

    spec = cfg(rel.config, "time", "series", None)
    try:
        windows = series_windows(SeriesConfig.model_validate(spec))
    except (ValidationError, TypeError):
        return []
    return [(w.index, f"{w.start:%Y-%m-%d} .. {w.end:%Y-%m-%d}") for w in windows]


def _timeline(rel: Release, scan: SeriesScan) -> dict[str, Any]:
    per_window: Counter[int] = Counter()
    days: dict[int, list[str]] = defaultdict(list)  # window -> ISO dates of its acquisitions
    clear: dict[int, list[float]] = defaultdict(list)
    for dates in scan.dates:
        for d in dates:
            w = int(d["window"])
            per_window[w] += 1
            days[w].append(str(d["datetime"])[:10])
            if isinstance(d.get("clear_fraction"), int | float):
                clear[w].append(float(d["clear_fraction"]))
    windows = _windows(rel) or [(w, "?") for w in sorted(per_window)]
    n = len(scan.dates)
    rows = []
    for w, span in windows:
        got = f"{min(days[w])} .. {max(days[w])}" if days[w] else "–"
        cf = f"{median(clear[w]):.3f}" if clear[w] else "–"
        rows.append((w, span, got, per_window[w], pct(per_window[w] / n) if n else "–", cf))
    empty = [f"{w} ({span})" for w, span in windows if per_window[w] == 0]
    skipping = sum(1 for dates in scan.dates if len(dates) < len(windows))
    figs = []
    if windows and n:
        figs.append(
            Plot(
                plots.bars(
                    [f"{w}: {span[:10]}" for w, span in windows],
                    [per_window[w] for w, _ in windows],
                    title="Samples with a date in each window",
                    xlabel="samples",
                ),
                "dates per window",
            )
        )
    return {
        "windows": table(
            [
                "window",
                "span",
                "dates (first .. last)",
                "samples with a date",
                "share",
                "clear fraction (median)",
            ],
            rows,
            numeric=(0, 3, 4, 5),
        ),
        "empty_windows": empty,
        "skipping": skipping,
        "n_windows": len(windows),
        "timeline_plots": figs,
    }


def _residuals(rel: Release, scan: SeriesScan) -> Table:
    by_index: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for dates in scan.dates:
        for d in dates:
            dy, dx = (float(v) for v in d.get("shift_px", (0.0, 0.0)))
            by_index[int(d["index"])].append(
                (float(d.get("residual_px", 0.0)), float(np.hypot(dy, dx)))
            )
    limit = float(
        cfg(rel.config, "validation", "max_residual_px", ValidationConfig().max_residual_px)
    )
    rows = []
    for i in sorted(by_index):
        res = [r for r, _ in by_index[i]]
        shift = [s for _, s in by_index[i]]
        rows.append(
            (
                "0 (reference)" if i == 0 else i,
                len(res),
                f"{median(shift):.3f}",
                f"{median(res):.3f}",
                f"{max(res):.3f}",
                sum(r > limit for r in res),
            )
        )
    return table(
        [
            "date index",
            "samples",
            "|shift| px (median)",
            "residual px (median)",
            "residual px (max)",
            f"over max_residual_px ({limit:g})",
        ],
        rows,
        numeric=(1, 2, 3, 4, 5),
    )


def _steps(scan: SeriesScan) -> dict[str, Any]:
    steps = sorted(k for k in set(scan.first_change) | set(scan.step_changed) if k > 0)
    first_total = sum(scan.first_change[k] for k in steps)
    rows = [
        (
            k,
            f"date {k - 1} -> date {k}",
            scan.first_change[k],
            pct(scan.first_change[k] / first_total) if first_total else "–",
            scan.first_change_samples[k],
            scan.step_changed[k],
        )
        for k in steps
    ]
    figs = []
    if first_total:
        figs.append(
            Plot(
                plots.bars(
                    [f"step {k}" for k in steps],
                    [scan.first_change[k] for k in steps],
                    title="Pixels by the step of their first change",
                    xlabel="pixels",
                ),
                "first-change step distribution",
            )
        )
    return {
        "steps": table(
            [
                "step",
                "between",
                "pixels first changed",
                "share",
                "samples",
                "pixels changed at the step",
            ],
            rows,
            numeric=(0, 2, 3, 4, 5),
        ),
        "never_px": scan.first_change[0],
        "first_px": first_total,
        "step_plots": figs,
    }


def _regions(scan: SeriesScan) -> dict[str, Any]:
    permanent = sum(bool(r.get("persistent")) for r in scan.regions)
    changes: Counter[int] = Counter(len(r.get("changed_steps", ())) for r in scan.regions)
    trend_rows = [
        (name, *(scan.trends[name][w] for w in SERIES_TREND_WORDS)) for name in sorted(scan.trends)
    ]
    return {
        "regions": len(scan.regions),
        "permanent": permanent,
        "transient": len(scan.regions) - permanent,
        "changes": table(
            ["changes of the dominant class", "regions"],
            [(k, changes[k]) for k in sorted(changes)],
            numeric=(0, 1),
        ),
        "trends": table(
            ["class", *SERIES_TREND_WORDS],
            trend_rows,
            numeric=range(1, 1 + len(SERIES_TREND_WORDS)),
        ),
    }


def answer_label(qa_type: str, question: str, answer: str) -> str:
    """What a temporal answer is counted as: dates cut to years (``interval``, ``date``: dates
    differ per sample), a box by its place in the question (``boxes``), else the answer."""
    kind = QA_TYPE_SPECS[qa_type].answer
    if kind in ("interval", "date"):
        return _ISO.sub(r"\1", answer)
    if kind == "boxes":
        named = [re.sub(r"\s", "", b) for b in _BOX.findall(question)]
        a = re.sub(r"\s", "", answer)
        if named[:1] == [a]:
            return FIRST_NAMED
        return SECOND_NAMED if a in named[1:2] else NOT_NAMED
    return answer


def _qa(scan: SeriesScan) -> dict[str, Any]:
    n = max(1, scan.samples)
    rows, balance = [], []
    for t in TEMPORAL_QA_TYPES:
        c = scan.qa.get(t, Counter())
        kind = QA_TYPE_SPECS[t].answer
        total = sum(c.values())
        ranked = sorted(c, key=lambda a: (-c[a], a))
        top = " · ".join(f"{a} {pct(c[a] / total)}" for a in ranked[:5]) if total else "–"
        if len(ranked) > 5:
            top += f" · ({len(ranked) - 5} more)"
        majority = pct(c[ranked[0]] / total) if total else "–"
        rows.append((t, total, pct(scan.qa_samples[t] / n), len(ranked), majority, top))
        for a in CLOSED_ANSWERS.get(kind, ()):
            balance.append((t, a, c[a], pct(c[a] / total) if total else "–"))
    return {
        "qa_items": sum(sum(c.values()) for c in scan.qa.values()),
        "qa_types": table(
            ["type", "items", "coverage", "distinct answers", "majority share", "answers"],
            rows,
            numeric=(1, 2, 3, 4),
        ),
        "qa_balance": table(["type", "answer", "items", "share"], balance, numeric=(2, 3)),
    }


def _retrieval(rel: Release) -> dict[str, Any]:
    """The ``retrieval_temporal`` metrics: ``kind`` absent (no metrics file), missing (trained
    without them), shown."""
    ref = rel.reference
    if not isinstance(ref, dict):
        return {"kind": "absent", "file": REFERENCE_METRICS}
    m = ref.get("retrieval_temporal")
    if not isinstance(m, dict):
        return {"kind": "missing", "file": REFERENCE_METRICS}
    gallery = max(int(m.get("gallery", 1)), 1)
    rows = [
        (
            f"Recall@{k} (samples + hard negatives)",
            f"{float(m[f'recall_at_{k}']):.3f}",
            f"{min(k, gallery) / gallery:.3f}",
        )
        for k in (1, 5, 10)
    ]
    rows.append(
        (
            "temporal Recall@1 (own place's intervals only)",
            f"{float(m['temporal_recall_at_1']):.3f}",
            f"{float(m['chance_temporal_recall_at_1']):.3f}",
        )
    )
    return {
        "kind": "shown",
        "file": REFERENCE_METRICS,
        "table": table(["metric", "value", "chance"], rows, numeric=(1, 2)),
        "queries": int(m.get("queries", 0)),
        "samples": int(m.get("samples", 0)),
        "hard_negatives": int(m.get("hard_negatives", 0)),
        "gallery": gallery,
    }


def series_section(rel: Release, scan: SeriesScan | None = None) -> Section | None:
    """The "Dates and temporal QA" section of a series release; None for a pair release.

    Args:
        rel: the release.
        scan: its samples as read already (:func:`~.scan.scan_release`); None: read them here.
    """
    if not is_series(rel):
        return None
    if scan is None:
        scan = scan_series(rel)
    if not scan.samples:
        return Section(_IDENT, _TITLE, empty=True)
    per_sample: Counter[int] = Counter(len(d) for d in scan.dates)
    counts = [len(d) for d in scan.dates]
    data: dict[str, Any] = {
        "samples": scan.samples,
        "with_dates": len(scan.dates),
        "lacking": len(scan.lacking),
        "lacking_keys": scan.lacking[:10],
        "dates_min": min(counts) if counts else "–",
        "dates_max": max(counts) if counts else "–",
        "dates_table": table(
            ["dates per sample", "samples", "share"],
            [(t, per_sample[t], pct(per_sample[t] / len(counts))) for t in sorted(per_sample)],
            numeric=(0, 1, 2),
        ),
        "residuals": _residuals(rel, scan),
        "problems": scan.problems,
        "retrieval": _retrieval(rel),
    }
    data |= _timeline(rel, scan) | _steps(scan) | _regions(scan) | _qa(scan)
    return Section(_IDENT, _TITLE, data)
