"""A REAL sequence through the sequence stages (issue 15): the eo-learn Sentinel-2 series
(PROVENANCE.md section 1: 68 dates 2015-2017, s2cloudless masks, NDVI on one 101 x 100 grid).

One summer date per year is chosen by pixel clear fraction (``select_series``), the chosen dates come
out in time order whatever order the catalog returns them in, and every date is co-registered
onto date 0 by :func:`~geodelta.pipelines.stages.sequence.coregister_series`: the real dates
sit on one grid (Sentinel Hub resampled them), so the measured shifts are sub-pixel; a known
shift injected into one date is found and undone, and recorded on that date only.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from geodelta.pipelines.stages.sample import Sample, SeriesArrays
from geodelta.pipelines.stages.sequence import coregister_series
from geodelta.pipelines.stages.series import SeriesCandidate, select_series
from geodelta.schemas import AssetRef, QuarantineRecord, ScenePair, SceneRef, TileJob
from geodelta.schemas.config import CoregConfig
from geodelta.schemas.series import SeriesConfig, SeriesDateMeta, SeriesSelection, series_windows

#: The eo-learn grid (PROVENANCE.md section 1), rasterio order.
TRANSFORM = (9.99479222007154, 0.0, 465181.0522318204, 0.0, -9.997448467363668, 5080254.63349641)


@pytest.fixture(scope="module")
def eolearn(shared_data: Path) -> dict[str, Any]:
    root = shared_data / "eolearn_slovenia_s2"
    return {
        "times": [
            datetime.fromisoformat(t).replace(tzinfo=UTC)
            for t in json.loads((root / "timestamps.json").read_text())
        ],
        "valid": np.load(root / "mask" / "IS_VALID.npy")[..., 0],
        "ndvi": np.load(root / "data" / "NDVI.npy")[..., 0],
    }


def _selection(eo: dict[str, Any], order_seed: int) -> SeriesSelection:
    spec = SeriesConfig(start="2015-06-01", end="2017-09-01", step="year", window_days=92)
    cands = [SeriesCandidate(f"S2_{i:02d}", eo["times"][i], eo["valid"][i]) for i in range(68)]
    random.Random(order_seed).shuffle(cands)  # a catalog returns items in any order
    out = select_series(
        "33T-eolearn", series_windows(spec), cands, min_dates=3, min_clear_fraction=0.95
    )
    assert isinstance(out, SeriesSelection)
    return out


def _sample(eo: dict[str, Any], sel: SeriesSelection, stack: np.ndarray) -> Sample:
    h, w = stack.shape[2:]

    def scene(d: Any) -> SceneRef:
        return SceneRef(
            collection="eolearn-s2-l1c",
            item_id=d.item_id,
            datetime=d.datetime,
            bbox_lonlat=(14.5, 45.8, 14.6, 45.9),
            assets={"NDVI": AssetRef(href=f"/data/{d.item_id}.tif")},
        )

    scenes = tuple(scene(d) for d in sel.dates)
    job = TileJob(
        cell_id="33T-eolearn",
        crs="EPSG:32633",
        transform=TRANSFORM,
        shape=(h, w),
        bbox_lonlat=(14.5, 45.8, 14.6, 45.9),
        t0_window=(scenes[0].datetime, scenes[0].datetime),
        t1_window=(scenes[-1].datetime, scenes[-1].datetime),
    )
    pair = ScenePair(
        job=job,
        before=scenes[0],
        after=scenes[-1],
        before_clear=sel.dates[0].clear_fraction,
        after_clear=sel.dates[-1].clear_fraction,
        series=scenes,
        series_clear=tuple(d.clear_fraction for d in sel.dates),
        series_windows=tuple(d.window for d in sel.dates),
    )
    metas = tuple(
        SeriesDateMeta(
            index=i,
            window=d.window,
            item_id=d.item_id,
            datetime=d.datetime,
            clear_fraction=d.clear_fraction,
            valid_fraction=1.0,
        )
        for i, d in enumerate(sel.dates)
    )
    series = SeriesArrays(dates=metas, stack=stack)
    return Sample(pair=pair, before=stack[0], after=stack[-1], series=series)


def _stack(eo: dict[str, Any], sel: SeriesSelection) -> np.ndarray:
    idx = [int(d.item_id.split("_")[1]) for d in sel.dates]
    return np.ascontiguousarray(eo["ndvi"][idx][:, None].astype(np.float32))


def test_real_dates_come_out_in_time_order_one_per_summer(eolearn: dict[str, Any]) -> None:
    a, b = _selection(eolearn, 1), _selection(eolearn, 2)
    assert a == b  # the catalog's order does not matter
    times = [d.datetime for d in a.dates]
    assert times == sorted(times) and len(set(d.window for d in a.dates)) == len(times)
    assert [t.year for t in times] == [2015, 2016, 2017]
    for d in a.dates:  # each chosen date is clear over the cell by its own cloud mask
        i = int(d.item_id.split("_")[1])
        assert d.clear_fraction == pytest.approx(float(eolearn["valid"][i].mean()))
        assert d.clear_fraction >= 0.95


def test_a_real_sequence_registers_onto_date_0_sub_pixel(eolearn: dict[str, Any]) -> None:
    sel = _selection(eolearn, 0)
    stack = _stack(eolearn, sel)
    out = coregister_series(_sample(eolearn, sel, stack.copy()), CoregConfig(), band_index=0)
    assert not isinstance(out, QuarantineRecord), out
    assert out.series is not None
    dates = out.series.dates
    assert dates[0].shift_px == (0.0, 0.0)  # the reference
    for d in dates[1:]:  # one grid: what is measured is sub-pixel
        assert max(abs(v) for v in d.shift_px) < 0.5, d
        assert d.residual_px < 0.5, d
    assert out.coreg is not None and out.coreg.shift_px == dates[-1].shift_px
    assert np.shares_memory(out.after, out.series.stack[-1])  # the pair: first and last date
    assert np.shares_memory(out.before, out.series.stack[0])


def test_an_injected_shift_is_found_on_its_date_only(eolearn: dict[str, Any]) -> None:
    sel = _selection(eolearn, 0)
    stack = _stack(eolearn, sel)
    base = coregister_series(_sample(eolearn, sel, stack.copy()), CoregConfig(), band_index=0)
    assert not isinstance(base, QuarantineRecord) and base.series is not None
    k = 2
    moved = stack.copy()
    moved[k, 0] = ndimage.shift(stack[k, 0], (1.3, -0.8), order=3, mode="nearest")
    out = coregister_series(_sample(eolearn, sel, moved), CoregConfig(), band_index=0)
    assert not isinstance(out, QuarantineRecord) and out.series is not None
    for i, (d0, d1) in enumerate(zip(base.series.dates, out.series.dates, strict=True)):
        if i == k:  # the correction undoes the injected content displacement
            assert d1.shift_px[0] - d0.shift_px[0] == pytest.approx(-1.3, abs=0.15)
            assert d1.shift_px[1] - d0.shift_px[1] == pytest.approx(0.8, abs=0.15)
        else:
            assert d1.shift_px == d0.shift_px
