"""QA type ``change_to_what``: what did one class mostly become? Asked on changed land-cover
tiles; answered with the label of a class."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodelta.annotators.qa.base import (
    Evidence,
    QASpec,
    class_of,
    has_change,
    one_named_class,
    qa_item,
    transition_evidence,
)
from geodelta.annotators.vocabulary import class_forms, class_label, pick
from geodelta.schemas import ChangeFacts, QAItem, TransitionStat

if TYPE_CHECKING:
    import numpy as np

NAME = "change_to_what"


def applies(facts: ChangeFacts, no_change_epsilon: float) -> bool:
    """A changed land-cover tile with transitions."""
    return has_change(facts, no_change_epsilon) and not facts.binary and bool(facts.transitions)


def _from(facts: ChangeFacts, src: str) -> list[TransitionStat]:
    """The transitions from ``src``."""
    return [t for t in facts.transitions if t.from_class == src]


def _top(from_src: list[TransitionStat]) -> TransitionStat:
    """The largest of some transitions (the first of several equal ones)."""
    return max(from_src, key=lambda t: t.pixels)


def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
    """The template's question about one from-class, drawn; the class it mostly became."""
    sources = sorted({t.from_class for t in facts.transitions})
    src = sources[int(rng.integers(len(sources)))]
    top = _top(_from(facts, src))
    label = class_label(src)
    question = pick(
        rng,
        (
            f"What did {label} turn into?",
            f"What has most of the changed {label} become?",
            f"Into what was {label} mostly converted?",
        ),
    )
    return qa_item(NAME, question, class_label(top.to_class), transition_evidence(top, facts))


def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
    """The largest transition from the one class the question names."""
    cls, problems = one_named_class(NAME, question)
    if cls is None:
        return {}, problems
    from_cls = _from(facts, cls)
    if not from_cls:
        return {}, [f"change_to_what asks about {class_label(cls)}, which did not change"]
    return transition_evidence(_top(from_cls), facts), []


def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
    """The to-class of the largest transition from the class asked about (any on a tie)."""
    if facts.binary or not changed:
        return ["change_to_what: needs a land-cover label with change"]
    out: list[str] = []
    src, problems = class_of(item, "from_class")
    out.extend(problems)
    if src is not None:
        from_src = _from(facts, src)
        if not from_src:
            out.append(f"change_to_what: no transition from {src} in the facts")
        else:
            top = max(t.pixels for t in from_src)
            best_to = [t.to_class for t in from_src if t.pixels == top]
            if not any(answer in class_forms(c) for c in best_to):
                out.append(
                    f"change_to_what: answer {answer!r} but {src} mostly became "
                    f"{' or '.join(class_label(c) for c in best_to)}"
                )
    return out


SPEC = QASpec(
    name=NAME,
    answer_format="the label of a class; the question names one from-class of the transitions",
    applies=applies,
    ask=ask,
    evidence=evidence,
    check=check,
)
