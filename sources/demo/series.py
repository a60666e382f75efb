"""The series demo catalog: five years of imagery and land cover, changes at known years.

``write_demo_catalog(out, series=True)`` (:mod:`geodelta.sources.demo.catalog`) builds it with
:func:`build_series`; :func:`load_series_truth` reads its truth back. It is the pair demo's world
(same AOI, tiles, layout, collections, bands, SCL, COG and STAC conventions) followed over
:data:`SERIES_YEARS` instead of two years:

- one land-cover item a year, ``DEMO_LC_2018`` .. ``DEMO_LC_2022`` (``start_datetime`` /
  ``end_datetime`` spanning the year, as io-lulc-annual-v02), which differ exactly inside the
  injected change polygons;
- three imagery dates every summer (:data:`SERIES_DATES`) on both tiles, each year's scenes
  rendered from that year's map; which date of a summer is the cloudiest rotates from year to
  year, so the clear-fraction choice matters;
- each change polygon has a class per year: permanent changes appearing in different years
  (new built-up in 2020, deforestation in 2021, ...), a transient flood (grassland -> water in
  2019 -> grassland in 2020) and a region that changes twice (cropland -> grassland -> bare);
  the first of each kind follows :data:`SERIES_HISTORIES`, further ones draw their years;
- every imagery item after the first year carries a known misregistration (``draw_shift``);
  the first year's items are the unshifted reference.

Truth: ``truth/changes.geojson`` (per feature ``kind``, ``classes_by_year``,
``worldcover_by_year``, ``change_years``, ``permanent``, and ``from_class`` / ``to_class`` of the
first and last year) and ``truth/shifts.json`` (as the pair demo's).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pystac
from rasterio.features import rasterize
from shapely.geometry import mapping, shape

from geodelta.schemas.classes import WORLDCOVER_TO_GEODELTA
from geodelta.sources.demo.constants import (
    LANDCOVER_COLLECTION,
    SERIES_CHANGE_KINDS,
    SERIES_DATES,
    SERIES_HISTORIES,
    SERIES_KIND_WEIGHTS,
    SERIES_SECOND_CLASS,
    SERIES_SHIFTS_CONVENTION,
    SERIES_YEARS,
    ZONES,
    DemoCatalogError,
)
from geodelta.sources.demo.render import make_clouds, reflectance_field
from geodelta.sources.demo.stac import landcover_item, render_dates, save_catalog
from geodelta.sources.demo.world import (
    LonLatGrid,
    demo_cells,
    landcover_grid,
    make_cloud_grid,
    make_layout,
    make_tile,
    place_changes,
    scaled_aoi,
    seeded_rng,
)

__all__ = ["DemoSeriesTruth", "build_series", "load_series_truth", "series_histories"]


@dataclass(frozen=True)
class DemoSeriesTruth:
    """What a series demo catalog was generated from.

    Attributes:
        years: the years of the series (one land-cover item and one summer of imagery each).
        changes: one dict per injected change: ``id``, ``geometry`` (shapely Polygon, lon/lat),
            ``kind``, ``classes_by_year`` (year -> geodelta class name), ``worldcover_by_year``
            (year -> WorldCover code), ``change_years`` (the years whose class differs from the
            year before, ascending), ``permanent`` (last year's class differs from the first's),
            ``from_class`` / ``to_class`` (first and last year's class).
        shifts: item id -> (dy, dx) content displacement in pixels of the 10 m grid (see
            :data:`~geodelta.sources.demo.constants.SERIES_SHIFTS_CONVENTION`); (0, 0) for the
            first year's items.
    """

    years: tuple[int, ...]
    changes: list[dict[str, Any]]
    shifts: dict[str, tuple[float, float]]


# --------------------------------------------------------------------------------------------
# Changes over the years
# --------------------------------------------------------------------------------------------


def _draw_years(rng: np.random.Generator, n: int) -> tuple[int, ...]:
    """``n`` distinct ascending change years among the series' years after the first."""
    later = np.array(SERIES_YEARS[1:])
    return tuple(int(y) for y in np.sort(rng.choice(later, n, replace=False)))


def series_histories(seed: int, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each placed change its class per year.

    The first change of each kind gets the change years of :data:`SERIES_HISTORIES`; later ones
    draw theirs (one stream, in the order of ``changes``). ``changes`` are the dicts of
    :func:`~geodelta.sources.demo.world.place_changes` (``worldcover_from`` / ``_to``).

    Returns:
        New dicts: ``id``, ``geometry``, ``kind``, ``worldcover_by_year``, ``classes_by_year``,
        ``change_years``, ``permanent``, ``from_class`` / ``to_class``, ``worldcover_from`` /
        ``worldcover_to`` (first and last year).
    """
    rng = seeded_rng(seed, "series-histories")
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for ch in changes:
        kind = ch["kind"]
        pattern, canonical = SERIES_HISTORIES[kind]
        if kind in seen:
            years = _draw_years(rng, len(pattern) - 1)
        else:
            years = canonical
            seen.add(kind)
        states = {"F": ch["worldcover_from"], "T": ch["worldcover_to"]}
        if "U" in pattern:
            states["U"] = SERIES_SECOND_CLASS[kind]
        by_year: dict[int, int] = {}
        state = 0
        for year in SERIES_YEARS:
            state += sum(1 for y in years if y == year)
            by_year[year] = int(states[pattern[state]])
        first, last = by_year[SERIES_YEARS[0]], by_year[SERIES_YEARS[-1]]
        out.append(
            {
                "id": ch["id"],
                "geometry": ch["geometry"],
                "kind": kind,
                "worldcover_by_year": by_year,
                "classes_by_year": {y: WORLDCOVER_TO_GEODELTA[c] for y, c in by_year.items()},
                "change_years": tuple(
                    y for p, y in itertools.pairwise(SERIES_YEARS) if by_year[y] != by_year[p]
                ),
                "permanent": last != first,
                "from_class": WORLDCOVER_TO_GEODELTA[first],
                "to_class": WORLDCOVER_TO_GEODELTA[last],
                "worldcover_from": first,
                "worldcover_to": last,
            }
        )
    return out


def _paint_years(
    lc: np.ndarray, grid: LonLatGrid, changes: list[dict[str, Any]]
) -> dict[int, np.ndarray]:
    """One map per year: the first year's land cover with each polygon painted its class."""
    if not changes:
        return {year: lc.copy() for year in SERIES_YEARS}
    index = rasterize(
        [(ch["geometry"], i + 1) for i, ch in enumerate(changes)],
        out_shape=lc.shape,
        transform=grid.transform,
        fill=0,
        dtype="int32",
    )
    inside = index > 0
    maps: dict[int, np.ndarray] = {}
    for year in SERIES_YEARS:
        lut = np.zeros(len(changes) + 1, dtype=np.uint8)
        for i, ch in enumerate(changes):
            lut[i + 1] = ch["worldcover_by_year"][year]
        painted = lc.copy()
        painted[inside] = lut[index[inside]]
        maps[year] = painted
    return maps


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def build_series(root: Path, *, seed: int, scale: float) -> tuple[float, float, float, float]:
    """Write the series demo catalog (items, collections, truth) into the empty ``root``.

    Returns:
        The AOI used.
    """
    aoi = scaled_aoi(scale)
    tiles = [make_tile(aoi, zone, epsg) for zone, epsg in ZONES]
    lc_grid = landcover_grid(tiles)
    cloud_grid = make_cloud_grid(lc_grid)
    layout = make_layout(seed, aoi, lc_grid)
    n_cells = len(demo_cells(aoi))
    placed = place_changes(
        seed,
        aoi,
        lc_grid,
        layout,
        max(len(SERIES_CHANGE_KINDS), round(n_cells / 2)),
        kinds_table=SERIES_CHANGE_KINDS,
        weights=SERIES_KIND_WEIGHTS,
        tag="series-changes",
    )
    changes = series_histories(seed, placed)
    lc_maps = _paint_years(layout.lc, lc_grid, changes)
    lc_items = [
        landcover_item(year, lc, lc_grid, root / LANDCOVER_COLLECTION / f"DEMO_LC_{year}")
        for year, lc in lc_maps.items()
    ]

    shift_rng = seeded_rng(seed, "series-shifts")
    shifts: dict[str, tuple[float, float]] = {}
    imagery_items: list[pystac.Item] = []
    for n_year, year in enumerate(SERIES_YEARS):
        reference = n_year == 0
        refl_field = reflectance_field(lc_maps[year], layout)
        dates = [date.fromisoformat(d) for d in SERIES_DATES[year]]
        # which date of the summer is the cloudiest rotates from year to year
        clouds = [
            make_clouds(
                seed, d.isoformat(), (i + n_year) % 3, cloud_grid, layout, max(scale, 0.7), t0=False
            )
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
            shift_rng=None if reference else shift_rng,
            shifts=shifts,
        )
        del refl_field  # before the next year's is made (4 x the land-cover grid, float32)

    save_catalog(root, imagery_items, lc_items)
    _write_truth(root, changes, shifts)
    return aoi


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _write_truth(
    root: Path, changes: list[dict[str, Any]], shifts: dict[str, tuple[float, float]]
) -> None:
    first, last = SERIES_YEARS[0], SERIES_YEARS[-1]
    features = [
        {
            "type": "Feature",
            "id": ch["id"],
            "geometry": mapping(ch["geometry"]),
            "properties": {
                "kind": ch["kind"],
                "classes_by_year": {str(y): c for y, c in ch["classes_by_year"].items()},
                "worldcover_by_year": {str(y): c for y, c in ch["worldcover_by_year"].items()},
                "change_years": list(ch["change_years"]),
                "permanent": ch["permanent"],
                "from_class": ch["from_class"],
                "to_class": ch["to_class"],
                "worldcover_from": ch["worldcover_from"],
                "worldcover_to": ch["worldcover_to"],
            },
        }
        for ch in changes
    ]
    _write_json(
        root / "truth" / "changes.geojson",
        {
            "type": "FeatureCollection",
            "description": f"Injected land-cover histories {first}..{last} (SYNTHETIC truth). "
            "Each polygon holds classes_by_year[year] (worldcover_by_year[year]) in the map of "
            "that year; change_years are the years whose class differs from the year before; "
            f"from_class / to_class are the {first} and {last} classes (equal for a transient "
            "change, permanent = false). The maps differ nowhere else.",
            "years": list(SERIES_YEARS),
            "features": features,
        },
    )
    _write_json(
        root / "truth" / "shifts.json",
        {
            "convention": SERIES_SHIFTS_CONVENTION,
            "units": "pixels of the item's 10 m grid",
            "shifts": {k: list(v) for k, v in shifts.items()},
        },
    )


# --------------------------------------------------------------------------------------------
# Reading the truth back
# --------------------------------------------------------------------------------------------


def load_series_truth(root: str | Path) -> DemoSeriesTruth:
    """Read the truth of a series demo catalog (``write_demo_catalog(..., series=True)``).

    Args:
        root: the catalog folder (``DemoCatalog.root``).

    Returns:
        The years, the injected changes (shapely polygons in lon/lat, classes per year as int
        keys) and the per-item shifts.

    Raises:
        DemoCatalogError: the truth files are missing or malformed, or the catalog is a pair
            demo catalog (no ``classes_by_year``).
    """
    truth = Path(root) / "truth"
    try:
        changes_doc = json.loads((truth / "changes.geojson").read_text())
        shifts_doc = json.loads((truth / "shifts.json").read_text())
    except FileNotFoundError as exc:
        raise DemoCatalogError(
            f"no demo truth at {truth} (missing {Path(str(exc.filename)).name}); "
            "write the catalog with write_demo_catalog(..., series=True)",
            path=str(truth),
        ) from None
    except ValueError as exc:
        raise DemoCatalogError(
            f"malformed demo truth in {truth}: {exc!r}", path=str(truth)
        ) from None
    if not isinstance(changes_doc, dict) or "years" not in changes_doc:
        raise DemoCatalogError(
            f"{truth} is the truth of a pair demo catalog, not a series one; write it with "
            "write_demo_catalog(..., series=True) or read it with load_truth()",
            key="series",
            path=str(truth),
        )
    try:
        changes = []
        for feat in changes_doc["features"]:
            props = feat["properties"]
            changes.append(
                {
                    **props,
                    "id": feat["id"],
                    "geometry": shape(feat["geometry"]),
                    "classes_by_year": {int(y): c for y, c in props["classes_by_year"].items()},
                    "worldcover_by_year": {
                        int(y): int(c) for y, c in props["worldcover_by_year"].items()
                    },
                    "change_years": tuple(int(y) for y in props["change_years"]),
                }
            )
        shifts = {k: (float(v[0]), float(v[1])) for k, v in shifts_doc["shifts"].items()}
        years = tuple(int(y) for y in changes_doc["years"])
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        raise DemoCatalogError(
            f"malformed demo truth in {truth}: {exc!r}", path=str(truth)
        ) from None
    return DemoSeriesTruth(years=years, changes=changes, shifts=shifts)
