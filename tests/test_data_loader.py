"""The researcher loader (geodelta.data.load) on a demo release, locally, over HTTP, and via HF."""

from __future__ import annotations

import functools
import http.server
import io
import json
import math
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geodelta.data import (
    DECODED_MEMBERS,
    LoaderError,
    UnknownMemberWarning,
    decode_member,
    decode_members,
    decode_sample,
    load,
    resolve_shards,
    tif_dn,
    tif_dn_fast,
)
from tests.conftest import REPO
from tests.factories import build_demo_release

SCALE = 0.5


@pytest.fixture(scope="module")
def release(demo_catalog: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small demo release over the session's catalog, 2 samples per shard so train has
    several shards."""
    root = tmp_path_factory.mktemp("loader")
    return build_demo_release(root, scale=SCALE, max_samples=2, catalog=demo_catalog)


def manifest(release: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((release / "manifest.json").read_text())
    return data


def manifest_samples(release: Path, shard: str) -> int:
    return int(next(s["samples"] for s in manifest(release)["shards"] if shard.endswith(s["path"])))


def raw_samples(release: Path) -> dict[str, dict[str, Any]]:
    import webdataset as wds

    shards = sorted(str(p) for p in (release / "shards").glob("*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False)}


# --- fast unit test: hand-computed values, no build ------------------------------------------


def test_decode_sample_scales_dn_and_maps_nodata() -> None:
    import torch
    from PIL import Image

    from geodelta.pipelines.stages.encode import geotiff_bytes

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


# --- the GeoTIFF fast path and the tar reader (no build) ------------------------------------

TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)


def rasterio_read(tif: bytes, idx: list[int]) -> tuple[np.ndarray, float | None]:
    from rasterio.io import MemoryFile

    with MemoryFile(tif) as mf, mf.open() as ds:
        return ds.read([i + 1 for i in idx]), ds.nodata


def gdal_tif(arr: np.ndarray, **profile: Any) -> bytes:
    """A GeoTIFF written by GDAL with the given creation options."""
    from affine import Affine
    from rasterio.io import MemoryFile

    count, height, width = arr.shape
    with MemoryFile() as mf:
        with mf.open(driver="GTiff", dtype=arr.dtype.name, count=count, height=height,
                     width=width, crs="EPSG:32631", transform=Affine(*TRANSFORM),
                     **profile) as ds:  # fmt: skip
            ds.write(arr)
        return bytes(mf.read())


def test_fast_tif_path_equals_rasterio_on_geodelta_tifs() -> None:
    from geodelta.pipelines.stages.encode import geotiff_bytes

    rng = np.random.default_rng(6)
    # 300 rows of 70 px: GDAL writes 58-row strips, the last one partial (300 = 5 * 58 + 10)
    for shape in ((4, 300, 70), (1, 17, 5), (3, 64, 64)):
        dn = rng.integers(0, 65536, shape, dtype=np.uint16)
        dn[:, :3, :3] = 0  # nodata
        names = [f"B{i}" for i in range(shape[0])]
        tif = geotiff_bytes(dn, crs="EPSG:32631", transform=TRANSFORM, band_names=names)
        for idx in ([*range(shape[0])], [shape[0] - 1, 0], [0]):
            fast = tif_dn_fast(tif, idx)
            assert fast is not None, (shape, idx)
            ref, ref_nodata = rasterio_read(tif, idx)
            assert fast[0].dtype == ref.dtype == np.uint16 and fast[0].shape == ref.shape
            assert np.array_equal(fast[0], ref) and np.array_equal(ref, dn[idx])
            assert fast[1] == ref_nodata == 0


def test_unhandled_tifs_fall_back_to_rasterio() -> None:
    rng = np.random.default_rng(7)
    dn = rng.integers(1, 65536, (3, 40, 30), dtype=np.uint16)
    dn[0, 0, :5] = 0
    sparse = dn.copy()
    sparse[1] = 0  # an all-zero band (one strip): GDAL writes no bytes for it (SPARSE_OK)
    cases: dict[str, tuple[np.ndarray, dict[str, Any]]] = {
        "tiled": (dn, {"tiled": True, "blockxsize": 16, "blockysize": 16, "compress": "deflate"}),
        "lzw": (dn, {"compress": "lzw", "interleave": "band"}),
        "pixel-interleaved": (dn, {"compress": "deflate", "interleave": "pixel"}),
        "big-endian": (dn, {"compress": "deflate", "interleave": "band", "endianness": "BIG"}),
        "sparse strips": (sparse, {"compress": "deflate", "interleave": "band", "sparse_ok": True}),
        "float32": (dn.astype(np.float32), {"compress": "deflate", "interleave": "band"}),
    }
    for name, (arr, profile) in cases.items():
        tif = gdal_tif(arr, **profile)
        assert tif_dn_fast(tif, [2, 1, 0]) is None, name
        got, nodata = tif_dn(tif, [2, 1, 0])
        assert got.dtype == arr.dtype and np.array_equal(got, arr[[2, 1, 0]]), name
        assert nodata == 0.0, name
    assert tif_dn_fast(b"not a tiff at all", [0]) is None
    # layouts the fast path does read, written by GDAL rather than geodelta: uncompressed,
    # deflate without predictor, and a nodata value other than 0
    for profile in ({"interleave": "band"}, {"compress": "deflate", "interleave": "band",
                                             "nodata": 65535}):  # fmt: skip
        tif = gdal_tif(dn, **profile)
        fast = tif_dn_fast(tif, [1, 2])
        assert fast is not None and np.array_equal(fast[0], dn[[1, 2]])
        assert fast[1] == (rasterio_read(tif, [0])[1] or 0)


def test_nodata_follows_the_tif_nodata_value() -> None:
    """DN == the file's nodata -> ``nodata``; with nodata 65535, DN 0 is a valid value."""
    dn = np.array([[[0, 100], [65535, 7]]], dtype=np.uint16)
    meta = {"bands": ["B04"], "dn_scale": 1e-4, "dn_offset": -0.1}
    for profile, want in (
        ({"compress": "deflate", "predictor": 2, "interleave": "band", "nodata": 65535},
         [[-0.1, -0.09], [np.nan, -0.0993]]),
        ({"compress": "lzw", "interleave": "band", "nodata": 65535},  # rasterio path
         [[-0.1, -0.09], [np.nan, -0.0993]]),
        ({"compress": "deflate", "interleave": "band"},  # no nodata tag: DN 0
         [[np.nan, -0.09], [6.4535, -0.0993]]),
    ):  # fmt: skip
        tif = gdal_tif(dn, **profile)
        raw = {"__key__": "k", "json": json.dumps(meta).encode(), "before.tif": tif,
               "after.tif": tif, "mask.png": png([[0, 1], [1, 0]]), "captions.json": b"[]",
               "qa.json": b"[]"}  # fmt: skip
        out = decode_sample(raw, decode="numpy")
        expected = np.array(want, dtype=np.float32)
        np.testing.assert_allclose(out["image"][0, 0], expected, rtol=1e-6)
        np.testing.assert_allclose(out["image"][1, 0], expected, rtol=1e-6)


def png(values: list[list[int]]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.array(values, dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def _png16(values: list[list[int]]) -> bytes:
    """A 16-bit PNG (``regions.png``)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.array(values, dtype=np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]], fmt: int, mode: str = "w") -> None:
    import tarfile

    with tarfile.open(path, mode, format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_tar_reader_matches_webdataset_on_every_tar_format(tmp_path: Path) -> None:
    """ustar, pax, GNU and gzipped tars read exactly as webdataset reads them."""
    import tarfile

    from webdataset import tariterators

    def sample(key: str, i: int) -> list[tuple[str, bytes]]:
        return [(f"{key}.json", json.dumps({"i": i}).encode()), (f"{key}.after.png", b"p" * 700),
                (f"{key}.captions.json", b'["c"]')]  # fmt: skip

    plain = [*sample("a", 0), ("__meta__", b"skipped"), *sample("b", 1)]
    long_key = "d/" + "x" * 120  # > 100 characters: a pax or GNU long-name header
    extended = sample("a", 0) + sample(long_key, 1) + sample("cé", 2)
    cases = {
        "ustar.tar": (plain, tarfile.USTAR_FORMAT, "w"),
        "gnu.tar": (extended, tarfile.GNU_FORMAT, "w"),
        "pax.tar": (extended, tarfile.PAX_FORMAT, "w"),
        "pax.tar.gz": (extended, tarfile.PAX_FORMAT, "w:gz"),
    }
    for name, (members, fmt, mode) in cases.items():
        path = tmp_path / name
        write_tar(path, members, fmt, mode)
        with open(path, "rb") as f:  # webdataset's own reading of the tar
            files = [{**m, "__url__": str(path)} for m in tariterators.tar_file_iterator(f)]
        want = list(tariterators.group_by_keys(iter(files)))
        got = list(load([path], split=None, decode="raw"))
        assert [s["meta"]["__key__"] for s in got] == [s["__key__"] for s in want], name
        assert len(got) == len(members) // 3
        for g, w in zip(got, want, strict=True):
            assert g["after.png"] == w["after.png"] and g["captions.json"] == w["captions.json"]
            assert g["meta"]["i"] == json.loads(w["json"])["i"]
    # a shard cut inside a member or a header is an error naming the shard, not a short sample
    data = (tmp_path / "ustar.tar").read_bytes()
    # (a cut inside a header block reads as the end of the archive, in tarfile and webdataset
    # alike: the manifest's sample counts, checked by `geodelta verify`, catch that one)
    for cut in (1024 + 512 + 300,):  # inside a.after.png's data
        (tmp_path / "cut.tar").write_bytes(data[:cut])
        for decode in ("raw", "numpy"):  # decoded reading passes over a.after.png: still caught
            with pytest.raises(LoaderError, match="not a readable tar") as err:
                list(load([tmp_path / "cut.tar"], split=None, decode=decode))
            assert err.value.source == str(tmp_path / "cut.tar")


def full_sample(key: str) -> list[tuple[str, bytes]]:
    """Every member of the members table for one 2x2 sample, in tar order."""
    from PIL import Image

    from geodelta.pipelines.stages.encode import geotiff_bytes
    from geodelta.schemas.members import SAMPLE_MEMBERS

    dn = np.array([[[0, 100], [5000, 65535]], [[1, 2], [3, 0]]], dtype=np.uint16)
    tif = geotiff_bytes(dn, crs="EPSG:32631", transform=TRANSFORM, band_names=["B04", "B08"])
    rgb = io.BytesIO()
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(2, 2, 3), mode="RGB").save(rgb, "PNG")
    meta = {"bands": ["B04", "B08"], "dn_scale": 1e-4, "dn_offset": -0.1, "key": key}
    members = {
        "before.tif": tif,
        "after.tif": tif,
        "before.png": rgb.getvalue(),
        "after.png": rgb.getvalue(),
        "mask.png": png([[0, 3], [7, 0]]),
        "change.png": png([[0, 1], [1, 0]]),
        "regions.png": _png16([[0, 1], [300, 0]]),
        "lc_before.png": png([[1, 2], [3, 4]]),
        "lc_after.png": png([[4, 3], [2, 1]]),
        "json": json.dumps(meta).encode(),
        "captions.json": b'["a"]',
        "qa.json": b'[{"type": "has_change", "question": "q", "answer": "yes"}]',
    }
    assert tuple(members) == SAMPLE_MEMBERS
    return [(f"{key}.{name}", data) for name, data in members.items()]


def test_every_member_decodes_by_its_codec() -> None:
    raw = {n.split(".", 1)[1]: d for n, d in full_sample("k")} | {"__key__": "k"}
    out = decode_members(raw)
    assert out["__key__"] == "k"
    for name in ("before.png", "after.png"):
        assert out[name].dtype == np.uint8 and out[name].shape == (2, 2, 3)
        assert out[name].tolist() == np.arange(12).reshape(2, 2, 3).tolist()
    assert out["mask.png"].dtype == np.uint8 and out["mask.png"].tolist() == [[0, 3], [7, 0]]
    assert out["regions.png"].dtype == np.uint16 and out["regions.png"].tolist() == [
        [0, 1],
        [300, 0],
    ]
    assert out["change.png"].dtype == np.uint8 and out["change.png"].tolist() == [[0, 1], [1, 0]]
    assert out["lc_before.png"].tolist() == [[1, 2], [3, 4]]
    assert out["lc_after.png"].dtype == np.uint8 and out["lc_after.png"].shape == (2, 2)
    assert out["before.tif"].dtype == np.float32 and out["before.tif"].shape == (2, 2, 2)
    assert math.isnan(out["before.tif"][0, 0, 0])
    np.testing.assert_allclose(out["after.tif"][0, 0, 1], 100 * 1e-4 - 0.1, rtol=1e-6)
    assert out["json"]["key"] == "k" and out["captions.json"] == ["a"]
    assert out["qa.json"][0]["answer"] == "yes"
    # the TorchGeo-like sample is made of the same decoders
    sample = decode_sample(raw, decode="numpy")
    assert np.array_equal(sample["image"][0], out["before.tif"], equal_nan=True)
    assert np.array_equal(sample["mask"], out["mask.png"]) and sample["mask"].dtype == np.int64
    with pytest.raises(LoaderError, match="pass meta="):
        decode_member("before.tif", raw["before.tif"])


def test_an_unknown_member_is_reported_not_dropped_silently(tmp_path: Path) -> None:
    """The loader warns (naming shard, key and member); decode="raw" keeps the bytes."""
    import tarfile

    shard = tmp_path / "train-000000.tar"
    members = full_sample("k1")
    write_tar(shard, [*members[:3], ("k1.depth.npy", b"xyz"), *members[3:]], tarfile.USTAR_FORMAT)
    for decode in ("numpy", "raw"):
        with pytest.warns(UnknownMemberWarning) as caught:
            samples = list(load([shard], split=None, decode=decode))  # type: ignore[arg-type]
        assert len(samples) == 1 and len(caught) == 1
        message = str(caught[0].message)
        assert str(shard) in message and "sample k1" in message
        assert "unknown member 'depth.npy'" in message
        if decode == "raw":
            assert samples[0]["depth.npy"] == b"xyz"
        else:
            assert math.isnan(float(samples[0]["image"][0, 0, 0, 0]))
    raw = {n.split(".", 1)[1]: d for n, d in full_sample("k")} | {"depth.npy": b"xyz"}
    with pytest.warns(UnknownMemberWarning, match=r"unknown member 'depth\.npy'"):
        assert decode_members(raw)["depth.npy"] == b"xyz"
    with pytest.raises(LoaderError, match=r"unknown member 'depth\.npy'"):
        decode_member("depth.npy", b"xyz", key="k")


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
def test_fast_tif_path_reads_every_release_tif_like_rasterio(release: Path) -> None:
    raws = raw_samples(release)
    tifs = 0
    for raw in raws.values():
        bands = json.loads(raw["json"])["bands"]
        for member in ("before.tif", "after.tif"):
            for idx in ([*range(len(bands))], [bands.index("B08"), bands.index("B04")]):
                fast = tif_dn_fast(raw[member], idx)
                assert fast is not None, f"{raw['__key__']}.{member} left the fast path"
                ref, nodata = rasterio_read(raw[member], idx)
                assert fast[0].dtype == ref.dtype and np.array_equal(fast[0], ref)
                assert fast[1] == nodata == 0
            tifs += 1
    assert tifs == 2 * len(raws) > 0


@pytest.mark.slow
def test_decoded_samples_skip_unused_members_raw_keeps_them(release: Path) -> None:
    shard = resolve_shards(release, "test")[0]
    raw = next(iter(load(shard, split=None, decode="raw")))
    assert {"before.png", "after.png", "lc_before.png", "lc_after.png"} <= set(raw)
    assert set(DECODED_MEMBERS) <= set(raw)
    from geodelta.data import _expand_tars, _is_decoded_member

    with open(shard, "rb") as f:
        files = list(_expand_tars([{"url": shard, "stream": f}], select=_is_decoded_member))
    assert files[-1] == {}  # the end-of-shard marker
    names = [m["fname"] for m in files[:-1]]
    assert {n.split(".", 1)[1] for n in names} == set(DECODED_MEMBERS)
    assert len(names) == len(DECODED_MEMBERS) * manifest_samples(release, shard)
    decoded = next(iter(load(shard, split=None)))
    assert decoded["meta"]["__key__"] == raw["meta"]["__key__"]
    assert {"image", "mask", "captions", "qa", "meta"} <= set(decoded)


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
def test_huggingface_datasets_loads_shards_offline(release: Path, hf: Any, tmp_path: Path) -> None:
    datasets = hf  # offline, caches under tmp_path (tests/conftest.py)

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
    readers = figures["readers"]
    assert set(readers) == {"floor", "loader", "per_file", "loader_workers", "floor_http",
                            "loader_http", "per_file_http", "per_file_http_urllib",
                            "loader_http_latency", "per_file_http_latency"}  # fmt: skip
    for variant, r in readers.items():
        assert r["samples"] == n and r["min_s"] <= r["samples_s"] <= r["max_s"], variant
        assert r["samples_per_cpu_s"] > 0, variant
    # with a round trip per request, 6 GETs per sample cannot beat 1 GET per shard
    assert (
        readers["loader_http_latency"]["samples_s"] > readers["per_file_http_latency"]["samples_s"]
    )
    assert len(list((tmp_path / "w" / "per_file").iterdir())) == n
    text = results.read_text()
    assert "kept as is" in text and text.count("## Loader throughput") == 1
    assert "HTTP per-file" in text and "--quick" in text


# --- len, transforms, collate, plot, the webdataset handler, a light import (issue 17) -----


@pytest.mark.slow
def test_len_comes_from_the_manifest_per_rank(release: Path) -> None:
    m = manifest(release)
    for split, n in m["splits"].items():
        ds = load(release, split=split, decode="raw")
        assert len(ds) == n == sum(1 for _ in ds)
    shards = [s for s in m["shards"] if s["split"] == "train"]
    assert len(shards) >= 3  # two samples per shard: ranks get different shards
    lens = [len(load(release, split="train", rank=r, world_size=2)) for r in range(2)]
    seen = [sum(1 for _ in load(release, split="train", rank=r, world_size=2, decode="raw"))
            for r in range(2)]  # fmt: skip
    assert lens == seen and sum(lens) == m["splits"]["train"]
    explicit = load(resolve_shards(release, "train"), split=None)
    with pytest.raises(TypeError, match="explicit shards"):
        len(explicit)


@pytest.mark.slow
def test_transforms_and_dataloader_batches_of_eight(release: Path) -> None:
    import torch
    from torch.utils.data import DataLoader

    from geodelta.data import collate

    def double(sample: dict[str, Any]) -> dict[str, Any]:
        return {**sample, "image": sample["image"] * 2, "doubled": True}

    plain = {s["meta"]["__key__"]: s for s in load(release, split="train")}
    ds = load(release, split="train", transforms=double)
    loader = DataLoader(ds, batch_size=8, collate_fn=collate)
    batches = list(loader)
    assert len(loader) == len(batches) == math.ceil(manifest(release)["splits"]["train"] / 8)
    b = batches[0]
    n = b["image"].shape[0]
    assert b["image"].dim() == 5 and b["image"].shape[1] == 2 and n == min(8, len(plain))
    assert b["mask"].shape == (n, *b["image"].shape[-2:]) and b["mask"].dtype == torch.int64
    assert b["doubled"] == [True] * n and len(b["captions"]) == n
    assert b["valid_hw"].tolist() == [list(b["image"].shape[-2:])] * n
    for i, meta in enumerate(b["meta"]):
        want = plain[meta["__key__"]]
        assert torch.equal(b["image"][i].nan_to_num(-1), (want["image"] * 2).nan_to_num(-1))
        assert meta["__bands__"] == meta["bands"]  # every band, in the file's order


def test_collate_pads_samples_of_any_size() -> None:
    import torch

    from geodelta.collate import PAD_INDEX, CollateError, collate

    def sample(h: int, w: int, v: float) -> dict[str, Any]:
        return {
            "image": torch.full((2, 3, h, w), v),
            "mask": torch.full((h, w), 7, dtype=torch.int64),
            "captions": [f"c{h}"],
            "meta": {"h": h},
        }

    batch = collate([sample(4, 6, 1.0), sample(5, 3, 2.0)])
    assert batch["image"].shape == (2, 2, 3, 5, 6) and batch["mask"].shape == (2, 5, 6)
    assert batch["valid_hw"].tolist() == [[4, 6], [5, 3]]
    assert torch.isnan(batch["image"][0, :, :, 4:, :]).all()  # padding reads as no data
    assert (batch["image"][0, :, :, :4, :] == 1.0).all()
    assert (batch["mask"][1, :, 3:] == PAD_INDEX).all() and (batch["mask"][1, :, :3] == 7).all()
    assert batch["captions"] == [["c4"], ["c5"]] and batch["meta"] == [{"h": 4}, {"h": 5}]
    same = collate([sample(4, 6, 1.0), sample(4, 6, 3.0)])
    assert torch.equal(same["image"], torch.stack([torch.full((2, 3, 4, 6), v) for v in (1, 3)]))
    with pytest.raises(CollateError, match="beyond the last two"):
        collate([{"x": torch.zeros(2, 4, 4)}, {"x": torch.zeros(3, 4, 4)}])
    with pytest.raises(CollateError, match="different keys"):
        collate([sample(4, 4, 1.0), {"image": torch.zeros(2, 3, 4, 4)}])


@pytest.mark.slow
def test_plot_draws_before_after_mask_and_prediction(release: Path) -> None:
    from matplotlib.figure import Figure

    from geodelta.plot import PlotError

    ds = load(release, split="train")
    sample = next(iter(ds))
    fig = ds.plot(sample)
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["before", "after", "mask"]
    legend = axes[2].get_legend()
    codes = {int(c) for c in np.unique(sample["mask"].numpy())}
    assert legend is not None and len(legend.get_texts()) == len(codes | {0})
    assert sample["meta"]["__key__"] in fig.get_suptitle()
    fig2 = ds.plot({**sample, "prediction": sample["mask"] * 0}, show_titles=False)
    assert len(fig2.get_axes()) == 4
    with pytest.raises(PlotError, match="image"):
        ds.plot({"mask": sample["mask"]})


@pytest.mark.slow
def test_webdataset_handler_keeps_every_band_and_the_codes(release: Path) -> None:
    import webdataset as wds

    from geodelta.data import webdataset_handler

    urls = resolve_shards(release, "train")
    raws = raw_samples(release)
    # what the handler replaces: webdataset's own decoders lose bands and codes, silently
    generic = next(iter(wds.WebDataset(urls, shardshuffle=False).decode("l")))
    assert generic["mask.png"].dtype.kind == "f" and generic["mask.png"].max() <= 1.0
    for s in wds.WebDataset(urls, shardshuffle=False).decode(webdataset_handler, "rgb8"):
        raw = raws[s["__key__"]]
        meta = json.loads(raw["json"])
        dn, _ = tif_dn(raw["before.tif"], list(range(len(meta["bands"]))))
        assert s["before.tif"].shape == dn.shape and np.array_equal(s["before.tif"], dn)
        mask = decode_member("mask.png", raw["mask.png"])
        assert s["mask.png"].dtype == np.uint8 and np.array_equal(s["mask.png"], mask)
        assert np.array_equal(s["change.png"], (mask > 0).astype(np.uint8))
        assert s["before.png"].shape[-1] == 3 and s["json"]["key"] == s["__key__"]
    assert webdataset_handler(".not-a-member.bin", b"x") is None


@pytest.mark.slow
def test_the_data_path_imports_no_beam_gx_or_gdal(release: Path) -> None:
    import subprocess
    import sys

    code = f"""
import sys
import geodelta.data as gd
from torch.utils.data import DataLoader
ds = gd.load({str(release)!r}, split="train")
batch = next(iter(DataLoader(ds, batch_size=8, collate_fn=gd.collate)))
assert batch["image"].dim() == 5
gd.plot(next(iter(ds)))
heavy = [m for m in ("rasterio", "osgeo", "apache_beam", "great_expectations", "dask",
                    # the rest of the `build` extra: a `geodelta[data]` install lacks them
                    "pyarrow", "scipy", "skimage", "shapely", "pyproj", "jinja2", "pystac",
                    "stac_geoparquet")
         if m in sys.modules]
print(heavy)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
