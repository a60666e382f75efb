"""Encode a finished :class:`~geodelta.pipelines.stages.sample.Sample` into shard members (bytes).

Every output GeoTIFF uses one DN convention whatever the source product was::

    DN = round((reflectance - OUTPUT_DN_OFFSET) / OUTPUT_DN_SCALE), clipped to [1, 65535]
    DN = 0 (OUTPUT_NODATA) where the reflectance is NaN

so ``reflectance = DN * OUTPUT_DN_SCALE + OUTPUT_DN_OFFSET`` for every DN > 0 (the scale and
offset are also written per band into the file, so GDAL readers can unscale). Reflectances
below ``-0.0999`` are clipped to DN 1, above ``6.4535`` to DN 65535.

All encoders are byte-deterministic: the same arrays and records give the same bytes, which is
what makes releases reproducible and diffable.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.io import MemoryFile

from geodelta._io import compact_json_bytes
from geodelta.annotators.caption_grounding import ground_captions
from geodelta.errors import StageError
from geodelta.pipelines.stages.label import region_image, region_records
from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import Annotation, BuildConfig, SampleMeta
from geodelta.schemas.members import SAMPLE_MEMBERS
from geodelta.schemas.records import GroundedCaption, Transform

OUTPUT_DN_SCALE = 0.0001
OUTPUT_DN_OFFSET = -0.1
OUTPUT_NODATA = 0

_DN_MIN = 1
_DN_MAX = 65535
#: zlib level of every PNG member (fixed so bytes do not depend on library defaults).
_PNG_COMPRESS_LEVEL = 6

_T = TypeVar("_T")


class EncodeError(StageError):
    """A sample or array that cannot be encoded; the message names the sample and the field."""

    def __init__(self, message: str, *, key: str | None = None, field: str | None = None) -> None:
        self.key = key
        self.field = field
        where = ", ".join(p for p in (f"sample {key}" if key else "", field or "") if p)
        super().__init__(f"{where}: {message}" if where else message)


def to_dn(reflectance: np.ndarray) -> np.ndarray:
    """Convert reflectance to the output DN convention.

    Args:
        reflectance: float array (usually (C, H, W)); NaN marks no data.

    Returns:
        uint16 array of the same shape: ``round((r - OFFSET) / SCALE)`` clipped to
        [1, 65535], 0 where ``r`` is NaN.

    Raises:
        EncodeError: when the array is not floating point.
    """
    arr = np.asarray(reflectance)
    if not np.issubdtype(arr.dtype, np.floating):
        raise EncodeError(f"reflectance must be a float array (actual dtype={arr.dtype})")
    # in place on one float64 copy: the same operations, in the same order, as
    # np.clip(np.rint((np.where(nan, 0.0, r) - OFFSET) / SCALE), MIN, MAX), without temporaries
    r = arr.astype(np.float64)
    nan = ~np.isfinite(r)
    r[nan] = 0.0
    r -= OUTPUT_DN_OFFSET
    r /= OUTPUT_DN_SCALE
    np.rint(r, out=r)
    np.clip(r, _DN_MIN, _DN_MAX, out=r)
    dn = r.astype(np.uint16)
    dn[nan] = OUTPUT_NODATA
    return dn


def geotiff_bytes(
    dn: np.ndarray, *, crs: str, transform: Transform, band_names: Sequence[str]
) -> bytes:
    """Write a (C, H, W) uint16 stack as an in-memory, deflate-compressed GeoTIFF.

    The file carries the CRS, the affine transform, nodata 0, one description per band and
    per-band scale/offset (:data:`OUTPUT_DN_SCALE`, :data:`OUTPUT_DN_OFFSET`). The output is
    byte-deterministic (no timestamps are written).

    Args:
        dn: (C, H, W) uint16 array from :func:`to_dn`.
        crs: CRS of the grid, e.g. ``"EPSG:32631"``.
        transform: affine coefficients in rasterio order ``(a, b, c, d, e, f)``.
        band_names: one name per band, written as band descriptions.

    Returns:
        The GeoTIFF file as bytes.

    Raises:
        EncodeError: wrong dtype, rank or number of band names.
    """
    if dn.dtype != np.uint16:
        raise EncodeError(f"dn must be uint16 (actual dtype={dn.dtype}); convert with to_dn()")
    return write_geotiff(
        dn,
        crs=crs,
        transform=transform,
        band_names=band_names,
        extra={"nodata": OUTPUT_NODATA, "predictor": 2},
        scale_offset=(OUTPUT_DN_SCALE, OUTPUT_DN_OFFSET),
    )


def write_geotiff(
    data: np.ndarray,
    *,
    crs: str,
    transform: Transform,
    band_names: Sequence[str],
    extra: dict[str, Any] | None = None,
    scale_offset: tuple[float, float] | None = None,
) -> bytes:
    """Write a (N, H, W) stack as an in-memory, deflate-compressed, band-interleaved GeoTIFF in
    its own dtype: the CRS, the affine transform, one description per band, ``extra`` profile
    keys (nodata, predictor) and, when given, the same scale/offset on every band. Shared by
    :func:`geotiff_bytes` and the sequence members' writers; byte-deterministic.

    Raises:
        EncodeError: not (N, H, W), or not one band name per band.
    """
    if data.ndim != 3:
        raise EncodeError(f"expected a (bands, y, x) stack (actual ndim={data.ndim})")
    count, height, width = data.shape
    if len(band_names) != count:
        raise EncodeError(
            f"one band name per band is needed (bands={count}, names={len(band_names)})",
            field="imagery.bands",
        )
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "dtype": str(data.dtype),
        "count": count,
        "height": height,
        "width": width,
        "crs": rasterio.crs.CRS.from_user_input(crs),
        "transform": Affine(*transform),
        "compress": "deflate",
        "interleave": "band",
        **(extra or {}),
    }
    with MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            dst.write(np.ascontiguousarray(data))
            for i, name in enumerate(band_names, start=1):
                dst.set_band_description(i, str(name))
            if scale_offset is not None:
                dst.scales = (scale_offset[0],) * count
                dst.offsets = (scale_offset[1],) * count
        return bytes(memfile.read())


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=_PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def rgb_png(
    reflectance: np.ndarray, rgb_idx: tuple[int, int, int], max_reflectance: float
) -> bytes:
    """Render three bands of a reflectance stack as an 8-bit true-colour PNG.

    The stretch is linear, without gamma: reflectance 0 -> 0, ``max_reflectance`` -> 255
    (values outside are clipped). A pixel where any of the three bands is NaN is black.

    Args:
        reflectance: (C, H, W) float reflectance.
        rgb_idx: band indices of red, green and blue in ``reflectance``.
        max_reflectance: reflectance shown as white (``imagery.rgb_max_reflectance``).

    Returns:
        PNG bytes, mode RGB, size (W, H).

    Raises:
        EncodeError: bad rank, band index or ``max_reflectance``.
    """
    if reflectance.ndim != 3:
        raise EncodeError(f"reflectance must be (C, H, W) (actual ndim={reflectance.ndim})")
    if not max_reflectance > 0:
        raise EncodeError(
            f"max_reflectance must be > 0 (actual={max_reflectance})",
            field="imagery.rgb_max_reflectance",
        )
    count = reflectance.shape[0]
    if any(not 0 <= i < count for i in rgb_idx):
        raise EncodeError(f"rgb band index out of range (bands={count}, actual={rgb_idx})")
    # band-first and in place: the same arithmetic, without (H, W, 3) temporaries
    rgb = reflectance[list(rgb_idx)].astype(np.float64)
    finite = np.isfinite(rgb)
    rgb[~finite] = 0.0
    rgb /= max_reflectance
    np.clip(rgb, 0.0, 1.0, out=rgb)
    rgb *= 255.0
    np.rint(rgb, out=rgb)
    out = rgb.astype(np.uint8)
    out[:, ~finite.all(axis=0)] = 0
    return _png(Image.fromarray(np.ascontiguousarray(out.transpose(1, 2, 0)), mode="RGB"))


def index_png(arr: np.ndarray) -> bytes:
    """Write a 2-D integer map (change mask, land-cover classes) as a single-channel PNG.

    Args:
        arr: (H, W) integer array with values in 0..255.

    Returns:
        PNG bytes, mode L, the values unchanged.

    Raises:
        EncodeError: not 2-D, not integer, or values outside 0..255.
    """
    a = np.asarray(arr)
    if a.ndim != 2:
        raise EncodeError(f"index map must be (H, W) (actual ndim={a.ndim})")
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        raise EncodeError(f"index map must be an integer array (actual dtype={a.dtype})")
    if a.size and (int(a.min()) < 0 or int(a.max()) > 255):
        raise EncodeError(
            f"index map values must be in 0..255 (actual min={int(a.min())}, max={int(a.max())})"
        )
    return _png(Image.fromarray(np.ascontiguousarray(a.astype(np.uint8)), mode="L"))


def instance_png(arr: np.ndarray) -> bytes:
    """Write a 2-D uint16 instance map (``regions.png``) as a 16-bit single-channel PNG.

    Raises:
        EncodeError: not a 2-D uint16 array.
    """
    a = np.asarray(arr)
    if a.ndim != 2 or a.dtype != np.uint16:
        raise EncodeError(f"instance map must be (H, W) uint16 (actual {a.dtype} ndim={a.ndim})")
    return _png(Image.fromarray(np.ascontiguousarray(a)))  # mode I;16


#: The stage that sets each field a finished sample must have.
_SET_BY = {"coreg": "coregister", "facts": "label", "mask": "label", "annotation": "annotate"}


def _required(sample: Sample, value: _T | None, field: str) -> _T:
    """``value`` (the sample's ``field``), or an EncodeError naming the stage that sets it."""
    if value is None:
        raise EncodeError(
            f"{field} {'are' if field.endswith('s') else 'is'} not set; run the {_SET_BY[field]} "
            "stage first",
            key=sample.key,
            field=field,
        )
    return value


def _valid_fraction(stack: np.ndarray) -> float:
    """Share of pixels where every band is finite."""
    if stack.size == 0:
        return 0.0
    return float(np.isfinite(stack).all(axis=0).mean())


def build_meta(
    sample: Sample, cfg: BuildConfig, *, code_version: str, shaping_hash: str
) -> SampleMeta:
    """Build the ``json`` member of a finished sample.

    Args:
        sample: a sample with ``coreg``, ``mask``, ``facts`` and ``annotation`` set.
        cfg: the build config (bands, licence, attribution).
        code_version: geodelta version building the release.
        shaping_hash: ``cfg.shaping_hash()`` (passed in so it is computed once per run).

    Returns:
        The :class:`SampleMeta` of the sample.

    Raises:
        EncodeError: a stage output is missing, or the arrays do not match the cell grid or the
            configured bands.
    """
    key = sample.key
    coreg = _required(sample, sample.coreg, "coreg")
    facts = _required(sample, sample.facts, "facts")
    ann = _required(sample, sample.annotation, "annotation")
    _check_arrays(sample, cfg)
    pair, job = sample.pair, sample.pair.job
    return SampleMeta(
        key=key,
        cell_id=job.cell_id,
        region=job.region,
        split=job.split,
        collection=pair.before.collection,
        before_item=pair.before.item_id,
        after_item=pair.after.item_id,
        t0=pair.before.datetime,
        t1=pair.after.datetime,
        gap_days=pair.gap_days,
        crs=job.crs,
        transform=job.transform,
        shape=job.shape,
        bbox_lonlat=job.bbox_lonlat,
        bands=tuple(cfg.imagery.bands),
        dn_scale=OUTPUT_DN_SCALE,
        dn_offset=OUTPUT_DN_OFFSET,
        before_clear=pair.before_clear,
        after_clear=pair.after_clear,
        before_cloud_cover=pair.before.cloud_cover,
        after_cloud_cover=pair.after.cloud_cover,
        before_valid=_valid_fraction(sample.before),
        after_valid=_valid_fraction(sample.after),
        coreg=coreg,
        label_source=sample.label_source,
        label_items=tuple(sample.label_items),
        facts=facts,
        annotator=ann.annotator,
        annotator_version=ann.annotator_version,
        prompt_version=ann.prompt_version,
        model=ann.model,
        tokens_in=ann.tokens_in,
        tokens_out=ann.tokens_out,
        cost_usd=ann.cost_usd,
        licence=cfg.licence,
        attribution=cfg.attribution,
        code_version=code_version,
        shaping_hash=shaping_hash,
        regions=region_records(facts, crs=job.crs, transform=job.transform),
        captions_grounded=ground_captions(ann.captions, facts) + _temporal_grounded(sample),
        series=None if sample.series is None else sample.series.facts,
        **_baseline_fields(sample),
    )


def _temporal(sample: Sample) -> Annotation | None:
    """The temporal annotation of a sequence sample (None for a pair)."""
    return None if sample.series is None else sample.series.annotation


def _temporal_grounded(sample: Sample) -> tuple[GroundedCaption, ...]:
    """Temporal captions follow the pair's in captions.json; their regions are the sequence's
    (the json's ``series.regions``), not regions.png's, so no phrase of theirs is grounded."""
    t = _temporal(sample)
    return () if t is None else tuple(GroundedCaption(text=c, spans=()) for c in t.captions)


def _baseline_fields(sample: Sample) -> dict[str, Any]:
    """The optional SampleMeta fields of the baseline change model (none without a model)."""
    b = sample.baseline
    if b is None:
        return {}
    return {"baseline_model": b.model_id, "fusion": b.fusion, "baseline_iou": b.iou}


def meta_json(meta: SampleMeta) -> dict[str, Any]:
    """The ``json`` member's data: optional fields that are None are left out.

    Samples built without a baseline model therefore have exactly the bytes they had before
    those fields existed, and read back to the same record (the fields default to None).
    """
    omit = {name for name in SampleMeta.OMIT_WHEN_NONE if getattr(meta, name) is None}
    return meta.model_dump(mode="json", exclude=omit)


def _check_arrays(sample: Sample, cfg: BuildConfig) -> None:
    key = sample.key
    n_bands = len(cfg.imagery.bands)
    shape = tuple(sample.pair.job.shape)
    for name in ("before", "after"):
        arr: np.ndarray = getattr(sample, name)
        if arr.ndim != 3 or arr.shape[0] != n_bands or tuple(arr.shape[1:]) != shape:
            raise EncodeError(
                f"expected (bands={n_bands}, {shape[0]}, {shape[1]}) from imagery.bands and the "
                f"cell grid (actual shape={arr.shape})",
                key=key,
                field=name,
            )
    for name in ("mask", "lc_before", "lc_after"):
        m: np.ndarray | None = getattr(sample, name)
        if m is not None and tuple(m.shape) != shape:
            raise EncodeError(
                f"expected shape {shape} of the cell grid (actual shape={m.shape})",
                key=key,
                field=name,
            )


def rgb_indices(cfg: BuildConfig) -> tuple[int, int, int]:
    """Indices of ``imagery.rgb`` in ``imagery.bands``.

    Raises:
        EncodeError: an rgb band is not one of the stacked bands.
    """
    bands = list(cfg.imagery.bands)
    missing = [b for b in cfg.imagery.rgb if b not in bands]
    if missing:
        raise EncodeError(
            f"rgb bands {missing} are not in imagery.bands {bands}; add them or change imagery.rgb",
            field="imagery.rgb",
        )
    r, g, b = (bands.index(name) for name in cfg.imagery.rgb)
    return (r, g, b)


#: The temporal annotation of a pair: none.
_NO_ANNOTATION = Annotation(captions=(), qa=(), annotator="none", annotator_version="0")


def encode_members(sample: Sample, meta: SampleMeta, cfg: BuildConfig) -> dict[str, bytes]:
    """Encode a finished sample into its shard members.

    The members are exactly :data:`geodelta.schemas.members.SAMPLE_MEMBERS`. A sample labelled by a
    change mask has no land-cover maps: ``lc_before.png``/``lc_after.png`` are then all 0
    ("unknown"), so every sample has the same members.

    Args:
        sample: the finished sample (``mask`` and ``annotation`` set).
        meta: its metadata from :func:`build_meta`.
        cfg: the build config (bands, rgb rendering).

    Returns:
        Member name -> bytes, in :data:`SAMPLE_MEMBERS` order; every value is deterministic.

    Raises:
        EncodeError: a stage output is missing or an array does not fit.
    """
    mask = _required(sample, sample.mask, "mask")
    ann = _required(sample, sample.annotation, "annotation")
    temporal = _temporal(sample) or _NO_ANNOTATION
    _check_arrays(sample, cfg)
    rgb = rgb_indices(cfg)
    vmax = cfg.imagery.rgb_max_reflectance
    blank = np.zeros(meta.shape, dtype=np.uint8)
    lc_before = sample.lc_before if sample.lc_before is not None else blank
    lc_after = sample.lc_after if sample.lc_after is not None else blank
    members = {
        "before.tif": geotiff_bytes(
            to_dn(sample.before), crs=meta.crs, transform=meta.transform, band_names=meta.bands
        ),
        "after.tif": geotiff_bytes(
            to_dn(sample.after), crs=meta.crs, transform=meta.transform, band_names=meta.bands
        ),
        "before.png": rgb_png(sample.before, rgb, vmax),
        "after.png": rgb_png(sample.after, rgb, vmax),
        "mask.png": index_png(mask),
        "change.png": index_png(np.asarray(mask) != 0),
        "regions.png": instance_png(region_image(mask)),
        "lc_before.png": index_png(lc_before),
        "lc_after.png": index_png(lc_after),
        "json": compact_json_bytes(meta_json(meta)),
        "captions.json": compact_json_bytes(list(ann.captions) + list(temporal.captions)),
        "qa.json": compact_json_bytes([q.model_dump(mode="json") for q in ann.qa + temporal.qa]),
    }
    return {name: members[name] for name in SAMPLE_MEMBERS}
