"""Change-mask labels (``labels.kind: change_mask``): a given binary change mask (e.g. OSCD).

The mask is an asset (``labels.asset``) of the after item itself, so nothing is searched: the
pair stage checks that the chosen after item carries it. The label stage reads it on the cell
grid and labels the sample with its changed pixels (:func:`label_from_change_mask`); such a
sample has no land-cover classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from geodelta.pipelines.stages.label import (
    LabelError,
    binary_mask,
    check_grid,
    clean_mask,
    compute_facts,
    pixel_area,
)
from geodelta.pipelines.stages.labels.base import Rejection
from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import ScenePair, SceneRef

if TYPE_CHECKING:
    from geodelta.schemas.config import LabelConfig
    from geodelta.sources.raster import RasterAccess

__all__ = ["ChangeMaskLabels", "label_from_change_mask"]


def label_from_change_mask(
    sample: Sample,
    values: np.ndarray,
    *,
    change_values: Sequence[int],
    nodata_values: Sequence[int],
    min_region_px: int,
    source: str,
    items: tuple[str, ...],
) -> Sample:
    """Label a sample from a binary change-mask asset (e.g. OSCD's ``cm``).

    Args:
        sample: the sample being built.
        values: (H, W) raw values of the change mask on the cell grid.
        change_values: values meaning "changed" (config ``labels.change_values``).
        nodata_values: values meaning "no label" (config ``labels.nodata_values``).
        min_region_px: regions smaller than this are removed (config ``labels.min_region_px``).
        source: label source, ``'change_mask:<asset>'``.
        items: STAC item id(s) carrying the mask.

    Returns:
        A copy of ``sample`` with a binary ``mask`` (255 = change), binary ``facts``, and
        all-zero (unknown) ``lc_before`` / ``lc_after`` so every sample has the same members.
    """
    check_grid(sample, values, "change mask")
    try:
        raw, valid = binary_mask(values, change_values=change_values, nodata_values=nodata_values)
        mask = clean_mask(raw, min_region_px)
    except LabelError as exc:
        raise LabelError(str(exc), key=sample.key) from None
    facts = compute_facts(
        mask, valid, pixel_area_m2=pixel_area(sample), min_region_px=min_region_px, binary=True
    )
    unknown = np.zeros(mask.shape, dtype=np.uint8)
    return dataclasses.replace(
        sample,
        lc_before=unknown,
        lc_after=unknown.copy(),
        mask=mask,
        facts=facts,
        label_source=source,
        label_items=items,
        valid=valid,
    )


class ChangeMaskLabels:
    """The :class:`~geodelta.pipelines.stages.labels.base.LabelSource` of a change-mask asset."""

    kind = "change_mask"
    maps_per_pair = 1

    def pick(
        self, pair: ScenePair, items: Sequence[SceneRef], labels: LabelConfig
    ) -> ScenePair | Rejection:
        """The after item itself, when it carries the mask asset; else why not."""
        if labels.asset not in pair.after.assets:
            return Rejection(
                "no_change_mask",
                f"after item {pair.after.item_id} has no '{labels.asset}' asset "
                f"(assets: {sorted(pair.after.assets)}); check labels.asset",
            )
        return pair.model_copy(update={"label_after": pair.after})

    def label(
        self, sample: Sample, labels: LabelConfig, access: RasterAccess
    ) -> Sample | Rejection:
        """Read the mask (asset ``labels.asset`` of the after item) and label."""
        from geodelta.sources.raster import read_classes

        item = sample.pair.label_after
        if item is None:
            raise LabelError(
                "the pair has no change-mask item; run the pair stage first", key=sample.key
            )
        values = read_classes(
            item.assets[labels.asset], sample.pair.job, item_id=item.item_id, access=access
        )
        return label_from_change_mask(
            sample,
            values,
            change_values=labels.change_values,
            nodata_values=labels.nodata_values,
            min_region_px=labels.min_region_px,
            source=f"change_mask:{labels.asset}",
            items=(item.item_id,),
        )
