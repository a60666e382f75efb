"""The search snapshot of a build: written first, built from, listed in the release.

A build searches the catalog once, on the driver, before any pixel is read
(:func:`snapshot_first`): every search the build will make
(:func:`~geodelta.pipelines.stages.block_search.snapshot_items`, one per plan block, collection
and window) goes into a stac-geoparquet file in the staging area, and the workers then search
that file (``catalog.kind: snapshot``), never the catalog. So every worker, and a build resumed
hours later, sees the same items even when the catalog changes meanwhile; a Planetary Computer
429 or an expired token stops the build before any pixel work; and the release's
``snapshot/items.parquet`` is exactly what the build was made from. A snapshot records the
catalog it froze (its ``origin``), so the config hash, hence every sample byte, is the one
the catalog itself gives (:meth:`~geodelta.schemas.BuildConfig.normalised`).

Two copies are written from the same items: the staging area's, asset hrefs absolute (the
workers read it wherever the staging area is), and the release's, local hrefs relative to the
catalog's folder (no build folder in any release byte: the same data gives the same bytes
anywhere; copy it next to ``catalog.json`` to build from it). Remote hrefs (``https://``,
``s3://``) are absolute in both, without any secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geodelta.schemas import BuildConfig

__all__ = [
    "RELEASE_SNAPSHOT",
    "STAGED_PORTABLE",
    "STAGED_SNAPSHOT",
    "catalog_folder",
    "make_snapshot",
    "snapshot_first",
]

#: The snapshot's path in a release.
RELEASE_SNAPSHOT = "snapshot/items.parquet"
#: The staging area's snapshot the workers search (hrefs absolute).
STAGED_SNAPSHOT = "snapshot.parquet"
#: The staging area's copy for the release (local hrefs relative to the catalog's folder).
STAGED_PORTABLE = "snapshot-release.parquet"


def catalog_folder(cfg: BuildConfig) -> str | None:
    """The local folder the catalog's relative hrefs belong to (that of ``catalog.json`` or of
    the snapshot file); None for a remote catalog."""
    if cfg.catalog.kind not in ("static", "snapshot"):
        return None
    url = cfg.resolve(cfg.catalog.url)
    if "://" in url and not url.startswith("file://"):
        return None
    return os.path.dirname(os.path.abspath(url.removeprefix("file://")))


def _items(cfg: BuildConfig) -> list[dict[str, Any]]:
    from geodelta.pipelines.stages.block_search import snapshot_items
    from geodelta.sources.catalog import open_catalog

    return snapshot_items(cfg, open_catalog(cfg.catalog, resolve=cfg.resolve))


def make_snapshot(cfg: BuildConfig, out: str | Path) -> tuple[int, str]:
    """Run the searches the build of ``cfg`` would run and write their items to ``out``.

    Local hrefs are written relative to the catalog's folder (see the module docstring).

    Returns:
        (items written, sha256 of the file).
    """
    from geodelta.sources.snapshot import write_snapshot

    items = _items(cfg)
    origin = cfg.recorded()["catalog"]
    sha = write_snapshot(items, out, origin=origin, relative_to=catalog_folder(cfg))
    return len(items), sha


def snapshot_first(
    cfg: BuildConfig, staging: Any, staging_root: str | Path, *, reuse: bool
) -> BuildConfig:
    """The config the workers build from: ``cfg`` searching the staging area's snapshot.

    Args:
        cfg: the build config.
        staging: the staging area (:class:`~geodelta.pipelines.release.staging.Staging`).
        staging_root: its root (a folder or a URL), where the workers read the snapshot.
        reuse: keep a snapshot the staging area already holds (``--resume`` and cell tasks:
            a resumed build keeps the items it started from); else search again.

    The config hash does not change (the snapshot records ``cfg``'s catalog as its origin).
    Cell tasks of one build (:func:`geodelta.pipelines.api.build_cells`) share the snapshot the
    first of them wrote; tasks that start at the same moment may each write one (the same items,
    unless the catalog changed between their searches: the last written wins, for all).
    """
    from geodelta.sources.snapshot import snapshot_bytes

    held = reuse and staging.has_file(STAGED_SNAPSHOT) and staging.has_file(STAGED_PORTABLE)
    if not held:
        items = _items(cfg)
        origin = cfg.recorded()["catalog"]
        portable = snapshot_bytes(items, origin=origin, relative_to=catalog_folder(cfg))
        staging.put_file(STAGED_PORTABLE, portable)
        staging.put_file(STAGED_SNAPSHOT, snapshot_bytes(items, origin=origin))
    root = str(staging_root).rstrip("/")
    url = f"{root}/{STAGED_SNAPSHOT}"
    catalog = cfg.catalog.model_copy(update={"kind": "snapshot", "url": url})
    return cfg.model_copy(update={"catalog": catalog})


def release_snapshot(staging: Any) -> bytes | None:
    """The bytes of the release's ``snapshot/items.parquet`` (None: the build made none)."""
    data: bytes | None = staging.get_file(STAGED_PORTABLE)
    return data
