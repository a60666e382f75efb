"""The ``geodelta`` command line (typer).

Every command has ``--help``. Errors a user can fix (a bad config key, an existing release
directory, a failed verification) print one clear message and exit non-zero, without a traceback.
Commands call :mod:`geodelta.pipelines.api` only; the errors caught are the ones it exports
(the :mod:`geodelta.errors` family).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from geodelta.errors import GeodeltaError
from geodelta.pipelines import api, cli_export, cli_snapshot  # noqa: F401  (their commands)
from geodelta.pipelines.cli_common import (  # noqa: F401  (re-exported: cli.app, cli._say...)
    DEMO_CONFIG,
    DEMO_SERIES_CONFIG,
    REPO_ROOT,
    _fail,
    _load,
    _one_line,
    _release,
    _say,
    app,
    console,
)
from geodelta.pipelines.cli_train import _reference_lines, _train_reference


def _print_summary(result: api.BuildResult) -> None:
    table = Table(title="geodelta build", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for label, value in api.summary_rows(result):
        table.add_row(Text(label), Text(value))  # literally: reasons may hold [brackets]
    console.print(table)


def _run_build(
    cfg: Any, mode: str, progress: bool, confirm: bool = False, from_release: str | None = None
) -> Any:
    try:
        return api.build(
            cfg,
            mode=mode,  # type: ignore[arg-type]
            progress=progress,
            on_stage=(lambda name: _say(name, "> ", "bold cyan")) if progress else None,
            confirm=confirm,
            from_release=from_release,
        )
    except (api.BreakerError, api.EmptyReleaseError, api.BudgetError) as exc:  # not a mistake
        raise _fail(str(exc), code=1) from None
    except GeodeltaError as exc:  # BuildError, PlanError, CatalogError, OutputError...
        raise _fail(str(exc)) from None
    except Exception as exc:
        full = api.no_space(exc)
        if full is None:
            raise
        where = full.filename or api.output_location(cfg)
        raise _fail(
            f"no space left on device writing {where}; {api.space_note(full.filename, cfg)}"
        ) from None


def _runner_overrides(
    runner: str | None, dask_address: str | None, options: list[str]
) -> dict[str, Any]:
    """The ``runner`` part of the config overrides from ``build``'s options."""
    out: dict[str, Any] = {}
    if runner is not None:
        out["name"] = runner
    if dask_address is not None:
        out["dask_address"] = dask_address
        out.setdefault("name", "dask")
    if options:
        out["options"] = options
    return out


# Beam pipeline options go after `--` (click hands them over as extra arguments); an unknown
# option before it is refused (with the close match), never passed to Beam.
@app.command(context_settings={"allow_extra_args": True})
def build(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Build config (YAML), one per dataset version")],
    resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted build")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild from scratch")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
    runner: Annotated[
        str | None,
        typer.Option(
            help="Override runner.name: direct (Beam FnApiRunner), inprocess, dask (Beam "
            "DaskRunner), beam (the runner named by the pipeline options after `--`)"
        ),
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (runner.dask_address); none: a LocalCluster"),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", help="Override output.dir: a folder or an fsspec URL"),
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(help="Override output.work_dir (local folder a URL release is built in)"),
    ] = None,
    staging: Annotated[
        str | None,
        typer.Option(
            "--staging",
            help="Override output.staging: where workers commit cells, a folder or an fsspec "
            "URL every worker reaches (s3://..., gs://...)",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only run the pre-flight (config, output folder, catalog, collections, a "
            "sampled item's assets and file headers; no pixels) and print what was checked: "
            "exit 0 when a build could start, 2 otherwise",
        ),
    ] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="Build even when the estimate exceeds a budget limit (budget section)"
        ),
    ] = False,
    from_release: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="A previous release of this dataset (a folder or an fsspec URL): copy its "
            "samples whose cell, items and sample-shaping config are unchanged instead of "
            "processing them; writes the catalog drift since it (drift.json)",
        ),
    ] = None,
    export_llava: Annotated[
        Path | None,
        typer.Option(
            "--export-llava",
            help="After the build, export the release as LLaVA / TEOChat conversations into "
            "this (empty or new) folder, as `geodelta export --format llava` does",
        ),
    ] = None,
) -> None:
    """Build the release a config describes.

    Beam pipeline options after `--` pass straight through to the runner (runner.options),
    e.g. `geodelta build CONFIG --runner beam -- --runner=FlinkRunner --flink_master=HOST:8081`.
    """
    if resume and overwrite:
        raise _fail("--resume and --overwrite exclude each other")
    if ctx.args and not ctx.args[0].startswith("-"):  # an option's value may follow it
        raise _fail(f"unexpected argument {ctx.args[0]!r}; Beam pipeline options go after `--`")
    overrides: dict[str, Any] = {}
    runner_part = _runner_overrides(runner, dask_address, list(ctx.args))
    if runner_part:
        overrides["runner"] = runner_part
    output: dict[str, Any] = {}
    if out is not None:
        output["dir"] = out if "://" in out else str(Path(out).resolve())
    if work_dir is not None:
        output["work_dir"] = str(work_dir.resolve())
    if staging is not None:
        output["staging"] = staging if "://" in staging else str(Path(staging).resolve())
    if output:
        overrides["output"] = output
    cfg = _load(config, overrides)
    _check_annotator(cfg)
    mode = "resume" if resume else "overwrite" if overwrite else "fresh"
    if export_llava is not None and export_llava.exists() and any(export_llava.iterdir()):
        raise _fail(  # before any work: the export would refuse it after the build
            f"--export-llava {export_llava} is not empty; give a new or empty folder"
        )
    if check:
        _check_only(cfg, mode, yes, from_release)
        return
    result = _run_build(cfg, mode, progress, confirm=yes, from_release=from_release)
    _print_summary(result)
    if export_llava is not None:
        done = api.export(result.release_dir, export_llava, fmt="llava")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(done.conversations.items()))
        _say(f"export: llava conversations ({counts}) -> {done.out_dir}")
    typer.echo(result.location)


