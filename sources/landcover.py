"""Land-cover products mapped onto the geodelta class list, one declarative table each.

A product's table maps its raw raster values to geodelta class names
(:data:`geodelta.schemas.classes.CLASSES`); :func:`to_geodelta` turns a raw map into geodelta
class indices with a lookup table. Adding a product is one more entry in
:data:`PRODUCTS`; raw values a table does not list become 0 ("unknown").
"""

from __future__ import annotations

from functools import cache
from typing import Final

import numpy as np

from geodelta.errors import ConfigError
from geodelta.schemas.classes import CLASS_INDEX, CLASSES, WORLDCOVER_TO_GEODELTA

#: Product name -> {raw value: geodelta class name}.
PRODUCTS: Final[dict[str, dict[int, str]]] = {
    # ESA WorldCover 10 m (2020 v100, 2021 v200): legend 10, 20, ..., 100; 0 = no data
    "worldcover": dict(WORLDCOVER_TO_GEODELTA),
    # Impact Observatory / Esri 10 m annual LULC v02 (Planetary Computer io-lulc-annual-v02):
    # 0 no data, 1 water, 2 trees, 4 flooded vegetation, 5 crops, 7 built area, 8 bare ground,
    # 9 snow/ice, 10 clouds (not a land cover: unknown), 11 rangeland (grass and scrub mixed;
    # mapped to grassland, the dominant cover of the IO class definition)
    "io-lulc": {
        1: "water",
        2: "tree_cover",
        4: "wetland",
        5: "cropland",
        7: "built_up",
        8: "bare",
        9: "snow_ice",
        11: "grassland",
    },
    # geodelta's own class indices (the demo catalog): identity on 1..11; 0 = unknown
    "geodelta": {idx: name for idx, name in CLASSES.items() if idx != 0},
}


class UnknownProductError(ConfigError, KeyError):
    """A land-cover product that has no table in :data:`PRODUCTS` (a
    :class:`~geodelta.errors.ConfigError`, and still a ``KeyError``)."""

    def __init__(self, product: str) -> None:
        super().__init__(
            f"unknown land-cover product {product!r}; known: {sorted(PRODUCTS)} "
            "(set labels.product in the config to one of them)"
        )
        self.product = product


class UnmappedClassError(ConfigError):
    """A product table names a class that is not a geodelta class (a
    :class:`~geodelta.errors.ConfigError`, hence still a ``ValueError``)."""


@cache
def _lookup_table(product: str) -> np.ndarray:
    """uint8 array: raw value -> geodelta class index, 0 for values the table does not list."""
    try:
        table = PRODUCTS[product]
    except KeyError:
        raise UnknownProductError(product) from None
    lut = np.zeros(max(table, default=0) + 1, dtype=np.uint8)
    for raw, name in table.items():
        if raw < 0:
            raise UnmappedClassError(
                f"product {product!r}: raw value {raw} is negative (tables map values >= 0)"
            )
        if name not in CLASS_INDEX:
            raise UnmappedClassError(
                f"product {product!r}: raw value {raw} maps to {name!r}, not a geodelta class "
                f"(known: {sorted(CLASS_INDEX)})"
            )
        lut[raw] = CLASS_INDEX[name]
    lut.flags.writeable = False
    return lut


def to_geodelta(values: np.ndarray, product: str) -> np.ndarray:
    """Map a raw land-cover raster onto geodelta class indices.

    Args:
        values: raw values of the product (any integer dtype, any shape).
        product: a key of :data:`PRODUCTS`, e.g. 'worldcover'.

    Returns:
        uint8 array of the same shape: geodelta class index
        (:data:`~geodelta.schemas.classes.CLASS_INDEX`), 0 for nodata and for raw values the
        product's table does not list.

    Raises:
        UnknownProductError: ``product`` has no table.
        TypeError: ``values`` is not an integer array.
    """
    lut = _lookup_table(product)
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"land-cover values must be an integer array (actual dtype={arr.dtype}); "
            "read the map with read_classes, which keeps the source dtype"
        )
    if arr.dtype.kind == "u" and np.iinfo(arr.dtype).max < lut.size:
        return lut[arr]  # every value indexes the table
    inside = (arr >= 0) & (arr < lut.size)
    out = np.zeros(arr.shape, dtype=np.uint8)
    out[inside] = lut[arr[inside]]
    return out
