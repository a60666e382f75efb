"""Windowed reads reprojected onto the cell grid (small GeoTIFFs written here + OSCD bercy)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

from geodelta.schemas import AssetRef, SceneRef, TileJob
from geodelta.sources import raster
from geodelta.sources.raster import (
    RasterReadError,
    clear_fraction,
    gdal_env_options,
    read_bands,
    read_classes,
)

BERCY = Path("/work/shared/data/oscd/bercy")
T0 = datetime(2021, 6, 1, 10, 0, tzinfo=UTC)


def from_origin(west: float, north: float, xres: float, yres: float) -> Affine:
    """North-up transform (rasterio's own from_origin warns on affine >= 3.0)."""
    return Affine(xres, 0.0, west, 0.0, -yres, north)


def make_job(crs: str, left: float, top: float, res: float, shape: tuple[int, int]) -> TileJob:
    return TileJob(
        cell_id="31U_test",
        crs=crs,
        transform=(res, 0.0, left, 0.0, -res, top),
        shape=shape,
        bbox_lonlat=(2.0, 48.0, 3.0, 49.0),  # not used by the reader
        t0_window=(T0, datetime(2021, 7, 1, tzinfo=UTC)),
        t1_window=(datetime(2022, 6, 1, tzinfo=UTC), datetime(2022, 7, 1, tzinfo=UTC)),
    )


def make_scene(assets: dict[str, AssetRef], item_id: str = "item-1") -> SceneRef:
    return SceneRef(
        collection="test",
        item_id=item_id,
        datetime=T0,
        crs="EPSG:32631",
        bbox_lonlat=(2.0, 48.0, 3.0, 49.0),
        assets=assets,
    )


def write_tif(
    path: Path,
    data: np.ndarray,
    crs: str,
    transform: rasterio.Affine,
    nodata: float | None = None,
) -> str:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data, 1)
    return str(path)


def test_gdal_env_options_are_plain_strings() -> None:
    opts = gdal_env_options()
    assert opts["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in opts.items())
    opts["X"] = "1"
    assert "X" not in gdal_env_options()  # a fresh dict each call


def test_bright_lonlat_pixel_lands_where_pyproj_says(tmp_path: Path) -> None:
    # EPSG:4326 source, 0.0001 deg pixels (~7.3 m x 11.1 m at 48.85 N); background 100 DN
    src_res, lon0, lat0 = 0.0001, 2.99, 48.86
    data = np.full((200, 200), 100, dtype=np.uint16)
    row, col = 100, 120
    data[row, col] = 10000
    href = write_tif(
        tmp_path / "ll.tif", data, "EPSG:4326", from_origin(lon0, lat0, src_res, src_res)
    )
    lon, lat = lon0 + (col + 0.5) * src_res, lat0 - (row + 0.5) * src_res

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True).transform(lon, lat)
    left, top = np.floor(x / 10) * 10 - 317.0, np.floor(y / 10) * 10 + 283.0  # off-grid origin
    job = make_job("EPSG:32631", left, top, 10.0, (64, 64))
    expect_row, expect_col = (top - y) / 10.0, (x - left) / 10.0  # fractional pixel coordinates

    out = read_bands(make_scene({"B": AssetRef(href=href)}), ["B"], job)
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    assert not np.isnan(out).any()
    r, c = np.unravel_index(int(np.argmax(out[0])), out[0].shape)
    assert abs((r + 0.5) - expect_row) <= 1.0
    assert abs((c + 0.5) - expect_col) <= 1.0
    # far from the spot, the background comes through unchanged
    assert out[0, 0, 0] == pytest.approx(100.0)
    assert np.median(out) == pytest.approx(100.0)


