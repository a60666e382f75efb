"""Claim checker: is what a caption or an answer says true of the facts?

Independent of :mod:`geodelta.annotators.template`: every answer is re-derived from the
:class:`~geodelta.schemas.ChangeFacts` (by the ``check`` of its QA type, through
:data:`geodelta.annotators.qa.REGISTRY`), and caption numbers are compared with the facts at the
precision they are written with ("1.2 ha" matches 1.15..1.25 ha), so the same checks apply to
captions written by an LLM. Each function returns complaints (human-readable strings); an
empty list means consistent.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

from geodelta.annotators.qa import REGISTRY
from geodelta.annotators.qa.base import has_change
from geodelta.annotators.qa.grounding import BOX_RE, parse_boxes
from geodelta.annotators.vocabulary import (
    NUMBER_WORDS,
    class_label,
    mentioned_classes,
    mentioned_classes_free,
    norm_answer,
)
from geodelta.schemas import ChangeFacts, QAItem
from geodelta.schemas.qa import TEMPORAL_QA_TYPES
from geodelta.schemas.records import POSITION_WORDS, component_box_px, normalised_box

__all__ = [
    "check_captions",
    "check_grounding",
    "check_qa_item",
    "check_text",
    "is_no_change_caption",
    "mentioned_classes",
    "mentioned_classes_free",
    "region_count_mentions",
    "transition_mentions",
]

_POSITIONS = frozenset(POSITION_WORDS)
_WORDS = {w: i for i, w in enumerate(NUMBER_WORDS)}

#: Phrases that say "nothing changed".
_NO_CHANGE_RE = re.compile(
    r"\b(?:no\s+(?:visible\s+|noticeable\s+|apparent\s+|significant\s+|detectable\s+)?"
    r"(?:land[- ]cover\s+)?(?:changes?|differences?)"
    r"|nothing\s+(?:has\s+|have\s+)?changed"
    r"|unchanged"
    r"|(?:remains?|remained|stays?|stayed|looks?|seems?|is|are)\s+(?:the\s+same|identical)"
    r"|(?:show|shows)\s+the\s+same"
    r"|identical)\b",
    re.IGNORECASE,
)
_NUMBER = r"(?<![\w.])(\d+(?:\.\d+)?)"
_HA_RE = re.compile(_NUMBER + r"\s*(?:ha|hectares?)\b", re.IGNORECASE)
_PCT_RE = re.compile(_NUMBER + r"\s*(?:%|per\s*cent|percent)", re.IGNORECASE)
_UNIT_WORDS = {"ha", "hectare", "hectares", "%", "percent", "m2", "km2", "px", "pixels", "of"}
_REGIONS_RE = re.compile(
    r"(?<![\w.])(\d+|" + "|".join(_WORDS) + r")\s+(?:([a-z-]+)\s+)?"
    r"(regions?|patch(?:es)?|areas?|spots?|places?|zones?|sites?|clusters?)\b",
    re.IGNORECASE,
)


def region_count_mentions(text: str) -> list[tuple[int, int]]:
    """(start, end) of each region count a text states ("two regions", "3 patches")."""
    return [
        (m.start(), m.end())
        for m in _REGIONS_RE.finditer(text)
        if (m.group(2) or "").lower() not in _UNIT_WORDS
    ]


def is_no_change_caption(caption: str) -> bool:
    """Whether a caption says that nothing changed."""
    return _NO_CHANGE_RE.search(caption) is not None


def _matches(written: str, candidates: Iterable[float]) -> bool:
    """Whether a number written with some decimals rounds one of the candidate values."""
    decimals = len(written.split(".")[1]) if "." in written else 0
    value = float(written)
    tolerance = 0.5 * 10.0**-decimals + 1e-9 * max(1.0, abs(value))
    return any(abs(c - value) <= tolerance for c in candidates)


def _fmt(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in sorted(set(values))[:6])


# --- QA -----------------------------------------------------------------------------------


def _check_evidence(item: QAItem, facts: ChangeFacts) -> list[str]:
    known: dict[str, float] = {
        "changed_pixels": facts.changed_pixels,
        "valid_pixels": facts.valid_pixels,
        "changed_fraction": facts.changed_fraction,
        "regions": facts.n_regions,
        "n_regions": facts.n_regions,
        "min_region_px": facts.min_region_px,
    }
    out = []
    for name, expected in known.items():
        value = item.evidence.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if abs(float(value) - float(expected)) > 1e-9 * max(1.0, abs(float(expected))):
            out.append(f"{item.type}: evidence {name}={value} but facts have {expected}")
    return out


def check_grounding(item: QAItem, facts: ChangeFacts) -> list[str]:
    """Is the evidence of a QA item grounded, and true of the regions it names?

    Checked: ``region_ids`` is present (a list of ints, ``[]`` when the answer rests on no
    region) and every id is a region of the facts; ``boxes_px``, when given, is exactly the
    pixel-edge box of each of those regions, in order; a transition (``from_class`` /
    ``to_class``), a class (``class``) or a position (``position``) the evidence names is true
    of every region it names (the region's dominant transition is that transition, starts or
    ends in that class, lies in that position); so is a position answer.

    Returns:
        Complaints naming the item's type and the region id; ``[]`` when grounded.
    """
    kind = item.type
    ids = item.evidence.get("region_ids")
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        return [f"{kind}: evidence names no region ids (region_ids={ids!r}): not grounded"]
    regions = {c.id: c for c in facts.components}
    out = [
        f"{kind}: region {i} does not exist (regions: 1..{len(regions)})"
        for i in ids
        if i not in regions
    ]
    known = [regions[i] for i in ids if i in regions]
    boxes = item.evidence.get("boxes_px")
    if boxes is not None:
        expected = [list(component_box_px(regions[i].bbox)) for i in ids if i in regions]
        if boxes != expected:
            out.append(f"{kind}: boxes_px {boxes} but regions {ids} have boxes {expected}")
    src, dst = item.evidence.get("from_class"), item.evidence.get("to_class")
    cls, pos = item.evidence.get("class"), item.evidence.get("position")
    if REGISTRY[kind].answer_kind == "position" and known:
        # a position answer names where one of its regions lies (several on a size tie)
        answer = norm_answer(item.answer)
        if all(c.position != answer for c in known):
            where = ", ".join(f"region {c.id} in the {c.position}" for c in known)
            out.append(f"{kind}: no region of the evidence lies in the {answer} ({where})")
    for c in known:
        if src is not None and dst is not None and (c.from_class, c.to_class) != (src, dst):
            out.append(
                f"{kind}: region {c.id} went {c.from_class} to {c.to_class}, not {src} to {dst}"
            )
        if isinstance(cls, str) and cls not in (c.from_class, c.to_class):
            out.append(f"{kind}: region {c.id} ({c.from_class} to {c.to_class}) involves no {cls}")
        if isinstance(pos, str) and c.position != pos:
            out.append(f"{kind}: region {c.id} lies in the {c.position}, not the {pos}")
    return out


def check_qa_item(item: QAItem, facts: ChangeFacts, *, no_change_epsilon: float = 0.0) -> list[str]:
    """Re-derive the answer of a QA item from the facts.

    Args:
        item: the question-answer pair.
        facts: the facts of the sample.
        no_change_epsilon: changed fractions at or below this read as "no change".

    Returns:
        Complaints such as ``"count_regions: answer 3 but facts have 2 regions"``; ``[]`` when
        the answer (and any evidence field naming a fact) agrees with the facts and the
        evidence is grounded (:func:`check_grounding`). A temporal item (of a sequence
        sample) cannot be checked against pair facts: it gets one complaint saying so; check it
        with :func:`geodelta.annotators.temporal.check_temporal_qa`.
    """
    if item.type in TEMPORAL_QA_TYPES:
        return [
            f"{item.type}: a temporal QA type is checked against the sequence "
            "(annotators.temporal.check_temporal_qa), not against the pair facts"
        ]
    out = _check_evidence(item, facts) + check_grounding(item, facts)
    changed = has_change(facts, no_change_epsilon)
    return out + REGISTRY[item.type].check(item, norm_answer(item.answer), facts, changed)


# --- captions -----------------------------------------------------------------------------


def _area_candidates_ha(facts: ChangeFacts) -> list[float]:
    px = facts.pixel_area_m2 / 10_000.0
    values = [facts.changed_pixels * px]
    values += [t.pixels * px for t in facts.transitions]
    values += [c.pixels * px for c in facts.components]
    for cls in set(facts.class_pixels_before) | set(facts.class_pixels_after):
        before = facts.class_pixels_before.get(cls, 0)
        after = facts.class_pixels_after.get(cls, 0)
        values += [before * px, after * px, abs(after - before) * px]
    return values


def _percent_candidates(facts: ChangeFacts) -> list[float]:
    values = [100.0 * facts.changed_fraction]
    if facts.valid_pixels:
        values += [100.0 * t.pixels / facts.valid_pixels for t in facts.transitions]
        values += [100.0 * c.pixels / facts.valid_pixels for c in facts.components]
    if facts.changed_pixels:
        values += [100.0 * t.pixels / facts.changed_pixels for t in facts.transitions]
        values += [100.0 * c.pixels / facts.changed_pixels for c in facts.components]
    return values


def check_captions(
    captions: Sequence[str],
    facts: ChangeFacts,
    *,
    no_change_epsilon: float = 0.0,
    strict: bool = False,
) -> list[str]:
    """Basic claims of captions against the facts.

    Checked: a caption says "no change" iff the tile has no change; every class it names is
    the from- or to-class of a transition in the facts (none for binary labels); numbers
    followed by "ha", "%" or "region(s)" (also "patches", "areas", ...; counts as digits or
    words) match an area, a share or the region count of the facts at the precision written.

    Args:
        captions: the captions of one sample.
        facts: the facts of the sample.
        no_change_epsilon: changed fractions at or below this read as "no change".
        strict: also apply :func:`check_text` to each caption (free-form text, e.g. from an
            LLM): every number, class name (synonyms too), direction and location word.

    Returns:
        Complaints, each starting with the caption's index; ``[]`` when all claims hold.
    """
    if strict:
        out = check_captions(captions, facts, no_change_epsilon=no_change_epsilon)
        for i, caption in enumerate(captions):
            out += [f"caption {i}: {m}" for m in check_text(caption, facts, role="claim")]
        return list(dict.fromkeys(out))
    changed = has_change(facts, no_change_epsilon)
    allowed = (
        set()
        if facts.binary
        else {c for t in facts.transitions for c in (t.from_class, t.to_class)}
    )
    areas = _area_candidates_ha(facts)
    shares = _percent_candidates(facts)
    out = []
    for i, caption in enumerate(captions):
        says_none = is_no_change_caption(caption)
        if changed and says_none:
            out.append(f"caption {i}: says 'no change' but {facts.changed_pixels} pixels changed")
        elif not changed and not says_none:
            out.append(f"caption {i}: the tile has no change but the caption does not say so")
        extra = mentioned_classes(caption) - allowed
        if extra:
            out.append(
                f"caption {i}: names {', '.join(sorted(extra))}, not part of any transition "
                f"({', '.join(sorted(allowed)) or 'binary label: no classes'})"
            )
        for m in _HA_RE.finditer(caption):
            if not _matches(m.group(1), areas):
                out.append(
                    f"caption {i}: {m.group(0)!r} matches no area of the facts (ha: {_fmt(areas)})"
                )
        for m in _PCT_RE.finditer(caption):
            if not _matches(m.group(1), shares):
                out.append(
                    f"caption {i}: {m.group(0)!r} matches no share of the facts (%: {_fmt(shares)})"
                )
        for m in _REGIONS_RE.finditer(caption):
            between = (m.group(2) or "").lower()
            if between in _UNIT_WORDS:
                continue
            word = m.group(1).lower()
            n = int(word) if word.isdigit() else _WORDS[word]
            if n != facts.n_regions:
                out.append(f"caption {i}: {m.group(0)!r} but facts have {facts.n_regions} regions")
    return out


# --- free-form text (LLM captions, questions and answers) ---------------------------------

#: Position words (and their spellings) -> the 3x3 grid position they name.
_POSITION_WORDS: dict[str, str] = {}
for _p in sorted(_POSITIONS):
    _POSITION_WORDS[_p] = _p
    if "-" in _p:
        a, b = _p.split("-")
        _POSITION_WORDS[f"{a}{b}"] = _p
        _POSITION_WORDS[f"{a} {b}"] = _p
        _POSITION_WORDS[f"{a}-{b}ern"] = _p
        _POSITION_WORDS[f"{a}{b}ern"] = _p
    elif _p != "centre":
        _POSITION_WORDS[f"{_p}ern"] = _p
_POSITION_WORDS.update({"center": "centre", "central": "centre", "middle": "centre"})
_POSITION_RE = re.compile(
    r"(?<![\w-])("
    + "|".join(re.escape(w) for w in sorted(_POSITION_WORDS, key=len, reverse=True))
    + r")(?![\w-])",
    re.IGNORECASE,
)

_NUM_RE = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\w])")
_UNITS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("%", re.compile(r"\s*(?:%|per\s*cent\b|percent\b)", re.IGNORECASE)),
    ("ha", re.compile(r"\s*(?:ha|hectares?)\b", re.IGNORECASE)),
    ("km2", re.compile(r"\s*(?:km2|km²|sq\.?\s*km|square\s+kilomet(?:er|re)s?)", re.IGNORECASE)),
    ("m2", re.compile(r"\s*(?:m2|m²|sq\.?\s*m\b|square\s+met(?:er|re)s?)", re.IGNORECASE)),
    ("px", re.compile(r"\s*(?:pixels?|px)\b", re.IGNORECASE)),
    (
        "regions",
        re.compile(
            r"\s+(?:[a-z-]+\s+)?(?:regions?|patch(?:es)?|areas?|spots?|places?|zones?|sites?"
            r"|clusters?|parts?)\b",
            re.IGNORECASE,
        ),
    ),
    ("two", re.compile(r"\s+(?:images|dates|acquisitions|scenes|times)\b", re.IGNORECASE)),
)

_UP_NET = (
    r"increased|increases|increasing|grew|grown|grows|growing|expanded|expands|expanding|"
    r"rose|risen|rises|spread|extended"
)
_DOWN_NET = (
    r"decreased|decreases|decreasing|shrank|shrunk|shrinks|shrinking|declined|declines|"
    r"declining|contracted|receded|diminished|dropped|fell"
)
_UP_GROSS = r"gained|appeared|appears|emerged|emerges|came up|was built|were built|was added"
_DOWN_GROSS = (
    r"lost|loses|losing|disappeared|disappears|vanished|was cleared|were cleared|"
    r"was removed|were removed|was replaced|were replaced|being replaced|gave way|giving way|"
    r"ceded|gave up"
)
_UP_NOUN_NET = r"increase|growth|expansion|rise|more"
_DOWN_NOUN_NET = r"decrease|decline|reduction|shrinkage|shrinking|less|fewer"
_UP_NOUN_GROSS = r"new|additional|gain|emergence"
_DOWN_NOUN_GROSS = r"loss|removal|disappearance|clearing"
_TRANSITION_VERBS = re.compile(
    r"\b(?:became|become|becomes|becoming|turned|turning|turns|converted|converting|changed|"
    r"changing|changes|gave\s+way|giving\s+way|replaced|lost|ceded|gave\s+up|went|going|"
    r"transformed|transitioned|shifted)\b",
    re.IGNORECASE,
)


_BECAME_RE = re.compile(
    r"\s+(?:has\s+|have\s+|had\s+|partly\s+|mostly\s+|largely\s+)*"
    r"(?:become|became|becomes|becoming|turned|turning|converted|changing|changed)\s+"
    r"(?:the\s+|some\s+|an?\s+)?",
    re.IGNORECASE,
)


_LAST_QUANTITIES: list[tuple[ChangeFacts, dict[str, list[float]], list[float]]] = []


def _quantities_of(facts: ChangeFacts) -> tuple[dict[str, list[float]], list[float]]:
    """:func:`_quantities` and their union, memoised for the last facts seen.

    One sample's captions and questions are checked one after the other, so the quantities of
    the same facts are needed many times in a row.
    """
    last = _LAST_QUANTITIES[-1] if _LAST_QUANTITIES else None
    if last is not None and last[0] is facts:
        return last[1], last[2]
    quantities = _quantities(facts)
    bare = sorted({v for k, vs in quantities.items() if k != "two" for v in vs})
    _LAST_QUANTITIES[:] = [(facts, quantities, bare)]
    return quantities, bare


def _quantities(facts: ChangeFacts) -> dict[str, list[float]]:
    """Every quantity a text may state, per unit."""
    px_counts = [float(facts.changed_pixels), float(facts.valid_pixels)]
    px_counts += [float(t.pixels) for t in facts.transitions]
    px_counts += [float(c.pixels) for c in facts.components]
    for cls in set(facts.class_pixels_before) | set(facts.class_pixels_after):
        before = facts.class_pixels_before.get(cls, 0)
        after = facts.class_pixels_after.get(cls, 0)
        px_counts += [float(before), float(after), float(abs(after - before))]
    m2 = [v * facts.pixel_area_m2 for v in px_counts]
    return {
        "%": _percent_candidates(facts),
        "ha": [v / 10_000.0 for v in m2],
        "km2": [v / 1_000_000.0 for v in m2],
        "m2": m2,
        "px": px_counts,
        "regions": [float(facts.n_regions)],
        "two": [2.0],
    }


def _check_numbers(text: str, facts: ChangeFacts) -> list[str]:
    out = []
    quantities, bare = _quantities_of(facts)
    for m in _NUM_RE.finditer(text):
        written = m.group(1).replace(",", "")
        rest = text[m.end() :]
        unit, suffix = None, ""
        for name, rx in _UNITS:
            um = rx.match(rest)
            if um is not None:
                unit, suffix = name, um.group(0)
                break
        if unit is None:
            if not _matches(written, bare):
                out.append(f"the number {m.group(1)} matches no quantity of the facts")
        elif not _matches(written, quantities[unit]):
            label = {"two": "count of images", "regions": "region count"}.get(unit, unit)
            out.append(
                f"{(m.group(1) + suffix).strip()!r}: {m.group(1)} matches no {label} of the "
                f"facts ({unit}: {_fmt(quantities[unit])})"
            )
    for m in _REGIONS_RE.finditer(text):
        word = m.group(1).lower()
        if word.isdigit() or (m.group(2) or "").lower() in _UNIT_WORDS:
            continue  # digits were checked above
        if _WORDS[word] != facts.n_regions:
            out.append(f"{m.group(0)!r} but the facts have {facts.n_regions} regions")
    return out


def _direction_claims(text: str) -> list[tuple[str, str, bool]]:
    """(class, 'up'|'down', net) claims: "tree cover decreased", "new built-up area", ..."""
    claims: list[tuple[str, str, bool]] = []
    for cls, start, end in mentioned_classes_free(text):
        after = text[end:]
        # "<class> [has|have|was ...] [adverb] <verb>" with no comma or other class between
        m = re.match(
            r"\s+(?:(?:has|have|had|was|were|is|are|also|then|clearly|slightly|strongly|"
            r"significantly|markedly|notably|sharply|mostly|partly|\w+ly)\s+){0,3}(\w+(?:\s+\w+)?)",
            after,
            re.IGNORECASE,
        )
        if m is not None:
            words = m.group(1).lower()
            first = words.split()[0]
            for rx, direction, net in (
                (_UP_NET, "up", True),
                (_DOWN_NET, "down", True),
                (_UP_GROSS, "up", False),
                (_DOWN_GROSS, "down", False),
            ):
                if re.fullmatch(rx, words) or re.fullmatch(rx, first):
                    claims.append((cls, direction, net))
                    break
        before = text[:start].lower()
        m = re.search(r"(\w+)\s+(?:(?:of|in)\s+)?(?:the\s+)?(?:\w+\s+)?$", before)
        if m is not None and not re.search(r"[,;.]", before[m.start() :]):
            word = m.group(1)
            for rx, direction, net in (
                (_UP_NOUN_NET, "up", True),
                (_DOWN_NOUN_NET, "down", True),
                (_UP_NOUN_GROSS, "up", False),
                (_DOWN_NOUN_GROSS, "down", False),
            ):
                if re.fullmatch(rx, word):
                    claims.append((cls, direction, net))
                    break
    return claims


def transition_mentions(text: str) -> list[tuple[str, str, int, int]]:
    """(from, to, start, end) of each transition a text states: "tree cover became built-up
    area", "from A to B", "A to B"; ``text[start:end]`` runs from the first class to the second.
    """
    mentions = mentioned_classes_free(text)
    out = []
    for (a, a_start, a_end), (b, b_start, b_end) in itertools.pairwise(mentions):
        gap = text[a_end:b_start]
        if re.search(r"[,;.()]", gap) or len(gap.split()) > 8:
            continue
        if _BECAME_RE.fullmatch(gap):
            if a != b:
                out.append((a, b, a_start, b_end))
            continue
        if not re.search(r"\b(?:to|into|by)\s+(?:the\s+|some\s+|an?\s+)?$", gap, re.IGNORECASE):
            continue
        if a != b and (gap.strip().lower() in ("to", "into") or _TRANSITION_VERBS.search(gap)):
            out.append((a, b, a_start, b_end))
    return out


def _transition_claims(text: str) -> list[tuple[str, str]]:
    """(from, to) claims: "tree cover became built-up area", "from A to B", "A to B"."""
    return [(a, b) for a, b, _, _ in transition_mentions(text)]


def check_text(text: str, facts: ChangeFacts, *, role: str = "claim") -> list[str]:
    """Every checkable statement of one free-form text against the facts.

    Checked: every number (with its unit: %, ha, km², m², pixels, regions; a bare number must
    equal some quantity of the facts at the precision written); every class named, also by a
    synonym ("forest", "urban", ...), must be part of the facts (of a transition, for a
    ``claim``); every increase/decrease said of a class must match its pixel counts (net words
    such as "increased" against the totals, gross words such as "new" or "lost" against the
    transitions); every "A became B" must be a transition; every location word must be the
    position of a changed region; every box ``[x0, y0, x1, y1]`` (0..1000) must be the
    normalised box of a region.

    Args:
        text: a caption, or a question (``role="question"``: directions are not claims there).
        facts: the facts of the sample.
        role: ``"claim"`` (captions, answers) or ``"question"``.

    Returns:
        Complaints; ``[]`` when every claim holds.
    """
    out = []
    region_boxes = {normalised_box(component_box_px(c.bbox), facts.shape) for c in facts.components}
    for box in parse_boxes(text):
        if box not in region_boxes:
            out.append(f"the box {list(box)} is the box of no region")
    text = BOX_RE.sub(" ", text)  # box coordinates are no quantities
    out += _check_numbers(text, facts)
    in_transitions = {c for t in facts.transitions for c in (t.from_class, t.to_class)}
    present = (
        in_transitions
        | {c for c, n in facts.class_pixels_before.items() if n}
        | {c for c, n in facts.class_pixels_after.items() if n}
    )
    allowed = set() if facts.binary else (in_transitions if role == "claim" else present)
    for cls in dict.fromkeys(c for c, _, _ in mentioned_classes_free(text)):
        if cls not in allowed:
            out.append(
                f"names {class_label(cls)}, which is not "
                + ("part of any transition" if role == "claim" else "in the tile")
                + f" (allowed: {', '.join(sorted(class_label(c) for c in allowed)) or 'none'})"
            )
    positions = {c.position for c in facts.components}
    for m in _POSITION_RE.finditer(text):
        pos = _POSITION_WORDS[m.group(1).lower()]
        if pos not in positions:
            out.append(
                f"location {m.group(1)!r} but changed regions lie in "
                f"{', '.join(sorted(positions)) or 'no part of the tile'}"
            )
    if role != "claim" or facts.binary:
        return out
    gains = {t.to_class for t in facts.transitions}
    losses = {t.from_class for t in facts.transitions}
    for cls, direction, net in _direction_claims(text):
        before = facts.class_pixels_before.get(cls, 0)
        after = facts.class_pixels_after.get(cls, 0)
        if direction == "up":
            ok = after > before if net else (cls in gains or after > before)
        else:
            ok = after < before if net else (cls in losses or after < before)
        if not ok:
            word = "increase" if direction == "up" else "decrease"
            out.append(
                f"says {class_label(cls)} {'' if net else 'locally '}{word}d but it went from "
                f"{before} to {after} pixels"
                + ("" if net else f" and {'gained' if direction == 'up' else 'lost'} no area")
            )
    pairs = {(t.from_class, t.to_class) for t in facts.transitions}
    for a, b in _transition_claims(text):
        if (a, b) not in pairs:
            out.append(
                f"says {class_label(a)} became {class_label(b)}, which is no transition of the facts"
            )
    return list(dict.fromkeys(out))
