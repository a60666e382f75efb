"""geodelta.data.to_xarray: a decoded sample as a (time, band, y, x) DataArray with its CRS,
checked against rasterio's reading of the same sample's before.tif / after.tif."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import geodelta.data as gd
from geodelta.data import LoaderError
from tests.prerequisites import missing

if TYPE_CHECKING:
    from geodelta.pipelines.api import BuildResult


def _first_raw(release: Path) -> dict[str, Any]:
    """The first sample of the release's first shard, as raw member bytes."""
    shard = sorted(release.rglob("*.tar"))[0]
    raw: dict[str, Any] = {}
    with tarfile.open(shard) as tar:
        for info in tar:
            key, _, member = info.name.partition(".")
            if raw and key != raw["__key__"]:
                break
            raw["__key__"] = key
            f = tar.extractfile(info)
            assert f is not None
            raw[member] = f.read()
    raw["__url__"] = str(shard)
    return raw


@pytest.fixture(scope="module")
def raw_sample(demo_release: BuildResult) -> dict[str, Any]:
    return _first_raw(demo_release.release_dir)


def _reflectance(tif: bytes, scale: float, offset: float) -> tuple[np.ndarray, Any, Any]:
    import rasterio

    with rasterio.MemoryFile(tif) as mem, mem.open() as ds:
        dn = ds.read().astype(np.float64)
        nodata = 0 if ds.nodata is None else ds.nodata
        refl = (dn * scale + offset).astype(np.float32)
        refl[dn == nodata] = np.nan
        return refl, ds.transform, ds.crs


@pytest.mark.parametrize("decode", ["numpy", "torch"])
def test_coordinates_crs_and_values_match_rasterio(raw_sample: dict[str, Any], decode: str) -> None:
    sample = gd.decode_sample(raw_sample, decode=decode)  # type: ignore[arg-type]
    meta = sample["meta"]
    da = gd.to_xarray(sample)
    assert da.dims == ("time", "band", "y", "x")
    assert da.dtype == np.float32
    assert list(da.band.values) == list(meta["bands"])
    h, w = meta["shape"]
    assert da.shape == (2, len(meta["bands"]), h, w)

    before, transform, crs = _reflectance(
        raw_sample["before.tif"], meta["dn_scale"], meta["dn_offset"]
    )
    after, _, _ = _reflectance(raw_sample["after.tif"], meta["dn_scale"], meta["dn_offset"])
    # pixel centres, from rasterio's own transform of before.tif
    rows, cols = np.arange(h), np.arange(w)
    xs = [transform @ (c + 0.5, 0.5) for c in cols]
    ys = [transform @ (0.5, r + 0.5) for r in rows]
    np.testing.assert_allclose(da.x.values, [p[0] for p in xs], rtol=0, atol=1e-6)
    np.testing.assert_allclose(da.y.values, [p[1] for p in ys], rtol=0, atol=1e-6)
    assert da.y.values[0] > da.y.values[-1]  # north up: row 0 is the northern edge
    # the CRS attached the rioxarray way is the tif's CRS
    from pyproj import CRS

    assert CRS.from_wkt(da.spatial_ref.attrs["crs_wkt"]) == CRS.from_wkt(crs.to_wkt())
    gt = [float(v) for v in da.spatial_ref.attrs["GeoTransform"].split()]
    assert gt == [transform.c, transform.a, transform.b, transform.f, transform.d, transform.e]
    assert da.attrs["grid_mapping"] == "spatial_ref"
    # values: the decoded arrays, and rasterio's reading of the same members
    image = sample["image"].numpy() if decode == "torch" else sample["image"]
    np.testing.assert_array_equal(da.values, image)
    np.testing.assert_allclose(da.isel(time=0).values, before, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(da.isel(time=1).values, after, rtol=1e-6, equal_nan=True)
    # the dates of the pair, in order, as naive UTC
    t0 = datetime.fromisoformat(meta["t0"].replace("Z", "+00:00")).astimezone(UTC)
    t1 = datetime.fromisoformat(meta["t1"].replace("Z", "+00:00")).astimezone(UTC)
    assert list(da.time.values) == [
        np.datetime64(t0.replace(tzinfo=None), "ns"),
        np.datetime64(t1.replace(tzinfo=None), "ns"),
    ]
    # label-based selection works on the coordinates
    band = meta["bands"][0]
    assert float(da.sel(band=band).isel(time=0, y=0, x=0)) == pytest.approx(
        before[0, 0, 0], nan_ok=True
    )


def test_nodata_is_nan_and_band_subset(raw_sample: dict[str, Any]) -> None:
    meta = gd.decode_sample(raw_sample, decode="numpy")["meta"]
    bands = list(reversed(meta["bands"]))[:2]
    sample = gd.decode_sample(raw_sample, decode="numpy", bands=bands)
    sample["image"][0, 0, 0, 0] = np.nan  # a nodata pixel as the loader writes it
    da = gd.to_xarray(sample)
    assert list(da.band.values) == bands
    assert np.isnan(da.values[0, 0, 0, 0])


# rioxarray 0.19's transform() multiplies an Affine with `*` (affine deprecates it for `@`):
# its own warning, not ours
@pytest.mark.filterwarnings("ignore:Use `@` matmul instead of `\\*`:PendingDeprecationWarning")
def test_rioxarray_reads_the_crs(raw_sample: dict[str, Any]) -> None:
    import rasterio

    try:
        import rioxarray  # noqa: F401  (the `.rio` accessor)
    except ImportError:
        missing("rioxarray is not installed (the dev extra has it): `make install`")

    sample = gd.decode_sample(raw_sample, decode="numpy")
    da = gd.to_xarray(sample)
    with rasterio.MemoryFile(raw_sample["before.tif"]) as mem, mem.open() as ds:
        assert da.rio.crs == ds.crs
        assert da.rio.transform() == ds.transform


def test_refusals_are_one_line(raw_sample: dict[str, Any]) -> None:
    sample = gd.decode_sample(raw_sample, decode="numpy")
    with pytest.raises(LoaderError, match="decoded sample"):
        gd.to_xarray(gd.decode_sample(raw_sample, decode="raw"))
    with pytest.raises(LoaderError, match=r"\[2, C, H, W\]"):
        gd.to_xarray({**sample, "image": sample["image"][:1]})
    rotated = {**sample, "meta": {**sample["meta"], "transform": [10, 1, 0, 0, -10, 0]}}
    with pytest.raises(LoaderError, match="rotated transform"):
        gd.to_xarray(rotated)
    wrong_bands = {**sample, "meta": {**sample["meta"], "__bands__": ["B02"]}}
    with pytest.raises(LoaderError, match="band names"):
        gd.to_xarray(wrong_bands)


def test_pixel_centres_hand_computed() -> None:
    from geodelta.xarray_view import pixel_centres

    y, x = pixel_centres((10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), 2, 3)
    assert list(x) == [500005.0, 500015.0, 500025.0]
    assert list(y) == [3999995.0, 3999985.0]


def test_importing_geodelta_data_does_not_import_xarray() -> None:
    code = "import sys, geodelta.data; print('xarray' in sys.modules, 'pyproj' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]


def test_to_xarray_is_reached_lazily() -> None:
    from geodelta.xarray_view import to_xarray

    assert gd.to_xarray is to_xarray
    assert "to_xarray" not in vars(gd)  # resolved by the module __getattr__, not imported
