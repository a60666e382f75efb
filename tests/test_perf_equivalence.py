"""The fast paths give exactly what the straightforward code gives.

Co-registration, pairing and RGB rendering were made faster without changing a bit of their
results (releases must stay byte-identical); each test here runs the fast path against the plain
reference implementation it replaced, on seeded inputs.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.registration import phase_cross_correlation

from geodelta.pipelines.stages.coregister import _gradient, apply_shift, estimate_shift
from geodelta.pipelines.stages.encode import rgb_png
from geodelta.pipelines.stages.pair import choose_pair, season_gap_days
from geodelta.schemas import AssetRef, QuarantineRecord, ScenePair, SceneRef, TileJob, parse_config
from tests.conftest import minimal_config


def texture(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    axes = (0,) * (len(shape) - 2) + (2.0, 2.0)
    return (ndi.gaussian_filter(rng.normal(size=shape), axes) * 0.1 + 0.2).astype(np.float32)


# -- apply_shift: separable cubic spline == scipy.ndimage.shift --------------------------------


def reference_apply_shift(stack: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """apply_shift as first written: scipy.ndimage.shift per band."""
    out = np.empty_like(stack)
    for c, band in enumerate(stack):
        valid = np.isfinite(band)
        if not valid.any():
            out[c] = np.nan
        elif valid.all():
            out[c] = ndi.shift(band, shift, order=3, mode="nearest")
        else:
            idx = ndi.distance_transform_edt(~valid, return_distances=False, return_indices=True)
            shifted = ndi.shift(band[tuple(idx)], shift, order=3, mode="nearest")
            keep = ndi.shift(valid.astype(np.float32), shift, order=1, mode="nearest") >= 0.5
            out[c] = np.where(keep, shifted, np.nan)
    return out


@pytest.mark.parametrize(
    "shift", [(0.3, -1.7), (-2.45, -0.85), (1.0, 0.0), (0.0, 0.0), (2.999, -2.999), (-9.5, 11.25)]
)
def test_apply_shift_is_bit_identical_to_scipy(shift: tuple[float, float]) -> None:
    rng = np.random.default_rng(7)
    stack = texture(rng, (4, 96, 128))
    stack[1, 40:52, 10:30] = np.nan  # a cloud hole in one band
    stack[3] = np.nan  # a band without data
    got = apply_shift(stack, shift)
    want = reference_apply_shift(stack, shift)
    assert got.dtype == np.float32 and got.shape == stack.shape
    assert np.array_equal(got, want, equal_nan=True)
    assert np.isnan(got[3]).all() and np.isnan(got[1]).sum() > 100


def test_apply_shift_moves_content_by_the_shift() -> None:
    stack = texture(np.random.default_rng(3), (1, 64, 64))
    out = apply_shift(stack, (2.0, -3.0))  # whole pixels: the spline reproduces the samples
    np.testing.assert_allclose(out[0, 2 + 5 : 40, 5 : 40 - 3], stack[0, 5 : 40 - 2, 5 + 3 : 40])


# -- estimate_shift == skimage's phase_cross_correlation on the gradients ---------------------


@pytest.mark.parametrize("upsample", [1, 10, 50])
def test_estimate_shift_is_bit_identical_to_skimage(upsample: int) -> None:
    rng = np.random.default_rng(11)
    ref = texture(rng, (128, 128)).astype(np.float64)
    for displacement in [(0.3, -1.7), (-2.45, 0.85), (0.0, 0.0)]:
        moving = np.fft.ifftn(ndi.fourier_shift(np.fft.fftn(ref), displacement)).real
        moving[100:110, 5:20] = np.nan  # no-data goes through the gradient's fill and mask
        shift, error = estimate_shift(ref, moving, upsample_factor=upsample)
        want, want_error, _ = phase_cross_correlation(
            _gradient(ref, "reference"),
            _gradient(moving, "moving"),
            upsample_factor=upsample,
            normalization=None,
        )
        assert shift == (float(want[0]), float(want[1]))
        assert error == float(want_error)
        if upsample == 50:
            assert abs(shift[0] + displacement[0]) < 0.1 and abs(shift[1] + displacement[1]) < 0.1


# -- choose_pair: lazy rating == rating every scene -------------------------------------------

JOB = TileJob(
    cell_id="31N-1280-0569-3902",
    crs="EPSG:32631",
    transform=(10.0, 0.0, 728320.0, 0.0, -10.0, 4995840.0),
    shape=(128, 128),
    bbox_lonlat=(5.90, 45.06, 5.92, 45.08),
    t0_window=(datetime(2020, 6, 1, tzinfo=UTC), datetime(2020, 8, 31, tzinfo=UTC)),
    t1_window=(datetime(2021, 6, 1, tzinfo=UTC), datetime(2021, 8, 31, tzinfo=UTC)),
)


def make_scene(item_id: str, when: datetime, crs: str) -> SceneRef:
    return SceneRef(
        collection="s2",
        item_id=item_id,
        datetime=when,
        crs=crs,
        bbox_lonlat=(5.8, 45.0, 6.0, 45.1),
        assets={"B04": AssetRef(href="/x.tif")},
    )


def exhaustive(
    before: list[SceneRef], after: list[SceneRef], clear: dict[str, float | None], cfg
) -> ScenePair | QuarantineRecord:
    """choose_pair as first written: every covering scene rated, every pair scored."""
    p = cfg.pairing
    picked = {}
    for name, scenes in (("t0", before), ("t1", after)):
        rated = [(s, clear[s.item_id]) for s in scenes]
        ok = [
            (s, c)
            for s, c in rated
            if (c is None and p.allow_unknown_clear)
            or (c is not None and c >= p.min_clear_fraction)
        ]
        if not ok:
            reason = (
                "unknown_clear_fraction"
                if all(c is None for _, c in rated)
                else f"no_clear_scene_{name}"
            )
            return QuarantineRecord(
                key=JOB.cell_id, cell_id=JOB.cell_id, stage="pair", reason=reason, detail="-"
            )
        picked[name] = ok
    best = None
    for b, cb in picked["t0"]:
        for a, ca in picked["t1"]:
            gap = (a.datetime - b.datetime).total_seconds() / 86400.0
            if not p.min_gap_days <= gap <= p.max_gap_days:
                continue
            score = (cb if cb is not None else p.min_clear_fraction) + (
                ca if ca is not None else p.min_clear_fraction
            )
            score -= p.season_weight * season_gap_days(a.datetime, b.datetime) / 30.0
            score += 0.01 * ((b.crs == JOB.crs) + (a.crs == JOB.crs))
            rank = (-score, b.item_id, a.item_id)
            if best is None or rank < best[0]:
                best = (rank, (b, a, cb, ca, score))
    if best is None:
        return QuarantineRecord(
            key=JOB.cell_id, cell_id=JOB.cell_id, stage="pair", reason="no_pair_in_gap", detail="-"
        )
    b, a, cb, ca, score = best[1]
    return ScenePair(job=JOB, before=b, after=a, before_clear=cb, after_clear=ca, score=score)


def test_lazy_choice_equals_rating_every_scene() -> None:
    rng = np.random.default_rng(5)
    start0, start1 = datetime(2020, 6, 1, 10, tzinfo=UTC), datetime(2021, 6, 1, 10, tzinfo=UTC)
    outcomes = set()
    saved = 0
    for trial, allow_unknown in itertools.product(range(150), (False, True)):
        cfg = parse_config(
            minimal_config(
                pairing={
                    "allow_unknown_clear": allow_unknown,
                    "min_gap_days": 180,
                    "max_gap_days": float(rng.choice([365, 400, 730])),
                }
            )
        )
        scenes, clear = [], {}
        for window, start in (("b", start0), ("a", start1)):
            group = []
            for i in range(int(rng.integers(1, 7))):
                when = start + timedelta(days=int(rng.integers(0, 90)))
                crs = "EPSG:32631" if rng.random() < 0.6 else "EPSG:32632"
                s = make_scene(f"{window}{i}-{trial}", when, crs)
                roll = rng.random()
                clear[s.item_id] = (
                    None if roll < 0.1 else 1.0 if roll < 0.4 else float(rng.uniform(0.8, 1.0))
                )
                group.append(s)
            scenes.append(group)
        calls: list[str] = []

        def rate(s: SceneRef, job: TileJob, clear=clear, calls=calls) -> float | None:
            calls.append(s.item_id)
            return clear[s.item_id]

        got = choose_pair(JOB, scenes[0], scenes[1], rate, cfg)
        want = exhaustive(scenes[0], scenes[1], clear, cfg)
        assert type(got) is type(want)
        if isinstance(want, ScenePair):
            assert isinstance(got, ScenePair)
            assert (got.before.item_id, got.after.item_id) == (
                want.before.item_id,
                want.after.item_id,
            )
            assert (got.before_clear, got.after_clear, got.score) == (
                want.before_clear,
                want.after_clear,
                want.score,
            )
        else:
            assert got.reason == want.reason
        assert len(calls) == len(set(calls))  # each scene read at most once
        saved += len(scenes[0]) + len(scenes[1]) - len(calls)
        outcomes.add(type(want).__name__ if isinstance(want, ScenePair) else want.reason)
    assert {"ScenePair", "no_clear_scene_t0", "no_pair_in_gap"} <= outcomes
    assert saved > 200  # scenes that could not win were not read


def test_lazy_choice_reads_only_what_can_win() -> None:
    cfg = parse_config(minimal_config())
    t0 = datetime(2020, 7, 1, 10, tzinfo=UTC)
    before = [make_scene(f"b{i}", t0 + timedelta(days=10 * i), "EPSG:32631") for i in range(3)]
    after = [make_scene(f"a{i}", t0 + timedelta(days=365 + 10 * i), "EPSG:32631") for i in range(3)]
    calls: list[str] = []

    def rate(s: SceneRef, job: TileJob) -> float:
        calls.append(s.item_id)
        return 1.0

    pair = choose_pair(JOB, before, after, rate, cfg)
    assert isinstance(pair, ScenePair)
    assert (pair.before.item_id, pair.after.item_id) == ("b0", "a0")
    assert sorted(calls) == ["a0", "b0"]  # a perfect same-season pair: nothing else can win


# -- rgb_png ----------------------------------------------------------------------------------


def test_rgb_png_pixels_match_the_plain_formula() -> None:
    import io

    from PIL import Image

    rng = np.random.default_rng(2)
    refl = rng.uniform(-0.05, 0.4, size=(4, 32, 48)).astype(np.float32)
    refl[0, 3:6, 4:9] = np.nan
    refl[2, 10, 10] = np.inf
    got = np.asarray(Image.open(io.BytesIO(rgb_png(refl, (2, 1, 0), 0.3))))
    rgb = np.stack([refl[i] for i in (2, 1, 0)], axis=-1).astype(np.float64)
    want = np.rint(np.clip(np.where(np.isfinite(rgb), rgb, 0.0) / 0.3, 0.0, 1.0) * 255.0)
    want = want.astype(np.uint8)
    want[~np.isfinite(rgb).all(axis=-1)] = 0
    assert got.shape == (32, 48, 3)
    assert np.array_equal(got, want)
    assert (got[3:6, 4:9] == 0).all() and (got[10, 10] == 0).all()


# -- to_dn: in place == the plain formula --------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_dn_is_bit_identical_to_the_plain_formula(dtype: type) -> None:
    from geodelta.pipelines.stages.encode import (
        OUTPUT_DN_OFFSET,
        OUTPUT_DN_SCALE,
        OUTPUT_NODATA,
        to_dn,
    )

    rng = np.random.default_rng(9)
    refl = rng.uniform(-0.3, 7.0, size=(4, 40, 56)).astype(dtype)
    refl[0, 1:4, 2:9] = np.nan
    refl[1, 5, 5], refl[2, 6, 6], refl[3, 7, 7] = np.inf, -np.inf, 0.00005  # a .5 rounding tie
    refl[3, 8, 8:12] = (-0.1, -0.0999, 6.4535, 6.4536)  # DN 0 -> 1, 1, 65535, 65536 -> 65535
    before = refl.copy()
    got = to_dn(refl)
    # to_dn as first written
    r = refl.astype(np.float64)
    nan = ~np.isfinite(r)
    want = np.rint((np.where(nan, 0.0, r) - OUTPUT_DN_OFFSET) / OUTPUT_DN_SCALE)
    want = np.clip(want, 1, 65535).astype(np.uint16)
    want[nan] = OUTPUT_NODATA
    assert got.dtype == np.uint16 and np.array_equal(got, want)
    assert np.array_equal(refl, before, equal_nan=True)  # the input is not touched
    assert (got[0, 1:4, 2:9] == 0).all() and got[1, 5, 5] == 0 and got[2, 6, 6] == 0
    assert got.min() == 0 and got.max() == 65535


# -- shards: tarfile == webdataset's TarWriter ------------------------------------------------


def test_shard_tar_is_byte_identical_to_webdataset_tarwriter(tmp_path: Path) -> None:
    """The shard writer stopped importing webdataset (and so torch); its tars must not move."""
    import io

    import webdataset as wds

    from geodelta.pipelines.release.shards import (
        TAR_GROUP,
        TAR_MODE,
        TAR_MTIME,
        TAR_USER,
        _SampleTar,
        tar_entry_bytes,
    )

    rng = np.random.default_rng(5)
    samples = [
        # members in non-sorted order; a key long enough for a PAX header; a non-ASCII key;
        # empty, 512-byte and odd-sized members
        ("31N-1280-0001-0002_20200615_20210620", {"json": b"{}", "after.tif": b"x" * 512}),
        ("k" * 120, {"qa.json": rng.bytes(1000), "before.png": b""}),
        ("zone-\u00e9t\u00e9_20200101_20210101", {"mask.png": rng.bytes(7), "a": b"\x00"}),
    ]
    want, got = io.BytesIO(), io.BytesIO()
    ref = wds.TarWriter(
        want,
        user=TAR_USER,
        group=TAR_GROUP,
        mode=TAR_MODE,
        encoder=False,
        mtime=TAR_MTIME,
        compress=False,
    )
    fast = _SampleTar(got)
    for key, members in samples:
        ref.write({"__key__": key, **members})
        fast.write(key, members)
    ref.close()
    fast.close()
    assert got.getvalue() == want.getvalue()
    ascii_entries = sum(
        tar_entry_bytes(f"{k}.{n}", len(v)) for k, m in samples[:2] for n, v in m.items()
    )
    assert len(got.getvalue()) > ascii_entries  # the members are there, not an empty tar
    with pytest.raises(ValueError, match="not bytes"):
        _SampleTar(io.BytesIO()).write("k", {"json": "text"})  # type: ignore[dict-item]


# -- Beam workers start with single-threaded BLAS ---------------------------------------------


@pytest.mark.slow  # imports apache_beam (~5 s)
def test_worker_environment_pins_blas_threads_and_restores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from geodelta.pipelines.engines.beam import WORKER_THREAD_ENV, worker_environment

    cfg = parse_config(minimal_config())
    for name in WORKER_THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice is kept
    with worker_environment(cfg) as added:
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
        assert os.environ["OMP_NUM_THREADS"] == "3"
        assert "OMP_NUM_THREADS" not in added
    assert "OPENBLAS_NUM_THREADS" not in os.environ
    assert os.environ["OMP_NUM_THREADS"] == "3"
    threaded = parse_config(minimal_config(runner={"mode": "multi_threading"}))
    with worker_environment(threaded) as added:
        assert added == {} and "OPENBLAS_NUM_THREADS" not in os.environ


@pytest.mark.slow  # imports apache_beam (~5 s)
def test_beam_commits_each_output_without_a_flatten(tmp_path: Path) -> None:
    """A Flatten before the commit stops the FnApiRunner from fusing it into the stage chain:
    every encoded sample would be held until all cells are done (see build_pipeline)."""
    import apache_beam as beam

    from geodelta.pipelines.engines.beam import build_pipeline
    from geodelta.pipelines.stages.worker import Worker

    cfg = parse_config(minimal_config())
    p = beam.Pipeline()
    build_pipeline(p, [JOB], cfg, tmp_path, "0")
    proto = p.to_runner_api()
    names = [t.unique_name for t in proto.components.transforms.values()]
    assert not any("Flatten" in n or n == "outcomes" for n in names)
    commits = [n for n in names if n.startswith("commit") and "/" not in n]
    n_stages = len(Worker(cfg, code_version="0").steps())
    assert len(commits) == n_stages + 1  # each stage's quarantine, and the samples
    commit_fns = [
        t
        for t in proto.components.transforms.values()
        if t.unique_name in commits and t.spec.urn == "beam:transform:pardo:v1"
    ]
    assert len(commit_fns) == n_stages + 1
    # each commit reads a stage's output directly (a ParDo's, never a Flatten's)
    producers = {
        pc: t.unique_name
        for t in proto.components.transforms.values()
        if not t.subtransforms
        for pc in t.outputs.values()
    }
    for t in commit_fns:
        (source,) = t.inputs.values()
        assert producers[source].split("/")[0] in dict(Worker(cfg, code_version="0").steps())
