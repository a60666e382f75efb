"""``geodelta search CONFIG --dry-run``: what a build would pick, without reading imagery pixels.

For every planned cell (or, with ``max_cells``, that many cells evenly spaced in plan order,
and the report says it sampled): the candidate scenes of both windows, the pair the pair stage
would choose, its land-cover items, and an estimate of the bytes the build would read.

Clear fractions: the build decides on the *pixel-level* clear fraction over the cell, which
needs the classification band. By default the dry run reads no pixels at all and rates each
scene by its scene-wide ``eo:cloud_cover`` instead (``clear ~ 1 - cloud_cover / 100``,
reported as an estimate: a scene cloudy elsewhere may be clear over the cell, and the other way
round). ``read_clear=True`` reads only the small classification band (e.g. Sentinel-2 SCL at
20 m) of the candidates and reports the real pixel-level fractions.

Counting: with ``read_clear`` the pair stage decides exactly as the build's does, so its paired
and quarantined counts (per reason) are the build's for the searched cells, before load and
co-registration. Without it they rest on the scene-wide estimate: a cell "has a candidate pair"
but the build may still quarantine it (``no_clear_scene_t0``/``_t1``: a scene 3 % cloudy
overall may be cloudy over this cell); :meth:`SearchReport.summary_lines` says so instead of
calling those cells paired.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from geodelta.schemas import BuildConfig, QuarantineRecord, ScenePair, SceneRef, TileJob
from geodelta.schemas.records import BBox

ClearSource = Literal["scene_cloud_cover_estimate", "pixel_level_classification_band"]


@dataclass
class CellSearch:
    """The dry-run outcome of one cell."""

    cell_id: str
    region: str
    candidates_t0: int
    candidates_t1: int
    pair: ScenePair | None
    reason: str | None
    detail: str | None
    estimated_bytes: int

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        p = self.pair
        return {
            "cell_id": self.cell_id,
            "region": self.region,
            "candidates_t0": self.candidates_t0,
            "candidates_t1": self.candidates_t1,
            "dates": [d.item_id for d in p.series] if p and p.series else None,
            "before": p.before.item_id if p else None,
            "after": p.after.item_id if p else None,
            "before_clear": p.before_clear if p else None,
            "after_clear": p.after_clear if p else None,
            "label_before": p.label_before.item_id if p and p.label_before else None,
            "label_after": p.label_after.item_id if p and p.label_after else None,
            "reason": self.reason,
            "detail": self.detail,
            "estimated_bytes": self.estimated_bytes,
        }


@dataclass
class SearchReport:
    """The dry run of a config."""

    cells_planned: int
    clear_source: ClearSource
    cells: list[CellSearch] = field(default_factory=list)
    truncated_searches: int = 0
    stac_searches: int = 0
    """Searches sent to the catalog: one per plan block, collection and window
    (``runner.block_cells``), as the build searches."""
    series: bool = False
    """A sequence config (``time.series``): per cell the scenes of the span and the dates
    chosen (``pair`` = the first and last date, ``pair.series`` every date)."""

    @property
    def estimated_bytes(self) -> int:
        """Sum over the searched cells."""
        return sum(c.estimated_bytes for c in self.cells)

    @property
    def sampled(self) -> bool:
        """Whether only some of the planned cells were searched (``max_cells``)."""
        return len(self.cells) < self.cells_planned

    @property
    def paired(self) -> int:
        """Searched cells the pair stage found a pair for."""
        return sum(c.pair is not None for c in self.cells)

    @property
    def quarantined(self) -> dict[str, int]:
        """``pair:<reason>`` -> searched cells the pair stage quarantined for it, largest first."""
        counts = Counter(f"pair:{c.reason}" for c in self.cells if c.pair is None)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data (``geodelta search --json``)."""
        return {
            "cells_planned": self.cells_planned,
            "cells_searched": len(self.cells),
            "sampled": self.sampled,
            "clear_source": self.clear_source,
            "paired": self.paired,
            "quarantined": self.quarantined,
            "estimated_bytes": self.estimated_bytes,
            "truncated_searches": self.truncated_searches,
            "stac_searches": self.stac_searches,
            "series": self.series,
            "cells": [c.as_dict() for c in self.cells],
        }

    def summary_lines(self) -> list[str]:
        """What the dry run found, in words: every cell or a sample, paired and quarantined
        counts over the searched cells (per reason), and how far they are the build's."""
        n = len(self.cells)
        if self.sampled:
            scope = (
                f"sampled {n} of {self.cells_planned} planned cells (evenly spaced in plan "
                f"order; --max-cells 0 searches every cell): the counts below cover those {n} only"
            )
        else:
            scope = f"searched every planned cell ({self.cells_planned})"
        reasons = ", ".join(f"{r} x{k}" for r, k in self.quarantined.items())
        quarantined = f"{n - self.paired} quarantined" + (f" ({reasons})" if reasons else "")
        if self.series:
            outcome = (
                f"sequence dates ({'pixel-level' if self.clear_source.startswith('pixel') else 'scene-wide estimate'}): "
                f"{self.paired} of {n} cells have enough dates, {quarantined}"
            )
        elif self.clear_source == "pixel_level_classification_band":
            outcome = (
                f"pair stage, decided as the build decides (pixel-level clear fractions): "
                f"{self.paired} of {n} cells paired, {quarantined}; the build's load and "
                "co-registration stages may quarantine more"
            )
        else:
            outcome = (
                f"pair stage on scene-wide eo:cloud_cover (an estimate, not the build's "
                f"decision): {self.paired} of {n} cells have a candidate pair, {quarantined}; "
                "the build rates the clear pixels over each cell and may quarantine some of "
                "them (no_clear_scene_t0/t1): --read-clear counts them as the build does"
            )
        how = (
            "scene-wide eo:cloud_cover estimates (the pixel-level fraction over each cell is "
            "computed at build time; --read-clear reads it now)"
            if self.clear_source == "scene_cloud_cover_estimate"
            else "pixel-level, from the classification band"
        )
        return [
            f"clear fractions: {how}",
            scope,
            outcome,
            f"estimated pixels to read: {self.estimated_bytes / 1e6:.1f} MB (uncompressed, in "
            "the cell windows of the paired cells)",
            f"STAC searches made: {self.stac_searches} for {n} cells (one per plan block, "
            "collection and time window, as the build searches)",
        ]


