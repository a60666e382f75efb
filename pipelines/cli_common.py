"""What every ``geodelta`` command shares: the typer app, the one-line error printing, the
config and release loaders. The commands live in :mod:`geodelta.pipelines.cli` (building,
releasing, planning) and :mod:`geodelta.pipelines.cli_train` (the reference and baseline
models); both import only this module and the public API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from geodelta.errors import GeodeltaError
from geodelta.pipelines import api

console = Console(stderr=True)


def _say(message: str, prefix: str = "", style: str = "") -> None:
    """Print one user-facing line on stderr literally (no rich markup: ``[...]`` stays text),
    redacted (no secret reaches the console)."""
    text = Text.assemble((prefix, style), api.redact(message))
    console.print(text, soft_wrap=True, highlight=False)


def _one_line(exc: Exception) -> tuple[str, int]:
    """The one-line message and exit code of an error that reached the top of a command."""
    full = api.no_space(exc)
    if full is not None:
        where = full.filename or "the output folder"
        return f"no space left on device writing {where}; {api.space_note(full.filename)}", 2
    if isinstance(exc, ModuleNotFoundError):  # an extra that is not installed
        line = api.missing_module_line(exc.name)
        if line is not None:
            return line, 2
    if isinstance(exc, GeodeltaError):
        lines = str(exc).strip().splitlines()
        return (lines[0] if lines else type(exc).__name__), 2
    if isinstance(exc, OSError):  # a path that is a file, not writable, missing...
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot use{where}: {exc.strerror or exc}", 2
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})", 2
    first = (str(exc).strip().splitlines() or [""])[0]
    return (
        f"{type(exc).__name__}: {first} (unexpected; `geodelta --debug ...` shows the traceback)",
        1,
    )


class _Group(TyperGroup):
    """Every command: an error that escapes it prints one line, not a traceback
    (``geodelta --debug`` lets the traceback through)."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):  # usage errors, exits
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            message, code = _one_line(exc)
            _say(message, "error: ", "bold red")
            raise typer.Exit(code) from None


app = typer.Typer(
    name="geodelta",
    cls=_Group,
    help="Bitemporal satellite change datasets: STAC scenes -> captions, QA and change masks "
    "-> validated WebDataset releases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error (for a bug report)")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Show the engines' own logs (Beam, Dask) and the libraries' progress bars",
        ),
    ] = False,
) -> None:
    """Bitemporal satellite change datasets: STAC scenes -> captions, QA and change masks
    -> validated WebDataset releases."""
    api.set_verbose(verbose or api.is_verbose())


REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
DEMO_SERIES_CONFIG = REPO_ROOT / "configs" / "demo-series.yaml"


def _fail(message: str, code: int = 2) -> typer.Exit:
    _say(message, "error: ", "bold red")  # literally, redacted
    return typer.Exit(code)


def _load(config: Path, overrides: dict[str, Any] | None = None) -> api.BuildConfig:
    try:
        return api.load_config(config, overrides)
    except api.ConfigError as exc:
        raise _fail(str(exc)) from None


def _release(path: Path, what: str | None = None) -> Path:
    """``path`` if it is a release folder; else exit with one line naming it."""
    try:
        return api.require_release(path, what)
    except api.ReleaseError as exc:
        raise _fail(str(exc)) from None
