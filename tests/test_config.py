"""Config validation: unknown keys are named, values are checked, paths resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from geodelta.schemas import ConfigError, load_config, parse_config
from tests.conftest import REPO, minimal_config


def test_minimal_config_parses_with_defaults() -> None:
    cfg = parse_config(minimal_config())
    assert cfg.grid.cell_size_px == 128
    assert cfg.time.t0[0].isoformat() == "2020-06-01T00:00:00+00:00"
    assert cfg.splits.fractions == {"train": 0.8, "val": 0.1, "test": 0.1}


def test_misspelt_key_is_named_with_its_path() -> None:
    data = minimal_config()
    data["pairing"] = {"min_clear_fracton": 0.9}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "pairing.min_clear_fracton: unknown key" in str(err.value)


def test_missing_and_bad_values_are_named() -> None:
    data = minimal_config()
    del data["imagery"]
    data["grid"] = {"cell_size_px": 4}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    text = str(err.value)
    assert "imagery: required key is missing" in text
    assert "grid.cell_size_px" in text


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"aoi": {"bbox": [6.0, 45.0, 5.0, 46.0]}}, "min_lon"),
        ({"aoi": {}}, "exactly one of aoi.bbox or aoi.geojson"),
        (
            {"time": {"t0": ["2021-01-01", "2020-01-01"], "t1": ["2021-06-01", "2021-08-31"]}},
            "start < end",
        ),
        ({"labels": {"kind": "landcover"}}, "labels.collection is required"),
        ({"splits": {"fractions": {"train": 0.5, "test": 0.2}}}, "sum to 1"),
    ],
)
def test_semantic_errors(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(minimal_config(**patch))


def test_config_hash_ignores_where_the_file_lives() -> None:
    a = parse_config(minimal_config(), base_dir="/a")
    b = parse_config(minimal_config(), base_dir="/b")
    c = parse_config(minimal_config(version="0.0.2"), base_dir="/a")
    elsewhere = parse_config(minimal_config(output={"dir": "/other"}, runner={"name": "inprocess"}))
    assert a.config_hash() == b.config_hash() == elsewhere.config_hash() != c.config_hash()


def test_shipped_demo_config_loads_and_resolves_paths() -> None:
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.name == "geodelta-demo"
    assert Path(cfg.resolve(cfg.output.dir)) == (REPO / "build" / "demo" / "release").resolve()
    assert cfg.resolve("https://example.com/catalog.json") == "https://example.com/catalog.json"


def test_yaml_errors_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
