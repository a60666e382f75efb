"""Rule checks on a finished sample before it is sharded.

Each rule is a small function ``(meta, annotation, mask, cfg) -> list[str]`` returning what is
wrong (human-readable, with the limit, the actual value and the config key where one applies);
an empty list means the rule holds. :data:`RULES` names them (stable snake_case names: they are
the quarantine reasons). The Great Expectations suites over the sample table come on top of
these and can reuse the same functions.

Two sanity expectations on the pixels come first (:data:`PIXEL_RULES`, over the before and after
reflectance as read, ``DN * scale + offset``): no band may be constant (every valid pixel the
same value: a band read with the wrong dtype, a fill value taken for data) and no band may lie
outside the physical range of surface reflectance, :data:`REFLECTANCE_RANGE` = [-0.2, 1.5]
(atmospheric correction leaves small negatives, bright clouds and snow reach about 1.2; a
missing or wrong scale gives DN in the thousands), beyond a tolerance of
:data:`OUT_OF_RANGE_FRACTION` (1 %) of a band's valid pixels for saturated or glinting pixels.
A failure names the scene and the band (reasons ``constant_band``, ``reflectance_range``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from geodelta.annotators.claims import check_captions, check_qa_item
from geodelta.pipelines.stages.coregister import RECORD_DECIMALS
from geodelta.pipelines.stages.label import region_image
from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import Annotation, BuildConfig, QuarantineRecord, SampleMeta, sample_key
from geodelta.schemas.classes import BINARY_CHANGE, CLASSES, N_CLASSES, transition_code
from geodelta.schemas.qa import REQUIRED_QA_TYPES
from geodelta.schemas.records import normalised_box

__all__ = [
    "OUT_OF_RANGE_FRACTION",
    "PIXEL_RULES",
    "REFLECTANCE_RANGE",
    "REQUIRED_QA_TYPES",
    "RULES",
    "PixelRule",
    "Rule",
    "validate_pixels",
    "validate_sample",
    "validate_stage",
]

Rule = Callable[[SampleMeta, Annotation, np.ndarray, BuildConfig], list[str]]
#: A rule over one scene's (C, H, W) reflectance (NaN = no data) and its band names.
PixelRule = Callable[[np.ndarray, tuple[str, ...]], list[str]]

#: Physical range of surface reflectance (after scale/offset), both ends included.
REFLECTANCE_RANGE: tuple[float, float] = (-0.2, 1.5)
#: Share of a band's valid pixels that may lie outside :data:`REFLECTANCE_RANGE` (saturation).
OUT_OF_RANGE_FRACTION = 0.01


_CRS_RE = re.compile(r"EPSG:[1-9][0-9]*")
#: Slack for comparing recorded co-registration values (each rounded to RECORD_DECIMALS).
_COREG_TOLERANCE = 10.0 ** -(RECORD_DECIMALS - 1)


def _valid_code_table() -> np.ndarray:
    ok = np.zeros(256, dtype=bool)
    ok[0] = ok[BINARY_CHANGE] = True
    for a in range(1, N_CLASSES + 1):
        for b in range(1, N_CLASSES + 1):
            if a != b:
                ok[transition_code(CLASSES[a], CLASSES[b])] = True
    return ok


_VALID_CODES = _valid_code_table()


def rule_key_format(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """The key is ``{cell_id}_{t0:%Y%m%d}_{t1:%Y%m%d}`` and has no '.' (webdataset member split)."""
    out = []
    expected = sample_key(meta.cell_id, meta.t0, meta.t1)
    if meta.key != expected:
        out.append(f"key {meta.key!r} is not {expected!r} (cell_id_t0_t1)")
    if "." in meta.key:
        out.append(f"key {meta.key!r} contains '.', which webdataset reads as a member suffix")
    return out


def rule_time_order(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """The before date comes first."""
    if meta.t0 < meta.t1:
        return []
    return [f"t0 {meta.t0.isoformat()} is not before t1 {meta.t1.isoformat()}"]


def rule_bbox_lonlat(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """The footprint is (min_lon, min_lat, max_lon, max_lat) within lon/lat ranges."""
    x0, y0, x1, y1 = meta.bbox_lonlat
    finite = all(math.isfinite(v) for v in meta.bbox_lonlat)
    if finite and -180.0 <= x0 < x1 <= 180.0 and -90.0 <= y0 < y1 <= 90.0:
        return []
    return [
        f"bbox_lonlat {meta.bbox_lonlat} is not (min_lon, min_lat, max_lon, max_lat) with "
        "-180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90"
    ]


def rule_crs(meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig) -> list[str]:
    """The CRS is written as ``EPSG:<code>``."""
    if _CRS_RE.fullmatch(meta.crs):
        return []
    return [f"crs {meta.crs!r} is not of the form 'EPSG:<code>'"]


def rule_valid_fraction(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """Both scenes have at least ``pairing.min_valid_fraction`` valid pixels."""
    need = cfg.pairing.min_valid_fraction
    return [
        f"{name}={getattr(meta, name):.4f} < pairing.min_valid_fraction={need}"
        for name in ("before_valid", "after_valid")
        if not getattr(meta, name) >= need
    ]


def rule_coreg_applied(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """The recorded co-registration says what was done to the after scene.

    The coregister stage applies an estimated shift of at least ``coregistration.min_shift_px``
    and records it with ``applied``; a shift it does not apply leaves the after scene as read,
    so its residual is the shift itself. A record that disagrees (a flag that does not match
    the shift's size, the residual of an unapplied shift other than its size, a shift that is
    not a number) does not describe the ``after.tif`` it ships with. The size limits are the
    coregister stage's own (``coregistration.max_shift_px`` / ``max_residual_px``: it
    quarantines what exceeds them) and the release contract's (``validation.*``, the GX suite).
    """
    coreg = meta.coreg
    dy, dx = coreg.shift_px
    size = math.hypot(dy, dx)
    if not math.isfinite(size):
        return [f"shift (dy={dy}, dx={dx}) is not finite"]
    floor = cfg.coregistration.min_shift_px
    if coreg.applied and size < floor - _COREG_TOLERANCE:
        return [
            f"shift (dy={dy}, dx={dx}) of {size:.6f} px is marked applied, but shifts below "
            f"coregistration.min_shift_px={floor} are not applied"
        ]
    if coreg.applied:
        return []
    out = []
    if size >= floor + _COREG_TOLERANCE:
        out.append(
            f"shift (dy={dy}, dx={dx}) of {size:.6f} px is marked not applied, but shifts of "
            f"coregistration.min_shift_px={floor} or more are applied"
        )
    if abs(coreg.residual_px - size) > _COREG_TOLERANCE:
        out.append(
            f"residual {coreg.residual_px} px of an unapplied shift is not the shift's size "
            f"{size:.6f} px"
        )
    return out


def rule_caption_count(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """At least ``validation.min_captions`` captions."""
    need = cfg.validation.min_captions
    if len(ann.captions) >= need:
        return []
    return [f"{len(ann.captions)} captions < validation.min_captions={need}"]


def rule_caption_length(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """Every caption is ``validation.caption_chars`` = (min, max) characters long."""
    low, high = cfg.validation.caption_chars
    return [
        f"caption {i} has {len(c)} characters, outside validation.caption_chars=({low}, {high})"
        for i, c in enumerate(ann.captions)
        if not low <= len(c) <= high
    ]


def rule_qa_types(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """The QA holds at least the required types (:data:`REQUIRED_QA_TYPES`)."""
    present = {q.type for q in ann.qa}
    missing = [t for t in REQUIRED_QA_TYPES if t not in present]
    return [f"missing QA types: {', '.join(missing)}"] if missing else []


def rule_qa_answers(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """Every answer agrees with the facts (:func:`~geodelta.annotators.claims.check_qa_item`)."""
    eps = cfg.annotation.no_change_epsilon
    return [m for q in ann.qa for m in check_qa_item(q, meta.facts, no_change_epsilon=eps)]


def rule_caption_claims(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """Captions claim nothing the facts contradict (:func:`~geodelta.annotators.claims.check_captions`).

    Free text from an LLM gets the strict check (every number, class, direction and location
    word); the template's own wording gets the basic one.
    """
    eps = cfg.annotation.no_change_epsilon
    strict = ann.annotator != "template"
    return check_captions(ann.captions, meta.facts, no_change_epsilon=eps, strict=strict)


def rule_mask_codes(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """The mask holds only 0, 255 and transition codes between two different known classes."""
    if mask.dtype != np.uint8:
        return [f"mask dtype is {mask.dtype}, not uint8"]
    values = np.unique(mask)
    bad = values[~_VALID_CODES[values]]
    if bad.size == 0:
        return []
    return [f"mask holds codes that are not transitions: {bad[:10].tolist()}"]


def rule_mask_facts(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """The mask has the sample's shape and as many changed pixels as the facts say."""
    out = []
    if tuple(mask.shape) != tuple(meta.shape):
        out.append(f"mask shape {mask.shape} != sample shape {meta.shape}")
    if tuple(meta.facts.shape) != tuple(meta.shape):
        out.append(f"facts shape {meta.facts.shape} != sample shape {meta.shape}")
    changed = int(np.count_nonzero(mask))
    if changed != meta.facts.changed_pixels:
        out.append(f"mask has {changed} changed pixels, facts say {meta.facts.changed_pixels}")
    return out


