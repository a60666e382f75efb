"""The ``geodelta`` command line (typer).

Every command has ``--help``. Errors a user can fix (a bad config key, an existing release
directory, a failed verification) print one clear message and exit non-zero, without a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="geodelta",
    help="Bitemporal satellite change datasets: STAC scenes -> captions, QA and change masks "
    "-> validated WebDataset releases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _load(config: Path, overrides: dict[str, Any] | None = None) -> Any:
    from geodelta.schemas import ConfigError, load_config

    try:
        return load_config(config, overrides)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _print_summary(result: Any) -> None:
    from geodelta.pipelines.build import summary_rows

    table = Table(title="geodelta build", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for label, value in summary_rows(result):
        table.add_row(label, value)
    console.print(table)


def _run_build(cfg: Any, mode: str, progress: bool) -> Any:
    from geodelta.pipelines.build import BuildError, build
    from geodelta.pipelines.plan import PlanError
    from geodelta.sources.catalog import CatalogError

    try:
        return build(
            cfg,
            mode=mode,  # type: ignore[arg-type]
            progress=progress,
            on_stage=(lambda name: console.print(f"[bold cyan]>[/] {name}")) if progress else None,
        )
    except (BuildError, PlanError, CatalogError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def build(
    config: Annotated[Path, typer.Argument(help="Build config (YAML), one per dataset version")],
    resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted build")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild from scratch")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
) -> None:
    """Build the release a config describes."""
    if resume and overwrite:
        raise _fail("--resume and --overwrite exclude each other")
    cfg = _load(config)
    mode = "resume" if resume else "overwrite" if overwrite else "fresh"
    result = _run_build(cfg, mode, progress)
    _print_summary(result)
    typer.echo(str(result.release_dir))


@app.command("demo-catalog")
def demo_catalog(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the synthetic catalog to")],
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    scale: Annotated[float, typer.Option(help="AOI size factor (1 = the demo AOI)")] = 1.0,
) -> None:
    """Write the SYNTHETIC demo STAC catalog (scenes, land cover, truth)."""
    from geodelta.sources.demo_catalog import write_demo_catalog

    cat = write_demo_catalog(out_dir, seed=seed, scale=scale)
    typer.echo(str(cat.catalog_path))


@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the catalog and the release")
    ] = Path("build/demo"),
    config: Annotated[Path, typer.Option(help="Demo build config")] = DEMO_CONFIG,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
) -> None:
    """Write the synthetic demo catalog, build a release from it, verify it."""
    from geodelta.pipelines.verify import verify_release
    from geodelta.sources.demo_catalog import write_demo_catalog

    out_dir = out_dir.resolve()
    console.print(f"writing the synthetic demo catalog to {out_dir / 'catalog'}")
    cat = write_demo_catalog(out_dir / "catalog")
    cfg = _load(
        config,
        {"catalog": {"url": str(cat.catalog_path)}, "output": {"dir": str(out_dir / "release")}},
    )
    result = _run_build(cfg, "overwrite", progress)
    _print_summary(result)
    check = verify_release(result.release_dir)
    if not check.ok:
        raise _fail("verify failed:\n" + "\n".join(check.problems), code=1)
    console.print(f"[green]verified[/] {check.samples} samples")
    console.print(f"report: {result.release_dir / 'report' / 'index.html'}")
    typer.echo(str(result.release_dir))


@app.command()
def verify(
    release_dir: Annotated[Path, typer.Argument(help="Release folder (holds manifest.json)")],
) -> None:
    """Recompute every checksum and decode every member of a release."""
    from geodelta.pipelines.verify import verify_release

    if not (release_dir / "manifest.json").exists():
        raise _fail(f"{release_dir} has no manifest.json; is it a release folder?")
    result = verify_release(release_dir)
    if not result.ok:
        for problem in result.problems:
            console.print(f"[red]x[/] {problem}")
        raise _fail(f"{len(result.problems)} problem(s) in {release_dir}", code=1)
    typer.echo(f"ok: {result.samples} samples verified in {release_dir}")


@app.command()
def report(
    release_dir: Annotated[Path, typer.Argument(help="Release folder")],
) -> None:
    """(Re)write the release's HTML report."""
    from geodelta.pipelines.report import write_report

    typer.echo(str(write_report(release_dir)))


@app.command()
def plan(
    config: Annotated[Path, typer.Argument(help="Build config (YAML)")],
) -> None:
    """List the cells a config plans, with their splits (reads no pixels)."""
    from geodelta.pipelines.plan import PlanError, plan_jobs

    cfg = _load(config)
    try:
        jobs = plan_jobs(cfg)
    except PlanError as exc:
        raise _fail(str(exc)) from None
    for job in jobs:
        typer.echo(f"{job.cell_id}\t{job.crs}\t{job.split}\t{job.region}")
    console.print(f"{len(jobs)} cells")


@app.command()
def schema(
    name: Annotated[str | None, typer.Argument(help="One record name (default: all)")] = None,
) -> None:
    """Print the JSON Schema of the records that cross stage boundaries."""
    from geodelta.schemas import json_schemas

    schemas = json_schemas()
    if name is not None:
        if name not in schemas:
            raise _fail(f"unknown record {name!r}; known: {', '.join(schemas)}")
        schemas = schemas[name]
    typer.echo(json.dumps(schemas, indent=2))


if __name__ == "__main__":  # python -m geodelta.pipelines.cli
    app()
