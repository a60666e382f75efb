"""The validation section: the Great Expectations summary and the per-sample validation score.

The summary is what the validate stage writes (``validation/summary.json``, format
``geodelta.gx-summary/1``, see :mod:`geodelta.pipelines.release.gx`), shown with relative
links into ``validation/`` for the Data Docs; a summary of another format is shown field by
field; "not run" when there is none. The score is :func:`~.metrics.validation_scores`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from geodelta.pipelines.release.layout import GX_SUMMARY, VALIDATION_DIR
from geodelta.pipelines.report import plots
from geodelta.pipelines.report.data import Release
from geodelta.pipelines.report.metrics import SampleScore, flatten, scalar
from geodelta.pipelines.report.sections import (
    LIST_LIMIT,
    Link,
    Plot,
    Section,
    Table,
    release_link,
    table,
)

__all__ = ["validation_section"]


def _validation_link(path: Any, text: str | None = None) -> Link | None:
    """A link to a file under ``validation/`` named in the summary (its text ``text``, else the
    path), or ``None`` (a dash)."""
    if not isinstance(path, str) or not path or "://" in path or path.startswith(("/", "..")):
        return None
    return release_link(f"{VALIDATION_DIR}/{path}", path if text is None else text)


def _gx_generic(summary: dict[str, Any]) -> dict[str, Any]:
    """Any other summary layout: its scalar fields and its lists of records as tables."""
    scalars = [
        (k, scalar(v))
        for k, v in flatten({k: v for k, v in summary.items() if not isinstance(v, list)})
    ]
    lists: list[tuple[str, Table]] = []
    for name in sorted(k for k, v in summary.items() if isinstance(v, list)):
        items = [i for i in summary[name] if isinstance(i, dict)]
        cols: list[str] = []
        for item in items:
            cols += [k for k, v in item.items() if k not in cols and not isinstance(v, dict | list)]
        if items and cols:
            rows = ([scalar(i.get(c, "")) for c in cols[:8]] for i in items[:LIST_LIMIT])
            lists.append((name, table(cols[:8], rows)))
    return {
        "format": str(summary.get("format")),
        "scalars": table(["field", "value"], scalars) if scalars else None,
        "lists": lists,
    }


def _gx_geodelta(summary: dict[str, Any]) -> dict[str, Any]:
    """The ``geodelta.gx-summary/1`` layout."""
    suites = [s for s in summary.get("suites", []) if isinstance(s, dict)]
    evaluated = sum(int(s.get("evaluated", 0)) for s in suites)
    failed = sum(int(s.get("failed", 0)) for s in suites)
    failing = [
        (str(s.get("name", "")), e)
        for s in suites
        for e in s.get("expectations", [])
        if isinstance(e, dict) and not e.get("success", True)
    ]
    failed_table = table(
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
    quarantined = [q for q in summary.get("quarantined", []) if isinstance(q, dict)]
    quarantined_table = table(
        ["key", "reason", "detail"],
        (
            (q.get("key", ""), q.get("reason", ""), q.get("detail", ""))
            for q in quarantined[:LIST_LIMIT]
        ),
    )
    return {
        "passed": bool(summary.get("success")),
        "held": evaluated - failed,
        "evaluated": evaluated,
        "samples_checked": summary.get("samples_checked", "–"),
        "samples_quarantined": summary.get("samples_quarantined", 0),
        "gx_version": summary.get("gx_version", "?"),
        "data_docs": _validation_link(summary.get("data_docs")),
        "raw": release_link(GX_SUMMARY),
        "suites": [
            {
                "name": s.get("name", ""),
                "table": s.get("table", ""),
                "rows": s.get("rows", ""),
                "evaluated": s.get("evaluated", ""),
                "failed": s.get("failed", ""),
                "result": "ok" if s.get("success") else "FAILED",
                "links": [  # short texts: the table fits a 1,280 px window
                    _validation_link(s.get(k), text)
                    for k, text in (
                        ("suite_file", "suite JSON"),
                        ("results_file", "results JSON"),
                        ("data_docs_page", "Data Docs page"),
                    )
                ],
            }
            for s in suites
        ],
        "failing": failed_table if failing else None,
        "quarantined": quarantined_table if quarantined else None,
        "n_quarantined": len(quarantined),
    }


def _gx(rel: Release) -> dict[str, Any]:
    from geodelta.pipelines.release.gx import SUMMARY_FORMAT  # pandas: only when rendering

    summary = rel.gx_summary
    if rel.gx_problem is not None:
        return {"kind": "problem", "problem": rel.gx_problem}
    if summary is None:
        return {"kind": "not_run", "summary_file": GX_SUMMARY}
    if summary.get("format") == SUMMARY_FORMAT:
        return {"kind": "geodelta", **_gx_geodelta(summary)}
    return {"kind": "generic", **_gx_generic(summary)}


def validation_section(rel: Release, scores: Sequence[SampleScore]) -> Section:
    """The GX summary, then the validation scores (limits, histogram, worst samples)."""
    data: dict[str, Any] = {"gx": _gx(rel), "scores": bool(scores)}
    if scores:
        limits = Counter(s.limit for s in scores)
        by_limit = sorted(limits.items(), key=lambda kv: (-kv[1], kv[0]))
        png = plots.histogram(
            [("samples", [s.score for s in scores])],
            title="Validation score",
            xlabel="score (0 = at a rule limit)",
            bins=list(np.linspace(0.0, 1.0, 21)),
        )
        data |= {
            "limits": table(["limited by", "samples"], by_limit, numeric=(1,)),
            "plots": [Plot(png, "validation score histogram")],
            "worst": table(
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
                    for s in scores[:10]
                ),
                numeric=(1, 3, 4, 5, 6),
            ),
        }
    return Section("validation", "Validation", data)
