"""plan: AOI x a fixed grid -> TileJobs with stable cell ids and spatially disjoint splits.

The grid is the UTM zone of each place, anchored at the zone's origin: cell ``(col, row)`` of
size ``s`` metres covers eastings ``[col*s, (col+1)*s)`` and northings ``[row*s, (row+1)*s)``. The
id ``31N-1280-0456-3516`` (zone, hemisphere, cell size in metres, column, row) therefore depends
only on the place and the cell size: the same place always gets the same id, in every version.

A cell belongs to the zone that holds its centre, so an AOI across a zone boundary is covered
once, and every cell is processed on its own zone's grid (scenes of the neighbouring zone are
reprojected onto it).

Splits are assigned per block of ``block_cells x block_cells`` cells from a hash of the block id,
so a block (and every cell in it) is in one split, and a cell keeps its split when the AOI grows.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from geodelta.errors import ConfigError
from geodelta.schemas import BuildConfig, TileJob
from geodelta.schemas.config import SplitConfig

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

_CELL_RE = re.compile(r"^(\d{2})([NS])-(\d+)-(\d{4,})-(\d{4,})$")


class PlanError(ConfigError):
    """An AOI or grid that cannot be planned; names the config key to change.

    A :class:`geodelta.errors.ConfigError` (so also a ``ValueError``).

    Attributes:
        key: the config key to change (``aoi.geojson``, ``grid``).
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key


@dataclass(frozen=True)
class CellIndex:
    """The parts of a cell id."""

    zone: int
    north: bool
    size_m: int
    col: int
    row: int

    @property
    def epsg(self) -> int:
        """EPSG code of the cell's UTM zone (WGS 84)."""
        return (32600 if self.north else 32700) + self.zone


def utm_zone(lon: float) -> int:
    """UTM zone number (1..60) of a longitude (no Norway/Svalbard exceptions)."""
    return min(60, max(1, math.floor((lon + 180.0) / 6.0) + 1))


def format_cell_id(zone: int, north: bool, size_m: int, col: int, row: int) -> str:
    """``{zone:02d}{N|S}-{size_m}-{col:04d}-{row:04d}``; contains no '_' or '.'."""
    return f"{zone:02d}{'N' if north else 'S'}-{size_m}-{col:04d}-{row:04d}"


def parse_cell_id(cell_id: str) -> CellIndex:
    """Inverse of :func:`format_cell_id`."""
    m = _CELL_RE.match(cell_id)
    if not m:
        raise ValueError(
            f"not a geodelta cell id: {cell_id!r} (expected e.g. '31N-1280-0456-3516')"
        )
    zone, hem, size, col, row = m.groups()
    return CellIndex(int(zone), hem == "N", int(size), int(col), int(row))


def load_aoi(cfg: BuildConfig) -> list[tuple[str, BaseGeometry]]:
    """The AOI as (region name, lon/lat geometry) pairs, sorted by name.

    A GeoJSON AOI must be a FeatureCollection or Feature of (Multi)Polygons, or a bare
    (Multi)Polygon, in lon/lat degrees. An invalid polygon (a self-intersecting "bow-tie", a
    ring that crosses itself) is refused, not repaired: shapely's ``make_valid`` would split it
    into parts the user did not draw, and the plan would silently cover less than meant.

    Raises:
        PlanError: the file is missing, not JSON, not a (Multi)Polygon collection, or a
            feature is empty, invalid or not in lon/lat (names ``aoi.geojson``, the file and
            the feature).
    """
    from shapely.geometry import box

    if cfg.aoi.bbox is not None:
        return [("aoi", box(*cfg.aoi.bbox))]
    assert cfg.aoi.geojson is not None  # guaranteed by AOIConfig
    path = Path(cfg.resolve(cfg.aoi.geojson))
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanError("aoi.geojson", f"file not found: {path}") from None
    except IsADirectoryError:
        raise PlanError("aoi.geojson", f"{path} is a folder, not a GeoJSON file") from None
    except UnicodeDecodeError:
        raise PlanError("aoi.geojson", f"{path} is not UTF-8 text (GeoJSON)") from None
    except json.JSONDecodeError as exc:
        raise PlanError("aoi.geojson", f"{path} is not JSON ({exc})") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise PlanError(
                "aoi.geojson", f"{path}: 'features' of the FeatureCollection is not a list"
            )
    elif kind in ("Feature", "Polygon", "MultiPolygon"):
        features = [data]
    else:
        raise PlanError(
            "aoi.geojson",
            f"{path} is a {kind or type(data).__name__}, need a FeatureCollection or Feature "
            "of (Multi)Polygons, or a (Multi)Polygon",
        )
    regions: list[tuple[str, BaseGeometry]] = []
    for i, feat in enumerate(features):
        geom = _feature_geometry(path, i, feat, cfg.aoi.name_property)
        props = (feat.get("properties") if feat.get("type") == "Feature" else None) or {}
        name = str(
            (props.get(cfg.aoi.name_property) if isinstance(props, dict) else None) or f"region{i}"
        )
        regions.append((name, geom))
    if not regions:
        raise PlanError("aoi.geojson", f"{path} has no features")
    return sorted(regions, key=lambda r: r[0])


