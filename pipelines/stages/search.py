"""``geodelta search CONFIG --dry-run``: what a build would pick, without reading imagery pixels.

For each planned cell (up to a limit): the candidate scenes of both windows, the pair the pair
stage would choose, its land-cover items, and an estimate of the bytes the build would read.

Clear fractions: the build decides on the *pixel-level* clear fraction over the cell, which
needs the classification band. By default the dry run reads no pixels at all and rates each
scene by its scene-wide ``eo:cloud_cover`` instead (``clear ~ 1 - cloud_cover / 100``,
reported as an estimate: a scene cloudy elsewhere may be clear over the cell, and the other way
round). ``read_clear=True`` reads only the small classification band (e.g. Sentinel-2 SCL at
20 m) of the candidates and reports the real pixel-level fractions.
"""

from __future__ import annotations

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

    @property
    def estimated_bytes(self) -> int:
        """Sum over the searched cells."""
        return sum(c.estimated_bytes for c in self.cells)


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


def estimate_bytes(pair: ScenePair, cfg: BuildConfig, n_rated: int) -> int:
    """Bytes of pixels the build reads for a pair: bands of both scenes, the classification
    band of every rated scene, the label maps (two land-cover maps, or one change mask).

    Counts uncompressed pixels in the cell window at each band's native resolution (from the
    collection profile, else the grid resolution). HTTP range reads fetch whole COG tiles, so the
    transfer is larger for cells smaller than a tile, smaller for well-compressed data.
    """
    from geodelta.pipelines.stages.labels.registry import label_source
    from geodelta.sources.profiles import band_resolution, get_profile

    job = pair.job
    h, w = job.shape
    area = (h * job.resolution) * (w * job.resolution)
    default_res = job.resolution
    ip = get_profile(cfg.imagery.collection)
    band_bytes = ip.dtype_bytes if ip is not None else 2
    coll = cfg.imagery.collection

    def px(res: float) -> int:
        return max(1, round(area / (res * res)))

    total = 0
    for band in cfg.imagery.bands:
        total += 2 * px(band_resolution(coll, band, default_res)) * band_bytes
    cls = cfg.imagery.classification_asset
    if cls is not None:
        total += n_rated * px(band_resolution(coll, cls, default_res)) * 2
    labels = cfg.labels
    maps = label_source(labels.kind).maps_per_pair
    searched = labels.searched_collection
    if searched:
        total += maps * px(band_resolution(searched, labels.asset, default_res))
    else:  # the label rides on the imagery item: counted at the grid resolution
        total += maps * px(default_res)
    return total


def dry_run(
    cfg: BuildConfig,
    *,
    max_cells: int | None = 20,
    read_clear: bool = False,
    catalog: Any = None,
) -> SearchReport:
    """Search and pair the first ``max_cells`` planned cells without reading imagery pixels.

    Args:
        cfg: the build config (profile defaults are applied here).
        max_cells: cells to search (None = all planned cells).
        read_clear: read the classification band for pixel-level clear fractions (small reads);
            otherwise rate scenes by their scene-wide cloud cover (no pixel reads at all).
        catalog: the catalog to search (default: the one the config opens).

    Returns:
        The report: per cell candidates, the chosen pair and label items, estimated bytes.
    """
    from geodelta.pipelines.stages.pair import search_and_pair
    from geodelta.pipelines.stages.plan import plan_jobs
    from geodelta.sources.catalog import open_catalog
    from geodelta.sources.profiles import apply_defaults

    cfg = apply_defaults(cfg)
    jobs = plan_jobs(cfg)
    inner = catalog if catalog is not None else open_catalog(cfg.catalog, resolve=cfg.resolve)
    counting = _CountingCatalog(inner)
    if read_clear:
        from geodelta.pipelines.stages.worker import Worker

        worker = Worker(cfg, code_version="dry-run")
        worker.__dict__["catalog"] = counting  # the cached property, pre-filled
        clear_fn: Any = worker._clear_fraction
        source: ClearSource = "pixel_level_classification_band"
    else:
        clear_fn = scene_clear_estimate
        source = "scene_cloud_cover_estimate"
    report = SearchReport(cells_planned=len(jobs), clear_source=source)
    coll = (cfg.imagery.collection,)
    rated: set[str] = set()

    def clear(scene: SceneRef, j: TileJob) -> float | None:
        rated.add(scene.item_id)
        value: float | None = clear_fn(scene, j)
        return value

    for job in jobs[:max_cells] if max_cells is not None else jobs:
        counting.counts.clear()
        rated.clear()
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
        report.cells.append(cell)
    report.truncated_searches = int(getattr(inner, "truncated", 0))
    return report
