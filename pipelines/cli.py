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
    _check_annotator(cfg)
    mode = "resume" if resume else "overwrite" if overwrite else "fresh"
    result = _run_build(cfg, mode, progress)
    _print_summary(result)
    typer.echo(str(result.release_dir))


def _annotation_overrides(
    annotator: str | None, base_url: str | None, model: str | None, api_key_env: str | None
) -> dict[str, Any]:
    """The ``annotation`` part of the config overrides from the demo's CLI options."""
    out: dict[str, Any] = {}
    if annotator is not None:
        out["annotator"] = annotator
    llm = {
        k: v
        for k, v in (("base_url", base_url), ("model", model), ("api_key_env", api_key_env))
        if v is not None
    }
    if llm:
        out["openai"] = llm
    return out


def _check_annotator(cfg: Any) -> None:
    """Fail before the build when the LLM annotator's key variable is not set (names it only)."""
    import os

    a = cfg.annotation
    env = a.openai.api_key_env
    if a.annotator == "openai" and env is not None and not os.environ.get(env):
        raise _fail(
            f"annotation.annotator is 'openai' but the environment variable {env} (named by "
            "annotation.openai.api_key_env) is not set; export the API key there"
        )


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
    scale: Annotated[float, typer.Option(help="AOI size factor (1 = the demo AOI)")] = 1.0,
    annotator: Annotated[
        str | None,
        typer.Option(help="Override annotation.annotator: 'template' or 'openai'"),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible endpoint (annotation.openai.base_url)"),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="LLM model name (annotation.openai.model)")
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(help="NAME of the environment variable holding the API key"),
    ] = None,
) -> None:
    """Write the synthetic demo catalog, build a release from it, verify it."""
    from geodelta.pipelines.verify import verify_release
    from geodelta.sources.demo_catalog import write_demo_catalog

    out_dir = out_dir.resolve()
    annotation = _annotation_overrides(annotator, base_url, model, api_key_env)
    overrides: dict[str, Any] = {"annotation": annotation} if annotation else {}
    _check_annotator(_load(config, overrides))  # before minutes of catalog writing
    console.print(f"writing the synthetic demo catalog to {out_dir / 'catalog'}")
    cat = write_demo_catalog(out_dir / "catalog", scale=scale)
    overrides["catalog"] = {"url": str(cat.catalog_path)}
    overrides["output"] = {"dir": str(out_dir / "release")}
    if scale != 1.0:
        overrides["aoi"] = {"bbox": list(cat.aoi_bbox)}
    cfg = _load(config, overrides)
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


@app.command("qa-balance")
def qa_balance_cmd(
    release_dir: Annotated[Path, typer.Argument(help="Release folder")],
) -> None:
    """Print the yes/no and answer-class balance of a release's QA (Markdown)."""
    from geodelta.pipelines.qa_balance import format_balance, qa_balance

    if not (release_dir / "manifest.json").exists():
        raise _fail(f"{release_dir} has no manifest.json; is it a release folder?")
    typer.echo(format_balance(qa_balance(release_dir)), nl=False)


