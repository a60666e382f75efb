"""Search snapshots (issue 14: "Snapshot" and "Build from a snapshot").

Every build writes the items it searched to ``snapshot/items.parquet`` (stac-geoparquet, listed
in the manifest); ``geodelta snapshot`` writes the same file without building; ``catalog.kind:
snapshot`` builds from one without calling the catalog, and a release rebuilt from its own
snapshot is byte-identical, manifest included. Real items: the recorded Planetary Computer and
Earth Search responses in ``../shared/data/stac``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pystac
import pytest
from typer.testing import CliRunner

from geodelta.pipelines.api import build, snapshot, verify
from geodelta.pipelines.cli import app
from geodelta.pipelines.stages.block_search import ItemRecorder, scene_item
from geodelta.schemas import BuildConfig, ConfigError, load_config
from geodelta.schemas.config import CatalogConfig
from geodelta.sources.catalog import open_catalog
from geodelta.sources.demo.catalog import DemoCatalog, write_demo_catalog
from geodelta.sources.profiles import complete_item
from geodelta.sources.scenes import item_to_scene
from geodelta.sources.signing import PlanetaryComputerSigner, signer_for
from geodelta.sources.snapshot import (
    SnapshotCatalog,
    SnapshotError,
    read_snapshot,
    snapshot_bytes,
    write_snapshot,
)
from geodelta.sources.static import StaticCatalog
from tests.factories import REPO

#: Small enough to build twice in a few seconds, large enough to give samples in both zones.
SCALE = 0.3
runner = CliRunner()


# -- real items ------------------------------------------------------------------------------


def _real_items(shared: Path) -> list[dict[str, Any]]:
    """The items of the recorded Planetary Computer and Earth Search responses, as a STAC API
    catalog hands them on (profile-completed)."""
    found: list[dict[str, Any]] = []
    for path in sorted((shared / "stac" / "api_responses").glob("*.json")):
        for exchange in json.loads(path.read_text())["interactions"]:
            found += (exchange["response"].get("json") or {}).get("features", [])
    for path in sorted((shared / "stac" / "items").glob("*.json")):
        d = json.loads(path.read_text())
        if d.get("type") == "Feature":
            found.append(d)
    out = []
    for d in found:
        item = pystac.Item.from_dict(d, preserve_dict=False)
        complete_item(item)
        out.append(item.to_dict(include_self_link=False, transform_hrefs=False))
    return out


@pytest.fixture(scope="module")
def real_items(shared_data: Path) -> list[dict[str, Any]]:
    items = _real_items(shared_data)
    hosts = {d["assets"][k]["href"].split("/")[2] for d in items for k in list(d["assets"])[:1]}
    assert any(h.endswith(".blob.core.windows.net") for h in hosts), hosts  # Planetary Computer
    assert any("sentinel-cogs" in h for h in hosts), hosts  # Earth Search
    return items


def _key(d: dict[str, Any]) -> tuple[str, str]:
    return d["collection"], d["id"]


def test_real_items_write_deterministic_bytes_and_read_back_to_the_same_scenes(
    real_items: list[dict[str, Any]], tmp_path: Path
) -> None:
    origin = {"kind": "stac-api", "url": "https://example.test/stac"}
    data = snapshot_bytes(real_items, origin=origin)
    assert snapshot_bytes(list(reversed(real_items)), origin=origin) == data
    sha = write_snapshot(real_items, tmp_path / "s.parquet", origin=origin)
    assert sha == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "s.parquet").read_bytes() == data
    snap = read_snapshot(str(tmp_path / "s.parquet"))
    assert snap.origin == origin
    assert [_key(d) for d in snap.items] == sorted({_key(d) for d in real_items})
    back = {_key(d): d for d in snap.items}
    for d in real_items:  # what the pipeline keeps of an item is unchanged by the round trip
        a = item_to_scene(pystac.Item.from_dict(d))
        b = item_to_scene(pystac.Item.from_dict(back[_key(d)]))
        assert a == b, d["id"]
    # the items read back write the same file again: a snapshot of a snapshot is the same
    assert snapshot_bytes(snap.items, origin=origin) == data


def test_real_items_keep_their_properties(real_items: list[dict[str, Any]], tmp_path: Path) -> None:
    write_snapshot(real_items, tmp_path / "s.parquet")
    back = {_key(d): d for d in read_snapshot(str(tmp_path / "s.parquet")).items}
    pc = back[("sentinel-2-l2a", "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531")]
    orig = next(d for d in real_items if _key(d) == _key(pc))
    for prop in ("s2:processing_baseline", "eo:cloud_cover", "proj:code", "s2:mgrs_tile"):
        assert pc["properties"][prop] == orig["properties"][prop], prop
    es = back[("sentinel-2-l2a", "S2A_13TDE_20231008_0_L2A")]
    orig = next(d for d in real_items if _key(d) == _key(es))
    assert (
        es["properties"]["earthsearch:boa_offset_applied"]
        is (orig["properties"]["earthsearch:boa_offset_applied"])
    )
    assert es["assets"]["red"]["raster:bands"] == orig["assets"]["red"]["raster:bands"]
    assert es["geometry"]["coordinates"] == orig["geometry"]["coordinates"]


def test_signed_hrefs_lose_their_secret(real_items: list[dict[str, Any]], tmp_path: Path) -> None:
    item = next(d for d in real_items if d["id"].startswith("S2B_MSIL2A_20190629"))
    signed = json.loads(json.dumps(item))
    secret = "sig=SECRETSECRET"
    for asset in signed["assets"].values():
        asset["href"] += f"?st=2026-01-01&se=2026-01-02&{secret}"
    data = snapshot_bytes([signed])
    assert b"SECRETSECRET" not in data and b"st=2026" not in data
    write_snapshot([signed], tmp_path / "s.parquet")
    (back,) = read_snapshot(str(tmp_path / "s.parquet")).items
    assert back["assets"]["B04"]["href"] == item["assets"]["B04"]["href"].split("?")[0]
    assert "?" not in back["assets"]["B04"]["href"]


# -- bad files -------------------------------------------------------------------------------


def _config_file(tmp_path: Path, cfg: BuildConfig) -> Path:
    """``cfg`` as a YAML file the CLI reads."""
    import yaml

    data = cfg.model_dump(mode="json", exclude={"base_dir"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p, items: p.write_text("not parquet at all"), "not Parquet"),
        (
            lambda p, items: pq.write_table(pa.table({"id": ["a"], "collection": ["c"]}), p),
            "no GeoParquet 'geo' metadata",
        ),
        ("drop-assets", "missing column(s) ['assets']"),
    ],
)
def test_a_file_that_is_not_a_snapshot_is_refused_naming_what_is_missing(
    make: Any, says: str, real_items: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "bad.parquet"
    if make == "drop-assets":
        table = pq.read_table(io.BytesIO(snapshot_bytes(real_items[:3])))
        pq.write_table(table.drop_columns(["assets"]), path)
    else:
        make(path, real_items)
    with pytest.raises(SnapshotError, match=re.escape(says)):
        read_snapshot(str(path))
    with pytest.raises(SnapshotError):
        open_catalog(CatalogConfig(kind="snapshot", url=str(path)))


def test_a_snapshot_without_the_configured_collection_is_refused(
    real_items: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "s.parquet"
    write_snapshot(real_items, path)
    with pytest.raises(SnapshotError, match=r"no item of collection\(s\) \['sentinel-1-grd'\]"):
        SnapshotCatalog(str(path), ["sentinel-2-l2a", "sentinel-1-grd"])


# -- the demo: build, snapshot, build from the snapshot ----------------------------------------


def _cfg(cat: DemoCatalog, out: Path, **catalog: Any) -> BuildConfig:
    overrides: dict[str, Any] = {
        "output": {"dir": str(out)},
        "aoi": {"bbox": list(cat.aoi_bbox)},
        "runner": {"name": "inprocess"},
        "shards": {"max_samples": 4},
        "validation": {"great_expectations": False},
        "catalog": {"url": str(cat.catalog_path), **catalog},
    }
    return load_config(REPO / "configs" / "demo.yaml", overrides)


def _files(release: Path) -> dict[str, str]:
    return {
        str(p.relative_to(release)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(release.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoCatalog, Path, Path]:
    """A demo build, and the same config rebuilt from the release's own snapshot."""
    base = tmp_path_factory.mktemp("snapshot")
    cat = write_demo_catalog(base / "catalog", seed=0, scale=SCALE)
    first = Path(build(_cfg(cat, base / "a"), mode="fresh", progress=False).release_dir)
    # local hrefs are relative to the catalog's folder: the copy goes next to catalog.json
    shutil.copy(first / "snapshot" / "items.parquet", cat.root / "items.parquet")
    cfg = _cfg(cat, base / "b", kind="snapshot", url=str(cat.root / "items.parquet"))
    again = Path(build(cfg, mode="fresh", progress=False).release_dir)
    return cat, first, again


