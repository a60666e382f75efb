"""Sub-pixel co-registration of the after scene onto the before scene.

The shift is estimated by upsampled cross-correlation
(:func:`skimage.registration.phase_cross_correlation`) of the two images' **gradient
magnitudes**: edges sit in the same place on both dates even when the brightness changed
(season, sun angle, sensor), so the estimate is robust to radiometric differences.

Sign convention: a shift ``(dy, dx)`` is what to **apply** to the after scene (the moving image)
to align it with the before scene; positive moves the content down / right. When the after
scene is the before scene displaced by ``d``, the estimate is ``-d``.

Why this recipe (measured on seeded textures and on OSCD bercy B08, shifts up to 3 px, Fourier
and cubic-spline shifted, gain 1.3 + offset): Gaussian gradient magnitude (sigma 1 px), mean
removed, edges tapered (10 % per side), unnormalised cross-correlation: within 0.04 px on
64-256 px images. The Sobel magnitude or phase normalisation were 2-5x less accurate, and with
phase normalisation the reported error is always ~1, so it cannot gate a correction. Here the
error (skimage's ``sqrt(1 - r**2)`` at the peak) is ~0.1-0.6 for a shifted copy, ~0.6-0.95 for
real pairs months apart (OSCD, consistent shifts across sub-windows), and ~0.99-1.0 for
unrelated images.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage as ndi
from skimage.registration import phase_cross_correlation

from geodelta.pipelines.sample import Sample
from geodelta.schemas import CoregResult, QuarantineRecord
from geodelta.schemas.config import CoregConfig

#: Gaussian scale (px) of the gradient magnitude the registration runs on.
GRADIENT_SIGMA = 1.0
#: Share of each side tapered to zero before correlating (see :func:`_taper`).
EDGE_TAPER = 0.1
#: Pixels next to no-data (after dilation by this many px) carry no gradient.
_INVALID_MARGIN_PX = 3
#: Fewest valid pixels (in each image) an estimate needs.
_MIN_VALID_PX = 16


class CoregistrationError(ValueError):
    """The shift cannot be estimated: bad arguments or images without usable texture.

    Attributes:
        reason: machine-readable reason ('no_texture', 'too_few_valid', 'bad_input').
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _gradient(image: np.ndarray, name: str) -> np.ndarray:
    """Mean-removed gradient magnitude; zero on and next to NaN pixels."""
    valid = np.isfinite(image)
    n_valid = int(valid.sum())
    if n_valid < _MIN_VALID_PX:
        raise CoregistrationError(
            "too_few_valid",
            f"{name} image has too few valid pixels (min={_MIN_VALID_PX}, actual={n_valid})",
        )
    values = image[valid]
    filled = np.where(valid, image, np.median(values)).astype(np.float64)
    grad = ndi.gaussian_gradient_magnitude(filled, GRADIENT_SIGMA)
    bad = ~valid
    if bad.any():
        bad = ndi.binary_dilation(bad, iterations=_INVALID_MARGIN_PX)
    good = grad[~bad]
    scale = 1.0 + float(np.abs(values).max())
    spread = float(good.std()) if good.size else 0.0
    if good.size < _MIN_VALID_PX or spread <= 1e-9 * scale:
        raise CoregistrationError(
            "no_texture",
            f"{name} image has no usable texture (gradient std={spread:.3g} over {good.size} px "
            "away from no-data)",
        )
    grad -= good.mean()
    grad[bad] = 0.0
    return grad * np.outer(_taper(grad.shape[0]), _taper(grad.shape[1]))


def _taper(n: int) -> np.ndarray:
    """Raised-cosine edge taper over ``EDGE_TAPER`` of the length at each end (Tukey window).

    Cross-correlation treats the images as periodic; without a taper the wrap-around seam and
    content entering / leaving at the borders bias the estimate (measured: up to 0.12 px).
    """
    window = np.ones(n)
    m = min(n // 2, max(1, round(n * EDGE_TAPER)))
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(m) + 0.5) / m)
    window[:m] = ramp
    window[n - m :] = ramp[::-1]
    return window


