"""samples.parquet and quarantine.parquet are GeoParquet 1.1 (footprints), read by geopandas and
DuckDB; samples.parquet carries the captions and each member's byte range in its shard."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import shapely

from geodelta.pipelines.release.geoparquet import cell_footprint_wkb, geo_metadata
from geodelta.pipelines.release.layout import iter_tar_samples


@pytest.fixture(scope="module")
def release(small_shards_release: Any) -> Path:
    return Path(small_shards_release.release_dir)


def test_geo_metadata_follows_geoparquet_1_1(release: Path) -> None:
    for name in ("samples.parquet", "quarantine.parquet"):
        geo = json.loads(pq.read_schema(release / name).metadata[b"geo"])
        assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
        col = geo["columns"]["geometry"]
        assert col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"]
        assert "crs" not in col  # absent = OGC:CRS84 (lon/lat), per the spec
        table = pq.read_table(release / name)
        geoms = [shapely.from_wkb(b) for b in table.column("geometry").to_pylist() if b]
        bounds = shapely.total_bounds(geoms).tolist()
        assert col["bbox"] == pytest.approx(bounds, abs=1e-12)


def test_geopandas_reads_footprints_that_match_the_samples(release: Path) -> None:
    import geopandas as gpd

    samples = gpd.read_parquet(release / "samples.parquet")
    assert samples.crs is not None and samples.crs.to_string() == "OGC:CRS84"
    manifest = json.loads((release / "manifest.json").read_text())
    assert len(samples) == sum(manifest["splits"].values())
    for _, row in samples.iterrows():
        geom = row.geometry
        assert geom.is_valid and geom.exterior.is_ccw
        # the footprint's envelope is the sample's lon/lat box (both from the cell's grid)
        assert geom.bounds == pytest.approx(
            (row.min_lon, row.min_lat, row.max_lon, row.max_lat), abs=1e-9
        )
        assert 0.01 < geom.area / shapely.box(*geom.bounds).area <= 1.0
    quarantine = gpd.read_parquet(release / "quarantine.parquet")
    assert len(quarantine) == sum(manifest["quarantined"].values()) > 0
    assert quarantine.geometry.notna().all()  # every quarantined record names a cell
    assert not set(quarantine.cell_id) & set(samples.cell_id)


def test_captions_and_member_offsets_let_a_reader_seek(release: Path) -> None:
    table = pq.read_table(release / "samples.parquet").to_pylist()
    by_key: dict[str, dict[str, bytes]] = {}
    for shard in sorted((release / "shards").glob("*.tar")):
        by_key.update(dict(iter_tar_samples(shard)))
    for row in table:
        members = by_key[row["key"]]
        assert row["captions"] == json.loads(members["captions.json"])
        assert row["n_captions"] == len(row["captions"])
        assert {m["name"] for m in row["member_offsets"]} == set(members)
        with open(release / row["shard"], "rb") as f:
            for m in row["member_offsets"]:
                f.seek(m["offset"])
                assert f.read(m["size"]) == members[m["name"]], (row["key"], m["name"])


def test_duckdb_reads_the_tables(release: Path) -> None:
    import duckdb  # the dev extra

    con = duckdb.connect()
    path = str(release / "samples.parquet")
    n, captions, offsets = con.execute(
        "SELECT count(*), sum(len(captions)), sum(len(member_offsets)) FROM read_parquet(?)",
        [path],
    ).fetchone()
    rows = pq.read_table(path).to_pylist()
    assert n == len(rows)
    assert captions == sum(len(r["captions"]) for r in rows)
    assert offsets == sum(len(r["member_offsets"]) for r in rows)
    # DuckDB spatial, from the wheel the dev extra installs (DuckDB cannot download it offline)
    from duckdb_extensions import import_extension

    import_extension("spatial")
    con.load_extension("spatial")
    # with spatial loaded, DuckDB reads the column as GEOMETRY from the GeoParquet metadata
    kind = con.execute(
        "SELECT column_type FROM (DESCRIBE SELECT geometry FROM read_parquet(?))", [path]
    ).fetchone()
    assert kind is not None and str(kind[0]).startswith("GEOMETRY")
    (area,) = con.execute("SELECT sum(ST_Area(geometry)) FROM read_parquet(?)", [path]).fetchone()
    assert area == pytest.approx(sum(shapely.from_wkb(r["geometry"]).area for r in rows))


def test_footprints_are_deterministic_and_refuse_non_cells() -> None:
    wkb = cell_footprint_wkb("31N-1280-0573-3899")
    assert wkb is not None and wkb[:1] == b"\x01"  # little-endian WKB
    cell_footprint_wkb.cache_clear()
    assert cell_footprint_wkb("31N-1280-0573-3899") == wkb
    geom = shapely.from_wkb(wkb)
    assert geom.geom_type == "Polygon" and len(geom.exterior.coords) == 33  # 4 edges x 8 + 1
    assert cell_footprint_wkb("not-a-cell") is None
    assert "bbox" not in geo_metadata([None])["columns"]["geometry"]


def test_offsets_match_tarfile(release: Path) -> None:
    """member_offsets are the data offsets tarfile itself reports (not an estimate)."""
    row = pq.read_table(release / "samples.parquet").to_pylist()[0]
    with tarfile.open(release / row["shard"]) as tar:
        infos = {i.name.partition(".")[2]: i for i in tar if i.name.startswith(row["key"] + ".")}
    assert {m["name"]: (m["offset"], m["size"]) for m in row["member_offsets"]} == {
        n: (i.offset_data, i.size) for n, i in infos.items()
    }
