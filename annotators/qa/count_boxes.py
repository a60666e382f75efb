"""QA type ``count_boxes`` (counting with boxes): how many regions changed, and where?

Asked on changed tiles; answered '<n>: ' then the normalised 0..1000 box of every region, in
region-id order, separated by ", " ("2: [120, 40, 380, 290], [600, 700, 720, 810]").
"""

from __future__ import annotations

import re

from geodelta.annotators.qa.base import Evidence, QASpec, ask_fixed, facts_only, has_change
from geodelta.annotators.qa.grounding import all_ids, box_of, boxes_text, grounding, parse_boxes
from geodelta.annotators.qa.refer_change import boxes_only
from geodelta.schemas import ChangeFacts, QAItem

NAME = "count_boxes"
QUESTIONS = (
    "How many regions changed? Give the box of each.",
    "Count the changed areas and locate each of them.",
    "How many separate changes are there, and where are they?",
)
_ANSWER_RE = re.compile(r"(\d+)\s*:\s*(.+)")


def applies(facts: ChangeFacts, no_change_epsilon: float) -> bool:
    """A changed tile."""
    return has_change(facts, no_change_epsilon)


def _answer(facts: ChangeFacts, no_change_epsilon: float) -> str:
    return f"{facts.n_regions}: {boxes_text(facts, all_ids(facts))}"


def _evidence(facts: ChangeFacts) -> Evidence:
    """The region count and every region with its box."""
    return {"regions": facts.n_regions, **grounding(facts, all_ids(facts), boxes=True)}


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """The number of regions, then the box of each."""
    if not changed:
        return [f"{NAME}: asked about a tile without change"]
    m = _ANSWER_RE.fullmatch(answer)
    if m is None or not boxes_only(m.group(2)):
        return [f"{NAME}: answer {answer!r} is not '<count>: [x0, y0, x1, y1], ...'"]
    out = []
    if int(m.group(1)) != facts.n_regions:
        out.append(f"{NAME}: answer counts {m.group(1)} but facts have {facts.n_regions} regions")
    ids = all_ids(facts)
    if sorted(parse_boxes(m.group(2))) != sorted(box_of(facts, i) for i in ids):
        out.append(
            f"{NAME}: answer boxes {m.group(2)!r} but the regions' boxes are "
            f"{boxes_text(facts, ids)}"
        )
    if item.evidence.get("region_ids") != ids:
        out.append(
            f"{NAME}: evidence regions {item.evidence.get('region_ids')} but facts have {ids}"
        )
    return out


SPEC = QASpec(
    name=NAME,
    answer_format="'<number of regions>: ' then the box of every region as [x0, y0, x1, y1] "
    "integers 0-1000 (regions_detail 'box'), separated by ', '",
    applies=applies,
    ask=ask_fixed(NAME, QUESTIONS, _answer, _evidence),
    evidence=facts_only(_evidence),
    check=check,
)
