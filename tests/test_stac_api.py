"""StacApiCatalog through the real pystac-client code path, against local test doubles.

Recorded real responses (``../shared/data/stac/api_responses``: a Planetary Computer NAIP search
and an Earth Search Sentinel-2 + Landsat search with an empty second page) are replayed by
:class:`tests.http_doubles.RecordedStacApi`; faults (429 with Retry-After, 503, slow answers)
are played by the same double.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from geodelta.schemas import parse_config
from geodelta.schemas.config import CatalogConfig
from geodelta.sources import stac_api
from geodelta.sources.catalog import CatalogError, StaticCatalog, open_catalog
from geodelta.sources.stac_api import StacApiCatalog
from tests.conftest import minimal_config
from tests.http_doubles import CONFORMS_TO, Fault, RecordedStacApi

NAIP_POLYGON = {
    "type": "Polygon",
    "coordinates": [
        [[-73.21, 43.99], [-73.21, 44.05], [-73.12, 44.05], [-73.12, 43.99], [-73.21, 43.99]]
    ],
}
ES_POINT = {"type": "Point", "coordinates": [-105.1019, 40.1672]}
ES_DAY = (datetime(2023, 10, 8, tzinfo=UTC), datetime(2023, 10, 8, 23, 59, 59, tzinfo=UTC))


@pytest.fixture(scope="module")
def responses(shared_data: Path) -> Path:
    return shared_data / "stac" / "api_responses"


def catalog_cfg(url: str, **kw: Any) -> CatalogConfig:
    return CatalogConfig(kind="stac-api", url=url, **{"backoff_s": 0.0, **kw})


@pytest.fixture(autouse=True)
def _fresh_host_slots() -> None:
    stac_api._HOST_SLOTS.clear()  # each test's limit applies to its own double's port


# --------------------------------------------------------------------------------------------
# recorded real responses


def test_planetary_computer_recording_parses(responses: Path) -> None:
    api = RecordedStacApi(responses / "TestItemSearch.test_intersects_results.json")
    with api.running():
        cat = StacApiCatalog(catalog_cfg(api.url))
        scenes = cat.search_scenes(["naip"], intersects=NAIP_POLYGON)
    assert len(scenes) == 42
    assert [s.datetime for s in scenes] == sorted(s.datetime for s in scenes)
    assert scenes[0].datetime == datetime(2011, 8, 18, tzinfo=UTC)
    assert scenes[-1].datetime == datetime(2023, 6, 22, 16, tzinfo=UTC)
    assert {s.collection for s in scenes} == {"naip"}
    assert {s.crs for s in scenes} == {"EPSG:26918"}  # proj:epsg
    latest = next(s for s in scenes if s.item_id == "vt_m_4307308_nw_18_030_20230622_20231113")
    # only the data asset: thumbnail, tilejson and rendered_preview are not rasters to read
    assert set(latest.assets) == {"image"}
    image = latest.assets["image"]
    assert image.href == (
        "https://naipeuwest.blob.core.windows.net/naip/v002/vt/2023/vt_030cm_2023/43073/"
        "m_4307308_nw_18_030_20230622_20231113.tif"
    )
    assert image.roles == ("data",) and image.scale == 1.0 and image.offset == 0.0
    assert latest.bbox_lonlat == pytest.approx((-73.130782, 43.933691, -73.056636, 44.003801))
    assert latest.geometry is not None and latest.geometry["type"] == "Polygon"
    # what pystac-client actually sent: the recorded query plus the page size
    (sent,) = [r for r in api.seen if r.method == "POST"]
    assert sent.body["intersects"] == NAIP_POLYGON and sent.body["collections"] == ["naip"]
    assert sent.body["limit"] == 100


def test_earth_search_recording_pages_and_profiles(responses: Path) -> None:
    api = RecordedStacApi(responses / "test_multiple_collections.json")
    with api.running():
        cat = StacApiCatalog(catalog_cfg(api.url))
        scenes = cat.search_scenes(
            ["sentinel-2-l2a", "landsat-c2-l2"], intersects=ES_POINT, window=ES_DAY
        )
    posts = [r for r in api.seen if r.method == "POST"]
    # the next link was followed once (its token in the body) and the empty page ended paging
    assert len(posts) == 2
    assert "next" not in posts[0].body
    assert posts[1].body["next"] == (
        "2023-10-08T17:37:26.656958Z,LC08_L2SP_033032_20231008_02_T1,landsat-c2-l2"
    )
    assert posts[0].body["datetime"] == "2023-10-08T00:00:00Z/2023-10-08T23:59:59Z"
    assert [s.item_id for s in scenes] == [
        "LC08_L2SP_033032_20231008_02_T1",  # 17:37:26 comes before 18:02:55
        "S2A_13TDE_20231008_0_L2A",
    ]
    landsat, s2 = scenes
    assert s2.collection == "sentinel-2-l2a" and s2.crs == "EPSG:32613"
    assert s2.cloud_cover == pytest.approx(0.000299) and s2.platform == "sentinel-2a"
    assert s2.datetime == datetime(2023, 10, 8, 18, 2, 55, 276000, tzinfo=UTC)
    red = s2.assets["red"]
    assert red.href.endswith("/S2A_13TDE_20231008_0_L2A/B04.tif")
    assert (red.scale, red.offset, red.nodata) == (0.0001, -0.1, 0)  # the item's own values
    assert s2.assets["scl"].roles == ("data", "reflectance")
    assert "thumbnail" not in s2.assets and "granule_metadata" not in s2.assets
    assert landsat.crs == "EPSG:32613" and landsat.cloud_cover == pytest.approx(0.06)
    assert landsat.assets["red"].scale == pytest.approx(2.75e-05)
    assert landsat.assets["red"].offset == pytest.approx(-0.2)
    # the QA band has roles cloud/cloud-shadow/..., not "data": still kept (it is a GeoTIFF)
    assert landsat.assets["qa_pixel"].roles[:2] == ("cloud", "cloud-shadow")
    assert landsat.assets["qa_pixel"].nodata == 1


def test_max_items_bounds_the_search_and_says_so(
    responses: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = RecordedStacApi(responses / "TestItemSearch.test_intersects_results.json")
    with api.running(), caplog.at_level(logging.WARNING):
        cat = StacApiCatalog(catalog_cfg(api.url, max_items=5))
        scenes = cat.search_scenes(["naip"], intersects=NAIP_POLYGON)
    assert len(scenes) == 5 and cat.truncated == 1
    assert "catalog.max_items=5" in caplog.text


def test_cloud_cover_prefilter_as_filter_query_or_client_side(responses: Path) -> None:
    recording = responses / "test_multiple_collections.json"
    sent: dict[str, Any] = {}
    for name, conforms in (
        ("filter", CONFORMS_TO),
        ("query", tuple(c for c in CONFORMS_TO if "filter" not in c and "cql2" not in c)),
        ("client", CONFORMS_TO[:2]),
    ):
        api = RecordedStacApi(recording, conforms_to=conforms)
        with api.running():
            cat = StacApiCatalog(catalog_cfg(api.url))
            scenes = cat.search_scenes(
                ["sentinel-2-l2a", "landsat-c2-l2"],
                intersects=ES_POINT,
                window=ES_DAY,
                max_cloud_cover=0.01,
            )
        # the replayed page holds both items: the landsat one (0.06 %) is dropped client-side
        assert [s.item_id for s in scenes] == ["S2A_13TDE_20231008_0_L2A"], name
        sent[name] = next(r for r in api.seen if r.method == "POST").body
    assert sent["filter"]["filter"] == {
        "op": "<=",
        "args": [{"property": "eo:cloud_cover"}, 0.01],
    }
    assert sent["filter"]["filter-lang"] == "cql2-json" and "query" not in sent["filter"]
    assert sent["query"]["query"] == {"eo:cloud_cover": {"lte": 0.01}}
    assert "filter" not in sent["query"]
    assert "query" not in sent["client"] and "filter" not in sent["client"]


def test_bbox_search_and_local_asset_paths(tmp_path: Path) -> None:
    """Items whose assets are absolute local paths (the pgstac fixture's) keep them as they are."""
    tif = tmp_path / "B04.tif"
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "local-1",
        "collection": "local-s2",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[6, 45], [6.1, 45], [6.1, 45.1], [6, 45.1], [6, 45]]],
        },
        "bbox": [6, 45, 6.1, 45.1],
        "properties": {"datetime": "2021-07-01T10:00:00Z", "proj:code": "EPSG:32632"},
        "links": [],
        "assets": {
            "B04": {"href": str(tif), "type": "image/tiff; application=geotiff", "roles": ["data"]},
            "remote": {"href": "https://example.test/x.tif?sv=1&sig=abc", "roles": ["data"]},
        },
    }
    api = RecordedStacApi(extra_items=[item])
    with api.running():
        scenes = StacApiCatalog(catalog_cfg(api.url)).search(
            ["local-s2"],
            (6.0, 45.0, 6.05, 45.05),
            (datetime(2021, 6, 1, tzinfo=UTC), datetime(2021, 8, 31, tzinfo=UTC)),
        )
    (scene,) = scenes
    assert scene.assets["B04"].href == str(tif)
    assert scene.assets["remote"].href == "https://example.test/x.tif"  # query string stripped
    assert scene.crs == "EPSG:32632"
    body = next(r for r in api.seen if r.method == "POST").body
    assert body["bbox"] == [6.0, 45.0, 6.05, 45.05]
    assert body["datetime"] == "2021-06-01T00:00:00Z/2021-08-31T00:00:00Z"


