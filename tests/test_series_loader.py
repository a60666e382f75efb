"""geodelta.data.load(..., mode="series") and to_xarray / to_dataset / collate / plot of series
samples, on a tiny series release written by hand here (rasterio GeoTIFFs, PNGs, JSON): the
pair members come from the loader tests' ``full_sample``, the series members from this file.
"""

from __future__ import annotations

import json
import math
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import geodelta.data as gd
from geodelta.data import LoaderError, decode_member, decode_sample, load
from tests.test_data_loader import full_sample, png, write_tar

BANDS = ["B04", "B08", "B11"]
CRS = "EPSG:32633"
TRANSFORM = (10.0, 0.0, 400000.0, 0.0, -10.0, 5100000.0)
SCALE, OFFSET = 1e-4, -0.1
DAY = [datetime(2018 + t, 7, 1 + t, 10, 5, tzinfo=UTC) for t in range(5)]


def series_dn(t: int, h: int, w: int, seed: int) -> np.ndarray:
    """(T, C, H, W) uint16 DN, every value distinct per date and band; a 0 (nodata) at
    date 1, band 0, pixel (0, 1)."""
    rng = np.random.default_rng(seed)
    dn = rng.integers(1, 60000, size=(t, len(BANDS), h, w), dtype=np.uint16)
    for k in range(t):
        dn[k, :, 0, 0] = [1000 * (k + 1) + 10 * c for c in range(len(BANDS))]
    dn[1, 0, 0, 1] = 0
    return dn


def tif(arr: np.ndarray, descriptions: list[str], **profile: Any) -> bytes:
    """A GeoTIFF written with rasterio: CRS, transform, nodata 0, one description per band."""
    from affine import Affine
    from rasterio.io import MemoryFile

    count, height, width = arr.shape
    opts = {"compress": "deflate", "predictor": 2, "interleave": "band"} | profile
    with MemoryFile() as mf:
        with mf.open(driver="GTiff", dtype=arr.dtype.name, count=count, height=height,
                     width=width, crs=CRS, transform=Affine(*TRANSFORM), nodata=0,
                     **opts) as ds:  # fmt: skip
            ds.write(arr)
            for i, d in enumerate(descriptions, start=1):
                ds.set_band_description(i, d)
        return bytes(mf.read())


def step_masks_of(t: int, h: int, w: int) -> np.ndarray:
    """(T-1, H, W) uint8 transition codes: step k changes pixel (k-1 mod H, k mod W) to 20+k."""
    masks = np.zeros((t - 1, h, w), dtype=np.uint8)
    for k in range(1, t):
        masks[k - 1, (k - 1) % h, k % w] = 20 + k
    return masks


def first_change_of(masks: np.ndarray) -> np.ndarray:
    changed = masks > 0
    first = np.where(changed.any(axis=0), changed.argmax(axis=0) + 1, 0)
    return first.astype(np.uint8)