def rule_regions(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """The json's region table is the regions of ``regions.png`` (re-derived from the mask).

    Every id of the image has one record and every record an id of the image; each record's
    pixel count, pixel box, normalised box and position agree with the image and the facts.
    A failure names the sample key and the region id.
    """
    if tuple(mask.shape) != tuple(meta.shape) or (
        int(np.count_nonzero(mask)) != meta.facts.changed_pixels
    ):
        return []  # mask_facts says so
    image = region_image(mask)
    table = {r.id: r for r in meta.regions}
    n = int(image.max()) if image.size else 0
    out = []
    if len(table) != len(meta.regions):
        out.append(f"sample {meta.key}: the region table repeats an id")
    for rid in range(1, n + 1):
        if rid not in table:
            out.append(f"sample {meta.key}: region {rid} of regions.png is not in the region table")
    objects = ndimage.find_objects(image)
    sizes = np.bincount(image.ravel(), minlength=n + 1)
    comps = {c.id: c for c in meta.facts.components}
    for rid, r in sorted(table.items()):
        if not 1 <= rid <= n or objects[rid - 1] is None:
            out.append(f"sample {meta.key}: region {rid} of the region table is not in regions.png")
            continue
        rows, cols = objects[rid - 1]
        box = (cols.start, rows.start, cols.stop, rows.stop)
        if tuple(r.bbox_px) != box:
            out.append(
                f"sample {meta.key}: region {rid} bbox_px {r.bbox_px} but regions.png has {box}"
            )
        if tuple(r.box) != normalised_box(box, (meta.shape[0], meta.shape[1])):
            out.append(f"sample {meta.key}: region {rid} box {r.box} is not its bbox_px normalised")
        if r.pixels != int(sizes[rid]):
            out.append(
                f"sample {meta.key}: region {rid} has {r.pixels} pixels, regions.png {int(sizes[rid])}"
            )
        c = comps.get(rid)
        if c is None or (c.position, c.from_class, c.to_class) != (
            r.position,
            r.from_class,
            r.to_class,
        ):
            out.append(f"sample {meta.key}: region {rid} disagrees with the facts' component {rid}")
    return out


def rule_licence(
    meta: SampleMeta, ann: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[str]:
    """Licence and attribution are given (config ``licence`` / ``attribution``)."""
    return [
        f"{name} is empty; set it in the config"
        for name in ("licence", "attribution")
        if not getattr(meta, name).strip()
    ]


def _band_name(bands: tuple[str, ...], i: int) -> str:
    return bands[i] if i < len(bands) else f"band {i + 1}"


def rule_constant_band(scene: np.ndarray, bands: tuple[str, ...]) -> list[str]:
    """No band has one value for all its valid pixels (two or more of them)."""
    out = []
    for i, band in enumerate(scene):
        valid = band[np.isfinite(band)]
        if valid.size >= 2 and float(valid.min()) == float(valid.max()):
            out.append(
                f"band {_band_name(bands, i)} is constant ({float(valid[0]):g} in all "
                f"{valid.size} valid pixels): check its dtype, nodata and scale in the items' "
                "raster:bands"
            )
    return out


def rule_reflectance_range(scene: np.ndarray, bands: tuple[str, ...]) -> list[str]:
    """At most :data:`OUT_OF_RANGE_FRACTION` of a band's valid pixels lie outside
    :data:`REFLECTANCE_RANGE`."""
    low, high = REFLECTANCE_RANGE
    out = []
    for i, band in enumerate(scene):
        valid = band[np.isfinite(band)]
        if valid.size == 0:
            continue
        outside = int(np.count_nonzero((valid < low) | (valid > high)))
        if outside > OUT_OF_RANGE_FRACTION * valid.size:
            out.append(
                f"band {_band_name(bands, i)} has {outside} of {valid.size} valid pixels outside "
                f"the reflectance range [{low}, {high}] (min {float(valid.min()):g}, max "
                f"{float(valid.max()):g}): check its scale and offset in the items' raster:bands"
            )
    return out


#: The pixel rules, checked on both scenes before :data:`RULES`.
PIXEL_RULES: tuple[tuple[str, PixelRule], ...] = (
    ("constant_band", rule_constant_band),
    ("reflectance_range", rule_reflectance_range),
)


def validate_pixels(
    before: np.ndarray, after: np.ndarray, bands: tuple[str, ...]
) -> list[tuple[str, str]]:
    """Check every rule of :data:`PIXEL_RULES` on both scenes of a sample.

    Args:
        before: (C, H, W) reflectance of the before scene, NaN = no data.
        after: the same of the after scene.
        bands: the band names (``imagery.bands``), in the arrays' order.

    Returns:
        ``(rule_name, detail)`` for each failed rule, in :data:`PIXEL_RULES` order, the detail
        naming the scene and the band; ``[]`` = sane.
    """
    failures = []
    for name, rule in PIXEL_RULES:
        problems = [
            f"{scene} {p}"
            for scene, arr in (("before", before), ("after", after))
            for p in rule(arr, bands)
        ]
        if problems:
            failures.append((name, "; ".join(problems)))
    return failures


#: The rules, in the order they are checked (the first failure is the quarantine reason).
RULES: tuple[tuple[str, Rule], ...] = (
    ("key_format", rule_key_format),
    ("time_order", rule_time_order),
    ("bbox_lonlat", rule_bbox_lonlat),
    ("crs", rule_crs),
    ("valid_fraction", rule_valid_fraction),
    ("coreg_applied", rule_coreg_applied),
    ("caption_count", rule_caption_count),
    ("caption_length", rule_caption_length),
    ("qa_types", rule_qa_types),
    ("qa_answers", rule_qa_answers),
    ("caption_claims", rule_caption_claims),
    ("mask_codes", rule_mask_codes),
    ("mask_facts", rule_mask_facts),
    ("regions", rule_regions),
    ("licence", rule_licence),
)


def validate_sample(
    meta: SampleMeta, annotation: Annotation, mask: np.ndarray, cfg: BuildConfig
) -> list[tuple[str, str]]:
    """Check every rule of :data:`RULES` on one sample.

    Args:
        meta: the sample's metadata (with its facts).
        annotation: its captions and QA.
        mask: its (H, W) uint8 change mask.
        cfg: the build config (limits under ``validation``, ``pairing``, ``annotation``).

    Returns:
        ``(rule_name, detail)`` for each failed rule, in :data:`RULES` order; ``[]`` = valid.
    """
    failures = []
    for name, rule in RULES:
        problems = rule(meta, annotation, mask, cfg)
        if problems:
            failures.append((name, "; ".join(problems)))
    return failures


def validate_stage(sample: Sample, meta: SampleMeta, cfg: BuildConfig) -> Sample | QuarantineRecord:
    """The validate stage: the sample unchanged, or a quarantine record saying why not.

    Args:
        sample: a finished sample (``annotation`` and ``mask`` set).
        meta: its metadata (:func:`geodelta.pipelines.stages.encode.build_meta`).
        cfg: the build config.

    Returns:
        ``sample`` when every rule holds (:data:`PIXEL_RULES` on its pixels, then
        :data:`RULES`); else a :class:`QuarantineRecord` with ``stage="validate"``,
        ``reason`` = the first failed rule's name and ``detail`` = every failure as
        ``"rule: detail"`` joined by ``"; "``. A sample without annotation or mask gets
        ``reason="incomplete_sample"``.
    """
    if sample.annotation is None or sample.mask is None:
        missing = [n for n in ("annotation", "mask") if getattr(sample, n) is None]
        return QuarantineRecord(
            key=meta.key,
            cell_id=meta.cell_id,
            stage="validate",
            reason="incomplete_sample",
            detail=f"sample has no {' or '.join(missing)}; run the label and annotate stages first",
        )
    failures = validate_pixels(sample.before, sample.after, tuple(cfg.imagery.bands))
    failures += validate_sample(meta, sample.annotation, sample.mask, cfg)
    if not failures:
        return sample
    return QuarantineRecord(
        key=meta.key,
        cell_id=meta.cell_id,
        stage="validate",
        reason=failures[0][0],
        detail="; ".join(f"{name}: {detail}" for name, detail in failures),
    )
