"""The report's ``drift`` section: the catalog drift a ``build --from`` measured.

A release built with ``--from PREVIOUS`` holds ``drift.json`` (:mod:`geodelta.pipelines.release.drift`):
the items of the previous release's snapshot that the catalog no longer returns, returns
changed (which fields), or returns newly, over the previous release's cells, and the previous
samples they affect (those were processed again, not reused). Drift is information, not a
failure: the section says what moved. Without the file it says why there is no check.
"""

from __future__ import annotations

from typing import Any

from geodelta.pipelines.release.layout import DRIFT, INCREMENTAL
from geodelta.pipelines.report.data import Release
from geodelta.pipelines.report.sections import Section, release_link, table

__all__ = ["drift_section"]

_TITLE = "Catalog drift"
#: Items listed in the section's table (the file lists them all).
ROWS = 50


def _fields(item: dict[str, Any]) -> str:
    names = [str(f.get("name", "")) for f in item.get("fields", [])]
    return ", ".join(names) if names else "–"


def _samples(item: dict[str, Any]) -> str:
    keys = [str(k) for k in item.get("samples", [])]
    if not keys:
        return "–"
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3})" if len(keys) > 3 else "")


def drift_section(rel: Release) -> Section:
    """Counts of added / removed / changed items and affected samples, and the first items
    (``drift.json``); without the file, why there was no drift check."""
    path = rel.root / DRIFT
    if not path.is_file():
        why = (
            "the previous release has no search snapshot"
            if (rel.root / INCREMENTAL).is_file()
            else "this release was not built with --from (no previous snapshot to compare with)"
        )
        return Section("drift", _TITLE, {"kind": "absent", "why": why, "file": DRIFT})
    import json

    try:
        data = json.loads(path.read_bytes())
        items = list(data["items"])
        counts = {k: int(data[k]) for k in ("added", "removed", "changed", "affected_samples")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Section(
            "drift", _TITLE, {"kind": "problem", "problem": f"{DRIFT} cannot be read ({exc})"}
        )
    rows = [
        (
            str(i.get("change", "")),
            f"{i.get('collection', '')}/{i.get('id', '')}",
            _fields(i),
            len(i.get("samples", [])),
            _samples(i),
        )
        for i in items[:ROWS]
    ]
    return Section(
        "drift",
        _TITLE,
        {
            "kind": "drift",
            "previous": str(data.get("previous_version", "")),
            "catalog": str(data.get("catalog", "")),
            "cells": int(data.get("cells_searched", 0)),
            "counts": counts,
            "drifted": bool(items),
            "more": max(0, len(items) - ROWS),
            "table": table(["change", "item", "fields", "samples", "e.g."], rows, numeric=[3]),
            "link": release_link(DRIFT),
        },
    )
