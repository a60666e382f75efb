"""The independent checker of temporal QA and captions: every answer re-derived from the raw
land-cover stack (:mod:`.derive`), never from the facts the annotator was given.

:func:`check_temporal_qa` and :func:`check_temporal_captions` return complaints
(human-readable, naming the type or the caption index); ``[]`` means consistent. A question
names its region by the region's normalised box; the checker finds the region with its own
connected components, so an item whose box frames no region, or several, is rejected.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import date, datetime

import numpy as np

from geodelta.annotators.claims import transition_mentions
from geodelta.annotators.qa.grounding import BOX_RE, parse_boxes
from geodelta.annotators.temporal.captions import CHANGE_VERBS, ISO_DATE_RE, TREND_VERBS
from geodelta.annotators.temporal.derive import DerivedRegion, DerivedSequence, derive_sequence
from geodelta.annotators.vocabulary import (
    NUMBER_WORDS,
    class_label,
    mentioned_classes_free,
    norm_answer,
)
from geodelta.schemas import QAItem
from geodelta.schemas.qa import TEMPORAL_QA_TYPES
from geodelta.schemas.records import format_box

__all__ = ["check_temporal_captions", "check_temporal_qa", "derived_for"]

DateLike = datetime | date | str

_LAST: list[tuple[tuple[object, ...], DerivedSequence]] = []


def derived_for(
    lc: np.ndarray, dates: Sequence[DateLike], *, min_region_px: int
) -> DerivedSequence:
    """:func:`~.derive.derive_sequence`, memoised for the last stack seen (one sample's items
    and captions are checked one after the other)."""
    arr = np.ascontiguousarray(lc)
    key = (
        hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest(),
        arr.shape,
        str(arr.dtype),
        tuple(str(d) for d in dates),
        min_region_px,
    )
    if _LAST and _LAST[0][0] == key:
        return _LAST[0][1]
    seq = derive_sequence(arr, dates, min_region_px=min_region_px)
    _LAST[:] = [(key, seq)]
    return seq


# --- QA -----------------------------------------------------------------------------------


def _regions_of(
    kind: str, question: str, seq: DerivedSequence, count: int
) -> tuple[list[DerivedRegion], list[str]]:
    boxes = parse_boxes(question)
    if len(boxes) != count:
        return [], [f"{kind}: the question gives {len(boxes)} box(es), not {count}"]
    out, problems = [], []
    for box in boxes:
        hits = seq.regions_at(box)
        if len(hits) != 1:
            problems.append(
                f"{kind}: the box {format_box(box)} frames {len(hits)} regions of the sequence, "
                "not one"
            )
        else:
            out.append(hits[0])
    return out, problems


def _evidence_regions(item: QAItem, regions: list[DerivedRegion]) -> list[str]:
    """The evidence's region ids and pixel boxes, when given, are those of the regions asked."""
    out = []
    ids = item.evidence.get("region_ids")
    if ids is not None and ids != [r.id for r in regions]:
        out.append(
            f"{item.type}: evidence regions {ids} but the question's boxes frame regions "
            f"{[r.id for r in regions]}"
        )
    boxes = item.evidence.get("boxes_px")
    if boxes is not None and boxes != [list(r.bbox_px) for r in regions]:
        out.append(
            f"{item.type}: evidence boxes_px {boxes} but the regions have "
            f"{[list(r.bbox_px) for r in regions]}"
        )
    return out


def _evidence_value(item: QAItem, name: str, expected: object) -> list[str]:
    given = item.evidence.get(name)
    if given is not None and given != expected:
        return [f"{item.type}: evidence {name}={given!r} but the sequence gives {expected!r}"]
    return []


def _one_class(item: QAItem, seq: DerivedSequence) -> tuple[str | None, list[str]]:
    named = list(dict.fromkeys(c for c, _, _ in mentioned_classes_free(item.question)))
    if len(named) != 1:
        return None, [
            f"{item.type}: the question must name exactly one class (it names "
            f"{', '.join(class_label(c) for c in named) or 'none'})"
        ]
    cls = named[0]
    given = item.evidence.get("class")
    if given is not None and given != cls:
        return None, [f"{item.type}: evidence names {given} but the question asks about {cls}"]
    if cls not in seq.class_pixels:
        return None, [f"{item.type}: {class_label(cls)} is on no date of the sequence"]
    return cls, []


