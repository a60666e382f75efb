"""Temporal captions of sequence samples: sentences that say *when*, filled from
:class:`~geodelta.schemas.series.SeriesFacts` only.

Every temporal caption names at least one acquisition date, written ISO ``YYYY-MM-DD`` (the UTC
day; years alone would be ambiguous for seasonal or monthly sequences and read as quantities by
the pair checker): that is how a temporal caption is told from a pair caption in
``captions.json`` (:func:`is_temporal_caption`). Regions are named by their normalised box
``[x0, y0, x1, y1]`` (0..1000), only where that box is the box of no other region. The
sentences follow the forms :mod:`.check` reads back:

- ``Between <d1> and <d2>, <a> <became|turned into|was converted to> <b> in the area <box>.``
- ``The change in the area <box>, first seen between <d1> and <d2>, <still holds on|was
  reversed by> <last date>.``
- ``From <first date> to <last date>, <class> <grew|expanded|shrank|declined|stayed stable|
  remained stable>.``
- ``<Class> reached its largest extent on <date>.``
- ``Most change happened between <d1> and <d2>.``
- ``The sequence has <n> acquisitions, from <first date> to <last date>.``
- ``No region changed between <first date> and <last date>.``
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from geodelta.annotators.temporal.derive import iso_day
from geodelta.annotators.temporal.qa import askable_regions
from geodelta.annotators.vocabulary import cap, class_label, pick
from geodelta.schemas.records import format_box
from geodelta.schemas.series import SeriesFacts

__all__ = ["ISO_DATE_RE", "TREND_VERBS", "is_temporal_caption", "temporal_captions"]

#: An ISO date as temporal captions and answers write it.
ISO_DATE_RE = re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2})(?!\d)")
#: The verbs a caption says a trend with, per trend word.
TREND_VERBS: dict[str, tuple[str, ...]] = {
    "grew": ("grew", "expanded"),
    "shrank": ("shrank", "declined"),
    "stable": ("stayed stable", "remained stable"),
}
#: The verbs of a region's change of class.
CHANGE_VERBS: tuple[str, ...] = ("became", "turned into", "was converted to")


def is_temporal_caption(caption: str) -> bool:
    """Whether a caption is temporal: it names a date ``YYYY-MM-DD`` (pair captions never do)."""
    return ISO_DATE_RE.search(caption) is not None


def _days(facts: SeriesFacts) -> list[str]:
    return [iso_day(d) for d in facts.dates]


def _region_change(rng: np.random.Generator, facts: SeriesFacts) -> str | None:
    options = askable_regions(facts, changed=True)
    if not options:
        return None
    r = options[int(rng.integers(len(options)))]
    k = r.changed_steps[int(rng.integers(len(r.changed_steps)))]
    d = _days(facts)
    verb = pick(rng, CHANGE_VERBS)
    return (
        f"Between {d[k - 1]} and {d[k]}, {class_label(r.classes[k - 1])} {verb} "
        f"{class_label(r.classes[k])} in the area {format_box(r.box)}."
    )


def _permanence(rng: np.random.Generator, facts: SeriesFacts) -> str | None:
    options = askable_regions(facts, changed=True)
    if not options:
        return None
    r = options[int(rng.integers(len(options)))]
    d = _days(facts)
    k = r.changed_steps[0]
    end = "still holds on" if r.persistent else "was reversed by"
    return (
        f"The change in the area {format_box(r.box)}, first seen between {d[k - 1]} and {d[k]}, "
        f"{end} {d[-1]}."
    )


def _trend(rng: np.random.Generator, facts: SeriesFacts) -> str | None:
    if not facts.classes:
        return None
    c = facts.classes[int(rng.integers(len(facts.classes)))]
    d = _days(facts)
    verb = pick(rng, TREND_VERBS[c.trend])
    return f"From {d[0]} to {d[-1]}, {class_label(c.class_name)} {verb}."


def _max_area(rng: np.random.Generator, facts: SeriesFacts) -> str | None:
    pool = [c for c in facts.classes if c.pixels.count(max(c.pixels)) == 1]
    if not pool:
        return None
    pool = [c for c in pool if max(c.pixels) >= facts.min_region_px] or pool  # not speckle
    c = pool[int(rng.integers(len(pool)))]
    day = _days(facts)[c.max_index]
    return f"{cap(class_label(c.class_name))} reached its largest extent on {day}."


def _busiest(rng: np.random.Generator, facts: SeriesFacts) -> str | None:
    counts = [s.changed_pixels for s in facts.steps]
    top = max(counts)
    if top == 0 or counts.count(top) != 1:
        return None
    k = counts.index(top) + 1
    d = _days(facts)
    return f"Most change happened between {d[k - 1]} and {d[k]}."


def _span(rng: np.random.Generator, facts: SeriesFacts) -> str | None:
    d = _days(facts)
    return f"The sequence has {len(d)} acquisitions, from {d[0]} to {d[-1]}."


def _none(rng: np.random.Generator, facts: SeriesFacts) -> str | None:
    if facts.regions:
        return None
    d = _days(facts)
    return f"No region changed between {d[0]} and {d[-1]}."


_TEMPLATES: tuple[Callable[[np.random.Generator, SeriesFacts], str | None], ...] = (
    _region_change,
    _permanence,
    _trend,
    _max_area,
    _busiest,
    _span,
    _none,
)


def temporal_captions(rng: np.random.Generator, facts: SeriesFacts, count: int) -> list[str]:
    """Up to ``count`` distinct temporal captions (fewer when the facts do not give more).

    The templates are tried in a seeded order, cycling, until ``count`` distinct sentences are
    found, for at most 8 rounds.
    """
    order = [int(i) for i in rng.permutation(len(_TEMPLATES))]
    out: list[str] = []
    for _ in range(8):
        for i in order:
            sentence = _TEMPLATES[i](rng, facts)
            if sentence is not None and sentence not in out:
                out.append(sentence)
                if len(out) == count:
                    return out
    return out
