"""The annotate stage: captions and QA pairs from a labelled sample's facts.

The annotator (``annotation.annotator``: the offline template or an OpenAI-compatible LLM) is
made once per worker by :class:`geodelta.pipelines.stages.worker.Worker`; this stage only calls
it. An LLM annotation that fails its checks goes to quarantine (a dead letter), not a crash.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from geodelta.errors import StageError
from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import BuildConfig, QuarantineRecord

__all__ = ["annotate_sample"]


def annotate_sample(sample: Sample, annotator: Any, cfg: BuildConfig) -> Sample | QuarantineRecord:
    """Annotate one labelled sample.

    Args:
        sample: a sample after the label stage (``facts`` set).
        annotator: the worker's annotator (``TemplateAnnotator`` or ``LLMAnnotator``).
        cfg: the build config (``annotation``; ``imagery`` for the images a vision LLM sees).

    Returns:
        A copy of ``sample`` with ``annotation`` set, or a quarantine record (stage
        ``annotate``) for an LLM annotation that failed.

    Raises:
        StageError: the sample has no facts (the label stage did not run).
    """
    if sample.facts is None:
        raise StageError(f"{sample.key}: facts are not set; run the label stage first")
    if cfg.annotation.annotator == "template":
        return dataclasses.replace(sample, annotation=annotator.annotate(sample.key, sample.facts))
    from geodelta.annotators.errors import AnnotationFailed

    images = None
    if cfg.annotation.openai.vision:
        from geodelta.pipelines.stages.encode import rgb_indices, rgb_png

        rgb, vmax = rgb_indices(cfg), cfg.imagery.rgb_max_reflectance
        images = (rgb_png(sample.before, rgb, vmax), rgb_png(sample.after, rgb, vmax))
    series = sample.series
    try:
        if series is None:
            annotation = annotator.annotate(sample.key, sample.facts, images=images)
        else:  # a sequence: the LLM also writes the temporal part, checked against the stack
            from geodelta.annotators.temporal import SeriesInput

            assert series.facts is not None and series.lc is not None, "label the sequence first"
            annotation = annotator.annotate(
                sample.key,
                sample.facts,
                images=images,
                series=SeriesInput(facts=series.facts, lc=series.lc),
            )
    except AnnotationFailed as exc:
        return sample.quarantine("annotate", exc.reason, exc.detail)
    return dataclasses.replace(sample, annotation=annotation)
