"""The load stage: both scenes of a pair read onto the cell grid.

Windowed reads of the configured bands (``imagery.bands``), reprojected onto the cell's own grid
(:func:`geodelta.sources.raster.read_bands`); a pair whose before or after scene has too little
valid data over the cell (``pairing.min_valid_fraction``) goes to quarantine. With
``coregistration.margin_px`` > 0, the registration band of both scenes is also read over the
cell plus that margin: the context the coregister stage checks the cell's shift on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import BuildConfig, QuarantineRecord, ScenePair, TileJob

if TYPE_CHECKING:
    from geodelta.sources.raster import RasterAccess

__all__ = ["context_job", "load_pair"]


def load_pair(pair: ScenePair, cfg: BuildConfig, access: RasterAccess) -> Sample | QuarantineRecord:
    """Read both scenes of a pair onto the cell grid.

    Args:
        pair: the chosen scenes and the cell.
        cfg: the build config (``imagery.bands``, ``pairing.min_valid_fraction``).
        access: GDAL options and href signer for the reads.

    Returns:
        The sample with ``before`` and ``after`` (C, H, W) float32 reflectance (NaN = no data),
        or a quarantine record (stage ``load``, reason ``low_valid_fraction``) when a scene has
        fewer valid pixels than ``pairing.min_valid_fraction``.
    """
    from geodelta.sources.raster import read_bands

    bands = cfg.imagery.bands
    before = read_bands(pair.before, bands, pair.job, access=access)
    after = read_bands(pair.after, bands, pair.job, access=access)
    need = cfg.pairing.min_valid_fraction
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
    margin = cfg.coregistration.margin_px
    if margin == 0:
        return Sample(pair=pair, before=before, after=after)
    band = [cfg.coregistration.band or bands[-1]]
    wide = context_job(pair.job, margin)
    context = (
        read_bands(pair.before, band, wide, access=access)[0],
        read_bands(pair.after, band, wide, access=access)[0],
    )
    return Sample(pair=pair, before=before, after=after, coreg_context=context)


def context_job(job: TileJob, margin: int) -> TileJob:
    """The cell grid grown by ``margin`` pixels on every side (same pixels, same CRS).

    The co-registration context (``coregistration.margin_px``) is read on it: the cell's own
    pixels sit at ``[margin:-margin, margin:-margin]``.
    """
    a, b, c, d, e, f = job.transform
    height, width = job.shape
    transform = (a, b, c - margin * (a + b), d, e, f - margin * (d + e))
    return job.model_copy(
        update={"transform": transform, "shape": (height + 2 * margin, width + 2 * margin)}
    )
