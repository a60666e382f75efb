"""Change masks and the facts every caption and answer rests on: the label stage's maths.

Pure functions: arrays in, records out, shared by every label source
(:mod:`geodelta.pipelines.stages.labels`) and by the fusion with the baseline model
(:mod:`geodelta.pipelines.stages.fuse`). Reading the land-cover maps or the change-mask asset
(and mapping product legends onto the geodelta classes) happens in ``sources/``; this module
only sees geodelta class indices (``uint8``, 0 = unknown) or raw change-mask values on the
cell grid.

Conventions:
- a pixel is *valid* when the label says something about it on both dates;
- the change mask holds transition codes (:func:`geodelta.schemas.classes.transition_code`),
  ``255`` for a binary change label, ``0`` for no change (and for invalid pixels);
- changed regions are 8-connected; regions smaller than ``min_region_px`` are removed before
  any fact is computed, so facts and the stored mask always agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from geodelta.errors import StageError
from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import ChangeComponent, ChangeFacts, TransitionStat
from geodelta.schemas.classes import BINARY_CHANGE, CLASSES, N_CLASSES, decode_transition
from geodelta.schemas.records import (
    POSITION_GRID,
    Region,
    Transform,
    component_box_px,
    normalised_box,
)

__all__ = [
    "POSITION_WORDS",
    "LabelError",
    "binary_mask",
    "check_grid",
    "clean_mask",
    "compute_facts",
    "pixel_area",
    "position_word",
    "region_image",
    "region_records",
    "transition_mask",
]

#: Position words of the 3x3 grid of a tile, row by row from the north-west corner.
POSITION_WORDS: tuple[tuple[str, str, str], ...] = POSITION_GRID

_EIGHT = np.ones((3, 3), dtype=bool)


class LabelError(StageError):
    """Label arrays that cannot be turned into a change mask; says which array and why."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


def _check_same_shape(
    a: np.ndarray, b: np.ndarray, names: tuple[str, str], key: str | None = None
) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise LabelError(
            f"{names[0]} and {names[1]} must be 2-D arrays of the same shape "
            f"(actual {names[0]}={a.shape}, {names[1]}={b.shape})",
            key=key,
        )


def transition_mask(lc_before: np.ndarray, lc_after: np.ndarray) -> np.ndarray:
    """Transition codes of two land-cover maps.

    Args:
        lc_before: (H, W) geodelta class indices at t0, 0 = unknown.
        lc_after: (H, W) geodelta class indices at t1, 0 = unknown.

    Returns:
        (H, W) uint8: ``transition_code(before, after)`` where both classes are known and
        differ, else 0.

    Raises:
        LabelError: shapes differ, or a value is not a geodelta class index.
    """
    _check_same_shape(lc_before, lc_after, ("lc_before", "lc_after"))
    a = np.asarray(lc_before).astype(np.int32)
    b = np.asarray(lc_after).astype(np.int32)
    for name, arr in (("lc_before", a), ("lc_after", b)):
        if arr.size and (arr.min() < 0 or arr.max() > N_CLASSES):
            raise LabelError(
                f"{name} holds values outside the geodelta class indices "
                f"(min=0, max={N_CLASSES}, actual {arr.min()}..{arr.max()}); map the product "
                "legend onto geodelta classes first"
            )
    changed = (a > 0) & (b > 0) & (a != b)
    codes = 1 + (a - 1) * N_CLASSES + (b - 1)
    return np.where(changed, codes, 0).astype(np.uint8)


