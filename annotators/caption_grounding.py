"""Phrase grounding of captions: which phrases of a caption refer to which regions.

Found from the caption text and the facts alone, so it applies to the template's captions and
an LLM's alike (both are fact-checked first, :mod:`geodelta.annotators.claims`):

- a position word ("in the north-west") refers to the regions whose centroid lies there;
- a transition ("tree cover became built-up area", "from A to B") refers to the regions whose
  dominant transition it is (no span when it is the dominant transition of no region);
- a region count ("two regions", "3 patches") refers to every region.

:func:`check_grounded_caption` verifies a grounded caption independently: every span lies in
the text, every region exists, and what the phrase says is true of its regions.
"""

from __future__ import annotations

from collections.abc import Sequence

from geodelta.annotators.claims import region_count_mentions, transition_mentions
from geodelta.annotators.qa.grounding import all_ids, position_spans
from geodelta.schemas import ChangeFacts
from geodelta.schemas.records import CaptionSpan, GroundedCaption

__all__ = ["check_grounded_caption", "ground_caption", "ground_captions"]


def _phrases(text: str, facts: ChangeFacts) -> list[tuple[int, int, list[int]]]:
    out: list[tuple[int, int, list[int]]] = []
    if not facts.components:
        return out
    for pos, start, end in position_spans(text):
        out.append((start, end, sorted(c.id for c in facts.components if c.position == pos)))
    if not facts.binary:
        for a, b, start, end in transition_mentions(text):
            ids = sorted(c.id for c in facts.components if (c.from_class, c.to_class) == (a, b))
            out.append((start, end, ids))
    for start, end in region_count_mentions(text):
        out.append((start, end, all_ids(facts)))
    return out


def ground_caption(text: str, facts: ChangeFacts) -> GroundedCaption:
    """One caption with its region-referring spans (by start, then end)."""
    spans = sorted(
        {(s, e, tuple(ids)) for s, e, ids in _phrases(text, facts) if ids},
        key=lambda t: (t[0], t[1]),
    )
    return GroundedCaption(
        text=text, spans=tuple(CaptionSpan(start=s, end=e, regions=ids) for s, e, ids in spans)
    )


def ground_captions(captions: Sequence[str], facts: ChangeFacts) -> tuple[GroundedCaption, ...]:
    """Every caption of a sample, grounded, in order."""
    return tuple(ground_caption(c, facts) for c in captions)


def check_grounded_caption(caption: GroundedCaption, facts: ChangeFacts) -> list[str]:
    """Is every span of a grounded caption true of the regions it names?

    Returns:
        Complaints naming the span and the region; ``[]`` when every span holds.
    """
    comps = {c.id: c for c in facts.components}
    out = []
    for span in caption.spans:
        phrase = caption.text[span.start : span.end]
        where = f"span {span.start}:{span.end} {phrase!r}"
        if not 0 <= span.start < span.end <= len(caption.text):
            out.append(f"{where}: outside the caption ({len(caption.text)} characters)")
            continue
        missing = [i for i in span.regions if i not in comps]
        if missing:
            out.append(f"{where}: regions {missing} do not exist")
            continue
        positions = {p for p, _, _ in position_spans(phrase)}
        transitions = {(a, b) for a, b, _, _ in transition_mentions(phrase)}
        counts = region_count_mentions(phrase)
        if not (positions or transitions or counts):
            out.append(f"{where}: refers to no position, transition or region count")
        for i in span.regions:
            c = comps[i]
            if positions and c.position not in positions:
                out.append(f"{where}: region {i} lies in the {c.position}")
            if transitions and not facts.binary and (c.from_class, c.to_class) not in transitions:
                out.append(f"{where}: region {i} went {c.from_class} to {c.to_class}")
        if counts and sorted(span.regions) != all_ids(facts):
            out.append(f"{where}: a region count refers to every region")
    return out
