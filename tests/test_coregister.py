"""Sub-pixel co-registration: known Fourier shifts on a seeded texture and on OSCD bercy B08."""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy import ndimage as ndi

from geodelta.pipelines.stages.coregister import (
    CoregistrationError,
    apply_shift,
    coregister,
    estimate_shift,
    neighbourhood,
)
from geodelta.pipelines.stages.sample import Sample
from geodelta.schemas import AssetRef, QuarantineRecord, ScenePair, SceneRef, TileJob
from geodelta.schemas.config import CoregConfig

BERCY = Path("/work/shared/data/oscd/bercy")


def texture(seed: int = 0, shape: tuple[int, int] = (128, 128)) -> np.ndarray:
    """Smooth noise plus a few sharp-edged blocks (fields, buildings, a road)."""
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.normal(size=shape), 3.0) * 4.0 + 0.2
    img[40:80, 30:90] += 0.5
    img[90:100, 10:120] -= 0.3
    img[10:30, 95:115] += 0.8
    return img


def fourier_shift(image: np.ndarray, displacement: tuple[float, float]) -> np.ndarray:
    """``image`` with its content moved by ``displacement`` (dy, dx), exactly (circularly)."""
    return np.fft.ifftn(ndi.fourier_shift(np.fft.fftn(image), displacement)).real


def bercy_b08() -> np.ndarray:
    path = next((BERCY / "imgs_1").glob("*_B08.tif"))
    with rasterio.open(path) as src:
        return src.read(1).astype(np.float64)[64:320, 48:304] / 10000.0  # 256 x 256, 10 m


DISPLACEMENTS = [(0.3, -1.7), (-1.7, 0.3), (-0.3, 1.7), (1.7, -0.3), (0.3, 1.7), (-2.45, -0.85)]


@pytest.mark.parametrize("displacement", DISPLACEMENTS)
def test_recovers_known_subpixel_shift(displacement: tuple[float, float]) -> None:
    reference = texture()
    moving = fourier_shift(reference, displacement)
    (dy, dx), error = estimate_shift(reference, moving)
    # the estimate is the correction: minus the displacement
    assert dy == pytest.approx(-displacement[0], abs=0.1)
    assert dx == pytest.approx(-displacement[1], abs=0.1)
    assert 0.0 <= error < 0.7  # unrelated images: ~1.0 (see below)


def test_apply_shift_aligns_to_a_small_residual() -> None:
    reference = texture(1)
    moving = fourier_shift(reference, (0.3, -1.7))
    shift, _ = estimate_shift(reference, moving)
    aligned = apply_shift(moving[None], shift)[0]
    (ry, rx), _ = estimate_shift(reference, aligned)
    assert math.hypot(ry, rx) < 0.1
    interior = (slice(8, -8), slice(8, -8))
    before = np.abs(moving - reference)[interior].mean()
    after = np.abs(aligned - reference)[interior].mean()
    assert after < 0.1 * before


def test_radiometric_change_does_not_break_the_estimate() -> None:
    reference = texture(2)
    moving = 1.3 * fourier_shift(reference, (0.3, -1.7)) + 0.07
    (dy, dx), error = estimate_shift(reference, moving)
    assert (dy, dx) == (pytest.approx(-0.3, abs=0.1), pytest.approx(1.7, abs=0.1))
    assert error < 0.5


@pytest.mark.parametrize("displacement", [(0.3, -1.7), (-1.25, 0.8)])
def test_real_bercy_b08_known_fourier_shift(displacement: tuple[float, float]) -> None:
    reference = bercy_b08()
    moving = 1.3 * fourier_shift(reference, displacement) + 0.01
    (dy, dx), _ = estimate_shift(reference, moving)
    assert dy == pytest.approx(-displacement[0], abs=0.1)
    assert dx == pytest.approx(-displacement[1], abs=0.1)


def test_real_bercy_b08_spline_shift_with_borders() -> None:
    """A non-circular shift (content leaves one edge, the border is replicated at the other)."""
    reference = bercy_b08()
    moving = ndi.shift(reference, (0.3, -1.7), order=3, mode="nearest")
    (dy, dx), _ = estimate_shift(reference, moving)
    assert (dy, dx) == (pytest.approx(-0.3, abs=0.1), pytest.approx(1.7, abs=0.1))


def test_unrelated_images_have_a_large_error() -> None:
    rng = np.random.default_rng(3)
    _, error = estimate_shift(texture(4), ndi.gaussian_filter(rng.normal(size=(128, 128)), 2.0))
    assert error > 0.9  # above CoregConfig.max_error's default: not applied


