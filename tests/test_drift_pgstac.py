"""``geodelta drift`` against a real STAC API (issue 14, "Drift", real data).

On the stac-fastapi-pgstac server the integration tests start (``pgstac_api``: two OSCD cities
as COGs), a small release is built; then one item its samples use is reprocessed in the
server, as ESA's Collection-1 reprocessing did: a new processing baseline, one asset moved to
a new file, and every other asset href re-signed with a fresh SAS-like token (a signature is
no change). ``geodelta drift`` must name that item, the two changed fields (not the signature)
and exactly the samples that used it, exit 1, and never print the token; against the server as
it was, exit 0. The server's item is restored afterwards (the server is shared by the session).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from geodelta.pipelines.api import build
from geodelta.pipelines.cli import app
from geodelta.schemas import parse_config
from tests.oscd_catalog import BANDS, COLLECTION_ID, oscd_aoi_geojson
from tests.pgstac_server import OSCD_CITIES, PgstacServer
from tests.test_integration_pgstac import _config, _quick

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "sig=DRIFTSECRET0123"
runner = CliRunner()


def _get_item(dsn: str, item_id: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pgstac.get_item(%s, %s)", (item_id, COLLECTION_ID)).fetchone()
    assert row is not None and row[0] is not None, item_id
    item: dict[str, Any] = row[0]
    return item


def _put_item(dsn: str, item: dict[str, Any]) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pgstac.update_item(%s::jsonb)", (json.dumps(item),))


@pytest.fixture(scope="module")
def release(
    pgstac_api: PgstacServer, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root = tmp_path_factory.mktemp("drift-pgstac")
    aoi = oscd_aoi_geojson(root / "aoi.geojson", shared_data / "oscd", OSCD_CITIES)
    data = _quick(_config({"kind": "stac-api", "url": pgstac_api.url}, aoi, root / "release"))
    result = build(parse_config(data, source="test"), progress=False)
    assert result.samples >= 10
    return Path(result.release_dir)


@pytest.fixture
def reprocessed(pgstac_api: PgstacServer, release: Path) -> Iterator[dict[str, Any]]:
    """One item the release's samples use, changed in the server; restored afterwards."""
    rows = pq.read_table(release / "samples.parquet").to_pylist()
    item_id = sorted(r["after_item"] for r in rows)[0]
    original = _get_item(pgstac_api.dsn, item_id)
    changed = json.loads(json.dumps(original))
    changed["properties"]["s2:processing_baseline"] = "05.11"
    moved, *others = BANDS
    href = changed["assets"][moved]["href"]
    changed["assets"][moved]["href"] = href.replace(f"{moved}.tif", f"{moved}_N0511.tif")
    for band in others:  # re-signed: the same file
        changed["assets"][band]["href"] += f"?sv=2026-01-01&se=2026-01-02&{SECRET}"
    _put_item(pgstac_api.dsn, changed)
    try:
        yield {
            "item": item_id,
            "moved": moved,
            "users": sorted(
                r["key"] for r in rows if item_id in (r["before_item"], r["after_item"])
            ),
        }
    finally:
        _put_item(pgstac_api.dsn, original)
    assert _get_item(pgstac_api.dsn, item_id)["assets"] == original["assets"]


def test_the_release_snapshot_holds_what_the_server_returned(
    pgstac_api: PgstacServer, release: Path
) -> None:
    from geodelta.sources.snapshot import read_snapshot

    snap = read_snapshot(str(release / "snapshot" / "items.parquet"))
    assert snap.origin["kind"] == "stac-api" and snap.origin["url"] == pgstac_api.url
    ids = sorted(d["id"] for d in snap.items)
    assert ids == list(pgstac_api.items[COLLECTION_ID])  # both cities, both dates
    for d in snap.items:
        server = _get_item(pgstac_api.dsn, d["id"])
        when = (datetime.fromisoformat(x["properties"]["datetime"]) for x in (d, server))
        assert next(when) == next(when), d["id"]  # written with microseconds
        assert {k: a["href"] for k, a in d["assets"].items()} == {
            k: a["href"] for k, a in server["assets"].items()
        }
    rows = pq.read_table(release / "samples.parquet").to_pylist()
    assert {r["before_item"] for r in rows} | {r["after_item"] for r in rows} <= set(ids)


def test_an_unchanged_server_has_no_drift(release: Path) -> None:
    res = runner.invoke(app, ["drift", str(release)])  # the URL the release records
    assert res.exit_code == 0, res.output
    assert "0 added, 0 removed, 0 changed" in res.stdout


def test_drift_names_the_reprocessed_item_its_fields_and_samples(
    release: Path, reprocessed: dict[str, Any]
) -> None:
    res = runner.invoke(app, ["drift", str(release), "--json"])
    assert res.exit_code == 1, res.output
    assert "DRIFTSECRET" not in res.output
    data = json.loads(res.stdout)
    assert (data["added"], data["removed"], data["changed"]) == (0, 0, 1)
    (item,) = data["items"]
    assert (item["collection"], item["id"], item["change"]) == (
        COLLECTION_ID,
        reprocessed["item"],
        "changed",
    )
    moved = reprocessed["moved"]
    names = [f["name"] for f in item["fields"]]
    assert names == [f"assets.{moved}.href", "s2:processing_baseline"]  # not the signatures
    assert item["fields"][0]["after"].endswith(f"{moved}_N0511.tif")
    assert item["fields"][1] == {"name": "s2:processing_baseline", "before": None, "after": "05.11"}
    assert item["samples"] == reprocessed["users"] and len(reprocessed["users"]) > 0
    assert data["affected_sample_keys"] == reprocessed["users"]
    assert data["affected_samples"] == len(reprocessed["users"])
    short = runner.invoke(app, ["drift", str(release)])
    assert short.exit_code == 1
    head, line = short.stdout.splitlines()[:2]
    assert "0 added, 0 removed, 1 changed" in head
    assert f"{len(reprocessed['users'])} samples affected" in head
    assert reprocessed["item"] in line and "s2:processing_baseline null -> 05.11" in line
    assert "DRIFTSECRET" not in short.output
