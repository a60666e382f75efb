"""The synthetic demo STAC catalog: geodelta's offline default input, with known truth.

:func:`write_demo_catalog` writes a static, self-contained STAC catalog of SYNTHETIC
Sentinel-2-L2A-like scenes plus yearly land-cover maps over a small area of interest that
straddles the UTM 31/32 boundary at 6°E. Everything is generated from a seed and is
byte-for-byte reproducible, so every pipeline stage can be checked against the truth:

- the land cover of 2020 and 2021 (ESA WorldCover legend, EPSG:4326 at 1/12000°), which differ
  exactly inside the injected change polygons (``truth/changes.geojson``);
- the clouds and their shadows (visible in the ``SCL`` asset, as in real L2A products);
- the misregistration of every after-scene (``truth/shifts.json``, read with :func:`load_truth`).

With ``series=True`` it writes the series demo instead (:mod:`~geodelta.sources.demo.series`):
the same world over 2018..2022, a land-cover map and three summer dates of imagery a year,
changes injected at known years (``truth/changes.geojson`` with ``classes_by_year``, read with
:func:`load_series_truth`).

Conventions are those of the real products the pipeline reads: two 10 m tiles, one per UTM zone
(EPSG:32631, EPSG:32632) overlapping across 6°E like MGRS tiles; uint16 band COGs with the DN
convention of processing baseline 04.00 (reflectance = DN * 0.0001 - 0.1, nodata 0) stated in
the raster extension; a 20 m ``SCL`` COG with the scene-classification codes; eo, raster and
projection extension fields.

Everything in the scene is defined in lon/lat (land cover, texture, clouds), and each tile pixel
is rendered by sampling it at the pixel centre, so both tiles and all dates agree where they
overlap.

This module is the public entry (also re-exported by :mod:`geodelta.sources.demo`); the work is
done by :mod:`~geodelta.sources.demo.world` (what the scene holds),
:mod:`~geodelta.sources.demo.render` (pixels and COGs) and :mod:`~geodelta.sources.demo.stac`
(items, collections, truth files), with the shared names in
:mod:`~geodelta.sources.demo.constants`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pystac
from shapely.geometry import shape

from geodelta.sources.demo.constants import (
    BANDS,
    CHANGE_KINDS,
    DEMO_AOI,
    DN_OFFSET,
    DN_SCALE,
    IMAGERY_COLLECTION,
    LANDCOVER_COLLECTION,
    SERIES_DATES,
    SERIES_YEARS,
    SHIFTS_CONVENTION,
    T0_DATES,
    T0_WINDOW,
    T1_DATES,
    T1_WINDOW,
    ZONES,
    DemoCatalogError,
)
from geodelta.sources.demo.render import make_clouds, reflectance_field
from geodelta.sources.demo.series import DemoSeriesTruth, build_series, load_series_truth
from geodelta.sources.demo.stac import (
    landcover_item,
    render_dates,
    save_catalog,
    write_truth,
)
from geodelta.sources.demo.world import (
    demo_cells,
    landcover_grid,
    make_cloud_grid,
    make_layout,
    make_tile,
    paint_changes,
    place_changes,
    scaled_aoi,
    seeded_rng,
)

__all__ = [
    "BANDS",
    "CHANGE_KINDS",
    "DEMO_AOI",
    "DN_OFFSET",
    "DN_SCALE",
    "IMAGERY_COLLECTION",
    "LANDCOVER_COLLECTION",
    "MAX_SCALE",
    "SERIES_DATES",
    "SERIES_YEARS",
    "SHIFTS_CONVENTION",
    "T0_DATES",
    "T0_WINDOW",
    "T1_DATES",
    "T1_WINDOW",
    "DemoCatalog",
    "DemoCatalogError",
    "DemoSeriesTruth",
    "DemoTruth",
    "load_series_truth",
    "load_truth",
    "write_demo_catalog",
]

#: Largest ``scale`` :func:`write_demo_catalog` accepts: ~9,400 cells, ~7 GB of scenes, written
#: in bounded memory (a tile is rendered a block of rows at a time).
MAX_SCALE = 10.0

# --------------------------------------------------------------------------------------------
# Public records (the constants above are re-exported for callers)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoCatalog:
    """A demo catalog on disk.

    Attributes:
        root: the folder written.
        catalog_path: ``root / "catalog.json"``.
        aoi_bbox: the AOI actually used (after ``scale``), (min_lon, min_lat, max_lon, max_lat).
        truth_dir: ``root / "truth"`` (``changes.geojson``, ``shifts.json``).
    """

    root: Path
    catalog_path: Path
    aoi_bbox: tuple[float, float, float, float]
    truth_dir: Path


@dataclass(frozen=True)
class DemoTruth:
    """What the demo catalog was generated from.

    Attributes:
        changes: one dict per injected change: ``geometry`` (shapely Polygon, lon/lat),
            ``from_class`` / ``to_class`` (geodelta class names), ``kind``, plus ``id`` and
            ``worldcover_from`` / ``worldcover_to`` (WorldCover legend values).
        shifts: item id -> (dy, dx) content displacement in pixels of the 10 m grid (see
            :data:`SHIFTS_CONVENTION`); (0, 0) for before items.
    """

    changes: list[dict[str, Any]]
    shifts: dict[str, tuple[float, float]]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def write_demo_catalog(
    out_dir: str | Path, *, seed: int = 0, scale: float = 1.0, series: bool = False
) -> DemoCatalog:
    """Write the synthetic demo STAC catalog (imagery, land cover, truth) to ``out_dir``.

    The folder is written atomically (built next to it, then renamed). An existing folder is
    replaced only when it is empty or holds a previous catalog (``catalog.json``).

    With ``series=True`` it writes the series demo instead (:mod:`~geodelta.sources.demo.series`):
    the same collections over five years, 2018..2022 (a land-cover item and three summer dates
    of imagery a year), changes at known years (permanent, transient, twice), every item after
    the first year shifted; its truth is read with :func:`load_series_truth`.

    Args:
        out_dir: folder to write; ``catalog.json`` lands at its root.
        seed: seed of everything random; the same seed gives byte-identical files.
        scale: shrinks (< 1) or grows (> 1) the AOI around its centre (6.0, 45.045); the AOI
            always straddles 6°E. ``scale=1`` gives 75 cells of 1280 m (the pipeline default grid),
            ``0.5`` gives 15 and ``0.3`` gives 2 (one per zone), ``10`` (:data:`MAX_SCALE`)
            9,414; generation takes ~20 s at ``scale=1``, ~4 s at ``0.3`` (about 2.5 times
            that with ``series``) and ~19 min, ~9 GB of memory and 7.3 GB of files at ``10``.
        series: write the five-year series demo instead of the two-date pair demo.

    Returns:
        Where things are, and the AOI used.

    Raises:
        DemoCatalogError: ``scale`` out of range (0.1 to :data:`MAX_SCALE`) or ``out_dir``
            holds other files.
    """
    if not (isinstance(scale, int | float) and 0.1 <= scale <= MAX_SCALE):
        raise DemoCatalogError(
            f"scale out of range (min=0.1, max={MAX_SCALE:g}, actual={scale!r})", key="scale"
        )
    out = Path(out_dir).resolve()
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "catalog.json").exists())
    ):
        raise DemoCatalogError(
            f"{out} exists and is not a demo catalog; choose an empty or new folder",
            key="out_dir",
            path=str(out),
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    # no dot in the name: pystac would take a dotted folder name for a file name
    tmp = Path(tempfile.mkdtemp(prefix="_geodelta_demo_tmp_", dir=out.parent))
    try:
        if series:
            aoi = build_series(tmp, seed=seed, scale=float(scale))
        else:
            aoi = _build(tmp, seed=seed, scale=float(scale))
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DemoCatalog(
        root=out, catalog_path=out / "catalog.json", aoi_bbox=aoi, truth_dir=out / "truth"
    )


def _build(root: Path, *, seed: int, scale: float) -> tuple[float, float, float, float]:
    aoi = scaled_aoi(scale)
    tiles = [make_tile(aoi, zone, epsg) for zone, epsg in ZONES]
    lc_grid = landcover_grid(tiles)
    cloud_grid = make_cloud_grid(lc_grid)
    layout = make_layout(seed, aoi, lc_grid)
    n_cells = len(demo_cells(aoi))
    changes = place_changes(seed, aoi, lc_grid, layout, max(5, round(n_cells / 2)))
    lc_maps = dict(zip((2020, 2021), paint_changes(layout.lc, lc_grid, changes), strict=True))

    lc_items = [
        landcover_item(year, lc, lc_grid, root / LANDCOVER_COLLECTION / f"DEMO_LC_{year}")
        for year, lc in lc_maps.items()
    ]

    shift_rng = seeded_rng(seed, "shifts")
    shifts: dict[str, tuple[float, float]] = {}
    imagery_items: list[pystac.Item] = []
    for year, days, is_t0 in ((2020, T0_DATES, True), (2021, T1_DATES, False)):
        refl_field = reflectance_field(lc_maps[year], layout)
        dates = [date.fromisoformat(d) for d in days]
        clouds = [
            make_clouds(seed, d.isoformat(), i, cloud_grid, layout, scale, is_t0)
            for i, d in enumerate(dates)
        ]
        imagery_items += render_dates(
            root,
            seed=seed,
            tiles=tiles,
            dates=dates,
            clouds=clouds,
            refl_field=refl_field,
            lc=lc_maps[year],
            lc_grid=lc_grid,
            cloud_grid=cloud_grid,
            shift_rng=None if is_t0 else shift_rng,
            shifts=shifts,
        )
        del refl_field  # before the next year's is made (4 x the land-cover grid, float32)

    save_catalog(root, imagery_items, lc_items)
    write_truth(root, changes, shifts)
    return aoi


def load_truth(root: str | Path) -> DemoTruth:
    """Read the truth of a demo catalog written by :func:`write_demo_catalog`.

    Args:
        root: the catalog folder (``DemoCatalog.root``).

    Returns:
        The injected changes (shapely polygons in lon/lat) and the per-item shifts.

    Raises:
        DemoCatalogError: the truth files are missing or malformed.
    """
    truth = Path(root) / "truth"
    try:
        changes_doc = json.loads((truth / "changes.geojson").read_text())
        shifts_doc = json.loads((truth / "shifts.json").read_text())
        changes = [
            {
                "id": feat.get("id"),
                "geometry": shape(feat["geometry"]),
                **feat["properties"],
            }
            for feat in changes_doc["features"]
        ]
        shifts = {k: (float(v[0]), float(v[1])) for k, v in shifts_doc["shifts"].items()}
    except FileNotFoundError as exc:
        raise DemoCatalogError(
            f"no demo truth at {truth} (missing {Path(str(exc.filename)).name}); "
            "write the catalog with write_demo_catalog()",
            path=str(truth),
        ) from None
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise DemoCatalogError(
            f"malformed demo truth in {truth}: {exc!r}", path=str(truth)
        ) from None
    return DemoTruth(changes=changes, shifts=shifts)
