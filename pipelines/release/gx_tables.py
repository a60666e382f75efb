"""The tables the release contract runs on, built from the samples (no GX import here).

Three pandas tables (columns: :data:`geodelta.schemas.expectations.TABLE_COLUMNS`): ``samples``
(one row per sample, with derived columns such as the split-conflict counts, the UTM-zone offset
and whether the mask and the captions say "no change"), ``captions`` (one row per caption) and
``qa`` (one row per QA item). :mod:`geodelta.pipelines.release.gx` runs the suites on them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from geodelta.annotators.claims import is_no_change_caption
from geodelta.schemas import BuildConfig, SampleMeta
from geodelta.schemas.expectations import (
    COUNT_QA_TYPES,
    RATIO_QA_TYPES,
    REQUIRED_QA_TYPES,
    TABLE_COLUMNS,
    YES_NO_QA_TYPES,
    TableName,
    qa_count_column,
)

__all__ = [
    "ReleaseRecord",
    "build_tables",
    "cell_text",
    "refresh_split_conflicts",
    "split_conflicts",
]

_UTM_RE = re.compile(r"^EPSG:32([67])([0-9]{2})$")


@dataclass(frozen=True)
class ReleaseRecord:
    """What the contract reads of one sample: its metadata, captions and QA (as in qa.json)."""

    meta: SampleMeta
    captions: Sequence[Any]
    qa: Sequence[Mapping[str, Any]]


def _utm_zone(lon: float) -> int:
    return min(60, max(1, math.floor((lon + 180.0) / 6.0) + 1))


def _zone_offset(crs: str, lon: float) -> float | None:
    m = _UTM_RE.match(crs)
    if m is None or not math.isfinite(lon):
        return None
    d = abs(int(m.group(2)) - _utm_zone(lon))
    return float(min(d, 60 - d))


def _caption_no_change(captions: Sequence[Any]) -> str:
    texts = [c for c in captions if isinstance(c, str)]
    if not captions:
        return "none"
    says = [is_no_change_caption(c) for c in texts]
    if len(texts) == len(captions) and all(says):
        return "yes"
    return "no" if not any(says) else "mixed"


def _pair_captions(rec: ReleaseRecord) -> Sequence[Any]:
    """The captions about the pair (dates 0 and T-1): all of a pair sample's; a sequence
    sample's without its temporal ones (those name dates: they may tell of a change that
    came and went, which the pair's mask does not hold)."""
    if rec.meta.series is None:
        return rec.captions
    from geodelta.annotators.temporal import is_temporal_caption

    return [c for c in rec.captions if not (isinstance(c, str) and is_temporal_caption(c))]


def cell_text(value: Any) -> str:
    """A table cell as text; a missing value (None, or NaN in pandas >= 3 string columns) is "None"."""
    return (
        "None" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    )


def _naive_utc(when: datetime) -> datetime:
    """The same instant as a timezone-naive UTC datetime."""
    return when.astimezone(UTC).replace(tzinfo=None)


def _sample_row(rec: ReleaseRecord, cfg: BuildConfig) -> dict[str, Any]:
    m = rec.meta
    facts = m.facts
    min_lon, min_lat, max_lon, max_lat = m.bbox_lonlat
    dy, dx = m.coreg.shift_px
    changed = facts.n_regions > 0 and facts.changed_fraction > cfg.annotation.no_change_epsilon
    types = [q.get("type") for q in rec.qa]
    row: dict[str, Any] = {
        "key": m.key,
        "cell_id": m.cell_id,
        "split": m.split,
        "region": m.region,
        "crs": m.crs,
        # naive UTC: pandas >= 3.1 deprecates .values on tz-aware columns, which GX uses
        "t0": _naive_utc(m.t0),
        "t1": _naive_utc(m.t1),
        "gap_days": m.gap_days,
        "min_lon": min_lon,
        "min_lat": min_lat,
        "max_lon": max_lon,
        "max_lat": max_lat,
        "before_item": m.before_item,
        "after_item": m.after_item,
        "before_clear": m.before_clear,
        "after_clear": m.after_clear,
        "before_valid": m.before_valid,
        "after_valid": m.after_valid,
        "shift_dy": dy,
        "shift_dx": dx,
        "shift_px": math.hypot(dy, dx),
        "residual_px": m.coreg.residual_px,
        "changed_fraction": facts.changed_fraction,
        "n_regions": facts.n_regions,
        "n_captions": len(rec.captions),
        "n_qa": len(rec.qa),
        "annotator": m.annotator,
        "licence": m.licence,
        "attribution": m.attribution,
        "mask_no_change": "no" if changed else "yes",
        "caption_no_change": _caption_no_change(_pair_captions(rec)),
        "split_cell_conflicts": 0,
        "split_buffer_conflicts": 0,
        "crs_zone_offset": _zone_offset(m.crs, (min_lon + max_lon) / 2.0),
    }
    for t in REQUIRED_QA_TYPES:
        row[qa_count_column(t)] = types.count(t)
    return row


