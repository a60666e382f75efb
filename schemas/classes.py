"""The geodelta land-cover class list and the change-mask code table.

Every land-cover product (the demo catalog, ESA WorldCover, IO LULC, OSCD's binary mask) is
mapped onto this one class list, so masks and facts mean the same thing across versions.

Mask codes (``mask.png``): ``0`` = no change; ``1 + (from-1) * N + (to-1)`` for a transition
between two known classes (N = number of classes, so codes 1..N*N); ``255`` = change between
unknown classes (a binary change label such as OSCD's).
"""

from __future__ import annotations

from typing import Final

from geodelta.errors import ConfigError

#: Class index -> machine name. Index 0 is "unknown / no data" and never part of a transition.
CLASSES: Final[dict[int, str]] = {
    0: "unknown",
    1: "tree_cover",
    2: "shrubland",
    3: "grassland",
    4: "cropland",
    5: "built_up",
    6: "bare",
    7: "snow_ice",
    8: "water",
    9: "wetland",
    10: "mangroves",
    11: "moss_lichen",
}

#: Human-readable names used in captions and questions.
CLASS_LABELS: Final[dict[str, str]] = {
    "unknown": "unknown land cover",
    "tree_cover": "tree cover",
    "shrubland": "shrubland",
    "grassland": "grassland",
    "cropland": "cropland",
    "built_up": "built-up area",
    "bare": "bare ground",
    "snow_ice": "snow and ice",
    "water": "water",
    "wetland": "wetland",
    "mangroves": "mangroves",
    "moss_lichen": "moss and lichen",
}

N_CLASSES: Final[int] = len(CLASSES) - 1
NO_CHANGE: Final[int] = 0
BINARY_CHANGE: Final[int] = 255
CLASS_INDEX: Final[dict[str, int]] = {name: idx for idx, name in CLASSES.items()}

#: ESA WorldCover legend value -> geodelta class name (also used by the demo catalog).
WORLDCOVER_TO_GEODELTA: Final[dict[int, str]] = {
    10: "tree_cover",
    20: "shrubland",
    30: "grassland",
    40: "cropland",
    50: "built_up",
    60: "bare",
    70: "snow_ice",
    80: "water",
    90: "wetland",
    95: "mangroves",
    100: "moss_lichen",
}


class UnknownClassError(ConfigError, KeyError):
    """A class name that is not in :data:`CLASSES`."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown land-cover class {name!r}; known: {sorted(CLASS_INDEX)}")
        self.name = name


def transition_code(from_class: str, to_class: str) -> int:
    """Mask code of the transition ``from_class -> to_class`` (both known, different classes)."""
    try:
        a, b = CLASS_INDEX[from_class], CLASS_INDEX[to_class]
    except KeyError as exc:
        raise UnknownClassError(str(exc.args[0])) from None
    if a == 0 or b == 0 or a == b:
        raise ValueError(
            f"a transition needs two different known classes (got {from_class!r} -> {to_class!r})"
        )
    return 1 + (a - 1) * N_CLASSES + (b - 1)


def decode_transition(code: int) -> tuple[str, str] | None:
    """Inverse of :func:`transition_code`: ``(from, to)``, ``None`` for no change.

    The binary change code 255 decodes to ``("unknown", "unknown")``.
    """
    if code == NO_CHANGE:
        return None
    if code == BINARY_CHANGE:
        return ("unknown", "unknown")
    if not 1 <= code <= N_CLASSES * N_CLASSES:
        raise ValueError(f"mask code out of range (max={N_CLASSES * N_CLASSES}, actual={code})")
    a, b = divmod(code - 1, N_CLASSES)
    return CLASSES[a + 1], CLASSES[b + 1]


def transition_table() -> list[dict[str, int | str]]:
    """Every mask code with its classes, for the dataset card."""
    rows: list[dict[str, int | str]] = []
    for a in range(1, N_CLASSES + 1):
        for b in range(1, N_CLASSES + 1):
            if a != b:
                code = transition_code(CLASSES[a], CLASSES[b])
                rows.append({"code": code, "from": CLASSES[a], "to": CLASSES[b]})
    rows.append({"code": BINARY_CHANGE, "from": "unknown", "to": "unknown"})
    return rows
