"""The synthetic demo STAC catalog: geodelta's offline default input, with known truth.

:func:`write_demo_catalog` writes it (the series demo with ``series=True``), :func:`load_truth`
(:func:`load_series_truth`) reads back what it was generated from
(see :mod:`geodelta.sources.demo.catalog`). Importing this package is cheap: the generator
(numpy, rasterio, pystac) is imported on first use of one of its names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geodelta.sources.demo.constants import DemoCatalogError

if TYPE_CHECKING:
    from geodelta.sources.demo.catalog import (
        DemoCatalog,
        DemoSeriesTruth,
        DemoTruth,
        load_series_truth,
        load_truth,
        write_demo_catalog,
    )

__all__ = [
    "DemoCatalog",
    "DemoCatalogError",
    "DemoSeriesTruth",
    "DemoTruth",
    "load_series_truth",
    "load_truth",
    "write_demo_catalog",
]

_LAZY = frozenset(
    {
        "DemoCatalog",
        "DemoSeriesTruth",
        "DemoTruth",
        "load_series_truth",
        "load_truth",
        "write_demo_catalog",
    }
)


def __getattr__(name: str) -> Any:
    """The generator's names, imported from :mod:`geodelta.sources.demo.catalog` on first use."""
    if name in _LAZY:
        from geodelta.sources.demo import catalog

        return getattr(catalog, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
