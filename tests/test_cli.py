"""The command line: --help everywhere, clear errors, schema output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from geodelta.pipelines.cli import app
from tests.conftest import minimal_config

runner = CliRunner()
COMMANDS = ["build", "demo", "demo-catalog", "verify", "report", "plan", "schema"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_top_level_help_lists_commands() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for command in COMMANDS:
        assert command in res.output


def test_schema_prints_json_schema() -> None:
    res = runner.invoke(app, ["schema", "TileJob"])
    assert res.exit_code == 0
    schema = json.loads(res.stdout)
    assert schema["title"] == "TileJob" and "cell_id" in schema["properties"]
    assert runner.invoke(app, ["schema", "Nope"]).exit_code == 2


def test_misspelt_config_key_is_named(tmp_path: Path) -> None:
    data = minimal_config()
    data["grid"] = {"cel_size_px": 64}
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(data))
    res = runner.invoke(app, ["build", str(cfg)])
    assert res.exit_code == 2
    assert "grid.cel_size_px: unknown key" in res.output


def test_plan_lists_cells(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(yaml.safe_dump(minimal_config()))
    res = runner.invoke(app, ["plan", str(cfg)])
    assert res.exit_code == 0
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert lines and all(ln.split("\t")[1] in ("EPSG:32631", "EPSG:32632") for ln in lines)


def test_verify_refuses_a_folder_without_manifest(tmp_path: Path) -> None:
    res = runner.invoke(app, ["verify", str(tmp_path)])
    assert res.exit_code == 2 and "manifest.json" in res.output


def test_the_cli_starts_without_heavy_imports() -> None:
    """`geodelta --help` loads no engine, model, table or validation library (lazy imports)."""
    import subprocess
    import sys

    heavy = (
        "torch",
        "apache_beam",
        "great_expectations",
        "openai",
        "pyarrow",
        "rasterio",
        "matplotlib",
        "distributed",
        "webdataset",
        "pandas",
    )
    code = (
        "import sys, geodelta.pipelines.cli\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
