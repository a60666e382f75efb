"""The batched tie points give exactly what the window-by-window code gave.

:class:`~geodelta.pipelines.stages.shift_estimation.TieWindows` prepares and transforms a
context's windows a few at a time and cross-correlates them batched; the reference below is the
code it replaced (one window at a time, :func:`_cross_correlate` per window). Every tie point,
and so every neighbourhood, must be the same to the bit: the shipped shifts and records depend
on them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.fft import fftn

from geodelta.pipelines.stages.coregister import CoregistrationError, neighbourhood, tie_points
from geodelta.pipelines.stages.sample import Sample
from geodelta.pipelines.stages.shift_estimation import (
    _INVALID_MARGIN_PX,
    _MIN_VALID_PX,
    _MIN_WINDOW_VALID,
    GRADIENT_SIGMA,
    TieWindows,
    _cross_correlate,
    _offsets,
    _window,
)
from geodelta.schemas.config import CoregConfig


def reference_tie_points(
    reference: np.ndarray, moving: np.ndarray, cfg: CoregConfig
) -> list[tuple[float, float, float]]:
    """tie_points as first written: each window cut, prepared and correlated on its own."""

    def gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        valid = np.isfinite(image)
        if valid.all():
            filled, bad = image.astype(np.float64), np.zeros(image.shape, dtype=bool)
        else:
            values = image[valid]
            fill = float(np.median(values)) if values.size else 0.0
            filled = np.where(valid, image, fill).astype(np.float64)
            bad = ndi.binary_dilation(~valid, iterations=_INVALID_MARGIN_PX)
        grad = ndi.gaussian_gradient_magnitude(filled, GRADIENT_SIGMA)
        return grad, bad, 1.0 + float(np.abs(filled).max())

    def window(
        g: tuple[np.ndarray, np.ndarray, float], y: int, x: int, size: int
    ) -> np.ndarray | None:
        grad, bad = g[0][y : y + size, x : x + size], g[1][y : y + size, x : x + size]
        good = grad[~bad]
        if good.size < max(_MIN_VALID_PX, _MIN_WINDOW_VALID * grad.size):
            return None
        if float(good.std()) <= 1e-9 * g[2]:
            return None
        out = grad - good.mean()
        out[bad] = 0.0
        return out * _window(size, size)

    size = cfg.tie_window_px
    ref = gradients(np.asarray(reference, dtype=np.float64))
    mov = gradients(np.asarray(moving, dtype=np.float64))
    points = []
    for y in _offsets(reference.shape[0], size, size):
        for x in _offsets(reference.shape[1], size, size):
            a, b = window(ref, y, x, size), window(mov, y, x, size)
            if a is None or b is None:
                continue
            freq = fftn(a)
            amp = float(np.sum(np.real(freq * freq.conj())))
            shift, error = _cross_correlate(freq, amp, fftn(b), cfg.upsample_factor)
            dy, dx = float(shift[0]), float(shift[1])
            if (
                math.isfinite(error)
                and error <= cfg.max_error
                and math.hypot(dy, dx) <= cfg.max_shift_px
            ):
                points.append((dy, dx, float(error)))
    return points


def context_pair(seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A textured context and its copy moved by a sub-pixel shift, with some no-data and
    brightness change (float32, as the load stage reads them)."""
    rng = np.random.default_rng(seed)
    image = ndi.gaussian_filter(rng.normal(size=shape), 2.5) * 4.0 + 0.3
    image[20:60, 30:90] += 0.5
    shift = rng.uniform(-1.5, 1.5, size=2)
    moved = np.fft.ifftn(ndi.fourier_shift(np.fft.fftn(image), shift)).real * 1.2 + 0.02
    moved += rng.normal(scale=0.05, size=shape)
    return image.astype(np.float32), moved.astype(np.float32)


CASES = [
    # (seed, context shape, window, upsample, no-data in the reference / moving image)
    (0, (256, 256), 64, 50, False),
    (1, (256, 256), 64, 50, True),
    (2, (192, 224), 64, 50, True),  # the last window of each row / column flush with the edge
    (3, (200, 200), 48, 10, True),
    (4, (256, 256), 32, 20, False),
    (5, (160, 160), 64, 1, True),
    (6, (256, 256), 128, 50, False),
]


@pytest.mark.parametrize(("seed", "shape", "size", "upsample", "holes"), CASES)
def test_batched_tie_points_are_bit_identical_to_one_window_at_a_time(
    seed: int, shape: tuple[int, int], size: int, upsample: int, holes: bool
) -> None:
    before, after = context_pair(seed, shape)
    if holes:
        before[5:40, 100:180] = np.nan  # half a window and more: some windows drop out
        after[shape[0] - 30 :, :50] = np.nan
        after[70:74, 10:14] = np.nan  # a speck: the window stays, zeroed around it
    cfg = CoregConfig(tie_window_px=size, upsample_factor=upsample)
    want = reference_tie_points(before, after, cfg)
    got = tie_points(before, after, cfg)
    assert got == want  # floats compared exactly
    assert len(want) >= 2


def test_prepared_reference_windows_give_the_same_neighbourhood() -> None:
    before, after = context_pair(8, (256, 256))
    cfg = CoregConfig()
    prepared = TieWindows(before, cfg.tie_window_px)
    first = neighbourhood(prepared, after, cfg)
    assert first == neighbourhood(before, after, cfg)
    assert neighbourhood(prepared, after[::-1].copy(), cfg) == neighbourhood(
        before, after[::-1].copy(), cfg
    )  # reused for another moving image: the same as prepared afresh
    assert first.windows == 16 and first.usable >= 12


def test_mismatched_windows_or_contexts_are_refused() -> None:
    before, after = context_pair(9, (192, 192))
    with pytest.raises(ValueError, match="tie_window_px"):
        neighbourhood(TieWindows(before, 32), after, CoregConfig())
    with pytest.raises(CoregistrationError, match="one shape"):
        tie_points(before, after[:128], CoregConfig())


def test_a_prepared_tie_reference_registers_like_a_fresh_one() -> None:
    """coregister(..., tie_reference=...) for the dates of a sequence: the same results, and
    windows prepared from other pixels (or since changed) are refused."""
    from geodelta.pipelines.stages.coregister import coregister
    from tests.test_coregister import context_sample, fourier_shift, texture

    before = texture(7, (192, 192))
    cfg = CoregConfig()
    prepared = TieWindows(before.astype(np.float32), cfg.tie_window_px)
    for displacement in [(0.4, -1.3), (-0.7, 0.2)]:
        after = fourier_shift(before, displacement)
        after[64:128, 64:128] = fourier_shift(before, (4.5, 0.5))[64:128, 64:128]  # a wrong peak
        sample = context_sample(before, after)
        fresh = coregister(sample, cfg, band_index=0)
        reused = coregister(sample, cfg, band_index=0, tie_reference=prepared)
        assert isinstance(fresh, Sample) and isinstance(reused, Sample)
        assert reused.coreg == fresh.coreg and np.array_equal(reused.after, fresh.after)
        assert reused.coreg is not None and reused.coreg.source == "neighbourhood"
    other = context_sample(texture(8, (192, 192)), before)
    with pytest.raises(ValueError, match="tie_reference was not prepared"):
        coregister(other, cfg, band_index=0, tie_reference=prepared)
    with pytest.raises(ValueError, match="tie_reference was not prepared"):
        coregister(sample, CoregConfig(tie_window_px=32), band_index=0, tie_reference=prepared)
