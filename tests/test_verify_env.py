"""verify's one GDAL environment for every GeoTIFF member (a fixed cost of every build's report
and of ``geodelta release``): each member check finds exactly the problems it found when every
open made its own environment.

Byte identity of releases and reports is tested by tests/test_same_bytes.py; the verdict's
agreement with the publisher by tests/test_report_verdict.py.
"""

from __future__ import annotations

import re


def _geotiff(*, crs: str | None = "EPSG:32631", dtype: str = "uint16", bands: int = 4) -> bytes:
    import numpy as np
    from affine import Affine
    from rasterio.io import MemoryFile

    data = np.arange(bands * 16 * 16, dtype=dtype).reshape(bands, 16, 16)
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=16,
            height=16,
            count=bands,
            dtype=dtype,
            crs=crs,
            transform=Affine(10, 0, 600000, 0, -10, 5000000),
            compress="deflate",
        ) as ds:
            ds.write(data)
        return bytes(mem.read())


def test_geotiff_checks_find_the_same_problems_in_verifys_one_environment() -> None:
    """verify opens every GeoTIFF member inside one ``rasterio.Env.from_defaults()``: each
    check says exactly what it says in the environment each open makes for itself."""
    import rasterio

    from geodelta.pipelines.stages.member_checks import _check_geotiff

    good = _geotiff()
    cases = {
        "good": good,
        "truncated": good[: len(good) // 2],
        "not a tiff": b"II*\x00garbage" + bytes(64),
        "no crs": _geotiff(crs=None),
        "uint8": _geotiff(dtype="uint8"),
        "3 bands": _geotiff(bands=3),
    }
    alone = {k: _check_geotiff("w", "before.tif", v, "geotiff", None) for k, v in cases.items()}
    with rasterio.Env.from_defaults():
        shared = {
            k: _check_geotiff("w", "before.tif", v, "geotiff", None) for k, v in cases.items()
        }
    # GDAL names the MemoryFile's random file in its messages (different on every open)
    mem = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.tif")
    assert {k: [mem.sub("<mem>", p) for p in v] for k, v in shared.items()} == {
        k: [mem.sub("<mem>", p) for p in v] for k, v in alone.items()
    }
    assert alone["good"] == [] and alone["3 bands"] == []  # no json given: no band count
    assert "does not decode as GeoTIFF" in alone["truncated"][0]
    assert "does not decode as GeoTIFF" in alone["not a tiff"][0]
    assert alone["no crs"] == ["w: before.tif has no CRS"]
    assert alone["uint8"] == ["w: before.tif dtype uint8, expected uint16"]


def test_a_png_that_does_not_decode_is_named_the_same_every_time() -> None:
    """PIL names a stream it cannot identify by its address; verify's message does not, so a
    damaged release's report page is the same bytes on every render."""
    from geodelta.pipelines.stages.member_checks import _check_png

    first = _check_png("s.tar: k", "mask.png", b"not a png at all", "png-index", None)
    second = _check_png("s.tar: k", "mask.png", b"not a png at all", "png-index", None)
    assert first == second and len(first) == 1
    assert "does not decode as PNG" in first[0] and " at 0x" not in first[0]