def _check_when(item: QAItem, answer: str, seq: DerivedSequence) -> list[str]:
    regions, out = _regions_of(item.type, item.question, seq, 1)
    if out:
        return out
    (r,) = regions
    k = r.first_step
    if k is None:
        return [f"when_appeared: the class of region {r.id} never changed"]
    out += _evidence_regions(item, regions)
    out += _evidence_value(item, "step", k)
    named = list(dict.fromkeys(c for c, _, _ in mentioned_classes_free(item.question)))
    if named and named != [r.classes[k - 1], r.classes[k]]:
        out.append(
            f"when_appeared: the question names {', '.join(named)} but region {r.id} first went "
            f"{r.classes[k - 1]} to {r.classes[k]}"
        )
    expected = f"between {seq.dates[k - 1]} and {seq.dates[k]}"
    if answer != expected:
        out.append(f"when_appeared: answer {answer!r} but region {r.id} first changed {expected}")
    return out


def _check_which(item: QAItem, answer: str, seq: DerivedSequence) -> list[str]:
    regions, out = _regions_of(item.type, item.question, seq, 2)
    if out:
        return out
    steps = [r.first_step for r in regions]
    if None in steps:
        return ["which_first: one of the two regions never changed class"]
    if steps[0] == steps[1]:
        return [f"which_first: both regions first changed at step {steps[0]}"]
    out += _evidence_regions(item, regions)
    out += _evidence_value(item, "first_steps", steps)
    first = regions[0] if steps[0] < steps[1] else regions[1]  # type: ignore[operator]
    given = parse_boxes(answer)
    if len(given) != 1 or BOX_RE.sub("", answer).strip() != "" or given[0] != first.box:
        out.append(
            f"which_first: answer {answer!r} but the region that changed first is "
            f"{format_box(first.box)} (step {first.first_step})"
        )
    return out


def _check_count(item: QAItem, answer: str, seq: DerivedSequence) -> list[str]:
    regions, out = _regions_of(item.type, item.question, seq, 1)
    if out:
        return out
    (r,) = regions
    out += _evidence_regions(item, regions)
    out += _evidence_value(item, "changed_steps", list(r.changed_steps))
    if answer != str(len(r.changed_steps)):
        out.append(
            f"change_count: answer {answer!r} but region {r.id} changed class "
            f"{len(r.changed_steps)} time(s) (steps {list(r.changed_steps)})"
        )
    return out


def _check_permanence(item: QAItem, answer: str, seq: DerivedSequence) -> list[str]:
    regions, out = _regions_of(item.type, item.question, seq, 1)
    if out:
        return out
    (r,) = regions
    if not r.changed_steps:
        return [f"permanence: the class of region {r.id} never changed"]
    out += _evidence_regions(item, regions)
    out += _evidence_value(item, "class_first", r.classes[0])
    out += _evidence_value(item, "class_last", r.classes[-1])
    expected = "permanent" if r.persistent else "transient"
    if answer != expected:
        out.append(
            f"permanence: answer {answer!r} but region {r.id} went from {r.classes[0]} to "
            f"{r.classes[-1]} ({expected})"
        )
    return out


def _check_trend(item: QAItem, answer: str, seq: DerivedSequence) -> list[str]:
    cls, out = _one_class(item, seq)
    if cls is None:
        return out
    px = list(seq.class_pixels[cls])
    out += _evidence_value(item, "pixels", px)
    out += _evidence_value(item, "threshold_px", seq.threshold_px)
    expected = seq.trend(cls)
    if answer != expected:
        out.append(
            f"class_trend: answer {answer!r} but {cls} went from {px[0]} to {px[-1]} pixels "
            f"(threshold {seq.threshold_px}: {expected})"
        )
    return out


def _check_max(item: QAItem, answer: str, seq: DerivedSequence) -> list[str]:
    cls, out = _one_class(item, seq)
    if cls is None:
        return out
    top = seq.max_dates(cls)
    px = list(seq.class_pixels[cls])
    out += _evidence_value(item, "pixels", px)
    if len(top) != 1:
        return [*out, f"max_area_date: {cls} is largest on {len(top)} dates (pixels {px})"]
    out += _evidence_value(item, "date_index", top[0])
    if answer != seq.dates[top[0]]:
        out.append(
            f"max_area_date: answer {answer!r} but {cls} is largest on {seq.dates[top[0]]} "
            f"(pixels {px})"
        )
    return out


_CHECKS = {
    "when_appeared": _check_when,
    "which_first": _check_which,
    "change_count": _check_count,
    "permanence": _check_permanence,
    "class_trend": _check_trend,
    "max_area_date": _check_max,
}