# --------------------------------------------------------------------------------------------
# retries, Retry-After, errors


def _naip(api: RecordedStacApi, **kw: Any) -> list[Any]:
    cat = StacApiCatalog(catalog_cfg(api.url, **kw))
    _ = cat.client  # landing page first, so faults hit the search
    return cat.search_scenes(["naip"], intersects=NAIP_POLYGON)


def _post_times(api: RecordedStacApi) -> list[float]:
    return [r.t for r in api.seen if r.method == "POST"]


def test_429_retry_after_is_honoured(responses: Path) -> None:
    api = RecordedStacApi(responses / "TestItemSearch.test_intersects_results.json")
    with api.running():
        api_faults = [Fault(429, {"Retry-After": "1"})]
        cat = StacApiCatalog(catalog_cfg(api.url))
        _ = cat.client
        api.faults.extend(api_faults)
        scenes = cat.search_scenes(["naip"], intersects=NAIP_POLYGON)
    assert len(scenes) == 42
    t = _post_times(api)
    assert len(t) == 2
    assert 0.95 <= t[1] - t[0] < 2.5  # waited the server's 1 s (and not much more)


def test_retry_after_is_capped_by_max_wait(responses: Path) -> None:
    api = RecordedStacApi(responses / "TestItemSearch.test_intersects_results.json")
    with api.running():
        cat = StacApiCatalog(catalog_cfg(api.url, max_wait_s=0.3))
        _ = cat.client
        api.faults.append(Fault(429, {"Retry-After": "120"}))
        scenes = cat.search_scenes(["naip"], intersects=NAIP_POLYGON)
    assert len(scenes) == 42
    t = _post_times(api)
    assert 0.25 <= t[1] - t[0] < 2.0  # 120 s asked, catalog.max_wait_s=0.3 honoured