def _check_only(cfg: Any, mode: str, yes: bool, from_release: str | None = None) -> None:
    """``build --check``: the build's own refusals, run without building; one line per check."""
    for problem in api.check_config(cfg):
        console.print(f"[yellow]warning:[/] {problem}")
    try:
        est = api.estimate(cfg, sample_catalog=False) if yes else api.check_budget(cfg)
        api.check_build(cfg, mode)  # type: ignore[arg-type]
        lines = [f"budget: {est.cells:,} cells" + (", --yes" if yes else ", within its limits")]
        lines.append(f"output: {api.output_location(cfg)} can take a {mode} build")
        if from_release is not None:  # the refusals of --from, before the catalog is asked
            lines.append(api.check_from(cfg, from_release))
        lines += api.preflight(cfg)
    except GeodeltaError as exc:
        raise _fail(str(exc)) from None
    for line in lines:
        typer.echo(f"ok  {line}")
    typer.echo("pre-flight passed: the build can start")


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
    scale: Annotated[
        float, typer.Option(help="AOI size factor (1 = the demo AOI, 75 cells; 0.1-10)")
    ] = 1.0,
    series: Annotated[
        bool, typer.Option("--series", help="Five summers 2018-2022 for sequence builds")
    ] = False,
) -> None:
    """Write the SYNTHETIC demo STAC catalog (scenes, land cover, truth)."""
    cat = api.write_demo_catalog(out_dir, seed=seed, scale=scale, series=series)
    typer.echo(str(cat.catalog_path))


@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the catalog and the release")
    ] = Path("build/demo"),
    config: Annotated[Path, typer.Option(help="Demo build config")] = DEMO_CONFIG,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
    scale: Annotated[
        float, typer.Option(help="AOI size factor (1 = the demo AOI, 75 cells; 0.1-10)")
    ] = 1.0,
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
    reference: Annotated[
        bool, typer.Option(help="Train the reference model on the release (train-reference)")
    ] = True,
    yes: Annotated[bool, typer.Option("--yes", help="Build even over a budget limit")] = False,
    series: Annotated[
        bool,
        typer.Option(
            "--series",
            help="Sequences: five summers 2018-2022 (configs/demo-series.yaml, out build/demo-series)",
        ),
    ] = False,
) -> None:
    """Write the synthetic demo catalog, build a release from it, train the reference model on
    it, verify it."""
    if series:
        config = DEMO_SERIES_CONFIG if config == DEMO_CONFIG else config
        out_dir = Path("build/demo-series") if out_dir == Path("build/demo") else out_dir
    out_dir = out_dir.resolve()
    annotation = _annotation_overrides(annotator, base_url, model, api_key_env)
    overrides: dict[str, Any] = {"annotation": annotation} if annotation else {}
    _check_annotator(_load(config, overrides))  # before minutes of catalog writing
    _say(f"writing the synthetic demo catalog to {out_dir / 'catalog'}")
    cat = api.write_demo_catalog(out_dir / "catalog", scale=scale, series=series)
    overrides["catalog"] = {"url": str(cat.catalog_path)}
    overrides["output"] = {"dir": str(out_dir / "release")}
    if scale != 1.0:
        overrides["aoi"] = {"bbox": list(cat.aoi_bbox)}
    cfg = _load(config, overrides)
    result = _run_build(cfg, "overwrite", progress, confirm=yes)
    _print_summary(result)
    if reference:
        _say("training the reference model (geodelta train-reference)")
        try:
            ref = _train_reference(
                result.release_dir, None, report=True, verbose=False, strict=True
            )
            for line in _reference_lines(ref):
                _say(line)
        except api.ReferenceError as exc:  # e.g. a --scale too small for a test split
            _say(str(exc), "reference model skipped: ", "yellow")  # redacted
    check = api.verify(result.release_dir)
    if not check.ok:
        raise _fail("verify failed:\n" + "\n".join(check.problems), code=1)
    _say(f"{check.samples} samples", "verified ", "green")
    _say(f"report: {result.release_dir / 'report' / 'index.html'}")
    typer.echo(str(result.release_dir))


