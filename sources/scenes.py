"""What every catalog shares: the :class:`SceneCatalog` protocol, :class:`CatalogError`, and
the reduction of a STAC item to a :class:`~geodelta.schemas.SceneRef` (:func:`item_to_scene`).

The catalogs themselves (:class:`geodelta.sources.static.StaticCatalog`,
:class:`geodelta.sources.stac_api.StacApiCatalog`) import this module, and
:func:`geodelta.sources.catalog.open_catalog` picks one of them: this module imports neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from geodelta.errors import SourceError
from geodelta.schemas import AssetRef, SceneRef
from geodelta.schemas.config import parse_datetime
from geodelta.schemas.records import BBox

if TYPE_CHECKING:
    import pystac

__all__ = ["CatalogError", "SceneCatalog", "item_to_scene"]


class CatalogError(SourceError):
    """A catalog that cannot be opened or searched; names the URL and what to check.

    A :class:`~geodelta.errors.SourceError`, hence still a ``RuntimeError``.

    Attributes:
        url: the catalog (or item) URL.
        reason: what failed and the config key to change.
        status: the HTTP status, when an API answered one.
    """

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