def series_sample(
    key: str, t: int = 3, h: int = 3, w: int = 4, seed: int = 0, pixel_masks: bool = False
) -> list[tuple[str, bytes]]:
    """The tar members of one series sample: the pair members (``full_sample``: before/after
    and json rewritten to match the series), then series.tif, dates.json, first_change.png,
    step_masks.tif. ``pixel_masks`` writes step_masks.tif pixel-interleaved (the rasterio path).
    """
    dn = series_dn(t, h, w, seed)
    days = [d.strftime("%Y-%m-%d") for d in DAY[:t]]
    masks = step_masks_of(t, h, w)
    meta = {
        "key": key, "bands": BANDS, "dn_scale": SCALE, "dn_offset": OFFSET, "crs": CRS,
        "transform": list(TRANSFORM), "shape": [h, w], "cell_id": "c1",
        "t0": DAY[0].isoformat().replace("+00:00", "Z"),
        "t1": DAY[t - 1].isoformat().replace("+00:00", "Z"),
    }  # fmt: skip
    dates = [
        {"index": k, "window": k, "item_id": f"S2_{days[k]}", "datetime": DAY[k].isoformat(),
         "clear_fraction": 0.9, "valid_fraction": 1.0, "label_item": None,
         "shift_px": [0.0, 0.0], "residual_px": 0.0}
        for k in range(t)
    ]  # fmt: skip
    pair = {n.split(".", 1)[1]: d for n, d in full_sample(key)}
    pair["before.tif"] = tif(dn[0], BANDS)
    pair["after.tif"] = tif(dn[-1], BANDS)
    pair["json"] = json.dumps(meta).encode()
    overall = masks.max(axis=0)  # date 0 -> date T-1 (here: every step's codes)
    pair["mask.png"] = png(overall.tolist())
    pair["change.png"] = png((overall > 0).astype(np.uint8).tolist())
    for name in ("regions.png", "lc_before.png", "lc_after.png"):
        pair[name] = png(np.ones((h, w), dtype=np.uint8).tolist())
    series = {
        "series.tif": tif(
            dn.reshape(t * len(BANDS), h, w), [f"{d} {b}" for d in days for b in BANDS]
        ),
        "dates.json": json.dumps(dates).encode(),
        "first_change.png": png(first_change_of(masks).tolist()),
        "step_masks.tif": tif(
            masks,
            [f"{days[k - 1]}..{days[k]}" for k in range(1, t)],
            **({"interleave": "pixel"} if pixel_masks else {}),
        ),
    }
    return [(f"{key}.{name}", data) for name, data in (pair | series).items()]


def write_release(root: Path, samples: list[list[tuple[str, bytes]]], mode: str | None) -> Path:
    """A release folder: one train shard and a manifest (``mode`` absent for a pair release)."""
    (root / "shards").mkdir(parents=True)
    write_tar(
        root / "shards" / "train-000000.tar",
        [m for s in samples for m in s],
        tarfile.USTAR_FORMAT,
    )
    manifest: dict[str, Any] = {
        "shards": [{"path": "shards/train-000000.tar", "split": "train", "samples": len(samples)}]
    }
    if mode is not None:
        manifest["mode"] = mode
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def series_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("series") / "release"
    samples = [series_sample("c1_20180701_20200703"), series_sample("c2_x", t=4, h=2, w=5, seed=1)]
    return write_release(root, samples, "series")


@pytest.fixture(scope="module")
def pair_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pairs") / "release"
    return write_release(root, [full_sample("p1")], None)


def raw_of(members: list[tuple[str, bytes]]) -> dict[str, Any]:
    key = members[0][0].split(".", 1)[0]
    return {n.split(".", 1)[1]: d for n, d in members} | {"__key__": key, "__url__": "x.tar"}


def reflectance(dn: np.ndarray) -> np.ndarray:
    out = (dn.astype(np.float64) * SCALE + OFFSET).astype(np.float32)
    out[dn == 0] = np.nan
    return out


# --- the members table ---------------------------------------------------------------------


def test_members_table_adds_series_members_after_the_pair_members() -> None:
    from geodelta.schemas.members import (
        MEMBERS,
        SAMPLE_MEMBERS,
        SERIES_SAMPLE_MEMBERS,
        hf_feature_list,
        member,
        members_for,
    )

    assert members_for("pair") == MEMBERS
    series = [m.name for m in members_for("series")]
    assert series == [*SAMPLE_MEMBERS, "series.tif", "dates.json", "first_change.png",
                      "step_masks.tif"]  # fmt: skip
    assert tuple(series) == SERIES_SAMPLE_MEMBERS
    codecs = {m.name: m.codec for m in members_for("series")}
    assert codecs["series.tif"] == "geotiff" and codecs["step_masks.tif"] == "geotiff-index"
    assert codecs["first_change.png"] == "png-index" and codecs["dates.json"] == "json"
    assert member("step_masks.tif") is not None and member("nope.tif") is None
    with pytest.raises(ValueError, match="expected one of: pair, series"):
        members_for("triple")
    assert hf_feature_list() == hf_feature_list("pair")  # the pair card does not change
    features = {f["name"]: f["dtype"] for f in hf_feature_list("series")}
    assert features["series.tif"] == "binary" and features["step_masks.tif"] == "binary"
    assert features["first_change.png"] == "image" and features["dates.json"] == "json"


