"""Integration: a real STAC API (stac-fastapi-pgstac on PostgreSQL + PostGIS) started by the test.

The session fixture ``pgstac_api`` (tests/conftest.py, tests/pgstac_server.py) loads two OSCD
cities (Sentinel-2 L1C bands and OSCD's change mask, all rewritten as COGs) and the ESA
WorldCover 2020/2021 crops. The tests:

* search it with plain pystac-client (collections, bbox, intersects, datetime, paging) and check
  the items and their COGs against the original files;
* run ``geodelta build`` (the CLI, in a subprocess) with ``catalog: {kind: stac-api, url: ...}``
  against it: the release verifies and equals, sample by sample and byte by byte (json floats
  to 1e-12), the release built from a static catalog over the original GeoTIFFs (so every truth
  test_e2e_oscd.py checks holds for the API path too);
* run the same build through :class:`~tests.pgstac_server.Flaky503Proxy`, which answers the
  first two searches with 503 before passing requests through: the build completes with the
  same samples;
* search the WorldCover collection with geodelta's ``StacApiCatalog`` and read its maps over
  HTTP onto cells (equal to the original crops).

Every asset is a COG served over HTTP with byte ranges by a local file server, so the reads go
through GDAL's ``/vsicurl/`` as they would from blob storage.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import yaml
from pystac.extensions.projection import ProjectionExtension
from shapely.geometry import box, shape

from geodelta.pipelines.release.verify import verify_release
from geodelta.pipelines.stages.plan import plan_jobs
from geodelta.schemas import SampleMeta, parse_config
from tests.conftest import minimal_config
from tests.oscd_catalog import (
    ATTRIBUTION,
    BANDS,
    CHANGE_ASSET,
    COLLECTION_ID,
    LICENCE,
    band_path,
    build_oscd_catalog,
    item_id,
    oscd_aoi_geojson,
    read_change_mask,
    read_dates,
)
from tests.pgstac_server import (
    OSCD_CITIES,
    WORLDCOVER_ASSET,
    WORLDCOVER_COLLECTION,
    WORLDCOVER_FILES,
    Flaky503Proxy,
    PgstacServer,
    is_cog,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUILD_TIMEOUT_S = 300


def _client(url: str) -> Any:
    import pystac_client

    return pystac_client.Client.open(url)


def _footprint(shared_data: Path, city: str) -> Any:
    data = json.loads((shared_data / "oscd" / city / f"{city}.geojson").read_text())
    return shape(data["features"][0]["geometry"])


def _expected_oscd_ids(shared_data: Path) -> list[str]:
    return sorted(
        item_id(city, when)
        for city in OSCD_CITIES
        for when in read_dates(shared_data / "oscd" / city)
    )


# --------------------------------------------------------------------------------------------
# The server itself, through plain pystac-client


def test_server_lists_the_loaded_collections_and_items(
    pgstac_api: PgstacServer, shared_data: Path
) -> None:
    client = _client(pgstac_api.url)
    assert {c.id for c in client.get_collections()} == {COLLECTION_ID, WORLDCOVER_COLLECTION}
    oscd = sorted(i.id for i in client.get_collection(COLLECTION_ID).get_items())
    assert oscd == _expected_oscd_ids(shared_data) == list(pgstac_api.items[COLLECTION_ID])
    worldcover = sorted(i.id for i in client.get_collection(WORLDCOVER_COLLECTION).get_items())
    assert worldcover == [f"esa-worldcover-{y}-saotome" for y in sorted(WORLDCOVER_FILES)]
    conformance = " ".join(client.get_conforms_to())
    assert "item-search" in conformance  # a STAC API, not a static catalog


def test_search_by_bbox_intersects_and_datetime(
    pgstac_api: PgstacServer, shared_data: Path
) -> None:
    client = _client(pgstac_api.url)
    for city in OSCD_CITIES:
        d1, d2 = read_dates(shared_data / "oscd" / city)
        centre = _footprint(shared_data, city).centroid
        small = box(centre.x - 1e-4, centre.y - 1e-4, centre.x + 1e-4, centre.y + 1e-4)
        # a box in the city: both of its dates, and nothing of the other city
        found = client.search(collections=[COLLECTION_ID], bbox=list(small.bounds))
        assert sorted(i.id for i in found.items()) == sorted([item_id(city, d1), item_id(city, d2)])
        # a day window around date 1 only
        window = f"{d1:%Y-%m-%d}T00:00:00Z/{d1:%Y-%m-%d}T23:59:59Z"
        found = client.search(
            collections=[COLLECTION_ID], intersects=small.__geo_interface__, datetime=window
        )
        items = list(found.items())
        assert [i.id for i in items] == [item_id(city, d1)]
        assert items[0].datetime == d1
    # the Sao Tome map is far from Paris: no OSCD item there
    far = client.search(collections=[COLLECTION_ID], bbox=[6.70, 0.30, 6.75, 0.35])
    assert list(far.items()) == []


def test_search_pages_through_every_item(pgstac_api: PgstacServer, shared_data: Path) -> None:
    search = _client(pgstac_api.url).search(collections=[COLLECTION_ID], limit=1)
    pages = list(search.pages())
    assert len(pages) == len(_expected_oscd_ids(shared_data)) == 4
    assert sorted(i.id for p in pages for i in p.items) == _expected_oscd_ids(shared_data)


def test_oscd_items_point_at_cogs_with_the_original_pixels(
    pgstac_api: PgstacServer, shared_data: Path
) -> None:
    client = _client(pgstac_api.url)
    items = list(client.search(collections=[COLLECTION_ID]).items())
    assert len(items) == 4
    for item in items:
        city = item.properties["oscd:city"]
        index = item.properties["oscd:date_index"]
        assert item.collection_id == COLLECTION_ID
        assert ProjectionExtension.ext(item).epsg == 4326  # proj:code or proj:epsg
        expected_keys = set(BANDS) | ({CHANGE_ASSET} if index == 2 else set())
        assert set(item.assets) == expected_keys, item.id
        for band in BANDS:
            asset = item.assets[band]
            assert asset.roles == ["data"]
            assert asset.extra_fields["raster:bands"][0]["scale"] == pytest.approx(1e-4)
            assert asset.href.startswith("http://127.0.0.1:"), asset.href
            path = pgstac_api.local_path(asset.href)
            assert is_cog(path), asset.href
            with (
                rasterio.open(path) as cog,
                rasterio.open(band_path(shared_data / "oscd" / city, index, band)) as orig,
            ):
                assert cog.crs == orig.crs and cog.transform == orig.transform
                assert np.array_equal(cog.read(1), orig.read(1)), (item.id, band)
        if index == 2:
            with rasterio.open(item.assets[CHANGE_ASSET].href) as cm:  # over HTTP
                assert cm.nodata == 0
                values = cm.read(1)
            assert np.array_equal(values, read_change_mask(shared_data / "oscd" / city, city))
            assert int((values == 2).sum()) > 0, item.id  # the city has changes


def test_worldcover_items_cover_their_year(pgstac_api: PgstacServer, shared_data: Path) -> None:
    client = _client(pgstac_api.url)
    aoi = [6.70, 0.30, 6.75, 0.35]
    for year, (name, version) in WORLDCOVER_FILES.items():
        found = list(
            client.search(
                collections=[WORLDCOVER_COLLECTION], bbox=aoi, datetime=f"{year}-06-01/{year}-06-30"
            ).items()
        )
        assert [i.id for i in found] == [f"esa-worldcover-{year}-saotome"]
        item = found[0]
        assert item.datetime is None
        assert item.properties["start_datetime"].startswith(f"{year}-01-01T00:00:00")
        assert item.properties["end_datetime"].startswith(f"{year}-12-31T23:59:59")
        assert item.properties["esa_worldcover:product_version"] == version
        href = item.assets[WORLDCOVER_ASSET].href
        assert is_cog(pgstac_api.local_path(href))
        with (
            rasterio.open(href) as cog,  # over HTTP
            rasterio.open(shared_data / "esa_worldcover_pair" / name) as orig,
        ):
            assert cog.crs.to_epsg() == 4326 and cog.nodata == 0
            assert np.array_equal(cog.read(1), orig.read(1)), year
    both = client.search(
        collections=[WORLDCOVER_COLLECTION], bbox=aoi, datetime="2020-12-01/2021-01-31"
    )
    assert sorted(i.id for i in both.items()) == [
        "esa-worldcover-2020-saotome",
        "esa-worldcover-2021-saotome",
    ]


def test_proxy_double_refuses_twice_then_relays_unchanged(pgstac_api: PgstacServer) -> None:
    body = json.dumps({"collections": [COLLECTION_ID], "limit": 1}).encode()

    def post(url: str) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            url + "/search", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            assert err.headers["Retry-After"] == "0"
            return err.code, {}

    status, direct = post(pgstac_api.url)
    assert status == 200
    with Flaky503Proxy(pgstac_api.url, fail_first=2) as proxy:
        codes = [post(proxy.url)[0] for _ in range(2)]
        status, relayed = post(proxy.url)
    assert codes == [503, 503] and status == 200
    assert len(proxy.log.refused) == 2 and len(proxy.log.passed) == 1
    assert [f["id"] for f in relayed["features"]] == [f["id"] for f in direct["features"]]
    # links are built from the Host header: the next page goes through the proxy too
    nxt = [link["href"] for link in relayed["links"] if link["rel"] == "next"]
    assert nxt and nxt[0].startswith(proxy.url), relayed["links"]


# --------------------------------------------------------------------------------------------
# geodelta build against the server


def _config(catalog: dict[str, Any], aoi: Path, out: Path) -> dict[str, Any]:
    """OSCD imagery + OSCD change masks as labels (the config of test_e2e_oscd.py)."""
    return {
        "name": "oscd-pgstac",
        "version": "0.0.1",
        "description": "OSCD cities served by a local stac-fastapi-pgstac.",
        "licence": LICENCE,
        "attribution": ATTRIBUTION,
        "aoi": {"geojson": str(aoi), "name_property": "name"},
        "grid": {"cell_size_px": 64, "resolution_m": 10.0, "keep": "within"},
        "catalog": catalog,
        "imagery": {
            "collection": COLLECTION_ID,
            "bands": list(BANDS),
            "rgb": ["B04", "B03", "B02"],
            "classification_asset": None,
        },
        "pairing": {"allow_unknown_clear": True, "min_gap_days": 30, "max_gap_days": 1500},
        "time": {"t0": ["2015-01-01", "2016-12-31"], "t1": ["2017-01-01", "2017-12-31"]},
        "labels": {
            "kind": "change_mask",
            "asset": CHANGE_ASSET,
            "change_values": [2],
            "nodata_values": [0],
            "min_region_px": 1,
        },
        "coregistration": {"band": "B08"},
        "runner": {"name": "direct", "workers": 2},
        "output": {"dir": str(out)},
    }


def _quick(cfg: dict[str, Any]) -> dict[str, Any]:
    """The same build on the in-process runner without the Great Expectations run: neither
    changes a sample's bytes (runner and GX settings are outside the data), both save time."""
    return {
        **cfg,
        "runner": {"name": "inprocess", "workers": 1},
        "validation": {"great_expectations": False, "data_docs": False},
    }


