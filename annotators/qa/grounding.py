"""Grounding helpers shared by the QA types: region ids, boxes, and reading them back from text.

A QA item is *grounded* when its evidence names the regions it rests on: ``region_ids`` (the
values of ``regions.png`` and the ids of the facts' components; ``[]`` when the answer rests on
no region, e.g. "no change") and, for the types that answer or ask with boxes, ``boxes_px``
(the pixel-edge boxes ``[x0, y0, x1, y1]`` of those regions, in the same order).

Boxes written in questions and answers are normalised integers ``[x0, y0, x1, y1]`` in 0..1000
(:func:`geodelta.schemas.records.normalised_box`); several boxes are written one after the
other, separated by ", ", in region-id order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from geodelta.schemas import ChangeComponent, ChangeFacts
from geodelta.schemas.records import (
    POSITION_WORDS,
    Evidence,
    component_box_px,
    format_box,
    normalised_box,
)

__all__ = [
    "BOX_RE",
    "all_ids",
    "box_of",
    "boxes_text",
    "by_id",
    "grounding",
    "ids_where",
    "parse_boxes",
    "parse_ids",
    "position_in",
    "position_spans",
]

#: A normalised box as written: ``[x0, y0, x1, y1]`` (integers, optional spaces).
BOX_RE = re.compile(r"\[\s*(\d{1,4})\s*,\s*(\d{1,4})\s*,\s*(\d{1,4})\s*,\s*(\d{1,4})\s*\]")

_POSITION_SPELLINGS: dict[str, str] = {w: w for w in POSITION_WORDS}
_POSITION_SPELLINGS.update({"center": "centre", "central": "centre", "middle": "centre"})
for _w in POSITION_WORDS:
    if "-" in _w:
        _POSITION_SPELLINGS[_w.replace("-", " ")] = _w
        _POSITION_SPELLINGS[_w.replace("-", "")] = _w
_POSITION_RE = re.compile(
    r"(?<![\w-])("
    + "|".join(re.escape(w) for w in sorted(_POSITION_SPELLINGS, key=len, reverse=True))
    + r")(?![\w-])",
    re.IGNORECASE,
)


def by_id(facts: ChangeFacts) -> dict[int, ChangeComponent]:
    """Region id -> component."""
    return {c.id: c for c in facts.components}


def all_ids(facts: ChangeFacts) -> list[int]:
    """Every region id, ascending."""
    return sorted(c.id for c in facts.components)


def ids_where(facts: ChangeFacts, keep: Callable[[ChangeComponent], bool]) -> list[int]:
    """The ids of the regions ``keep`` accepts, ascending."""
    return sorted(c.id for c in facts.components if keep(c))


def box_of(facts: ChangeFacts, region_id: int) -> tuple[int, int, int, int]:
    """The normalised box (0..1000) of one region."""
    return normalised_box(component_box_px(by_id(facts)[region_id].bbox), facts.shape)


def boxes_text(facts: ChangeFacts, ids: Iterable[int]) -> str:
    """The normalised boxes of some regions as written in an answer: ``[..], [..]``."""
    return ", ".join(format_box(box_of(facts, i)) for i in ids)


def grounding(
    facts: ChangeFacts, ids: Iterable[int], *, boxes: bool = False
) -> dict[str, Evidence]:
    """The evidence fields naming the regions an answer rests on.

    Args:
        facts: the facts of the sample.
        ids: the region ids.
        boxes: also give their pixel-edge boxes (``boxes_px``).
    """
    ids = sorted(ids)
    out: dict[str, Evidence] = {"region_ids": list(ids)}
    if boxes:
        comps = by_id(facts)
        out["boxes_px"] = [list(component_box_px(comps[i].bbox)) for i in ids]
    return out


def parse_boxes(text: str) -> list[tuple[int, int, int, int]]:
    """Every normalised box written in a text, in order."""
    return [(int(a), int(b), int(c), int(d)) for a, b, c, d in BOX_RE.findall(text)]


def parse_ids(text: str) -> list[int] | None:
    """Region ids written as digits separated by commas ('1, 3'); None when it is not that."""
    parts = [p.strip() for p in text.replace(" and ", ",").split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        return None
    return [int(p) for p in parts]


def position_in(text: str) -> list[str]:
    """The position words a text names (3x3 grid words, 'center'/'middle' -> 'centre')."""
    return list(dict.fromkeys(_POSITION_SPELLINGS[m.lower()] for m in _POSITION_RE.findall(text)))


def position_spans(text: str) -> list[tuple[str, int, int]]:
    """(position word, start, end) of each position a text names."""
    return [
        (_POSITION_SPELLINGS[m.group(1).lower()], m.start(), m.end())
        for m in _POSITION_RE.finditer(text)
    ]