# --- decoding -------------------------------------------------------------------------------


def test_series_members_decode_by_their_codec() -> None:
    members = series_sample("k", t=3, h=3, w=4)
    raw = raw_of(members)
    meta = json.loads(raw["json"])
    dn = series_dn(3, 3, 4, 0)
    cube = decode_member("series.tif", raw["series.tif"], meta=meta, key="k")
    assert cube.dtype == np.float32 and cube.shape == (3, 3, 3, 4)
    np.testing.assert_allclose(cube, reflectance(dn), rtol=1e-6, atol=1e-6, equal_nan=True)
    assert math.isnan(cube[1, 0, 0, 1])  # DN 0 -> NaN
    assert cube[2, 1, 0, 0] == pytest.approx(3010 * SCALE + OFFSET, rel=1e-6)
    sub = decode_member("series.tif", raw["series.tif"], meta=meta, bands=["B11", "B04"])
    assert sub.shape == (3, 2, 3, 4)
    np.testing.assert_allclose(sub[:, 0], cube[:, 2], equal_nan=True)
    np.testing.assert_allclose(sub[:, 1], cube[:, 0], equal_nan=True)
    masks = decode_member("step_masks.tif", raw["step_masks.tif"])
    assert masks.dtype == np.uint8 and masks.tolist() == step_masks_of(3, 3, 4).tolist()
    first = decode_member("first_change.png", raw["first_change.png"])
    assert first.dtype == np.uint8 and first[0, 1] == 1 and first[1, 2] == 2 and first.sum() == 3
    # pixel-interleaved step masks go through rasterio: same values
    pixel = raw_of(series_sample("k", pixel_masks=True))["step_masks.tif"]
    assert gd.tif_dn_fast(pixel, [0]) is None
    assert decode_member("step_masks.tif", pixel).tolist() == masks.tolist()
    # webdataset's handler: DN of every date and band, codes of the step masks
    assert gd.webdataset_handler(".series.tif", raw["series.tif"]).shape == (9, 3, 4)
    assert gd.webdataset_handler(".step_masks.tif", raw["step_masks.tif"]).dtype == np.uint8
    with pytest.raises(LoaderError, match="pass meta="):
        decode_member("series.tif", raw["series.tif"])
    # every member of the sample, pair and series, by its codec (no unknown-member warning)
    every = gd.decode_members(raw)
    assert every["series.tif"].shape == (3, 3, 3, 4) and every["before.tif"].shape == (3, 3, 4)
    np.testing.assert_array_equal(every["before.tif"], every["series.tif"][0])
    np.testing.assert_array_equal(every["after.tif"], every["series.tif"][-1])
    assert every["dates.json"][2]["item_id"] == "S2_2020-07-03"


def test_series_tif_of_the_wrong_band_count_is_refused() -> None:
    raw = raw_of(series_sample("k"))
    meta = json.loads(raw["json"]) | {"bands": ["B04", "B08"]}  # 9 bands are not 2 per date
    with pytest.raises(LoaderError, match="9 bands, not a multiple of the sample's 2"):
        decode_member("series.tif", raw["series.tif"], meta=meta, key="k")


@pytest.mark.parametrize("decode", ["numpy", "torch"])
def test_load_series_shapes_dtypes_and_values(series_release: Path, decode: str) -> None:
    samples = list(load(series_release, mode="series", decode=decode))  # type: ignore[arg-type]
    assert [s["meta"]["__key__"] for s in samples] == ["c1_20180701_20200703", "c2_x"]
    for s, (t, h, w, seed) in zip(samples, [(3, 3, 4, 0), (4, 2, 5, 1)], strict=True):
        image = s["image"] if decode == "numpy" else s["image"].numpy()
        assert image.shape == (t, 3, h, w) and image.dtype == np.float32
        np.testing.assert_allclose(image, reflectance(series_dn(t, h, w, seed)), rtol=1e-6,
                                   atol=1e-6, equal_nan=True)  # fmt: skip
        mask = s["mask"] if decode == "numpy" else s["mask"].numpy()
        assert mask.shape == (t - 1, h, w) and mask.dtype == np.int64
        assert mask.tolist() == step_masks_of(t, h, w).tolist()
        first = s["first_change"] if decode == "numpy" else s["first_change"].numpy()
        assert first.shape == (h, w) and first.dtype == np.int64
        assert first.tolist() == first_change_of(step_masks_of(t, h, w)).tolist()
        assert s["dates"] == DAY[:t]
        assert all(d.tzinfo is UTC for d in s["dates"])
        assert s["meta"]["__dates__"][0]["item_id"] == "S2_2018-07-01"
        assert s["meta"]["__bands__"] == BANDS
        assert s["captions"] == ["a"] and s["qa"][0]["answer"] == "yes"
        assert set(s) - {"__key__"} == {
            "image", "dates", "mask", "first_change", "captions", "qa", "meta"
        }  # fmt: skip
    if decode == "torch":
        import torch

        assert isinstance(samples[0]["image"], torch.Tensor)
        assert isinstance(samples[0]["first_change"], torch.Tensor)
    assert len(load(series_release, mode="series")) == 2


