"""Sub-pixel co-registration of the after scene onto the before scene.

The shift is estimated by upsampled cross-correlation
(:func:`skimage.registration.phase_cross_correlation`) of the two images' **gradient
magnitudes**: edges sit in the same place on both dates even when the brightness changed
(season, sun angle, sensor), so the estimate is robust to radiometric differences.

Sign convention: a shift ``(dy, dx)`` is what to **apply** to the after scene (the moving image)
to align it with the before scene; positive moves the content down / right. When the after
scene is the before scene displaced by ``d``, the estimate is ``-d``.

A cell's own 64-px window can lock onto a wrong peak with an error under ``max_error`` (water,
shoreline: measured on OSCD, ~2.4 px off at errors 0.947 / 0.967), and re-measuring the residual
on the same window cannot catch it. So each cell's estimate is checked against its
neighbourhood: the load stage reads the registration band over the cell plus
``coregistration.margin_px`` per side, and :func:`neighbourhood` estimates the shift on a grid
of tie points over it (adjacent ``tie_window_px`` windows, as AROSICS lays over a scene) with a robust consensus (the median, the tie points within ``tie_agreement_px`` of it,
at least ``min_tie_points`` of them and a majority). A cell within ``consistency_tolerance_px``
of the consensus keeps its own estimate; one that disagrees (or has no trusted estimate) gets
the consensus; with no consensus the cell is quarantined ('inconsistent'). Everything a cell
needs is read for that cell: no cell depends on another cell's result, whatever the engine.

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

from geodelta.pipelines.stages.sample import Sample
from geodelta.pipelines.stages.shift_estimation import (
    EDGE_TAPER,
    GRADIENT_SIGMA,
    CoregistrationError,
    Neighbourhood,
    TieWindows,
    _Reference,
    estimate_shift,
    neighbourhood,
    tie_points,
)
from geodelta.pipelines.stages.shift_estimation import (
    _gradient as _gradient,  # re-exported: tests pin the estimate to skimage with it
)
from geodelta.schemas import CoregResult, QuarantineRecord
from geodelta.schemas.config import CoregConfig

__all__ = [
    "EDGE_TAPER",
    "GRADIENT_SIGMA",
    "RECORD_DECIMALS",
    "CoregistrationError",
    "Neighbourhood",
    "TieWindows",
    "apply_shift",
    "coregister",
    "estimate_shift",
    "neighbourhood",
    "tie_points",
]

#: Decimals kept in the recorded shift, residual and error.
RECORD_DECIMALS = 6


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
    valid = np.isfinite(arr)
    whole = valid.all(axis=(1, 2))
    if whole.all():
        return _cubic_shift(arr, dy, dx)
    out = np.empty_like(arr)
    if whole.any():
        out[whole] = _cubic_shift(arr[whole], dy, dx)
    for c in np.flatnonzero(~whole):
        band, ok = arr[c], valid[c]
        if not ok.any():
            out[c] = np.nan
            continue
        nearest = ndi.distance_transform_edt(~ok, return_distances=False, return_indices=True)
        filled = band[tuple(nearest)]
        shifted = _cubic_shift(filled[np.newaxis], dy, dx)[0]
        still_valid = ndi.shift(ok.astype(np.float32), (dy, dx), order=1, mode="nearest") >= 0.5
        out[c] = np.where(still_valid, shifted, np.nan)
    return out


#: Edge padding :func:`scipy.ndimage.shift` adds before its spline prefilter (``mode='nearest'``).
_SPLINE_PAD = 12


def _cubic_weights(t: float) -> tuple[float, float, float, float]:
    """Cubic B-spline weights of the four coefficients around a point at fraction ``t``."""
    s = 1.0 - t
    return (
        s * s * s / 6.0,
        (4.0 - 6.0 * t * t + 3.0 * t * t * t) / 6.0,
        (1.0 + 3.0 * t + 3.0 * t * t - 3.0 * t * t * t) / 6.0,
        t * t * t / 6.0,
    )


def _cubic_shift(stack: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``scipy.ndimage.shift(band, (dy, dx), order=3, mode='nearest')`` for each band, faster.

    The same spline (edge-padded, prefiltered in float64), evaluated separably: a shift is the
    same for every pixel, so the four interpolation weights per axis are computed once instead
    of per pixel (SciPy's generic path does the latter, ~2x slower on a 128 px cell). Outputs
    match :func:`scipy.ndimage.shift` bit for bit (checked in tests/test_perf_equivalence.py).
    Shifts beyond the padding go to SciPy itself.
    """
    if max(abs(dy), abs(dx)) > _SPLINE_PAD - 3:
        return np.stack([ndi.shift(b, (dy, dx), order=3, mode="nearest") for b in stack])
    count, height, width = stack.shape
    pad = _SPLINE_PAD
    # edge padding, straight into the float64 buffer the prefilter works in
    coeffs = np.empty((count, height + 2 * pad, width + 2 * pad), dtype=np.float64)
    coeffs[:, pad : pad + height, pad : pad + width] = stack
    coeffs[:, :pad, pad : pad + width] = stack[:, :1]
    coeffs[:, pad + height :, pad : pad + width] = stack[:, -1:]
    coeffs[:, :, :pad] = coeffs[:, :, pad : pad + 1]
    coeffs[:, :, pad + width :] = coeffs[:, :, pad + width - 1 : pad + width]
    ndi.spline_filter1d(coeffs, 3, axis=1, output=coeffs, mode="nearest")
    ndi.spline_filter1d(coeffs, 3, axis=2, output=coeffs, mode="nearest")
    oy, ox = pad - dy, pad - dx
    iy, ix = math.floor(oy) - 1, math.floor(ox) - 1
    wy, wx = _cubic_weights(oy - math.floor(oy)), _cubic_weights(ox - math.floor(ox))
    rows = wy[0] * coeffs[:, iy : iy + height]
    for k in range(1, 4):
        rows += wy[k] * coeffs[:, iy + k : iy + k + height]
    out = wx[0] * rows[:, :, ix : ix + width]
    for k in range(1, 4):
        out += wx[k] * rows[:, :, ix + k : ix + k + width]
    return out.astype(stack.dtype)