def test_503_then_success(responses: Path) -> None:
    api = RecordedStacApi(responses / "TestItemSearch.test_intersects_results.json")
    with api.running():
        cat = StacApiCatalog(catalog_cfg(api.url, retries=3))
        _ = cat.client
        api.faults.extend([Fault(503), Fault(502)])
        scenes = cat.search_scenes(["naip"], intersects=NAIP_POLYGON)
    assert len(scenes) == 42 and len(_post_times(api)) == 3


def test_retries_are_bounded_and_the_error_names_url_status_and_key(responses: Path) -> None:
    api = RecordedStacApi(responses / "TestItemSearch.test_intersects_results.json")
    with api.running():
        cat = StacApiCatalog(catalog_cfg(api.url, retries=2))
        _ = cat.client
        api.faults.extend([Fault(503)] * 10)
        with pytest.raises(CatalogError) as err:
            cat.search_scenes(["naip"], intersects=NAIP_POLYGON)
    assert len(_post_times(api)) == 3  # 1 try + catalog.retries=2
    assert err.value.status == 503 and err.value.url == api.url
    assert "HTTP 503" in str(err.value) and "catalog.retries=2" in str(err.value)


def test_client_errors_are_not_retried(responses: Path) -> None:
    api = RecordedStacApi(responses / "TestItemSearch.test_intersects_results.json")
    with api.running():
        cat = StacApiCatalog(catalog_cfg(api.url))
        _ = cat.client
        api.faults.append(Fault(400, body='{"code": "BadRequest", "description": "bad bbox"}'))
        with pytest.raises(CatalogError) as err:
            cat.search_scenes(["naip"], intersects=NAIP_POLYGON)
    assert len(_post_times(api)) == 1
    assert err.value.status == 400 and "bad bbox" in str(err.value)
    assert "imagery.collection" in str(err.value)