def test_band_selection_applies_to_every_date(series_release: Path) -> None:
    full = next(iter(load(series_release, mode="series", decode="numpy")))
    sub = next(iter(load(series_release, mode="series", decode="numpy", bands=["B11", "B08"])))
    assert sub["image"].shape == (3, 2, 3, 4) and sub["meta"]["__bands__"] == ["B11", "B08"]
    for t in range(3):
        np.testing.assert_array_equal(sub["image"][t, 0], full["image"][t, 2])
        np.testing.assert_array_equal(sub["image"][t, 1], full["image"][t, 1])
    zero = next(iter(load(series_release, mode="series", decode="numpy", nodata=0.0)))
    assert zero["image"][1, 0, 0, 1] == 0.0
    with pytest.raises(LoaderError, match="B02"):
        next(iter(load(series_release, mode="series", bands=["B02"])))


def test_pair_mode_reads_a_series_release_unchanged(series_release: Path) -> None:
    """Default mode: before = date 0, after = date T-1, no warning about the series members."""
    pairs = list(load(series_release, decode="numpy"))
    series = list(load(series_release, mode="series", decode="numpy"))
    for p, s in zip(pairs, series, strict=True):
        assert p["image"].shape == (2, *s["image"].shape[1:])
        np.testing.assert_array_equal(p["image"][0], s["image"][0])
        np.testing.assert_array_equal(p["image"][1], s["image"][-1])
        assert p["mask"].tolist() == s["mask"].max(axis=0).tolist()  # mask.png, as stored
        assert "dates" not in p and "first_change" not in p
    raw = next(iter(load(series_release, decode="raw", mode="series")))
    assert {"series.tif", "step_masks.tif", "before.png"} <= set(raw)


def test_series_mode_on_a_pair_release_is_one_line(pair_release: Path) -> None:
    # by the manifest, before any shard is read
    with pytest.raises(LoaderError, match=r"this release holds pairs; use mode='pair'") as err:
        load(pair_release, mode="series")
    assert "\n" not in str(err.value)
    # without a manifest, at the first sample (no series.tif in it)
    shard = pair_release / "shards" / "train-000000.tar"
    for decode in ("numpy", "raw"):
        with pytest.raises(LoaderError, match=r"this release holds pairs; use mode='pair'"):
            list(load([shard], mode="series", decode=decode))
    with pytest.raises(LoaderError, match="mode must be 'pair' or 'series'"):
        load(pair_release, mode="triple")  # type: ignore[arg-type]
    assert next(iter(load(pair_release, decode="numpy")))["image"].shape == (2, 2, 2, 2)


def test_series_members_that_disagree_are_refused() -> None:
    raw = raw_of(series_sample("k", t=3))
    raw["step_masks.tif"] = raw_of(series_sample("k", t=4))["step_masks.tif"]
    with pytest.raises(LoaderError, match="disagree"):
        decode_sample(raw, mode="series")


