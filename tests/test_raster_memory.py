"""Raster reads keep memory bounded: GDAL's block cache capped, no VSI cache for local files."""

from __future__ import annotations

from typing import Any

import pytest
from rasterio.env import get_gdal_config

from geodelta.sources import raster
from geodelta.sources.raster import (
    BLOCK_CACHE_MB,
    RasterAccess,
    RasterConfigError,
    block_cache_bytes,
    gdal_env_options,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, BLOCK_CACHE_MB * 2**20),
        ("128", 128 * 2**20),  # below 100000: megabytes, as GDAL reads it
        (256, 256 * 2**20),
        ("200000000", 200_000_000),  # from 100000 on: bytes
        ("96MB", 96 * 2**20),
        (" 1gb ", 2**30),
    ],
)
def test_block_cache_bytes(value: Any, expected: int) -> None:
    assert block_cache_bytes(value) == expected


def test_block_cache_bytes_percent_of_physical_memory() -> None:
    import os

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert block_cache_bytes("10%") == int(total * 0.1)


def test_block_cache_bytes_rejects_other_text() -> None:
    with pytest.raises(RasterConfigError, match=r"gdal\.options\.GDAL_CACHEMAX"):
        block_cache_bytes("lots")


def test_reads_cap_the_block_cache_and_restore_it() -> None:
    outside = int(get_gdal_config("GDAL_CACHEMAX"))
    with raster._reading(RasterAccess()):
        assert int(get_gdal_config("GDAL_CACHEMAX")) == BLOCK_CACHE_MB * 2**20
    options = {**gdal_env_options(), "GDAL_CACHEMAX": "512"}  # a config's gdal.options
    with raster._reading(RasterAccess(gdal_options=options)):
        assert int(get_gdal_config("GDAL_CACHEMAX")) == 512 * 2**20
    assert int(get_gdal_config("GDAL_CACHEMAX")) == outside


class _FakeDataset:
    crs = "EPSG:32631"
    closed = False

    def close(self) -> None:
        self.closed = True


def test_local_files_open_without_the_vsi_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_open(url: str) -> _FakeDataset:
        value = get_gdal_config("VSI_CACHE")  # False, or the text the option was set to
        seen[url] = value is not False and str(value).upper() in {"TRUE", "YES", "ON"}
        return _FakeDataset()

    monkeypatch.setattr(raster.rasterio, "open", fake_open)
    raster.close_cached()
    access = RasterAccess()  # the default gdal section: vsi_cache on
    assert access.gdal_options["VSI_CACHE"] == "TRUE"
    with raster._reading(access):
        raster._open("/data/scene/B04.tif", "item")
        raster._open("file:///data/scene/B03.tif", "item")
        raster._open("https://example.com/scene/B02.tif", "item")
    raster.close_cached()
    # GDAL reads VSI_CACHE when it opens the file: off for local files, on for remote ones
    assert seen["/data/scene/B04.tif"] is False
    assert seen["file:///data/scene/B03.tif"] is False
    assert seen["https://example.com/scene/B02.tif"] is True

    # with vsi_cache off in the config, nothing changes for any file
    seen.clear()
    off = RasterAccess(gdal_options={**gdal_env_options(), "VSI_CACHE": "FALSE"})
    with raster._reading(off):
        raster._open("https://example.com/scene/B08.tif", "item")
    raster.close_cached()
    assert seen["https://example.com/scene/B08.tif"] is False
