"""The plan as a GeoParquet file, streamed: :func:`write_plan` (``geodelta plan --out``).

Row groups of whole grid columns (:func:`~geodelta.pipelines.stages.plan.iter_column_batches`);
each cell's lon/lat box equals the one ``plan_jobs`` gives its TileJob, and its geometry is the
lon/lat quadrilateral of its corners, as WKB built in numpy.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from geodelta.pipelines.stages.plan import _cell_size, iter_column_batches
from geodelta.schemas import BuildConfig

__all__ = ["GEO_METADATA", "to_lonlat", "write_plan"]


def _bbox_and_corners(
    col: np.ndarray, row: np.ndarray, epsg: int, size: float
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) lon/lat bboxes equal to plan_jobs' (the cell segmentized by size/8, transformed)
    and (n, 5, 2) lon/lat corner rings.

    Off the central meridian every extreme of a cell lies on a corner (longitude and latitude
    are monotonic along its edges), so 4 corners give plan_jobs' bbox; cells within a cell of
    the central meridian take the segmentized ring.
    """
    import shapely

    inv = to_lonlat(epsg)
    xs = np.stack([(col + 1) * size, (col + 1) * size, col * size, col * size], 1)
    ys = np.stack([row * size, (row + 1) * size, (row + 1) * size, row * size], 1)
    lon, lat = inv.transform(xs.ravel(), ys.ravel())
    lon, lat = np.asarray(lon).reshape(-1, 4), np.asarray(lat).reshape(-1, 4)
    bbox = np.stack([lon.min(1), lat.min(1), lon.max(1), lat.max(1)], 1)
    lon, lat = np.hstack([lon, lon[:, :1]]), np.hstack([lat, lat[:, :1]])  # closed rings
    near = np.flatnonzero((col * size <= 500_000.0 + size) & ((col + 1) * size >= 500_000.0 - size))
    if len(near):
        c, r = col[near], row[near]
        g = shapely.segmentize(
            shapely.box(c * size, r * size, (c + 1) * size, (r + 1) * size), size / 8
        )
        xy = shapely.get_coordinates(g)
        k = len(xy) // len(near)
        lo, la = inv.transform(xy[:, 0], xy[:, 1])
        lo, la = np.asarray(lo).reshape(-1, k), np.asarray(la).reshape(-1, k)
        bbox[near] = np.stack([lo.min(1), la.min(1), lo.max(1), la.max(1)], 1)
    return bbox, np.stack([lon, lat], 2)


@lru_cache(maxsize=16)
def to_lonlat(epsg: int) -> Any:
    """The pyproj Transformer from a UTM zone's EPSG code to lon/lat (made once per code)."""
    from pyproj import Transformer

    return Transformer.from_crs(epsg, 4326, always_xy=True)


#: One WKB Polygon of one 5-point ring, little-endian (what shapely.to_wkb writes on x86).
_WKB_POLYGON = np.dtype(
    [("order", "u1"), ("kind", "<u4"), ("rings", "<u4"), ("points", "<u4"), ("xy", "<f8", (10,))]
)


def _polygon_wkb(ring: np.ndarray) -> Any:
    """A pyarrow binary array of the WKB polygons of ``(n, 5, 2)`` closed rings, built in
    numpy (byte for byte ``shapely.to_wkb(shapely.polygons(ring))`` on a little-endian host)."""
    import pyarrow as pa

    n = len(ring)
    rec = np.empty(n, _WKB_POLYGON)
    rec["order"], rec["kind"], rec["rings"], rec["points"] = 1, 3, 1, 5
    rec["xy"] = ring.reshape(n, 10)
    offsets = np.arange(n + 1, dtype=np.int32) * _WKB_POLYGON.itemsize
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(rec.tobytes())]
    )


GEO_METADATA = {
    "version": "1.0.0",
    "primary_column": "geometry",
    "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": "OGC:CRS84"}},
}


def write_plan(cfg: BuildConfig, out: str | Path, row_group_cells: int = 16_384) -> int:
    """Stream the plan to a GeoParquet file, one row group per batch of columns; cells written.

    A batch is whole grid columns of at least ``row_group_cells`` cells: its Python strings,
    lon/lat boxes, WKB and Arrow table are what the writer holds at a time (at 16 k cells the
    peak RSS of a 5 M-cell plan stays within ~10 MB of a 50 k-cell one, benchmarks/bench_plan.py).

    Columns: cell_id, split, region, zone, crs, lon_min, lat_min, lon_max, lat_max (plan_jobs'
    bbox_lonlat) and geometry (WKB lon/lat cell quadrilateral, OGC:CRS84).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    size, _ = _cell_size(cfg)
    schema = pa.schema(
        [
            ("cell_id", pa.string()),
            ("split", pa.string()),
            ("region", pa.string()),
            ("zone", pa.string()),
            ("crs", pa.string()),
            ("lon_min", pa.float64()),
            ("lat_min", pa.float64()),
            ("lon_max", pa.float64()),
            ("lat_max", pa.float64()),
            ("geometry", pa.binary()),
        ],
        metadata={"geo": json.dumps(GEO_METADATA)},
    )
    n = 0
    with pq.ParquetWriter(str(out), schema) as writer:
        for b in iter_column_batches(cfg, row_group_cells):
            bbox = np.zeros((len(b["col"]), 4))
            ring = np.zeros((len(b["col"]), 5, 2))
            for epsg in np.unique(b["epsg"]).tolist():
                m = b["epsg"] == epsg
                bbox[m], ring[m] = _bbox_and_corners(b["col"][m], b["row"][m], epsg, size)
            cols = [b["cell_id"], b["split"], b["region"], b["zone"], b["crs"]]
            arrays = [pa.array(c, pa.string()) for c in cols]
            arrays += [pa.array(bbox[:, i]) for i in range(4)]
            arrays.append(_polygon_wkb(ring))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            n += len(b["col"])
    return n
