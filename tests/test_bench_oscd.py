"""The leave-one-city-out benchmark's pieces (benchmarks/bench_oscd_baseline.py, issue 16):
date 2 read onto date 1's grid where OSCD's grids differ, the threshold chosen on the
validation city, the change-vector floor."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tests.factories import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_oscd_baseline as bench


def test_every_city_is_in_the_protocol(shared_data: Path) -> None:
    on_disk = sorted(p.name for p in (shared_data / "oscd").iterdir() if (p / "cm").is_dir())
    assert list(bench.CITIES) == on_disk


def test_smaller_date_2_grid_is_read_onto_the_mask_grid(shared_data: Path) -> None:
    """abudhabi's date 2 B02 is 795x782 against date 1's 799x785 (PROVENANCE.md section 2)."""
    city = bench.load_city("abudhabi", ("B02", "B8A"))
    assert city.before.shape == city.after.shape == (2, *city.change.shape)
    assert city.change.shape == (799, 785)
    # date 2 lands on date 1's pixels: the two dates correlate strongly, band by band
    for band in range(2):
        a, b = city.before[band].ravel(), city.after[band].ravel()
        ok = (a > 0) & (b > 0)
        assert np.corrcoef(a[ok], b[ok])[0, 1] > 0.6


def test_threshold_maximises_f1_on_the_given_city() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((64, 64), bool)
    truth[10:30, 10:30] = True
    prob = np.where(truth, 0.62, 0.2) + rng.uniform(-0.05, 0.05, truth.shape)
    thr, f1 = bench.best_threshold(prob, truth)
    assert 0.2 < thr <= 0.55 and f1 == 1.0
    assert bench.scores(bench._counts(prob >= 0.75, truth))["f1"] == 0.0


def test_cva_floor_finds_a_strong_change() -> None:
    rng = np.random.default_rng(1)
    before = rng.normal(0.2, 0.01, (13, 80, 80)).astype(np.float32)
    after = before + rng.normal(0, 0.01, before.shape).astype(np.float32)
    change = np.zeros((80, 80), bool)
    change[20:40, 30:60] = True
    after[:, change] += 0.3
    floor = bench.cva_floor(bench.City("synthetic", before, after, change))
    assert floor["f1"] > 0.95