def check_temporal_qa(
    item: QAItem, lc: np.ndarray, dates: Sequence[DateLike], *, min_region_px: int
) -> list[str]:
    """Re-derive the answer of a temporal QA item from the land-cover stack.

    Args:
        item: a QA item of a temporal type (``schemas/qa.py`` ``TEMPORAL_QA_TYPES``).
        lc: (T, H, W) uint8 geodelta class index per date, 0 = unknown.
        dates: the T acquisition dates, in order (datetimes, dates or ISO strings).
        min_region_px: smallest region kept (``labels.min_region_px``).

    Returns:
        Complaints such as ``"change_count: answer '1' but region 2 changed class 2 time(s)
        (steps [1, 3])"``; ``[]`` when the answer, and every evidence field given, agrees with
        the stack.
    """
    if item.type not in TEMPORAL_QA_TYPES:
        return [f"{item.type}: not a temporal QA type (check it with claims.check_qa_item)"]
    seq = derived_for(lc, dates, min_region_px=min_region_px)
    return _CHECKS[item.type](item, norm_answer(item.answer), seq)


# --- captions -----------------------------------------------------------------------------

_NUMBER = {w: i for i, w in enumerate(NUMBER_WORDS)}
_D = r"(\d{4}-\d{2}-\d{2})"
_BOX = r"(\[\s*\d{1,4}\s*,\s*\d{1,4}\s*,\s*\d{1,4}\s*,\s*\d{1,4}\s*\])"
_CHANGE_RE = re.compile(
    rf"between {_D} and {_D}, (.+?) ({'|'.join(CHANGE_VERBS)}) (.+?) in the area {_BOX}",
    re.IGNORECASE,
)
_PERM_RE = re.compile(
    rf"the change in the area {_BOX}, first seen between {_D} and {_D}, "
    rf"(still holds on|was reversed by) {_D}",
    re.IGNORECASE,
)
_TREND_WORDS = {v: k for k, vs in TREND_VERBS.items() for v in vs}
_TREND_RE = re.compile(
    rf"from {_D} to {_D}, (.+?) ({'|'.join(sorted(_TREND_WORDS, key=len, reverse=True))})\b",
    re.IGNORECASE,
)
_MAX_RE = re.compile(rf"(?:^|[.;] )(.+?) reached its largest extent on {_D}", re.IGNORECASE)
_BUSY_RE = re.compile(rf"most change happened between {_D} and {_D}", re.IGNORECASE)
_SPAN_RE = re.compile(rf"the sequence has (\w+) acquisitions, from {_D} to {_D}", re.IGNORECASE)
_NONE_RE = re.compile(rf"no region changed between {_D} and {_D}", re.IGNORECASE)
#: Free-text trend words after a class (LLM captions): trend word -> direction.
_FREE_TREND = re.compile(
    r"\s+(?:(?:has|have|had|was|were|is|are|also|clearly|steadily|\w+ly)\s+){0,2}"
    r"(grew|grown|expanded|increased|shrank|shrunk|declined|decreased|contracted|"
    r"stayed stable|remained stable|was stable|stayed the same|remained the same)\b",
    re.IGNORECASE,
)
_FREE_WORD = {
    "grew": "grew",
    "grown": "grew",
    "expanded": "grew",
    "increased": "grew",
    "shrank": "shrank",
    "shrunk": "shrank",
    "declined": "shrank",
    "decreased": "shrank",
    "contracted": "shrank",
}


def _one(text: str) -> str | None:
    named = list(dict.fromkeys(c for c, _, _ in mentioned_classes_free(text)))
    return named[0] if len(named) == 1 else None


def _region(box_text: str, seq: DerivedSequence) -> tuple[DerivedRegion | None, str | None]:
    box = parse_boxes(box_text)[0]
    hits = seq.regions_at(box)
    if len(hits) != 1:
        return None, f"the box {format_box(box)} frames {len(hits)} regions, not one"
    return hits[0], None


def _step_of(d1: str, d2: str, seq: DerivedSequence) -> int | None:
    """The step k whose dates are (d1, d2), if any."""
    for k in range(1, len(seq.dates)):
        if (seq.dates[k - 1], seq.dates[k]) == (d1, d2):
            return k
    return None


