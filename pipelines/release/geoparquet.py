"""GeoParquet for a release's tables: each cell's footprint, the ``geo`` metadata, member offsets.

``samples.parquet`` and ``quarantine.parquet`` are GeoParquet 1.1 (https://geoparquet.org):
a ``geometry`` column of WKB polygons (the cell's footprint in lon/lat, OGC:CRS84, the
default CRS of the spec, so no CRS is written) and the ``geo`` key of the file metadata
naming it, with its geometry types and the bbox of all rows. geopandas
(``geopandas.read_parquet``) and DuckDB spatial (``ST_GeomFromWKB(geometry)``) read them.

A sample's footprint is its cell: the UTM square of the cell id, its edges densified (8
segments each, as the plan densifies them for ``bbox_lonlat``) and reprojected to lon/lat,
oriented counter-clockwise. The WKB is little-endian 2-D: the same cell gives the same bytes
anywhere.

:func:`member_offsets` reads back a written shard's tar headers: for each sample and member,
the byte offset of its data in the tar and its size, so a reader can seek (or send an HTTP
range request) to one member of one sample without reading the shard.
"""

from __future__ import annotations

import json
import tarfile
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from geodelta.pipelines.release.layout import parquet_bytes

__all__ = [
    "GEOMETRY",
    "MEMBER_OFFSETS_TYPE",
    "cell_footprint_wkb",
    "geo_metadata",
    "geoparquet_bytes",
    "member_offsets",
]

#: The geometry column of both tables.
GEOMETRY = "geometry"
#: ``member_offsets`` column type: one ``{name, offset, size}`` per member, in tar order.
MEMBER_OFFSETS_TYPE = pa.list_(
    pa.struct([("name", pa.string()), ("offset", pa.int64()), ("size", pa.int64())])
)
#: Segments per cell edge in the footprint (as the plan densifies cells for ``bbox_lonlat``).
_SEGMENTS = 8


#: Per thread: EPSG code -> the pyproj Transformer to lon/lat (building one costs ~0.15 ms,
#: a table has a row per cell; a Transformer is not shared between threads).
_TO_LONLAT = threading.local()


def _to_lonlat(epsg: int) -> Any:
    from pyproj import Transformer

    cache: dict[int, Any] = _TO_LONLAT.__dict__.setdefault("by_epsg", {})
    if epsg not in cache:
        cache[epsg] = Transformer.from_crs(epsg, 4326, always_xy=True)
    return cache[epsg]


@lru_cache(maxsize=4096)
def cell_footprint_wkb(cell_id: str) -> bytes | None:
    """The lon/lat footprint of a cell as little-endian 2-D WKB; None for a non-cell id.

    Args:
        cell_id: a geodelta cell id (``31N-1280-0573-3899``).
    """
    import shapely
    from shapely.geometry import box
    from shapely.geometry.polygon import orient

    from geodelta.pipelines.stages.plan import parse_cell_id

    try:
        c = parse_cell_id(cell_id)
    except ValueError:
        return None
    size = float(c.size_m)
    cell = box(c.col * size, c.row * size, (c.col + 1) * size, (c.row + 1) * size)
    inv = _to_lonlat(c.epsg)
    lonlat = shapely.transform(cell.segmentize(size / _SEGMENTS), inv.transform, interleaved=False)
    return bytes(shapely.to_wkb(orient(lonlat, 1.0), byte_order=1, output_dimension=2))


def geo_metadata(wkbs: Iterable[bytes | None]) -> dict[str, Any]:
    """The GeoParquet 1.1 ``geo`` metadata of a table whose ``geometry`` column holds ``wkbs``."""
    import shapely

    geoms = [shapely.from_wkb(b) for b in wkbs if b is not None]
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": sorted({g.geom_type for g in geoms}) or ["Polygon"],
        "orientation": "counterclockwise",
        "edges": "planar",
    }
    if geoms:
        bounds = [g.bounds for g in geoms]
        column["bbox"] = [
            min(b[0] for b in bounds),
            min(b[1] for b in bounds),
            max(b[2] for b in bounds),
            max(b[3] for b in bounds),
        ]
    return {"version": "1.1.0", "primary_column": GEOMETRY, "columns": {GEOMETRY: column}}


def geoparquet_bytes(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> bytes:
    """``rows`` as a GeoParquet file (the release's parquet layout plus the ``geo`` metadata).

    Args:
        rows: one dict per row with every field of ``schema``; ``geometry`` is WKB or None.
        schema: the table schema (it has a binary ``geometry`` field).
    """
    columns = {name: [row[name] for row in rows] for name in schema.names}
    geo = json.dumps(geo_metadata(columns[GEOMETRY]), sort_keys=True, separators=(",", ":"))
    table = pa.Table.from_pydict(columns, schema=schema.with_metadata({"geo": geo}))
    return parquet_bytes(table)


def member_offsets(shard: Path) -> dict[str, list[dict[str, Any]]]:
    """Each sample's members in a written shard: key -> ``[{name, offset, size}]`` in tar order.

    ``offset`` is the byte offset of the member's data in the tar (after its header), ``size``
    its length: ``f.seek(offset); f.read(size)`` gives the member's bytes.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    with tarfile.open(shard, mode="r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, _, name = info.name.partition(".")
            out.setdefault(key, []).append(
                {"name": name, "offset": info.offset_data, "size": info.size}
            )
    return out