def test_every_build_lists_its_snapshot_in_the_manifest(
    built: tuple[DemoCatalog, Path, Path],
) -> None:
    cat, first, _ = built
    manifest = json.loads((first / "manifest.json").read_text())
    assert sum(manifest["splits"].values()) > 0
    (entry,) = [f for f in manifest["files"] if f["path"] == "snapshot/items.parquet"]
    data = (first / "snapshot" / "items.parquet").read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert str(cat.root).encode() not in data  # local hrefs relative: no build folder
    snap = read_snapshot(str(cat.root / "items.parquet"))
    collections = {d["collection"] for d in snap.items}
    assert collections == {"geodelta-demo-s2l2a", "geodelta-demo-landcover"}
    # every item a sample was made from is in it
    ids = {d["id"] for d in snap.items}
    samples = pq.read_table(first / "samples.parquet").to_pylist()
    assert samples and all(s["before_item"] in ids and s["after_item"] in ids for s in samples), (
        "a sample's item is missing from the snapshot"
    )
    assert snap.origin["kind"] == "static" and snap.origin["url"] == "catalog.json"


def test_a_release_rebuilt_from_its_own_snapshot_is_byte_identical(
    built: tuple[DemoCatalog, Path, Path],
) -> None:
    _, first, again = built
    a, b = _files(first), _files(again)
    assert a.keys() == b.keys()
    assert sorted(k for k in a if a[k] != b[k]) == []  # manifest, samples, shards, snapshot
    assert verify(again).ok