def _caption_claims(caption: str, seq: DerivedSequence) -> tuple[list[str], int]:
    """Complaints about the forms :mod:`.captions` writes, and how many forms were read."""
    out: list[str] = []
    forms = 0
    d = seq.dates
    for m in _CHANGE_RE.finditer(caption):
        forms += 1
        d1, d2, a_text, _, b_text, box = m.groups()
        r, why = _region(box, seq)
        a, b = _one(a_text), _one(b_text)
        if r is None:
            out.append(str(why))
            continue
        k = _step_of(d1, d2, seq)
        if k is None or k not in r.changed_steps:
            out.append(
                f"says region {r.id} changed between {d1} and {d2}, but it changed class at "
                f"steps {list(r.changed_steps)} ({', '.join(f'{d[j - 1]}..{d[j]}' for j in r.changed_steps) or 'never'})"
            )
        elif (a, b) != (r.classes[k - 1], r.classes[k]):
            out.append(
                f"says {a_text} became {b_text} in region {r.id} between {d1} and {d2}, but it "
                f"went {class_label(r.classes[k - 1])} to {class_label(r.classes[k])}"
            )
    for m in _PERM_RE.finditer(caption):
        forms += 1
        box, d1, d2, verb, last = m.groups()
        r, why = _region(box, seq)
        if r is None:
            out.append(str(why))
            continue
        k = r.first_step
        if k is None or (d1, d2) != (d[k - 1], d[k]):
            out.append(f"says region {r.id} first changed between {d1} and {d2}; it did not")
        if last != d[-1]:
            out.append(f"names {last} as the last date; the sequence ends {d[-1]}")
        says_kept = verb.lower() == "still holds on"
        if k is not None and says_kept != r.persistent:
            state = "permanent" if r.persistent else "transient"
            out.append(f"says region {r.id}'s change {verb} {last}, but it is {state}")
    for m in _TREND_RE.finditer(caption):
        forms += 1
        d1, d2, cls_text, verb = m.groups()
        cls = _one(cls_text)
        if (d1, d2) != (d[0], d[-1]):
            out.append(f"a trend from {d1} to {d2} is not over the sequence {d[0]}..{d[-1]}")
        if cls is None or cls not in seq.class_pixels:
            out.append(f"the trend names no class of the sequence ({cls_text!r})")
        elif _TREND_WORDS[verb.lower()] != seq.trend(cls):
            out.append(
                f"says {class_label(cls)} {verb}, but its trend is {seq.trend(cls)} "
                f"(pixels {list(seq.class_pixels[cls])}, threshold {seq.threshold_px})"
            )
    for m in _MAX_RE.finditer(caption):
        forms += 1
        cls_text, day = m.groups()
        cls = _one(cls_text)
        top = seq.max_dates(cls) if cls is not None else []
        if len(top) != 1 or d[top[0]] != day:
            out.append(
                f"says {cls_text.strip()} reached its largest extent on {day}, but its largest "
                f"area is on {', '.join(d[i] for i in top) or 'no date'}"
            )
    for m in _BUSY_RE.finditer(caption):
        forms += 1
        k = _step_of(m.group(1), m.group(2), seq)
        counts = list(seq.step_changed)
        most = max(counts)
        if k is None or counts.count(most) != 1 or counts[k - 1] != most:
            out.append(
                f"says most change happened between {m.group(1)} and {m.group(2)}, but the "
                f"steps changed {counts} pixels"
            )
    for m in _SPAN_RE.finditer(caption):
        forms += 1
        word, d1, d2 = m.groups()
        n = int(word) if word.isdigit() else _NUMBER.get(word.lower())
        if n != len(d) or (d1, d2) != (d[0], d[-1]):
            out.append(
                f"says {word} acquisitions from {d1} to {d2}; the sequence has {len(d)}, "
                f"{d[0]} to {d[-1]}"
            )
    for m in _NONE_RE.finditer(caption):
        forms += 1
        if seq.regions:
            out.append(f"says no region changed, but {len(seq.regions)} region(s) did")
        if (m.group(1), m.group(2)) != (d[0], d[-1]):
            out.append(f"says no change from {m.group(1)} to {m.group(2)}, not the whole sequence")
    return out, forms


_INTERVAL_RE = re.compile(rf"(?:between {_D} and {_D}|from {_D} to {_D})", re.IGNORECASE)


