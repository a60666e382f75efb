"""Land-cover labels (``labels.kind: landcover``): maps of both dates -> a transition mask.

The pair stage picks, from the items of ``labels.collection`` covering the cell, the map whose
period holds each date (:func:`pick_landcover`); the two must be different maps. The label stage
reads both maps on the cell grid, maps the product legend onto the geodelta classes
(``labels.product``) and labels the sample with their transitions
(:func:`label_from_landcover`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from geodelta.pipelines.stages.label import (
    LabelError,
    check_grid,
    clean_mask,
    compute_facts,
    pixel_area,
    transition_mask,
)
from geodelta.pipelines.stages.labels.base import Rejection
from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import ScenePair, SceneRef

if TYPE_CHECKING:
    from geodelta.schemas.config import LabelConfig
    from geodelta.sources.raster import RasterAccess

__all__ = ["LandcoverLabels", "label_from_landcover", "pick_landcover"]


def pick_landcover(items: Sequence[SceneRef], when: datetime) -> SceneRef | None:
    """The land-cover item whose period holds ``when``; else the one nearest in time."""
    holding = [
        s
        for s in items
        if s.start_datetime is not None
        and s.end_datetime is not None
        and s.start_datetime <= when <= s.end_datetime
    ]
    pool = holding or list(items)
    if not pool:
        return None
    return min(pool, key=lambda s: (abs((s.datetime - when).total_seconds()), s.item_id))


def label_from_landcover(
    sample: Sample,
    lc_before: np.ndarray,
    lc_after: np.ndarray,
    *,
    min_region_px: int,
    source: str,
    items: tuple[str, ...],
) -> Sample:
    """Label a sample from land-cover maps of both dates.

    Args:
        sample: the sample being built.
        lc_before: (H, W) geodelta class indices at t0 on the cell grid (0 = unknown).
        lc_after: (H, W) geodelta class indices at t1 on the cell grid (0 = unknown).
        min_region_px: regions smaller than this are removed (config ``labels.min_region_px``).
        source: label source, ``'landcover:<collection>'``.
        items: STAC item ids of the two land-cover maps.

    Returns:
        A copy of ``sample`` with ``lc_before``, ``lc_after``, the cleaned transition ``mask``,
        ``facts``, ``label_source`` and ``label_items`` set.

    Raises:
        LabelError: the maps are not on the cell grid or hold values that are not classes.
    """
    check_grid(sample, lc_before, "lc_before")
    check_grid(sample, lc_after, "lc_after")
    try:  # codes first: the class-range check must see the values before the uint8 cast
        mask = clean_mask(transition_mask(lc_before, lc_after), min_region_px)
    except LabelError as exc:
        raise LabelError(str(exc), key=sample.key) from None
    before = np.asarray(lc_before).astype(np.uint8)
    after = np.asarray(lc_after).astype(np.uint8)
    valid = (before > 0) & (after > 0)
    facts = compute_facts(
        mask,
        valid,
        pixel_area_m2=pixel_area(sample),
        min_region_px=min_region_px,
        binary=False,
        lc_before=before,
        lc_after=after,
    )
    return dataclasses.replace(
        sample,
        lc_before=before,
        lc_after=after,
        mask=mask,
        facts=facts,
        label_source=source,
        label_items=items,
        valid=valid,
    )


class LandcoverLabels:
    """The :class:`~geodelta.pipelines.stages.labels.base.LabelSource` of land-cover maps."""

    kind = "landcover"
    maps_per_pair = 2

    def pick(
        self, pair: ScenePair, items: Sequence[SceneRef], labels: LabelConfig
    ) -> ScenePair | Rejection:
        """The maps of the before and the after date: two different items, or why not."""
        lc0 = pick_landcover(items, pair.before.datetime)
        lc1 = pick_landcover(items, pair.after.datetime)
        if lc0 is None or lc1 is None:
            return Rejection(
                "no_landcover",
                f"no {labels.collection} item covers the cell; check labels.collection",
            )
        if lc0.item_id == lc1.item_id:
            return Rejection(
                "same_landcover_item",
                f"both dates map to land-cover item {lc0.item_id}; a transition needs maps of "
                "two different periods (check time.t0/time.t1 against the land-cover years)",
            )
        return pair.model_copy(update={"label_before": lc0, "label_after": lc1})

    def label(
        self, sample: Sample, labels: LabelConfig, access: RasterAccess
    ) -> Sample | Rejection:
        """Read both maps (asset ``labels.asset``, legend ``labels.product``) and label."""
        from geodelta.sources.landcover import to_geodelta
        from geodelta.sources.raster import read_classes

        pair, job = sample.pair, sample.pair.job
        if pair.label_before is None or pair.label_after is None:
            raise LabelError(
                "the pair has no land-cover items; run the pair stage first", key=sample.key
            )
        maps = []
        for item in (pair.label_before, pair.label_after):
            if labels.asset not in item.assets:
                return Rejection(
                    "no_landcover_asset",
                    f"land-cover item {item.item_id} has no '{labels.asset}' asset "
                    f"(assets: {sorted(item.assets)}); check labels.asset",
                )
            raw = read_classes(item.assets[labels.asset], job, item_id=item.item_id, access=access)
            maps.append(to_geodelta(raw, labels.product))
        return label_from_landcover(
            sample,
            maps[0],
            maps[1],
            min_region_px=labels.min_region_px,
            source=f"landcover:{labels.collection}",
            items=(pair.label_before.item_id, pair.label_after.item_id),
        )
