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
    "SAMPLE_MEMBERS",
    "Codec",
    "Member",
    "hf_feature_list",
    "member",
]

#: How a member's bytes are encoded.
Codec = Literal["geotiff", "png-rgb", "png-index", "png-instance", "json"]

#: Every codec, in the order the decoders are documented.
CODECS: tuple[Codec, ...] = ("geotiff", "png-rgb", "png-index", "png-instance", "json")

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
}


@dataclass(frozen=True)
class Member:
    """One member of a sample.

    Attributes:
        name: the member name, the tar member's suffix after ``<key>.`` (``before.tif``).
        codec: how the bytes are encoded: ``geotiff`` (uint16 multiband GeoTIFF), ``png-rgb``
            (8-bit RGB PNG), ``png-index`` (8-bit single-band PNG of class indexes),
            ``png-instance`` (16-bit single-band PNG of instance ids) or ``json`` (UTF-8 JSON).
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

#: Member names in tar order (what ``manifest.json`` lists as ``members``).
SAMPLE_MEMBERS: tuple[str, ...] = tuple(m.name for m in MEMBERS)

_BY_NAME: dict[str, Member] = {m.name: m for m in MEMBERS}


def member(name: str) -> Member | None:
    """The table row of a member name, or None for a name the table does not know."""
    return _BY_NAME.get(name)


def hf_feature_list() -> list[dict[str, str]]:
    """Hugging Face ``datasets`` features of a shard sample, as the card's YAML lists them.

    ``__key__`` and ``__url__`` strings, then each member with its codec's dtype
    (:data:`HF_DTYPES`), in table order.
    """
    keys = [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]
    return keys + [{"name": m.name, "dtype": HF_DTYPES[m.codec]} for m in MEMBERS]
