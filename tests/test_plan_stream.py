"""Streaming plan: lazy enumeration and exact counts equal the materialised plan."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from geodelta.pipelines.stages.plan import count_cells, iter_cells, plan_jobs
from geodelta.schemas import BuildConfig, parse_config
from tests.conftest import minimal_config


def _cfg(tmp_path: Path, **over: Any) -> BuildConfig:
    return parse_config(minimal_config(**over), base_dir=str(tmp_path))


def _geojson_aoi(tmp_path: Path) -> dict[str, Any]:
    ring = [[5.8, 45.0], [6.2, 45.02], [6.1, 45.12], [5.95, 45.06], [5.85, 45.1], [5.8, 45.0]]
    hole = [[5.98, 45.03], [6.02, 45.03], [6.0, 45.05], [5.98, 45.03]]
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "b"},
                "geometry": {"type": "Polygon", "coordinates": [ring, hole]},
            },
            {
                "type": "Feature",
                "properties": {"name": "a"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[6.0, 45.0], [6.3, 45.0], [6.3, 45.08], [6.0, 45.0]]],
                },
            },
        ],
    }
    (tmp_path / "aoi.geojson").write_text(json.dumps(fc))
    return {"geojson": "aoi.geojson"}


CASES = {
    "utm31_32": dict(aoi={"bbox": [5.90, 45.00, 6.10, 45.09]}),
    "intersects": dict(aoi={"bbox": [5.5, 45.0, 6.5, 45.3]}, grid={"keep": "intersects"}),
    "south_equator": dict(aoi={"bbox": [-60.1, -0.2, -59.9, 0.2]}),
    "small_cells": dict(aoi={"bbox": [5.97, 45.0, 6.03, 45.04]}, grid={"cell_size_px": 32}),
}


@pytest.mark.parametrize("case", [*CASES, "geojson"])
def test_count_and_stream_equal_plan(tmp_path: Path, case: str) -> None:
    over = {"aoi": _geojson_aoi(tmp_path)} if case == "geojson" else CASES[case]
    cfg = _cfg(tmp_path, **over)
    jobs = plan_jobs(cfg)
    assert jobs
    count = count_cells(cfg)
    assert count.total == len(jobs)
    assert count.by_split == dict(sorted(Counter(j.split for j in jobs).items()))
    assert count.by_zone == dict(sorted(Counter(j.cell_id[:3] for j in jobs).items()))
    assert list(iter_cells(cfg)) == [(j.cell_id, j.split, j.region) for j in jobs]


def test_cli_count_and_out(tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    import yaml
    from typer.testing import CliRunner

    from geodelta.pipelines.cli import app

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(minimal_config(aoi={"bbox": [5.90, 45.00, 6.10, 45.09]})))
    jobs = plan_jobs(_cfg(tmp_path, aoi={"bbox": [5.90, 45.00, 6.10, 45.09]}))
    res = CliRunner().invoke(app, ["plan", str(cfg_path), "--count"])
    assert res.exit_code == 0, res.output
    assert f"total\t{len(jobs)}" in res.output
    for zone, n in Counter(j.cell_id[:3] for j in jobs).items():
        assert f"zone {zone}\t{n}" in res.output
    for split, n in Counter(j.split for j in jobs).items():
        assert f"split {split}\t{n}" in res.output

    out = tmp_path / "cells.parquet"
    res = CliRunner().invoke(app, ["plan", str(cfg_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert table.column("cell_id").to_pylist() == [j.cell_id for j in jobs]
    assert table.column("split").to_pylist() == [j.split for j in jobs]
    assert table.column("crs").to_pylist() == [j.crs for j in jobs]
    bbox = list(
        zip(
            *(table.column(c).to_pylist() for c in ("lon_min", "lat_min", "lon_max", "lat_max")),
            strict=True,
        )
    )
    assert bbox == [j.bbox_lonlat for j in jobs]
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["version"] == "1.0.0" and geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["encoding"] == "WKB"
    import shapely

    geoms = shapely.from_wkb(table.column("geometry").to_pylist())
    assert all(g.geom_type == "Polygon" for g in geoms)
    # the WKB built in numpy is shapely's own, byte for byte: each cell's corners, closed
    raw = table.column("geometry").to_pylist()
    assert raw == list(
        shapely.to_wkb(shapely.polygons(shapely.get_coordinates(geoms).reshape(-1, 5, 2)))
    )
    for g, job in zip(geoms, jobs, strict=True):
        x0, y0, x1, y1 = g.bounds
        b = job.bbox_lonlat
        assert (
            b[0] <= x0 + 1e-12 and x1 <= b[2] + 1e-12 and b[1] <= y0 + 1e-12 and y1 <= b[3] + 1e-12
        )
