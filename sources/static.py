"""A local static STAC catalog (``catalog.kind: static``), loaded once and searched in process.

:class:`StaticCatalog` answers the :class:`~geodelta.sources.scenes.SceneCatalog` question over
the items of a ``catalog.json`` (the demo catalog, the OSCD catalog, any other): the same
filters and the same order as a STAC API search.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from geodelta.schemas import SceneRef
from geodelta.schemas.records import BBox
from geodelta.sources.scenes import CatalogError, item_to_scene

__all__ = ["StaticCatalog"]


def _overlaps(a: BBox, b: BBox) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


class StaticCatalog:
    """A local static STAC catalog, loaded once and searched in process."""

    def __init__(self, url: str) -> None:
        import pystac

        path = Path(url)
        if "://" not in url and not path.exists():
            raise CatalogError(url, "catalog.json not found; check catalog.url in the config")
        try:
            root = pystac.Catalog.from_file(url)
        except Exception as exc:  # pystac raises several types for unreadable/invalid JSON
            raise CatalogError(
                url, f"not a readable STAC catalog ({exc}); check catalog.url and that file"
            ) from exc
        self.url = url
        self._items: dict[str, list[SceneRef]] = {}
        #: (collection, item id) -> the item's JSON file (for the pre-flight's header checks)
        self.item_hrefs: dict[tuple[str, str], str] = {}
        items = root.get_items(recursive=True)
        while True:
            try:
                item = next(items)
            except StopIteration:
                break
            except Exception as exc:  # pystac: STACError, JSONDecodeError, KeyError, ...
                cause = exc.__cause__ or exc.__context__
                why = f"{exc}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
                raise CatalogError(
                    url, f"a STAC object cannot be read: {why}; fix or remove that file"
                ) from exc
            href = item.get_self_href() or item.id
            try:
                scene = item_to_scene(item)
            except CatalogError:
                raise
            except Exception as exc:  # a malformed bbox, datetime, asset...
                raise CatalogError(
                    url,
                    f"item {item.id!r} ({href}) is not a valid STAC item ({exc}); fix or "
                    "remove that file",
                ) from exc
            self._items.setdefault(scene.collection, []).append(scene)
            self.item_hrefs[(scene.collection, scene.item_id)] = href
        for scenes in self._items.values():
            scenes.sort(key=lambda s: (s.datetime, s.item_id))

    @property
    def collections(self) -> list[str]:
        """Collection ids with at least one item."""
        return sorted(self._items)

    def scenes(self, collection: str) -> list[SceneRef]:
        """Every item of a collection, sorted by (datetime, item id); empty when unknown."""
        return list(self._items.get(collection, []))

    def search(
        self,
        collections: Sequence[str],
        bbox: BBox,
        window: tuple[datetime, datetime],
        *,
        max_cloud_cover: float | None = None,
    ) -> list[SceneRef]:
        """Items intersecting ``bbox`` whose datetime (or period) overlaps ``window``, and
        whose ``eo:cloud_cover`` is at most ``max_cloud_cover`` (when given and known)."""
        unknown = [c for c in collections if c not in self._items]
        if unknown:
            raise CatalogError(
                self.url,
                f"no items in collection(s) {unknown}; available: {self.collections}",
            )
        start, end = window
        out: list[SceneRef] = []
        for collection in collections:
            for scene in self._items[collection]:
                s0 = scene.start_datetime or scene.datetime
                s1 = scene.end_datetime or scene.datetime
                if s1 < start or s0 > end or not _overlaps(scene.bbox_lonlat, bbox):
                    continue
                if (
                    max_cloud_cover is not None
                    and scene.cloud_cover is not None
                    and scene.cloud_cover > max_cloud_cover
                ):
                    continue
                if scene.geometry is not None and not _geometry_intersects(scene.geometry, bbox):
                    continue
                out.append(scene)
        out.sort(key=lambda s: (s.datetime, s.item_id))
        return out


def _geometry_intersects(geometry: dict[str, Any], bbox: BBox) -> bool:
    from shapely.geometry import box, shape

    return bool(shape(geometry).intersects(box(*bbox)))
