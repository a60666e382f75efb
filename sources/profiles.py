"""Collection profiles: what geodelta knows about well-known STAC collections, as one table.

A profile is data, not code: the bands and their native resolutions, the scene classification
asset and which of its values (class values, or bits of a bit mask) count as clear, the DN ->
reflectance scale/offset when items do not carry ``raster:bands``, and for land-cover products
the asset and the class table (:data:`geodelta.sources.landcover.PRODUCTS`) mapping raw values
onto geodelta's class list. Adding a collection is one more entry in :data:`PROFILES`.

Profiles are used in three places:

* :func:`complete_item` fills the scale/offset of reflectance assets that lack ``raster:bands``
  scale/offset (Planetary Computer's ``sentinel-2-l2a`` items carry none), choosing the
  Sentinel-2 offset by ``s2:processing_baseline`` (-0.1, i.e. -1000 DN, from baseline 04.00 on);
* :func:`apply_defaults` fills the config keys a user left out (``imagery.classification_asset``,
  ``imagery.clear_classes`` / ``imagery.cloud_bits``, ``labels.asset``, ``labels.product``) from
  the profiles of the configured collections; keys the user set always win;
* :func:`check_config` reports config values a profile knows to be wrong (a band that the
  collection does not have), and ``geodelta search --dry-run`` estimates bytes from the band
  resolutions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from geodelta.schemas import BuildConfig

if TYPE_CHECKING:
    import pystac


@dataclass(frozen=True)
class OffsetRule:
    """A reflectance offset that applies from a version of a processing property on.

    Attributes:
        prop: item property holding the version, e.g. ``s2:processing_baseline``.
        since: first version (compared as a tuple of integers, "04.00" -> (4, 0)).
        offset: the offset (physical units) for items at or after ``since``.
    """

    prop: str
    since: str
    offset: float


@dataclass(frozen=True)
class CollectionProfile:
    """What geodelta knows about one STAC collection.

    Attributes:
        collection: the STAC collection id.
        kind: ``imagery`` (reflectance bands) or ``landcover`` (a class map).
        bands: reflectance asset key -> native resolution in metres.
        dtype_bytes: bytes per pixel of the reflectance bands (for byte estimates).
        scale: DN -> reflectance scale, used where an item lacks ``raster:bands`` scale.
        offset: DN -> reflectance offset, used where an item lacks ``raster:bands`` offset.
        offset_rules: offsets that replace ``offset`` from a processing version on.
        classification_asset: scene classification asset key (imagery), or None.
        classification_resolution_m: its native resolution in metres.
        classes: classification value -> meaning (documentation and the dry run).
        clear_classes: classification values that count as clear (class-valued masks).
        cloud_bits: bit positions that make a pixel not clear (bit masks such as QA_PIXEL).
        landcover_asset: the land-cover map asset key (landcover).
        landcover_product: key of :data:`geodelta.sources.landcover.PRODUCTS` (landcover).
        landcover_resolution_m: native resolution of the land-cover map in metres.
    """

    collection: str
    kind: Literal["imagery", "landcover"]
    bands: dict[str, float] = field(default_factory=dict)
    dtype_bytes: int = 2
    scale: float = 1.0
    offset: float = 0.0
    offset_rules: tuple[OffsetRule, ...] = ()
    classification_asset: str | None = None
    classification_resolution_m: float = 20.0
    classes: dict[int, str] = field(default_factory=dict)
    clear_classes: tuple[int, ...] = ()
    cloud_bits: tuple[int, ...] = ()
    landcover_asset: str | None = None
    landcover_product: str | None = None
    landcover_resolution_m: float = 10.0

    def offset_for(self, properties: dict[str, Any]) -> float:
        """The reflectance offset of an item with these properties (the last matching rule)."""
        offset = self.offset
        for rule in self.offset_rules:
            version = properties.get(rule.prop)
            if version is not None and _version(str(version)) >= _version(rule.since):
                offset = rule.offset
        return offset


def _version(text: str) -> tuple[int, ...]:
    """'04.00' -> (4, 0); non-numeric parts count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("."))


#: Sentinel-2 L2A scene classification (SCL) values.
SCL_CLASSES: Final[dict[int, str]] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_or_cast_shadow",
    3: "cloud_shadow",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow_ice",
}

#: Landsat Collection 2 QA_PIXEL bits.
QA_PIXEL_BITS: Final[dict[int, str]] = {
    0: "fill",
    1: "dilated_cloud",
    2: "cirrus",
    3: "cloud",
    4: "cloud_shadow",
    5: "snow",
    6: "clear",
    7: "water",
}

_S2_BANDS = {
    "B01": 60.0,
    "B02": 10.0,
    "B03": 10.0,
    "B04": 10.0,
    "B05": 20.0,
    "B06": 20.0,
    "B07": 20.0,
    "B08": 10.0,
    "B8A": 20.0,
    "B09": 60.0,
    "B11": 20.0,
    "B12": 20.0,
}

_LANDSAT_BANDS = {
    name: 30.0 for name in ("coastal", "blue", "green", "red", "nir08", "swir16", "swir22")
}