def test_geodelta_snapshot_writes_the_release_s_snapshot(
    built: tuple[DemoCatalog, Path, Path], tmp_path: Path
) -> None:
    cat, first, _ = built
    out = cat.root / "cli-snapshot.parquet"
    config = _config_file(tmp_path, _cfg(cat, tmp_path / "x"))
    res = runner.invoke(app, ["snapshot", str(config), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "items ->" in res.output
    assert out.read_bytes() == (first / "snapshot" / "items.parquet").read_bytes()
    n, sha = snapshot(_cfg(cat, tmp_path / "x"), tmp_path / "api.parquet")
    assert n == len(read_snapshot(str(out)).items)
    assert sha == hashlib.sha256(out.read_bytes()).hexdigest()
    assert not (tmp_path / "x").exists()  # no build: nothing written there


def test_the_cli_refuses_a_bad_snapshot_with_exit_2(
    built: tuple[DemoCatalog, Path, Path], tmp_path: Path
) -> None:
    cat, _, _ = built
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a"], "collection": ["c"]}), bad)
    config = _config_file(tmp_path, _cfg(cat, tmp_path / "x", kind="snapshot", url=str(bad)))
    for args in (
        ["snapshot", str(config), "--out", str(tmp_path / "o.parquet")],
        ["build", str(config), "--no-progress"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "no GeoParquet 'geo' metadata" in res.output
        assert len(res.output.strip().splitlines()) == 1, res.output


def _bad_snapshot(kind: str, cat: DemoCatalog, path: Path) -> None:
    good = pq.read_table(cat.root / "items.parquet")
    if kind == "not-parquet":
        path.write_text("id,collection\nx,y\n")
    elif kind == "no-geo":
        pq.write_table(pa.table({"id": ["a"], "collection": ["c"]}), path)
    elif kind == "no-datetime":
        pq.write_table(good.drop_columns(["datetime"]), path)
    elif kind == "no-geometry":
        pq.write_table(good.drop_columns(["geometry"]), path)
    else:  # only the label collection
        items = [
            d
            for d in read_snapshot(str(cat.root / "items.parquet")).items
            if d["collection"] == "geodelta-demo-landcover"
        ]
        write_snapshot(items, path, relative_to=str(cat.root))


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("not-parquet", "not a stac-geoparquet file: not Parquet"),
        ("no-geo", "no GeoParquet 'geo' metadata"),
        # the label items' start/end_datetime columns stand in: the imagery items are refused
        ("no-datetime", "is not a valid STAC item (Invalid Item: If datetime is None"),
        ("no-geometry", "missing column(s) ['geometry']"),
        ("no-imagery", "geodelta-demo-s2l2a"),
    ],
)
def test_every_bad_snapshot_exits_2_naming_what_is_missing(
    kind: str, says: str, built: tuple[DemoCatalog, Path, Path], tmp_path: Path
) -> None:
    """The issue's bad input, through the CLI: a file that is not stac-geoparquet, one missing
    a required column, one without an item of the configured imagery collection."""
    cat, _, _ = built
    bad = cat.root / f"bad-{kind}.parquet"
    _bad_snapshot(kind, cat, bad)
    out = tmp_path / "x"
    config = _config_file(tmp_path, _cfg(cat, out, kind="snapshot", url=str(bad)))
    for args in (["build", str(config), "--no-progress"], ["build", str(config), "--check"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert says in lines[0], lines[0]
    assert not out.exists()


def test_snapshot_catalog_searches_as_the_static_catalog(
    built: tuple[DemoCatalog, Path, Path], tmp_path: Path
) -> None:
    cat, _, _ = built
    static = StaticCatalog(str(cat.catalog_path))
    items = ItemRecorder(static)
    everything = []
    for c in static.collections:
        for s in static.scenes(c):
            everything += items.search([c], s.bbox_lonlat, (s.datetime, s.datetime))
    write_snapshot(items.items.values(), cat.root / "all.parquet", relative_to=str(cat.root))
    snap = SnapshotCatalog(str(cat.root / "all.parquet"))
    assert snap.collections == static.collections
    for c in static.collections:
        assert snap.scenes(c) == static.scenes(c)
    cfg = _cfg(cat, tmp_path / "x")
    (x0, y0, x1, y1) = cat.aoi_bbox
    boxes = [
        (x0, y0, x1, y1),
        (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2),
        (x1 - 0.01, y1 - 0.01, x1, y1),
    ]
    for box in boxes:
        for window in (cfg.time.t0, cfg.time.t1, (cfg.time.t0[0], cfg.time.t1[1])):
            for cc in (None, 10.0):
                coll = [cfg.imagery.collection]
                want = static.search(coll, box, window, max_cloud_cover=cc)
                assert snap.search(coll, box, window, max_cloud_cover=cc) == want


def test_scene_item_gives_the_scene_back(built: tuple[DemoCatalog, Path, Path]) -> None:
    cat, _, _ = built
    static = StaticCatalog(str(cat.catalog_path))
    for c in static.collections:
        for s in static.scenes(c)[:3]:
            assert item_to_scene(pystac.Item.from_dict(scene_item(s))) == s


# -- identity -----------------------------------------------------------------------------------


def test_config_hash_keys_on_the_snapshot_not_its_folder(
    built: tuple[DemoCatalog, Path, Path], tmp_path: Path
) -> None:
    cat, _, _ = built
    live = _cfg(cat, tmp_path / "o")
    here = _cfg(cat, tmp_path / "o", kind="snapshot", url=str(cat.root / "items.parquet"))
    moved = tmp_path / "elsewhere" / "frozen.parquet"
    moved.parent.mkdir()
    shutil.copy(cat.root / "items.parquet", moved)
    there = _cfg(cat, tmp_path / "o", kind="snapshot", url=str(moved))
    # the snapshot records the catalog it froze: building from it is building from that
    assert here.config_hash() == there.config_hash() == live.config_hash()
    assert here.recorded() == live.recorded()
    # a snapshot that records no origin (another tool's) enters by its content
    items = read_snapshot(str(moved)).items
    write_snapshot(items, tmp_path / "foreign.parquet")
    foreign = _cfg(cat, tmp_path / "o", kind="snapshot", url=str(tmp_path / "foreign.parquet"))
    recorded = foreign.normalised()["catalog"]
    assert recorded["kind"] == "snapshot" and recorded["snapshot"].startswith("sha256:")
    write_snapshot(items[1:], tmp_path / "fewer.parquet")
    fewer = _cfg(cat, tmp_path / "o", kind="snapshot", url=str(tmp_path / "fewer.parquet"))
    assert fewer.config_hash() != foreign.config_hash() != live.config_hash()


def test_snapshot_signing_auto_signs_only_planetary_computer_hosts() -> None:
    signer = signer_for(CatalogConfig(kind="snapshot", url="x.parquet"))
    assert isinstance(signer, PlanetaryComputerSigner)
    for href in ("/data/B04.tif", "https://sentinel-cogs.s3.us-west-2.amazonaws.com/a/B04.tif"):
        assert signer(href) == href  # no token fetched for other hosts
    assert signer.fetches == 0
    assert signer_for(CatalogConfig(kind="snapshot", url="x.parquet", signing="none")) is None


def test_a_build_from_a_snapshot_without_the_imagery_collection_exits_2(
    built: tuple[DemoCatalog, Path, Path], tmp_path: Path
) -> None:
    cat, _, _ = built
    only_labels = [
        d
        for d in read_snapshot(str(cat.root / "items.parquet")).items
        if d["collection"] == "geodelta-demo-landcover"
    ]
    path = cat.root / "labels-only.parquet"
    write_snapshot(only_labels, path, relative_to=str(cat.root))
    cfg = _cfg(cat, tmp_path / "o", kind="snapshot", url=str(path))
    with pytest.raises(ConfigError, match=r"imagery.collection: .*geodelta-demo-s2l2a"):
        build(cfg, mode="fresh", progress=False)


class _FakeApi:
    """A STAC API catalog's ``search_items``: the recorded items, whatever the search."""

    truncated = 0

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.found = [pystac.Item.from_dict(d) for d in items]

    def search_items(self, collections: Any, **_: Any) -> list[pystac.Item]:
        return [i for i in self.found if i.collection_id in collections]


def test_recorder_keeps_the_api_items_and_returns_the_api_scenes(
    real_items: list[dict[str, Any]],
) -> None:
    api = _FakeApi(real_items)
    recorder = ItemRecorder(api)
    window = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
    scenes = recorder.search(["sentinel-2-l2a"], (-180.0, -90.0, 180.0, 90.0), window)
    s2 = [d for d in real_items if d["collection"] == "sentinel-2-l2a"]
    assert len(scenes) == len(s2) == len(recorder.items) > 1
    assert scenes == sorted(scenes, key=lambda s: (s.datetime, s.item_id))
    for scene in scenes:
        kept = recorder.items[(scene.collection, scene.item_id)]
        assert item_to_scene(pystac.Item.from_dict(kept)) == scene


def test_a_snapshot_at_an_fsspec_url_is_read_and_hashed_by_content(
    real_items: list[dict[str, Any]], tmp_path: Path
) -> None:
    url = "memory://geodelta-test/snap/items.parquet"
    origin = {"kind": "planetary-computer", "url": "https://planetarycomputer.test/api/stac/v1"}
    write_snapshot(real_items, url, origin=origin)
    cat = open_catalog(CatalogConfig(kind="snapshot", url=url))
    assert "sentinel-2-l2a" in cat.collections
    cfg = load_config(REPO / "configs" / "demo.yaml", {"catalog": {"kind": "snapshot", "url": url}})
    assert cfg.normalised()["catalog"]["kind"] == "planetary-computer"
    assert cfg.recorded()["catalog"]["url"] == origin["url"]


def test_searches_that_found_nothing_give_an_empty_snapshot(tmp_path: Path) -> None:
    write_snapshot([], tmp_path / "empty.parquet", origin={"kind": "static"})
    snap = read_snapshot(str(tmp_path / "empty.parquet"))
    assert snap.items == [] and snap.origin == {"kind": "static"}
    cat = SnapshotCatalog(str(tmp_path / "empty.parquet"))
    window = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
    assert cat.search(["anything"], (0.0, 0.0, 1.0, 1.0), window) == []
    with pytest.raises(SnapshotError, match=r"no item of collection\(s\) \['anything'\]"):
        SnapshotCatalog(str(tmp_path / "empty.parquet"), ["anything"])


# -- drift between snapshots of real items ------------------------------------------------------


def _sign(d: dict[str, Any], token: str) -> dict[str, Any]:
    """``d`` with every https asset href signed with a SAS-like ``token``."""
    out = json.loads(json.dumps(d))
    for asset in out["assets"].values():
        if asset["href"].startswith("https://"):
            asset["href"] = asset["href"].split("?")[0] + f"?st=2026-01-01&se=2026-01-02&{token}"
    return out


def test_drift_between_real_snapshots_names_what_the_catalogs_changed(
    real_items: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Planetary Computer, Earth Search and USGS items as their APIs answered, then as they
    might answer later: a reprocessing (new processing baseline), Earth Search's flag fixed
    and its duplicate ``_1_`` item, a new asset checksum, one item withdrawn, and every href
    signed again with another token (a signature is no change)."""
    from geodelta.pipelines.release.drift import compare_items

    pc = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531"
    es = "S2A_13TDE_20231008_0_L2A"
    ls = "LC08_L2SP_028030_20200114_20200824_02_T1_SR"
    old = [_sign(d, "sig=OLDTOKEN") for d in real_items]
    gone = next(d["id"] for d in old if d["id"] not in (pc, es, ls))
    new = [_sign(d, "sig=NEWTOKEN") for d in real_items if d["id"] != gone]
    by_id = {d["id"]: d for d in new}
    baseline = by_id[pc]["properties"]["s2:processing_baseline"]
    by_id[pc]["properties"]["s2:processing_baseline"] = "05.00"
    flag = by_id[es]["properties"]["earthsearch:boa_offset_applied"]
    by_id[es]["properties"]["earthsearch:boa_offset_applied"] = not flag
    duplicate = json.loads(json.dumps(by_id[es]))
    duplicate["id"] = es.replace("_0_", "_1_")
    new.append(duplicate)
    checksum = by_id[ls]["assets"]["thumbnail"]["file:checksum"]
    by_id[ls]["assets"]["thumbnail"]["file:checksum"] = "1220" + "00" * 32
    write_snapshot(old, tmp_path / "old.parquet")
    write_snapshot(new, tmp_path / "new.parquet")
    assert b"TOKEN" not in (tmp_path / "old.parquet").read_bytes()
    a = read_snapshot(str(tmp_path / "old.parquet"), resolve=False).items
    b = read_snapshot(str(tmp_path / "new.parquet"), resolve=False).items
    found = {
        i.item_id: (i.change, [(f.name, f.before, f.after) for f in i.fields])
        for i in compare_items(a, b)
    }
    assert found == {
        pc: ("changed", [("s2:processing_baseline", baseline, "05.00")]),
        es: ("changed", [("earthsearch:boa_offset_applied", flag, not flag)]),
        duplicate["id"]: ("added", []),
        ls: ("changed", [("assets.thumbnail.file:checksum", checksum, "1220" + "00" * 32)]),
        gone: ("removed", []),
    }
    assert compare_items(a, read_snapshot(str(tmp_path / "old.parquet"), resolve=False).items) == []


def test_the_items_convert_as_stac_geoparquet_s_own_call_converts_them(
    real_items: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot converts with the function stac-geoparquet's public call uses for a
    whole file in memory, without its memory log (psutil on every call): the same table."""
    import stac_geoparquet.arrow._api as sg_api
    from stac_geoparquet.arrow import parse_stac_items_to_arrow

    from geodelta.sources.snapshot import _to_arrow, clean_item

    cleaned = [clean_item(d) for d in real_items]
    theirs = parse_stac_items_to_arrow(cleaned, schema="FullFile").read_all()

    def no_memlog(msg: str) -> None:
        raise AssertionError(f"memlog called: {msg}")

    monkeypatch.setattr(sg_api, "memlog", no_memlog)
    ours = _to_arrow(cleaned)
    assert ours.schema == theirs.schema and ours.equals(theirs)
    assert ours.num_rows == len(real_items)
