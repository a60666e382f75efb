"""What every QA type module provides (:class:`QASpec`), and the helpers the types share.

A QA type is one module of :mod:`geodelta.annotators.qa` holding a :class:`QASpec`: when the
type applies to a sample's facts, how the template annotator asks and answers it, how the
evidence of an answer is found from the facts (for answers an LLM wrote), and how the claim
checker re-derives the answer independently. The helpers below are shared by families of
types: a question drawn from a fixed list (:func:`ask_fixed`, :func:`facts_only`), yes/no
answers, and two families whose whole spec is built here from a type's own wordings:
the class-trend questions (:func:`trend_spec`: ``class_increase``, ``class_decrease``) and the
largest/smallest transition questions (:func:`extreme_spec`: ``largest_change``,
``smallest_change``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from geodelta.annotators.qa.grounding import grounding, ids_where
from geodelta.annotators.vocabulary import (
    cap,
    class_forms,
    class_label,
    is_plural,
    mentioned_classes,
    mentioned_classes_free,
    pick,
)
from geodelta.schemas import ChangeFacts, QAItem, TransitionStat
from geodelta.schemas.classes import CLASS_LABELS
from geodelta.schemas.qa import QA_TYPE_SPECS, AnswerKind
from geodelta.schemas.records import Evidence as EvidenceValue

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "AskFn",
    "Evidence",
    "QASpec",
    "TrendQuestions",
    "always",
    "ask_fixed",
    "class_of",
    "extreme_spec",
    "extreme_transition",
    "extreme_transitions",
    "facts_only",
    "has_change",
    "names_transition",
    "one_named_class",
    "one_of",
    "qa_item",
    "transition_answer",
    "transition_evidence",
    "trend_applies",
    "trend_spec",
    "yes_no",
    "yes_no_complaints",
    "yes_no_mismatch",
]

#: The facts fields (name -> value) an answer rests on.
Evidence = dict[str, EvidenceValue]
#: ``(rng, facts, no_change_epsilon) -> QAItem``: how the template asks a type.
AskFn = Callable[["np.random.Generator", ChangeFacts, float], QAItem]


@dataclass(frozen=True)
class QASpec:
    """The behaviour of one QA type (its data, name and answer kind, is in ``schemas/qa.py``).

    Attributes:
        name: the type name.
        answer_format: how an LLM must write the answer (one line of the prompt's task).
        applies: ``(facts, no_change_epsilon) -> bool``: whether the type has a well-defined
            answer for these facts (the template asks it, the LLM is asked for it).
        ask: ``(rng, facts, no_change_epsilon) -> QAItem``: the template's question, answer
            and evidence; draws its wording from the sample's generator.
        evidence: ``(question, facts) -> (evidence, complaints)``: the facts an answer to this
            question rests on, found from the facts (never from the model's answer).
        check: ``(item, answer, facts, changed) -> complaints``: re-derive the answer from the
            facts; ``answer`` is the item's answer normalised, ``changed`` whether the tile
            reads as changed.
    """

    name: str
    answer_format: str
    applies: Callable[[ChangeFacts, float], bool]
    ask: AskFn
    evidence: Callable[[str, ChangeFacts], tuple[Evidence, list[str]]]
    check: Callable[[QAItem, str, ChangeFacts, bool], list[str]]

    @property
    def answer_kind(self) -> AnswerKind:
        """The kind of answer (``schemas/qa.py``)."""
        return QA_TYPE_SPECS[self.name].answer


def has_change(facts: ChangeFacts, no_change_epsilon: float = 0.0) -> bool:
    """Whether a tile reads as changed: more than ``no_change_epsilon`` changed, in some region."""
    return facts.changed_fraction > no_change_epsilon and facts.n_regions > 0


def always(facts: ChangeFacts, no_change_epsilon: float) -> bool:
    """``applies`` of the types every sample carries."""
    return True


def qa_item(kind: str, question: str, answer: str, evidence: Evidence) -> QAItem:
    """A validated QA item."""
    return QAItem.model_validate(
        {"type": kind, "question": question, "answer": answer, "evidence": evidence}
    )


def one_of(values: Iterable[str]) -> str:
    """The ``answer_format`` of a type answered with one of a closed list of words."""
    return "one of: " + ", ".join(f"'{v}'" for v in values)


def ask_fixed(
    kind: str,
    questions: Sequence[str],
    answer: Callable[[ChangeFacts, float], str],
    evidence: Callable[[ChangeFacts], Evidence],
) -> AskFn:
    """``ask`` of a type whose question is one of ``questions``: one drawn, answered from the facts.

    Args:
        kind: the type name.
        questions: the wordings, one drawn per sample (one ``rng.integers`` call).
        answer: ``(facts, no_change_epsilon) -> answer``.
        evidence: ``facts -> evidence`` of that answer.
    """

    def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
        question = pick(rng, questions)
        return qa_item(kind, question, answer(facts, no_change_epsilon), evidence(facts))

    return ask


def facts_only(
    evidence: Callable[[ChangeFacts], Evidence],
) -> Callable[[str, ChangeFacts], tuple[Evidence, list[str]]]:
    """``evidence`` of a type whose evidence does not depend on the question's wording."""

    def of_question(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
        return evidence(facts), []

    return of_question


def yes_no(flag: bool) -> str:
    """'yes' or 'no'."""
    return "yes" if flag else "no"


def yes_no_complaints(kind: str, answer: str) -> list[str]:
    """A complaint when a yes/no answer is neither."""
    return [] if answer in ("yes", "no") else [f"{kind}: answer {answer!r} is not 'yes' or 'no'"]


def yes_no_mismatch(kind: str, answer: str, truth: bool, why: Callable[[str], str]) -> list[str]:
    """A complaint when a yes/no answer is not the one the facts give.

    Args:
        kind: the type name.
        answer: the answer, normalised.
        truth: whether the facts say 'yes'.
        why: ``expected answer -> what the facts say``, the end of the complaint.
    """
    expected = yes_no(truth)
    return [] if answer == expected else [f"{kind}: answer {answer!r} but {why(expected)}"]


def one_named_class(kind: str, question: str) -> tuple[str | None, list[str]]:
    """The one class a free-text question names (labels, machine names and synonyms count)."""
    named = list(dict.fromkeys(c for c, _, _ in mentioned_classes_free(question)))
    if len(named) != 1:
        return None, [
            f"the {kind} question must name exactly one land-cover class "
            f"(it names {', '.join(class_label(c) for c in named) or 'none'})"
        ]
    return named[0], []


def class_of(item: QAItem, key: str) -> tuple[str | None, list[str]]:
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


# --- class trends (class_increase, class_decrease) ----------------------------------------

#: ``(label, is_are, has_have) -> questions`` of one trend type.
TrendQuestions = Callable[[str, str, str], tuple[str, ...]]


def trend_applies(facts: ChangeFacts, no_change_epsilon: float) -> bool:
    """Class trends only on changed tiles with class totals.

    On an unchanged tile every answer would be "no", which skews the yes/no balance of a
    release towards "no" (measured: 80% on the demo).
    """
    return (
        has_change(facts, no_change_epsilon)
        and not facts.binary
        and bool(facts.class_pixels_before or facts.class_pixels_after)
    )


def _moved(facts: ChangeFacts, cls: str, *, increase: bool) -> bool:
    before, after = facts.class_pixels_before, facts.class_pixels_after
    sign = 1 if increase else -1
    return sign * (after.get(cls, 0) - before.get(cls, 0)) > 0


def trend_evidence(facts: ChangeFacts, cls: str) -> Evidence:
    """The class totals a trend answer rests on, and the regions that gained or lost the class
    (their dominant transition starts or ends in it)."""
    return {
        "class": cls,
        "pixels_before": facts.class_pixels_before.get(cls, 0),
        "pixels_after": facts.class_pixels_after.get(cls, 0),
        **grounding(facts, ids_where(facts, lambda c: cls in (c.from_class, c.to_class))),
    }


def _ask_trend(
    rng: np.random.Generator,
    facts: ChangeFacts,
    kind: str,
    *,
    increase: bool,
    questions: TrendQuestions,
) -> QAItem:
    """A trend question about one class: 'yes' and 'no' classes drawn half and half."""
    classes = sorted(set(facts.class_pixels_before) | set(facts.class_pixels_after))
    yes = [c for c in classes if _moved(facts, c, increase=increase)]
    no = [c for c in classes if not _moved(facts, c, increase=increase)]
    want_yes = bool(rng.random() < 0.5)
    pool = yes if (want_yes and yes) or not no else no
    cls = pool[int(rng.integers(len(pool)))]
    label = class_label(cls)
    is_are, has_have = ("are", "have") if is_plural(cls) else ("is", "has")
    question = pick(rng, questions(label, cap(is_are), cap(has_have)))
    answer = yes_no(_moved(facts, cls, increase=increase))
    return qa_item(kind, question, answer, trend_evidence(facts, cls))


def _trend_question_evidence(
    kind: str, question: str, facts: ChangeFacts
) -> tuple[Evidence, list[str]]:
    """The evidence of a trend question: the totals of the one class it names."""
    cls, problems = one_named_class(kind, question)
    if cls is None:
        return {}, problems
    return trend_evidence(facts, cls), []


def _check_trend(item: QAItem, answer: str, facts: ChangeFacts, *, increase: bool) -> list[str]:
    """Re-derive a trend answer from the class totals of the class asked about."""
    kind = item.type
    if facts.binary:
        return [f"{kind}: a binary label has no classes to ask about"]
    out: list[str] = []
    cls, problems = class_of(item, "class")
    out.extend(problems)
    if cls is not None:
        before = facts.class_pixels_before.get(cls, 0)
        after = facts.class_pixels_after.get(cls, 0)
        for name, value in (("pixels_before", before), ("pixels_after", after)):
            given = item.evidence.get(name)
            if given is not None and given != value:
                out.append(f"{kind}: evidence {name}={given} but facts have {value} for {cls}")
        out += yes_no_mismatch(
            kind,
            answer,
            after > before if increase else after < before,
            lambda expected: f"{cls} went from {before} to {after} pixels (expected {expected!r})",
        )
    return out + yes_no_complaints(kind, answer)


def trend_spec(name: str, *, increase: bool, questions: TrendQuestions) -> QASpec:
    """The spec of a class-trend type: did the area of one class grow (or shrink)?

    Asked on changed land-cover tiles (:func:`trend_applies`), about one class of the class
    totals, drawn so that 'yes' and 'no' occur about equally; the evidence is that class's
    totals; the answer is 'yes' exactly when the class has more (fewer) pixels after than
    before.

    Args:
        name: the type name.
        increase: True for "grew", False for "shrank".
        questions: the type's wordings.
    """

    def ask(rng: np.random.Generator, facts: ChangeFacts, no_change_epsilon: float) -> QAItem:
        return _ask_trend(rng, facts, name, increase=increase, questions=questions)

    def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
        return _trend_question_evidence(name, question, facts)

    def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
        return _check_trend(item, answer, facts, increase=increase)

    return QASpec(
        name=name,
        answer_format="'yes' or 'no'; the question names exactly one class of the class totals",
        applies=trend_applies,
        ask=ask,
        evidence=evidence,
        check=check,
    )


# --- transitions (largest_change, smallest_change, change_to_what) ------------------------


def transition_answer(t: TransitionStat) -> str:
    """'<from label> to <to label>'."""
    return f"{class_label(t.from_class)} to {class_label(t.to_class)}"


def transition_evidence(t: TransitionStat, facts: ChangeFacts) -> Evidence:
    """The transition an answer names, and the regions whose dominant transition it is."""
    return {
        "from_class": t.from_class,
        "to_class": t.to_class,
        "pixels": t.pixels,
        **grounding(
            facts,
            ids_where(facts, lambda c: (c.from_class, c.to_class) == (t.from_class, t.to_class)),
        ),
    }


def extreme_transition(facts: ChangeFacts, *, largest: bool) -> TransitionStat:
    """The first transition with the most (or fewest) pixels (facts hold at least one)."""
    pick_ = max if largest else min
    return pick_(facts.transitions, key=lambda t: t.pixels)


def extreme_transitions(facts: ChangeFacts, *, largest: bool) -> list[TransitionStat]:
    """The transitions with the most (or fewest) pixels; several on a tie."""
    if not facts.transitions:
        return []
    pick_ = max if largest else min
    target = pick_(t.pixels for t in facts.transitions)
    return [t for t in facts.transitions if t.pixels == target]


def names_transition(answer: str, t: TransitionStat) -> bool:
    """Whether an answer names a transition ('<from> to <to>', labels or machine names)."""
    return any(
        answer == f"{a} to {b}" for a in class_forms(t.from_class) for b in class_forms(t.to_class)
    )


def _check_extreme(
    kind: str, answer: str, facts: ChangeFacts, changed: bool, *, largest: bool
) -> list[str]:
    """Re-derive a largest/smallest transition answer (any of several tied ones is right)."""
    if facts.binary:
        return [f"{kind}: a binary label has no transitions to name"]
    if not changed:
        return [f"{kind}: asked about a tile without change"]
    best = extreme_transitions(facts, largest=largest)
    if any(names_transition(answer, t) for t in best):
        return []
    expected = " or ".join(transition_answer(t) for t in best)
    return [f"{kind}: answer {answer!r} but facts say {expected}"]


def _extreme_evidence(facts: ChangeFacts, *, largest: bool) -> tuple[Evidence, list[str]]:
    """The evidence of a largest/smallest answer: that transition (none without transitions)."""
    if not facts.transitions:
        return {"region_ids": []}, []
    return transition_evidence(extreme_transition(facts, largest=largest), facts), []


def extreme_spec(
    name: str,
    *,
    largest: bool,
    questions: Sequence[str],
    applies: Callable[[ChangeFacts, float], bool],
) -> QASpec:
    """The spec of a type asking for the largest (or smallest) transition.

    The template answers with the first (last) transition: transitions are by decreasing size
    and ``applies`` must admit only tiles where that one is unique. An LLM's answer rests on
    the transition with the most (fewest) pixels; any of several tied ones is right.

    Args:
        name: the type name.
        largest: True for the largest transition, False for the smallest.
        questions: the type's wordings.
        applies: when the type is asked.
    """
    index = 0 if largest else -1

    def evidence(question: str, facts: ChangeFacts) -> tuple[Evidence, list[str]]:
        return _extreme_evidence(facts, largest=largest)

    def check(item: QAItem, answer: str, facts: ChangeFacts, changed: bool) -> list[str]:
        return _check_extreme(name, answer, facts, changed, largest=largest)

    return QASpec(
        name=name,
        answer_format="'<from class> to <to class>' with the labels of the summary",
        applies=applies,
        ask=ask_fixed(
            name,
            questions,
            lambda facts, _eps: transition_answer(facts.transitions[index]),
            lambda facts: transition_evidence(facts.transitions[index], facts),
        ),
        evidence=evidence,
        check=check,
    )
