"""The quality report of a release: ``<release>/report/index.html`` (see :mod:`.render`).

Importing this package imports nothing heavy: :func:`write_report` and :func:`render_report`
load the report modules (numpy, pyarrow, Pillow, Jinja2; matplotlib on the first plot) when
they are first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geodelta.pipelines.report.render import render_report, write_report

__all__ = ["render_report", "write_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from geodelta.pipelines.report import render

        return getattr(render, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
