"""The ``geodelta snapshot`` command (registered on the app of
:mod:`geodelta.pipelines.cli_common` when :mod:`geodelta.pipelines.cli` imports this module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from geodelta.pipelines import api
from geodelta.pipelines.cli_common import _load, _say, app


@app.command("snapshot")
def snapshot_cmd(
    config: Annotated[Path, typer.Argument(help="Build config (YAML)")],
    out: Annotated[
        str,
        typer.Option(
            "--out", help="The snapshot file to write (.parquet; a local path or an fsspec URL)"
        ),
    ],
) -> None:
    """Write the STAC items a build of CONFIG would search to a stac-geoparquet file, reading
    no pixel; build from it with `catalog.kind: snapshot` and `catalog.url: FILE`."""
    cfg = _load(config)
    items, sha = api.snapshot(cfg, out)
    _say(f"snapshot: {items} items -> {out} (sha256 {sha[:12]})")