#: Collection id -> profile.
PROFILES: Final[dict[str, CollectionProfile]] = {
    p.collection: p
    for p in (
        CollectionProfile(
            collection="sentinel-2-l2a",
            kind="imagery",
            bands=_S2_BANDS,
            scale=0.0001,
            offset=0.0,
            # from processing baseline 04.00 (January 2022) L2A DNs carry a +1000 offset
            offset_rules=(OffsetRule("s2:processing_baseline", "04.00", -0.1),),
            classification_asset="SCL",
            classification_resolution_m=20.0,
            classes=SCL_CLASSES,
            # clear = vegetation, not vegetated, water, unclassified; no data, defective,
            # shadows (cast and cloud), clouds, cirrus and snow are not clear
            clear_classes=(4, 5, 6, 7),
        ),
        CollectionProfile(
            collection="landsat-c2-l2",
            kind="imagery",
            bands=_LANDSAT_BANDS,
            scale=0.0000275,
            offset=-0.2,
            classification_asset="qa_pixel",
            classification_resolution_m=30.0,
            classes=QA_PIXEL_BITS,
            # fill, dilated cloud, cirrus, cloud, cloud shadow, snow
            cloud_bits=(0, 1, 2, 3, 4, 5),
        ),
        CollectionProfile(
            collection="io-lulc-annual-v02",
            kind="landcover",
            dtype_bytes=1,
            landcover_asset="data",
            landcover_product="io-lulc",
            landcover_resolution_m=10.0,
        ),
        CollectionProfile(
            collection="esa-worldcover",
            kind="landcover",
            dtype_bytes=1,
            landcover_asset="map",
            landcover_product="worldcover",
            landcover_resolution_m=10.0,
        ),
    )
}


def get_profile(collection: str | None) -> CollectionProfile | None:
    """The profile of a collection id, or None when geodelta has none."""
    return PROFILES.get(collection or "")


def complete_item(item: pystac.Item, profile: CollectionProfile | None = None) -> None:
    """Fill missing ``raster:bands`` scale/offset of an item's reflectance assets, in place.

    Only the profile's bands are touched, and only the keys an asset lacks: values the item
    carries always win. The offset follows the profile's offset rules (Sentinel-2: -0.1 from
    ``s2:processing_baseline`` 04.00 on).

    Args:
        item: the STAC item (its collection id picks the profile unless ``profile`` is given).
        profile: the profile to use; default: the profile of ``item.collection_id``.
    """
    profile = profile or get_profile(item.collection_id)
    if profile is None or profile.kind != "imagery":
        return
    offset = profile.offset_for(item.properties)
    for key in profile.bands:
        asset = item.assets.get(key)
        if asset is None:
            continue
        bands = asset.extra_fields.get("raster:bands")
        if not isinstance(bands, list) or not bands or not isinstance(bands[0], dict):
            bands = [{}]
        first = dict(bands[0])
        first.setdefault("scale", profile.scale)
        first.setdefault("offset", offset)
        asset.extra_fields["raster:bands"] = [first, *bands[1:]]


def apply_defaults(cfg: BuildConfig) -> BuildConfig:
    """The config with the keys a user left out filled from the collections' profiles.

    Only keys absent from the file are filled (pydantic's ``model_fields_set``), so an explicit
    value, ``null`` included, always wins. Collections without a profile leave the config as
    it is. Applying it twice gives the same config.

    Filled keys: ``imagery.classification_asset``, ``imagery.clear_classes``,
    ``imagery.cloud_bits`` (imagery profile), ``labels.asset``, ``labels.product`` (land-cover
    profile).
    """
    imagery, labels = cfg.imagery, cfg.labels
    update: dict[str, Any] = {}
    ip = get_profile(imagery.collection)
    if ip is not None and ip.kind == "imagery":
        unset = {"classification_asset", "clear_classes", "cloud_bits"} - imagery.model_fields_set
        values = {
            "classification_asset": ip.classification_asset,
            "clear_classes": ip.clear_classes or imagery.clear_classes,
            "cloud_bits": ip.cloud_bits,
        }
        if unset:
            update["imagery"] = imagery.model_copy(update={k: values[k] for k in sorted(unset)})
    lp = get_profile(labels.searched_collection)
    if lp is not None and lp.kind == "landcover":
        values = {"asset": lp.landcover_asset, "product": lp.landcover_product}
        unset = {k for k, v in values.items() if v is not None} - labels.model_fields_set
        if unset:
            update["labels"] = labels.model_copy(update={k: values[k] for k in sorted(unset)})
    return cfg.model_copy(update=update) if update else cfg


def check_config(cfg: BuildConfig) -> list[str]:
    """Problems a profile sees in a config, each naming the key to change (empty = none)."""
    problems: list[str] = []
    ip = get_profile(cfg.imagery.collection)
    if ip is not None and ip.kind == "imagery" and ip.bands:
        for key in ("bands", "rgb"):
            wrong = [b for b in getattr(cfg.imagery, key) if b not in ip.bands]
            if wrong:
                problems.append(
                    f"imagery.{key}: {wrong} not bands of {ip.collection} "
                    f"(known: {sorted(ip.bands)})"
                )
    lp = get_profile(cfg.labels.searched_collection)
    if lp is not None and lp.landcover_product and cfg.labels.product != lp.landcover_product:
        problems.append(
            f"labels.product: {cfg.labels.product!r} is not the class table of "
            f"{lp.collection} (use {lp.landcover_product!r})"
        )
    return problems


def band_resolution(collection: str, band: str, default: float) -> float:
    """Native resolution (m) of a band or classification asset, ``default`` when unknown."""
    p = get_profile(collection)
    if p is None:
        return default
    if band in p.bands:
        return p.bands[band]
    if band == p.classification_asset:
        return p.classification_resolution_m
    if band == p.landcover_asset:
        return p.landcover_resolution_m
    return default
