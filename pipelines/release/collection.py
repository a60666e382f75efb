"""The STAC Collection of a release (``collection.json``): extent, licence, links, every file.

Deterministic and relocatable: hrefs are relative to the release folder (``self`` and ``root``
are ``./collection.json``), no time of writing, no absolute path. Declares four extensions:

- ``file`` (v2.1.0): each asset written before the collection carries ``file:size`` and
  ``file:checksum`` (sha256 multihash); ``manifest.json`` and ``report/index.html``, written
  after it, are listed without (the manifest records their sha256);
- ``label`` (v1.0.0): ``label:type`` raster, the change-mask codes present as
  ``label:classes``, tasks and description in the summaries;
- ``ml-aoi`` (v0.1.0): ``ml-aoi:split`` of each shard asset and in the summaries (``val`` is
  ``validate`` in that extension's vocabulary);
- ``version`` (v1.0.0): the release's ``version``.

Assets: one per shard, the dataset card, both tables, the search snapshot, the GX summary,
``incremental.json``/``drift.json`` when written, the manifest and the report; the reference
model's files (``reference/``) once :func:`refresh_collection` ran after ``train-reference``.
``tests/test_collection_stac.py`` validates the result against the extensions' JSON schemas
stored under ``tests/data/stac-schemas/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pystac

from geodelta._io import json_bytes, write_atomic
from geodelta.pipelines.release.layout import (
    CARD,
    COLLECTION,
    DRIFT,
    GX_SUMMARY,
    INCREMENTAL,
    MANIFEST,
    QUARANTINE_TABLE,
    REFERENCE_DIR,
    REPORT_DIR,
    REPORT_FILE,
    SAMPLES_TABLE,
    SNAPSHOT,
    read_manifest,
)
from geodelta.schemas import BuildConfig, FileInfo, SampleMeta, ShardInfo
from geodelta.schemas.classes import BINARY_CHANGE

__all__ = [
    "EXTENSIONS",
    "FILE_EXTENSION",
    "LABEL_EXTENSION",
    "ML_AOI_EXTENSION",
    "VERSION_EXTENSION",
    "refresh_collection",
    "stac_collection",
]

FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
LABEL_EXTENSION = "https://stac-extensions.github.io/label/v1.0.0/schema.json"
ML_AOI_EXTENSION = "https://stac-extensions.github.io/ml-aoi/v0.1.0/schema.json"
VERSION_EXTENSION = "https://stac-extensions.github.io/version/v1.0.0/schema.json"
EXTENSIONS = (FILE_EXTENSION, LABEL_EXTENSION, ML_AOI_EXTENSION, VERSION_EXTENSION)

#: geodelta split -> the ml-aoi extension's split (``train | test | validate``).
ML_AOI_SPLITS = {"train": "train", "val": "validate", "validate": "validate", "test": "test"}
_REPORT = f"{REPORT_DIR}/{REPORT_FILE}"
_PARQUET = "application/vnd.apache.parquet"
#: Fixed release files: path -> (asset key, title, media type, roles).
_FILES: dict[str, tuple[str, str, str, list[str]]] = {
    CARD: ("card", "Dataset card", "text/markdown", ["metadata"]),
    SAMPLES_TABLE: ("samples", "Samples (GeoParquet)", _PARQUET, ["metadata"]),
    QUARANTINE_TABLE: ("quarantine", "Quarantined records (GeoParquet)", _PARQUET, ["metadata"]),
    SNAPSHOT: ("snapshot", "STAC items searched (stac-geoparquet)", _PARQUET, ["metadata"]),
    GX_SUMMARY: ("validation", "Great Expectations summary", "application/json", ["metadata"]),
    INCREMENTAL: (
        "incremental",
        "Reuse from the previous release",
        "application/json",
        ["metadata"],
    ),
    DRIFT: ("drift", "Catalog drift since the previous release", "application/json", ["metadata"]),
}
_MEDIA = {
    ".json": "application/json",
    ".md": "text/markdown",
    ".pt": "application/octet-stream",
    ".html": "text/html",
    ".parquet": _PARQUET,
}
_SPDX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")


def _license_link(licence: str) -> dict[str, Any]:
    """The ``license`` link: the SPDX page of an SPDX id, else the card's licence section."""
    lic = licence.strip()
    if _SPDX.match(lic) and lic.lower() not in ("other", "proprietary", "various"):
        return {
            "rel": "license",
            "href": f"https://spdx.org/licenses/{lic}.html",
            "type": "text/html",
            "title": lic,
        }
    return {"rel": "license", "href": f"./{CARD}", "type": "text/markdown", "title": lic}


def _links(cfg: BuildConfig) -> list[dict[str, Any]]:
    here = f"./{COLLECTION}"
    return [
        {"rel": "root", "href": here, "type": "application/json", "title": cfg.name},
        {"rel": "self", "href": here, "type": "application/json"},
        _license_link(cfg.licence),
        {
            "rel": "describedby",
            "href": f"./{CARD}",
            "type": "text/markdown",
            "title": "Dataset card",
        },
    ]