def test_scale_offset_and_nodata(tmp_path: Path) -> None:
    data = np.full((16, 16), 1500, dtype=np.uint16)
    data[3, 4] = 0
    data[10, 0:5] = 0
    transform = from_origin(500000.0, 5400000.0, 10.0, 10.0)
    tagged = write_tif(tmp_path / "tagged.tif", data, "EPSG:32631", transform, nodata=0)
    untagged = write_tif(tmp_path / "untagged.tif", data, "EPSG:32631", transform)
    job = make_job("EPSG:32631", 500000.0, 5400000.0, 10.0, (16, 16))
    scene = make_scene(
        {
            # nodata from the file's tag
            "tagged": AssetRef(href=tagged, scale=0.0001, offset=-0.1),
            # nodata only from the STAC asset (raster:bands nodata)
            "declared": AssetRef(href=untagged, scale=0.0001, offset=-0.1, nodata=0),
            # no nodata anywhere: 0 is a value
            "none": AssetRef(href=untagged, scale=0.0001, offset=-0.1),
        }
    )
    out = read_bands(scene, ["tagged", "declared", "none"], job)
    invalid = data == 0
    for band in out[:2]:
        np.testing.assert_array_equal(np.isnan(band), invalid)
        np.testing.assert_allclose(band[~invalid], 0.05, rtol=0, atol=1e-7)
    np.testing.assert_allclose(out[2][invalid], -0.1, atol=1e-7)
    assert not np.isnan(out[2]).any()


def test_band_order_follows_the_declared_order(tmp_path: Path) -> None:
    transform = from_origin(500000.0, 5400000.0, 10.0, 10.0)
    assets = {
        f"B{v}": AssetRef(
            href=write_tif(
                tmp_path / f"b{v}.tif", np.full((8, 8), v, np.uint16), "EPSG:32631", transform
            )
        )
        for v in (1, 2, 3)
    }
    job = make_job("EPSG:32631", 500000.0, 5400000.0, 10.0, (8, 8))
    out = read_bands(make_scene(assets), ["B3", "B1", "B2"], job)
    np.testing.assert_array_equal(out[:, 0, 0], [3.0, 1.0, 2.0])
    np.testing.assert_array_equal(out.reshape(3, -1).min(axis=1), out.reshape(3, -1).max(axis=1))


def test_window_partly_outside_the_source_is_nan(tmp_path: Path) -> None:
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) + 1
    href = write_tif(
        tmp_path / "a.tif", data, "EPSG:32631", from_origin(500000.0, 5400000.0, 10.0, 10.0)
    )
    # the cell starts 32 px right of and 16 px above the source's top-left corner
    job = make_job("EPSG:32631", 500320.0, 5400160.0, 10.0, (64, 64))
    out = read_bands(make_scene({"B": AssetRef(href=href)}), ["B"], job)[0]
    inside = np.zeros((64, 64), dtype=bool)
    inside[16:, :32] = True
    np.testing.assert_array_equal(~np.isnan(out), inside)
    # aligned grids: exact source values, row r-16 / column c+32 of the source
    np.testing.assert_array_equal(out[16:, :32], data[:48, 32:].astype(np.float32))


def test_read_classes_keeps_dtype_and_reads_coarser(tmp_path: Path) -> None:
    # 10 m classes, constant on 2x2 blocks; a 0 (nodata) block at block (1, 1)
    blocks = (np.arange(32 * 32).reshape(32, 32) % 200 + 1).astype(np.uint8)
    blocks[1, 1] = 0
    data = np.kron(blocks, np.ones((2, 2), dtype=np.uint8))
    href = write_tif(
        tmp_path / "lc.tif", data, "EPSG:32631", from_origin(500000.0, 5400000.0, 10.0, 10.0), 0
    )
    asset = AssetRef(href=href)
    job = make_job("EPSG:32631", 500000.0, 5400000.0, 10.0, (64, 64))

    full = read_classes(asset, job, fill=255)
    assert full.dtype == np.uint8 and full.shape == (64, 64)
    expected = data.copy()
    expected[data == 0] = 255
    np.testing.assert_array_equal(full, expected)

    coarse = read_classes(asset, job, shape=(32, 32), fill=255)
    assert coarse.shape == (32, 32) and coarse.dtype == np.uint8
    expected_blocks = blocks.copy()
    expected_blocks[1, 1] = 255
    np.testing.assert_array_equal(coarse, expected_blocks)

    # half the cell outside the source (east) -> fill
    shifted = make_job("EPSG:32631", 500320.0, 5400000.0, 10.0, (64, 64))
    half = read_classes(asset, shifted, fill=7)
    assert (half[:, 32:] == 7).all()
    np.testing.assert_array_equal(half[:, :32], data[:, 32:])