def estimate_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    upsample_factor: int = 50,
) -> tuple[tuple[float, float], float]:
    """Estimate the sub-pixel shift that aligns ``moving`` with ``reference``.

    Args:
        reference: 2-D image (the before scene's band); NaN = no data.
        moving: 2-D image of the same shape (the after scene's band); NaN = no data.
        upsample_factor: precision is 1/upsample_factor px.

    Returns:
        ``((dy, dx), error)``: the shift to apply to ``moving`` (positive = content moves
        down / right), and the cross-correlation error (0 = perfect match, ~1 = unrelated).

    Raises:
        CoregistrationError: shapes differ or are not 2-D, or an image has no usable texture
            (all NaN, constant).
    """
    ref = np.asarray(reference, dtype=np.float64)
    mov = np.asarray(moving, dtype=np.float64)
    if ref.ndim != 2 or ref.shape != mov.shape:
        raise CoregistrationError(
            "bad_input",
            f"reference and moving must be 2-D arrays of one shape "
            f"(actual={ref.shape} and {mov.shape})",
        )
    if upsample_factor < 1:
        raise CoregistrationError(
            "bad_input", f"upsample_factor must be >= 1 (actual={upsample_factor})"
        )
    shift, error, _ = phase_cross_correlation(
        _gradient(ref, "reference"),
        _gradient(mov, "moving"),
        upsample_factor=upsample_factor,
        normalization=None,
    )
    return (float(shift[0]), float(shift[1])), float(error)


