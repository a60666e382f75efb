"""The offline template annotator: captions and QA from the change facts, no model needed.

Shaped like Beam's ``ModelHandler``: construct once per worker, then :meth:`annotate_batch`.
Every sentence is filled from :class:`~geodelta.schemas.ChangeFacts` only, so each claim can be
checked against the facts (:mod:`geodelta.annotators.claims`). Output is deterministic per
sample: the wording is drawn from a numpy Generator seeded with ``sha256(f"{seed}:{key}")``.

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

from geodelta.annotators.vocabulary import NUMBER_WORDS
from geodelta.schemas import Annotation, ChangeComponent, ChangeFacts, QAItem, TransitionStat
from geodelta.schemas.classes import CLASS_LABELS
from geodelta.schemas.records import change_ratio_bin

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


class AnnotatorConfigError(ValueError):
    """An annotator setting out of range; names the config key to change."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"annotation.{key}: {message}")


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


def has_change(facts: ChangeFacts, no_change_epsilon: float = 0.0) -> bool:
    """Whether a tile reads as changed: more than ``no_change_epsilon`` changed, in some region."""
    return facts.changed_fraction > no_change_epsilon and facts.n_regions > 0


def _label(name: str) -> str:
    return CLASS_LABELS.get(name, name.replace("_", " "))


def _area_of(label: str) -> str:
    """'the area of tree cover', but 'the built-up area' (not 'the area of built-up area')."""
    return f"the {label}" if label.endswith(" area") else f"the area of {label}"


def _plural(name: str) -> bool:
    return name == "mangroves"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


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


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _scene(rng: np.random.Generator) -> str:
    return _pick(rng, ("tile", "image", "scene"))


def _dates(rng: np.random.Generator) -> str:
    return _pick(rng, ("dates", "acquisitions"))


def _where(rng: np.random.Generator, pos: str) -> str:
    return f"the {pos} of the {_scene(rng)}"


# --- land-cover captions ------------------------------------------------------------------


def _lc_amount(rng: np.random.Generator, c: _Ctx) -> str:
    verb = _pick(rng, ("became", "turned into", "was converted to", "changed to", "gave way to"))
    about = _pick(rng, ("About", "Some", "Roughly", "Around"))
    m = c.main
    return f"{about} {format_hectares(m.area_m2)} ha of {_label(m.from_class)} {verb} {_label(m.to_class)}."


def _lc_main(rng: np.random.Generator, c: _Ctx) -> str:
    adj = _pick(rng, ("main", "largest", "most extensive", "dominant"))
    verb = _pick(rng, ("turning into", "becoming", "being replaced by", "giving way to"))
    cover = _pick(rng, ("covering about", "which covers some", "over an area of about"))
    m = c.main
    return (
        f"The {adj} change is {_label(m.from_class)} {verb} {_label(m.to_class)}, "
        f"{cover} {format_hectares(m.area_m2)} ha."
    )


def _lc_position(rng: np.random.Generator, c: _Ctx) -> str:
    verb = _pick(rng, ("has become", "has turned into", "was replaced by", "has been converted to"))
    return f"In {_where(rng, c.pos)}, {_label(c.big.from_class)} {verb} {_label(c.big.to_class)}."


def _lc_regions(rng: np.random.Generator, c: _Ctx) -> str:
    if c.n == 1:
        one = _pick(rng, ("A single", "One"))
        noun = _pick(rng, ("region", "patch", "area"))
        seen = _pick(rng, ("is visible", "appears", "can be seen"))
        return (
            f"{one} {noun} of change {seen}, where {_label(c.big.from_class)} became "
            f"{_label(c.big.to_class)} in {_where(rng, c.pos)}."
        )
    adj = _pick(rng, ("separate ", "distinct ", ""))
    noun = _pick(rng, ("regions", "patches", "areas"))
    verb = _pick(rng, ("changed", "show change", "have changed"))
    return (
        f"{_cap(count_word(c.n))} {adj}{noun} {verb}; the largest, in the {c.pos}, went from "
        f"{_label(c.big.from_class)} to {_label(c.big.to_class)}."
    )


def _lc_totals(rng: np.random.Generator, c: _Ctx) -> str:
    subject = _pick(rng, ("Land-cover changes", "Changes", "The changes"))
    about = _pick(rng, ("about", "roughly", "around"))
    return f"{subject} cover {c.total_ha} ha, {about} {c.pct}% of the {_scene(rng)}."


