"""The STAC Collection of a release (``collection.json``): extent, licence, one asset per shard.

Deterministic: no self link, no links at all, hrefs relative to the release folder, each shard
asset with its size and multihash checksum (the STAC ``file`` extension).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pystac

from geodelta._io import json_bytes
from geodelta.schemas import BuildConfig, SampleMeta, ShardInfo

__all__ = ["FILE_EXTENSION", "stac_collection"]

FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"


def stac_collection(
    cfg: BuildConfig,
    metas: dict[str, SampleMeta],
    splits: dict[str, int],
    shards: Sequence[ShardInfo],
) -> bytes:
    """The ``collection.json`` of a release, as JSON bytes (sorted keys, indent 2).

    The extent is the union of the samples' lon/lat boxes and times; an empty release still
    describes what was asked for (the config's AOI and time windows).

    Args:
        cfg: the build config.
        metas: key -> metadata of every sample in the shards.
        splits: split -> sample count.
        shards: the shards written (one asset each).
    """
    if metas:
        boxes = [m.bbox_lonlat for m in metas.values()]
        bbox = [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
        start: datetime = min(m.t0 for m in metas.values())
        end: datetime = max(m.t1 for m in metas.values())
    else:  # an empty release still describes what was asked for
        bbox = list(cfg.aoi.bbox) if cfg.aoi.bbox is not None else [-180.0, -90.0, 180.0, 90.0]
        start, end = cfg.time.t0[0], cfg.time.t1[1]
    collection = pystac.Collection(
        id=f"{cfg.name}-{cfg.version}",
        title=f"{cfg.name} {cfg.version}",
        description=cfg.description.strip() or f"geodelta release {cfg.name} {cfg.version}",
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[start, end]])),
        license=cfg.licence,
        stac_extensions=[FILE_EXTENSION],
        extra_fields={"geodelta:attribution": cfg.attribution},
        summaries=pystac.Summaries(
            {
                "geodelta:splits": sorted(splits),
                "geodelta:bands": list(cfg.imagery.bands),
                "geodelta:imagery_collection": [cfg.imagery.collection],
            }
        ),
    )
    for shard in shards:
        name = Path(shard.path).name.removesuffix(".tar")
        collection.add_asset(
            name,
            pystac.Asset(
                href=shard.path,
                title=f"{shard.split} shard ({shard.samples} samples)",
                media_type="application/x-tar",
                roles=["data"],
                extra_fields={
                    "file:size": shard.bytes,
                    "file:checksum": "1220" + shard.sha256,
                    "geodelta:split": shard.split,
                    "geodelta:samples": shard.samples,
                },
            ),
        )
    data = collection.to_dict(include_self_link=False, transform_hrefs=False)
    data["links"] = []
    return json_bytes(data)
