"""plan: stable cell ids on each UTM zone's grid, zone ownership, spatial splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from pyproj import Transformer

from geodelta.pipelines.stages.plan import (
    PlanError,
    assign_splits,
    block_id,
    format_cell_id,
    parse_cell_id,
    plan_jobs,
    utm_zone,
)
from geodelta.schemas import parse_config
from geodelta.schemas.config import SplitConfig
from tests.conftest import minimal_config


def test_cell_id_round_trip() -> None:
    cid = format_cell_id(31, True, 1280, 569, 3902)
    assert cid == "31N-1280-0569-3902"
    idx = parse_cell_id(cid)
    assert (idx.zone, idx.north, idx.size_m, idx.col, idx.row, idx.epsg) == (
        31,
        True,
        1280,
        569,
        3902,
        32631,
    )
    assert parse_cell_id("23S-2560-0081-3012").epsg == 32723
    with pytest.raises(ValueError, match="not a geodelta cell id"):
        parse_cell_id("31N_1280")


@pytest.mark.parametrize(
    ("lon", "zone"), [(-180.0, 1), (5.999, 31), (6.0, 32), (2.35, 31), (-47.9, 23), (179.99, 60)]
)
def test_utm_zone(lon: float, zone: int) -> None:
    assert utm_zone(lon) == zone


def test_a_known_place_gets_a_hand_computed_cell() -> None:
    # Paris (2.3522 E, 48.8566 N) in EPSG:32631: easting ~452,000 m, northing ~5,411,000 m.
    x, y = Transformer.from_crs(4326, 32631, always_xy=True).transform(2.3522, 48.8566)
    lon0, lat0 = 2.33, 48.84
    cfg = parse_config(
        minimal_config(aoi={"bbox": [lon0, lat0, 2.38, 48.87]}, grid={"cell_size_px": 100})
    )
    jobs = {j.cell_id: j for j in plan_jobs(cfg)}
    expected = format_cell_id(31, True, 1000, int(x // 1000), int(y // 1000))
    assert expected in jobs
    job = jobs[expected]
    assert job.crs == "EPSG:32631"
    assert job.transform == (10.0, 0.0, (x // 1000) * 1000, 0.0, -10.0, (y // 1000 + 1) * 1000)
    x0, y0, x1, y1 = job.bbox_lonlat
    assert x0 < 2.3522 < x1 and y0 < 48.8566 < y1


def test_same_place_same_id_whatever_the_aoi() -> None:
    small = parse_config(minimal_config(aoi={"bbox": [5.95, 45.02, 6.05, 45.06]}))
    large = parse_config(minimal_config(aoi={"bbox": [5.90, 45.00, 6.10, 45.09]}))
    a = {j.cell_id: j for j in plan_jobs(small)}
    b = {j.cell_id: j for j in plan_jobs(large)}
    assert a and set(a) < set(b)
    for cid in a:
        assert a[cid].transform == b[cid].transform
        assert a[cid].split == b[cid].split  # splits do not move when the AOI grows


def test_aoi_across_two_zones_is_covered_once() -> None:
    cfg = parse_config(minimal_config(aoi={"bbox": [5.90, 45.00, 6.10, 45.09]}))
    jobs = plan_jobs(cfg)
    crs = Counter(j.crs for j in jobs)
    assert set(crs) == {"EPSG:32631", "EPSG:32632"}
    for job in jobs:
        centre_lon = (job.bbox_lonlat[0] + job.bbox_lonlat[2]) / 2
        assert utm_zone(centre_lon) == parse_cell_id(job.cell_id).zone
        # "within": every cell lies inside the AOI
        assert job.bbox_lonlat[0] >= 5.90 and job.bbox_lonlat[2] <= 6.10
    assert len({j.cell_id for j in jobs}) == len(jobs)
    assert [j.cell_id for j in jobs] == sorted(j.cell_id for j in jobs)


def test_keep_intersects_adds_edge_cells() -> None:
    within = plan_jobs(parse_config(minimal_config()))
    touching = plan_jobs(parse_config(minimal_config(grid={"keep": "intersects"})))
    assert len(touching) > len(within)


def test_splits_are_per_block_and_follow_fractions() -> None:
    cells = [format_cell_id(31, True, 1280, c, r) for c in range(100) for r in range(100)]
    cfg = SplitConfig(block_cells=2, fractions={"train": 0.8, "val": 0.1, "test": 0.1})
    splits = assign_splits(cells, cfg)
    by_block: dict[str, set[str]] = {}
    for cid, split in splits.items():
        by_block.setdefault(block_id(cid, 2), set()).add(split)
    assert all(len(s) == 1 for s in by_block.values())  # a block never straddles two splits
    shares = Counter(splits.values())
    assert shares["train"] / len(cells) == pytest.approx(0.8, abs=0.03)
    assert shares["test"] / len(cells) == pytest.approx(0.1, abs=0.03)
    other_seed = assign_splits(cells, cfg.model_copy(update={"seed": 1}))
    assert other_seed != splits
    reordered = SplitConfig(block_cells=2, fractions={"test": 0.1, "val": 0.1, "train": 0.8})
    assert assign_splits(cells, reordered) == splits  # key order in the file does not matter


def test_geojson_regions(tmp_path: Path) -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "b"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [[2.33, 48.84], [2.37, 48.84], [2.37, 48.87], [2.33, 48.87], [2.33, 48.84]]
                    ],
                },
            },
            {
                "type": "Feature",
                "properties": {"name": "a"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [-47.95, -15.85],
                            [-47.91, -15.85],
                            [-47.91, -15.82],
                            [-47.95, -15.82],
                            [-47.95, -15.85],
                        ]
                    ],
                },
            },
        ],
    }
    (tmp_path / "aoi.geojson").write_text(json.dumps(fc))
    cfg = parse_config(minimal_config(aoi={"geojson": "aoi.geojson"}), base_dir=str(tmp_path))
    jobs = plan_jobs(cfg)
    regions = {j.region: j.crs for j in jobs}
    assert regions == {"a": "EPSG:32723", "b": "EPSG:32631"}
    assert all(j.cell_id.startswith("23S") for j in jobs if j.region == "a")


def test_bad_geojson_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "pt.geojson").write_text(json.dumps({"type": "Point", "coordinates": [1, 2]}))
    cfg = parse_config(minimal_config(aoi={"geojson": "pt.geojson"}), base_dir=str(tmp_path))
    with pytest.raises(PlanError, match=r"aoi\.geojson"):
        plan_jobs(cfg)
