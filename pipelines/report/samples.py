"""The samples the page shows: the gallery and the review list's cards, as plain data.

The gallery shows before/after/mask, captions and QA of the WORST samples by validation score,
then of a deterministic pick of the others (smallest sha256 of the key). Masks are coloured for
viewing (:func:`mask_preview`: the class a pixel changed to) and carry their colour legend
(:func:`mask_legend`); the review list adds the reference model's own mask
(:func:`predicted_preview`, :func:`predicted_legend`). Every image is embedded as PNG bytes.
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
from geodelta.schemas.classes import BINARY_CHANGE, CLASS_LABELS, CLASSES, N_CLASSES, NO_CHANGE

__all__ = [
    "PREDICTED_RGB",
    "REVIEW_THUMBNAILS",
    "SampleCard",
    "gallery_keys",
    "gallery_section",
    "mask_legend",
    "mask_preview",
    "predicted_legend",
    "predicted_preview",
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


#: Colour of the pixels the reference model calls changed in its predicted mask.
PREDICTED_RGB: tuple[int, int, int] = (255, 0, 255)


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _codes(mask_png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(mask_png)) as img:
        return np.asarray(img.convert("L"), dtype=np.int32)


def mask_legend(mask_png: bytes) -> tuple[tuple[str, str], ...]:
    """The legend of :func:`mask_preview`: ``(#rrggbb, label)`` of each colour the mask shows.

    Black is "no change"; a changed pixel has the colour of the class it changed TO (the
    transition-coded ``mask.png`` of :mod:`geodelta.schemas.classes`), labelled ``→ class``;
    white is a change between unknown classes (code 255, e.g. OSCD's binary labels).
    """
    codes = _codes(mask_png)
    present = set(np.unique(codes).tolist())
    items: list[tuple[str, str]] = []
    if NO_CHANGE in present:
        items.append((_hex((0, 0, 0)), "no change"))
    to_classes = sorted({(c - 1) % N_CLASSES for c in present if 1 <= c <= N_CLASSES * N_CLASSES})
    items += [(_hex(_TO_CLASS_RGB[i]), f"→ {CLASS_LABELS[CLASSES[i + 1]]}") for i in to_classes]
    if BINARY_CHANGE in present:
        items.append((_hex((255, 255, 255)), "change (classes unknown)"))
    return tuple(items)


def predicted_preview(changed: np.ndarray) -> bytes:
    """The reference model's change mask for viewing: magenta = changed, black = not."""
    rgb = np.zeros((*changed.shape, 3), dtype=np.uint8)
    rgb[np.asarray(changed, dtype=bool)] = PREDICTED_RGB
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def predicted_legend(changed: np.ndarray) -> tuple[tuple[str, str], ...]:
    """The legend of :func:`predicted_preview` (the colours it shows)."""
    c = np.asarray(changed, dtype=bool)
    items = [(_hex((0, 0, 0)), "no change")] if (~c).any() else []
    if c.any():
        items.append((_hex(PREDICTED_RGB), "change (model)"))
    return tuple(items)


def mask_preview(mask_png: bytes) -> bytes:
    """Colour a mask for viewing: black = no change, class colour of the new class, white = 255
    (:func:`mask_legend` names the colours)."""
    codes = _codes(mask_png)
    rgb = np.zeros((*codes.shape, 3), dtype=np.uint8)
    known = (codes >= 1) & (codes <= N_CLASSES * N_CLASSES)
    to_idx = (codes - 1) % N_CLASSES
    palette = np.array(_TO_CLASS_RGB, dtype=np.uint8)
    rgb[known] = palette[to_idx[known]]
    rgb[codes == BINARY_CHANGE] = (255, 255, 255)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


#: Outline colour of the region boxes drawn on the gallery's after image.
BOX_RGB = (255, 230, 0)


def boxed_after(after_png: bytes, regions: Sequence[dict[str, Any]]) -> bytes:
    """The after image with each change region's pixel box outlined and its id written at the
    box's top-left corner (``bbox_px`` = ``[x0, y0, x1, y1]``, x1/y1 exclusive)."""
    from PIL import ImageDraw, ImageFont

    img = Image.open(io.BytesIO(after_png)).convert("RGB")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for r in regions:
        x0, y0, x1, y1 = (int(v) for v in r["bbox_px"])
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=BOX_RGB, width=1)
        draw.text((x0 + 1, y0 + 1), str(r["id"]), fill=BOX_RGB, font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _images(
    members: dict[str, bytes], mask_label: str, regions: Sequence[dict[str, Any]] = ()
) -> list[Plot]:
    """before, after and the coloured mask of a sample, those it has; the alt is the label.
    With ``regions``, the after image shows their boxes and ids."""
    out = []
    for name, label in (("before.png", "before"), ("after.png", "after"), ("mask.png", mask_label)):
        if name in members:
            if name == "mask.png":
                out.append(Plot(mask_preview(members[name]), label, mask_legend(members[name])))
            elif name == "after.png" and regions:
                boxed = boxed_after(members[name], regions)
                out.append(Plot(boxed, f"after, {len(regions)} change region(s) boxed with ids"))
            else:
                out.append(Plot(members[name], label))
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
        images=tuple(_images(members, "change", meta.get("regions") or ())),
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


def review_data(
    rel: Release,
    review: Sequence[str],
    definition: str,
    predicted: dict[str, np.ndarray] | None = None,
    predicted_note: str = "",
) -> dict[str, Any]:
    """The samples to review first: a table of the list, thumbnails of its head.

    Args:
        rel: the release (its ``kept`` members hold the head of the list).
        review: the keys, highest disagreement first.
        definition: how disagreement is computed.
        predicted: key -> the reference model's (H, W) boolean change mask, shown after the
            label; a key without one shows none.
        predicted_note: why there are no predicted masks ('' when there are).
    """
    predicted = predicted or {}
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
            "images": _images(rel.kept[k], "label")
            + (
                [Plot(predicted_preview(predicted[k]), "model", predicted_legend(predicted[k]))]
                if k in predicted
                else []
            ),
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
        "predicted_note": predicted_note,
    }
