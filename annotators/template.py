"""The offline template annotator: captions and QA from the change facts, no model needed.

Shaped like Beam's ``ModelHandler``: construct once per worker, then :meth:`annotate_batch`.
Every sentence is filled from :class:`~geodelta.schemas.ChangeFacts` only, so each claim can be
checked against the facts (:mod:`geodelta.annotators.claims`). Output is deterministic per
sample: the wording is drawn from a numpy Generator seeded with ``sha256(f"{seed}:{key}")``,
first for the captions, then for the QA items, which the QA types of
:mod:`geodelta.annotators.qa` ask in registry order.

Numbers in captions: hectares and percentages with two significant figures below 10 and whole
numbers from 10 up (:func:`format_hectares`, :func:`format_percent`); region counts as words up
to twelve.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from geodelta.annotators.errors import AnnotatorConfigError
from geodelta.annotators.qa import REGISTRY, types_for
from geodelta.annotators.qa.base import has_change
from geodelta.annotators.vocabulary import NUMBER_WORDS, cap, class_label, is_plural, pick
from geodelta.schemas import Annotation, ChangeComponent, ChangeFacts, QAItem, TransitionStat

__all__ = [
    "AnnotatorConfigError",
    "TemplateAnnotator",
    "count_word",
    "format_hectares",
    "format_percent",
    "has_change",
]

# Counts up to twelve are written as words in captions; larger ones as digits.
_NUMBER_WORDS = NUMBER_WORDS[:13]


def _two_significant(value: float) -> str:
    if value >= 10:
        return f"{value:.0f}"
    if value <= 0:
        return "0"
    decimals = max(0, 1 - math.floor(math.log10(value)))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_hectares(area_m2: float) -> str:
    """Area in hectares as written in captions: 2 significant figures below 10 ha, else whole.

    >>> format_hectares(23361 * 100.0), format_hectares(900.0), format_hectares(12345.0)
    ('234', '0.09', '1.2')
    """
    return _two_significant(area_m2 / 10_000.0)


def format_percent(fraction: float) -> str:
    """A fraction (0..1) as a percentage number, rounded like :func:`format_hectares`."""
    return _two_significant(fraction * 100.0)


def count_word(n: int) -> str:
    """A count as English words up to twelve, digits above."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def _seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")


@dataclass(frozen=True)
class _Ctx:
    """What the caption templates draw from."""

    facts: ChangeFacts
    main: TransitionStat
    second: TransitionStat | None
    big: ChangeComponent

    @property
    def n(self) -> int:
        return self.facts.n_regions

    @property
    def total_ha(self) -> str:
        return format_hectares(self.facts.changed_pixels * self.facts.pixel_area_m2)

    @property
    def pct(self) -> str:
        return format_percent(self.facts.changed_fraction)

    @property
    def pos(self) -> str:
        return self.big.position


Template = Callable[[np.random.Generator, _Ctx], str]


def _scene(rng: np.random.Generator) -> str:
    return pick(rng, ("tile", "image", "scene"))


def _dates(rng: np.random.Generator) -> str:
    return pick(rng, ("dates", "acquisitions"))


def _where(rng: np.random.Generator, pos: str) -> str:
    return f"the {pos} of the {_scene(rng)}"


# --- land-cover captions ------------------------------------------------------------------


def _lc_amount(rng: np.random.Generator, c: _Ctx) -> str:
    verb = pick(rng, ("became", "turned into", "was converted to", "changed to", "gave way to"))
    about = pick(rng, ("About", "Some", "Roughly", "Around"))
    m = c.main
    return f"{about} {format_hectares(m.area_m2)} ha of {class_label(m.from_class)} {verb} {class_label(m.to_class)}."


def _lc_main(rng: np.random.Generator, c: _Ctx) -> str:
    adj = pick(rng, ("main", "largest", "most extensive", "dominant"))
    verb = pick(rng, ("turning into", "becoming", "being replaced by", "giving way to"))
    cover = pick(rng, ("covering about", "which covers some", "over an area of about"))
    m = c.main
    return (
        f"The {adj} change is {class_label(m.from_class)} {verb} {class_label(m.to_class)}, "
        f"{cover} {format_hectares(m.area_m2)} ha."
    )


def _lc_position(rng: np.random.Generator, c: _Ctx) -> str:
    verb = pick(rng, ("has become", "has turned into", "was replaced by", "has been converted to"))
    return f"In {_where(rng, c.pos)}, {class_label(c.big.from_class)} {verb} {class_label(c.big.to_class)}."