@app.command()
def report(
    release_dir: Annotated[Path, typer.Argument(help="Release folder")],
    previous: Annotated[
        Path | None,
        typer.Option("--previous", help="Earlier release to diff against (added/removed/changed)"),
    ] = None,
    max_gallery: Annotated[int, typer.Option(help="Samples shown in the gallery")] = 8,
) -> None:
    """(Re)write the release's HTML report (report/index.html), optionally with a diff."""
    from geodelta.pipelines.release import ReleaseError
    from geodelta.pipelines.report import write_report

    for path, what in ((release_dir, "RELEASE_DIR"), (previous, "--previous")):
        if path is not None and not (path / "manifest.json").exists():
            raise _fail(f"{what} {path} has no manifest.json; is it a release folder?")
    try:
        out = write_report(release_dir, previous=previous, max_gallery=max_gallery)
    except ReleaseError as exc:
        raise _fail(str(exc)) from None
    typer.echo(str(out))


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
def search(
    config: Annotated[Path, typer.Argument(help="Build config (YAML)")],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run/--no-dry-run",
            help="Search and pair without reading imagery pixels (the only mode)",
        ),
    ] = True,
    max_cells: Annotated[int, typer.Option(help="Cells to search (0 = all planned)")] = 20,
    read_clear: Annotated[
        bool,
        typer.Option(
            "--read-clear",
            help="Read only the classification band (e.g. SCL) for pixel-level clear fractions; "
            "default: estimate them from each scene's eo:cloud_cover, reading no pixels",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Per cell: candidate scenes, the chosen pair, clear fractions and estimated bytes to read."""
    from geodelta.pipelines.plan import PlanError
    from geodelta.pipelines.search import dry_run as run_dry
    from geodelta.sources.catalog import CatalogError
    from geodelta.sources.profiles import check_config

    if not dry_run:
        raise _fail("search only has --dry-run (it writes nothing); use 'geodelta build' to build")
    cfg = _load(config)
    for problem in check_config(cfg):
        console.print(f"[yellow]warning:[/] {problem}")
    try:
        report = run_dry(cfg, max_cells=max_cells or None, read_clear=read_clear)
    except (PlanError, CatalogError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        out = {
            "cells_planned": report.cells_planned,
            "clear_source": report.clear_source,
            "estimated_bytes": report.estimated_bytes,
            "truncated_searches": report.truncated_searches,
            "cells": [c.as_dict() for c in report.cells],
        }
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(
        title=f"geodelta search --dry-run: {len(report.cells)} of {report.cells_planned} cells"
    )
    for col in ("cell", "t0 / t1 scenes", "before (clear)", "after (clear)", "labels", "est. MB"):
        table.add_column(col)

    def fmt(v: float | None) -> str:
        return "unknown" if v is None else f"{v:.2f}"

    for c in report.cells:
        row = c.as_dict()
        if c.pair is None:
            table.add_row(
                c.cell_id,
                f"{c.candidates_t0} / {c.candidates_t1}",
                f"[red]{c.reason}[/]",
                "",
                "",
                "",
            )
            continue
        labels = f"{row['label_before'] or '-'} -> {row['label_after'] or '-'}"
        table.add_row(
            c.cell_id,
            f"{c.candidates_t0} / {c.candidates_t1}",
            f"{row['before']} ({fmt(row['before_clear'])})",
            f"{row['after']} ({fmt(row['after_clear'])})",
            labels,
            f"{c.estimated_bytes / 1e6:.1f}",
        )
    stdout = Console()
    (stdout if stdout.is_terminal else Console(width=200)).print(table)
    how = (
        "scene-wide eo:cloud_cover estimates (the pixel-level fraction over each cell is computed "
        "at build time; --read-clear reads it now)"
        if report.clear_source == "scene_cloud_cover_estimate"
        else "pixel-level, from the classification band"
    )
    console.print(f"clear fractions: {how}")
    paired = sum(c.pair is not None for c in report.cells)
    console.print(
        f"{paired} of {len(report.cells)} cells paired; estimated pixels to read: "
        f"{report.estimated_bytes / 1e6:.1f} MB (uncompressed, in the cell windows)"
    )
    if report.truncated_searches:
        console.print(
            f"[yellow]warning:[/] {report.truncated_searches} searches stopped at catalog.max_items"
        )


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


baseline_app = typer.Typer(
    name="baseline",
    help="The trained baseline change model (FC-Siam-diff): train on a release, evaluate.",
    no_args_is_help=True,
)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("train")
def baseline_train(
    shards: Annotated[
        Path, typer.Option("--shards", help="Release folder (or its shards/ folder) to train on")
    ],
    out: Annotated[Path, typer.Option("--out", help="Parent folder of the saved model")] = Path(
        "models"
    ),
    epochs: Annotated[int, typer.Option(help="Passes over the train split")] = 10,
    batch_size: Annotated[int, typer.Option(help="Samples per batch")] = 8,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of init, shuffling and augmentation")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes")] = 2,
    patch: Annotated[int, typer.Option(help="Random crop size in pixels (0 = whole samples)")] = 0,
    base_channels: Annotated[int, typer.Option(help="Width of the first level")] = 16,
    split: Annotated[str, typer.Option(help="Split to train on")] = "train",
    threshold: Annotated[float, typer.Option(help="Threshold of the reported metrics")] = 0.5,
    threads: Annotated[
        int, typer.Option(help="torch threads of the training process (0 = torch's default)")
    ] = 0,
) -> None:
    """Train FC-Siam-diff on a release's shards; save weights under their hash + a model card."""
    from geodelta import __version__
    from geodelta.annotators.change_model import TrainConfig
    from geodelta.pipelines.baseline import ShardError, train_from_shards

    try:
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            workers=workers,
            patch=patch or None,
            base_channels=base_channels,
            threads=threads or None,
        )
        saved, metrics = train_from_shards(
            shards,
            out,
            cfg,
            split=split,
            threshold=threshold,
            code_version=__version__,
            on_epoch=lambda e, loss: console.print(f"epoch {e + 1}/{epochs}: loss {loss:.4f}"),
        )
    except (ShardError, ValueError) as exc:
        raise _fail(str(exc)) from None
    for name, m in metrics.items():
        console.print(
            f"{name}: precision {m['precision']:.3f} recall {m['recall']:.3f} "
            f"F1 {m['f1']:.3f} IoU {m['iou']:.3f}"
        )
    console.print(f"model card: {saved.card_md}")
    typer.echo(str(saved.weights))


@baseline_app.command("eval")
def baseline_eval(
    weights: Annotated[Path, typer.Option("--weights", help="weights.pt (or its folder)")],
    shards: Annotated[Path, typer.Option("--shards", help="Release folder (or its shards/)")],
    split: Annotated[str, typer.Option(help="Split to score")] = "test",
    threshold: Annotated[float, typer.Option(help="Change probability threshold")] = 0.5,
    batch_size: Annotated[int, typer.Option(help="Pairs per forward pass")] = 8,
) -> None:
    """Score baseline weights on one split of a release (change-class metrics, JSON)."""
    from geodelta.annotators.baseline import BaselineChangeAnnotator
    from geodelta.pipelines.baseline import ShardError, evaluate_on_shards, find_shards

    try:
        found = find_shards(shards, split)
        if not found.urls:
            raise ShardError(f"no {split}-*.tar shards under {shards}")
        annotator = BaselineChangeAnnotator(weights, batch_size=batch_size)
        metrics = evaluate_on_shards(annotator, found.urls, threshold=threshold)
    except (ShardError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    out = {"model_id": annotator.model_id, "split": split, "threshold": threshold}
    typer.echo(json.dumps({**out, **metrics.as_dict()}, indent=2))


if __name__ == "__main__":  # python -m geodelta.pipelines.cli
    app()
