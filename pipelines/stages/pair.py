"""search -> pair: choose the before and after scenes of a cell.

A scene is acceptable when it covers the cell and its *pixel-level* clear fraction over the cell
(from the classification band, never the scene-wide ``eo:cloud_cover``) reaches the threshold.
Collections without a classification band give an unknown clear fraction: such scenes are kept
only when ``pairing.allow_unknown_clear`` says so, and the unknown is recorded as ``None``, never
assumed to be 1.

Among acceptable (before, after) pairs within the allowed time gap the best score wins: the sum
of the clear fractions, minus a penalty per 30 days of day-of-year difference (same season reads
the same vegetation state), plus a small bonus for scenes on the cell's own grid (no
reprojection). Ties break on item ids, so the choice is deterministic. The label source of
``labels.kind`` then picks the pair's label items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from geodelta.pipelines.stages.labels.base import Rejection
from geodelta.pipelines.stages.labels.registry import label_source
from geodelta.schemas import BuildConfig, QuarantineRecord, ScenePair, SceneRef, TileJob
from geodelta.schemas.config import PairingConfig
from geodelta.sources.catalog import SceneCatalog

ClearFn = Callable[[SceneRef, TileJob], float | None]


def _quarantine(job: TileJob, reason: str, detail: str) -> QuarantineRecord:
    return QuarantineRecord(
        key=job.cell_id, cell_id=job.cell_id, stage="pair", reason=reason, detail=detail
    )


#: id(geometry dict) -> (the dict, its buffered shapely footprint). Catalog scenes live as long as
#: the worker, so each footprint is built once instead of once per cell; the dict is kept in the
#: value so its id cannot be reused by another object while cached.
_FOOTPRINTS: dict[int, tuple[dict[str, Any], Any]] = {}
_FOOTPRINTS_MAX = 4096


def _footprint(geometry: dict[str, Any]) -> Any:
    from shapely.geometry import shape

    hit = _FOOTPRINTS.get(id(geometry))
    if hit is not None and hit[0] is geometry:
        return hit[1]
    footprint = shape(geometry).buffer(1e-9)
    if len(_FOOTPRINTS) >= _FOOTPRINTS_MAX:
        _FOOTPRINTS.clear()
    _FOOTPRINTS[id(geometry)] = (geometry, footprint)
    return footprint


@lru_cache(maxsize=256)
def _cell_box(bbox: tuple[float, float, float, float]) -> Any:
    from shapely.geometry import box

    return box(*bbox)


def covers(scene: SceneRef, job: TileJob) -> bool:
    """Whether the scene's footprint covers the whole cell."""
    cell = _cell_box(job.bbox_lonlat)
    if scene.geometry is not None:
        return bool(_footprint(scene.geometry).covers(cell))
    x0, y0, x1, y1 = scene.bbox_lonlat
    return (
        x0 <= cell.bounds[0]
        and y0 <= cell.bounds[1]
        and x1 >= cell.bounds[2]
        and y1 >= cell.bounds[3]
    )


def season_gap_days(a: datetime, b: datetime) -> float:
    """Day-of-year distance between two dates, on a circle of 365.25 days."""
    d = abs(a.timetuple().tm_yday - b.timetuple().tm_yday)
    return float(min(d, 365.25 - d))


def _fmt(scenes: Sequence[tuple[SceneRef, float | None]]) -> str:
    parts = [f"{s.item_id}={'unknown' if c is None else f'{c:.3f}'}" for s, c in scenes]
    return ", ".join(parts) or "none"


def choose_pair(
    job: TileJob,
    before: Sequence[SceneRef],
    after: Sequence[SceneRef],
    clear: ClearFn,
    cfg: BuildConfig,
) -> ScenePair | QuarantineRecord:
    """Choose the best before/after scenes for ``job`` from the search results of both windows.

    Clear fractions cost a raster read each, so scenes are rated lazily: candidate pairs are
    visited best upper bound first (a clear fraction is at most 1), and the search stops as
    soon as no remaining pair can beat the best one found. The choice is the same as rating
    every scene and taking the best score (ties break on item ids); a scene that cannot win is
    never read. When no pair fits, every covering scene is rated so the quarantine record lists
    them all.

    Args:
        job: the cell.
        before: candidate scenes of the t0 window.
        after: candidate scenes of the t1 window.
        clear: clear fraction (0..1) of a scene over the cell (``None`` = unknown); called at
            most once per scene.
        cfg: build config (``pairing``, ``imagery``).

    Returns:
        The chosen pair (without label items), or a quarantine record saying why none fits.
    """
    rated: dict[int, float | None] = {}

    def rate(scene: SceneRef) -> float | None:
        if id(scene) not in rated:
            rated[id(scene)] = clear(scene, job)
        return rated[id(scene)]

    covering = {
        name: [s for s in scenes if covers(s, job)]
        for name, scenes in (("t0", before), ("t1", after))
    }
    if covering["t0"] and covering["t1"]:
        best = _best_pair(job, covering["t0"], covering["t1"], rate, cfg)
        if best is not None:
            return best
    return _why_no_pair(job, {"t0": before, "t1": after}, covering, rate, cfg)


def _acceptable(c: float | None, p: PairingConfig) -> bool:
    return (c is None and p.allow_unknown_clear) or (c is not None and c >= p.min_clear_fraction)


def _score(
    cb: float | None, ca: float | None, rest: tuple[float, float], p: PairingConfig
) -> float:
    """Pair score: clear fractions (unknown counts as the threshold), season penalty, grid bonus."""
    season, bonus = rest
    score = (cb if cb is not None else p.min_clear_fraction) + (
        ca if ca is not None else p.min_clear_fraction
    )
    score -= season
    score += bonus
    return score