def test_clear_fraction_on_a_20m_scl(tmp_path: Path) -> None:
    # 20 m SCL over a 64x64 10 m cell: 32x32 source pixels; cloud (9) in the top-left 16x16
    scl = np.full((32, 32), 4, dtype=np.uint8)
    scl[:16, :16] = 9
    scl[20, 20] = 5  # also clear
    scl[30, 0] = 0  # nodata: not clear
    href = write_tif(
        tmp_path / "scl.tif", scl, "EPSG:32631", from_origin(500000.0, 5400000.0, 20.0, 20.0), 0
    )
    scene = make_scene({"SCL": AssetRef(href=href)})
    job = make_job("EPSG:32631", 500000.0, 5400000.0, 10.0, (64, 64))
    assert clear_fraction(scene, "SCL", job, (4, 5, 6)) == pytest.approx(1 - 257 / 1024)
    assert clear_fraction(scene, "SCL", job, (9,)) == pytest.approx(0.25)
    # 0 is nodata even when listed as clear (it is never a value)
    assert clear_fraction(scene, "SCL", job, (0,)) == 0.0
    # the cell half outside the asset: the outside is not clear
    shifted = make_job("EPSG:32631", 500320.0, 5400000.0, 10.0, (64, 64))
    # the cell's west half sees source columns 16-31, all clear (the cloud and the nodata pixel
    # are in columns 0-15): 16 x 32 clear of 32 x 32 native pixels
    assert clear_fraction(scene, "SCL", shifted, (4, 5, 6)) == pytest.approx(512 / 1024)


def test_native_shape_follows_the_asset_resolution(tmp_path: Path) -> None:
    job = make_job("EPSG:32631", 500000.0, 5400000.0, 10.0, (64, 64))
    utm20 = write_tif(
        tmp_path / "u.tif",
        np.zeros((4, 4), np.uint8),
        "EPSG:32631",
        from_origin(500000.0, 5400000.0, 20.0, 20.0),
    )
    ll = write_tif(
        tmp_path / "ll.tif",
        np.zeros((4, 4), np.uint8),
        "EPSG:4326",
        from_origin(2.9, 48.9, 0.0001, 0.0001),
    )
    with rasterio.open(utm20) as src:
        assert raster._native_shape(src, job) == (32, 32)
    # 0.0001 deg at ~48.7 N: ~11.1 m north-south, ~7.3 m east-west -> ~58 x ~87 over 640 m
    with rasterio.open(ll) as src:
        h, w = raster._native_shape(src, job)
    assert 56 <= h <= 60 and 85 <= w <= 90


def test_missing_file_names_the_href(tmp_path: Path) -> None:
    href = str(tmp_path / "nope.tif")
    scene = make_scene({"B04": AssetRef(href=href)}, item_id="S2X_missing")
    job = make_job("EPSG:32631", 500000.0, 5400000.0, 10.0, (8, 8))
    with pytest.raises(RasterReadError) as info:
        read_bands(scene, ["B04"], job)
    assert info.value.href == href and info.value.item_id == "S2X_missing"
    assert href in str(info.value) and "S2X_missing" in str(info.value)
    with pytest.raises(RasterReadError, match=r"nope\.tif"):
        read_classes(AssetRef(href=href), job)


