"""Pre-flight: what can be known about a config's sources before any pixel is read.

A build whose catalog cannot be read, whose collection does not exist, whose items lack an
asset the config names, or whose files do not hold what their STAC metadata declares can never
produce a sample: every cell would be quarantined for the same reason, and the build would end
with an empty release. :func:`check_sources` finds these before any work starts, each refusal
naming the config key to change (and the file, the item and the asset):

* the catalog opens and parses (``catalog.url``): a static catalog is read whole, so a
  malformed item anywhere is found here; a STAC API answers its landing page;
* the imagery collection (``imagery.collection``) and, for land-cover labels, the label
  collection (``labels.collection``) have items;
* a sampled item of each (the first item the first planned cell's search returns, else the
  first item of the collection) has every asset the config names (``imagery.bands``,
  ``imagery.rgb``, ``coregistration.band``, ``imagery.classification_asset``, ``labels.asset``);
* each of those assets, opened with rasterio (the header only, no pixels), has the data type,
  nodata value and scale/offset its STAC ``raster:bands`` declares: a band stored as float32
  reflectance where STAC declares uint16 DN would be scaled a second time and pass every later
  check.

Only the sampled item is opened: a catalog whose items differ from each other is still found
per cell, in quarantine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from geodelta.errors import ConfigError, SourceError
from geodelta.schemas import BuildConfig, SceneRef, TileJob
from geodelta.schemas.records import BBox
from geodelta.sources.catalog import CatalogError, SceneCatalog, open_catalog
from geodelta.sources.scenes import item_to_scene
from geodelta.sources.static import StaticCatalog

if TYPE_CHECKING:
    import pystac

__all__ = ["AssetHeaderError", "SampledItem", "check_sources", "required_assets", "sample_item"]


class AssetHeaderError(SourceError):
    """An asset whose file cannot be opened, or does not hold what its STAC metadata declares.

    Attributes:
        key: the config key naming the asset (``imagery.bands``, ``labels.asset``, ...).
        item_id: the sampled STAC item.
        asset: the asset key.
    """

    def __init__(self, key: str, item_id: str, asset: str, reason: str) -> None:
        from geodelta.sources.signing import redact_secrets

        super().__init__(redact_secrets(f"{key}: asset {asset!r} of item {item_id!r} {reason}"))
        self.key = key
        self.item_id = item_id
        self.asset = asset


@dataclass(frozen=True)
class SampledItem:
    """One item of a collection, as the catalog gives it and as the stages see it.

    Attributes:
        item: the pystac Item (its assets' ``raster:bands`` as declared).
        scene: the item reduced as every stage sees it (scale/offset/nodata geodelta applies).
        how: how it was chosen, for the pre-flight report.
    """

    item: pystac.Item
    scene: SceneRef
    how: str


def required_assets(cfg: BuildConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(asset key, config key naming it) the imagery items and the label items must have.

    The label list is empty unless the labels are items of their own collection; a change-mask
    asset (on the after items) is checked separately, as only some imagery items carry it.
    """
    imagery: dict[str, str] = {}
    for band in cfg.imagery.bands:
        imagery.setdefault(band, "imagery.bands")
    for band in cfg.imagery.rgb:
        imagery.setdefault(band, "imagery.rgb")
    if cfg.coregistration.band is not None:
        imagery.setdefault(cfg.coregistration.band, "coregistration.band")
    if cfg.imagery.classification_asset is not None:
        imagery.setdefault(cfg.imagery.classification_asset, "imagery.classification_asset")
    labels = [(cfg.labels.asset, "labels.asset")] if cfg.labels.searched_collection else []
    return list(imagery.items()), labels


def _first_api_item(
    catalog: Any,
    collection: str,
    bbox: BBox | None,
    window: tuple[datetime, datetime] | None,
    limit: int = 1,
) -> list[dict[str, Any]]:
    """The first ``limit`` item dicts a STAC API search returns (one page, no more)."""
    params: dict[str, Any] = {"collections": [collection], "max_items": limit, "limit": limit}
    if bbox is not None:
        params["bbox"] = list(bbox)
    if window is not None:
        params["datetime"] = "/".join(t.isoformat().replace("+00:00", "Z") for t in window)
    try:
        return list(catalog.client.search(**params).items_as_dicts())
    except CatalogError:
        raise
    except Exception as exc:  # pystac-client APIError, requests errors
        raise CatalogError(
            catalog.url, f"searching collection {collection!r} failed ({exc}); check catalog.url"
        ) from exc


def _static_item(catalog: StaticCatalog, scene: SceneRef) -> pystac.Item:
    import pystac

    stored = getattr(catalog, "pystac_item", None)  # a snapshot: the items are in memory
    if stored is not None:
        item: pystac.Item = stored(scene)
        return item
    href = catalog.item_hrefs.get((scene.collection, scene.item_id))
    if href is None:
        raise CatalogError(catalog.url, f"item {scene.item_id!r} has no file to read")
    try:
        return pystac.Item.from_file(href)
    except Exception as exc:  # the file changed since the catalog was read
        raise CatalogError(catalog.url, f"item {scene.item_id!r} ({href}): {exc}") from exc


def sample_item(
    catalog: SceneCatalog,
    collection: str,
    key: str,
    bbox: BBox,
    windows: Sequence[tuple[datetime, datetime]],
) -> SampledItem:
    """The first item the searches of ``windows`` over ``bbox`` return, else the first item of
    the collection.

    Args:
        catalog: an opened catalog (static or STAC API).
        collection: the collection id.
        key: the config key naming the collection (``imagery.collection``, ...).
        bbox: lon/lat box of the first planned cell.
        windows: time windows searched in turn.

    Raises:
        ConfigError: the collection has no items (names ``key`` and, for a static catalog,
            the collections it has).
        CatalogError: the catalog cannot be searched.
    """
    import pystac

    from geodelta.sources.profiles import complete_item

    if isinstance(catalog, StaticCatalog):
        if collection not in catalog.collections:
            raise ConfigError(
                f"{key}: catalog {catalog.url} has no collection {collection!r} (its collections: "
                f"{catalog.collections}); change {key}"
            )
        for i, window in enumerate(windows):
            found = catalog.search([collection], bbox, window)
            if found:
                how = f"first item of the first cell's search {i + 1}"
                return SampledItem(_static_item(catalog, found[0]), found[0], how)
        first = catalog.scenes(collection)[0]
        return SampledItem(_static_item(catalog, first), first, "first item of the collection")
    searches: list[tuple[BBox | None, tuple[datetime, datetime] | None, str]] = [
        (bbox, w, f"first item of the first cell's search {i + 1}") for i, w in enumerate(windows)
    ]
    searches.append((None, None, "first item of the collection"))
    for box, when, how in searches:
        dicts = _first_api_item(catalog, collection, box, when)
        if dicts:
            item = pystac.Item.from_dict(dicts[0], preserve_dict=False)
            complete_item(item)  # as the catalog's own search does
            return SampledItem(item, item_to_scene(item), how)
    raise ConfigError(
        f"{key}: the STAC API {getattr(catalog, 'url', '')} returns no item of collection "
        f"{collection!r}; change {key} to a collection the API has"
    )


def require_assets(sample: SampledItem, needs: Sequence[tuple[str, str]]) -> None:
    """Refuse an item lacking an asset the config names.

    Raises:
        ConfigError: names the config key, the asset and the item's raster assets.
    """
    for asset, key in needs:
        if asset not in sample.scene.assets:
            raise ConfigError(
                f"{key}: item {sample.scene.item_id!r} of collection {sample.scene.collection!r} "
                f"has no raster asset {asset!r} (its raster assets: "
                f"{sorted(sample.scene.assets)}); change {key}"
            )


#: STAC ``raster:bands`` data types that are also rasterio's names (the complex types and
#: ``other`` are not compared).
_NUMPY_TYPES = frozenset(
    f"{kind}{bits}" for kind in ("int", "uint") for bits in (8, 16, 32, 64)
) | {"float16", "float32", "float64"}


def _declared(item: pystac.Item, asset: str) -> dict[str, Any]:
    bands = item.assets[asset].extra_fields.get("raster:bands")
    first = bands[0] if isinstance(bands, list) and bands else None
    return first if isinstance(first, dict) else {}


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # STAC allows "nan", "inf", "-inf" as strings
    except (TypeError, ValueError):
        return None


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def check_header(
    sample: SampledItem,
    asset: str,
    key: str,
    *,
    gdal_options: dict[str, str] | None = None,
    signer: Callable[[str], str] | None = None,
) -> str:
    """Open one asset's header (no pixels) and compare it with its STAC ``raster:bands``.

    The file must be georeferenced. Compared: the data type (``data_type``), the nodata value
    (when both declare one), and a scale/offset stored in the file (when it has one) against
    the one geodelta applies; a float file without a declared ``data_type`` whose STAC scale
    is not 1 is refused too (reflectance would be scaled a second time).

    Returns:
        One line saying what agreed.

    Raises:
        AssetHeaderError: the file cannot be opened, or disagrees (names the key, item, asset).
    """
    import rasterio
    from rasterio.errors import RasterioError

    ref = sample.scene.assets[asset]
    item_id = sample.scene.item_id
    options = {k: v for k, v in (gdal_options or {}).items() if k != "GDAL_CACHEMAX"}
    try:
        with (
            rasterio.Env(**options),
            rasterio.open(signer(ref.href) if signer else ref.href) as src,
        ):
            dtype, nodata = src.dtypes[0], src.nodata
            file_scale, file_offset = float(src.scales[0]), float(src.offsets[0])
            placed = src.crs is not None or bool(src.gcps[0])
    except (RasterioError, OSError) as exc:
        raise AssetHeaderError(
            key, item_id, asset, f"cannot be opened ({ref.href}: {exc}); fix the file or its href"
        ) from exc
    if not placed:
        raise AssetHeaderError(
            key,
            item_id,
            asset,
            f"({ref.href}) has no CRS / georeferencing, so it cannot be placed on the cell "
            "grid; write the file with its CRS and transform",
        )
    declared = _declared(sample.item, asset)
    fix = f"fix the file or its STAC raster:bands, or change {key}"
    data_type = declared.get("data_type")
    if isinstance(data_type, str) and data_type in _NUMPY_TYPES and data_type != dtype:
        raise AssetHeaderError(
            key,
            item_id,
            asset,
            f"is stored as {dtype} but its STAC raster:bands declares data_type {data_type} "
            f"(scale {ref.scale:g}, offset {ref.offset:g} would be applied to it); {fix}",
        )
    if data_type is None and dtype.startswith("float") and not _same(ref.scale, 1.0):
        raise AssetHeaderError(
            key,
            item_id,
            asset,
            f"is stored as {dtype} (physical values?) but a scale of {ref.scale:g} would be "
            f"applied to it; declare raster:bands data_type and scale, or {fix}",
        )
    stac_nodata = _as_float(declared.get("nodata"))
    if stac_nodata is not None and nodata is not None and not _same(stac_nodata, nodata):
        raise AssetHeaderError(
            key,
            item_id,
            asset,
            f"has nodata {nodata:g} in the file but {stac_nodata:g} in its STAC raster:bands; "
            f"{fix}",
        )
    if not (_same(file_scale, 1.0) and _same(file_offset, 0.0)) and not (
        _same(file_scale, ref.scale) and _same(file_offset, ref.offset)
    ):
        raise AssetHeaderError(
            key,
            item_id,
            asset,
            f"carries scale {file_scale:g} / offset {file_offset:g} in the file but geodelta "
            f"would apply scale {ref.scale:g} / offset {ref.offset:g} (STAC raster:bands or the "
            f"collection profile); {fix}",
        )
    shown_nodata = "none" if nodata is None and ref.nodata is None else f"{ref.nodata}"
    return (
        f"{asset}: {dtype}, nodata {shown_nodata}, scale {ref.scale:g} offset {ref.offset:g}: "
        "file and STAC agree"
    )


def check_sources(cfg: BuildConfig, first_cell: TileJob) -> list[str]:
    """Every pre-flight check of a config's sources (see the module docstring).

    Args:
        cfg: the build config, profile defaults applied.
        first_cell: the first planned cell (its searches pick the sampled items).

    Returns:
        One line per check made, saying what held.

    Raises:
        CatalogError: the catalog cannot be opened, parsed or searched (names the file/item).
        ConfigError: a collection or an asset the config names is not there (names the key).
        AssetHeaderError: a sampled asset's file disagrees with its STAC metadata.
    """
    from geodelta.sources.signing import signer_for

    catalog = open_catalog(cfg.catalog, resolve=cfg.resolve)
    if isinstance(catalog, StaticCatalog):
        counts = {c: len(catalog.scenes(c)) for c in catalog.collections}
        lines = [f"catalog.url: {catalog.url} parses ({counts} items per collection)"]
    else:
        getattr(catalog, "client", None)  # a STAC API: its landing page answers
        lines = [f"catalog.url: STAC API {cfg.catalog.url} answers"]
    signer = signer_for(cfg.catalog)
    gdal = cfg.gdal.env()
    imagery_needs, label_needs = required_assets(cfg)
    job = first_cell
    windows = [job.t0_window, job.t1_window]
    sample = sample_item(
        catalog, cfg.imagery.collection, "imagery.collection", job.bbox_lonlat, windows
    )
    require_assets(sample, imagery_needs)
    lines.append(
        f"imagery.collection: {cfg.imagery.collection!r} has items; sampled "
        f"{sample.scene.item_id!r} ({sample.how}) has {[a for a, _ in imagery_needs]}"
    )
    for asset, key in imagery_needs:
        lines.append(check_header(sample, asset, key, gdal_options=gdal, signer=signer))
    lines += _check_change_mask(cfg, catalog, job, gdal, signer)
    collection = cfg.labels.searched_collection
    if collection is not None:
        window = (job.t0_window[0], job.t1_window[1])
        labels = sample_item(catalog, collection, "labels.collection", job.bbox_lonlat, [window])
        require_assets(labels, label_needs)
        lines.append(
            f"labels.collection: {collection!r} has items; sampled {labels.scene.item_id!r} "
            f"({labels.how}) has {[a for a, _ in label_needs]}"
        )
        for asset, key in label_needs:
            lines.append(check_header(labels, asset, key, gdal_options=gdal, signer=signer))
    return lines


def _check_change_mask(
    cfg: BuildConfig,
    catalog: SceneCatalog,
    job: TileJob,
    gdal: dict[str, str],
    signer: Callable[[str], str] | None,
) -> list[str]:
    """``labels.kind: change_mask``: some after item carries ``labels.asset``.

    A static catalog is searched whole; a STAC API, the first cell's after window (one page).
    """
    if cfg.labels.kind != "change_mask":
        return []
    asset = cfg.labels.asset
    if isinstance(catalog, StaticCatalog):
        scenes = catalog.scenes(cfg.imagery.collection)
        where = f"collection {cfg.imagery.collection!r}"
        with_mask = [s for s in scenes if asset in s.assets]
        item = _static_item(catalog, with_mask[0]) if with_mask else None
    else:
        import pystac

        dicts = _first_api_item(
            catalog, cfg.imagery.collection, job.bbox_lonlat, job.t1_window, limit=50
        )
        where = f"the first cell's after window of collection {cfg.imagery.collection!r}"
        items = [pystac.Item.from_dict(d, preserve_dict=False) for d in dicts]
        item = next((i for i in items if asset in item_to_scene(i).assets), None)
    if item is None:
        raise ConfigError(
            f"labels.asset: no item of {where} has a {asset!r} asset (labels.kind "
            "change_mask reads it from the after item); change labels.asset"
        )
    sample = SampledItem(item, item_to_scene(item), "first item carrying the change mask")
    line = check_header(sample, asset, "labels.asset", gdal_options=gdal, signer=signer)
    return [f"labels.asset: {asset!r} found on {sample.scene.item_id!r}", line]