def binary_mask(
    values: np.ndarray, *, change_values: Sequence[int], nodata_values: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Binary change mask of a change-mask asset (e.g. OSCD: 1 = no change, 2 = change).

    Args:
        values: (H, W) raw values of the change-mask asset.
        change_values: values meaning "changed" (config ``labels.change_values``).
        nodata_values: values meaning "no label" (config ``labels.nodata_values``).

    Returns:
        ``(mask, valid)``: uint8 mask, ``BINARY_CHANGE`` (255) where changed and valid, else 0;
        bool array, True where the value is not a nodata value.

    Raises:
        LabelError: ``values`` is not 2-D, or a value is both a change and a nodata value.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise LabelError(f"a change mask must be 2-D (actual shape {values.shape})")
    overlap = set(change_values) & set(nodata_values)
    if overlap:
        raise LabelError(
            f"values {sorted(overlap)} are both change and nodata values; fix "
            "labels.change_values / labels.nodata_values"
        )
    valid = ~np.isin(values, list(nodata_values))
    changed = np.isin(values, list(change_values)) & valid
    mask = np.where(changed, BINARY_CHANGE, 0).astype(np.uint8)
    return mask, valid


def clean_mask(mask: np.ndarray, min_region_px: int) -> np.ndarray:
    """Remove 8-connected regions of changed pixels (``mask > 0``) smaller than ``min_region_px``.

    Args:
        mask: (H, W) change mask.
        min_region_px: smallest region kept, in pixels (>= 1; 1 keeps everything).

    Returns:
        A copy of ``mask`` (same dtype) with the small regions set to 0.
    """
    if min_region_px < 1:
        raise LabelError(
            f"min_region_px must be >= 1 (actual {min_region_px}); fix labels.min_region_px"
        )
    out = np.array(mask, copy=True)
    if min_region_px == 1 or not out.any():
        return out
    labels, n = ndimage.label(out > 0, structure=_EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = sizes < min_region_px
    small[0] = False
    out[small[labels]] = 0
    return out


def position_word(row: float, col: float, shape: tuple[int, int]) -> str:
    """Which cell of a 3x3 grid over the tile holds a point.

    Pixel ``(r, c)`` covers ``[r - 0.5, r + 0.5]`` in these coordinates, so the tile spans
    ``[-0.5, H - 0.5]`` rows; each third of that span is one band (north / middle / south,
    likewise west / middle / east), a point on a boundary belongs to the band after it.
    A 12-row tile thus has rows 0-3 north, 4-7 middle, 8-11 south. Row 0 is north.

    Args:
        row: row coordinate (e.g. a centroid), in pixels.
        col: column coordinate, in pixels.
        shape: (height, width) of the tile.

    Returns:
        One of "north-west", "north", "north-east", "west", "centre", "east",
        "south-west", "south", "south-east".

    Raises:
        LabelError: the shape is empty or the point lies outside the tile.
    """
    h, w = shape
    if h < 1 or w < 1:
        raise LabelError(f"tile shape must be positive (actual {shape})")
    if not (-0.5 <= row <= h - 0.5 and -0.5 <= col <= w - 0.5):
        raise LabelError(f"point (row={row}, col={col}) lies outside a tile of shape {shape}")

    def band(x: float, n: int) -> int:
        t = 3.0 * (x + 0.5)
        return 2 if t >= 2 * n else 1 if t >= n else 0

    return POSITION_WORDS[band(row, h)][band(col, w)]


def _class_counts(lc: np.ndarray, where: np.ndarray) -> dict[str, int]:
    counts = np.bincount(lc[where].astype(np.int64), minlength=N_CLASSES + 1)
    return {CLASSES[i]: int(counts[i]) for i in range(1, N_CLASSES + 1) if counts[i] > 0}


def _region_order(labels: np.ndarray, n: int) -> list[int]:
    """The labels of ``ndimage.label`` in region-id order: by decreasing size, ties by the
    first pixel in raster order (region id ``k`` is ``order[k - 1]``)."""
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n + 1)
    nz = np.flatnonzero(flat)
    _, first = np.unique(flat[nz], return_index=True)
    return sorted(range(1, n + 1), key=lambda i: (-int(sizes[i]), int(nz[first[i - 1]])))


def region_image(mask: np.ndarray) -> np.ndarray:
    """The instance image of a change mask: 0 = no change, k = region id (``regions.png``).

    Regions are the 8-connected regions of ``mask > 0`` with the ids of the facts'
    components (:func:`compute_facts`): by decreasing size, ties by the first pixel in raster
    order, so the same mask gives the same ids on every rebuild.

    Args:
        mask: (H, W) change mask (already cleaned, as stored in ``mask.png``).

    Returns:
        (H, W) uint16 region ids.

    Raises:
        LabelError: more than 65535 regions (uint16).
    """
    labels, n = ndimage.label(np.asarray(mask) > 0, structure=_EIGHT)
    if n > np.iinfo(np.uint16).max:
        raise LabelError(f"too many regions for a uint16 regions.png (max=65535, actual={n})")
    lut = np.zeros(n + 1, dtype=np.uint16)
    for new_id, i in enumerate(_region_order(labels, n), start=1):
        lut[i] = new_id
    return lut[labels]


def _components(mask: np.ndarray, pixel_area_m2: float) -> tuple[ChangeComponent, ...]:
    labels, n = ndimage.label(mask > 0, structure=_EIGHT)
    if n == 0:
        return ()
    rows, cols = np.nonzero(labels)  # row-major order
    lab = labels[rows, cols]
    codes = mask[rows, cols].astype(np.int64)
    sizes = np.bincount(lab, minlength=n + 1)
    sum_r = np.bincount(lab, weights=rows, minlength=n + 1)
    sum_c = np.bincount(lab, weights=cols, minlength=n + 1)
    # dominant code per region: most pixels, ties -> smallest code
    pairs, pair_px = np.unique(lab * 256 + codes, return_counts=True)
    pair_lab, pair_code = pairs // 256, pairs % 256
    ranked = np.lexsort((pair_code, -pair_px, pair_lab))
    is_first = np.r_[True, pair_lab[ranked][1:] != pair_lab[ranked][:-1]]
    dominant = np.zeros(n + 1, dtype=np.int64)
    dominant[pair_lab[ranked][is_first]] = pair_code[ranked][is_first]
    boxes = ndimage.find_objects(labels)
    order = _region_order(labels, n)
    out = []
    for new_id, i in enumerate(order, start=1):
        code = int(dominant[i])
        classes = decode_transition(code) or ("unknown", "unknown")
        centroid = (float(sum_r[i] / sizes[i]), float(sum_c[i] / sizes[i]))
        rs, cs = boxes[i - 1]
        out.append(
            ChangeComponent(
                id=new_id,
                code=code,
                from_class=classes[0],
                to_class=classes[1],
                pixels=int(sizes[i]),
                area_m2=float(sizes[i]) * pixel_area_m2,
                centroid=centroid,
                position=position_word(centroid[0], centroid[1], mask.shape),
                bbox=(rs.start, cs.start, rs.stop - 1, cs.stop - 1),
            )
        )
    return tuple(out)


def compute_facts(
    mask: np.ndarray,
    valid: np.ndarray,
    *,
    pixel_area_m2: float,
    min_region_px: int,
    binary: bool,
    lc_before: np.ndarray | None = None,
    lc_after: np.ndarray | None = None,
) -> ChangeFacts:
    """The facts of a change mask.

    The facts describe ``clean_mask(mask, min_region_px)`` (cleaning twice changes nothing,
    so an already cleaned mask may be passed).

    Args:
        mask: (H, W) uint8 change mask (transition codes, 255 or 0).
        valid: (H, W) bool, True where the label is known on both dates.
        pixel_area_m2: area of one pixel in square metres.
        min_region_px: regions smaller than this are not change.
        binary: True for a change / no-change label (no classes).
        lc_before: (H, W) class indices at t0 (landcover labels; needed unless ``binary``).
        lc_after: (H, W) class indices at t1 (landcover labels; needed unless ``binary``).

    Returns:
        ChangeFacts. ``class_pixels_before`` counts ``lc_before`` over valid pixels;
        ``class_pixels_after`` counts the t1 classes *as the cleaned mask sees them*: a pixel
        whose change was removed as too small counts with its t0 class, so that
        ``after - before`` of every class equals the net of the transitions. Both are empty
        for binary labels.

    Raises:
        LabelError: shapes differ, the mask marks change on invalid pixels, or land-cover
            maps are missing for a non-binary label.
    """
    _check_same_shape(mask, valid, ("mask", "valid"))
    valid = np.asarray(valid, dtype=bool)
    if np.any((mask > 0) & ~valid):
        raise LabelError("the mask marks change on pixels that are not valid; zero them first")
    cleaned = clean_mask(mask, min_region_px)
    changed_px = cleaned > 0
    valid_pixels = int(valid.sum())
    changed_pixels = int(changed_px.sum())

    codes, counts = np.unique(cleaned[changed_px], return_counts=True)
    stats = []
    for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
        classes = decode_transition(int(code)) or ("unknown", "unknown")
        stats.append(
            TransitionStat(
                code=int(code),
                from_class=classes[0],
                to_class=classes[1],
                pixels=int(count),
                area_m2=float(count) * pixel_area_m2,
            )
        )
    stats.sort(key=lambda s: (-s.pixels, s.code))

    before: dict[str, int] = {}
    after: dict[str, int] = {}
    if not binary:
        if lc_before is None or lc_after is None:
            raise LabelError("land-cover facts need lc_before and lc_after (or binary=True)")
        _check_same_shape(lc_before, mask, ("lc_before", "mask"))
        _check_same_shape(lc_after, mask, ("lc_after", "mask"))
        seen_after = np.where(changed_px, lc_after, lc_before)
        before = _class_counts(lc_before, valid)
        after = _class_counts(seen_after, valid)

    return ChangeFacts(
        shape=(int(mask.shape[0]), int(mask.shape[1])),
        pixel_area_m2=float(pixel_area_m2),
        valid_pixels=valid_pixels,
        changed_pixels=changed_pixels,
        changed_fraction=changed_pixels / valid_pixels if valid_pixels else 0.0,
        binary=binary,
        transitions=tuple(stats),
        class_pixels_before=before,
        class_pixels_after=after,
        components=_components(cleaned, float(pixel_area_m2)),
        min_region_px=min_region_px,
    )


def pixel_area(sample: Sample) -> float:
    """Area of one pixel of the sample's cell grid, in square metres (from its transform)."""
    a, b, _, d, e, _ = sample.pair.job.transform
    return abs(a * e - b * d)


def check_grid(sample: Sample, arr: np.ndarray, name: str) -> None:
    """Raise :class:`LabelError` (keyed by the sample) unless ``arr`` has the cell grid's shape."""
    shape = tuple(sample.pair.job.shape)
    if arr.shape != shape:
        raise LabelError(
            f"{name} has shape {arr.shape}, the cell grid is {shape}; "
            "reproject it onto the cell grid",
            key=sample.key,
        )


#: Decimals of the lon/lat of a region record (1e-7 degree: about 1 cm).
LONLAT_DECIMALS = 7


def region_records(facts: ChangeFacts, *, crs: str, transform: Transform) -> tuple[Region, ...]:
    """The region table of a sample's json: one record per component of the facts.

    Args:
        facts: the facts of the sample's (cleaned) change mask.
        crs: the CRS of the sample grid.
        transform: its affine transform (rasterio order).

    Returns:
        The regions, by id (ids equal the component ids and the values of :func:`region_image`).
    """
    if not facts.components:
        return ()
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    a, b, c, d, e, f = transform

    def lonlat(col: float, row: float) -> tuple[float, float]:
        lon, lat = to_lonlat.transform(a * col + b * row + c, d * col + e * row + f)
        return (round(float(lon), LONLAT_DECIMALS), round(float(lat), LONLAT_DECIMALS))

    out = []
    for comp in sorted(facts.components, key=lambda k: k.id):
        box = component_box_px(comp.bbox)
        x0, y0, x1, y1 = box
        corners = [lonlat(x, y) for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))]
        row, col = comp.centroid
        out.append(
            Region(
                id=comp.id,
                code=comp.code,
                from_class=comp.from_class,
                to_class=comp.to_class,
                pixels=comp.pixels,
                area_m2=comp.area_m2,
                bbox_px=box,
                box=normalised_box(box, facts.shape),
                bbox_lonlat=(
                    min(p[0] for p in corners),
                    min(p[1] for p in corners),
                    max(p[0] for p in corners),
                    max(p[1] for p in corners),
                ),
                centroid_rowcol=(row, col),
                # pixel (r, c) covers [c, c + 1) x [r, r + 1) in transform coordinates
                centroid_lonlat=lonlat(col + 0.5, row + 0.5),
                position=comp.position,
            )
        )
    return tuple(out)
