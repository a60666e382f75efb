"""The ``geodelta snapshot`` and ``geodelta drift`` commands (registered on the app of
:mod:`geodelta.pipelines.cli_common` when :mod:`geodelta.pipelines.cli` imports this module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from geodelta.errors import GeodeltaError
from geodelta.pipelines import api
from geodelta.pipelines.cli_common import _fail, _load, _say, app


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


@app.command("drift")
def drift_cmd(
    release: Annotated[Path, typer.Argument(help="A release folder (with snapshot/items.parquet)")],
    catalog: Annotated[
        str | None,
        typer.Option(
            "--catalog",
            help="Search this catalog instead of the one the release records: a STAC API URL, "
            "a local catalog.json, or a snapshot .parquet (needed for a local catalog)",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the full comparison as JSON on stdout")
    ] = False,
) -> None:
    """Run RELEASE's searches again and compare with its snapshot: items added, removed,
    changed (which fields) and the samples affected. Exit 0: no drift; 1: drift; 2: bad
    input (not a release, no snapshot, the catalog cannot be searched)."""
    import json

    try:
        found = api.drift(release, catalog=catalog)
    except GeodeltaError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(api.redact(json.dumps(found.as_dict(), indent=2, sort_keys=True)))
    else:
        for line in api.drift_lines(found):
            typer.echo(api.redact(line))
    if found.drifted:
        raise typer.Exit(1)
