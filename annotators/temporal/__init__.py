"""Temporal captions and QA of sequence samples (issue 15), and their independent checker.

- :func:`annotate_series` (the template annotator's temporal part): captions that name dates
  and the temporal QA items that apply, from a sample's
  :class:`~geodelta.schemas.series.SeriesFacts`; deterministic per ``(key, seed)``;
- :func:`check_temporal_qa` / :func:`check_temporal_captions`: every temporal answer and
  caption re-derived from the raw land-cover stack (T, H, W), with the checker's own connected
  components, dominant classes and trends (:mod:`.derive`), never from the facts;
- :data:`TEMPORAL_REGISTRY`: each temporal type's answer format, when it applies, how it is
  asked, and the evidence of a question (the LLM annotator uses the same).

Dates are written ISO ``YYYY-MM-DD`` (the UTC day) in questions, answers and captions; a caption
is temporal exactly when it names such a date (:func:`is_temporal_caption`), which is how the
temporal captions of ``captions.json`` are told from the pair ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np

from geodelta.annotators.temporal.captions import is_temporal_caption, temporal_captions
from geodelta.annotators.temporal.check import check_temporal_captions, check_temporal_qa
from geodelta.annotators.temporal.derive import iso_day
from geodelta.annotators.temporal.qa import TEMPORAL_REGISTRY, TemporalSpec, series_types_for
from geodelta.schemas import QAItem
from geodelta.schemas.qa import TEMPORAL_QA_TYPES
from geodelta.schemas.series import SeriesFacts

__all__ = [
    "TEMPORAL_REGISTRY",
    "SeriesInput",
    "TemporalSpec",
    "annotate_series",
    "check_series_annotation",
    "check_temporal_captions",
    "check_temporal_qa",
    "is_temporal_caption",
    "iso_day",
    "series_types_for",
]


@dataclass(frozen=True)
class SeriesInput:
    """What an annotator needs of a sequence sample besides its pair facts.

    Attributes:
        facts: the sequence's facts (label stage): what the prompt states.
        lc: ``(T, H, W)`` uint8 land cover per date (0 = unknown): what every temporal answer
            and caption is checked against (:func:`check_temporal_qa`), with ``facts.dates``
            and ``facts.min_region_px``.
    """

    facts: SeriesFacts
    lc: np.ndarray


def _seed(seed: int, key: str) -> int:
    # its own stream ("series:"), so the pair annotation of the same key draws as before
    return int.from_bytes(hashlib.sha256(f"series:{seed}:{key}".encode()).digest()[:8], "big")


def annotate_series(
    facts: SeriesFacts, *, key: str, seed: int, captions_per_sample: int
) -> tuple[tuple[str, ...], tuple[QAItem, ...]]:
    """Temporal captions and QA for one sequence sample.

    Args:
        facts: the sample's sequence facts (label stage).
        key: the sample key (seeds the wording).
        seed: the annotator's seed (``annotation.seed`` as the pair template uses it).
        captions_per_sample: most temporal captions to write (fewer when the facts do not
            give that many distinct sentences; at least one: the span of the sequence).

    Returns:
        ``(captions, qa)``: the captions, each naming at least one date, then one item per
        temporal QA type that applies (:func:`series_types_for`), in registry order. Append
        them to the pair annotation's captions and QA.
    """
    rng = np.random.default_rng(_seed(seed, key))
    captions = temporal_captions(rng, facts, captions_per_sample)
    qa = [TEMPORAL_REGISTRY[t].ask(rng, facts) for t in series_types_for(facts)]
    return tuple(captions), tuple(qa)


def check_series_annotation(
    captions: Sequence[str],
    qa: Sequence[QAItem],
    lc: np.ndarray,
    dates: Sequence[datetime | date | str],
    *,
    min_region_px: int,
    template: bool = False,
) -> list[str]:
    """Check a sequence sample's temporal captions and QA against its land-cover stack.

    Args:
        captions: the temporal captions (:func:`is_temporal_caption`).
        qa: the temporal QA items (every item must be of a temporal type).
        lc: ``(T, H, W)`` uint8 land cover per date, 0 = unknown.
        dates: the T acquisition dates, in order.
        min_region_px: smallest region kept (``labels.min_region_px``).
        template: the template annotator wrote them (each caption must be one of its forms).

    Returns:
        Every complaint of :func:`check_temporal_captions` and :func:`check_temporal_qa`
        (``qa <i> (<type>): ...``); ``[]`` when all hold.
    """
    out = check_temporal_captions(
        captions, lc, dates, min_region_px=min_region_px, template=template
    )
    for i, item in enumerate(qa):
        if item.type not in TEMPORAL_QA_TYPES:
            out.append(f"qa {i} ({item.type}): not a temporal QA type")
            continue
        out += [
            f"qa {i} ({item.type}): {m}"
            for m in check_temporal_qa(item, lc, dates, min_region_px=min_region_px)
        ]
    return out