def test_no_texture_raises() -> None:
    flat = np.full((64, 64), 0.2)
    with pytest.raises(CoregistrationError) as info:
        estimate_shift(texture()[:64, :64], flat)
    assert info.value.reason == "no_texture"
    with pytest.raises(CoregistrationError) as info:
        estimate_shift(np.full((64, 64), np.nan), texture()[:64, :64])
    assert info.value.reason == "too_few_valid"
    with pytest.raises(CoregistrationError, match=r"\(64, 64\) and \(32, 32\)"):
        estimate_shift(np.zeros((64, 64)), np.zeros((32, 32)))


def test_apply_shift_integer_shift_is_exact_and_positive_moves_down_right() -> None:
    stack = np.zeros((2, 32, 32), dtype=np.float32)
    stack[0, 10, 10] = 1.0
    stack[1, 5:8, 20] = 2.0
    out = apply_shift(stack, (1.0, 2.0))
    assert out.dtype == np.float32 and out.shape == stack.shape
    assert out[0, 11, 12] == pytest.approx(1.0, abs=1e-6)
    assert out[0, 10, 10] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(out[1, 6:9, 22], 2.0, atol=1e-6)
    np.testing.assert_allclose(
        out[:, 12:, :], np.roll(stack, (1, 2), axis=(1, 2))[:, 12:, :], atol=1e-6
    )


def test_apply_shift_moves_nan_regions_without_spreading_them() -> None:
    band = texture(5, (64, 64)).astype(np.float32)
    band[20:30, 40:50] = np.nan
    stack = np.stack([band, np.full_like(band, np.nan)])

    out = apply_shift(stack, (2.0, -3.0))
    expected = np.zeros_like(band, dtype=bool)
    expected[22:32, 37:47] = True
    np.testing.assert_array_equal(np.isnan(out[0]), expected)
    assert np.isnan(out[1]).all()  # an all-NaN band stays all NaN

    sub = apply_shift(stack, (0.4, -0.6))[0]
    nan = np.isnan(sub)
    assert abs(int(nan.sum()) - 100) <= 20  # keeps its size (within one row / column)
    rows, cols = np.nonzero(nan)
    assert rows.min() >= 20 and rows.max() <= 30 and cols.min() >= 39 and cols.max() <= 49
    # valid pixels next to the hole hold image values, not NaN-polluted or zeroed ones
    lo, hi = float(np.nanmin(band)), float(np.nanmax(band))
    assert lo - 0.2 <= float(np.nanmin(sub)) and float(np.nanmax(sub)) <= hi + 0.2


# ---------------------------------------------------------------------------------------------
# coregister(): the stage


def make_sample(before: np.ndarray, after: np.ndarray) -> Sample:
    t0, t1 = datetime(2020, 6, 1, 10, 30, tzinfo=UTC), datetime(2021, 6, 3, 10, 30, tzinfo=UTC)
    h, w = before.shape[1:]
    job = TileJob(
        cell_id="31U_0042_0517",
        crs="EPSG:32631",
        transform=(10.0, 0.0, 420000.0, 0.0, -10.0, 5410000.0),
        shape=(h, w),
        bbox_lonlat=(1.9, 48.8, 1.92, 48.82),
        t0_window=(datetime(2020, 5, 1, tzinfo=UTC), datetime(2020, 7, 1, tzinfo=UTC)),
        t1_window=(datetime(2021, 5, 1, tzinfo=UTC), datetime(2021, 7, 1, tzinfo=UTC)),
    )

    def scene(item_id: str, when: datetime) -> SceneRef:
        return SceneRef(
            collection="sentinel-2-l2a",
            item_id=item_id,
            datetime=when,
            bbox_lonlat=(1.0, 48.0, 3.0, 50.0),
            assets={"B08": AssetRef(href=f"/data/{item_id}_B08.tif", scale=0.0001)},
        )

    pair = ScenePair(
        job=job,
        before=scene("S2A_before", t0),
        after=scene("S2B_after", t1),
        before_clear=1.0,
        after_clear=1.0,
    )
    return Sample(pair=pair, before=before.astype(np.float32), after=after.astype(np.float32))


def shifted_pair(displacement: tuple[float, float], seed: int = 6) -> tuple[np.ndarray, np.ndarray]:
    ref = texture(seed)
    other = texture(seed + 100)
    before = np.stack([other, ref])
    after = np.stack([fourier_shift(other, displacement), 1.2 * fourier_shift(ref, displacement)])
    return before, after