class _CountingCatalog:
    """Wraps a catalog and remembers how many scenes each search returned."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.counts: dict[tuple[tuple[str, ...], tuple[datetime, datetime]], int] = {}

    def search(
        self,
        collections: Sequence[str],
        bbox: BBox,
        window: tuple[datetime, datetime],
        *,
        max_cloud_cover: float | None = None,
    ) -> list[SceneRef]:
        found: list[SceneRef] = self.inner.search(
            collections, bbox, window, max_cloud_cover=max_cloud_cover
        )
        self.counts[(tuple(collections), window)] = len(found)
        return found


def scene_clear_estimate(scene: SceneRef, job: TileJob) -> float | None:
    """1 - eo:cloud_cover / 100 (None when the item has no cloud cover)."""
    if scene.cloud_cover is None:
        return None
    return max(0.0, min(1.0, 1.0 - float(scene.cloud_cover) / 100.0))


def estimate_mask(fraction: float | None) -> Any:
    """A clear mask whose clear fraction is ``fraction`` to 1e-4 (None: unknown, no mask): how
    a scene-wide estimate enters the sequence stage's choice, which rates masks."""
    if fraction is None:
        return None
    import numpy as np

    return np.arange(10_000) < round(fraction * 10_000)


def estimate_bytes(pair: ScenePair, cfg: BuildConfig, n_rated: int) -> int:
    """Bytes of pixels the build reads for a pair: bands of both scenes, the classification
    band of every rated scene, the label maps (two land-cover maps, or one change mask).

    Counts uncompressed pixels in the cell window at each band's native resolution (from the
    collection profile, else the grid resolution;
    :func:`~geodelta.pipelines.stages.estimate.asset_reads`). HTTP range reads fetch
    whole COG tiles, so the transfer is larger for cells smaller than a tile, smaller for
    well-compressed data (``geodelta plan --estimate`` rounds the windows up to the tiles of a
    sampled item).
    """
    from geodelta.pipelines.stages.estimate import asset_reads

    job = pair.job
    h, w = job.shape
    area = (h * job.resolution) * (w * job.resolution)
    return round(sum(r.window_bytes(area) for r in asset_reads(cfg, n_rated, job.resolution)))


