"""Optional imports that name the pip extra to install: the one helper for all of them.

This is the ground floor: it imports nothing from the rest of geodelta.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from geodelta.errors import MissingDependencyError

__all__ = ["install_hint", "optional_import"]


def install_hint(extra: str) -> str:
    """The command that installs an extra of geodelta."""
    return f"pip install 'geodelta[{extra}]'"


def optional_import(module: str, extra: str, *, purpose: str = "") -> ModuleType:
    """Import ``module``, or fail with the exact install command.

    Args:
        module: the module to import (``"great_expectations"``, ``"openai"``...).
        extra: the geodelta extra that installs it (``"validation"``, ``"llm"``...).
        purpose: what needs it, for the message (``"GX validation"``).

    Raises:
        MissingDependencyError: the module is not installed; the message names the extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" ({purpose})" if purpose else ""
        raise MissingDependencyError(
            f"{module} is not installed{what}; install it with: {install_hint(extra)}"
        ) from exc
