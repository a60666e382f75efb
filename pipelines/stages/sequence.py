"""The per-cell stages of a sequence build (``time.series``; issue 15).

A sequence sample is a pair sample (its first and its last date) plus every date between, so
the sequence stages wrap the pair stages rather than fork them:

* **pair** (:func:`search_series`): one search of the imagery over the whole series span, the
  pixel-level clear mask of each candidate over the cell, the clearest acceptable date per
  window (:func:`~geodelta.pipelines.stages.series.select_series`; too few dates:
  ``pair:too_few_dates``), and the land-cover map of each date's year (a year without one:
  ``label:missing_label_year``);
* **load** (:func:`load_series`): every date on the cell grid, one (T, C, H, W) stack; a date
  with too little valid data quarantines the cell, naming the date;
* **coregister** (:func:`coregister_series`): every date registered onto date 0 by the pair
  co-registration (:func:`~geodelta.pipelines.stages.coregister.coregister`), its shift and
  residual recorded per date; one date that cannot be registered quarantines the cell;
* **label** (:func:`label_series_sample`): the pair label of dates 0 and T-1 (the pair label
  stage itself), then the per-step masks, ``first_change`` and the temporal facts
  (:mod:`geodelta.pipelines.stages.labels.series`);
* **annotate** (:func:`annotate_series_sample`): the pair annotation, plus the temporal
  captions and QA (:mod:`geodelta.annotators.temporal`), kept apart until encoding.

Pure functions over records, like every stage; the worker (:mod:`.worker`) picks them when the
config has ``time.series``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from geodelta.pipelines.stages.sample import Sample, SeriesArrays
from geodelta.schemas import BuildConfig, QuarantineRecord, ScenePair, SceneRef, TileJob
from geodelta.schemas.series import SeriesDateMeta

if TYPE_CHECKING:
    from collections.abc import Callable

    from geodelta.schemas.config import CoregConfig
    from geodelta.sources.raster import RasterAccess

__all__ = [
    "MISSING_LABEL_YEAR",
    "annotate_series_sample",
    "coregister_series",
    "label_series_sample",
    "load_series",
    "search_series",
]

#: Quarantine reason (stage ``label``) of a date whose year has no land-cover map.
MISSING_LABEL_YEAR = "missing_label_year"


def _quarantine(job: TileJob, stage: str, reason: str, detail: str, key: str = "") -> Any:
    return QuarantineRecord(
        key=key or job.cell_id, cell_id=job.cell_id, stage=stage, reason=reason, detail=detail
    )


def search_series(
    job: TileJob,
    cfg: BuildConfig,
    catalog: Any,
    clear_mask: Callable[[SceneRef, TileJob], np.ndarray | None],
) -> ScenePair | QuarantineRecord:
    """The pair stage of a sequence: the dates of a cell and the land cover of each.

    Args:
        job: the cell.
        cfg: the build config (``time.series`` set).
        catalog: the catalog to search (``search(collections, bbox, window, ...)``).
        clear_mask: the pixel-level clear mask of a scene over the cell, or None when the
            scene has no classification asset (the date then counts as fully clear and its
            clear fraction is recorded as unknown).

    Returns:
        A :class:`ScenePair` whose ``before``/``after`` are the first and the last date and
        whose ``series`` fields hold every date, or a quarantine record.
    """
    from geodelta.pipelines.stages.labels.base import Rejection
    from geodelta.pipelines.stages.labels.series import pick_series_landcover
    from geodelta.pipelines.stages.pair import covers
    from geodelta.pipelines.stages.series import SeriesCandidate, select_series
    from geodelta.schemas.series import series_windows

    spec = cfg.time.series
    assert spec is not None, "search_series needs time.series"
    windows = series_windows(spec)
    span = (windows[0].start, windows[-1].end)
    coll = [cfg.imagery.collection]
    found = catalog.search(coll, job.bbox_lonlat, span, max_cloud_cover=cfg.imagery.max_cloud_cover)
    scenes = {s.item_id: s for s in found if covers(s, job)}
    if not scenes:
        return _quarantine(
            job,
            "pair",
            "no_scenes",
            f"no {cfg.imagery.collection} scene covers the cell between "
            f"{span[0]:%Y-%m-%d} and {span[1]:%Y-%m-%d}; check imagery.collection and "
            "time.series",
        )
    masks = {item_id: clear_mask(scenes[item_id], job) for item_id in sorted(scenes)}
    shape = next((m.shape for m in masks.values() if m is not None), (1, 1))
    candidates = [  # a scene without a classification asset counts as clear (fraction unknown)
        SeriesCandidate(
            item_id, scenes[item_id].datetime, np.ones(shape, dtype=bool) if m is None else m
        )
        for item_id, m in masks.items()
    ]
    chosen = select_series(
        job.cell_id,
        windows,
        candidates,
        min_dates=spec.min_dates,
        min_clear_fraction=spec.min_clear_fraction,
    )
    if isinstance(chosen, QuarantineRecord):
        return chosen
    dates = [scenes[d.item_id] for d in chosen.dates]
    labels: tuple[SceneRef, ...] = ()
    collection = cfg.labels.searched_collection
    if collection is not None:  # over the span: the window cell_searches (snapshot) uses too
        items = [s for s in catalog.search([collection], job.bbox_lonlat, span) if covers(s, job)]
        picked = pick_series_landcover(items, [d.datetime for d in dates], cfg.labels)
        if isinstance(picked, Rejection):
            return _quarantine(job, "label", picked.reason, picked.detail)
        labels = tuple(picked)
    clear = tuple(d.clear_fraction if masks[d.item_id] is not None else None for d in chosen.dates)
    return ScenePair(
        job=job,
        before=dates[0],
        after=dates[-1],
        before_clear=clear[0],
        after_clear=clear[-1],
        label_before=labels[0] if labels else None,
        label_after=labels[-1] if labels else None,
        series=tuple(dates),
        series_clear=clear,
        series_windows=tuple(d.window for d in chosen.dates),
        series_labels=labels,
    )


def load_series(
    pair: ScenePair, cfg: BuildConfig, access: RasterAccess
) -> Sample | QuarantineRecord:
    """Read every date of a sequence onto the cell grid (the load stage of a sequence).

    Returns:
        The sample (``before``/``after`` = the first/last date of the stack, ``series`` set),
        or a quarantine record (stage ``load``, reason ``low_valid_fraction``) naming the date
        with fewer valid pixels than ``pairing.min_valid_fraction``.
    """
    from geodelta.pipelines.stages.load import context_job
    from geodelta.sources.raster import read_bands

    bands = cfg.imagery.bands
    need = cfg.pairing.min_valid_fraction
    job = pair.job
    height, width = job.shape
    stack = np.empty((len(pair.series), len(bands), height, width), dtype=np.float32)
    metas = []
    for i, scene in enumerate(pair.series):
        stack[i] = read_bands(scene, bands, job, access=access)
        valid = float(np.isfinite(stack[i]).all(axis=0).mean())
        if valid < need:
            return _quarantine(
                job,
                "load",
                "low_valid_fraction",
                f"date {i} ({scene.datetime:%Y-%m-%d}, {scene.item_id}) valid fraction "
                f"{valid:.3f} < pairing.min_valid_fraction={need}",
                key=pair.key,
            )
        metas.append(
            SeriesDateMeta(
                index=i,
                window=pair.series_windows[i],
                item_id=scene.item_id,
                datetime=scene.datetime,
                clear_fraction=pair.series_clear[i],
                valid_fraction=round(valid, 6),
            )
        )
    context = None
    margin = cfg.coregistration.margin_px
    if margin > 0:
        band = [cfg.coregistration.band or bands[-1]]
        wide = context_job(job, margin)
        context = tuple(read_bands(s, band, wide, access=access)[0] for s in pair.series)
    series = SeriesArrays(dates=tuple(metas), stack=stack, context=context)
    return Sample(pair=pair, before=stack[0], after=stack[-1], series=series)


def coregister_series(
    sample: Sample, cfg: CoregConfig, *, band_index: int
) -> Sample | QuarantineRecord:
    """Register every date of a sequence onto date 0 (the coregister stage of a sequence).

    Each date k >= 1 is registered onto date 0 as the pair stage registers an after scene onto
    its before scene, with the same checks; its shift and residual go to its date record. The
    stack is corrected in place of the loaded one (no second copy of the sequence).

    Args:
        sample: a sequence sample after the load stage.
        cfg: the ``coregistration`` section of the build config.
        band_index: index of the band (in the stack) to register on.

    Returns:
        The sample with the registered stack, ``after`` = its last date, ``coreg`` = the last
        date's result (the pair's), or the quarantine record of the first date that failed,
        its detail naming the date.
    """
    from geodelta.pipelines.stages.coregister import TieWindows, coregister

    series = sample.series
    assert series is not None, "coregister_series needs a sequence sample"
    stack = series.stack
    ref = stack[0]
    # date 0's tie-point windows, prepared once for every date checked against it
    prepared = None if series.context is None else TieWindows(series.context[0], cfg.tie_window_px)
    metas = [series.dates[0]]
    last = None
    for k in range(1, stack.shape[0]):
        ctx = None if series.context is None else (series.context[0], series.context[k])
        step = dataclasses.replace(sample, before=ref, after=stack[k], coreg_context=ctx)
        out = coregister(step, cfg, band_index=band_index, tie_reference=prepared)
        when = f"date {k} ({series.dates[k].datetime:%Y-%m-%d}, {series.dates[k].item_id})"
        if isinstance(out, QuarantineRecord):
            return out.model_copy(update={"detail": f"{when} onto date 0: {out.detail}"})
        assert out.coreg is not None
        stack[k] = out.after
        last = out.coreg
        metas.append(
            series.dates[k].model_copy(
                update={"shift_px": out.coreg.shift_px, "residual_px": out.coreg.residual_px}
            )
        )
    registered = dataclasses.replace(series, dates=tuple(metas), context=None)
    return dataclasses.replace(
        sample, after=stack[-1], coreg=last, coreg_context=None, series=registered
    )


def label_series_sample(
    sample: Sample, cfg: BuildConfig, access: RasterAccess
) -> Sample | QuarantineRecord:
    """Land cover of every date, the pair label of dates 0 and T-1, and the temporal labels.

    Returns:
        The sample with the pair's ``mask``/``facts`` (from the first and the last date's maps,
        by the pair label code) and ``series`` carrying ``lc``, ``step_masks``,
        ``first_change`` and ``facts``; or a quarantine record (stage ``label``).
    """
    from geodelta.pipelines.stages.labels.base import Rejection
    from geodelta.pipelines.stages.labels.landcover import label_from_landcover
    from geodelta.pipelines.stages.labels.series import label_series, read_series_landcover

    series = sample.series
    pair = sample.pair
    assert series is not None, "label_series_sample needs a sequence sample"
    labels = cfg.labels
    lc = read_series_landcover(pair.series_labels, pair.job, labels, access)
    if isinstance(lc, Rejection):
        return sample.quarantine("label", lc.reason, lc.detail)
    labelled = label_from_landcover(
        sample,
        lc[0],
        lc[-1],
        min_region_px=labels.min_region_px,
        source=f"landcover:{labels.collection}",
        items=tuple(s.item_id for s in pair.series_labels),
    )
    temporal = label_series(
        lc, [d.datetime for d in series.dates], min_region_px=labels.min_region_px
    )
    dates = tuple(
        d.model_copy(update={"label_item": item.item_id})
        for d, item in zip(series.dates, pair.series_labels, strict=True)
    )
    return dataclasses.replace(
        labelled,
        series=dataclasses.replace(
            series,
            dates=dates,
            lc=np.asarray(lc, dtype=np.uint8),
            step_masks=temporal.step_masks,
            first_change=temporal.first_change,
            facts=temporal.facts,
        ),
    )


def annotate_series_sample(
    sample: Sample, annotator: Any, cfg: BuildConfig
) -> Sample | QuarantineRecord:
    """The pair annotation and the temporal captions and QA of the sequence.

    With the template annotator the temporal part comes from
    :func:`geodelta.annotators.temporal.annotate_series`; an LLM annotator writes both in one
    reply (it gets the sequence's facts, and its temporal answers are checked against the
    land-cover stack). Either way the temporal part is kept in ``sample.series.annotation``:
    the pair's own is checked by the pair checker, the temporal one by the temporal checker;
    the encoder appends it to the pair's captions and QA.
    """
    from geodelta.annotators.temporal import annotate_series, is_temporal_caption
    from geodelta.pipelines.stages.annotate import annotate_sample
    from geodelta.schemas import Annotation
    from geodelta.schemas.qa import TEMPORAL_QA_TYPES

    out = annotate_sample(sample, annotator, cfg)
    if isinstance(out, QuarantineRecord):
        return out
    series = out.series
    assert series is not None and series.facts is not None, "label the sequence first"
    assert out.annotation is not None
    if cfg.annotation.annotator == "template":
        captions, qa = annotate_series(
            series.facts,
            key=out.key,
            seed=cfg.splits.seed,
            captions_per_sample=cfg.annotation.captions_per_sample,
        )
        pair = out.annotation
        temporal = Annotation(
            captions=tuple(captions),
            qa=tuple(qa),
            annotator="template-temporal",
            annotator_version=_TEMPORAL_VERSION,
        )
    else:  # the LLM's one reply: its temporal captions name dates, its temporal QA types
        both = out.annotation
        pair = both.model_copy(
            update={
                "captions": tuple(c for c in both.captions if not is_temporal_caption(c)),
                "qa": tuple(q for q in both.qa if q.type not in TEMPORAL_QA_TYPES),
            }
        )
        temporal = both.model_copy(
            update={
                "captions": tuple(c for c in both.captions if is_temporal_caption(c)),
                "qa": tuple(q for q in both.qa if q.type in TEMPORAL_QA_TYPES),
                "tokens_in": 0,
                "tokens_out": 0,
                "cost_usd": 0.0,
            }
        )
    return dataclasses.replace(
        out, annotation=pair, series=dataclasses.replace(series, annotation=temporal)
    )


#: Version of the temporal template annotation (recorded with it).
_TEMPORAL_VERSION = "1"
