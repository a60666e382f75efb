"""A release read by Hugging Face ``datasets`` as it is: ``load_dataset(<release folder>)`` through
the card's front matter, ``load_dataset("webdataset", ...)`` with ``hf_features()``, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import geodelta.data as gd
from geodelta.data import LoaderError, decode_members
from geodelta.pipelines.release.layout import iter_tar_samples

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def release(small_shards_release: Any) -> Path:
    return Path(small_shards_release.release_dir)


def manifest(release: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((release / "manifest.json").read_text())
    return data


def front_matter(release: Path) -> dict[str, Any]:
    text = (release / "README.md").read_text()
    assert text.startswith("---\n")
    head, _, _ = text[4:].partition("\n---\n")
    data: dict[str, Any] = yaml.safe_load(head)
    return data


def raw_by_key(release: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted((release / "shards").glob("*.tar")):
        for key, members in iter_tar_samples(shard):
            out[key] = members
    return out


def test_card_front_matter_lists_each_splits_shards(release: Path) -> None:
    fm = front_matter(release)
    m = manifest(release)
    assert fm["license"] == "cc0-1.0"  # the demo's CC0-1.0, as the Hub spells it
    assert fm["size_categories"] == ["n<1K"]
    assert {"change-detection", "remote-sensing", "synthetic"} <= set(fm["tags"])
    assert "image-segmentation" in fm["task_categories"]
    (config,) = fm["configs"]
    files = {d["split"]: d["path"] for d in config["data_files"]}
    expected: dict[str, list[str]] = {}
    for s in m["shards"]:
        expected.setdefault(s["split"], []).append(s["path"])
    assert files == expected  # every shard of every split, nothing of validation/
    assert all((release / p).is_file() for paths in files.values() for p in paths)
    features = {f["name"]: f["dtype"] for f in fm["dataset_info"]["features"]}
    assert features["before.tif"] == features["after.tif"] == "binary"
    assert features["mask.png"] == features["change.png"] == "image"
    assert set(features) == {"__key__", "__url__", *m["members"]}


def test_load_dataset_on_the_release_folder(release: Path, tmp_path: Path, hf: Any) -> None:
    dd = hf.load_dataset(str(release), cache_dir=str(tmp_path / "c"))
    m = manifest(release)
    assert {name: len(ds) for name, ds in dd.items()} == m["splits"]
    raws = raw_by_key(release)
    ds = dd["train"]
    row = ds[0]
    assert isinstance(row["before.tif"], bytes)  # not an Image: PIL would read band 1 only
    decoded = ds.with_transform(gd.hf_transform)
    for i in range(len(ds)):
        got = decoded[i]
        raw = raws[got["__key__"]]
        want = decode_members(raw)
        assert got["json"]["key"] == got["__key__"]
        assert got["before.tif"].shape == want["before.tif"].shape
        assert got["before.tif"].shape[0] == len(got["json"]["bands"]) > 1  # every band
        assert np.array_equal(got["after.tif"], want["after.tif"], equal_nan=True)
        assert np.array_equal(got["mask.png"], want["mask.png"])
        assert got["mask.png"].dtype == np.uint8  # codes, not fractions
        assert np.array_equal(got["change.png"], (want["mask.png"] > 0).astype(np.uint8))
        assert got["captions.json"] == json.loads(raw["captions.json"])


def test_load_dataset_webdataset_with_hf_features(release: Path, tmp_path: Path, hf: Any) -> None:
    files = [str(release / s["path"]) for s in manifest(release)["shards"] if s["split"] == "train"]
    ds = hf.load_dataset(
        "webdataset",
        data_files={"train": files},
        split="train",
        features=gd.hf_features(),
        cache_dir=str(tmp_path / "c"),
    )
    assert len(ds) == manifest(release)["splits"]["train"]
    got = ds.with_transform(gd.hf_transform)[0]
    want = decode_members(raw_by_key(release)[got["__key__"]])
    assert np.array_equal(got["before.tif"], want["before.tif"], equal_nan=True)

    # without hf_features() datasets decodes the GeoTIFFs with PIL (band 1): refused, named
    plain = hf.load_dataset(
        "webdataset", data_files={"train": files}, split="train", cache_dir=str(tmp_path / "p")
    )
    assert np.asarray(plain[0]["before.tif"]).ndim == 2  # the silent band-1 read hf_* avoids
    with pytest.raises(LoaderError, match="hf_features"):
        plain.with_transform(gd.hf_transform)[0]


def test_the_cards_plain_tool_recipes_hold(release: Path) -> None:
    """What the card's "read with" table says of each codec, on a real sample."""
    import io

    import tifffile
    from PIL import Image

    from geodelta.data import tif_dn

    card = (release / "README.md").read_text()
    assert "`tifffile.imread(io.BytesIO(b))`" in card and 'decode("l")' in card
    members = next(iter(raw_by_key(release).values()))
    meta = json.loads(members["json"])
    for name in ("before.tif", "after.tif"):
        arr = tifffile.imread(io.BytesIO(members[name]))
        dn, _ = tif_dn(members[name], list(range(len(meta["bands"]))))
        assert arr.dtype == np.uint16 and np.array_equal(arr, dn), name  # every band
        with Image.open(io.BytesIO(members[name])) as img:  # what the card warns against
            assert np.asarray(img).ndim == 2  # PIL: one band only
    mask = np.asarray(Image.open(io.BytesIO(members["mask.png"])))
    change = np.asarray(Image.open(io.BytesIO(members["change.png"])))
    assert mask.dtype == change.dtype == np.uint8 and mask.shape == change.shape
    assert set(np.unique(change)) <= {0, 1} and np.array_equal(change, (mask > 0).astype(np.uint8))
