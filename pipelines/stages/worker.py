"""The per-cell stages, as plain functions over records, and the worker that chains them.

``pair -> load -> coregister -> label -> annotate -> finalize`` (finalize = build the sample's
metadata, validate it, encode its members). Each stage takes the previous stage's record and
returns the next one or a :class:`~geodelta.schemas.QuarantineRecord`. No engine is imported
here: :mod:`geodelta.pipelines.engines.runners` chains the same functions in a plain loop or as Beam
transforms.

Resources a worker needs (the opened catalog, the annotator) are made once per worker, like a
Beam ``ModelHandler``'s model, by :class:`Worker`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import BuildConfig, QuarantineRecord, ScenePair, TileJob
from geodelta.schemas.records import QuarantineStage


@dataclass(frozen=True)
class StagedSample:
    """A finished sample: its encoded members, ready for the staging area."""

    cell_id: str
    key: str
    members: dict[str, bytes]


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

    # -- stages ------------------------------------------------------------------------------
    def pair(self, job: TileJob) -> ScenePair | QuarantineRecord:
        """search + pair."""
        from geodelta.pipelines.stages.pair import search_and_pair

        return search_and_pair(job, self.cfg, self.catalog, self._clear_fraction)

    def _clear_fraction(self, scene: Any, job: TileJob) -> float | None:
        asset = self.cfg.imagery.classification_asset
        if asset is None or asset not in scene.assets:
            return None
        from geodelta.sources.raster import clear_fraction

        im = self.cfg.imagery
        return clear_fraction(
            scene, asset, job, im.clear_classes, cloud_bits=im.cloud_bits, access=self.access
        )

    def load(self, pair: ScenePair) -> Sample | QuarantineRecord:
        """Read both scenes onto the cell grid; reject scenes with too little valid data."""
        from geodelta.sources.raster import read_bands

        bands = self.cfg.imagery.bands
        before = read_bands(pair.before, bands, pair.job, access=self.access)
        after = read_bands(pair.after, bands, pair.job, access=self.access)
        need = self.cfg.pairing.min_valid_fraction
        for name, arr in (("before", before), ("after", after)):
            valid = float(np.isfinite(arr).all(axis=0).mean())
            if valid < need:
                return QuarantineRecord(
                    key=pair.key,
                    cell_id=pair.job.cell_id,
                    stage="load",
                    reason="low_valid_fraction",
                    detail=f"{name} scene valid fraction {valid:.3f} < pairing.min_valid_fraction={need}",
                )
        return Sample(pair=pair, before=before, after=after)

    def coregister(self, sample: Sample) -> Sample | QuarantineRecord:
        """Align the after scene onto the before scene."""
        from geodelta.pipelines.stages.coregister import coregister

        cfg = self.cfg.coregistration
        bands = self.cfg.imagery.bands
        band = cfg.band or bands[-1]
        return coregister(sample, cfg, band_index=bands.index(band))

    @cached_property
    def baseline(self) -> Any:
        """The baseline change model (once per worker; weights load on first use), or None."""
        b = self.cfg.baseline
        if b.weights is None:
            return None
        from geodelta.annotators.models.baseline import BaselineChangeAnnotator

        return BaselineChangeAnnotator(self.cfg.resolve(b.weights), batch_size=b.batch_size)

    def label(self, sample: Sample) -> Sample | QuarantineRecord:
        """Change mask + facts from the labels; fused with the baseline model when configured."""
        labelled = self._label_from_source(sample)
        if self.baseline is None or isinstance(labelled, QuarantineRecord):
            return labelled
        from geodelta.pipelines.stages.fuse import fuse_sample

        b = self.cfg.baseline
        self.baseline.check_bands(self.cfg.imagery.bands)
        (prob,) = self.baseline.run_inference([(labelled.before, labelled.after)])
        return fuse_sample(
            labelled,
            prob,
            model_id=self.baseline.model_id,
            mode=b.fusion,
            threshold=b.threshold,
            min_region_px=self.cfg.labels.min_region_px,
        )

    def _label_from_source(self, sample: Sample) -> Sample | QuarantineRecord:
        """Change mask + facts from land-cover maps or a change-mask asset."""
        from geodelta.pipelines.stages import label as lab
        from geodelta.sources.landcover import to_geodelta
        from geodelta.sources.raster import read_classes

        lc = self.cfg.labels
        pair, job = sample.pair, sample.pair.job
        if lc.kind == "change_mask":
            assert pair.label_after is not None  # set by the pair stage
            values = read_classes(
                pair.label_after.assets[lc.asset],
                job,
                item_id=pair.label_after.item_id,
                access=self.access,
            )
            return lab.label_from_change_mask(
                sample,
                values,
                change_values=lc.change_values,
                nodata_values=lc.nodata_values,
                min_region_px=lc.min_region_px,
                source=f"change_mask:{lc.asset}",
                items=(pair.label_after.item_id,),
            )
        assert pair.label_before is not None and pair.label_after is not None
        maps = []
        for item in (pair.label_before, pair.label_after):
            if lc.asset not in item.assets:
                return QuarantineRecord(
                    key=sample.key,
                    cell_id=job.cell_id,
                    stage="label",
                    reason="no_landcover_asset",
                    detail=f"land-cover item {item.item_id} has no '{lc.asset}' asset "
                    f"(assets: {sorted(item.assets)}); check labels.asset",
                )
            raw = read_classes(item.assets[lc.asset], job, item_id=item.item_id, access=self.access)
            maps.append(to_geodelta(raw, lc.product))
        return lab.label_from_landcover(
            sample,
            maps[0],
            maps[1],
            min_region_px=lc.min_region_px,
            source=f"landcover:{lc.collection}",
            items=(pair.label_before.item_id, pair.label_after.item_id),
        )

    def annotate(self, sample: Sample) -> Sample | QuarantineRecord:
        """Captions and QA from the facts (an LLM sample that fails its checks is quarantined)."""
        assert sample.facts is not None  # set by the label stage
        if self.cfg.annotation.annotator == "template":
            return dataclasses.replace(
                sample, annotation=self.annotator.annotate(sample.key, sample.facts)
            )
        from geodelta.annotators.llm.annotator import AnnotationFailed

        images = None
        if self.cfg.annotation.openai.vision:
            from geodelta.pipelines.stages.encode import rgb_indices, rgb_png

            rgb, vmax = rgb_indices(self.cfg), self.cfg.imagery.rgb_max_reflectance
            images = (rgb_png(sample.before, rgb, vmax), rgb_png(sample.after, rgb, vmax))
        try:
            annotation = self.annotator.annotate(sample.key, sample.facts, images=images)
        except AnnotationFailed as exc:
            return QuarantineRecord(
                key=sample.key,
                cell_id=sample.pair.job.cell_id,
                stage="annotate",
                reason=exc.reason,
                detail=exc.detail,
            )
        return dataclasses.replace(sample, annotation=annotation)

    def finalize(self, sample: Sample) -> StagedSample | QuarantineRecord:
        """Metadata, rule validation, encoded members."""
        from geodelta.pipelines.stages.encode import build_meta, encode_members
        from geodelta.pipelines.stages.validate import validate_stage

        meta = build_meta(
            sample, self.cfg, code_version=self.code_version, config_hash=self.config_hash
        )
        checked = validate_stage(sample, meta, self.cfg)
        if isinstance(checked, QuarantineRecord):
            return checked
        return StagedSample(
            cell_id=sample.pair.job.cell_id,
            key=sample.key,
            members=encode_members(sample, meta, self.cfg),
        )

    # -- chaining ----------------------------------------------------------------------------
    def steps(self) -> list[tuple[QuarantineStage, Callable[[Any], Any]]]:
        """The stages in order, each with the stage name its failures are recorded under."""
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
    """Run one stage; an exception becomes a quarantine record instead of a crash."""
    from geodelta.sources.raster import RasterReadError

    try:
        return fn(record)
    except RasterReadError as exc:
        reason, detail = "read_error", str(exc)
    except Exception as exc:  # dead-letter: the run goes on, the record says what broke
        reason, detail = f"error:{type(exc).__name__}", str(exc) or repr(exc)
    from geodelta.sources.signing import redact_secrets

    detail = redact_secrets(detail)  # an error message must not carry a signed URL
    key, cell_id = _key_of(record)
    return QuarantineRecord(key=key, cell_id=cell_id, stage=stage, reason=reason, detail=detail)