def test_coregister_applies_and_records_the_shift() -> None:
    before, after = shifted_pair((0.3, -1.7))
    out = coregister(make_sample(before, after), CoregConfig(), band_index=1)
    assert isinstance(out, Sample)
    assert out.coreg is not None and out.coreg.applied
    assert out.coreg.shift_px == (pytest.approx(-0.3, abs=0.1), pytest.approx(1.7, abs=0.1))
    assert out.coreg.residual_px < 0.1
    # every band is corrected, not only the one registered on
    (ry, rx), _ = estimate_shift(out.before[0], out.after[0])
    assert math.hypot(ry, rx) < 0.1
    assert out.before is not None and out.after.dtype == np.float32


def test_coregister_quarantines_a_too_large_shift() -> None:
    before, after = shifted_pair((5.0, 0.0))
    out = coregister(make_sample(before, after), CoregConfig(max_shift_px=3.0), band_index=1)
    assert isinstance(out, QuarantineRecord)
    assert (out.stage, out.reason) == ("coregister", "shift_too_large")
    assert out.key == "31U_0042_0517_20200601_20210603" and out.cell_id == "31U_0042_0517"
    measured = re.search(r"shifted by ([0-9.]+) px", out.detail)
    assert measured is not None and float(measured.group(1)) == pytest.approx(5.0, abs=0.1)
    assert "coregistration.max_shift_px=3.0" in out.detail


def test_coregister_does_not_apply_a_shift_below_min_shift() -> None:
    before, after = shifted_pair((0.02, 0.0))
    sample = make_sample(before, after)
    out = coregister(sample, CoregConfig(min_shift_px=0.05), band_index=1)
    assert isinstance(out, Sample) and out.coreg is not None
    assert not out.coreg.applied
    assert out.after is sample.after  # untouched
    magnitude = math.hypot(*out.coreg.shift_px)
    assert magnitude < 0.05
    assert out.coreg.residual_px == pytest.approx(magnitude)


def test_coregister_quarantines_an_untrusted_estimate() -> None:
    before, after = shifted_pair((0.3, -1.7))
    cfg = CoregConfig(max_error=1e-6)  # no estimate is trusted
    out = coregister(make_sample(before, after), cfg, band_index=1)
    assert isinstance(out, QuarantineRecord) and out.reason == "coreg_unreliable"
    assert "error=" in out.detail and "> coregistration.max_error=1e-06" in out.detail
    assert "raise coregistration.max_error" in out.detail
    assert "dy=-0.30, dx=+1.70" in out.detail  # the estimate is still reported


def test_coregister_fails_without_texture() -> None:
    before, _ = shifted_pair((0.0, 0.0))
    after = before.copy()
    after[1] = np.nan
    out = coregister(make_sample(before, after), CoregConfig(), band_index=1)
    assert isinstance(out, QuarantineRecord) and out.reason == "coreg_failed"
    flat = coregister(make_sample(before, np.full_like(before, 0.3)), CoregConfig(), band_index=-1)
    assert isinstance(flat, QuarantineRecord) and flat.reason == "coreg_failed"
    with pytest.raises(IndexError, match=r"coregistration\.band"):
        coregister(make_sample(before, before), CoregConfig(), band_index=2)
    with pytest.raises(CoregistrationError, match="one shape"):
        coregister(make_sample(before, before[:, :64, :]), CoregConfig(), band_index=1)


def test_coregister_keeps_nan_regions_in_place() -> None:
    before, after = shifted_pair((0.3, -1.7))
    after[:, 60:70, 20:40] = np.nan  # a cloud masked out of the after scene
    out = coregister(make_sample(before, after), CoregConfig(), band_index=1)
    assert isinstance(out, Sample) and out.coreg is not None and out.coreg.applied
    assert out.coreg.shift_px == (pytest.approx(-0.3, abs=0.1), pytest.approx(1.7, abs=0.1))
    for band in out.after:
        nan = np.isnan(band)
        assert abs(int(nan.sum()) - 200) <= 30
        rows, cols = np.nonzero(nan)
        assert rows.min() >= 59 and rows.max() <= 70 and cols.min() >= 20 and cols.max() <= 42


# ---------------------------------------------------------------------------------------------
# the neighbourhood check: tie points over the cell plus a margin

MARGIN = 64