def apply_shift(stack: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Shift every band of a stack by a sub-pixel amount.

    Cubic-spline interpolation (:func:`scipy.ndimage.shift`, ``order=3``, ``mode='nearest'``).
    NaN pixels are filled with their nearest valid neighbour before interpolating (so they do
    not smear into the image) and put back as NaN where the shifted validity mask says so: a
    no-data region moves with the content and keeps its size.

    Args:
        stack: (C, H, W) array; NaN = no data.
        shift: ``(dy, dx)`` in pixels; positive moves the content down / right.

    Returns:
        (C, H, W) float32 shifted stack (a new array).

    Raises:
        CoregistrationError: ``stack`` is not 3-D.
    """
    arr = np.asarray(stack, dtype=np.float32)
    if arr.ndim != 3:
        raise CoregistrationError(
            "bad_input", f"stack must be (C, H, W) (actual shape={arr.shape})"
        )
    dy, dx = float(shift[0]), float(shift[1])
    out = np.empty_like(arr)
    for c, band in enumerate(arr):
        valid = np.isfinite(band)
        if not valid.any():
            out[c] = np.nan
            continue
        if valid.all():
            out[c] = ndi.shift(band, (dy, dx), order=3, mode="nearest")
            continue
        nearest = ndi.distance_transform_edt(~valid, return_distances=False, return_indices=True)
        filled = band[tuple(nearest)]
        shifted = ndi.shift(filled, (dy, dx), order=3, mode="nearest")
        still_valid = ndi.shift(valid.astype(np.float32), (dy, dx), order=1, mode="nearest") >= 0.5
        out[c] = np.where(still_valid, shifted, np.nan)
    return out


def _quarantine(sample: Sample, reason: str, detail: str) -> QuarantineRecord:
    return QuarantineRecord(
        key=sample.key,
        cell_id=sample.pair.job.cell_id,
        stage="coregister",
        reason=reason,
        detail=detail,
    )


def coregister(sample: Sample, cfg: CoregConfig, *, band_index: int) -> Sample | QuarantineRecord:
    """Co-register the after scene of a sample onto its before scene.

    The shift of ``sample.after`` against ``sample.before`` is estimated on one band. It is
    applied when its magnitude is at least ``cfg.min_shift_px``; an estimate whose error exceeds
    ``cfg.max_error`` is not trusted and the pair is quarantined ('coreg_unreliable'); the residual is then re-estimated on the corrected band (when not
    applied, the residual is the magnitude of the estimate itself). The recorded
    ``CoregResult.shift_px`` is the estimate, with ``applied`` telling whether it was used.

    Args:
        sample: sample with ``before`` and ``after`` (C, H, W) stacks on one grid.
        cfg: the ``coregistration`` section of the build config.
        band_index: index of the band (in the stacks) to register on.

    Returns:
        A copy of the sample with ``after`` corrected and ``coreg`` set, or a
        :class:`QuarantineRecord` (stage 'coregister') with reason 'coreg_unreliable',
        'shift_too_large', 'residual_too_large' or 'coreg_failed'.

    Raises:
        IndexError: ``band_index`` is not a band of the stacks.
        CoregistrationError: the before and after stacks differ in shape.
    """
    n_bands = sample.before.shape[0]
    if not -n_bands <= band_index < n_bands or sample.after.shape[0] != n_bands:
        raise IndexError(
            f"band_index out of range (bands={n_bands} before / {sample.after.shape[0]} after, "
            f"actual={band_index}); check coregistration.band against imagery.bands"
        )
    reference = sample.before[band_index]
    try:
        (dy, dx), error = estimate_shift(
            reference, sample.after[band_index], upsample_factor=cfg.upsample_factor
        )
    except CoregistrationError as exc:
        if exc.reason == "bad_input":  # before/after stacks on different grids: a bug upstream
            raise
        return _quarantine(
            sample,
            "coreg_failed",
            f"cannot estimate the shift on band {band_index}: {exc}. The cell is probably "
            "cloud-covered or no-data; raise pairing.min_clear_fraction or "
            "pairing.min_valid_fraction, or pick another coregistration.band",
        )
    if not math.isfinite(error):
        return _quarantine(
            sample,
            "coreg_failed",
            f"shift estimate on band {band_index} is not finite (error={error}); "
            "pick another coregistration.band",
        )
    magnitude = math.hypot(dy, dx)
    if error > cfg.max_error:
        return _quarantine(
            sample,
            "coreg_unreliable",
            f"the shift estimate on band {band_index} is not reliable (phase-correlation "
            f"error={error:.3f} > coregistration.max_error={cfg.max_error}; estimated "
            f"dy={dy:+.2f}, dx={dx:+.2f}): the dates share too little texture to check their "
            "alignment; raise coregistration.max_error to accept such pairs uncorrected, or pick "
            "another coregistration.band",
        )
    if magnitude > cfg.max_shift_px:
        return _quarantine(
            sample,
            "shift_too_large",
            f"after scene is shifted by {magnitude:.2f} px (dy={dy:+.2f}, dx={dx:+.2f}, "
            f"error={error:.3f}), more than coregistration.max_shift_px={cfg.max_shift_px}; "
            "raise coregistration.max_shift_px to correct it anyway",
        )
    applied = magnitude >= cfg.min_shift_px
    after = sample.after
    residual = magnitude
    if applied:
        after = apply_shift(sample.after, (dy, dx))
        try:
            (ry, rx), _ = estimate_shift(
                reference, after[band_index], upsample_factor=cfg.upsample_factor
            )
        except CoregistrationError as exc:
            return _quarantine(
                sample,
                "coreg_failed",
                f"cannot re-estimate the residual on band {band_index} after applying "
                f"(dy={dy:+.2f}, dx={dx:+.2f}): {exc}; pick another coregistration.band",
            )
        residual = math.hypot(ry, rx)
    if residual > cfg.max_residual_px:
        fix = "raise coregistration.max_residual_px to keep it"
        if applied:
            why = "after correction"
        else:
            why = f"uncorrected (below coregistration.min_shift_px={cfg.min_shift_px})"
            fix = "lower coregistration.min_shift_px to correct it, or " + fix
        return _quarantine(
            sample,
            "residual_too_large",
            f"residual misregistration {why} is {residual:.2f} px, more than "
            f"coregistration.max_residual_px={cfg.max_residual_px} (estimated shift "
            f"dy={dy:+.2f}, dx={dx:+.2f}); {fix}",
        )
    result = CoregResult(shift_px=(dy, dx), residual_px=residual, error=error, applied=applied)
    return dataclasses.replace(sample, after=after, coreg=result)