def _quarantine(sample: Sample, reason: str, detail: str) -> QuarantineRecord:
    return sample.quarantine("coregister", reason, detail)


def _cell_estimate(
    sample: Sample, cfg: CoregConfig, band_index: int
) -> tuple[_Reference | None, tuple[float, float, float] | None, tuple[str, str] | None]:
    """The cell's own estimate: ``(prepared reference, (dy, dx, error), None)`` when it can be
    trusted, else ``(reference or None, estimate or None, (reason, detail))``."""
    try:
        prepared = _Reference(np.asarray(sample.before[band_index], dtype=np.float64))
        (dy, dx), error = prepared.estimate(
            np.asarray(sample.after[band_index], dtype=np.float64), cfg.upsample_factor
        )
    except CoregistrationError as exc:
        return (
            None,
            None,
            (
                "coreg_failed",
                f"cannot estimate the shift on band {band_index}: {exc}. The cell is probably "
                "cloud-covered or no-data; raise pairing.min_clear_fraction or "
                "pairing.min_valid_fraction, or pick another coregistration.band",
            ),
        )
    if not math.isfinite(error):
        return (
            prepared,
            None,
            (
                "coreg_failed",
                f"shift estimate on band {band_index} is not finite (error={error}); "
                "pick another coregistration.band",
            ),
        )
    if error > cfg.max_error:
        return (
            prepared,
            (dy, dx, error),
            (
                "coreg_unreliable",
                f"the shift estimate on band {band_index} is not reliable (phase-correlation "
                f"error={error:.3f} > coregistration.max_error={cfg.max_error}; estimated "
                f"dy={dy:+.2f}, dx={dx:+.2f}): the dates share too little texture to check their "
                "alignment; raise coregistration.max_error to accept such pairs uncorrected, or pick "
                "another coregistration.band",
            ),
        )
    magnitude = math.hypot(dy, dx)
    if magnitude > cfg.max_shift_px:
        return (
            prepared,
            (dy, dx, error),
            (
                "shift_too_large",
                f"after scene is shifted by {magnitude:.2f} px (dy={dy:+.2f}, dx={dx:+.2f}, "
                f"error={error:.3f}), more than coregistration.max_shift_px={cfg.max_shift_px}; "
                "raise coregistration.max_shift_px to correct it anyway",
            ),
        )
    return prepared, (dy, dx, error), None