def _qa_rows(rec: ReleaseRecord) -> list[dict[str, Any]]:
    rows = []
    for i, q in enumerate(rec.qa):
        kind, answer = q.get("type"), q.get("answer")
        rows.append(
            {
                "key": rec.meta.key,
                "index": i,
                "type": kind,
                "question": q.get("question"),
                "answer": answer,
                "answer_yes_no": answer if kind in YES_NO_QA_TYPES else None,
                "answer_count": answer if kind in COUNT_QA_TYPES else None,
                "answer_ratio": answer if kind in RATIO_QA_TYPES else None,
            }
        )
    return rows


def _split_rank(cfg: BuildConfig) -> dict[str, int]:
    """Split -> priority (0 = highest): smaller configured fraction first, then name."""
    fr = cfg.splits.fractions
    return {s: i for i, s in enumerate(sorted(fr, key=lambda s: (fr[s], s)))}


def split_conflicts(samples: pd.DataFrame, cfg: BuildConfig) -> tuple[np.ndarray, np.ndarray]:
    """Count, per row, the conflicts of its cell with cells of a split of higher priority.

    Priority: the split with the smaller ``splits.fractions`` share keeps its cells (ties by
    name; a split not in the config comes last), so evaluation splits stay whole and the
    training cells around them are the ones given up. Distances are measured on the lon/lat
    footprints, in cells (a footprint's own width/height), so they work across UTM zones and
    whatever the cell id format: two footprints are the *same cell* when their centres are
    less than half a cell apart on both axes (or their cell ids are equal), and *within the
    buffer* when fewer than ``splits.buffer_cells`` cells separate them (Chebyshev; the half
    cell of slack absorbs the slight inflation of the lon/lat bbox of a UTM square).

    Args:
        samples: the samples table (``cell_id``, ``split``, ``min_lon`` ... ``max_lat``).
        cfg: the build config (``splits``).

    Returns:
        ``(cell_conflicts, buffer_conflicts)``: per row, how many splits of higher priority hold
        the same cell, and how many cells of a split of higher priority lie within the buffer
        (0 everywhere when ``splits.buffer_cells`` is 0).
    """
    n = len(samples)
    cell = np.zeros(n, dtype=np.int64)
    buffer = np.zeros(n, dtype=np.int64)
    if n == 0:
        return cell, buffer
    ranks = _split_rank(cfg)
    rank = np.array([ranks.get(s, len(ranks)) for s in samples["split"]], dtype=np.int64)
    splits = samples["split"].to_numpy()
    cells = samples["cell_id"].to_numpy()
    x0, x1 = samples["min_lon"].to_numpy(float), samples["max_lon"].to_numpy(float)
    y0, y1 = samples["min_lat"].to_numpy(float), samples["max_lat"].to_numpy(float)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    buf = cfg.splits.buffer_cells
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(n):
            better = rank < rank[i]
            if not better.any():
                continue
            half_w, half_h = (w[i] + w) / 2, (h[i] + h) / 2
            # gap between the footprints in cells (negative = overlap), per axis
            gap_x = (np.abs(cx - cx[i]) - half_w) / half_w
            gap_y = (np.abs(cy - cy[i]) - half_h) / half_h
            same = (cells == cells[i]) | (
                (np.abs(cx - cx[i]) < half_w / 2) & (np.abs(cy - cy[i]) < half_h / 2)
            )
            cell[i] = len(set(splits[better & same]))
            if buf > 0:
                near = np.maximum(gap_x, gap_y) < buf - 0.5
                buffer[i] = int(np.count_nonzero(better & near & ~same))
    return cell, buffer


def build_tables(
    records: Iterable[ReleaseRecord], cfg: BuildConfig
) -> dict[TableName, pd.DataFrame]:
    """The three tables the suites run on (columns: ``expectations.TABLE_COLUMNS``).

    Args:
        records: the samples (any subset: a batch or the whole release).
        cfg: the build config (epsilon, splits).

    Returns:
        ``{"samples": ..., "captions": ..., "qa": ...}``, each with a fresh RangeIndex.
    """
    samples, captions, qa = [], [], []
    for rec in records:
        samples.append(_sample_row(rec, cfg))
        captions += [
            {"key": rec.meta.key, "index": i, "caption": c} for i, c in enumerate(rec.captions)
        ]
        qa += _qa_rows(rec)
    tables: dict[TableName, pd.DataFrame] = {
        "samples": pd.DataFrame(samples, columns=list(TABLE_COLUMNS["samples"])),
        "captions": pd.DataFrame(captions, columns=list(TABLE_COLUMNS["captions"])),
        "qa": pd.DataFrame(qa, columns=list(TABLE_COLUMNS["qa"])),
    }
    refresh_split_conflicts(tables["samples"], cfg)
    return tables


def refresh_split_conflicts(samples: pd.DataFrame, cfg: BuildConfig) -> None:
    """(Re)compute the ``split_*_conflicts`` columns in place (after editing rows)."""
    cell, buffer = split_conflicts(samples, cfg)
    samples["split_cell_conflicts"] = cell
    samples["split_buffer_conflicts"] = buffer
