"""The load stage: both scenes of a pair read onto the cell grid.

Windowed reads of the configured bands (``imagery.bands``), reprojected onto the cell's own grid
(:func:`geodelta.sources.raster.read_bands`); a pair whose before or after scene has too little
valid data over the cell (``pairing.min_valid_fraction``) goes to quarantine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import BuildConfig, QuarantineRecord, ScenePair

if TYPE_CHECKING:
    from geodelta.sources.raster import RasterAccess

__all__ = ["load_pair"]


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
    return Sample(pair=pair, before=before, after=after)
