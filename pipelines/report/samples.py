"""The samples the page shows: the gallery and the review list's cards, as plain data.

The gallery shows before/after/mask, captions and QA of the WORST samples by validation score,
then of a deterministic pick of the others (smallest sha256 of the key). Masks are coloured for
viewing (:func:`mask_preview`); every image is embedded as PNG bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from geodelta.pipelines.release.layout import SAMPLES_TABLE
from geodelta.pipelines.report.data import Release
from geodelta.pipelines.report.metrics import SampleScore, pct
from geodelta.pipelines.report.sections import Plot, Section, table
from geodelta.schemas.classes import BINARY_CHANGE, N_CLASSES

__all__ = [
    "REVIEW_THUMBNAILS",
    "SampleCard",
    "gallery_keys",
    "gallery_section",
    "mask_preview",
    "review_data",
]

#: Review-list samples shown with their before/after/mask thumbnails (the rest as table rows).
REVIEW_THUMBNAILS = 8

#: Colour of changed pixels in the mask preview, by the class they changed *to* (index 1..11).
_TO_CLASS_RGB: tuple[tuple[int, int, int], ...] = (
    (0, 100, 0),  # tree_cover
    (255, 187, 34),  # shrubland
    (255, 255, 76),  # grassland
    (240, 150, 255),  # cropland
    (250, 0, 0),  # built_up
    (180, 180, 180),  # bare
    (240, 240, 240),  # snow_ice
    (0, 100, 200),  # water
    (0, 150, 160),  # wetland
    (0, 207, 117),  # mangroves
    (250, 230, 160),  # moss_lichen
)


def mask_preview(mask_png: bytes) -> bytes:
    """Colour a mask for viewing: black = no change, class colour of the new class, white = 255."""
    with Image.open(io.BytesIO(mask_png)) as img:
        codes = np.asarray(img.convert("L"), dtype=np.int32)
    rgb = np.zeros((*codes.shape, 3), dtype=np.uint8)
    known = (codes >= 1) & (codes <= N_CLASSES * N_CLASSES)
    to_idx = (codes - 1) % N_CLASSES
    palette = np.array(_TO_CLASS_RGB, dtype=np.uint8)
    rgb[known] = palette[to_idx[known]]
    rgb[codes == BINARY_CHANGE] = (255, 255, 255)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _images(members: dict[str, bytes], mask_label: str) -> list[Plot]:
    """before, after and the coloured mask of a sample, those it has; the alt is the label."""
    out = []
    for name, label in (("before.png", "before"), ("after.png", "after"), ("mask.png", mask_label)):
        if name in members:
            png = mask_preview(members[name]) if name == "mask.png" else members[name]
            out.append(Plot(png, label))
    return out


# --------------------------------------------------------------------------------------------
# Gallery


def _choose(keys: Sequence[str], n: int) -> list[str]:
    """The ``n`` keys with the smallest sha256: deterministic, spread over splits and regions."""
    return sorted(keys, key=lambda k: hashlib.sha256(k.encode()).hexdigest())[: max(n, 0)]


def gallery_keys(
    rows: Sequence[dict[str, Any]], scores: Sequence[SampleScore], max_gallery: int
) -> tuple[list[str], list[str]]:
    """(worst, others): half the gallery (rounded up) by validation score, the rest by sha256."""
    if max_gallery <= 0 or not rows:
        return [], []
    worst = [s.key for s in scores[: (max_gallery + 1) // 2]]
    rest = [str(r["key"]) for r in rows if r["key"] not in set(worst)]
    return worst, _choose(rest, max_gallery - len(worst))


@dataclass(frozen=True)
class SampleCard:
    """One sample of the gallery; ``found`` is false when its shard did not hold it."""

    key: str
    found: bool = True
    split: str = ""
    t0: str = ""
    t1: str = ""
    changed: str = ""
    score: SampleScore | None = None
    clear: tuple[str, str] = ("", "")  # before, after
    valid: tuple[str, str] = ("", "")
    shift: str = ""  # "dy, dx" in pixels
    residual: str = ""
    items: tuple[str, str] = ("", "")  # STAC item ids, before and after
    images: tuple[Plot, ...] = ()
    captions: tuple[str, ...] = ()
    qa: tuple[tuple[str, str, str], ...] = ()  # (question, answer, type)


def _frac(value: Any) -> str:
    return "unknown" if value is None else f"{float(value):.4f}"


def _card(key: str, split: str, members: dict[str, bytes], score: SampleScore | None) -> SampleCard:
    meta = json.loads(members.get("json", b"{}"))
    captions = json.loads(members.get("captions.json", b"[]"))
    qa = json.loads(members.get("qa.json", b"[]"))
    facts = meta.get("facts", {})
    coreg = meta.get("coreg", {})
    return SampleCard(
        key=key,
        split=split,
        t0=str(meta.get("t0", ""))[:10],
        t1=str(meta.get("t1", ""))[:10],
        changed=f"{100.0 * float(facts.get('changed_fraction', 0.0)):.1f}%",
        score=score,
        clear=(_frac(meta.get("before_clear")), _frac(meta.get("after_clear"))),
        valid=(
            f"{float(meta.get('before_valid', 0)):.4f}",
            f"{float(meta.get('after_valid', 0)):.4f}",
        ),
        shift=", ".join(f"{float(v):.2f}" for v in coreg.get("shift_px", ())),
        residual=f"{float(coreg.get('residual_px', 0)):.3f}",
        items=(str(meta.get("before_item", "")), str(meta.get("after_item", ""))),
        images=tuple(_images(members, "change")),
        captions=tuple(str(c) for c in captions),
        qa=tuple(
            (str(q.get("question", "")), str(q.get("answer", "")), str(q.get("type", "")))
            for q in qa
        ),
    )


def gallery_section(
    rel: Release, worst: Sequence[str], others: Sequence[str], scores: Sequence[SampleScore]
) -> Section:
    """The worst samples by validation score, then the deterministic pick of the others."""
    if not worst and not others:
        return Section("gallery", "Samples", empty=True)
    split_of = {str(r["key"]): str(r["split"]) for r in rel.rows}
    score_of = {s.key: s for s in scores}
    groups = []
    for ident, cls, title, keys in (
        ("gallery-worst", "worst", "Worst samples by validation score", worst),
        (
            "gallery-others",
            "others",
            "Other samples (deterministic pick by sha256 of the key)",
            others,
        ),
    ):
        if keys:
            cards = [
                _card(k, split_of[k], rel.kept[k], score_of.get(k))
                if k in rel.kept
                else SampleCard(k, found=False)
                for k in keys
            ]
            groups.append({"ident": ident, "cls": cls, "title": title, "cards": cards})
    return Section("gallery", "Samples", {"groups": groups})


# --------------------------------------------------------------------------------------------
# Review list (part of the reference section)


def review_data(rel: Release, review: Sequence[str], definition: str) -> dict[str, Any]:
    """The samples to review first: a table of the list, thumbnails of its head."""
    if not review:
        return {"listed": False, "samples_table": SAMPLES_TABLE}
    by_key = {str(r["key"]): r for r in rel.rows}
    rows = [
        (
            i + 1,
            k,
            str(by_key[k].get("split", "")),
            f"{float(by_key[k]['disagreement']):.3f}",
            pct(float(by_key[k].get("changed_fraction") or 0.0)),
        )
        for i, k in enumerate(review)
    ]
    cards = [
        {
            "key": k,
            "split": str(by_key[k].get("split", "")),
            "disagreement": f"{float(by_key[k]['disagreement']):.3f}",
            "images": _images(rel.kept[k], "label"),
        }
        for k in review[:REVIEW_THUMBNAILS]
        if k in rel.kept
    ]
    return {
        "listed": True,
        "definition": definition,
        "table": table(
            ["#", "key", "split", "disagreement", "label changed"], rows, numeric=(0, 3, 4)
        ),
        "cards": cards,
    }