def _feature_geometry(path: Path, i: int, feat: object, name_property: str) -> BaseGeometry:
    """The (Multi)Polygon of feature ``i``, refused (naming the file and feature) when unusable."""
    from shapely.geometry import shape
    from shapely.validation import explain_validity

    where = f"{path} feature {i}"
    if not isinstance(feat, dict):
        raise PlanError("aoi.geojson", f"{where} is a {type(feat).__name__}, not a GeoJSON object")
    props = (feat.get("properties") if feat.get("type") == "Feature" else None) or {}
    name = props.get(name_property) if isinstance(props, dict) else None
    if name is not None:
        where += f" ({name!r})"
    raw = feat.get("geometry") if feat.get("type") == "Feature" else feat
    if not isinstance(raw, dict):
        raise PlanError("aoi.geojson", f"{where} has no geometry; need a (Multi)Polygon")
    if raw.get("type") not in ("Polygon", "MultiPolygon"):
        raise PlanError("aoi.geojson", f"{where} is a {raw.get('type')}, need (Multi)Polygon")
    try:
        geom = shape(raw)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise PlanError("aoi.geojson", f"{where}: coordinates cannot be read ({exc})") from None
    if geom.is_empty:
        raise PlanError("aoi.geojson", f"{where} is empty; give it coordinates")
    x0, y0, x1, y1 = geom.bounds
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise PlanError(
            "aoi.geojson",
            f"{where} has coordinates outside lon/lat degrees (bounds {geom.bounds}); "
            "GeoJSON is WGS 84 lon/lat: reproject the file",
        )
    if not geom.is_valid:
        raise PlanError(
            "aoi.geojson",
            f"{where} is not a valid polygon ({explain_validity(geom)}); fix the ring in the "
            "file (e.g. the vertex order of a crossed 'bow-tie'), or repair it with "
            "shapely.make_valid and check the result covers what you meant",
        )
    return geom


def _zones_of(geom: BaseGeometry) -> list[tuple[int, bool]]:
    x0, y0, x1, y1 = geom.bounds
    zones = range(utm_zone(x0), utm_zone(x1) + 1)
    hemis = [h for h, ok in ((True, y1 >= 0), (False, y0 < 0)) if ok]
    return [(z, h) for z in zones for h in hemis]


def plan_jobs(cfg: BuildConfig) -> list[TileJob]:
    """All cells of the AOI as TileJobs, sorted by cell id, splits assigned."""
    import shapely
    from pyproj import Transformer
    from shapely.geometry import box

    res = cfg.grid.resolution_m
    n = cfg.grid.cell_size_px
    size = res * n
    if abs(size - round(size)) > 1e-9:
        raise PlanError("grid", f"cell size must be whole metres (got {size} m)")
    size_m = round(size)
    t0 = cfg.time.t0
    t1 = cfg.time.t1

    jobs: dict[str, TileJob] = {}
    for region, geom in load_aoi(cfg):
        for zone, north in _zones_of(geom):
            epsg = (32600 if north else 32700) + zone
            fwd = Transformer.from_crs(4326, epsg, always_xy=True)
            inv = Transformer.from_crs(epsg, 4326, always_xy=True)
            local = shapely.transform(geom.segmentize(0.001), fwd.transform, interleaved=False)
            x0, y0, x1, y1 = local.bounds
            for col in range(math.floor(x0 / size), math.floor(x1 / size) + 1):
                for row in range(math.floor(y0 / size), math.floor(y1 / size) + 1):
                    cell = box(col * size, row * size, (col + 1) * size, (row + 1) * size)
                    keep = (
                        local.covers(cell) if cfg.grid.keep == "within" else local.intersects(cell)
                    )
                    if not keep:
                        continue
                    clon, clat = inv.transform(cell.centroid.x, cell.centroid.y)
                    if utm_zone(clon) != zone or (clat >= 0) != north:
                        continue  # belongs to the neighbouring zone's grid
                    cid = format_cell_id(zone, north, size_m, col, row)
                    if cid in jobs:
                        continue  # overlapping regions: first region (by name) wins
                    lonlat = shapely.transform(
                        cell.segmentize(size / 8), inv.transform, interleaved=False
                    ).bounds
                    jobs[cid] = TileJob(
                        cell_id=cid,
                        crs=f"EPSG:{epsg}",
                        transform=(res, 0.0, col * size, 0.0, -res, (row + 1) * size),
                        shape=(n, n),
                        bbox_lonlat=(lonlat[0], lonlat[1], lonlat[2], lonlat[3]),
                        t0_window=t0,
                        t1_window=t1,
                        region=region,
                    )
    splits = assign_splits(sorted(jobs), cfg.splits)
    return [jobs[c].model_copy(update={"split": splits[c]}) for c in sorted(jobs)]


def block_id(cell_id: str, block_cells: int) -> str:
    """Id of the block of ``block_cells x block_cells`` cells holding a cell."""
    c = parse_cell_id(cell_id)
    return f"{c.zone:02d}{'N' if c.north else 'S'}-{c.size_m}-{c.col // block_cells}-{c.row // block_cells}"


def split_of_block(block: str, cfg: SplitConfig) -> str:
    """Split of a block: a hash of (seed, block) in [0, 1) against cumulative fractions.

    Splits are walked in sorted name order, never in the order the mapping was written: the
    config hash sorts keys, so two files that differ only in key order must split alike.
    """
    digest = hashlib.sha256(f"{cfg.seed}:{block}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    acc = 0.0
    names = sorted(cfg.fractions)
    for name in names:
        acc += cfg.fractions[name]
        if u < acc:
            return name
    return names[-1]


def assign_splits(cell_ids: list[str], cfg: SplitConfig) -> dict[str, str]:
    """Cell id -> split, by block."""
    return {c: split_of_block(block_id(c, cfg.block_cells), cfg) for c in cell_ids}
