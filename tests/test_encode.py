"""Sample encoding (pipelines/stages/encode.py): DN convention, GeoTIFF round trip, PNGs,
metadata."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.io import MemoryFile

from geodelta.pipelines.stages.encode import (
    OUTPUT_DN_OFFSET,
    OUTPUT_DN_SCALE,
    EncodeError,
    build_meta,
    encode_members,
    geotiff_bytes,
    index_png,
    meta_json,
    rgb_indices,
    rgb_png,
    to_dn,
)
from geodelta.schemas import SAMPLE_MEMBERS, QAItem, SampleMeta
from tests.factories import BANDS, make_config, make_sample

TRANSFORM = (10.0, 0.0, 440000.0, 0.0, -10.0, 5420000.0)


def test_to_dn_hand_computed_values() -> None:
    r = np.array([[[0.05, 0.0, -0.1, np.nan, 10.0, -0.5, 0.12345]]], dtype=np.float32)
    dn = to_dn(r)
    assert dn.dtype == np.uint16
    # 0.05 -> (0.05 + 0.1) / 1e-4 = 1500; 0 -> 1000; -0.1 -> 0 clipped to 1 (0 is nodata);
    # NaN -> 0; 10 -> 100999 clipped to 65535; -0.5 -> clipped to 1; 0.12345 -> 2234.5 -> 2234/5
    assert dn[0, 0, :6].tolist() == [1500, 1000, 1, 0, 65535, 1]
    assert dn[0, 0, 6] in (2234, 2235)
    back = dn[0, 0, :2] * OUTPUT_DN_SCALE + OUTPUT_DN_OFFSET
    np.testing.assert_allclose(back, [0.05, 0.0], atol=1e-9)


def test_to_dn_rejects_integers() -> None:
    with pytest.raises(EncodeError, match="float"):
        to_dn(np.zeros((1, 2, 2), dtype=np.uint16))


def test_geotiff_round_trip() -> None:
    r = np.full((3, 8, 6), 0.05, dtype=np.float32)
    r[1, 2, 3] = np.nan
    r[2] = 0.2
    data = geotiff_bytes(
        to_dn(r), crs="EPSG:32631", transform=TRANSFORM, band_names=("B02", "B03", "B04")
    )
    with MemoryFile(data) as mem, mem.open() as ds:
        assert ds.driver == "GTiff"
        assert ds.crs.to_epsg() == 32631
        assert tuple(ds.transform)[:6] == TRANSFORM
        assert ds.dtypes == ("uint16", "uint16", "uint16")
        assert (ds.count, ds.height, ds.width) == (3, 8, 6)
        assert ds.descriptions == ("B02", "B03", "B04")
        assert ds.scales == (OUTPUT_DN_SCALE,) * 3
        assert ds.offsets == (OUTPUT_DN_OFFSET,) * 3
        assert ds.nodata == 0
        assert ds.compression is not None and ds.compression.value.lower() == "deflate"
        arr = ds.read()
    assert arr[0, 0, 0] == 1500
    assert arr[1, 2, 3] == 0
    assert arr[2, 0, 0] == 3000
    assert int((arr == 0).sum()) == 1
    # GDAL readers can unscale to reflectance with the stored scale/offset
    np.testing.assert_allclose(arr[2, 0, 0] * OUTPUT_DN_SCALE + OUTPUT_DN_OFFSET, 0.2, atol=1e-9)


def test_geotiff_checks_arguments() -> None:
    dn = np.ones((2, 4, 4), dtype=np.uint16)
    with pytest.raises(EncodeError, match=r"bands=2, names=1"):
        geotiff_bytes(dn, crs="EPSG:32631", transform=TRANSFORM, band_names=("B02",))
    with pytest.raises(EncodeError, match="uint16"):
        geotiff_bytes(
            dn.astype(np.int32), crs="EPSG:32631", transform=TRANSFORM, band_names=("a", "b")
        )


def test_rgb_png_linear_stretch_and_nan() -> None:
    r = np.zeros((4, 2, 3), dtype=np.float32)
    r[2] = 0.3  # red = band 2 -> 255 at max 0.3
    r[1] = 0.15  # green -> 127.5 -> 128 (round half to even: 128)
    r[0] = 0.6  # blue beyond max -> clipped 255
    r[0, 1, 2] = np.nan  # one band NaN -> whole pixel black
    r[3] = -1.0  # unused band
    png = rgb_png(r, (2, 1, 0), 0.3)
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (3, 2)
        arr = np.asarray(img)
    assert arr[0, 0].tolist() == [255, 128, 255]
    assert arr[1, 2].tolist() == [0, 0, 0]
    with pytest.raises(EncodeError, match="out of range"):
        rgb_png(r, (2, 1, 4), 0.3)


def test_index_png_keeps_values() -> None:
    m = np.array([[0, 1, 38], [255, 0, 121]], dtype=np.uint8)
    with Image.open(io.BytesIO(index_png(m))) as img:
        assert img.mode == "L" and img.size == (3, 2)
        np.testing.assert_array_equal(np.asarray(img), m)
    with pytest.raises(EncodeError, match=r"0\.\.255"):
        index_png(np.array([[0, 300]], dtype=np.int32))


def test_build_meta_matches_sample() -> None:
    cfg = make_config()
    sample = make_sample(3, col=2, row=5, split="val", nan_pixels=8)
    meta = build_meta(sample, cfg, code_version="9.9.9", shaping_hash=cfg.shaping_hash())
    pair = sample.pair
    assert (
        meta.key
        == sample.key
        == f"31N_0002_0005_{pair.before.datetime:%Y%m%d}_" + (f"{pair.after.datetime:%Y%m%d}")
    )
    assert meta.cell_id == "31N_0002_0005" and meta.split == "val" and meta.region == "aoi"
    assert meta.before_item == pair.before.item_id and meta.after_item == pair.after.item_id
    assert meta.t0 == pair.before.datetime and meta.t1 == pair.after.datetime
    assert meta.gap_days == pytest.approx(pair.gap_days)
    assert meta.crs == "EPSG:32631" and meta.transform == pair.job.transform
    assert meta.shape == (32, 32) and meta.bbox_lonlat == pair.job.bbox_lonlat
    assert meta.bands == BANDS
    assert (meta.dn_scale, meta.dn_offset) == (OUTPUT_DN_SCALE, OUTPUT_DN_OFFSET)
    assert (meta.before_clear, meta.after_clear) == (0.99, 0.97)
    assert (meta.before_cloud_cover, meta.after_cloud_cover) == (3.5, 7.25)
    assert meta.before_valid == 1.0
    assert meta.after_valid == pytest.approx(1.0 - 8 / (32 * 32))
    assert meta.coreg == sample.coreg and meta.facts == sample.facts
    assert meta.label_source == "landcover:esa-worldcover"
    assert meta.label_items == sample.label_items and len(meta.label_items) == 2
    assert sample.annotation is not None
    assert meta.annotator == "template" and meta.model == sample.annotation.model
    assert meta.licence == "CC-BY-4.0" and meta.attribution == cfg.attribution
    assert meta.code_version == "9.9.9" and meta.shaping_hash == cfg.shaping_hash()
    assert meta.config_hash is None and "config_hash" not in meta_json(meta)


def test_build_meta_requires_stage_outputs() -> None:
    cfg = make_config()
    sample = dataclasses.replace(make_sample(0), annotation=None)
    with pytest.raises(EncodeError, match="annotation"):
        build_meta(sample, cfg, code_version="0", shaping_hash="x")
    wrong = dataclasses.replace(make_sample(0), before=np.zeros((3, 32, 32), dtype=np.float32))
    with pytest.raises(EncodeError, match="bands=4"):
        build_meta(wrong, cfg, code_version="0", shaping_hash="x")


def test_rgb_indices_from_config() -> None:
    assert rgb_indices(make_config()) == (2, 1, 0)


def test_encode_members_layout_and_determinism() -> None:
    cfg = make_config()
    sample = make_sample(1, nan_pixels=3)
    meta = build_meta(sample, cfg, code_version="0.1.0", shaping_hash=cfg.shaping_hash())
    first = encode_members(sample, meta, cfg)
    again = encode_members(make_sample(1, nan_pixels=3), meta, cfg)
    assert tuple(first) == SAMPLE_MEMBERS
    for name in SAMPLE_MEMBERS:
        assert first[name] == again[name], f"{name} is not byte-deterministic"

    for name in ("before.png", "after.png"):
        with Image.open(io.BytesIO(first[name])) as img:
            assert (img.mode, img.size) == ("RGB", (32, 32))
    assert sample.mask is not None and sample.lc_after is not None
    for name, expected in (("mask.png", sample.mask), ("lc_after.png", sample.lc_after)):
        with Image.open(io.BytesIO(first[name])) as img:
            assert (img.mode, img.size) == ("L", (32, 32))
            np.testing.assert_array_equal(np.asarray(img), expected)
    with MemoryFile(first["after.tif"]) as mem, mem.open() as ds:
        after = ds.read()
    assert after.shape == (4, 32, 32)
    assert int((after[:, 0, :3] == 0).sum()) == 12 and int((after == 0).sum()) == 12
    np.testing.assert_array_equal(after[:, 1:], to_dn(sample.after)[:, 1:])

    assert SampleMeta.model_validate_json(first["json"]) == meta
    assert json.loads(first["captions.json"]) == list(sample.annotation.captions)  # type: ignore[union-attr]
    qa = [QAItem.model_validate(q) for q in json.loads(first["qa.json"])]
    assert qa == list(sample.annotation.qa)  # type: ignore[union-attr]
    assert b"SECRETSIGNATURE" not in b"".join(first.values())


def test_change_mask_sample_gets_blank_landcover() -> None:
    cfg = make_config()
    sample = dataclasses.replace(make_sample(2), lc_before=None, lc_after=None)
    meta = build_meta(sample, cfg, code_version="0", shaping_hash="x")
    members = encode_members(sample, meta, cfg)
    with Image.open(io.BytesIO(members["lc_before.png"])) as img:
        assert img.size == (32, 32) and int(np.asarray(img).max()) == 0


def test_secrets_never_reach_members() -> None:
    cfg = make_config()
    sample = make_sample(4, signed_href=True)
    assert "sig=" not in sample.pair.before.assets["B02"].href
    meta = build_meta(sample, cfg, code_version="0", shaping_hash="x")
    blob = b"".join(encode_members(sample, meta, cfg).values())
    assert b"SECRETSIGNATURE" not in blob and b"sig=" not in blob


def test_rasterio_reads_the_tif_from_disk(tmp_path: object) -> None:
    cfg = make_config()
    sample = make_sample(5)
    meta = build_meta(sample, cfg, code_version="0", shaping_hash="x")
    path = f"{tmp_path}/before.tif"
    with open(path, "wb") as f:
        f.write(encode_members(sample, meta, cfg)["before.tif"])
    with rasterio.open(path) as ds:
        assert ds.crs.to_string() == "EPSG:32631"
        assert ds.bounds.left == sample.pair.job.bounds()[0]
        assert ds.bounds.top == sample.pair.job.bounds()[3]


EOLEARN_AFFINE = (
    9.99479222007154,
    0.0,
    465181.0522318204,
    0.0,
    -9.997448467363668,
    5080254.63349641,
)
S2_BANDS = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)


def test_real_sentinel2_scene_round_trip(shared_data: Path) -> None:
    """A real 13-band L1C scene (eo-learn, Slovenia) survives to_dn + GeoTIFF within 0.5 DN."""
    scenes = np.load(shared_data / "eolearn_slovenia_s2" / "REFERENCE_SCENES.npy", mmap_mode="r")
    scene = np.moveaxis(np.asarray(scenes[2]), -1, 0)  # (13, 101, 100), cloud-free 2015-09-09
    assert scene.shape == (13, 101, 100)
    data = geotiff_bytes(
        to_dn(scene), crs="EPSG:32633", transform=EOLEARN_AFFINE, band_names=S2_BANDS
    )
    with MemoryFile(data) as mem, mem.open() as ds:
        assert ds.crs.to_epsg() == 32633 and ds.descriptions == S2_BANDS
        assert ds.bounds.right == pytest.approx(466180.53145382757, abs=1e-6)
        back = ds.read().astype(np.float64) * ds.scales[0] + ds.offsets[0]
    assert int((back < -0.09).sum()) == 0  # no pixel hit the nodata DN
    np.testing.assert_allclose(back, scene, atol=0.5 * OUTPUT_DN_SCALE + 1e-7)
    # the true-colour rendering: B04/B03/B02 of a cloud-free scene is neither black nor white
    with Image.open(io.BytesIO(rgb_png(scene, (3, 2, 1), 0.3))) as img:
        rgb = np.asarray(img)
    assert rgb.shape == (101, 100, 3) and 10 < float(rgb.mean()) < 245