def _best_pair(
    job: TileJob,
    before: Sequence[SceneRef],
    after: Sequence[SceneRef],
    rate: Callable[[SceneRef], float | None],
    cfg: BuildConfig,
) -> ScenePair | None:
    """The best acceptable pair within the gap bounds (branch and bound), or None."""
    p = cfg.pairing
    candidates = []
    for i, b in enumerate(before):
        for j, a in enumerate(after):
            gap = (a.datetime - b.datetime).total_seconds() / 86400.0
            if not p.min_gap_days <= gap <= p.max_gap_days:
                continue
            rest = (
                p.season_weight * season_gap_days(a.datetime, b.datetime) / 30.0,
                0.01 * ((b.crs == job.crs) + (a.crs == job.crs)),
            )
            # the same arithmetic as the exact score, with both clear fractions at 1: an upper
            # bound (floating-point rounding is monotonic, so it bounds the computed score too)
            bound = _score(1.0, 1.0, rest, p)
            candidates.append(((-bound, b.item_id, a.item_id, i, j), b, a, rest))
    candidates.sort(key=lambda c: c[0])
    best: tuple[tuple[float, str, str], ScenePair] | None = None
    for (neg_bound, b_id, a_id, _, _), b, a, rest in candidates:
        if best is not None and best[0] < (neg_bound, b_id, a_id):
            break  # every remaining pair scores at most its bound: none can win
        cb = rate(b)
        if not _acceptable(cb, p):
            continue
        ca = rate(a)
        if not _acceptable(ca, p):
            continue
        score = _score(cb, ca, rest, p)
        rank = (-score, b.item_id, a.item_id)
        if best is None or rank < best[0]:
            pair = ScenePair(
                job=job, before=b, after=a, before_clear=cb, after_clear=ca, score=score
            )
            best = (rank, pair)
    return None if best is None else best[1]


def _why_no_pair(
    job: TileJob,
    found: dict[str, Sequence[SceneRef]],
    covering: dict[str, list[SceneRef]],
    rate: Callable[[SceneRef], float | None],
    cfg: BuildConfig,
) -> QuarantineRecord:
    """The quarantine record of a cell without an acceptable pair (every scene rated)."""
    p = cfg.pairing
    picked: dict[str, list[tuple[SceneRef, float | None]]] = {}
    for name in ("t0", "t1"):
        scenes = found[name]
        if not covering[name]:
            found_what = f"{len(scenes)} found, none covers the cell" if scenes else "none found"
            return _quarantine(
                job,
                f"no_scene_{name}",
                f"no {cfg.imagery.collection} scene covers the cell in time.{name} "
                f"({found_what}); widen time.{name} or check the catalog",
            )
        rated = [(s, rate(s)) for s in covering[name]]
        ok = [(s, c) for s, c in rated if _acceptable(c, p)]
        if not ok:
            if all(c is None for _, c in rated):
                return _quarantine(
                    job,
                    "unknown_clear_fraction",
                    f"the {name} scenes have no classification band ({_fmt(rated)}); set "
                    "pairing.allow_unknown_clear: true to keep them or imagery.classification_asset",
                )
            return _quarantine(
                job,
                f"no_clear_scene_{name}",
                f"no {name} scene is clear enough over the cell (clear fractions: {_fmt(rated)}; "
                f"pairing.min_clear_fraction={p.min_clear_fraction})",
            )
        picked[name] = ok
    return _quarantine(
        job,
        "no_pair_in_gap",
        f"no clear before/after combination is {p.min_gap_days}-{p.max_gap_days} days apart "
        f"(t0: {_fmt(picked['t0'])}; t1: {_fmt(picked['t1'])}); "
        "change pairing.min_gap_days / pairing.max_gap_days",
    )


def search_and_pair(
    job: TileJob, cfg: BuildConfig, catalog: SceneCatalog, clear: ClearFn
) -> ScenePair | QuarantineRecord:
    """The search + pair stage for one cell, label items included.

    The label items are picked by the label source of ``labels.kind``
    (:mod:`geodelta.pipelines.stages.labels`), from the items of
    ``labels.searched_collection`` covering the cell between the start of ``time.t0`` and the
    end of ``time.t1`` (widened to the chosen scenes' dates); a kind that searches no
    collection picks from the chosen scenes themselves.

    Args:
        job: the cell.
        cfg: the build config.
        catalog: the catalog to search.
        clear: clear fraction of a scene over the cell (see :func:`choose_pair`).

    Returns:
        The chosen pair with its label items, or a quarantine record (stage ``pair``).
    """
    coll = [cfg.imagery.collection]
    cc = cfg.imagery.max_cloud_cover  # a pre-filter: the pixel-level clear fraction decides
    before = catalog.search(coll, job.bbox_lonlat, job.t0_window, max_cloud_cover=cc)
    after = catalog.search(coll, job.bbox_lonlat, job.t1_window, max_cloud_cover=cc)
    chosen = choose_pair(job, before, after, clear, cfg)
    if isinstance(chosen, QuarantineRecord):
        return chosen
    source = label_source(cfg.labels.kind)
    items: list[SceneRef] = []
    collection = cfg.labels.searched_collection
    if collection is not None:
        t_lo = min(job.t0_window[0], chosen.before.datetime)
        t_hi = max(job.t1_window[1], chosen.after.datetime)
        found = catalog.search([collection], job.bbox_lonlat, (t_lo, t_hi))
        items = [s for s in found if covers(s, job)]
    picked = source.pick(chosen, items, cfg.labels)
    if isinstance(picked, Rejection):
        return _quarantine(job, picked.reason, picked.detail)
    return picked
