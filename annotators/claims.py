"""Claim checker: is what a caption or an answer says true of the facts?

Independent of :mod:`geodelta.annotators.template`: every answer is re-derived here from the
:class:`~geodelta.schemas.ChangeFacts`, and caption numbers are compared with the facts at the
precision they are written with ("1.2 ha" matches 1.15..1.25 ha), so the same checks apply to
captions written by an LLM. Each function returns complaints (human-readable strings); an
empty list means consistent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from geodelta.schemas import ChangeFacts, QAItem, TransitionStat
from geodelta.schemas.classes import CLASS_LABELS
from geodelta.schemas.records import change_ratio_bin

__all__ = ["check_captions", "check_qa_item", "is_no_change_caption", "mentioned_classes"]

_YES_NO = {"yes", "no"}
_POSITIONS = {
    "north-west",
    "north",
    "north-east",
    "west",
    "centre",
    "east",
    "south-west",
    "south",
    "south-east",
}
_WORDS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}

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


def _label(name: str) -> str:
    return CLASS_LABELS.get(name, name.replace("_", " "))


def _forms(name: str) -> set[str]:
    """Accepted spellings of a class in an answer: its label or its machine name."""
    return {_norm(_label(name)), name, name.replace("_", " ")}


def _changed(facts: ChangeFacts, eps: float) -> bool:
    return facts.n_regions > 0 and facts.changed_fraction > eps


def _norm(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".!").split())


def mentioned_classes(text: str) -> set[str]:
    """Class names whose human label occurs in ``text`` (whole words, case-insensitive)."""
    low = text.lower()
    found = set()
    for name, label in CLASS_LABELS.items():
        if name == "unknown":
            continue
        if re.search(rf"(?<![\w-]){re.escape(label)}(?![\w-])", low):
            found.add(name)
    return found


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


def _class_of(item: QAItem, key: str) -> tuple[str | None, list[str]]:
    """The class a question is about: from the evidence, cross-checked with the question."""
    complaints = []
    in_question = mentioned_classes(item.question)
    named = item.evidence.get(key)
    cls = str(named) if isinstance(named, str) else None
    if cls is not None and cls not in CLASS_LABELS:
        complaints.append(f"{item.type}: evidence {key}={cls!r} is not a class")
        cls = None
    if cls is None:
        if len(in_question) == 1:
            cls = next(iter(in_question))
        else:
            complaints.append(f"{item.type}: cannot tell which class the question is about")
    elif in_question and cls not in in_question:
        complaints.append(
            f"{item.type}: evidence names {cls} but the question asks about "
            f"{', '.join(sorted(in_question))}"
        )
    return cls, complaints


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


def _extreme_transitions(facts: ChangeFacts, *, largest: bool) -> list[TransitionStat]:
    """The transitions with the most (or fewest) pixels; several on a tie."""
    if not facts.transitions:
        return []
    pick = max if largest else min
    target = pick(t.pixels for t in facts.transitions)
    return [t for t in facts.transitions if t.pixels == target]


def _names_transition(answer: str, t: TransitionStat) -> bool:
    return any(answer == f"{a} to {b}" for a in _forms(t.from_class) for b in _forms(t.to_class))


def check_qa_item(item: QAItem, facts: ChangeFacts, *, no_change_epsilon: float = 0.0) -> list[str]:
    """Re-derive the answer of a QA item from the facts.

    Args:
        item: the question-answer pair.
        facts: the facts of the sample.
        no_change_epsilon: changed fractions at or below this read as "no change".

    Returns:
        Complaints such as ``"count_regions: answer 3 but facts have 2 regions"``; ``[]`` when
        the answer (and any evidence field naming a fact) agrees with the facts.
    """
    answer = _norm(item.answer)
    changed = _changed(facts, no_change_epsilon)
    out = _check_evidence(item, facts)
    kind = item.type

    if kind == "has_change":
        expected = "yes" if changed else "no"
        if answer != expected:
            out.append(
                f"has_change: answer {answer!r} but facts say {expected!r} "
                f"(changed_fraction={facts.changed_fraction:.4g}, regions={facts.n_regions})"
            )
    elif kind == "change_ratio":
        expected = change_ratio_bin(facts.changed_fraction)
        if answer != expected:
            out.append(
                f"change_ratio: answer {answer!r} but changed_fraction="
                f"{facts.changed_fraction:.4g} is in bin {expected!r}"
            )
    elif kind == "count_regions":
        if not answer.isdigit() or int(answer) != facts.n_regions:
            out.append(f"count_regions: answer {answer} but facts have {facts.n_regions} regions")
    elif kind in ("class_increase", "class_decrease"):
        if facts.binary:
            out.append(f"{kind}: a binary label has no classes to ask about")
            return out
        cls, problems = _class_of(item, "class")
        out.extend(problems)
        if cls is not None:
            before = facts.class_pixels_before.get(cls, 0)
            after = facts.class_pixels_after.get(cls, 0)
            for name, value in (("pixels_before", before), ("pixels_after", after)):
                given = item.evidence.get(name)
                if given is not None and given != value:
                    out.append(f"{kind}: evidence {name}={given} but facts have {value} for {cls}")
            went = after > before if kind == "class_increase" else after < before
            expected = "yes" if went else "no"
            if answer != expected:
                out.append(
                    f"{kind}: answer {answer!r} but {cls} went from {before} to {after} pixels "
                    f"(expected {expected!r})"
                )
    elif kind in ("largest_change", "smallest_change"):
        if facts.binary:
            out.append(f"{kind}: a binary label has no transitions to name")
        elif not changed:
            out.append(f"{kind}: asked about a tile without change")
        else:
            best = _extreme_transitions(facts, largest=kind == "largest_change")
            if not any(_names_transition(answer, t) for t in best):
                expected = " or ".join(
                    f"{_label(t.from_class)} to {_label(t.to_class)}" for t in best
                )
                out.append(f"{kind}: answer {answer!r} but facts say {expected}")
    elif kind == "change_to_what":
        if facts.binary or not changed:
            out.append("change_to_what: needs a land-cover label with change")
            return out
        src, problems = _class_of(item, "from_class")
        out.extend(problems)
        if src is not None:
            from_src = [t for t in facts.transitions if t.from_class == src]
            if not from_src:
                out.append(f"change_to_what: no transition from {src} in the facts")
            else:
                top = max(t.pixels for t in from_src)
                best_to = [t.to_class for t in from_src if t.pixels == top]
                if not any(answer in _forms(c) for c in best_to):
                    out.append(
                        f"change_to_what: answer {answer!r} but {src} mostly became "
                        f"{' or '.join(_label(c) for c in best_to)}"
                    )
    elif kind == "location":
        if not changed:
            out.append("location: asked about a tile without change")
        else:
            top = max(c.pixels for c in facts.components)
            accepted = {c.position for c in facts.components if c.pixels == top}
            if answer not in _POSITIONS:
                out.append(f"location: answer {answer!r} is not a position word")
            elif answer not in accepted:
                out.append(
                    f"location: answer {answer!r} but the largest region is in the "
                    f"{' or '.join(sorted(accepted))}"
                )
    if kind in ("has_change", "class_increase", "class_decrease") and answer not in _YES_NO:
        out.append(f"{kind}: answer {answer!r} is not 'yes' or 'no'")
    return out


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
    captions: Sequence[str], facts: ChangeFacts, *, no_change_epsilon: float = 0.0
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

    Returns:
        Complaints, each starting with the caption's index; ``[]`` when all claims hold.
    """
    changed = _changed(facts, no_change_epsilon)
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