def _lc_percent(rng: np.random.Generator, c: _Ctx) -> str:
    about = _pick(rng, ("About", "Roughly", "Around"))
    m = c.main
    lead = "mostly" if 2 * m.pixels > c.facts.changed_pixels else "the largest part"
    return (
        f"{about} {c.pct}% of the {_scene(rng)} changed between the two {_dates(rng)}, "
        f"{lead} from {_label(m.from_class)} to {_label(m.to_class)}."
    )


def _lc_ranking(rng: np.random.Generator, c: _Ctx) -> str:
    m, s = c.main, c.second
    if s is None:
        kind = _pick(rng, ("The only kind of change is", "All of the change is"))
        verb = _pick(rng, ("becoming", "turning into"))
        return f"{kind} {_label(m.from_class)} {verb} {_label(m.to_class)}."
    if rng.random() < 0.5:
        adj = _pick(rng, ("largest", "main", "biggest"))
        return (
            f"{_cap(_label(m.from_class))} to {_label(m.to_class)} is the {adj} change, "
            f"followed by {_label(s.from_class)} to {_label(s.to_class)}."
        )
    verb = _pick(rng, ("became", "turned into"))
    return (
        f"Besides {_label(m.from_class)} becoming {_label(m.to_class)}, some "
        f"{_label(s.from_class)} {verb} {_label(s.to_class)} ({format_hectares(s.area_m2)} ha)."
    )


def _lc_new(rng: np.random.Generator, c: _Ctx) -> str:
    if _plural(c.big.to_class):
        verb = _pick(rng, ("appear", "have appeared", "show up"))
    else:
        verb = _pick(rng, ("appears", "has appeared", "shows up"))
    return (
        f"New {_label(c.big.to_class)} {verb} in {_where(rng, c.pos)}, where there was "
        f"{_label(c.big.from_class)} before."
    )


def _lc_lost(rng: np.random.Generator, c: _Ctx) -> str:
    verb = _pick(rng, ("lost", "gave up", "ceded"))
    m = c.main
    return (
        f"Between the two {_dates(rng)}, {_label(m.from_class)} {verb} "
        f"{format_hectares(m.area_m2)} ha to {_label(m.to_class)}."
    )


def _lc_compare(rng: np.random.Generator, c: _Ctx) -> str:
    pair = _pick(rng, ("before and after images", "two images", "two dates"))
    adj = _pick(rng, ("clearest", "most visible", "largest"))
    verb = _pick(rng, ("became", "turned into", "was converted to"))
    return (
        f"Comparing the {pair}, the {adj} change is in the {c.pos}, where "
        f"{_label(c.big.from_class)} {verb} {_label(c.big.to_class)}."
    )


def _lc_share(rng: np.random.Generator, c: _Ctx) -> str:
    m = c.main
    share = format_percent(m.pixels / c.facts.changed_pixels)
    verb = _pick(rng, ("accounts for", "makes up", "represents"))
    return f"{_cap(_label(m.from_class))} to {_label(m.to_class)} {verb} {share}% of all change."


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
        one = _pick(rng, ("A single", "One"))
        noun = _pick(rng, ("region", "patch", "area"))
        verb = _pick(rng, ("has changed", "shows change"))
        return f"{one} {noun} {verb}, in {_where(rng, c.pos)}."
    adj = _pick(rng, ("separate ", "distinct ", ""))
    noun = _pick(rng, ("regions", "patches", "areas"))
    verb = _pick(rng, ("changed", "show change"))
    return f"{_cap(count_word(c.n))} {adj}{noun} {verb} between the two {_dates(rng)}."


def _bin_totals(rng: np.random.Generator, c: _Ctx) -> str:
    subject = _pick(rng, ("Changes", "Changed areas", "The changes"))
    about = _pick(rng, ("about", "roughly", "around"))
    return f"{subject} cover {c.total_ha} ha, {about} {c.pct}% of the {_scene(rng)}."


def _bin_largest(rng: np.random.Generator, c: _Ctx) -> str:
    adj = _pick(rng, ("largest", "biggest"))
    noun = _pick(rng, ("changed area", "region of change", "patch of change"))
    verb = _pick(rng, ("lies", "is", "can be found"))
    return f"The {adj} {noun} {verb} in {_where(rng, c.pos)}."


def _bin_amount(rng: np.random.Generator, c: _Ctx) -> str:
    about = _pick(rng, ("About", "Roughly", "Some"))
    verb = _pick(rng, ("changed", "were altered", "show change"))
    return (
        f"{about} {c.total_ha} ha {verb} between the two {_dates(rng)}, with the largest "
        f"part in the {c.pos}."
    )


