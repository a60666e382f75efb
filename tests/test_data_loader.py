"""The researcher loader (geodelta.data.load) on a demo release, locally, over HTTP, and via HF."""

from __future__ import annotations

import functools
import http.server
import io
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geodelta.data import LoaderError, decode_sample, load, resolve_shards
from geodelta.pipelines.build import build
from geodelta.schemas import load_config
from geodelta.sources.demo_catalog import write_demo_catalog
from tests.conftest import REPO

SCALE = 0.5


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small demo release, 2 samples per shard so train has several shards."""
    root = tmp_path_factory.mktemp("loader")
    cat = write_demo_catalog(root / "catalog", seed=0, scale=SCALE)
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        {
            "catalog": {"url": str(cat.catalog_path)},
            "output": {"dir": str(root / "release")},
            "aoi": {"bbox": list(cat.aoi_bbox)},
            "runner": {"name": "inprocess"},
            "shards": {"max_samples": 2},
        },
    )
    result = build(cfg, mode="overwrite", progress=False)
    return Path(result.release_dir)


def manifest(release: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((release / "manifest.json").read_text())
    return data


def raw_samples(release: Path) -> dict[str, dict[str, Any]]:
    import webdataset as wds

    shards = sorted(str(p) for p in (release / "shards").glob("*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False)}


# --- fast unit test: hand-computed values, no build ------------------------------------------


def test_decode_sample_scales_dn_and_maps_nodata() -> None:
    import torch
    from PIL import Image

    from geodelta.pipelines.encode import geotiff_bytes

    dn = np.array([[[0, 100], [5000, 65535]], [[1, 2], [3, 0]]], dtype=np.uint16)
    tif = geotiff_bytes(
        dn, crs="EPSG:32631", transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0),
        band_names=["B04", "B08"],
    )  # fmt: skip
    buf = io.BytesIO()
    Image.fromarray(np.array([[0, 3], [7, 0]], dtype=np.uint8), mode="L").save(buf, "PNG")
    meta = {"bands": ["B04", "B08"], "dn_scale": 1e-4, "dn_offset": -0.1}
    raw = {
        "__key__": "k",
        "before.tif": tif,
        "after.tif": tif,
        "mask.png": buf.getvalue(),
        "json": json.dumps(meta).encode(),
        "captions.json": b'["a", "b"]',
        "qa.json": b'[{"type": "has_change", "question": "q", "answer": "yes"}]',
    }
    out = decode_sample(raw, bands=["B08"])
    assert out["image"].shape == (2, 1, 2, 2) and out["image"].dtype == torch.float32
    expected = np.array([[1e-4 - 0.1, 2e-4 - 0.1], [3e-4 - 0.1, np.nan]], dtype=np.float32)
    np.testing.assert_allclose(out["image"][1, 0].numpy(), expected, rtol=1e-6)
    full = decode_sample(raw, decode="numpy", nodata=0.0)
    np.testing.assert_allclose(
        full["image"][0, 0], np.array([[0.0, -0.09], [0.4, 6.4535]], dtype=np.float32), rtol=1e-6
    )
    assert out["mask"].dtype == torch.int64 and out["mask"].tolist() == [[0, 3], [7, 0]]
    assert out["captions"] == ["a", "b"] and out["qa"][0]["answer"] == "yes"
    assert out["meta"]["__key__"] == "k"
    with pytest.raises(LoaderError, match="B11"):
        decode_sample(raw, bands=["B11"])


# --- on a demo release -------------------------------------------------------------------------


@pytest.mark.slow
def test_values_match_tifs_and_masks(release: Path) -> None:
    import rasterio
    import torch
    from PIL import Image

    raws = raw_samples(release)
    seen = 0
    for s in load(release, split=None):
        raw = raws[s["meta"]["__key__"]]
        meta = json.loads(raw["json"])
        assert s["meta"]["key"] == s["meta"]["__key__"]
        c, (h, w) = len(meta["bands"]), meta["shape"]
        assert s["image"].shape == (2, c, h, w) and s["image"].dtype == torch.float32
        for t, member in enumerate(("before.tif", "after.tif")):
            with rasterio.MemoryFile(raw[member]) as mf, mf.open() as ds:
                dn = ds.read().astype(np.float64)
            want = dn * meta["dn_scale"] + meta["dn_offset"]
            want[dn == 0] = np.nan
            np.testing.assert_allclose(s["image"][t].numpy(), want, rtol=1e-5, atol=1e-6)
        mask = np.asarray(Image.open(io.BytesIO(raw["mask.png"])))
        assert s["mask"].shape == (h, w) and s["mask"].dtype == torch.int64
        assert np.array_equal(s["mask"].numpy(), mask)
        assert s["captions"] == json.loads(raw["captions.json"]) and len(s["captions"]) >= 5
        assert s["qa"] == json.loads(raw["qa.json"])
        seen += 1
    assert seen == len(raws) == sum(manifest(release)["splits"].values())


@pytest.mark.slow
def test_split_counts_and_band_subset(release: Path) -> None:
    splits = manifest(release)["splits"]
    for split, n in splits.items():
        samples = list(load(release, split=split))
        assert len(samples) == n
        assert {s["meta"]["split"] for s in samples} == {split}
    full = {s["meta"]["__key__"]: s["image"] for s in load(release, split="test")}
    sub = list(load(release, split="test", bands=["B08", "B04"]))
    bands = ["B02", "B03", "B04", "B08"]
    for s in sub:
        img = full[s["meta"]["__key__"]]
        assert s["image"].shape[1] == 2
        assert np.array_equal(
            s["image"].numpy(), img[:, [bands.index("B08"), bands.index("B04")]].numpy()
        )
    with pytest.raises(LoaderError, match="'nope'"):
        load(release, split="nope")
    with pytest.raises(LoaderError, match="manifest"):
        load(release / "shards", split="train")


@pytest.mark.slow
def test_dataloader_workers_see_every_sample_once(release: Path) -> None:
    from torch.utils.data import DataLoader

    m = manifest(release)
    assert sum(1 for s in m["shards"] if s["split"] == "train") >= 2
    dl = DataLoader(load(release, split="train"), num_workers=2, batch_size=None)
    keys = Counter(s["meta"]["__key__"] for s in dl)
    assert sum(keys.values()) == m["splits"]["train"] == len(keys)
    assert set(keys.values()) == {1}


@pytest.mark.slow
def test_rank_splitting_is_disjoint_and_complete(
    release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = manifest(release)
    per_rank: list[set[str]] = []
    urls: list[set[str]] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        samples = list(load(release, split="train"))
        per_rank.append({s["meta"]["__key__"] for s in samples})
        urls.append({s["meta"]["__url__"] for s in samples})
    assert per_rank[0] and per_rank[1]
    assert not per_rank[0] & per_rank[1] and not urls[0] & urls[1]
    assert len(per_rank[0] | per_rank[1]) == m["splits"]["train"]
    # explicit arguments win over the environment
    assert {s["meta"]["__key__"] for s in load(release, "train", rank=0, world_size=1)} == (
        per_rank[0] | per_rank[1]
    )
    with pytest.raises(LoaderError, match="rank"):
        load(release, "train", rank=2, world_size=2)


@pytest.fixture
def http_release(release: Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(release))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.slow
@pytest.mark.integration
def test_loads_over_http(release: Path, http_release: str) -> None:
    local = {s["meta"]["__key__"]: s for s in load(release, split="test")}
    remote = list(load(http_release, split="test"))
    assert {s["meta"]["__key__"] for s in remote} == set(local)
    for s in remote:
        assert s["meta"]["__url__"].startswith(http_release + "shards/test-")
        assert np.array_equal(s["image"].numpy(), local[s["meta"]["__key__"]]["image"].numpy(),
                              equal_nan=True)  # fmt: skip
        assert np.array_equal(s["mask"].numpy(), local[s["meta"]["__key__"]]["mask"].numpy())
    shard_urls = resolve_shards(http_release + "manifest.json", "train")
    assert len(shard_urls) >= 2 and all(u.endswith(".tar") for u in shard_urls)
    explicit = list(load(shard_urls, split=None, decode="numpy"))
    assert len(explicit) == manifest(release)["splits"]["train"]


@pytest.mark.slow
def test_huggingface_datasets_loads_shards_offline(
    release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    import datasets  # the dev extra; imported after the env is set (it reads it at import)

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    datasets.disable_progress_bars()

    files = sorted(str(p) for p in (release / "shards").glob("train-*.tar"))
    ds = datasets.load_dataset(
        "webdataset", data_files={"train": files}, split="train", cache_dir=str(tmp_path / "c")
    )
    raws = raw_samples(release)
    assert len(ds) == manifest(release)["splits"]["train"]
    for row in ds:
        raw = raws[row["__key__"]]
        assert row["json"]["key"] == row["__key__"]
        assert row["captions.json"] == json.loads(raw["captions.json"])
        mask = np.asarray(row["mask.png"])
        assert np.array_equal(mask, np.asarray(decode_sample(raw, decode="numpy")["mask"]))


@pytest.mark.slow
def test_bench_loader_quick_writes_its_section(release: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another section\n\nkept as is\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_loader.py"), "--quick",
         "--release", str(release), "--out", str(tmp_path / "w"), "--results", str(results)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((tmp_path / "w" / "bench_loader.json").read_text())
    n = sum(manifest(release)["splits"].values())
    assert figures["samples"] == n
    for variant in ("floor", "loader", "per_file", "loader_workers"):
        assert figures[variant]["samples"] == n and figures[variant]["samples_s"] > 0, variant
    assert len(list((tmp_path / "w" / "per_file").iterdir())) == n
    text = results.read_text()
    assert "kept as is" in text and text.count("## Loader throughput") == 1