def context_sample(before_ctx: np.ndarray, after_ctx: np.ndarray) -> Sample:
    """A one-band sample whose cell is the centre of a (64 + 2 * MARGIN)-px context."""
    cell = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    sample = make_sample(before_ctx[cell][None], after_ctx[cell][None])
    return dataclasses.replace(
        sample, coreg_context=(before_ctx.astype(np.float32), after_ctx.astype(np.float32))
    )


def test_neighbourhood_agrees_on_a_known_shift() -> None:
    before = texture(7, (192, 192))
    after = 1.2 * fourier_shift(before, (0.4, -1.3)) + 0.03
    hood = neighbourhood(before, after, CoregConfig())
    assert hood.windows == 9  # 3 x 3 adjacent 64-px windows over 192 px
    assert hood.usable == hood.agreeing == 9 and hood.holds(4)
    assert hood.shift == (pytest.approx(-0.4, abs=0.05), pytest.approx(1.3, abs=0.05))
    assert 0.0 <= hood.error < 0.7


def test_a_consistent_cell_keeps_its_own_estimate() -> None:
    before = texture(7, (192, 192))
    after = fourier_shift(before, (0.4, -1.3))
    sample = context_sample(before, after)
    alone = coregister(dataclasses.replace(sample, coreg_context=None), CoregConfig(), band_index=0)
    out = coregister(sample, CoregConfig(), band_index=0)
    assert isinstance(out, Sample) and isinstance(alone, Sample)
    assert out.coreg is not None and alone.coreg is not None
    assert out.coreg.source == "cell" and alone.coreg.source == "cell"
    assert out.coreg.shift_px == alone.coreg.shift_px  # the same estimate, now checked
    assert out.coreg.residual_px == alone.coreg.residual_px
    np.testing.assert_array_equal(out.after, alone.after)
    assert out.coreg.neighbourhood_px == (
        pytest.approx(-0.4, abs=0.05),
        pytest.approx(1.3, abs=0.05),
    )
    assert out.coreg.tie_points == out.coreg.agreeing == 9
    assert alone.coreg.neighbourhood_px is None and alone.coreg.tie_points is None
    assert out.coreg_context is None  # dropped once used


def test_a_cell_with_a_wrong_peak_gets_its_neighbourhood_shift() -> None:
    """The cell's own window says (-2.0, +1.1) with a trusted error; the scene moved (0.4, -1.3)."""
    before = texture(7, (192, 192))
    after = fourier_shift(before, (0.4, -1.3))
    after[MARGIN:-MARGIN, MARGIN:-MARGIN] = fourier_shift(before, (2.0, -1.1))[
        MARGIN:-MARGIN, MARGIN:-MARGIN
    ]
    sample = context_sample(before, after)
    alone = coregister(dataclasses.replace(sample, coreg_context=None), CoregConfig(), band_index=0)
    assert isinstance(alone, Sample) and alone.coreg is not None  # today: shipped, 1.6 px off
    assert alone.coreg.shift_px == (pytest.approx(-2.0, abs=0.1), pytest.approx(1.1, abs=0.1))
    out = coregister(sample, CoregConfig(), band_index=0)
    assert isinstance(out, Sample) and out.coreg is not None
    assert out.coreg.source == "neighbourhood" and out.coreg.applied
    assert out.coreg.shift_px == (pytest.approx(-0.4, abs=0.05), pytest.approx(1.3, abs=0.05))
    assert out.coreg.shift_px == out.coreg.neighbourhood_px
    assert out.coreg.residual_px < 0.1  # re-measured by the tie points after the correction
    assert (out.coreg.tie_points, out.coreg.agreeing) == (9, 8)  # all but the cell's window


def test_a_cell_without_a_consensus_around_it_is_quarantined() -> None:
    """No data around the cell (a cloud mask, the scene's edge): nothing can confirm its shift."""
    before = np.full((192, 192), np.nan)
    after = before.copy()
    land = texture(7, (64, 64))
    before[MARGIN:-MARGIN, MARGIN:-MARGIN] = land
    after[MARGIN:-MARGIN, MARGIN:-MARGIN] = fourier_shift(land, (0.4, -1.3))
    sample = context_sample(before, after)
    alone = coregister(dataclasses.replace(sample, coreg_context=None), CoregConfig(), band_index=0)
    assert isinstance(alone, Sample)  # the cell alone looks fine...
    out = coregister(sample, CoregConfig(), band_index=0)
    assert isinstance(out, QuarantineRecord)  # ...but nothing around it can confirm it
    assert (out.stage, out.reason) == ("coregister", "inconsistent")
    assert "tie points around the cell do not agree" in out.detail
    assert "coregistration.min_tie_points=3" in out.detail and "margin_px" in out.detail
    # an untrusted cell without a consensus keeps its own reason
    bad = coregister(sample, CoregConfig(max_error=1e-6), band_index=0)
    assert isinstance(bad, QuarantineRecord) and bad.reason == "coreg_unreliable"
    assert "no neighbourhood estimate either" in bad.detail


