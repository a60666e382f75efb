"""The worker that chains the per-cell stages.

``pair -> load -> coregister -> label -> annotate -> finalize``, each a plain function over
records in its own module (:mod:`.pair`, :mod:`.load`, :mod:`.coregister`, :mod:`.labels` and
:mod:`.fuse`, :mod:`.annotate`, :mod:`.finalize`). Each stage takes the previous stage's
record and returns the next one or a :class:`~geodelta.schemas.QuarantineRecord`. No engine is
imported here: :mod:`geodelta.pipelines.engines` chains the same stages in a plain loop, as
Beam transforms or as Dask tasks.

Resources a worker needs (the opened catalog, the annotator) are made once per worker, like a
Beam ``ModelHandler``'s model, by :class:`Worker`. The pair stage searches through a per-block
cache (:mod:`.block_search`): the cells of a plan block, expanded on the worker, share one STAC
search per collection and time window.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from geodelta.pipelines.stages.finalize import StagedSample
from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import BuildConfig, QuarantineRecord, ScenePair, TileJob
from geodelta.schemas.records import QuarantineStage

__all__ = ["Outcome", "StagedSample", "Worker", "guarded"]

#: What one cell ends as: a staged sample or a quarantine record.
Outcome = StagedSample | QuarantineRecord


def _key_of(record: Any) -> tuple[str, str]:
    if isinstance(record, TileJob):
        return record.cell_id, record.cell_id
    if isinstance(record, ScenePair):
        return record.key, record.job.cell_id
    if isinstance(record, Sample):
        return record.key, record.pair.job.cell_id
    return "unknown", "unknown"


class Worker:
    """Runs the stages for one config; holds per-worker resources, made lazily once."""

    def __init__(self, cfg: BuildConfig, *, code_version: str) -> None:
        self.cfg = cfg
        self.code_version = code_version
        self.config_hash = cfg.config_hash()
        self.shaping_hash = cfg.shaping_hash()

    # -- resources ---------------------------------------------------------------------------
    @cached_property
    def catalog(self) -> Any:
        """The opened catalog (once per worker process)."""
        from geodelta.sources.catalog import open_catalog

        return open_catalog(self.cfg.catalog, resolve=self.cfg.resolve)

    @cached_property
    def access(self) -> Any:
        """GDAL options (config ``gdal``) and the href signer (``catalog.signing``) for reads."""
        from geodelta.sources.raster import RasterAccess, gdal_env_options
        from geodelta.sources.signing import signer_for

        return RasterAccess(gdal_env_options(self.cfg.gdal), signer_for(self.cfg.catalog))

    @cached_property
    def annotator(self) -> Any:
        """The annotator (once per worker process): ``annotation.annotator`` picks it."""
        from geodelta.annotators.template import TemplateAnnotator

        a = self.cfg.annotation
        if a.annotator == "openai":
            from geodelta.annotators.llm.annotator import LLMAnnotator

            return LLMAnnotator.from_config(self.cfg, scope=self.config_hash)
        return TemplateAnnotator(
            captions_per_sample=a.captions_per_sample,
            no_change_epsilon=a.no_change_epsilon,
            seed=self.cfg.splits.seed,
        )

    @cached_property
    def baseline(self) -> Any:
        """The baseline change model (once per worker; weights load on first use), or None."""
        b = self.cfg.baseline
        if b.weights is None:
            return None
        from geodelta.annotators.models.baseline import BaselineChangeAnnotator

        # one thread: a worker is one core, and the sums of a product split over threads
        # depend on their count (geodelta._numerics)
        return BaselineChangeAnnotator(
            self.cfg.resolve(b.weights), batch_size=b.batch_size, threads=1
        )

    # -- stages ------------------------------------------------------------------------------
    def pair(self, job: TileJob) -> ScenePair | QuarantineRecord:
        """The search + pair stage (:func:`~geodelta.pipelines.stages.pair.search_and_pair`)."""
        from geodelta.pipelines.stages.pair import search_and_pair

        catalog = self.catalog if self.block_search is None else self.block_search.for_cell(job)
        return search_and_pair(job, self.cfg, catalog, self._clear_fraction)

    @cached_property
    def block_search(self) -> Any:
        """One STAC search per plan block, reused by its cells
        (:class:`~geodelta.pipelines.stages.block_search.BlockSearch`); None when
        ``runner.block_cells`` is 1 (a search per cell)."""
        if self.cfg.runner.block_cells == 1:
            return None
        from geodelta.pipelines.stages.block_search import BlockSearch

        return BlockSearch(self.catalog, self.cfg.runner.block_cells)

    def _clear_fraction(self, scene: Any, job: TileJob) -> float | None:
        """Pixel-level clear fraction of a scene over the cell; None without a classification band."""
        mask = self._clear_mask(scene, job)
        return None if mask is None else float(mask.mean())

    def load(self, pair: ScenePair) -> Sample | QuarantineRecord:
        """The load stage (:func:`~geodelta.pipelines.stages.load.load_pair`)."""
        from geodelta.pipelines.stages.load import load_pair

        return load_pair(pair, self.cfg, self.access)

    def coregister(self, sample: Sample) -> Sample | QuarantineRecord:
        """The coregister stage (:func:`~geodelta.pipelines.stages.coregister.coregister`) on
        ``coregistration.band`` (default: the last imagery band)."""
        from geodelta.pipelines.stages.coregister import coregister

        cfg = self.cfg.coregistration
        bands = self.cfg.imagery.bands
        band = cfg.band or bands[-1]
        return coregister(sample, cfg, band_index=bands.index(band))

    def label(self, sample: Sample) -> Sample | QuarantineRecord:
        """The label stage: the label source of ``labels.kind``, fused with the baseline model
        when one is configured (:mod:`geodelta.pipelines.stages.labels`, :mod:`.fuse`)."""
        from geodelta.pipelines.stages.labels.registry import label_sample

        labelled = label_sample(sample, self.cfg.labels, self.access)
        if self.baseline is None or isinstance(labelled, QuarantineRecord):
            return labelled
        from geodelta.pipelines.stages.fuse import fuse_with_model

        return fuse_with_model(labelled, self.baseline, self.cfg)

    def annotate(self, sample: Sample) -> Sample | QuarantineRecord:
        """The annotate stage (:func:`~geodelta.pipelines.stages.annotate.annotate_sample`)."""
        from geodelta.pipelines.stages.annotate import annotate_sample

        return annotate_sample(sample, self.annotator, self.cfg)

    def finalize(self, sample: Sample) -> StagedSample | QuarantineRecord:
        """The finalize stage: metadata, rule validation, encoded members
        (:func:`~geodelta.pipelines.stages.finalize.finalize_sample`)."""
        from geodelta.pipelines.stages.finalize import finalize_sample

        return finalize_sample(
            sample, self.cfg, code_version=self.code_version, shaping_hash=self.shaping_hash
        )

    # -- sequences (time.series) -------------------------------------------------------------
    def _clear_mask(self, scene: Any, job: TileJob) -> Any:
        """Pixel-level clear mask of a scene over the cell; None without a classification band."""
        asset = self.cfg.imagery.classification_asset
        if asset is None or asset not in scene.assets:
            return None
        from geodelta.sources.raster import read_clear_mask

        im = self.cfg.imagery
        return read_clear_mask(
            scene, asset, job, im.clear_classes, cloud_bits=im.cloud_bits, access=self.access
        )

    def series_pair(self, job: TileJob) -> ScenePair | QuarantineRecord:
        """The pair stage of a sequence (:func:`~.sequence.search_series`)."""
        from geodelta.pipelines.stages.sequence import search_series

        catalog = self.catalog if self.block_search is None else self.block_search.for_cell(job)
        return search_series(job, self.cfg, catalog, self._clear_mask)

    def series_load(self, pair: ScenePair) -> Sample | QuarantineRecord:
        """The load stage of a sequence (:func:`~.sequence.load_series`)."""
        from geodelta.pipelines.stages.sequence import load_series

        return load_series(pair, self.cfg, self.access)

    def series_coregister(self, sample: Sample) -> Sample | QuarantineRecord:
        """The coregister stage of a sequence (:func:`~.sequence.coregister_series`)."""
        from geodelta.pipelines.stages.sequence import coregister_series

        bands = self.cfg.imagery.bands
        band = self.cfg.coregistration.band or bands[-1]
        return coregister_series(sample, self.cfg.coregistration, band_index=bands.index(band))

    def series_label(self, sample: Sample) -> Sample | QuarantineRecord:
        """The label stage of a sequence (:func:`~.sequence.label_series_sample`), its pair
        mask fused with the baseline model as a pair's is."""
        from geodelta.pipelines.stages.sequence import label_series_sample

        labelled = label_series_sample(sample, self.cfg, self.access)
        if self.baseline is None or isinstance(labelled, QuarantineRecord):
            return labelled
        from geodelta.pipelines.stages.fuse import fuse_with_model

        return fuse_with_model(labelled, self.baseline, self.cfg)

    def series_annotate(self, sample: Sample) -> Sample | QuarantineRecord:
        """The annotate stage of a sequence (:func:`~.sequence.annotate_series_sample`)."""
        from geodelta.pipelines.stages.sequence import annotate_series_sample

        return annotate_series_sample(sample, self.annotator, self.cfg)

    # -- chaining ----------------------------------------------------------------------------
    def steps(self) -> list[tuple[QuarantineStage, Callable[[Any], Any]]]:
        """The stages in order, each with the stage name its failures are recorded under."""
        if self.cfg.time.series is not None:
            return [
                ("pair", self.series_pair),
                ("load", self.series_load),
                ("coregister", self.series_coregister),
                ("label", self.series_label),
                ("annotate", self.series_annotate),
                ("validate", self.finalize),
            ]
        return [
            ("pair", self.pair),
            ("load", self.load),
            ("coregister", self.coregister),
            ("label", self.label),
            ("annotate", self.annotate),
            ("validate", self.finalize),
        ]

    def process_cell(self, job: TileJob) -> Outcome:
        """Every stage for one cell, in one call (the in-process runner)."""
        record: Any = job
        for stage, fn in self.steps():
            record = guarded(stage, fn, record)
            if isinstance(record, QuarantineRecord):
                return record
        assert isinstance(record, StagedSample)
        return record


def guarded(stage: QuarantineStage, fn: Callable[[Any], Any], record: Any) -> Any:
    """Run one stage (BLAS on one thread: :mod:`.threads`); an exception becomes a quarantine
    record instead of a crash."""
    from geodelta.pipelines.stages.threads import one_blas_thread
    from geodelta.sources.raster import RasterReadError

    try:
        with one_blas_thread():  # small matrix products: more BLAS threads only spin
            return fn(record)
    except RasterReadError as exc:
        reason, detail = "read_error", str(exc)
    except Exception as exc:  # dead-letter: the run goes on, the record says what broke
        reason, detail = f"error:{type(exc).__name__}", str(exc) or repr(exc)
    from geodelta.sources.signing import redact_secrets

    detail = redact_secrets(detail)  # an error message must not carry a signed URL
    key, cell_id = _key_of(record)
    return QuarantineRecord(key=key, cell_id=cell_id, stage=stage, reason=reason, detail=detail)
