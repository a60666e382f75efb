"""The one table of sample members: every file a sample of a shard carries, and how to read it.

One row per member, in tar order: its name (the tar member suffix after ``<key>.``), its codec
(how the bytes are encoded), its description (the dataset card's "Sample members" table prints
it verbatim) and its decoded form (what :mod:`geodelta.data` returns for it). The encoder
(:mod:`geodelta.pipelines.stages.encode`) writes exactly these members, the card
(:mod:`geodelta.pipelines.release.card`) documents them, :mod:`geodelta.pipelines.release.verify`
checks each by its codec, and :mod:`geodelta.data` decodes each by its codec. A member name
that is not in this table is reported by verify and by the loader, never skipped silently.

Adding an output member: one row here, the bytes in ``encode_members``, a decoder in
``geodelta.data`` when its codec is new.

A series release (issue 15, config ``time.series``) carries every pair member, unchanged in
meaning (before = date 0, after = date T-1), then the :data:`SERIES_MEMBERS`;
:func:`members_for` gives the members of a release mode.

This module is pure data and imports nothing from geodelta: the ground-floor loader
``geodelta/data.py`` reads it, the one allowed upward edge from the ground floor
(``geodelta.data`` -> ``geodelta.schemas.members``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CODECS",
    "HF_DTYPES",
    "MEMBERS",
    "MODES",
    "SAMPLE_MEMBERS",
    "SERIES_MEMBERS",
    "SERIES_SAMPLE_MEMBERS",
    "Codec",
    "Member",
    "Mode",
    "hf_feature_list",
    "member",
    "members_for",
]

#: How a member's bytes are encoded.
Codec = Literal["geotiff", "png-rgb", "png-index", "png-instance", "json", "geotiff-index"]

#: Every codec, in the order the decoders are documented.
CODECS: tuple[Codec, ...] = (
    "geotiff",
    "png-rgb",
    "png-index",
    "png-instance",
    "json",
    "geotiff-index",
)

#: What a release holds per sample: a pair (two dates) or a series (T >= 3 dates).
Mode = Literal["pair", "series"]

#: Every release mode.
MODES: tuple[Mode, ...] = ("pair", "series")

#: The Hugging Face ``datasets`` feature dtype of each codec (the dataset card's
#: ``dataset_info.features`` and :func:`geodelta.decoders.hf_features`): GeoTIFFs stay bytes
#: (PIL, hence ``datasets.Image``, would read band 1 only), PNGs are images (``np.asarray`` gives
#: the stored values), JSON members are decoded JSON.
HF_DTYPES: dict[Codec, str] = {
    "geotiff": "binary",
    "png-rgb": "image",
    "png-index": "image",
    "png-instance": "image",
    "json": "json",
    "geotiff-index": "binary",
}


@dataclass(frozen=True)
class Member:
    """One member of a sample.

    Attributes:
        name: the member name, the tar member's suffix after ``<key>.`` (``before.tif``).
        codec: how the bytes are encoded: ``geotiff`` (uint16 multiband GeoTIFF), ``png-rgb``
            (8-bit RGB PNG), ``png-index`` (8-bit single-band PNG of class indexes),
            ``png-instance`` (16-bit single-band PNG of instance ids), ``json`` (UTF-8 JSON) or
            ``geotiff-index`` (uint8 multiband GeoTIFF of class or transition codes).
        description: what the member holds; the dataset card prints it byte for byte.
        decoded: what :func:`geodelta.data.decode_member` returns for it.
    """

    name: str
    codec: Codec
    description: str
    decoded: str


#: The members every sample of a shard carries (DESIGN.md, "A sample in a shard"), in tar order.
MEMBERS: tuple[Member, ...] = (
    Member(
        "before.tif",
        "geotiff",
        "before scene, multispectral uint16 GeoTIFF (CRS + transform in the file)",
        "float32 reflectance (band, y, x), nodata -> NaN",
    ),
    Member(
        "after.tif",
        "geotiff",
        "after scene, co-registered onto the before scene, same layout",
        "float32 reflectance (band, y, x), nodata -> NaN",
    ),
    Member(
        "before.png",
        "png-rgb",
        "8-bit true-colour rendering of the before scene",
        "uint8 RGB (y, x, 3)",
    ),
    Member(
        "after.png",
        "png-rgb",
        "8-bit true-colour rendering of the after scene",
        "uint8 RGB (y, x, 3)",
    ),
    Member(
        "mask.png",
        "png-index",
        "change mask: 0 no change, k = transition code (table below)",
        "uint8 transition codes (y, x)",
    ),
    Member(
        "change.png",
        "png-index",
        "binary change mask, same grid as mask.png: 1 = change (mask.png > 0), 0 = no change",
        "uint8 0/1 (y, x)",
    ),
    Member(
        "regions.png",
        "png-instance",
        "regions of change, same grid as mask.png: 0 = no change, k = region id (the json's "
        "regions table)",
        "uint16 region ids (y, x)",
    ),
    Member(
        "lc_before.png",
        "png-index",
        "land-cover class index at t0 (0 = unknown; all 0 for change-mask labels)",
        "uint8 class indexes (y, x)",
    ),
    Member(
        "lc_after.png",
        "png-index",
        "land-cover class index at t1 (0 = unknown; all 0 for change-mask labels)",
        "uint8 class indexes (y, x)",
    ),
    Member(
        "json",
        "json",
        "metadata (SampleMeta): STAC items, times, CRS, transform, bbox, cloud/valid "
        "fractions, co-registration, facts, region table, grounded captions, annotator, licence",
        "dict (SampleMeta fields)",
    ),
    Member("captions.json", "json", "list of change captions", "list[str]"),
    Member(
        "qa.json",
        "json",
        "list of {type, question, answer, evidence}",
        "list[dict] ({type, question, answer, evidence})",
    ),
)

#: The members a series sample carries after :data:`MEMBERS` (issue 15), in tar order. T is the
#: number of dates, C the number of bands; every raster is on date 0's grid (CRS + transform).
SERIES_MEMBERS: tuple[Member, ...] = (
    Member(
        "series.tif",
        "geotiff",
        "every date of the sequence, co-registered onto date 0: uint16 GeoTIFF of T*C bands, "
        "date-major (date 0 band 0, date 0 band 1, ..., date 1 band 0, ...), same encoding as "
        'before.tif; band descriptions "YYYY-MM-DD band"',
        "float32 reflectance (time, band, y, x), nodata -> NaN",
    ),
    Member(
        "dates.json",
        "json",
        "the T dates in time order (SeriesDateMeta): item, acquisition time, window, clear and "
        "valid fractions, label item, co-registration shift and residual onto date 0",
        "list[dict] (SeriesDateMeta fields)",
    ),
    Member(
        "first_change.png",
        "png-index",
        "first step at which each pixel changed: k = change between date k-1 and date k, "
        "0 = never (or unknown)",
        "uint8 step numbers (y, x)",
    ),
    Member(
        "step_masks.tif",
        "geotiff-index",
        "per-step change masks: uint8 GeoTIFF of T-1 bands, band k = transition codes from date "
        'k-1 to date k (as mask.png; 0 no change); band descriptions "YYYY-MM-DD..YYYY-MM-DD"',
        "uint8 transition codes (step, y, x)",
    ),
)

#: Member names in tar order (what ``manifest.json`` lists as ``members``).
SAMPLE_MEMBERS: tuple[str, ...] = tuple(m.name for m in MEMBERS)

#: Member names of a series sample in tar order (the pair members, then the series members).
SERIES_SAMPLE_MEMBERS: tuple[str, ...] = SAMPLE_MEMBERS + tuple(m.name for m in SERIES_MEMBERS)

_BY_NAME: dict[str, Member] = {m.name: m for m in MEMBERS + SERIES_MEMBERS}


def member(name: str) -> Member | None:
    """The table row of a member name (pair or series), or None for a name the table does not know."""
    return _BY_NAME.get(name)


def members_for(mode: str) -> tuple[Member, ...]:
    """The members of a sample of a release mode, in tar order.

    Args:
        mode: ``"pair"`` (:data:`MEMBERS`) or ``"series"`` (:data:`MEMBERS` then
            :data:`SERIES_MEMBERS`).

    Raises:
        ValueError: for any other mode (the message names the modes).
    """
    if mode == "pair":
        return MEMBERS
    if mode == "series":
        return MEMBERS + SERIES_MEMBERS
    raise ValueError(f"unknown release mode {mode!r} (expected one of: {', '.join(MODES)})")


def hf_feature_list(mode: str = "pair") -> list[dict[str, str]]:
    """Hugging Face ``datasets`` features of a shard sample, as the card's YAML lists them.

    ``__key__`` and ``__url__`` strings, then each member of the mode (:func:`members_for`) with
    its codec's dtype (:data:`HF_DTYPES`), in table order.
    """
    keys = [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]
    return keys + [{"name": m.name, "dtype": HF_DTYPES[m.codec]} for m in members_for(mode)]