def _lc_regions(rng: np.random.Generator, c: _Ctx) -> str:
    if c.n == 1:
        one = pick(rng, ("A single", "One"))
        noun = pick(rng, ("region", "patch", "area"))
        seen = pick(rng, ("is visible", "appears", "can be seen"))
        return (
            f"{one} {noun} of change {seen}, where {class_label(c.big.from_class)} became "
            f"{class_label(c.big.to_class)} in {_where(rng, c.pos)}."
        )
    adj = pick(rng, ("separate ", "distinct ", ""))
    noun = pick(rng, ("regions", "patches", "areas"))
    verb = pick(rng, ("changed", "show change", "have changed"))
    return (
        f"{cap(count_word(c.n))} {adj}{noun} {verb}; the largest, in the {c.pos}, went from "
        f"{class_label(c.big.from_class)} to {class_label(c.big.to_class)}."
    )


def _lc_totals(rng: np.random.Generator, c: _Ctx) -> str:
    subject = pick(rng, ("Land-cover changes", "Changes", "The changes"))
    about = pick(rng, ("about", "roughly", "around"))
    return f"{subject} cover {c.total_ha} ha, {about} {c.pct}% of the {_scene(rng)}."


def _lc_percent(rng: np.random.Generator, c: _Ctx) -> str:
    about = pick(rng, ("About", "Roughly", "Around"))
    m = c.main
    lead = "mostly" if 2 * m.pixels > c.facts.changed_pixels else "the largest part"
    return (
        f"{about} {c.pct}% of the {_scene(rng)} changed between the two {_dates(rng)}, "
        f"{lead} from {class_label(m.from_class)} to {class_label(m.to_class)}."
    )


def _lc_ranking(rng: np.random.Generator, c: _Ctx) -> str:
    m, s = c.main, c.second
    if s is None:
        kind = pick(rng, ("The only kind of change is", "All of the change is"))
        verb = pick(rng, ("becoming", "turning into"))
        return f"{kind} {class_label(m.from_class)} {verb} {class_label(m.to_class)}."
    if rng.random() < 0.5:
        adj = pick(rng, ("largest", "main", "biggest"))
        return (
            f"{cap(class_label(m.from_class))} to {class_label(m.to_class)} is the {adj} change, "
            f"followed by {class_label(s.from_class)} to {class_label(s.to_class)}."
        )
    verb = pick(rng, ("became", "turned into"))
    return (
        f"Besides {class_label(m.from_class)} becoming {class_label(m.to_class)}, some "
        f"{class_label(s.from_class)} {verb} {class_label(s.to_class)} ({format_hectares(s.area_m2)} ha)."
    )


def _lc_new(rng: np.random.Generator, c: _Ctx) -> str:
    if is_plural(c.big.to_class):
        verb = pick(rng, ("appear", "have appeared", "show up"))
    else:
        verb = pick(rng, ("appears", "has appeared", "shows up"))
    return (
        f"New {class_label(c.big.to_class)} {verb} in {_where(rng, c.pos)}, where there was "
        f"{class_label(c.big.from_class)} before."
    )


def _lc_lost(rng: np.random.Generator, c: _Ctx) -> str:
    verb = pick(rng, ("lost", "gave up", "ceded"))
    m = c.main
    return (
        f"Between the two {_dates(rng)}, {class_label(m.from_class)} {verb} "
        f"{format_hectares(m.area_m2)} ha to {class_label(m.to_class)}."
    )


def _lc_compare(rng: np.random.Generator, c: _Ctx) -> str:
    pair = pick(rng, ("before and after images", "two images", "two dates"))
    adj = pick(rng, ("clearest", "most visible", "largest"))
    verb = pick(rng, ("became", "turned into", "was converted to"))
    return (
        f"Comparing the {pair}, the {adj} change is in the {c.pos}, where "
        f"{class_label(c.big.from_class)} {verb} {class_label(c.big.to_class)}."
    )


def _lc_share(rng: np.random.Generator, c: _Ctx) -> str:
    m = c.main
    share = format_percent(m.pixels / c.facts.changed_pixels)
    verb = pick(rng, ("accounts for", "makes up", "represents"))
    return f"{cap(class_label(m.from_class))} to {class_label(m.to_class)} {verb} {share}% of all change."


