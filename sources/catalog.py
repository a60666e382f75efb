"""Catalog search behind one interface.

Every catalog (a static STAC catalog searched in process, or a STAC API searched through
pystac-client: :class:`geodelta.sources.stac_api.StacApiCatalog`) answers one question: which
items of these collections intersect this lon/lat box within this time window. Items come back
as :class:`~geodelta.schemas.SceneRef` records with asset hrefs stripped of secrets and the
scale/offset/nodata of each asset taken from the STAC raster extension.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from geodelta.schemas import AssetRef, SceneRef
from geodelta.schemas.config import CatalogConfig, parse_datetime
from geodelta.schemas.records import BBox

if TYPE_CHECKING:
    import pystac


class CatalogError(RuntimeError):
    """A catalog that cannot be opened or searched; names the URL and what to check."""

    def __init__(self, url: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"catalog {url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


class SceneCatalog(Protocol):
    """What the pipeline needs from a catalog."""

    def search(
        self,
        collections: Sequence[str],
        bbox: BBox,
        window: tuple[datetime, datetime],
        *,
        max_cloud_cover: float | None = None,
    ) -> list[SceneRef]:
        """Items of ``collections`` intersecting ``bbox`` (lon/lat) within ``window``.

        ``max_cloud_cover`` (percent) drops items whose scene-wide ``eo:cloud_cover`` is above
        it (items without one are kept): a pre-filter only. Results are sorted by
        (datetime, item id) so every caller sees the same order.
        """
        ...


def _asset_ref(asset: pystac.Asset) -> AssetRef:
    bands = asset.extra_fields.get("raster:bands") or [{}]
    first = bands[0] if isinstance(bands, list) and bands else {}
    return AssetRef(
        href=asset.get_absolute_href() or asset.href,
        scale=float(first.get("scale", 1.0)),
        offset=float(first.get("offset", 0.0)),
        nodata=first.get("nodata"),
        roles=tuple(asset.roles or ()),
    )


def _is_raster_data(asset: pystac.Asset) -> bool:
    """Data assets by role, and GeoTIFF assets whatever their roles (Landsat's ``qa_pixel`` has
    roles ``cloud``, ``cloud-shadow``, ...); thumbnails and overviews are left out."""
    roles = set(asset.roles or ())
    if "data" in roles:
        return True
    if roles & {"thumbnail", "overview"}:
        return False
    return (asset.media_type or "").startswith("image/tiff")


def _item_crs(item: pystac.Item) -> str | None:
    props = item.properties
    if props.get("proj:code"):
        return str(props["proj:code"])
    if props.get("proj:epsg") is not None:
        return f"EPSG:{int(props['proj:epsg'])}"
    return None


def item_to_scene(item: pystac.Item) -> SceneRef:
    """Reduce a pystac Item to a SceneRef (raster assets only, secrets stripped)."""
    props = item.properties
    start = props.get("start_datetime")
    end = props.get("end_datetime")
    when = item.datetime or (parse_datetime(start) if start else None)
    if when is None:
        raise CatalogError(item.get_self_href() or item.id, f"item {item.id} has no datetime")
    if item.bbox is None:
        raise CatalogError(item.get_self_href() or item.id, f"item {item.id} has no bbox")
    assets = {
        key: _asset_ref(asset) for key, asset in item.assets.items() if _is_raster_data(asset)
    }
    b = [float(v) for v in item.bbox]
    x0, y0, x1, y1 = (b[0], b[1], b[2], b[3]) if len(b) == 4 else (b[0], b[1], b[3], b[4])
    return SceneRef(
        collection=item.collection_id or "",
        item_id=item.id,
        datetime=parse_datetime(when),
        crs=_item_crs(item),
        bbox_lonlat=(x0, y0, x1, y1),
        geometry=item.geometry,
        start_datetime=parse_datetime(start) if start else None,
        end_datetime=parse_datetime(end) if end else None,
        assets=assets,
        cloud_cover=props.get("eo:cloud_cover"),
        platform=props.get("platform"),
    )


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
            raise CatalogError(url, f"not a readable STAC catalog ({exc})") from exc
        self.url = url
        self._items: dict[str, list[SceneRef]] = {}
        for item in root.get_items(recursive=True):
            scene = item_to_scene(item)
            self._items.setdefault(scene.collection, []).append(scene)
        for scenes in self._items.values():
            scenes.sort(key=lambda s: (s.datetime, s.item_id))

    @property
    def collections(self) -> list[str]:
        """Collection ids with at least one item."""
        return sorted(self._items)

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


_CACHE: dict[str, SceneCatalog] = {}
_LOCK = threading.Lock()


def open_catalog(cfg: CatalogConfig, *, resolve: Any = None) -> SceneCatalog:
    """Open (once per process) the catalog a config names.

    ``catalog.kind`` picks the implementation: ``static`` a local catalog.json
    (:class:`StaticCatalog`), ``stac-api`` and ``planetary-computer`` a STAC API
    (:class:`geodelta.sources.stac_api.StacApiCatalog`; signing for reads is separate, see
    :func:`geodelta.sources.signing.signer_for`).

    Args:
        cfg: the ``catalog`` section of the build config.
        resolve: callable resolving a config-relative path (``BuildConfig.resolve``).
    """
    if cfg.kind == "static":
        url = resolve(cfg.url) if resolve is not None else cfg.url
        key = f"static:{url}"
    else:
        url = cfg.url
        key = f"api:{cfg.model_dump_json()}"
    with _LOCK:
        cat = _CACHE.get(key)
        if cat is None:
            if cfg.kind == "static":
                cat = StaticCatalog(url)
            else:
                from geodelta.sources.stac_api import StacApiCatalog

                cat = StacApiCatalog(cfg)
            _CACHE[key] = cat
        return cat