def _bin_spread(rng: np.random.Generator, c: _Ctx) -> str:
    seen = _pick(rng, ("is visible", "can be seen", "appears"))
    if c.n == 1:
        return f"Change {seen} in one region only, in {_where(rng, c.pos)}."
    noun = _pick(rng, ("places", "spots", "regions"))
    return f"Change {seen} in {count_word(c.n)} {noun}, the biggest in the {c.pos}."


def _bin_percent(rng: np.random.Generator, c: _Ctx) -> str:
    about = _pick(rng, ("About", "Roughly", "Around"))
    verb = _pick(rng, ("changed", "has changed", "is different"))
    return f"{about} {c.pct}% of the {_scene(rng)} {verb} between the two {_dates(rng)}."


def _bin_component(rng: np.random.Generator, c: _Ctx) -> str:
    noun = _pick(rng, ("largest region of change", "biggest changed patch", "main changed area"))
    verb = _pick(rng, ("covers", "spans", "takes up"))
    return f"The {noun} {verb} about {format_hectares(c.big.area_m2)} ha in {_where(rng, c.pos)}."


def _bin_where(rng: np.random.Generator, c: _Ctx) -> str:
    adj = _pick(rng, ("biggest", "most extensive", "most visible"))
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
    adj = _pick(rng, ("", "visible ", "noticeable ", "apparent "))
    return f"There is no {adj}change between the two {_dates(rng)}."


def _nc_nothing(rng: np.random.Generator) -> str:
    return f"Nothing has changed in this {_pick(rng, ('scene', 'tile', 'image', 'place'))}."


def _nc_same(rng: np.random.Generator) -> str:
    state = _pick(rng, ("is unchanged", "remains the same", "stayed the same"))
    return f"The {_scene(rng)} {state} between the two {_pick(rng, ('dates', 'acquisitions'))}."


def _nc_show(rng: np.random.Generator) -> str:
    subject = _pick(rng, ("The two images", "The two scenes", "Both acquisitions"))
    what = _pick(rng, ("change", "difference", "visible change"))
    return f"{subject} show no {what}."


def _nc_seen(rng: np.random.Generator) -> str:
    verb = _pick(rng, ("seen", "detected", "observed"))
    where = _pick(rng, ("here", "in this tile", "in the scene"))
    return f"No change can be {verb} {where}."


def _nc_looks(rng: np.random.Generator) -> str:
    same = _pick(rng, ("looks the same", "looks identical", "is identical"))
    when = _pick(rng, ("at both dates", "on both dates", "as before"))
    return f"The {_scene(rng)} {same} {when}."


def _nc_landscape(rng: np.random.Generator) -> str:
    what = _pick(rng, ("the same landscape", "the same scene", "the same land cover"))
    return f"{_pick(rng, ('Both images', 'The two acquisitions'))} show {what}."


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


# --- QA -----------------------------------------------------------------------------------


def _transition_answer(t: TransitionStat) -> str:
    return f"{_label(t.from_class)} to {_label(t.to_class)}"