@app.command()
def verify(
    release: Annotated[
        str, typer.Argument(help="Release folder or fsspec URL (holds manifest.json)")
    ],
    strict: Annotated[
        bool,
        typer.Option("--strict", help="A file the manifest does not list is an error (release)"),
    ] = False,
) -> None:
    """Recompute every checksum and decode every member of a release, and check its manifest."""
    try:  # a URL is downloaded to a temp folder first unless file://
        result = api.verify(release, strict=strict)
    except GeodeltaError as exc:  # OutputError, ReleaseError
        raise _fail(str(exc)) from None
    for note in result.notes:
        _say(note, "note: ", "yellow")
    if not result.ok:
        for problem in result.problems:
            _say(problem, "x ", "red")
        raise _fail(f"{len(result.problems)} problem(s) in {release}", code=1)
    typer.echo(f"ok: {result.samples} samples verified in {release}")


def _print_gate(gate: Any) -> None:
    table = Table(title=Text(f"gate: {gate.release_name}"))
    for col in ("metric", "value", "previous", "min", "max_drop", "result"):
        table.add_column(col)
    for row in api.format_rules(gate):
        style = "red" if row[-1] == "FAIL" else None
        table.add_row(*(Text(str(c)) for c in row), style=style)
    console.print(table)
    _say(f"previous release: {gate.previous or 'none'}")
    for note in gate.notes:
        _say(note, "note: ", "yellow")


@app.command("release")
def release_cmd(
    release_dir: Annotated[Path, typer.Argument(help="Built release folder (holds manifest.json)")],
    releases: Annotated[
        Path, typer.Option("--releases", help="Folder of published releases (LATEST lives there)")
    ],
    previous: Annotated[
        Path | None,
        typer.Option("--previous", help="Release the gate compares with (default: LATEST)"),
    ] = None,
    promote: Annotated[
        bool,
        typer.Option("--promote", help="Make the reference change model the next baseline"),
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Verify and run the gate only; move nothing")
    ] = False,
) -> None:
    """Verify, gate (reference metrics vs the config's gate rules) and publish a release."""
    if check and promote:
        raise _fail("--check moves nothing; it cannot --promote")
    _release(release_dir, "RELEASE_DIR")
    if previous is not None:
        _release(previous, "--previous")
    if check:
        result = api.verify(release_dir, strict=True)  # as publishing verifies
        if not result.ok:
            for problem in result.problems:
                _say(problem, "x ", "red")
            raise _fail(f"{len(result.problems)} problem(s) in {release_dir}", code=1)
        try:
            gate = api.check_gate(release_dir, previous, releases_dir=releases)
        except api.PublishError as exc:
            raise _fail(str(exc)) from None
        _print_gate(gate)
        if not gate.ok:
            raise _fail("\n".join(gate.problems), code=1)
        typer.echo(f"ok: {result.samples} samples verified; the gate passes for {release_dir}")
        return
    try:
        out = api.publish(release_dir, releases, previous=previous, promote=promote)
    except api.GateError as exc:
        _print_gate(exc.result)
        raise _fail(str(exc), code=1) from None
    except api.PublishError as exc:
        raise _fail(str(exc), code=1) from None
    if out.gate is not None:
        _print_gate(out.gate)
    if out.already_published:
        _say(f"{out.target} was already published from this config; LATEST points at it")
        if out.leftover is not None:
            _say(f"{out.leftover} was left in place (a duplicate)", "note: ", "yellow")
    else:
        _say(f"{out.samples} samples to {out.target}", "published ", "green")
    if out.promotion is not None:
        p = out.promotion
        _say(f"promoted {p.model_id} from {p.release} to {p.directory}")
        console.print(f"next version: {p.config_line}", markup=False, soft_wrap=True)
        console.print(p.config_yaml, markup=False, highlight=False, soft_wrap=True)
    typer.echo(str(out.target))