def test_an_untrusted_cell_is_corrected_by_a_trusted_neighbourhood() -> None:
    before = texture(7, (192, 192))
    after = fourier_shift(before, (0.4, -1.3))
    after[MARGIN:-MARGIN, MARGIN:-MARGIN] = 0.3  # flat (calm water): no estimate at all
    out = coregister(context_sample(before, after), CoregConfig(), band_index=0)
    assert isinstance(out, Sample) and out.coreg is not None
    assert out.coreg.source == "neighbourhood"
    assert out.coreg.shift_px == (pytest.approx(-0.4, abs=0.05), pytest.approx(1.3, abs=0.05))


def test_context_job_grows_the_cell_grid_by_the_margin() -> None:
    from geodelta.pipelines.stages.load import context_job

    job = make_sample(np.zeros((1, 64, 64)), np.zeros((1, 64, 64))).pair.job
    wide = context_job(job, 16)
    assert wide.shape == (96, 96) and wide.crs == job.crs and wide.cell_id == job.cell_id
    assert wide.transform == (10.0, 0.0, 420000.0 - 160.0, 0.0, -10.0, 5410000.0 + 160.0)
    left, bottom, right, top = job.bounds()
    assert wide.bounds() == (left - 160.0, bottom - 160.0, right + 160.0, top + 160.0)


def test_coregistration_keys_shape_the_config_hash() -> None:
    from geodelta.schemas import parse_config
    from tests.conftest import minimal_config

    base = parse_config(minimal_config(), source="t", base_dir="/tmp")
    assert base.coregistration.margin_px == 64
    for key, value in [
        ("margin_px", 0),
        ("consistency_tolerance_px", 0.5),
        ("tie_agreement_px", 0.3),
        ("min_tie_points", 6),
        ("tie_window_px", 48),
    ]:
        other = parse_config(
            minimal_config(coregistration={key: value}), source="t", base_dir="/tmp"
        )
        assert other.config_hash() != base.config_hash(), key


def test_tie_windows_larger_than_the_context_are_refused() -> None:
    from geodelta.schemas import ConfigError, parse_config
    from tests.conftest import minimal_config

    cfg = minimal_config(
        grid={"cell_size_px": 64}, coregistration={"margin_px": 16, "tie_window_px": 128}
    )
    with pytest.raises(ConfigError, match=r"coregistration\.tie_window_px \(128\).*= 96\)"):
        parse_config(cfg, source="t", base_dir="/tmp")
    cfg["coregistration"] = {"margin_px": 0, "tie_window_px": 128}  # no check: no windows
    assert parse_config(cfg, source="t", base_dir="/tmp").coregistration.margin_px == 0


def test_a_scene_shifted_too_far_is_too_large_not_inconsistent() -> None:
    before = texture(7, (192, 192))
    after = fourier_shift(before, (4.5, 0.5))
    out = coregister(context_sample(before, after), CoregConfig(max_shift_px=3.0), band_index=0)
    assert isinstance(out, QuarantineRecord) and out.reason == "shift_too_large"
    measured = re.search(r"shifted by ([0-9.]+) px", out.detail)
    assert measured is not None and float(measured.group(1)) == pytest.approx(4.53, abs=0.1)


def test_a_cell_peak_beyond_max_shift_is_corrected_by_its_neighbourhood() -> None:
    before = texture(7, (192, 192))
    after = fourier_shift(before, (0.4, -1.3))
    after[MARGIN:-MARGIN, MARGIN:-MARGIN] = fourier_shift(before, (4.5, 0.5))[
        MARGIN:-MARGIN, MARGIN:-MARGIN
    ]
    sample = context_sample(before, after)
    alone = coregister(dataclasses.replace(sample, coreg_context=None), CoregConfig(), band_index=0)
    assert isinstance(alone, QuarantineRecord) and alone.reason == "shift_too_large"
    out = coregister(sample, CoregConfig(), band_index=0)
    assert isinstance(out, Sample) and out.coreg is not None
    assert out.coreg.source == "neighbourhood"
    assert out.coreg.shift_px == (pytest.approx(-0.4, abs=0.05), pytest.approx(1.3, abs=0.05))