def _qa(
    kind: str, question: str, answer: str, evidence: dict[str, str | int | float | bool]
) -> QAItem:
    return QAItem.model_validate(
        {"type": kind, "question": question, "answer": answer, "evidence": evidence}
    )


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
        changed = has_change(facts, self.no_change_epsilon)
        items = [
            _qa(
                "has_change",
                _pick(
                    rng,
                    (
                        "Has anything changed between the two images?",
                        "Is there any change in this area?",
                        "Did the scene change between the two dates?",
                        "Are there any changes between the before and after images?",
                    ),
                ),
                "yes" if changed else "no",
                {
                    "changed_pixels": facts.changed_pixels,
                    "valid_pixels": facts.valid_pixels,
                    "regions": facts.n_regions,
                },
            ),
            _qa(
                "change_ratio",
                _pick(
                    rng,
                    (
                        "What fraction of the area changed?",
                        "How much of the scene has changed?",
                        "What share of the tile changed between the two dates?",
                    ),
                ),
                change_ratio_bin(facts.changed_fraction),
                {"changed_fraction": facts.changed_fraction},
            ),
            _qa(
                "count_regions",
                _pick(
                    rng,
                    (
                        "How many regions of change are there?",
                        "How many separate areas changed?",
                        "In how many places did the scene change?",
                    ),
                ),
                str(facts.n_regions),
                {"regions": facts.n_regions, "min_region_px": facts.min_region_px},
            ),
        ]
        # Class trends only on changed tiles: on an unchanged tile every answer would be "no",
        # which skews the yes/no balance of a release towards "no" (measured: 80% on the demo).
        if changed and not facts.binary and (facts.class_pixels_before or facts.class_pixels_after):
            items.append(self._class_trend(rng, facts, increase=True))
            items.append(self._class_trend(rng, facts, increase=False))
        if changed and not facts.binary:
            items.extend(self._transition_items(rng, facts))
        if changed:
            big = facts.components[0]
            items.append(
                _qa(
                    "location",
                    _pick(
                        rng,
                        (
                            "Where is the largest change?",
                            "In which part of the image is the biggest changed region?",
                            "Where does the largest region of change lie?",
                        ),
                    ),
                    big.position,
                    {
                        "component": big.id,
                        "pixels": big.pixels,
                        "centroid_row": big.centroid[0],
                        "centroid_col": big.centroid[1],
                    },
                )
            )
        return items

    def _class_trend(
        self, rng: np.random.Generator, facts: ChangeFacts, *, increase: bool
    ) -> QAItem:
        before, after = facts.class_pixels_before, facts.class_pixels_after
        classes = sorted(set(before) | set(after))
        sign = 1 if increase else -1

        def moved(c: str) -> bool:
            return sign * (after.get(c, 0) - before.get(c, 0)) > 0

        yes = [c for c in classes if moved(c)]
        no = [c for c in classes if not moved(c)]
        want_yes = bool(rng.random() < 0.5)
        pool = yes if (want_yes and yes) or not no else no
        cls = pool[int(rng.integers(len(pool)))]
        label = _label(cls)
        is_are, has_have = ("are", "have") if _plural(cls) else ("is", "has")
        if increase:
            kind = "class_increase"
            question = _pick(
                rng,
                (
                    f"Did {_area_of(label)} increase?",
                    f"{_cap(is_are)} there more {label} in the second image than in the first?",
                    f"{_cap(has_have)} {label} expanded between the two dates?",
                ),
            )
        else:
            kind = "class_decrease"
            question = _pick(
                rng,
                (
                    f"Did {_area_of(label)} decrease?",
                    f"{_cap(is_are)} there less {label} in the second image than in the first?",
                    f"{_cap(has_have)} {label} shrunk between the two dates?",
                ),
            )
        return _qa(
            kind,
            question,
            "yes" if moved(cls) else "no",
            {"class": cls, "pixels_before": before.get(cls, 0), "pixels_after": after.get(cls, 0)},
        )

    def _transition_items(self, rng: np.random.Generator, facts: ChangeFacts) -> list[QAItem]:
        ts = facts.transitions
        items = []
        if len(ts) == 1 or ts[0].pixels > ts[1].pixels:  # a unique largest transition
            t = ts[0]
            items.append(
                _qa(
                    "largest_change",
                    _pick(
                        rng,
                        (
                            "What is the largest change between the two images?",
                            "Which land-cover transition covers the most area?",
                            "What is the main type of change?",
                        ),
                    ),
                    _transition_answer(t),
                    {"from_class": t.from_class, "to_class": t.to_class, "pixels": t.pixels},
                )
            )
        if facts.n_regions >= 2 and len(ts) >= 2 and ts[-1].pixels < ts[-2].pixels:
            t = ts[-1]
            items.append(
                _qa(
                    "smallest_change",
                    _pick(
                        rng,
                        (
                            "What is the smallest change between the two images?",
                            "Which land-cover transition covers the least area?",
                            "What is the least extensive type of change?",
                        ),
                    ),
                    _transition_answer(t),
                    {"from_class": t.from_class, "to_class": t.to_class, "pixels": t.pixels},
                )
            )
        sources = sorted({t.from_class for t in ts})
        src = sources[int(rng.integers(len(sources)))]
        top = next(t for t in ts if t.from_class == src)  # ts is sorted by decreasing size
        label = _label(src)
        items.append(
            _qa(
                "change_to_what",
                _pick(
                    rng,
                    (
                        f"What did {label} turn into?",
                        f"What has most of the changed {label} become?",
                        f"Into what was {label} mostly converted?",
                    ),
                ),
                _label(top.to_class),
                {"from_class": src, "to_class": top.to_class, "pixels": top.pixels},
            )
        )
        return items