def _free_claims(caption: str, seq: DerivedSequence) -> list[str]:
    """The claims of a caption in none of the template's forms (free text, e.g. an LLM's).

    - every interval ("between <d1> and <d2>", "from <d1> to <d2>") runs forwards; with one box
      in the caption, the box's region changed class within it, and a transition the caption
      states ("A became B", "from A to B") is its class at the two dates; without a box, a
      stated transition is that of some region which changed within the interval;
    - without a box and over the whole sequence (or no interval), a trend word said of a class
      ("cropland grew", "water remained stable") is the class's trend.
    """
    out = []
    d = list(seq.dates)
    boxes = parse_boxes(caption)
    intervals = []
    for m in _INTERVAL_RE.finditer(caption):
        x, y = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        if x in d and y in d:  # unknown dates are complained about by the caller
            intervals.append((d.index(x), d.index(y)))
    transitions = [(a, b) for a, b, _, _ in transition_mentions(BOX_RE.sub("it", caption))]
    for i, j in intervals:
        if i >= j:
            out.append(f"the interval {d[i]} .. {d[j]} does not run forwards")
            continue
        if len(boxes) == 1:
            hits = seq.regions_at(boxes[0])
            if len(hits) != 1:
                continue  # no region: said by the caller; several: not a claim about one
            r = hits[0]
            if not any(i < k <= j for k in r.changed_steps):
                out.append(
                    f"says region {r.id} changed between {d[i]} and {d[j]}, but its class "
                    f"changed at steps {list(r.changed_steps)} only"
                )
            elif len(transitions) == 1 and transitions[0] != (r.classes[i], r.classes[j]):
                a, b = transitions[0]
                out.append(
                    f"says {class_label(a)} became {class_label(b)} in region {r.id} between "
                    f"{d[i]} and {d[j]}, but it was {class_label(r.classes[i])} then "
                    f"{class_label(r.classes[j])}"
                )
        elif not boxes and len(transitions) == 1:
            a, b = transitions[0]
            if not any(
                (r.classes[i], r.classes[j]) == (a, b) and any(i < k <= j for k in r.changed_steps)
                for r in seq.regions
            ):
                out.append(
                    f"says {class_label(a)} became {class_label(b)} between {d[i]} and {d[j]}, "
                    "which no region did"
                )
    whole = all((i, j) == (0, len(d) - 1) for i, j in intervals)
    if boxes or not whole:
        return out
    for cls, _, end in mentioned_classes_free(caption):
        said_of = _FREE_TREND.match(caption, end)
        if said_of is None:
            continue
        word = said_of.group(1).lower()
        said = _FREE_WORD.get(word, "stable")
        if cls not in seq.class_pixels:
            out.append(f"names {class_label(cls)}, which is on no date of the sequence")
        elif said != seq.trend(cls):
            out.append(
                f"says {class_label(cls)} {word}, but its trend over the sequence is "
                f"{seq.trend(cls)}"
            )
    return out


def check_temporal_captions(
    captions: Sequence[str],
    lc: np.ndarray,
    dates: Sequence[DateLike],
    *,
    min_region_px: int,
    template: bool = False,
) -> list[str]:
    """Check temporal captions against the land-cover stack.

    Checked: every caption names a date, and every date it names is an acquisition of the
    sequence; every box is the box of exactly one region; every sentence of the forms
    :mod:`.captions` writes is true (the step and classes of a region's change, its
    permanence, a class's trend and largest date, the step with most change, the number and
    span of the acquisitions, "no region changed"); any trend word said of a class ("cropland
    grew", "water remained stable") matches the class's trend.

    Args:
        captions: the temporal captions of one sample (:func:`.captions.is_temporal_caption`).
        lc: (T, H, W) uint8 geodelta class index per date, 0 = unknown.
        dates: the T acquisition dates, in order.
        min_region_px: smallest region kept (``labels.min_region_px``).
        template: the captions come from the template annotator: each must also be one of its
            forms (free text from an LLM need not be).

    Returns:
        Complaints, each starting with the caption's index; ``[]`` when all claims hold.
    """
    seq = derived_for(lc, dates, min_region_px=min_region_px)
    known = set(seq.dates)
    out = []
    for i, caption in enumerate(captions):
        problems = []
        named = ISO_DATE_RE.findall(caption)
        if not named:
            problems.append("names no date YYYY-MM-DD: not a temporal caption")
        problems += [
            f"names {day}, which is no acquisition of the sequence ({', '.join(seq.dates)})"
            for day in dict.fromkeys(named)
            if day not in known
        ]
        problems += [
            f"the box {format_box(b)} is the box of no region of the sequence"
            for b in parse_boxes(caption)
            if not seq.regions_at(b)
        ]
        claims, forms = _caption_claims(caption, seq)
        problems += claims
        if forms == 0:
            problems += _free_claims(caption, seq)
            if template:
                problems.append("is none of the template's temporal forms")
        out += [f"caption {i}: {p}" for p in dict.fromkeys(problems)]
    return out