@app.command("qa-balance")
def qa_balance_cmd(
    release_dir: Annotated[Path, typer.Argument(help="Release folder")],
) -> None:
    """Print the yes/no and answer-class balance of a release's QA (Markdown)."""
    typer.echo(api.format_balance(api.qa_balance(_release(release_dir))), nl=False)


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
    try:
        out = api.report(release_dir, previous=previous, max_gallery=max_gallery)
    except api.ReleaseError as exc:
        raise _fail(str(exc)) from None
    typer.echo(str(out))


@app.command()
def plan(
    config: Annotated[Path, typer.Argument(help="Build config (YAML)")],
    count: Annotated[
        bool, typer.Option("--count", help="Print cells per split and per zone, and the total")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Stream the cells to this GeoParquet file")
    ] = None,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate",
            help="Estimate the build: cells, STAC searches, bytes read, CPU-hours, output "
            "size, LLM tokens and USD, against the budget section (reads no pixel)",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="--estimate as JSON")] = False,
) -> None:
    """List the cells a config plans, with their splits (reads no pixels)."""
    cfg = _load(config)
    try:  # PlanError
        if estimate or as_json:
            est = api.estimate(cfg)
            typer.echo(json.dumps(est.as_dict(), indent=2) if as_json else "\n".join(est.lines()))
            return
        if count:
            pc = api.plan_count(cfg)
            rows = [f"split {k}\t{n}" for k, n in pc.by_split.items()]
            rows += [f"zone {k}\t{n}" for k, n in pc.by_zone.items()]
            typer.echo("\n".join([*rows, f"total\t{pc.total}"]))
        if out is not None:
            _say(f"{api.write_plan(cfg, out)} cells -> {out}")
        jobs = [] if count or out is not None else api.plan(cfg)
    except GeodeltaError as exc:
        raise _fail(str(exc)) from None
    if count or out is not None:
        return
    for job in jobs:
        typer.echo(f"{job.cell_id}\t{job.crs}\t{job.split}\t{job.region}")
    _say(f"{len(jobs)} cells")


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
    max_cells: Annotated[
        int, typer.Option(help="Cells to search, evenly spaced (0 = every planned cell)")
    ] = 0,
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
    if not dry_run:
        raise _fail("search only has --dry-run (it writes nothing); use 'geodelta build' to build")
    cfg = _load(config)
    for problem in api.check_config(cfg):
        _say(problem, "warning: ", "yellow")
    try:
        report = api.search(cfg, max_cells=max_cells or None, read_clear=read_clear)
    except GeodeltaError as exc:  # PlanError, CatalogError
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    n, m = len(report.cells), report.cells_planned
    table = Table(title=f"geodelta search --dry-run: {f'sampled {n} of {m}' if n < m else m} cells")
    cols = ("scenes / dates", "first date (clear)", "last date (clear)")
    if not report.series:
        cols = ("t0 / t1 scenes", "before (clear)", "after (clear)")
    for col in ("cell", *cols, "labels", "est. MB"):
        table.add_column(col)

    def fmt(v: float | None) -> str:
        return "unknown" if v is None else f"{v:.2f}"

    for c in report.cells:
        row = c.as_dict()
        if c.pair is None:
            table.add_row(
                Text(c.cell_id),
                f"{c.candidates_t0} / {c.candidates_t1}",
                Text(str(c.reason), style="red"),
                "",
                "",
                "",
            )
            continue
        labels = f"{row['label_before'] or '-'} -> {row['label_after'] or '-'}"
        table.add_row(
            Text(c.cell_id),
            f"{c.candidates_t0} / {c.candidates_t1}",
            Text(f"{row['before']} ({fmt(row['before_clear'])})"),
            Text(f"{row['after']} ({fmt(row['after_clear'])})"),
            Text(labels),
            f"{c.estimated_bytes / 1e6:.1f}",
        )
    stdout = Console()
    (stdout if stdout.is_terminal else Console(width=200)).print(table)
    for line in report.summary_lines():
        _say(line)
    if report.truncated_searches:
        _say(
            f"{report.truncated_searches} searches stopped at catalog.max_items",
            "warning: ",
            "yellow",
        )


@app.command()
def schema(
    name: Annotated[str | None, typer.Argument(help="One record name (default: all)")] = None,
) -> None:
    """Print the JSON Schema of the records that cross stage boundaries."""
    schemas = api.json_schemas()
    if name is not None:
        if name not in schemas:
            raise _fail(f"unknown record {name!r}; known: {', '.join(schemas)}")
        schemas = schemas[name]
    typer.echo(json.dumps(schemas, indent=2))


if __name__ == "__main__":  # python -m geodelta.pipelines.cli
    app()
