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

A big plan is never built as a list: :func:`iter_columns` / :func:`iter_cells` stream it column
by column, :func:`count_cells` and :func:`count_blocks` count it exactly without cell objects,
the engines get it as blocks of ``runner.block_cells`` squared cells (:mod:`.blocks`, expanded on
the workers) and ``geodelta plan --out`` writes it as GeoParquet (:mod:`.plan_parquet`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geodelta.errors import ConfigError
from geodelta.schemas import BuildConfig, TileJob
from geodelta.schemas.config import SplitConfig

if TYPE_CHECKING:
    from collections.abc import Iterator

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


# -- streaming plan: lazy enumeration, exact counts -------------------------------------------


@dataclass(frozen=True)
class PlanCount:
    """Cells a config plans, per split and per zone (``31N``), exact; ``total`` their sum."""

    total: int
    by_split: dict[str, int]
    by_zone: dict[str, int]


@dataclass(frozen=True)
class CellColumn:
    """The kept cells of one grid column of one zone: ``rows`` in cell-id order, one region."""

    zone: int
    north: bool
    size_m: int
    col: int
    rows: np.ndarray
    regions: list[str]

    @property
    def epsg(self) -> int:
        """EPSG code of the column's UTM zone."""
        return (32600 if self.north else 32700) + self.zone


def _cell_size(cfg: BuildConfig) -> tuple[float, int]:
    size = cfg.grid.resolution_m * cfg.grid.cell_size_px
    if abs(size - round(size)) > 1e-9:
        raise PlanError("grid", f"cell size must be whole metres (got {size} m)")
    return size, round(size)


def _id_key(v: int) -> str:
    return f"{v:04d}"


def _near_zone(seg: BaseGeometry, zone: int, north: bool, size: float) -> BaseGeometry:
    """The segmentized AOI cut to the zone and hemisphere plus a margin (lon/lat), or whole.

    The cut keeps every vertex inside it as it is (GEOS' rectangle clipping adds points only
    on the cut's edges), and the margin (1 degree plus two cells) puts those edges beyond
    every cell whose centre the zone owns, so their covers/intersects tests are unchanged.
    """
    import shapely

    x0, y0, x1, y1 = seg.bounds
    far = min(max(abs(y0), abs(y1)), 89.0)
    m_lon = 1.0 + 2.0 * size / (111_320.0 * math.cos(math.radians(far)))
    m_lat = 1.0 + 2.0 * size / 110_000.0
    if m_lon > 10.0:
        return seg
    west = -180.0 + 6.0 * (zone - 1)
    rect = (west - m_lon, -m_lat if north else -90.0, west + 6.0 + m_lon, 90.0 if north else m_lat)
    if rect[0] <= x0 and rect[1] <= y0 and x1 <= rect[2] and y1 <= rect[3]:
        return seg  # nothing to cut
    cut = shapely.clip_by_rect(seg, *rect)
    return seg if cut.is_empty else cut


class _ZoneSolver:
    """Kept rows per column of one region polygon on one zone's grid, as plan_jobs keeps them.

    Cells touching the polygon's boundary get plan_jobs' own predicate (covers / intersects);
    a run of cells touching no boundary is all in or all out (one point decides). The zone
    test (the cell centre's zone and hemisphere) holds on an interval of a column's rows
    (longitude and latitude are monotonic in northing at fixed easting), so ~65 rows are
    transformed, then every row only where two of them disagree.

    Only the part of the (segmentized) AOI within a margin of the zone and hemisphere is kept
    (:func:`_near_zone`): the cells the zone owns see the same polygon edges, and memory and
    time follow the zone's share of the AOI's boundary, not all of it.
    """

    def __init__(self, geom: BaseGeometry, zone: int, north: bool, size: float, keep: str) -> None:
        import shapely
        from pyproj import Transformer
        from shapely.geometry import box

        self.zone, self.north, self.size, self.keep = zone, north, size, keep
        epsg = (32600 if north else 32700) + zone
        fwd = Transformer.from_crs(4326, epsg, always_xy=True)
        self.inv = Transformer.from_crs(epsg, 4326, always_xy=True)
        near = _near_zone(geom.segmentize(0.001), zone, north, size)
        local = shapely.transform(near, fwd.transform, interleaved=False)
        shapely.prepare(local)
        self.local = local
        x0, y0, x1, y1 = local.bounds
        c0, c1 = math.floor(x0 / size), math.floor(x1 / size)
        r0, r1 = math.floor(y0 / size), math.floor(y1 / size)
        # restrict to cells whose centre can be in this zone (1 degree of margin)
        lo = -180.0 + 6.0 * (zone - 1) - 1.0
        g0, g1 = geom.bounds[1] - 1.0, geom.bounds[3] + 1.0
        g0, g1 = (max(g0, -1.0), min(g1, 89.0)) if north else (max(g0, -89.0), min(g1, 1.0))
        if g0 < g1:
            strip = box(max(lo, -180.0), g0, min(lo + 8.0, 180.0), g1).segmentize(0.05)
            sx0, sy0, sx1, sy1 = shapely.transform(strip, fwd.transform, interleaved=False).bounds
            c0, c1 = max(c0, math.floor(sx0 / size) - 1), min(c1, math.floor(sx1 / size) + 1)
            r0, r1 = max(r0, math.floor(sy0 / size) - 1), min(r1, math.floor(sy1 / size) + 1)
        else:
            c1 = c0 - 1
        # rows whose centre is in the wrong hemisphere never count (margin: half a cell)
        if north:
            r0 = max(r0, 0)
        else:
            r1 = min(r1, math.floor(10_000_000.0 / size) - 1)
        self.c0, self.c1, self.r0, self.r1 = c0, c1, r0, r1
        self._boundary = self._boundary_cells()

    def _boundary_cells(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """col -> (rows, kept) of the cells a boundary segment may touch, kept by plan_jobs' test."""
        import shapely

        s = self.size
        parts = shapely.get_parts(self.local)
        rings = [r for p in parts for r in (p.exterior, *p.interiors)]
        segs = []
        for ring in rings:
            xy = shapely.get_coordinates(ring)
            segs.append(np.hstack([xy[:-1], xy[1:]]))
        seg = np.vstack(segs) if segs else np.zeros((0, 4))
        # a long segment (an edge of the lon/lat cut) in pieces of at most half a cell: the
        # boxes of the pieces hold the cells the segment passes, not its whole bounding box
        steps = np.ceil(
            np.maximum(np.abs(seg[:, 2] - seg[:, 0]), np.abs(seg[:, 3] - seg[:, 1])) / (s / 2)
        ).astype(np.int64)
        long = steps > 1
        if long.any():
            k = steps[long]
            owner = np.repeat(np.flatnonzero(long), k)
            i = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
            t0, t1 = i / np.repeat(k, k), (i + 1) / np.repeat(k, k)
            a, d = seg[owner, :2], seg[owner, 2:] - seg[owner, :2]
            pieces = np.hstack([a + t0[:, None] * d, a + t1[:, None] * d])
            seg = np.vstack([seg[~long], pieces])
        xmin = np.minimum(seg[:, 0], seg[:, 2])
        xmax = np.maximum(seg[:, 0], seg[:, 2])
        ymin = np.minimum(seg[:, 1], seg[:, 3])
        ymax = np.maximum(seg[:, 1], seg[:, 3])

        def span(vmin: np.ndarray, vmax: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            lo = np.floor(vmin / s).astype(np.int64)
            lo -= (vmin - lo * s) <= 1e-6 * s  # touching the edge below: that cell too
            hi = np.floor(vmax / s).astype(np.int64)
            hi += ((hi + 1) * s - vmax) <= 1e-6 * s
            return lo, hi

        cl, ch = span(xmin, xmax)
        rl, rh = span(ymin, ymax)
        cl, ch = np.maximum(cl, self.c0), np.minimum(ch, self.c1)
        rl, rh = np.maximum(rl, self.r0), np.minimum(rh, self.r1)
        ok = (cl <= ch) & (rl <= rh)
        cl, ch, rl, rh = cl[ok], ch[ok], rl[ok], rh[ok]
        nc, nr = ch - cl + 1, rh - rl + 1
        n = nc * nr
        idx = np.repeat(np.arange(len(n)), n)
        k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        cols = cl[idx] + k // nr[idx]
        rows = rl[idx] + k % nr[idx]
        span_r = self.r1 - self.r0 + 2
        code = np.unique((cols - self.c0) * span_r + (rows - self.r0))
        cols, rows = code // span_r + self.c0, code % span_r + self.r0
        boxes = shapely.box(cols * s, rows * s, (cols + 1) * s, (rows + 1) * s)
        pred = shapely.covers if self.keep == "within" else shapely.intersects
        kept = pred(self.local, boxes)
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if len(cols):
            cuts = np.flatnonzero(np.diff(cols)) + 1
            for cs, rs, ks in zip(
                np.split(cols, cuts), np.split(rows, cuts), np.split(kept, cuts), strict=True
            ):
                out[int(cs[0])] = (rs, ks)
        return out

    def columns(self) -> list[int]:
        """The columns to visit, in cell-id order."""
        return sorted(range(self.c0, self.c1 + 1), key=_id_key)

    def rows(self, col: int) -> np.ndarray:
        """Kept rows of a column (numeric order): plan_jobs' test and zone ownership."""
        import shapely

        s = self.size
        brows, bkept = self._boundary.get(col, (np.zeros(0, np.int64), np.zeros(0, bool)))
        # runs of rows between boundary cells: all in or all out
        starts = np.concatenate([[self.r0], brows + 1])
        ends = np.concatenate([brows - 1, [self.r1]])
        ok = starts <= ends
        starts, ends = starts[ok], ends[ok]
        inside = shapely.contains_xy(
            self.local, np.full(len(starts), (col + 0.5) * s), (starts + 0.5) * s
        )
        pieces = [np.arange(a, b + 1) for a, b in zip(starts[inside], ends[inside], strict=True)]
        pieces.append(brows[bkept])
        rows = np.sort(np.concatenate(pieces)).astype(np.int64)
        if not len(rows):
            return rows
        return self._owned(col, rows)

    def _owned(self, col: int, rows: np.ndarray) -> np.ndarray:
        """:meth:`_owned_all`, testing ~65 evenly spaced rows, then every row only between two
        samples that disagree (ownership holds on an interval of a column's rows)."""
        n = len(rows)
        if n <= 130:
            return self._owned_all(col, rows)
        k = np.unique(np.linspace(0, n - 1, 65).round().astype(np.int64))
        ok = self._owned_mask(col, rows[k])
        if ok.all():
            return rows
        if not ok.any():
            return self._owned_all(col, rows)
        keep = np.zeros(n, bool)
        for i in range(len(k) - 1):
            a, b = int(k[i]), int(k[i + 1])
            if ok[i] and ok[i + 1]:
                keep[a : b + 1] = True
            elif ok[i] != ok[i + 1]:
                keep[a : b + 1] = self._owned_mask(col, rows[a : b + 1])
        return rows[keep]

    def _owned_all(self, col: int, rows: np.ndarray) -> np.ndarray:
        """Rows whose cell centre is in this zone and hemisphere (plan_jobs' test)."""
        return rows[self._owned_mask(col, rows)]

    def _owned_mask(self, col: int, rows: np.ndarray) -> np.ndarray:
        """Whether each row's cell centre is in this zone and hemisphere (plan_jobs' test).

        The centre is taken as ``(col + 0.5) * size``, one transform for all rows; a centre
        within 1e-6 degrees of a zone edge or the equator, where GEOS' centroid of the cell's
        box could round the other way, is decided on that centroid, as plan_jobs does.
        """
        s = self.size
        x = np.full(len(rows), (col + 0.5) * s)
        y = (rows + 0.5) * s
        clon, clat = (np.asarray(v, dtype=float) for v in self.inv.transform(x, y))
        edge = (clon + 180.0) / 6.0
        near = (np.abs(edge - np.round(edge)) < 1e-6 / 6.0) | (np.abs(clat) < 1e-6)
        if near.any():
            import shapely

            r = rows[near]
            cen = shapely.centroid(shapely.box(col * s, r * s, (col + 1) * s, (r + 1) * s))
            lo, la = self.inv.transform(shapely.get_x(cen), shapely.get_y(cen))
            clon[near], clat[near] = lo, la
        zones = np.clip(np.floor((clon + 180.0) / 6.0) + 1, 1, 60)
        return (zones == self.zone) & ((clat >= 0) == self.north)


def iter_columns(cfg: BuildConfig) -> Iterator[CellColumn]:
    """The plan's cells, column by column, in cell-id order (the order of :func:`plan_jobs`).

    Lazy: one zone's boundary cells and one column's rows in memory at a time. A cell claimed
    by two regions goes to the first region by name, as in plan_jobs.
    """
    size, size_m = _cell_size(cfg)
    regions = load_aoi(cfg)
    keys = sorted({zn for _, g in regions for zn in _zones_of(g)}, key=lambda z: (z[0], not z[1]))
    for zone, north in keys:
        solvers = [
            (name, _ZoneSolver(g, zone, north, size, cfg.grid.keep))
            for name, g in regions
            if (zone, north) in _zones_of(g)
        ]
        cols = sorted({c for _, sv in solvers for c in range(sv.c0, sv.c1 + 1)}, key=_id_key)
        for col in cols:
            got = [(name, sv.rows(col)) for name, sv in solvers if sv.c0 <= col <= sv.c1]
            got = [(name, r) for name, r in got if len(r)]
            if not got:
                continue
            if len(got) == 1:
                rows, names = got[0][1], [got[0][0]] * len(got[0][1])
            else:  # first region by name wins a shared cell
                owner: dict[int, str] = {}
                for name, r in got:
                    for v in r.tolist():
                        owner.setdefault(v, name)
                rows = np.array(sorted(owner), dtype=np.int64)
                names = [owner[v] for v in rows.tolist()]
            if rows.max() >= 10_000:  # ids sort as text
                order = sorted(range(len(rows)), key=lambda i: _id_key(int(rows[i])))
                rows, names = rows[order], [names[i] for i in order]
            yield CellColumn(zone, north, size_m, col, rows, names)


def iter_cells(cfg: BuildConfig) -> Iterator[tuple[str, str, str]]:
    """(cell id, split, region) of every planned cell, lazily, in plan_jobs' order.

    Regions interleave within a column only when two regions share the column; the order is
    plan_jobs' order per region and column, merged by cell id.
    """
    for batch in iter_column_batches(cfg, 1):
        yield from zip(batch["cell_id"], batch["split"], batch["region"], strict=True)


def _block_splits(
    cfg: BuildConfig, zone: int, north: bool, size_m: int, bcol: int, brows: np.ndarray
) -> list[str]:
    """:func:`split_of_block` of the blocks ``(bcol, b)`` for ``b`` in ``brows`` (the same
    hash and the same float thresholds, walked by bisection)."""
    from bisect import bisect_right

    sc = cfg.splits
    names = sorted(sc.fractions)
    acc, thresholds = 0.0, []
    for name in names:
        acc += sc.fractions[name]
        thresholds.append(acc)
    names.append(names[-1])  # u beyond the last threshold (rounding): the last split
    sha, from_bytes, scale = hashlib.sha256, int.from_bytes, 2**64
    prefix = f"{sc.seed}:{zone:02d}{'N' if north else 'S'}-{size_m}-{bcol}-"
    return [
        names[
            bisect_right(thresholds, from_bytes(sha(f"{prefix}{b}".encode()).digest()[:8]) / scale)
        ]
        for b in brows.tolist()
    ]


def iter_column_batches(cfg: BuildConfig, min_cells: int = 65_536) -> Iterator[dict[str, list]]:
    """The plan in batches of whole columns (at least ``min_cells`` cells, but the last).

    Each batch maps ``cell_id``, ``split``, ``region``, ``zone``, ``crs``, ``col``, ``row``,
    ``epsg`` to equal-length lists (``col``/``row``/``epsg`` as numpy arrays).
    """
    bc = cfg.splits.block_cells
    cache: dict[tuple[int, bool, int], dict[int, str]] = {}
    batch: dict[str, list] = _empty_batch()
    n = 0
    for cc in iter_columns(cfg):
        key = (cc.zone, cc.north, cc.col // bc)
        if key not in cache:
            cache.clear()  # block columns arrive together: one in memory
            cache[key] = {}
        known = cache[key]
        brows = cc.rows // bc
        new = np.unique(brows[~np.isin(brows, np.fromiter(known, np.int64, len(known)))])
        for b, sp in zip(
            new.tolist(), _block_splits(cfg, *key[:2], cc.size_m, key[2], new), strict=True
        ):
            known[b] = sp
        h = "N" if cc.north else "S"
        zn = f"{cc.zone:02d}{h}"
        prefix = f"{zn}-{cc.size_m}-{cc.col:04d}-"
        batch["cell_id"].extend(f"{prefix}{r:04d}" for r in cc.rows.tolist())
        batch["split"].extend(known[b] for b in brows.tolist())
        batch["region"].extend(cc.regions)
        batch["zone"].extend([zn] * len(cc.rows))
        batch["crs"].extend([f"EPSG:{cc.epsg}"] * len(cc.rows))
        batch["col"].append(np.full(len(cc.rows), cc.col, np.int64))
        batch["row"].append(cc.rows)
        batch["epsg"].append(np.full(len(cc.rows), cc.epsg, np.int64))
        n += len(cc.rows)
        if n >= min_cells:
            yield _finish(batch)
            batch, n = _empty_batch(), 0
    if n:
        yield _finish(batch)


def _empty_batch() -> dict[str, list]:
    return {k: [] for k in ("cell_id", "split", "region", "zone", "crs", "col", "row", "epsg")}


def _finish(batch: dict[str, list]) -> dict[str, list]:
    for k in ("col", "row", "epsg"):
        batch[k] = np.concatenate(batch[k]) if batch[k] else np.zeros(0, np.int64)  # type: ignore[assignment]
    return batch


def count_cells(cfg: BuildConfig) -> PlanCount:
    """Cells per split and per zone, exact, without cell objects: rows per column, one
    hash per block of cells."""
    bc = cfg.splits.block_cells
    by_split: dict[str, int] = {}
    by_zone: dict[str, int] = {}
    pending: dict[tuple[int, bool, int, int], list[np.ndarray]] = {}

    def flush() -> None:
        for (zone, north, size_m, bcol), parts in pending.items():
            brows, counts = np.unique(np.concatenate(parts) // bc, return_counts=True)
            for sp, c in zip(
                _block_splits(cfg, zone, north, size_m, bcol, brows), counts.tolist(), strict=True
            ):
                by_split[sp] = by_split.get(sp, 0) + c
        pending.clear()

    for cc in iter_columns(cfg):
        key = (cc.zone, cc.north, cc.size_m, cc.col // bc)
        if key not in pending:
            flush()
        pending.setdefault(key, []).append(cc.rows)
        zn = f"{cc.zone:02d}{'N' if cc.north else 'S'}"
        by_zone[zn] = by_zone.get(zn, 0) + len(cc.rows)
    flush()
    return PlanCount(
        sum(by_zone.values()), dict(sorted(by_split.items())), dict(sorted(by_zone.items()))
    )


def count_blocks(cfg: BuildConfig, block_cells: int | None = None) -> int:
    """Non-empty plan blocks, exact, without cell objects.

    A block is the square of ``block_cells x block_cells`` cells (default
    ``runner.block_cells``) of one UTM zone's grid holding cell ``(col, row)`` at
    ``(col // block_cells, row // block_cells)``; it counts when at least one planned cell lies
    in it. Cells of several AOI regions may share a block. The engines distribute one element
    per block and the pair stage runs one STAC search per block, collection and time window.
    """
    bc = cfg.runner.block_cells if block_cells is None else block_cells
    total = 0
    zone_key: tuple[int, bool] | None = None
    pending: dict[int, list[np.ndarray]] = {}

    def flush() -> int:
        n = sum(len(np.unique(np.concatenate(parts))) for parts in pending.values())
        pending.clear()
        return n

    for cc in iter_columns(cfg):
        if (cc.zone, cc.north) != zone_key:
            total += flush()
            zone_key = (cc.zone, cc.north)
        pending.setdefault(cc.col // bc, []).append(np.unique(cc.rows // bc))
    return total + flush()
