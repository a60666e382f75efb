"""Words the annotators write and the claim checker reads (shared vocabulary, not derivations).

Number words, the labels and other names of the land-cover classes, finding classes named in a
text, and the small wording helpers of the sentence templates (:func:`pick` draws one wording
from the sample's seeded generator).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from geodelta.schemas.classes import CLASS_LABELS

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CLASS_SYNONYMS",
    "NUMBER_WORDS",
    "area_of",
    "cap",
    "class_forms",
    "class_label",
    "is_plural",
    "mentioned_classes",
    "mentioned_classes_free",
    "norm_answer",
    "pick",
]

#: English number words, index = value.
NUMBER_WORDS: tuple[str, ...] = (
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
)

#: Other words for the classes; an LLM does not keep to the labels.
CLASS_SYNONYMS: dict[str, tuple[str, ...]] = {
    "tree_cover": ("forest", "forests", "forested", "woodland", "woodlands", "woods", "trees"),
    "shrubland": ("shrub", "shrubs", "scrub", "scrubland", "bushes"),
    "grassland": ("grass", "grasses", "meadow", "meadows", "pasture", "pastures"),
    "cropland": (
        "crops",
        "farmland",
        "farmlands",
        "agricultural land",
        "arable land",
        "cultivated land",
    ),
    "built_up": (
        "built-up",
        "built up",
        "buildings",
        "urban",
        "settlement",
        "settlements",
        "houses",
    ),
    "bare": ("bare soil", "bare land", "barren land", "bare ground"),
    "snow_ice": ("snow", "ice", "glacier", "glaciers"),
    "water": ("water body", "water bodies", "lake", "lakes", "river", "rivers", "reservoir"),
    "wetland": ("wetlands", "marsh", "marshes", "swamp", "swamps"),
    "mangroves": ("mangrove",),
    "moss_lichen": ("moss", "lichen", "lichens"),
}


def class_label(name: str) -> str:
    """The human label of a class (``tree_cover`` -> ``tree cover``) as captions write it."""
    return CLASS_LABELS.get(name, name.replace("_", " "))


def norm_answer(text: str) -> str:
    """An answer as compared: lower case, single spaces, no final full stop or '!'."""
    return " ".join(text.lower().strip().rstrip(".!").split())


def class_forms(name: str) -> set[str]:
    """Accepted spellings of a class in an answer: its label or its machine name."""
    return {norm_answer(class_label(name)), name, name.replace("_", " ")}


def area_of(label: str) -> str:
    """'the area of tree cover', but 'the built-up area' (not 'the area of built-up area')."""
    return f"the {label}" if label.endswith(" area") else f"the area of {label}"


def is_plural(name: str) -> bool:
    """Whether a class name is grammatically plural ('mangroves are')."""
    return name == "mangroves"


def cap(text: str) -> str:
    """The text with its first letter in upper case."""
    return text[:1].upper() + text[1:]


def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    """One of ``options``, drawn with one ``rng.integers`` call."""
    return options[int(rng.integers(len(options)))]


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


def _class_patterns() -> list[tuple[str, str]]:
    """(phrase, class) pairs, longest phrase first."""
    pairs: list[tuple[str, str]] = []
    for name, label in CLASS_LABELS.items():
        if name == "unknown":
            continue
        for phrase in {label, name.replace("_", " "), *CLASS_SYNONYMS.get(name, ())}:
            pairs.append((phrase.lower(), name))
    return sorted(set(pairs), key=lambda p: (-len(p[0]), p[0]))


_CLASS_PHRASES = _class_patterns()
_CLASS_RE = re.compile(
    r"(?<![\w-])(" + "|".join(re.escape(p) for p, _ in _CLASS_PHRASES) + r")(?![\w-])",
    re.IGNORECASE,
)
_PHRASE_CLASS = dict(_CLASS_PHRASES)


def mentioned_classes_free(text: str) -> list[tuple[str, int, int]]:
    """Classes named in free text, by label, machine name or synonym: ``(class, start, end)``.

    Longer phrases win ("built-up area" is one mention, not "built-up" and "area").
    """
    return [
        (_PHRASE_CLASS[m.group(1).lower()], m.start(), m.end()) for m in _CLASS_RE.finditer(text)
    ]
