"""Catalog search behind one interface: :func:`open_catalog` picks the catalog a config names.

Every catalog (a static STAC catalog searched in process,
:class:`~geodelta.sources.static.StaticCatalog`, or a STAC API searched through pystac-client,
:class:`~geodelta.sources.stac_api.StacApiCatalog`) answers one question
(:class:`~geodelta.sources.scenes.SceneCatalog`): which items of these collections intersect this
lon/lat box within this time window. Items come back as :class:`~geodelta.schemas.SceneRef`
records with asset hrefs stripped of secrets and the scale/offset/nodata of each asset taken
from the STAC raster extension.

This module sits above the catalogs (they import :mod:`geodelta.sources.scenes`, never this
module) and re-exports the names callers use: :class:`CatalogError`, :class:`SceneCatalog`,
:class:`StaticCatalog`, :func:`item_to_scene`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from geodelta.schemas.config import CatalogConfig
from geodelta.sources.scenes import CatalogError, SceneCatalog, item_to_scene
from geodelta.sources.static import StaticCatalog

__all__ = ["CatalogError", "SceneCatalog", "StaticCatalog", "item_to_scene", "open_catalog"]

_CACHE: dict[str, SceneCatalog] = {}
_LOCK = threading.Lock()


def open_catalog(cfg: CatalogConfig, *, resolve: Any = None) -> SceneCatalog:
    """Open (once per process) the catalog a config names.

    ``catalog.kind`` picks the implementation: ``static`` a local catalog.json
    (:class:`StaticCatalog`), ``snapshot`` a search snapshot
    (:class:`geodelta.sources.snapshot.SnapshotCatalog`, searched as a static catalog; a local
    file is read again when it changed), ``stac-api`` and ``planetary-computer`` a STAC API
    (:class:`geodelta.sources.stac_api.StacApiCatalog`; signing for reads is separate, see
    :func:`geodelta.sources.signing.signer_for`).

    Args:
        cfg: the ``catalog`` section of the build config.
        resolve: callable resolving a config-relative path (``BuildConfig.resolve``).
    """
    if cfg.kind == "static":
        url = resolve(cfg.url) if resolve is not None else cfg.url
        key = f"static:{url}"
    elif cfg.kind == "snapshot":
        url = resolve(cfg.url) if resolve is not None else cfg.url
        key = f"snapshot:{url}:{_stamp(url)}"
    else:
        url = cfg.url
        key = f"api:{cfg.model_dump_json()}"
    with _LOCK:
        cat = _CACHE.get(key)
        if cat is None:
            if cfg.kind == "static":
                cat = StaticCatalog(url)
            elif cfg.kind == "snapshot":
                # imported here: pyarrow and stac-geoparquet only when a snapshot is configured
                from geodelta.sources.snapshot import SnapshotCatalog

                cat = SnapshotCatalog(url)
                for stale in [k for k in _CACHE if k.startswith(f"snapshot:{url}:")]:
                    del _CACHE[stale]  # an earlier version of that file
            else:
                # imported here: pystac-client and requests only when an API is configured
                from geodelta.sources.stac_api import StacApiCatalog

                cat = StacApiCatalog(cfg)
            _CACHE[key] = cat
        return cat


def _stamp(url: str) -> str:
    """(mtime, size) of a local file, so a rewritten snapshot is read again; '' otherwise."""
    if "://" in url and not url.startswith("file://"):
        return ""
    try:
        st = os.stat(url.removeprefix("file://"))
    except OSError:
        return ""
    return f"{st.st_mtime_ns}:{st.st_size}"