def _no_consensus(hood: Neighbourhood, cfg: CoregConfig, what: str) -> str:
    return (
        f"{what}: the tie points around the cell do not agree on a shift ({hood.agreeing} of "
        f"{hood.usable} usable, of {hood.windows} windows, within "
        f"coregistration.tie_agreement_px={cfg.tie_agreement_px} of their "
        f"median; a consensus needs at least coregistration.min_tie_points={cfg.min_tie_points} "
        "and a majority), so no shift can be checked (water, clouds or change around the "
        "cell); raise coregistration.margin_px for more context"
    )


def coregister(
    sample: Sample,
    cfg: CoregConfig,
    *,
    band_index: int,
    tie_reference: TieWindows | None = None,
) -> Sample | QuarantineRecord:
    """Co-register the after scene of a sample onto its before scene.

    The shift of ``sample.after`` against ``sample.before`` is estimated on one band, on the
    cell's own window. When the sample carries a context (the band over the cell plus
    ``cfg.margin_px`` per side, read by the load stage), that estimate is checked against the
    consensus of tie points over the context (:func:`neighbourhood`): a cell whose estimate is
    within ``cfg.consistency_tolerance_px`` of the consensus keeps it; one that disagrees, or
    whose own estimate is not trusted (error above ``cfg.max_error``, beyond
    ``cfg.max_shift_px``, no texture), gets the consensus instead (``source='neighbourhood'``);
    without a consensus the cell is quarantined, never shipped with an unchecked shift: for
    its own estimate's reason when that was not trusted ('coreg_unreliable',
    'shift_too_large', 'coreg_failed'), else as 'inconsistent'. Without a context
    (``margin_px: 0``) the cell's own estimate is used unchecked, and an untrusted one is
    quarantined for its reason.

    The shift is applied when its magnitude is at least ``cfg.min_shift_px``; the residual is
    then re-estimated after applying it (on the cell for its own estimate, by the tie points
    for the neighbourhood's); when not applied, the residual is the shift's magnitude.

    Args:
        sample: sample with ``before`` and ``after`` (C, H, W) stacks on one grid, and
            optionally ``coreg_context``.
        cfg: the ``coregistration`` section of the build config.
        band_index: index of the band (in the stacks) to register on.
        tie_reference: the tie-point windows of the before context (``coreg_context[0]``),
            prepared once (:class:`TieWindows`, ``cfg.tie_window_px``) for several after scenes
            registered onto the same before scene (the dates of a sequence); None prepares them
            here. Windows prepared from other pixels are refused.

    Returns:
        A copy of the sample with ``after`` corrected, ``coreg`` set and the context dropped,
        or a :class:`QuarantineRecord` (stage 'coregister') with reason 'inconsistent',
        'coreg_unreliable', 'shift_too_large', 'residual_too_large' or 'coreg_failed'.

    Raises:
        IndexError: ``band_index`` is not a band of the stacks.
        CoregistrationError: the before and after stacks (or contexts) differ in shape.
        ValueError: ``tie_reference`` was not prepared from this sample's before context
            with ``cfg.tie_window_px``.
    """
    n_bands = sample.before.shape[0]
    if not -n_bands <= band_index < n_bands or sample.after.shape[0] != n_bands:
        raise IndexError(
            f"band_index out of range (bands={n_bands} before / {sample.after.shape[0]} after, "
            f"actual={band_index}); check coregistration.band against imagery.bands"
        )
    if sample.after.shape != sample.before.shape:  # on different grids: a bug upstream
        raise CoregistrationError(
            "bad_input",
            f"before and after stacks must be of one shape (actual={sample.before.shape} and "
            f"{sample.after.shape})",
        )
    prepared, cell, problem = _cell_estimate(sample, cfg, band_index)
    context = sample.coreg_context
    hood: Neighbourhood | None = None
    source = "cell"
    if context is None:
        if problem is not None or cell is None:
            return _quarantine(sample, *(problem or ("coreg_failed", "no estimate")))
        dy, dx, error = cell
    else:
        reference = _tie_reference(tie_reference, context[0], cfg)  # reused by the check below
        hood = neighbourhood(reference, context[1], cfg)
        if not hood.holds(cfg.min_tie_points) or hood.shift is None:
            # The cell's own reason comes first, except a shift beyond max_shift_px that tie
            # points within it contradict (a wrong peak, not a scene shifted that far).
            if problem is not None and (problem[0] != "shift_too_large" or hood.usable == 0):
                either = _no_consensus(hood, cfg, "no neighbourhood estimate either")
                return _quarantine(sample, problem[0], f"{problem[1]}; and {either}")
            what = "the cell's shift cannot be checked"
            if cell is not None and problem is not None:
                what = f"the cell's own estimate (dy={cell[0]:+.2f}, dx={cell[1]:+.2f}) is beyond "
                what += f"coregistration.max_shift_px={cfg.max_shift_px} and cannot be checked"
            return _quarantine(sample, "inconsistent", _no_consensus(hood, cfg, what))
        hy, hx = hood.shift
        if (
            cell is not None
            and problem is None
            and math.hypot(cell[0] - hy, cell[1] - hx) <= cfg.consistency_tolerance_px
        ):
            dy, dx, error = cell
        else:
            source = "neighbourhood"
            dy, dx = hy, hx
            error = hood.error
    magnitude = math.hypot(dy, dx)
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
        if source == "cell":
            assert prepared is not None  # a trusted cell estimate has its reference
            try:
                (ry, rx), _ = prepared.estimate(
                    np.asarray(after[band_index], dtype=np.float64), cfg.upsample_factor
                )
            except CoregistrationError as exc:
                return _quarantine(
                    sample,
                    "coreg_failed",
                    f"cannot re-estimate the residual on band {band_index} after applying "
                    f"(dy={dy:+.2f}, dx={dx:+.2f}): {exc}; pick another coregistration.band",
                )
            residual = math.hypot(ry, rx)
        else:
            assert context is not None
            moved = apply_shift(context[1][np.newaxis], (dy, dx))[0]
            check = neighbourhood(reference, moved, cfg)
            if not check.holds(cfg.min_tie_points) or check.shift is None:
                return _quarantine(
                    sample,
                    "inconsistent",
                    _no_consensus(
                        check,
                        cfg,
                        f"after applying the neighbourhood's shift (dy={dy:+.2f}, dx={dx:+.2f})",
                    ),
                )
            residual = math.hypot(*check.shift)
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
    # Recorded at a fixed precision (1e-6 px / 1e-6): far below what the estimate can resolve,
    # and it keeps the bytes of a sample the same whatever the engine (a BLAS with more threads
    # sums in another order and can move the last bit).
    result = CoregResult(
        shift_px=(_rounded(dy), _rounded(dx)),
        residual_px=_rounded(residual),
        error=_rounded(error),
        applied=applied,
        source=source,
        neighbourhood_px=None
        if hood is None or hood.shift is None
        else (_rounded(hood.shift[0]), _rounded(hood.shift[1])),
        tie_points=None if hood is None else hood.usable,
        agreeing=None if hood is None else hood.agreeing,
    )
    return dataclasses.replace(sample, after=after, coreg=result, coreg_context=None)


def _tie_reference(
    prepared: TieWindows | None, context: np.ndarray, cfg: CoregConfig
) -> TieWindows:
    """The before context's tie-point windows: ``prepared`` when it was made from these pixels
    with the configured window size, else refused; prepared here when None."""
    if prepared is None:
        return TieWindows(context, cfg.tie_window_px)
    if prepared.size != cfg.tie_window_px or not np.array_equal(
        prepared.source, context, equal_nan=True
    ):
        raise ValueError(
            "tie_reference was not prepared from this sample's before context with "
            f"coregistration.tie_window_px={cfg.tie_window_px} (prepared: {prepared.size} px "
            f"windows over {prepared.shape})"
        )
    return prepared


def _rounded(value: float) -> float:
    return round(value, RECORD_DECIMALS)