def test_timeouts_are_retried_then_reported(responses: Path) -> None:
    api = RecordedStacApi(responses / "TestItemSearch.test_intersects_results.json")
    with api.running():
        cat = StacApiCatalog(catalog_cfg(api.url, timeout_s=0.3, retries=1))
        _ = cat.client
        api.faults.append(Fault(200, delay_s=1.0))  # first answer too late: retried
        assert len(cat.search_scenes(["naip"], intersects=NAIP_POLYGON)) == 42
        api.faults.extend([Fault(200, delay_s=1.0)] * 2)
        with pytest.raises(CatalogError) as err:
            cat.search_scenes(["naip"], intersects=NAIP_POLYGON)
    assert err.value.status is None and "catalog.timeout_s" in str(err.value)


def test_landing_page_errors_and_non_apis(tmp_path: Path) -> None:
    api = RecordedStacApi(root_path="/stac")
    with api.running():
        api.faults.append(Fault(404))
        with pytest.raises(CatalogError, match=r"HTTP 404.*STAC API root"):
            _ = StacApiCatalog(catalog_cfg(api.url, retries=0)).client
        api.conforms_to = CONFORMS_TO[:1]  # core only: no item search
        with pytest.raises(CatalogError, match="Item Search"):
            _ = StacApiCatalog(catalog_cfg(api.url)).client


def _concurrent_searches(
    responses: Path, *, limit: int, clients: int, **delays: float
) -> tuple[RecordedStacApi, float]:
    """``clients`` separate catalogs (sharing one per-host limit) search at once against the
    recorded API with ``delays`` (``delay_s`` before the answer, ``body_delay_s`` before its
    body); returns the API (its ``max_in_flight``) and the wall time."""
    api = RecordedStacApi(responses / "TestItemSearch.test_intersects_results.json")
    with api.running():
        cats = [
            StacApiCatalog(catalog_cfg(api.url, concurrency_per_host=limit)) for _ in range(clients)
        ]
        for cat in cats:
            _ = cat.client
        for name, value in delays.items():
            setattr(api, name, value)
        errors: list[BaseException] = []

        def run(cat: StacApiCatalog) -> None:
            try:
                assert len(cat.search_scenes(["naip"], intersects=NAIP_POLYGON)) == 42
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(c,)) for c in cats]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.monotonic() - t0
    assert not errors
    return api, elapsed


def test_per_host_concurrency_limit(responses: Path) -> None:
    api, elapsed = _concurrent_searches(responses, limit=2, clients=6, delay_s=0.2)
    assert api.max_in_flight == 2
    assert elapsed >= 3 * 0.2 * 0.9  # 6 requests, 2 at a time, 0.2 s each


def test_per_host_slot_held_until_body_read(responses: Path) -> None:
    """The slot covers the whole answer: a client that has the headers but not yet the body
    still holds it (released at the headers, the next request starts while the server is
    still sending: what made the limit test above flaky)."""
    api, elapsed = _concurrent_searches(responses, limit=1, clients=3, body_delay_s=0.2)
    assert api.max_in_flight == 1
    assert elapsed >= 3 * 0.2 * 0.9  # 3 requests, one at a time, each body 0.2 s late


# --------------------------------------------------------------------------------------------
# config and dispatch


def test_open_catalog_dispatches_on_kind(tmp_path: Path) -> None:
    api = RecordedStacApi(extra_items=[])
    with api.running():
        cfg = parse_config(minimal_config(catalog={"kind": "stac-api", "url": api.url}))
        cat = open_catalog(cfg.catalog, resolve=cfg.resolve)
        assert isinstance(cat, StacApiCatalog) and cat.url == api.url
        assert open_catalog(cfg.catalog, resolve=cfg.resolve) is cat  # once per process
        assert api.seen == []  # opening is lazy: nothing asked yet
    static = tmp_path / "catalog.json"
    static.write_text(
        json.dumps(
            {"type": "Catalog", "id": "c", "description": "d", "stac_version": "1.0.0", "links": []}
        )
    )
    cfg = parse_config(minimal_config(catalog={"url": str(static)}))
    assert isinstance(open_catalog(cfg.catalog, resolve=cfg.resolve), StaticCatalog)


