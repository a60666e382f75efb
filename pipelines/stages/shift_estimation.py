"""Shift estimation for co-registration: the cell's own estimate and the tie points around it.

The recipe (gradient magnitudes, taper, upsampled cross-correlation) and why it was chosen are
described in :mod:`geodelta.pipelines.stages.coregister`, the stage that uses these estimates.
The tie points of a context are estimated a few windows at a time (:data:`_BATCH`): the windows
are cut, prepared and Fourier-transformed as a stack, and their cross-correlations (the integer
peak, then the upsampled DFT around it) run batched. Every step is the same arithmetic as one
window at a time (:func:`_cross_correlate`, bit for bit: the reference implementation in
``tests/test_coregister_speed_equivalence.py``). A reference's windows (:class:`TieWindows`) are
prepared once and reused: by the check after a neighbourhood shift is applied, and by the caller
for several after scenes registered onto one before scene (``coregister(..., tie_reference=)``).
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi
from scipy.fft import fftfreq, fftn, ifftn

from geodelta.errors import StageError
from geodelta.schemas.config import CoregConfig

#: Gaussian scale (px) of the gradient magnitude the registration runs on.
GRADIENT_SIGMA = 1.0
#: Share of each side tapered to zero before correlating (see :func:`_taper`).
EDGE_TAPER = 0.1
#: Pixels next to no-data (after dilation by this many px) carry no gradient.
_INVALID_MARGIN_PX = 3
#: Fewest valid pixels (in each image) an estimate needs.
_MIN_VALID_PX = 16


class CoregistrationError(StageError):
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
    all_valid = n_valid == valid.size
    values = image.ravel() if all_valid else image[valid]
    if all_valid:  # nothing to fill (and no median to sort for)
        filled = image.astype(np.float64)
    else:
        filled = np.where(valid, image, np.median(values)).astype(np.float64)
    grad = ndi.gaussian_gradient_magnitude(filled, GRADIENT_SIGMA)
    bad = ~valid
    if not all_valid:
        bad = ndi.binary_dilation(bad, iterations=_INVALID_MARGIN_PX)
    good = grad.ravel() if all_valid else grad[~bad]
    scale = 1.0 + float(np.abs(values).max())
    spread = float(good.std()) if good.size else 0.0
    if good.size < _MIN_VALID_PX or spread <= 1e-9 * scale:
        raise CoregistrationError(
            "no_texture",
            f"{name} image has no usable texture (gradient std={spread:.3g} over {good.size} px "
            "away from no-data)",
        )
    grad -= good.mean()
    if not all_valid:
        grad[bad] = 0.0
    return grad * _window(grad.shape[0], grad.shape[1])


@lru_cache(maxsize=8)
def _window(height: int, width: int) -> np.ndarray:
    """The 2-D taper of an image shape (read-only, cached: every cell has the same shape)."""
    window = np.outer(_taper(height), _taper(width))
    window.flags.writeable = False
    return window


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
    return _Reference(ref).estimate(mov, upsample_factor)


class _Reference:
    """A reference image prepared once (gradient and its spectrum) for several estimates.

    :func:`coregister` estimates twice against the same reference (the shift, then the residual
    after applying it), so the reference's gradient and FFT are computed once.
    """

    def __init__(self, reference: np.ndarray) -> None:
        self.shape = reference.shape
        self.freq = fftn(_gradient(reference, "reference"))
        self.amp = float(np.sum(np.real(self.freq * self.freq.conj())))

    def estimate(
        self, moving: np.ndarray, upsample_factor: int
    ) -> tuple[tuple[float, float], float]:
        target = fftn(_gradient(moving, "moving"))
        shift, error = _cross_correlate(self.freq, self.amp, target, upsample_factor)
        return (float(shift[0]), float(shift[1])), float(error)


def _cross_correlate(
    src_freq: np.ndarray, src_amp: float, target_freq: np.ndarray, upsample_factor: int
) -> tuple[np.ndarray, float]:
    """Upsampled cross-correlation of two spectra: ``(shift, error)``.

    The same arithmetic, operation for operation, as
    :func:`skimage.registration.phase_cross_correlation` with ``normalization=None`` (so the
    estimates are bit-identical to it), minus what a repeated reference makes redundant: the
    reference spectrum and amplitude come in precomputed and the DFT kernels are cached.
    """
    shape = src_freq.shape
    image_product = src_freq * target_freq.conj()
    cross_correlation = ifftn(image_product)
    maxima = np.unravel_index(np.argmax(np.abs(cross_correlation)), cross_correlation.shape)
    midpoint = np.array([np.trunc(axis_size / 2) for axis_size in shape])
    float_dtype = image_product.real.dtype
    shift = np.stack(maxima).astype(float_dtype, copy=False)
    shift[shift > midpoint] -= np.array(shape)[shift > midpoint]
    if upsample_factor == 1:
        cc_max = cross_correlation[maxima]
        src_amp /= src_freq.size
        target_amp = np.sum(np.real(target_freq * target_freq.conj())) / target_freq.size
    else:
        factor = np.array(upsample_factor, dtype=float_dtype)
        shift = np.round(shift * factor) / factor
        region = np.ceil(factor * 1.5)
        dftshift = np.trunc(region / 2.0)
        offsets = dftshift - shift * factor
        data = image_product.conj()
        for n_items, offset in list(zip(shape, offsets, strict=True))[::-1]:
            kernel = _dft_kernel(n_items, int(region), float(factor), float(offset))
            data = np.tensordot(kernel, data, axes=(1, -1))
        cross_correlation = data.conj()
        maxima = np.unravel_index(np.argmax(np.abs(cross_correlation)), cross_correlation.shape)
        cc_max = cross_correlation[maxima]
        peak = np.stack(maxima).astype(float_dtype, copy=False)
        peak -= dftshift
        shift += peak / factor
        target_amp = np.sum(np.real(target_freq * target_freq.conj()))
    for dim, size in enumerate(shape):
        if size == 1:  # a shift along a length-1 axis has no effect
            shift[dim] = 0
    amp = src_amp * target_amp
    if amp == 0 or np.isnan(cc_max) or np.isnan(amp):
        return shift, math.nan
    with np.errstate(invalid="ignore"):
        error = 1.0 - cc_max * cc_max.conj() / amp
    return shift, float(np.sqrt(np.abs(error)))


@lru_cache(maxsize=64)
def _dft_kernel(n_items: int, region: int, factor: float, offset: float) -> np.ndarray:
    """One axis of the matrix-multiply DFT (skimage's ``_upsampled_dft``), cached."""
    im2pi = 1j * 2 * np.pi
    kernel = (np.arange(region) - offset)[:, None] * fftfreq(n_items, factor)
    kernel = np.exp(-im2pi * kernel)
    kernel.flags.writeable = False
    return kernel


#: Tie windows cross-correlated together (a few at a time: small temporaries stay in cache and
#: in the heap, where large ones cost page faults on every call).
_BATCH = 4
#: Share of a tie-point window that must lie away from no-data for the window to count.
_MIN_WINDOW_VALID = 0.5


@dataclasses.dataclass(frozen=True)
class Neighbourhood:
    """The tie points around a cell and their consensus.

    Attributes:
        shift: consensus ``(dy, dx)`` (the median of the agreeing tie points; same sign convention
            as :func:`estimate_shift`), or None when too few windows could be estimated.
        usable: tie-point windows with an estimate within ``max_error`` and
            ``max_shift_px``.
        agreeing: usable windows within ``tie_agreement_px`` of the tie points' median.
        windows: windows laid over the context.
        error: median phase-correlation error of the agreeing tie points (NaN without any).
    """

    shift: tuple[float, float] | None
    usable: int
    agreeing: int
    windows: int
    error: float = math.nan

    def holds(self, min_points: int) -> bool:
        """A consensus: at least ``min_points`` windows agree, and they are a strict majority."""
        return (
            self.shift is not None
            and self.agreeing >= min_points
            and 2 * self.agreeing > self.usable
        )


def _offsets(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis: every ``stride`` px, the last one flush with the end."""
    if length <= size:
        return [0] if length == size else []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


class TieWindows:
    """The tie-point windows of one context image, prepared and Fourier-transformed in batches.

    The gradient magnitude is computed once over the whole image (not per window), so a window's
    gradient near its border sees the pixels beyond it; each window is then mean-removed, zeroed
    next to no-data and tapered as :func:`_gradient` does. A window counts when half its pixels
    lie away from no-data and it has texture. Prepared once, a reference's windows serve every
    moving image checked against it.

    Attributes:
        source: the image the windows were prepared from.
        shape: the image's (height, width).
        size: the window size (px).
        count: windows laid over the image (usable or not).
        usable: (count,) bool, the windows with enough valid texture.
        batches: per :data:`_BATCH` consecutive windows (row-major), their spectra
            (n, size, size) and ``sum(|spectrum|^2)`` of each (n,); a window that is not usable
            has meaningless values there.
    """

    def __init__(self, image: np.ndarray, size: int) -> None:
        self.source = np.array(image)  # a copy: what they were prepared from, as it was
        image = np.asarray(image, dtype=np.float64)
        height, width = self.shape = image.shape
        self.size = size
        starts = [(y, x) for y in _offsets(height, size, size) for x in _offsets(width, size, size)]
        self.count = len(starts)
        self.usable = np.zeros(self.count, dtype=bool)
        self.batches: list[tuple[np.ndarray, np.ndarray]] = []
        if not self.count:
            return
        valid = np.isfinite(image)
        bad = None
        if valid.all():
            filled = image
        else:
            values = image[valid]
            fill = float(np.median(values)) if values.size else 0.0
            filled = np.where(valid, image, fill)
            bad = ndi.binary_dilation(~valid, iterations=_INVALID_MARGIN_PX)
        scale = 1.0 + float(np.abs(filled).max())
        grad = ndi.gaussian_gradient_magnitude(filled, GRADIENT_SIGMA)
        need = max(_MIN_VALID_PX, _MIN_WINDOW_VALID * size * size)
        taper = _window(size, size)
        for first in range(0, self.count, _BATCH):  # a few windows at a time: small temporaries
            batch = starts[first : first + _BATCH]
            windows = np.stack([grad[y : y + size, x : x + size] for y, x in batch])
            masks = None if bad is None else [bad[y : y + size, x : x + size] for y, x in batch]
            clean = [k for k in range(len(batch)) if masks is None or not masks[k].any()]
            if clean:  # away from no-data: every window's statistics at once
                rows = windows[clean].reshape(len(clean), -1)  # one window's pixels per row
                spread = rows.std(axis=1)  # row by row: the same pairwise sums as one window's
                self.usable[[first + k for k in clean]] = spread > 1e-9 * scale
                windows[clean] = (rows - rows.mean(axis=1)[:, None]).reshape(-1, size, size)
            for k in range(len(batch)):  # touching no-data: one at a time
                if masks is None or not masks[k].any():
                    continue
                good = windows[k][~masks[k]]
                if good.size < need or float(good.std()) <= 1e-9 * scale:
                    continue
                self.usable[first + k] = True
                windows[k] -= good.mean()
                windows[k][masks[k]] = 0.0
            windows *= taper
            freq = fftn(windows, axes=(-2, -1))
            conj = freq.conj()
            self.batches.append((freq, np.real(freq * conj).reshape(len(batch), -1).sum(axis=1)))


def _cross_correlate_many(
    src: np.ndarray, src_amp: np.ndarray, target: np.ndarray, upsample_factor: int
) -> list[tuple[float, float, float]]:
    """:func:`_cross_correlate` of N spectrum pairs at once: ``(dy, dx, error)`` per pair.

    The same operations as :func:`_cross_correlate` (``upsample_factor`` > 1), each applied to the
    stack: elementwise operations and per-row reductions give every pair the bits it gets alone,
    and the upsampled DFT is one matrix product per pair and axis, as there. Operands are kept in
    named arrays so NumPy never computes a product in place of a temporary (its in-place loop
    rounds differently from the out-of-place one the single-pair path uses).
    """
    count, height, width = src.shape
    target_conj = target.conj()
    image_product = src * target_conj
    cross_correlation = ifftn(image_product, axes=(-2, -1))
    magnitude = np.abs(cross_correlation).reshape(count, -1)
    maxima = np.unravel_index(np.argmax(magnitude, axis=1), (height, width))
    shape = np.array([height, width])
    midpoint = np.trunc(shape / 2)
    shift = np.stack(maxima, axis=1).astype(np.float64)
    over = shift > midpoint
    shift[over] -= np.broadcast_to(shape, shift.shape)[over]
    factor = np.array(upsample_factor, dtype=np.float64)
    shift = np.round(shift * factor) / factor
    region = np.ceil(factor * 1.5)
    dftshift = np.trunc(region / 2.0)
    offsets = dftshift - shift * factor
    data = image_product.conj()
    for axis, n_items in ((1, width), (0, height)):  # the last axis first, as there
        kernels = np.stack(
            [_dft_kernel(n_items, int(region), float(factor), float(o)) for o in offsets[:, axis]]
        )
        data = np.matmul(kernels, data.swapaxes(1, 2))  # per pair: tensordot(kernel, data)
    # the upsampled cross-correlation is data.conj(): same magnitudes, so only its peaks are
    # conjugated (a conjugate is exact)
    peak_index = np.argmax(np.abs(data).reshape(count, -1), axis=1)
    peaks = np.unravel_index(peak_index, data.shape[1:])
    cc_max = data[np.arange(count), peaks[0], peaks[1]].conj()
    peak = np.stack(peaks, axis=1).astype(np.float64)
    peak -= dftshift
    shift += peak / factor
    target_power = np.real(target * target_conj).reshape(count, -1).sum(axis=1)
    out = []
    for i in range(count):
        amp = float(src_amp[i]) * target_power[i]
        peak_cc = cc_max[i]
        if amp == 0 or np.isnan(peak_cc) or np.isnan(amp):
            error = math.nan
        else:
            with np.errstate(invalid="ignore"):
                error = float(np.sqrt(np.abs(1.0 - peak_cc * peak_cc.conj() / amp)))
        out.append((float(shift[i, 0]), float(shift[i, 1]), error))
    return out


def _window_estimates(
    ref: TieWindows, mov: TieWindows, upsample_factor: int
) -> list[tuple[float, float, float]]:
    """``(dy, dx, error)`` of every window usable on both images, in window order."""
    out: list[tuple[float, float, float]] = []
    for first, ((src, amp), (target, _)) in zip(
        range(0, ref.count, _BATCH), zip(ref.batches, mov.batches, strict=True), strict=True
    ):
        both = ref.usable[first : first + len(src)] & mov.usable[first : first + len(src)]
        if not both.all():
            src, amp, target = src[both], amp[both], target[both]
        if not len(src):
            continue
        if upsample_factor > 1:
            out += _cross_correlate_many(src, amp, target, upsample_factor)
            continue
        for s, a, t in zip(src, amp, target, strict=True):
            shift, error = _cross_correlate(s, float(a), t, upsample_factor)
            out.append((float(shift[0]), float(shift[1]), float(error)))
    return out


def tie_points(
    reference: np.ndarray | TieWindows, moving: np.ndarray, cfg: CoregConfig
) -> list[tuple[float, float, float]]:
    """Shift estimates on a grid of windows over a context image pair.

    Adjacent windows of ``cfg.tie_window_px`` (AROSICS-style tie points, here over one cell's
    context; the last one of a row or column flush with the edge); a window needs half its
    pixels away from no-data and texture on both dates, an error of at most ``cfg.max_error``
    and a shift of at most ``cfg.max_shift_px`` (beyond it, a wrong peak; a scene really
    shifted that far leaves no usable tie point, and the cell's own estimate quarantines it as
    'shift_too_large').

    Args:
        reference: 2-D context of the before scene's registration band (NaN = no data), or its
            windows already prepared (:class:`TieWindows`, ``cfg.tie_window_px``).
        moving: the after scene's band over the same grid.
        cfg: the ``coregistration`` section.

    Returns:
        ``(dy, dx, error)`` of every usable window, in row-major window order (same sign
        convention as :func:`estimate_shift`).

    Raises:
        CoregistrationError: the two contexts differ in shape.
        ValueError: prepared windows of another size than ``cfg.tie_window_px``.
    """
    ref = _tie_windows(reference, cfg)
    mov = TieWindows(moving, cfg.tie_window_px)
    if mov.shape != ref.shape:  # on different grids: a bug upstream
        raise CoregistrationError(
            "bad_input",
            f"reference and moving contexts must be of one shape (actual={ref.shape} and "
            f"{mov.shape})",
        )
    return [
        (dy, dx, error)
        for dy, dx, error in _window_estimates(ref, mov, cfg.upsample_factor)
        if math.isfinite(error)
        and error <= cfg.max_error
        and math.hypot(dy, dx) <= cfg.max_shift_px
    ]


def _tie_windows(reference: np.ndarray | TieWindows, cfg: CoregConfig) -> TieWindows:
    if isinstance(reference, TieWindows):
        if reference.size != cfg.tie_window_px:
            raise ValueError(
                f"prepared windows are {reference.size} px, the config's "
                f"coregistration.tie_window_px is {cfg.tie_window_px}"
            )
        return reference
    return TieWindows(reference, cfg.tie_window_px)


def neighbourhood(
    reference: np.ndarray | TieWindows, moving: np.ndarray, cfg: CoregConfig
) -> Neighbourhood:
    """The tie points over a context pair and their robust consensus.

    The median of the usable tie points (per axis) is the robust centre; the tie points within
    ``cfg.tie_agreement_px`` of it agree, and their median is the consensus shift.

    Args:
        reference: 2-D context of the before scene's registration band (NaN = no data), or its
            prepared windows (:class:`TieWindows`).
        moving: the after scene's band over the same grid.
        cfg: the ``coregistration`` section.
    """
    ref = _tie_windows(reference, cfg)
    points = tie_points(ref, moving, cfg)
    if not points:
        return Neighbourhood(None, 0, 0, ref.count)
    arr = np.array(points, dtype=np.float64)
    centre = np.median(arr[:, :2], axis=0)
    near = np.hypot(*(arr[:, :2] - centre).T) <= cfg.tie_agreement_px
    agreeing = arr[near] if near.any() else arr
    dy, dx, error = (float(v) for v in np.median(agreeing, axis=0))
    return Neighbourhood((dy, dx), len(points), int(near.sum()), ref.count, error)
