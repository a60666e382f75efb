"""geodelta: bitemporal satellite change datasets, from STAC catalogs to WebDataset releases.

The package is one import namespace over four top-level source folders:
``geodelta.schemas`` (records), ``geodelta.sources`` (STAC, rasters, demo catalog),
``geodelta.annotators`` (captions, QA, change models) and ``geodelta.pipelines``
(stages, Beam adapter, releases, CLI). Importing this package imports nothing heavy.
"""

from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("geodelta")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