def test_raster_without_georeferencing_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"  # like OSCD's <city>-cm.tif: pixels, no CRS, no transform
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8"}
    with pytest.warns(NotGeoreferencedWarning), rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((8, 8), np.uint8), 1)
    job = make_job("EPSG:32631", 500000.0, 5400000.0, 10.0, (8, 8))
    with pytest.warns(NotGeoreferencedWarning), pytest.raises(RasterReadError, match="no CRS"):
        read_classes(AssetRef(href=str(path)), job, item_id="oscd-cm")


def test_unknown_band_key_names_it_and_the_item_keys(tmp_path: Path) -> None:
    scene = make_scene({"B02": AssetRef(href="/x/b02.tif"), "B03": AssetRef(href="/x/b03.tif")})
    job = make_job("EPSG:32631", 500000.0, 5400000.0, 10.0, (8, 8))
    with pytest.raises(RasterReadError) as info:
        read_bands(scene, ["B02", "B8A"], job)
    message = str(info.value)
    assert "'B8A'" in message and "B02" in message and "B03" in message
    assert info.value.item_id == "item-1"
    with pytest.raises(RasterReadError, match="'SCL'"):
        clear_fraction(scene, "SCL", job, (4,))
    with pytest.raises(ValueError, match="resampling"):
        read_bands(scene, ["B02"], job, resampling="bilinearr")


def test_datasets_are_cached_per_thread_and_reopened_when_rewritten(tmp_path: Path) -> None:
    raster.close_cached()
    transform = from_origin(500000.0, 5400000.0, 10.0, 10.0)
    path = tmp_path / "c.tif"
    href = write_tif(path, np.full((8, 8), 1, np.uint16), "EPSG:32631", transform)
    scene = make_scene({"B": AssetRef(href=href)})
    job = make_job("EPSG:32631", 500000.0, 5400000.0, 10.0, (8, 8))
    read_bands(scene, ["B"], job)
    first = next(iter(raster._cache().values()))
    read_bands(scene, ["B"], job)
    assert len(raster._cache()) == 1 and next(iter(raster._cache().values())) is first

    # another thread has its own cache (rasterio datasets are not thread-safe)
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(lambda: (read_bands(scene, ["B"], job), raster._cache())).result()
    assert other[1] is not raster._cache()
    np.testing.assert_array_equal(other[0], 1.0)

    write_tif(path, np.full((8, 8), 2, np.uint16), "EPSG:32631", transform)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    np.testing.assert_array_equal(read_bands(scene, ["B"], job), 2.0)
    assert first.closed and len(raster._cache()) == 1  # the stale handle is not kept
    raster.close_cached()
    assert len(raster._cache()) == 0


def test_real_oscd_bercy_b04_onto_utm(tmp_path: Path) -> None:
    href = str(next((BERCY / "imgs_1").glob("*_B04.tif")))
    # a 64x64 10 m cell in EPSG:32631 around (2.38 E, 48.844 N), inside the city
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True).transform(2.38, 48.844)
    left, top = round(x / 10) * 10 - 320.0, round(y / 10) * 10 + 320.0
    job = make_job("EPSG:32631", left, top, 10.0, (64, 64))
    scene = make_scene({"B04": AssetRef(href=href, scale=0.0001)}, item_id="oscd-bercy-1")
    out = read_bands(scene, ["B04"], job)[0]
    assert out.shape == (64, 64)
    assert not np.isnan(out).any()
    assert out.min() > 0.0 and out.max() < 1.0
    assert np.mean((out > 0.02) & (out < 0.4)) > 0.9

    # same footprint read straight from the source grid: means agree closely
    with rasterio.open(href) as src:
        bounds = transform_bounds("EPSG:32631", src.crs, *job.bounds())
        window = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
        direct = src.read(1, window=window).astype(np.float64) * 0.0001
    assert float(out.mean()) == pytest.approx(float(direct.mean()), rel=0.03)
