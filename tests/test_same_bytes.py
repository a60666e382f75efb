"""The same data has the same bytes wherever it is built (issue 12, part 5).

The dataset's identity (``config_hash``, written into every sample, the card, the collection
and the manifest) comes from what the data is: the catalog kind, the collection ids, the item
ids each sample records, the content of the files the config names, and the config sections
that shape samples. Where the catalog, the config or the output lives is not part of it, and no
release byte names those folders.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from geodelta.pipelines.api import build
from geodelta.pipelines.release.assemble import _places, _portable
from geodelta.pipelines.release.staging import Staging
from geodelta.schemas import QuarantineRecord, parse_config
from geodelta.sources.demo.catalog import DemoCatalog, write_demo_catalog
from tests.conftest import minimal_config
from tests.factories import DEMO_SCALE, demo_config

#: Small enough to build twice in a few seconds, large enough to give samples in both zones.
SCALE = 0.3


def _moved(cat: DemoCatalog, to: Path) -> DemoCatalog:
    """The same catalog, copied to ``to``."""
    shutil.copytree(cat.root, to)
    return dataclasses.replace(
        cat, root=to, catalog_path=to / cat.catalog_path.name, truth_dir=to / cat.truth_dir.name
    )


def _build(cat: DemoCatalog, out: Path) -> Path:
    cfg = demo_config(cat, out, runner={"name": "inprocess"}, shards={"max_samples": 4})
    return Path(build(cfg, mode="fresh", progress=False).release_dir)


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Path]]:
    """One static catalog copied to two folders, each built into its own output folder."""
    base = tmp_path_factory.mktemp("same-bytes")
    a = write_demo_catalog(base / "here" / "catalog", seed=0, scale=SCALE)
    b = _moved(a, base / "there" / "deeper" / "copy-of-the-catalog")
    rel_a = _build(a, base / "here" / "release")
    rel_b = _build(b, base / "elsewhere" / "out" / "v1")
    folders = [a.root, b.root, rel_a, rel_b, base]
    return rel_a, rel_b, folders


def test_copied_catalog_built_elsewhere_gives_identical_manifest_and_files(
    two_builds: tuple[Path, Path, list[Path]],
) -> None:
    rel_a, rel_b, _ = two_builds
    manifest_a = (rel_a / "manifest.json").read_bytes()
    assert manifest_a == (rel_b / "manifest.json").read_bytes()
    manifest = json.loads(manifest_a)
    assert sum(manifest["splits"].values()) > 0, "the demo at this scale must give samples"
    listed = [f["path"] for f in manifest["files"]] + [s["path"] for s in manifest["shards"]]
    assert any(p.startswith("shards/") for p in listed)
    for path in listed:
        assert (rel_a / path).read_bytes() == (rel_b / path).read_bytes(), path


def test_no_release_byte_names_a_build_folder(two_builds: tuple[Path, Path, list[Path]]) -> None:
    rel_a, _, folders = two_builds
    manifest = json.loads((rel_a / "manifest.json").read_bytes())
    listed = [f["path"] for f in manifest["files"]] + [s["path"] for s in manifest["shards"]]
    for path in ["manifest.json", *listed]:
        data = (rel_a / path).read_bytes()
        for folder in folders:
            assert str(folder).encode() not in data, f"{path} names {folder}"
    catalog = manifest["config"]["catalog"]
    assert catalog["url"] == "catalog.json" and catalog["kind"] == "static"


def test_manifest_config_parses_back_to_its_config_hash(
    two_builds: tuple[Path, Path, list[Path]],
) -> None:
    rel_a, _, _ = two_builds
    manifest = json.loads((rel_a / "manifest.json").read_bytes())
    cfg = parse_config({**manifest["config"], "output": {"dir": "anywhere"}})
    assert cfg.config_hash() == manifest["config_hash"]


@pytest.mark.slow  # two builds at the demo scale (~25 s)
def test_an_unreadable_asset_is_quarantined_with_the_same_bytes_anywhere(
    tmp_path: Path,
) -> None:
    import pyarrow.parquet as pq

    # the zone-31 after scenes' B08 unreadable: the zone-32 cells still give samples
    cat = write_demo_catalog(tmp_path / "a" / "catalog", seed=0, scale=DEMO_SCALE)
    copy = _moved(cat, tmp_path / "b" / "elsewhere")
    for root in (cat.root, copy.root):
        victims = sorted(root.rglob("*UTM31_2021*/B08*.tif"))
        assert victims, "expected after-scene B08 COGs of the zone-31 tile"
        for path in victims:
            path.write_bytes(b"this is not a GeoTIFF" * 10)
    rel_a = _build(cat, tmp_path / "a" / "release")
    rel_b = _build(copy, tmp_path / "out")
    table = (rel_a / "quarantine.parquet").read_bytes()
    assert table == (rel_b / "quarantine.parquet").read_bytes()
    rows = pq.read_table(rel_a / "quarantine.parquet").to_pylist()
    details = [r["detail"] for r in rows if r["reason"] == "read_error"]
    assert details and all("'<catalog>/" in d and "B08" in d for d in details), details
    assert not any(str(tmp_path) in d for d in details)
    assert (rel_a / "manifest.json").read_bytes() == (rel_b / "manifest.json").read_bytes()


def _hash(base_dir: str | None = None, **overrides: Any) -> str:
    return parse_config(minimal_config(**overrides), base_dir=base_dir).config_hash()


def test_config_hash_ignores_where_the_catalog_and_output_live() -> None:
    plain = _hash()
    assert _hash(catalog={"url": "/data/one/catalog.json"}) == plain
    assert _hash(catalog={"url": "file:///elsewhere/catalog.json"}, base_dir="/x") == plain
    assert _hash(catalog={"url": "https://mirror.example/stac/catalog.json?sig=1"}) == plain
    assert _hash(output={"dir": "/somewhere/else"}, base_dir="/y") == plain


def test_config_hash_changes_with_what_identifies_the_data() -> None:
    plain = _hash()
    imagery = {**minimal_config()["imagery"], "collection": "s2-other"}
    assert _hash(imagery=imagery) != plain
    assert _hash(labels={"kind": "landcover", "collection": "lc-other"}) != plain
    assert _hash(catalog={"url": "catalog.json", "kind": "stac-api"}) != plain


def test_aoi_file_enters_the_hash_by_content_not_path(tmp_path: Path) -> None:
    feature = {
        "type": "Feature",
        "properties": {"name": "r"},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[5.95, 45.02], [6.05, 45.02], [6.05, 45.06], [5.95, 45.02]]],
        },
    }
    text = json.dumps({"type": "FeatureCollection", "features": [feature]})
    for folder in ("a", "b/c"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "aoi.geojson").write_text(text)
    (tmp_path / "other.geojson").write_text(text.replace("6.05", "6.04"))
    here = _hash(aoi={"geojson": str(tmp_path / "a" / "aoi.geojson")})
    relative = _hash(str(tmp_path / "b" / "c"), aoi={"geojson": "aoi.geojson"})
    assert here == relative
    assert _hash(aoi={"geojson": str(tmp_path / "other.geojson")}) != here
    cfg = parse_config(minimal_config(aoi={"geojson": "aoi.geojson"}), base_dir=str(tmp_path / "a"))
    recorded = cfg.recorded()
    assert recorded["aoi"]["geojson"].startswith("sha256:")
    assert parse_config({**recorded, "output": {"dir": "x"}}).config_hash() == here


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        ("/data/somewhere/catalog.json", "catalog.json"),
        ("../build/demo/catalog/catalog.json", "catalog.json"),
        ("file:///data/somewhere/root.json", "root.json"),
        ("https://earth-search.example/v1?token=secret#x", "https://earth-search.example/v1"),
    ],
)
def test_manifest_records_the_catalog_without_its_local_folder(url: str, recorded: str) -> None:
    cfg = parse_config(minimal_config(catalog={"url": url}), base_dir="/some/where")
    assert cfg.recorded()["catalog"]["url"] == recorded
    assert "url" not in cfg.normalised()["catalog"]


def test_quarantine_details_name_no_build_folder(tmp_path: Path) -> None:
    catalog_dir = tmp_path / "copy" / "catalog"
    release = tmp_path / "out" / "release"
    cfg = parse_config(
        minimal_config(catalog={"url": str(catalog_dir / "catalog.json")}),
        base_dir=str(tmp_path / "configs"),
    )
    places = _places(release, cfg, Staging(release / ".staging"))
    rec = QuarantineRecord(
        key="k",
        cell_id="c",
        stage="load",
        reason="read_error",
        detail=f"cannot read raster '{catalog_dir}/items/x/B02.tif' (item 'x'): "
        f"{catalog_dir}/items/x/B02.tif: not a TIFF; staged at {release}/.staging/k; "
        f"{catalog_dir}2 stays",
    )
    out = _portable(rec, places)
    assert out.detail == (
        "cannot read raster '<catalog>/items/x/B02.tif' (item 'x'): "
        "<catalog>/items/x/B02.tif: not a TIFF; staged at <staging>/k; "
        f"{catalog_dir}2 stays"
    )
