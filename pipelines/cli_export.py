"""The ``geodelta export`` command (registered on the app of :mod:`geodelta.pipelines.cli_common`
when :mod:`geodelta.pipelines.cli` imports this module)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from geodelta.errors import GeodeltaError
from geodelta.pipelines import api
from geodelta.pipelines.cli_common import _fail, _release, _say, app


@app.command("export")
def export_cmd(
    release: Annotated[Path, typer.Argument(help="A release folder")],
    out: Annotated[Path, typer.Option("--out", help="The export folder (must be empty)")],
    fmt: Annotated[
        str, typer.Option("--format", help="Export format: llava (LLaVA / TEOChat conversations)")
    ] = "llava",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the contents of a non-empty --out")
    ] = False,
) -> None:
    """Write RELEASE as instruction-tuning conversations: per split a <split>.json in the
    LLaVA / TEOChat layout, the before/after images next to it and a README of the format."""
    _release(release)
    try:
        result = api.export(release, out, fmt=fmt, overwrite=overwrite)
    except GeodeltaError as exc:
        raise _fail(str(exc)) from None
    counts = ", ".join(f"{split}: {n}" for split, n in result.conversations.items())
    _say(f"export ({fmt}): {counts} conversations, {result.images} images -> {out}")