@dataclass(frozen=True)
class Release:
    """A finished ``geodelta build`` and its samples (member -> bytes)."""

    path: Path
    config: dict[str, Any]
    seconds: float
    samples: dict[str, dict[str, bytes]]
    manifest: dict[str, Any]


def _read_shards(release: Path) -> dict[str, dict[str, bytes]]:
    """Every sample of the release, read with tarfile (no geodelta code)."""
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    shards = sorted((release / "shards").glob("*.tar"))
    assert shards, f"no shards in {release}"
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, _, name = member.name.partition(".")
                data = tar.extractfile(member)
                assert data is not None, member.name
                assert name not in samples[key], (shard, member.name)
                samples[key][name] = data.read()
    return dict(samples)


def _geodelta_build(cfg: dict[str, Any], folder: Path) -> Release:
    """``geodelta build CONFIG --no-progress`` in a subprocess (the installed CLI)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "build.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "geodelta.pipelines.cli", "build", str(path), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
        cwd=folder,
    )
    seconds = time.monotonic() - start
    assert out.returncode == 0, (
        f"geodelta build failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    )
    release = Path(cfg["output"]["dir"])
    manifest = json.loads((release / "manifest.json").read_text())
    return Release(release, cfg, seconds, _read_shards(release), manifest)


def _comparable(sample: dict[str, bytes]) -> dict[str, Any]:
    """The members of a sample, with the json parsed and its shaping hash left out (the configs
    differ in ``catalog``, ``runner`` and ``validation``)."""
    out: dict[str, Any] = dict(sample)
    meta = json.loads(sample["json"])
    meta.pop("shaping_hash")
    out["json"] = meta
    return out


def _same(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two JSON values differ: exact, except floats, which may differ in the last bits.

    The in-process runner and Beam's worker processes were seen to give phase-correlation
    errors one ulp apart (0.9133855082510964 vs ...63): float noise, not a different result.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b))}"]
        return [p for k in sorted(a) for p in _same(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} entries"]
        return [
            p
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for p in _same(x, y, f"{where}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        return [] if a == pytest.approx(b, rel=1e-12, abs=1e-15) else [f"{where}: {a!r} vs {b!r}"]
    return [] if (type(a), a) == (type(b), b) else [f"{where}: {a!r} vs {b!r}"]


def _assert_same_samples(a: Release, b: Release) -> None:
    """Same keys; every member byte-identical except the json (see :func:`_same`)."""
    assert sorted(a.samples) == sorted(b.samples)
    for key, sample in a.samples.items():
        other = b.samples[key]
        assert set(sample) == set(other), key
        for member in sample:
            if member != "json":
                assert sample[member] == other[member], (key, member)
        problems = _same(_comparable(sample)["json"], _comparable(other)["json"], "json")
        assert not problems, (key, problems)


@dataclass(frozen=True)
class Builds:
    reference: Release
    api: Release
    proxied: Release
    proxy_refused: list[str]
    proxy_passed: list[str]
    cog_reads: dict[str, int]


@pytest.fixture(scope="module")
def builds(
    pgstac_api: PgstacServer, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Builds:
    root = tmp_path_factory.mktemp("pgstac-builds")
    data_dir = shared_data / "oscd"
    aoi = oscd_aoi_geojson(root / "aoi.geojson", data_dir, OSCD_CITIES)
    static = build_oscd_catalog(root / "static-catalog", data_dir, OSCD_CITIES)
    reference = _geodelta_build(
        _quick(_config({"kind": "static", "url": str(static)}, aoi, root / "ref" / "release")),
        root / "ref",
    )
    files = pgstac_api.asset_server
    assert files is not None
    before = files.stats()
    # the full pipeline: Beam FnApiRunner, two worker processes, Great Expectations
    api = _geodelta_build(
        _config({"kind": "stac-api", "url": pgstac_api.url}, aoi, root / "api" / "release"),
        root / "api",
    )
    after = files.stats()
    read = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    # the first two searches (POSTs, which requests does not retry unless told) answer 503
    with Flaky503Proxy(
        pgstac_api.url, fail_first=2, retry_after_s=0, path_prefix="/search"
    ) as proxy:
        proxied = _geodelta_build(
            _quick(_config({"kind": "stac-api", "url": proxy.url}, aoi, root / "px" / "release")),
            root / "px",
        )
    print(
        f"\nbuild seconds: static {reference.seconds:.1f}, api {api.seconds:.1f}, "
        f"api through the 503 proxy {proxied.seconds:.1f}; proxy refused "
        f"{len(proxy.log.refused)}, relayed {len(proxy.log.passed)} requests; "
        f"COG server during the api build: {read}"
    )
    return Builds(reference, api, proxied, list(proxy.log.refused), list(proxy.log.passed), read)


def test_build_against_the_api_runs_end_to_end_and_verifies(
    builds: Builds, shared_data: Path
) -> None:
    api = builds.api
    check = verify_release(api.path)
    assert check.ok, "\n".join(check.problems[:20])
    assert check.samples == len(api.samples) == sum(api.manifest["splits"].values())
    # nothing dropped silently: every planned cell is a sample or a quarantine record
    planned = {job.cell_id for job in plan_jobs(parse_config(api.config, source="test"))}
    assert len(planned) == 56  # 640 m cells within bercy and paris
    rows = pq.read_table(api.path / "quarantine.parquet").to_pylist()
    assert len(rows) == sum(api.manifest["quarantined"].values())
    assert all(r["stage"] and r["reason"] and r["detail"] for r in rows), rows
    sampled = {SampleMeta.model_validate_json(s["json"]).cell_id for s in api.samples.values()}
    assert len(sampled) == len(api.samples)
    assert sampled | {r["cell_id"] for r in rows} == planned
    assert len(api.samples) + len(rows) == len(planned)
    # the COGs were read over HTTP with byte ranges, as from blob storage
    assert builds.cog_reads.get("206", 0) > 0, builds.cog_reads
    assert builds.cog_reads.get("404", 0) == 0, builds.cog_reads


def test_api_release_equals_the_static_catalog_release(builds: Builds) -> None:
    """Same cells, same pairs, same bytes: the API path (COG assets from a pgstac search) and
    the static path (the original GeoTIFFs) build the same dataset."""
    ref, api = builds.reference, builds.api
    assert len(ref.samples) >= 40  # 56 cells planned over bercy + paris; most become samples
    assert api.manifest["quarantined"] == ref.manifest["quarantined"]
    assert api.manifest["splits"] == ref.manifest["splits"]
    _assert_same_samples(ref, api)


def test_samples_name_the_api_items(builds: Builds, shared_data: Path) -> None:
    regions: set[str] = set()
    for key, sample in builds.api.samples.items():
        meta = SampleMeta.model_validate_json(sample["json"])
        d1, d2 = read_dates(shared_data / "oscd" / meta.region)
        assert meta.key == key == f"{meta.cell_id}_{d1:%Y%m%d}_{d2:%Y%m%d}"
        assert (meta.before_item, meta.after_item) == (
            item_id(meta.region, d1),
            item_id(meta.region, d2),
        )
        assert meta.collection == COLLECTION_ID and meta.label_items == (meta.after_item,)
        assert meta.crs == "EPSG:32631"
        regions.add(meta.region)
    assert regions == set(OSCD_CITIES)


def test_build_through_a_503_proxy_loses_nothing(builds: Builds) -> None:
    assert builds.proxy_refused == ["POST /search", "POST /search"]
    assert len(builds.proxy_passed) >= 3  # the root, then at least the searches of one cell
    check = verify_release(builds.proxied.path)
    assert check.ok, "\n".join(check.problems[:20])
    api, proxied = builds.api, builds.proxied
    assert len(proxied.samples) >= 40
    assert proxied.manifest["quarantined"] == api.manifest["quarantined"]
    assert proxied.manifest["splits"] == api.manifest["splits"]
    _assert_same_samples(api, proxied)


def test_stac_api_catalog_reads_the_land_cover_of_a_year(
    pgstac_api: PgstacServer, shared_data: Path
) -> None:
    """geodelta's own StacApiCatalog against pgstac: the year window picks the right WorldCover
    item, and its map read over HTTP onto cells equals the original crop read from disk."""
    from geodelta.sources.raster import read_classes
    from geodelta.sources.stac_api import StacApiCatalog

    cfg = parse_config(
        minimal_config(
            aoi={"bbox": [6.70, 0.30, 6.75, 0.35]},
            grid={"cell_size_px": 64},
            catalog={"kind": "stac-api", "url": pgstac_api.url},
            labels={"kind": "landcover", "collection": WORLDCOVER_COLLECTION},
        ),
        source="test",
    )
    jobs = plan_jobs(cfg)
    assert len(jobs) >= 20
    catalog = StacApiCatalog(cfg.catalog)
    maps: dict[int, list[np.ndarray]] = {}
    for year, (name, _) in sorted(WORLDCOVER_FILES.items()):
        window = (datetime(year, 3, 1, tzinfo=UTC), datetime(year, 4, 1, tzinfo=UTC))
        for job in jobs[:: max(len(jobs) // 6, 1)]:
            scenes = catalog.search([WORLDCOVER_COLLECTION], job.bbox_lonlat, window)
            assert [s.item_id for s in scenes] == [f"esa-worldcover-{year}-saotome"]
            scene = scenes[0]
            assert scene.crs == "EPSG:4326"
            assert scene.start_datetime == datetime(year, 1, 1, tzinfo=UTC)
            asset = scene.assets[WORLDCOVER_ASSET]
            assert pgstac_api.asset_server is not None
            assert asset.href.startswith(pgstac_api.asset_server.url + "/"), asset.href
            assert asset.nodata == 0
            remote = read_classes(asset, job, item_id=scene.item_id)
            local_asset = asset.model_copy(
                update={"href": str(shared_data / "esa_worldcover_pair" / name)}
            )
            local = read_classes(local_asset, job)
            assert remote.shape == job.shape and remote.dtype == np.uint8
            assert np.array_equal(remote, local), (year, job.cell_id)
            assert set(np.unique(remote).tolist()) <= {0, 10, 20, 30, 40, 50, 60, 80, 90, 95, 100}
            maps.setdefault(year, []).append(remote)
    assert catalog.searches == 2 * len(maps[2020])
    changed = sum(int((a != b).sum()) for a, b in zip(maps[2020], maps[2021], strict=True))
    assert changed > 0  # 2020 (v100) and 2021 (v200) differ (PROVENANCE: 4.76 % of pixels)
