"""A release's collection.json: links, every release file as an asset, and the label, ml-aoi and
version extensions, validated against those extensions' JSON schemas stored with the tests."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pystac
import pytest

from geodelta.pipelines.release.collection import (
    EXTENSIONS,
    FILE_EXTENSION,
    refresh_collection,
)
from geodelta.pipelines.release.manifest import list_files
from tests.conftest import REPO

SCHEMAS = REPO / "tests" / "data" / "stac-schemas"
PREFIX = "https://stac-extensions.github.io/"


@pytest.fixture(scope="module")
def release(small_shards_release: Any) -> Path:
    return Path(small_shards_release.release_dir)


def collection(release: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((release / "collection.json").read_text())
    return data


def schema_of(url: str) -> dict[str, Any]:
    """The stored schema of an extension URL (``<ext>/<version>/schema.json``)."""
    assert url.startswith(PREFIX), url
    data: dict[str, Any] = json.loads((SCHEMAS / url.removeprefix(PREFIX)).read_text())
    return data


def errors(doc: dict[str, Any], url: str) -> list[str]:
    validator = jsonschema.Draft7Validator(schema_of(url))
    return [e.message for e in validator.iter_errors(doc)]


def test_collection_validates_against_the_extension_schemas(release: Path) -> None:
    doc = collection(release)
    assert doc["stac_extensions"] == list(EXTENSIONS)
    for url in EXTENSIONS:
        if url == FILE_EXTENSION:
            continue  # not stored: checked below by value (sizes and checksums of the files)
        assert errors(doc, url) == [], url
    assert doc["version"] == "0.1.0"  # the version extension's field, the config's version
    assert doc["summaries"]["ml-aoi:split"] == ["test", "train", "validate"]
    assert doc["summaries"]["label:type"] == ["raster"]
    (classes,) = doc["summaries"]["label:classes"]
    assert classes["name"] is None and 0 in classes["classes"] and 255 in classes["classes"]
    pystac.Collection.from_dict(doc)  # and pystac reads it


def test_the_schemas_catch_what_they_should(release: Path) -> None:
    """The stored schemas are not vacuous: a wrong split, a missing version, a missing
    extension URL are each refused."""
    doc = collection(release)
    ml_aoi = next(u for u in EXTENSIONS if "/ml-aoi/" in u)
    bad = json.loads(json.dumps(doc))
    next(a for a in bad["assets"].values() if "ml-aoi:split" in a)["ml-aoi:split"] = "val"
    assert errors(bad, ml_aoi)
    version = next(u for u in EXTENSIONS if "/version/" in u)
    no_version = {k: v for k, v in doc.items() if k != "version"}
    assert errors(no_version, version)
    label = next(u for u in EXTENSIONS if "/label/" in u)
    undeclared = {**doc, "stac_extensions": [u for u in EXTENSIONS if u != label]}
    assert errors(undeclared, label)


def test_links_and_assets_cover_every_release_file(release: Path) -> None:
    doc = collection(release)
    links = {link["rel"]: link for link in doc["links"]}
    assert links["root"]["href"] == links["self"]["href"] == "./collection.json"
    assert links["license"]["href"] == "https://spdx.org/licenses/CC0-1.0.html"
    assets = doc["assets"]
    manifest = json.loads((release / "manifest.json").read_text())
    shard_assets = {a["href"] for a in assets.values() if a.get("roles") == ["data"]}
    assert shard_assets == {s["path"] for s in manifest["shards"]}
    for split_asset in (a for a in assets.values() if "geodelta:split" in a):
        want = {"train": "train", "val": "validate", "test": "test"}[split_asset["geodelta:split"]]
        assert split_asset["ml-aoi:split"] == want
    by_href = {a["href"]: a for a in assets.values()}
    for rel in ("README.md", "samples.parquet", "quarantine.parquet", "manifest.json",
                "report/index.html"):  # fmt: skip
        assert rel in by_href, rel
    listed = {f["path"] for f in manifest["files"]}
    for rel in ("validation/summary.json", "snapshot/items.parquet", "incremental.json"):
        assert (rel in by_href) == (rel in listed), rel  # (GX is off in this release)
    for href, asset in by_href.items():
        path = release / href
        assert path.is_file(), href  # every asset is a file of the release
        if "file:checksum" in asset:  # written before the collection: size and sha256 hold
            data = path.read_bytes()
            assert asset["file:size"] == len(data), href
            assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest(), href
    text = (release / "collection.json").read_text()
    assert str(release) not in text and "/tmp" not in text  # relocatable


def test_refresh_lists_files_written_later(release: Path, tmp_path: Path) -> None:
    copy = tmp_path / "release"
    shutil.copytree(release, copy)
    (copy / "reference").mkdir(exist_ok=True)
    (copy / "reference" / "metrics.json").write_text('{"f1": 0.5}\n')
    list_files(copy, ["reference/metrics.json"])
    before = collection(copy)
    refresh_collection(copy)
    after = collection(copy)
    asset = after["assets"]["reference-metrics.json"]
    assert asset["href"] == "reference/metrics.json"
    assert asset["file:size"] == len('{"f1": 0.5}\n')
    # shards, extent, links and summaries kept; the manifest's entry follows the new bytes
    assert {k: v for k, v in after.items() if k != "assets"} == {
        k: v for k, v in before.items() if k != "assets"
    }
    assert {k for k in before["assets"]} < {k for k in after["assets"]}
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "collection.json")
    assert entry["sha256"] == hashlib.sha256((copy / "collection.json").read_bytes()).hexdigest()