def test_an_unknown_member_in_a_series_sample_is_still_reported(tmp_path: Path) -> None:
    shard = tmp_path / "s.tar"
    write_tar(shard, [*series_sample("k"), ("k.cube.zarr", b"z")], tarfile.USTAR_FORMAT)
    with pytest.warns(gd.UnknownMemberWarning, match=r"unknown member 'cube\.zarr'"):
        samples = list(load([shard], mode="series", decode="numpy"))
    assert samples[0]["image"].shape == (3, 3, 3, 4)


# --- xarray, collate, plot -----------------------------------------------------------------


def test_to_xarray_of_a_series_sample(series_release: Path) -> None:
    import rasterio

    raw = next(iter(load(series_release, mode="series", decode="raw")))
    sample = next(iter(load(series_release, mode="series", decode="torch")))
    da = gd.to_xarray(sample)
    assert da.dims == ("time", "band", "y", "x") and da.shape == (3, 3, 3, 4)
    assert list(da.band.values) == BANDS
    assert list(da.time.values) == [np.datetime64(d.replace(tzinfo=None), "ns") for d in DAY[:3]]
    np.testing.assert_array_equal(da.values, sample["image"].numpy())
    with rasterio.MemoryFile(raw["series.tif"]) as mem, mem.open() as ds:
        tr, crs = ds.transform, ds.crs
        assert ds.descriptions[3] == "2019-07-02 B04"
    assert da.x.values.tolist() == [(tr @ (c + 0.5, 0.5))[0] for c in range(4)]
    assert da.y.values.tolist() == [(tr @ (0.5, r + 0.5))[1] for r in range(3)]
    from pyproj import CRS as ProjCRS

    assert ProjCRS.from_wkt(da.spatial_ref.attrs["crs_wkt"]) == ProjCRS.from_wkt(crs.to_wkt())
    # a date by label
    v = float(da.sel(time=np.datetime64("2019-07-02T10:05"), band="B04").isel(y=0, x=0))
    assert v == pytest.approx(2000 * SCALE + OFFSET, rel=1e-6)
    with pytest.raises(LoaderError, match=r"\[T, C, H, W\] with T = 2"):
        gd.to_xarray({**sample, "dates": sample["dates"][:2]})


# rioxarray 0.19's transform() multiplies an Affine with `*` (affine deprecates it for `@`):
# its own warning, not ours (as in tests/test_xarray_view.py)
@pytest.mark.filterwarnings("ignore:Use `@` matmul instead of `\\*`:PendingDeprecationWarning")
def test_rioxarray_reads_crs_and_transform_of_series_and_masks(series_release: Path) -> None:
    import rasterio

    rioxarray = pytest.importorskip("rioxarray")
    assert rioxarray is not None
    raw = next(iter(load(series_release, mode="series", decode="raw")))
    sample = next(iter(load(series_release, mode="series", decode="numpy")))
    da = gd.to_xarray(sample)
    ds = gd.to_dataset(sample)
    with rasterio.MemoryFile(raw["step_masks.tif"]) as mem, mem.open() as src:
        assert da.rio.crs == src.crs and da.rio.transform() == src.transform
        assert ds.rio.crs == src.crs
        assert ds["mask"].rio.transform() == src.transform
        np.testing.assert_array_equal(ds["mask"].values, src.read())
    assert ds["mask"].dims == ("step", "y", "x") and ds.step.values.tolist() == [1, 2]
    assert ds.step_start.values.tolist() == da.time.values[:2].tolist()
    assert ds.step_end.values.tolist() == da.time.values[1:].tolist()
    assert ds["first_change"].dims == ("y", "x")
    assert ds["first_change"].values.tolist() == sample["first_change"].tolist()
    # a pair sample: mask (y, x) in the Dataset too
    pair = next(iter(load(series_release, decode="numpy")))
    pds = gd.to_dataset(pair)
    assert pds["mask"].dims == ("y", "x") and "first_change" not in pds