_LANDCOVER: tuple[Template, ...] = (
    _lc_amount,
    _lc_main,
    _lc_position,
    _lc_regions,
    _lc_totals,
    _lc_percent,
    _lc_ranking,
    _lc_new,
    _lc_lost,
    _lc_compare,
    _lc_share,
)


# --- binary captions ----------------------------------------------------------------------


def _bin_regions(rng: np.random.Generator, c: _Ctx) -> str:
    if c.n == 1:
        one = pick(rng, ("A single", "One"))
        noun = pick(rng, ("region", "patch", "area"))
        verb = pick(rng, ("has changed", "shows change"))
        return f"{one} {noun} {verb}, in {_where(rng, c.pos)}."
    adj = pick(rng, ("separate ", "distinct ", ""))
    noun = pick(rng, ("regions", "patches", "areas"))
    verb = pick(rng, ("changed", "show change"))
    return f"{cap(count_word(c.n))} {adj}{noun} {verb} between the two {_dates(rng)}."


def _bin_totals(rng: np.random.Generator, c: _Ctx) -> str:
    subject = pick(rng, ("Changes", "Changed areas", "The changes"))
    about = pick(rng, ("about", "roughly", "around"))
    return f"{subject} cover {c.total_ha} ha, {about} {c.pct}% of the {_scene(rng)}."


def _bin_largest(rng: np.random.Generator, c: _Ctx) -> str:
    adj = pick(rng, ("largest", "biggest"))
    noun = pick(rng, ("changed area", "region of change", "patch of change"))
    verb = pick(rng, ("lies", "is", "can be found"))
    return f"The {adj} {noun} {verb} in {_where(rng, c.pos)}."


def _bin_amount(rng: np.random.Generator, c: _Ctx) -> str:
    about = pick(rng, ("About", "Roughly", "Some"))
    verb = pick(rng, ("changed", "were altered", "show change"))
    return (
        f"{about} {c.total_ha} ha {verb} between the two {_dates(rng)}, with the largest "
        f"part in the {c.pos}."
    )


def _bin_spread(rng: np.random.Generator, c: _Ctx) -> str:
    seen = pick(rng, ("is visible", "can be seen", "appears"))
    if c.n == 1:
        return f"Change {seen} in one region only, in {_where(rng, c.pos)}."
    noun = pick(rng, ("places", "spots", "regions"))
    return f"Change {seen} in {count_word(c.n)} {noun}, the biggest in the {c.pos}."


def _bin_percent(rng: np.random.Generator, c: _Ctx) -> str:
    about = pick(rng, ("About", "Roughly", "Around"))
    verb = pick(rng, ("changed", "has changed", "is different"))
    return f"{about} {c.pct}% of the {_scene(rng)} {verb} between the two {_dates(rng)}."


def _bin_component(rng: np.random.Generator, c: _Ctx) -> str:
    noun = pick(rng, ("largest region of change", "biggest changed patch", "main changed area"))
    verb = pick(rng, ("covers", "spans", "takes up"))
    return f"The {noun} {verb} about {format_hectares(c.big.area_m2)} ha in {_where(rng, c.pos)}."


def _bin_where(rng: np.random.Generator, c: _Ctx) -> str:
    adj = pick(rng, ("biggest", "most extensive", "most visible"))
    return f"The {adj} change between the two {_dates(rng)} is in the {c.pos}."


_BINARY: tuple[Template, ...] = (
    _bin_regions,
    _bin_totals,
    _bin_largest,
    _bin_amount,
    _bin_spread,
    _bin_percent,
    _bin_component,
    _bin_where,
)


# --- no-change captions -------------------------------------------------------------------


def _nc_none(rng: np.random.Generator) -> str:
    adj = pick(rng, ("", "visible ", "noticeable ", "apparent "))
    return f"There is no {adj}change between the two {_dates(rng)}."


def _nc_nothing(rng: np.random.Generator) -> str:
    return f"Nothing has changed in this {pick(rng, ('scene', 'tile', 'image', 'place'))}."


def _nc_same(rng: np.random.Generator) -> str:
    state = pick(rng, ("is unchanged", "remains the same", "stayed the same"))
    return f"The {_scene(rng)} {state} between the two {pick(rng, ('dates', 'acquisitions'))}."


def _nc_show(rng: np.random.Generator) -> str:
    subject = pick(rng, ("The two images", "The two scenes", "Both acquisitions"))
    what = pick(rng, ("change", "difference", "visible change"))
    return f"{subject} show no {what}."