def _file_asset(
    info: FileInfo | None, path: str, title: str, media: str, roles: list[str]
) -> pystac.Asset:
    fields: dict[str, Any] = {}
    if info is not None:
        fields = {"file:size": info.bytes, "file:checksum": "1220" + info.sha256}
    return pystac.Asset(href=path, title=title, media_type=media, roles=roles, extra_fields=fields)


def _file_assets(files: Iterable[FileInfo]) -> dict[str, pystac.Asset]:
    """Assets of the release files (besides shards): the fixed files present in ``files``,
    everything under ``reference/``, then the manifest and the report (written later)."""
    assets: dict[str, pystac.Asset] = {}
    for info in sorted(files, key=lambda f: f.path):
        if info.path in _FILES:
            key, title, media, roles = _FILES[info.path]
            assets[key] = _file_asset(info, info.path, title, media, roles)
        elif info.path.startswith(REFERENCE_DIR + "/"):
            key = info.path.replace("/", "-")
            media = _MEDIA.get(Path(info.path).suffix, "application/octet-stream")
            assets[key] = _file_asset(
                info, info.path, "Reference model: " + info.path, media, ["metadata"]
            )
    assets["manifest"] = _file_asset(
        None, MANIFEST, "Manifest (sha256 of every file)", "application/json", ["metadata"]
    )
    assets["report"] = _file_asset(None, _REPORT, "Quality report", "text/html", ["overview"])
    return assets


def _shard_asset(shard: ShardInfo) -> pystac.Asset:
    fields: dict[str, Any] = {
        "file:size": shard.bytes,
        "file:checksum": "1220" + shard.sha256,
        "geodelta:split": shard.split,
        "geodelta:samples": shard.samples,
    }
    if shard.split in ML_AOI_SPLITS:
        fields["ml-aoi:split"] = ML_AOI_SPLITS[shard.split]
    return pystac.Asset(
        href=shard.path,
        title=f"{shard.split} shard ({shard.samples} samples)",
        media_type="application/x-tar",
        roles=["data"],
        extra_fields=fields,
    )


def _label_summaries(metas: Iterable[SampleMeta]) -> dict[str, Any]:
    codes = sorted({t.code for m in metas for t in m.facts.transitions} | {BINARY_CHANGE})
    return {
        "label:type": ["raster"],
        "label:tasks": ["segmentation", "change detection", "captioning", "question answering"],
        "label:description": [
            "mask.png: 0 = no change, k = transition code (dataset card); change.png: 0/1"
        ],
        "label:classes": [{"name": None, "classes": [0, *codes]}],
    }


def stac_collection(
    cfg: BuildConfig,
    metas: dict[str, SampleMeta],
    splits: dict[str, int],
    shards: Sequence[ShardInfo],
    files: Sequence[FileInfo] = (),
) -> bytes:
    """The ``collection.json`` of a release, as JSON bytes (sorted keys, indent 2).

    The extent is the union of the samples' lon/lat boxes and times; an empty release still
    describes what was asked for (the config's AOI and time windows).

    Args:
        cfg: the build config.
        metas: key -> metadata of every sample in the shards.
        splits: split -> sample count.
        shards: the shards written (one asset each).
        files: the release files written so far (card, tables, snapshot, GX summary...): one
            asset each with size and checksum.
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
        stac_extensions=list(EXTENSIONS),
        extra_fields={"geodelta:attribution": cfg.attribution, "version": cfg.version},
        summaries=pystac.Summaries(
            {
                "geodelta:splits": sorted(splits),
                "geodelta:bands": list(cfg.imagery.bands),
                "geodelta:imagery_collection": [cfg.imagery.collection],
                "ml-aoi:split": sorted({ML_AOI_SPLITS[s] for s in splits if s in ML_AOI_SPLITS}),
                **_label_summaries(metas.values()),
            }
        ),
    )
    for shard in shards:
        collection.add_asset(Path(shard.path).name.removesuffix(".tar"), _shard_asset(shard))
    for key, asset in _file_assets(files).items():
        collection.add_asset(key, asset)
    data = collection.to_dict(include_self_link=False, transform_hrefs=False)
    data["links"] = _links(cfg)
    return json_bytes(data)


def refresh_collection(release_dir: str | Path) -> None:
    """Re-list the release files as assets of ``collection.json`` from ``manifest.json``.

    For files written after the release (the reference model of ``train-reference``): the
    shard assets, extent, links and summaries are kept; the other assets are rebuilt from the
    manifest's files (with their sizes and checksums), and the manifest's entry of
    ``collection.json`` is updated. A release without ``collection.json`` is left as it is.
    """
    from geodelta.pipelines.release.manifest import list_files

    root = Path(release_dir)
    path = root / COLLECTION
    if not path.is_file():
        return
    data = json.loads(path.read_bytes())
    shards = {k: v for k, v in data.get("assets", {}).items() if "geodelta:split" in v}
    files = {k: a.to_dict() for k, a in _file_assets(read_manifest(root).files).items()}
    data["assets"] = {**shards, **files}
    write_atomic(path, json_bytes(data))
    list_files(root, [COLLECTION])