def test_collate_pads_height_width_and_time(series_release: Path) -> None:
    import torch

    from geodelta.collate import PAD_INDEX

    a, b = list(load(series_release, mode="series"))  # T 3 / 4, (3, 4) / (2, 5)
    batch = gd.collate([a, b])
    assert batch["image"].shape == (2, 4, 3, 3, 5) and batch["mask"].shape == (2, 3, 3, 5)
    assert batch["first_change"].shape == (2, 3, 5)
    assert batch["valid_t"].tolist() == [3, 4] and batch["valid_hw"].tolist() == [[3, 4], [2, 5]]
    assert torch.isnan(batch["image"][0, 3]).all()  # the padded 4th date reads as no data
    assert torch.isnan(batch["image"][0, :3, :, :, 4]).all()  # the padded column
    np.testing.assert_array_equal(batch["image"][0, :3, :, :, :4].numpy(), a["image"].numpy())
    assert (batch["mask"][0, 2] == PAD_INDEX).all() and (batch["mask"][1, :, 2] == PAD_INDEX).all()
    assert torch.equal(batch["mask"][1, :, :2, :], b["mask"])
    assert (batch["first_change"][1, 2] == PAD_INDEX).all()
    assert batch["dates"] == [a["dates"], b["dates"]]
    # samples of one T and size stack exactly
    same = gd.collate([a, a])
    assert torch.equal(same["mask"], torch.stack([a["mask"], a["mask"]]))
    assert same["valid_t"].tolist() == [3, 3]


def test_plot_draws_every_date_and_first_change(series_release: Path) -> None:
    from matplotlib.figure import Figure

    sample = next(iter(load(series_release, mode="series")))
    fig = load(series_release, mode="series").plot(sample)
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.get_axes()]
    assert titles == ["2018-07-01", "2019-07-02", "2020-07-03", "first change (step)"]
    legend = fig.get_axes()[-1].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["0 never", "1", "2"]


def test_huggingface_datasets_reads_a_series_shard_with_its_features(
    series_release: Path, hf: Any, tmp_path: Path
) -> None:
    datasets = hf  # offline, caches under tmp_path (tests/conftest.py)
    files = [str(series_release / "shards" / "train-000000.tar")]
    ds = datasets.load_dataset(
        "webdataset", data_files={"train": files}, split="train",
        features=gd.hf_features("series"), cache_dir=str(tmp_path / "c"),
    )  # fmt: skip
    assert isinstance(ds.features["step_masks.tif"], datasets.Value)  # bytes, not an Image
    rows = ds.with_transform(gd.hf_transform)
    loaded = list(load(series_release, mode="series", decode="numpy"))
    for i, want in enumerate(loaded):
        row = rows[i]
        np.testing.assert_array_equal(row["series.tif"], want["image"])
        assert row["step_masks.tif"].dtype == np.uint8
        np.testing.assert_array_equal(row["step_masks.tif"], want["mask"])
        np.testing.assert_array_equal(np.asarray(row["first_change.png"]), want["first_change"])
        assert [d["item_id"] for d in row["dates.json"]] == [
            d["item_id"] for d in want["meta"]["__dates__"]
        ]
    with pytest.raises(LoaderError, match="mode must be"):
        gd.hf_features("triple")


def test_a_release_written_by_the_release_writer_loads_as_series(tmp_path: Path) -> None:
    """tests/series_release.py writes its series through assemble.write_release (manifest mode
    "series"): every sample loads, T varies, pairs read as date 0 / date T-1, a batch pads T."""
    from tests.series_release import series_release

    root = series_release(tmp_path / "r", n=4)
    series = list(load(root, split=None, mode="series", decode="numpy"))
    pairs = list(load(root, split=None, decode="numpy"))
    assert len(series) == len(pairs) == 4
    lengths = []
    for s, p in zip(series, pairs, strict=True):
        t = len(s["dates"])
        lengths.append(t)
        assert s["image"].shape[0] == t and s["mask"].shape[0] == t - 1
        np.testing.assert_array_equal(p["image"][0], s["image"][0])
        np.testing.assert_array_equal(p["image"][1], s["image"][-1])
        steps = [st["changed_pixels"] for st in s["meta"]["series"]["steps"]]
        assert steps == [int(n) for n in (s["mask"] > 0).sum(axis=(1, 2))]
        assert gd.to_xarray(s).sizes["time"] == t
    assert len(set(lengths)) > 1  # the batch below pads T
    batch = gd.collate(series)
    assert batch["image"].shape[1] == max(lengths) and batch["valid_t"].tolist() == lengths