def sample_indices(planned: int, wanted: int | None) -> list[int]:
    """Indices of ``wanted`` cells evenly spaced over ``planned`` (all when None or enough)."""
    if wanted is None or wanted >= planned:
        return list(range(planned))
    return [i * planned // wanted for i in range(wanted)]


def _sampled_jobs(cfg: BuildConfig, wanted: int) -> tuple[int, list[TileJob]]:
    """(cells planned, the TileJobs of ``wanted`` of them evenly spaced in plan order), counted
    and streamed without building the other cells."""
    from geodelta.pipelines.stages.blocks import job_of
    from geodelta.pipelines.stages.plan import count_cells, iter_cells

    planned = count_cells(cfg).total
    keep = set(sample_indices(planned, wanted))
    chosen = [
        job_of(cfg, cell_id, region)
        for i, (cell_id, _, region) in enumerate(iter_cells(cfg))
        if i in keep
    ]
    return planned, chosen


def dry_run(
    cfg: BuildConfig,
    *,
    max_cells: int | None = None,
    read_clear: bool = False,
    catalog: Any = None,
) -> SearchReport:
    """Search and pair every planned cell (or ``max_cells`` of them) without reading imagery
    pixels.

    Args:
        cfg: the build config (profile defaults are applied here).
        max_cells: cells to search, evenly spaced in plan order (the report then says it
            sampled); None = every planned cell, refused
            (:class:`~geodelta.pipelines.stages.estimate.BudgetError`) above
            ``budget.max_cells``.
        read_clear: read the classification band for pixel-level clear fractions (small reads);
            otherwise rate scenes by their scene-wide cloud cover (no pixel reads at all).
        catalog: the catalog to search (default: the one the config opens).

    Returns:
        The report: per cell candidates, the chosen pair and label items, estimated bytes,
        in plan order; the STAC searches made (one per plan block, collection and window,
        through the build's :class:`~geodelta.pipelines.stages.block_search.BlockSearch`).
    """
    from geodelta.pipelines.stages.block_search import BlockSearch, series_span
    from geodelta.pipelines.stages.blocks import expand_block, iter_blocks
    from geodelta.pipelines.stages.pair import search_and_pair
    from geodelta.pipelines.stages.plan import parse_cell_id
    from geodelta.pipelines.stages.sequence import search_series
    from geodelta.sources.catalog import open_catalog
    from geodelta.sources.profiles import apply_defaults

    cfg = apply_defaults(cfg)
    limit = cfg.budget.max_cells
    if max_cells is None and limit is not None:  # every cell of a continent: refuse, say how
        from geodelta.pipelines.stages.estimate import BudgetError
        from geodelta.pipelines.stages.plan import count_cells

        planned = count_cells(cfg).total
        if planned > limit:
            raise BudgetError(
                f"{planned:,} cells planned > budget.max_cells {limit:,}: a dry run of every "
                "cell would search them all; pass --max-cells N (api: max_cells=N) to sample N "
                "of them, or raise budget.max_cells"
            )
    if max_cells is None:  # block by block, as the engines expand them; reported in plan order
        chosen = [j for b in iter_blocks(cfg) for j in expand_block(cfg, b)]
        planned = len(chosen)
    else:  # the sampled cells only, streamed from the plan (a continent is never held)
        planned, chosen = _sampled_jobs(cfg, max_cells)
    inner = catalog if catalog is not None else open_catalog(cfg.catalog, resolve=cfg.resolve)
    blocks = BlockSearch(inner, cfg.runner.block_cells)  # one search per block, as the build
    series = cfg.time.series is not None
    if read_clear:
        from geodelta.pipelines.stages.worker import Worker

        worker = Worker(cfg, code_version="dry-run")
        worker.__dict__["catalog"] = inner  # the cached property, pre-filled
        clear_fn: Any = worker._clear_mask if series else worker._clear_fraction
        source: ClearSource = "pixel_level_classification_band"
    else:

        def clear_fn(scene: SceneRef, j: TileJob) -> Any:
            f = scene_clear_estimate(scene, j)
            return estimate_mask(f) if series else f

        source = "scene_cloud_cover_estimate"
    report = SearchReport(cells_planned=planned, clear_source=source, series=series)
    coll = (cfg.imagery.collection,)
    span = series_span(cfg)
    rated: set[str] = set()

    def clear(scene: SceneRef, j: TileJob) -> Any:
        rated.add(scene.item_id)
        return clear_fn(scene, j)

    bc = cfg.runner.block_cells

    def block_of(j: TileJob) -> tuple[Any, ...]:
        c = parse_cell_id(j.cell_id)
        return (c.zone, c.north, c.size_m, c.col // bc, c.row // bc, j.cell_id)

    done: dict[str, CellSearch] = {}
    for job in sorted(chosen, key=block_of):  # a block's cells one after the other
        counting = _CountingCatalog(blocks.for_cell(job))
        rated.clear()
        if series:  # one search over the span; n0 = its scenes, n1 = the dates chosen
            outcome = search_series(job, cfg, counting, clear)
            n0 = counting.counts.get((coll, span), 0) if span else 0
            n1 = 0 if isinstance(outcome, QuarantineRecord) else len(outcome.series)
        else:
            outcome = search_and_pair(job, cfg, counting, clear)
            n0 = counting.counts.get((coll, job.t0_window), 0)
            n1 = counting.counts.get((coll, job.t1_window), 0)
        if isinstance(outcome, QuarantineRecord):
            cell = CellSearch(
                job.cell_id, job.region, n0, n1, None, outcome.reason, outcome.detail, 0
            )
        else:
            cell = CellSearch(
                job.cell_id,
                job.region,
                n0,
                n1,
                outcome,
                None,
                None,
                estimate_bytes(outcome, cfg, len(rated)),
            )
        done[job.cell_id] = cell
    report.cells = [done[c] for c in sorted(done)]  # in plan order (cell id)
    report.stac_searches = blocks.searches
    report.truncated_searches = int(getattr(inner, "truncated", 0))
    return report