def _nc_seen(rng: np.random.Generator) -> str:
    verb = pick(rng, ("seen", "detected", "observed"))
    where = pick(rng, ("here", "in this tile", "in the scene"))
    return f"No change can be {verb} {where}."


def _nc_looks(rng: np.random.Generator) -> str:
    same = pick(rng, ("looks the same", "looks identical", "is identical"))
    when = pick(rng, ("at both dates", "on both dates", "as before"))
    return f"The {_scene(rng)} {same} {when}."


def _nc_landscape(rng: np.random.Generator) -> str:
    what = pick(rng, ("the same landscape", "the same scene", "the same land cover"))
    return f"{pick(rng, ('Both images', 'The two acquisitions'))} show {what}."


_NO_CHANGE: tuple[Callable[[np.random.Generator], str], ...] = (
    _nc_none,
    _nc_nothing,
    _nc_same,
    _nc_show,
    _nc_seen,
    _nc_looks,
    _nc_landscape,
)


def _distinct(rng: np.random.Generator, make: Sequence[Callable[[], str]], count: int) -> list[str]:
    """``count`` distinct sentences, cycling the templates in a seeded order."""
    out: list[str] = []
    order = [int(i) for i in rng.permutation(len(make))]
    attempts = 0
    while len(out) < count:
        sentence = make[order[attempts % len(order)]]()
        attempts += 1
        if sentence not in out:
            out.append(sentence)
        elif attempts > 200 * count:
            raise RuntimeError(f"could not word {count} distinct captions (got {len(out)})")
    return out


class TemplateAnnotator:
    """Captions and QA from facts with sentence templates (offline, deterministic).

    Args:
        captions_per_sample: captions per sample (config ``annotation.captions_per_sample``).
        no_change_epsilon: changed fractions at or below this read as "no change"
            (config ``annotation.no_change_epsilon``).
        seed: seed mixed with each sample key.
    """

    name = "template"
    version = "1.0.0"

    def __init__(
        self, *, captions_per_sample: int = 5, no_change_epsilon: float = 0.0, seed: int = 0
    ) -> None:
        if not 1 <= captions_per_sample <= 20:
            raise AnnotatorConfigError(
                "captions_per_sample", f"must be in 1..20 (actual {captions_per_sample})"
            )
        if not 0.0 <= no_change_epsilon < 1.0:
            raise AnnotatorConfigError(
                "no_change_epsilon", f"must be in [0, 1) (actual {no_change_epsilon})"
            )
        self.captions_per_sample = captions_per_sample
        self.no_change_epsilon = no_change_epsilon
        self.seed = seed

    def annotate(self, key: str, facts: ChangeFacts) -> Annotation:
        """Captions and QA for one sample.

        Args:
            key: sample key (seeds the wording).
            facts: the facts of the sample's change mask.

        Returns:
            An :class:`~geodelta.schemas.Annotation` by this annotator.
        """
        rng = np.random.default_rng(_seed(self.seed, key))
        captions = self._captions(rng, facts)
        qa = self._qa(rng, facts)
        return Annotation(
            captions=tuple(captions),
            qa=tuple(qa),
            annotator=self.name,
            annotator_version=self.version,
        )

    def annotate_batch(self, batch: Sequence[tuple[str, ChangeFacts]]) -> list[Annotation]:
        """Annotate ``(key, facts)`` pairs, in order."""
        return [self.annotate(key, facts) for key, facts in batch]

    # captions

    def _captions(self, rng: np.random.Generator, facts: ChangeFacts) -> list[str]:
        count = self.captions_per_sample
        if not has_change(facts, self.no_change_epsilon):
            return _distinct(rng, [partial(f, rng) for f in _NO_CHANGE], count)
        ctx = _Ctx(
            facts=facts,
            main=facts.transitions[0],
            second=facts.transitions[1] if len(facts.transitions) > 1 else None,
            big=facts.components[0],
        )
        templates = _BINARY if facts.binary else _LANDCOVER
        return _distinct(rng, [partial(t, rng, ctx) for t in templates], count)

    # QA

    def _qa(self, rng: np.random.Generator, facts: ChangeFacts) -> list[QAItem]:
        """One item per QA type that applies (:mod:`geodelta.annotators.qa`), in registry order."""
        eps = self.no_change_epsilon
        return [REGISTRY[t].ask(rng, facts, eps) for t in types_for(facts, eps)]
