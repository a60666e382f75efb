"""One error family for geodelta: every error it raises on purpose is a :class:`GeodeltaError`.

Each family member also derives from the built-in exception it replaced (``ValueError``,
``RuntimeError``, ``ImportError``, ``KeyError``), so ``except ValueError`` around a geodelta call
keeps working. Errors carry context as attributes where there is any (the config key to change,
the file, the item id, the sample key), and their message is one line naming what to change.

This is the ground floor: it imports nothing from the rest of geodelta.
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "ConfigError",
    "GeodeltaError",
    "MissingDependencyError",
    "ModelError",
    "ReleaseError",
    "SourceError",
    "StageError",
]


class GeodeltaError(Exception):
    """Base of every error geodelta raises on purpose."""


class ConfigError(GeodeltaError, ValueError):
    """A config (or an argument standing for one) that cannot work; names the key to change."""


class SourceError(GeodeltaError, RuntimeError):
    """A catalog, a raster read or a signing service that failed; names the file or item."""


class StageError(GeodeltaError, ValueError):
    """A stage that cannot process one record; the record goes to quarantine with the reason."""


class BuildError(GeodeltaError, RuntimeError):
    """A build that cannot start or finish; says what to change."""


class ReleaseError(GeodeltaError, RuntimeError):
    """A release that cannot be written, read, verified or published; names the file."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class ModelError(GeodeltaError, ValueError):
    """A model, its weights or its training that cannot work; names the file or setting."""


class MissingDependencyError(GeodeltaError, ImportError):
    """An optional dependency that is not installed; the message names the pip extra."""