def test_operational_catalog_keys_do_not_change_the_hash() -> None:
    base = {
        "kind": "planetary-computer",
        "url": "https://planetarycomputer.microsoft.com/api/stac/v1",
    }
    a = parse_config(minimal_config(catalog=base))
    b = parse_config(
        minimal_config(catalog={**base, "retries": 9, "timeout_s": 5, "page_size": 10})
    )
    c = parse_config(minimal_config(catalog={**base, "max_items": 10}))
    assert a.config_hash() == b.config_hash() != c.config_hash()
    d = parse_config(minimal_config(catalog=base, gdal={"vsi_cache": False}))
    assert d.config_hash() == a.config_hash()
    assert d.gdal.env()["VSI_CACHE"] == "FALSE"


# --------------------------------------------------------------------------------------------
# geodelta search --dry-run


def _feature(item_id: str, collection: str, when: str, **props: Any) -> dict[str, Any]:
    ring = [[5.0, 44.0], [7.0, 44.0], [7.0, 46.0], [5.0, 46.0], [5.0, 44.0]]
    assets = {
        key: {"href": f"https://example.test/{item_id}/{key}.tif", "roles": ["data"]}
        for key in ("B02", "B03", "B04", "B08", "SCL", "data")
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [5.0, 44.0, 7.0, 46.0],
        "properties": {"datetime": when, "proj:code": "EPSG:32631", **props},
        "links": [],
        "assets": assets,
    }


def test_search_dry_run_reads_no_pixels() -> None:
    from geodelta.pipelines.stages.search import dry_run

    items = [
        _feature("s2-2020-a", "sentinel-2-l2a", "2020-07-01T10:00:00Z", **{"eo:cloud_cover": 30.0}),
        _feature("s2-2020-b", "sentinel-2-l2a", "2020-07-11T10:00:00Z", **{"eo:cloud_cover": 1.0}),
        _feature("s2-2021-a", "sentinel-2-l2a", "2021-07-06T10:00:00Z", **{"eo:cloud_cover": 2.0}),
        _feature(
            "lulc-2020",
            "io-lulc-annual-v02",
            None,  # type: ignore[arg-type]
            start_datetime="2020-01-01T00:00:00Z",
            end_datetime="2020-12-31T23:59:59Z",
        ),
        _feature(
            "lulc-2021",
            "io-lulc-annual-v02",
            None,  # type: ignore[arg-type]
            start_datetime="2021-01-01T00:00:00Z",
            end_datetime="2021-12-31T23:59:59Z",
        ),
    ]
    api = RecordedStacApi(extra_items=items)
    with api.running():
        cfg = parse_config(
            minimal_config(
                catalog={"kind": "stac-api", "url": api.url},
                imagery={
                    "collection": "sentinel-2-l2a",
                    "bands": ["B02", "B03", "B04", "B08"],
                    "rgb": ["B04", "B03", "B02"],
                },
                labels={"kind": "landcover", "collection": "io-lulc-annual-v02"},
                pairing={"min_gap_days": 30},
            )
        )
        report = dry_run(cfg, max_cells=2)
    assert report.clear_source == "scene_cloud_cover_estimate"
    assert report.cells_planned >= 2 and len(report.cells) == 2
    cell = report.cells[0]
    assert (cell.candidates_t0, cell.candidates_t1) == (2, 1)
    assert cell.pair is not None
    assert cell.pair.before.item_id == "s2-2020-b"  # 1 % cloud beats 30 % (0.70 < 0.95)
    assert cell.pair.before_clear == pytest.approx(0.99)
    assert cell.pair.label_before is not None and cell.pair.label_before.item_id == "lulc-2020"
    assert cell.pair.label_after is not None and cell.pair.label_after.item_id == "lulc-2021"
    # 128 x 128 px of 10 m: 4 bands x 2 scenes x 16384 px x 2 B (10 m), SCL at 20 m (4096 px
    # x 2 B) for the 3 rated scenes, 2 land-cover maps x 16384 px x 1 B
    assert cell.estimated_bytes == 4 * 2 * 16384 * 2 + 3 * 4096 * 2 + 2 * 16384
    assert not [r for r in api.seen if r.path.endswith(".tif")]  # no pixel read
    posts = [r.body for r in api.seen if r.method == "POST"]
    assert {tuple(b["collections"]) for b in posts} == {
        ("sentinel-2-l2a",),
        ("io-lulc-annual-v02",),
    }
