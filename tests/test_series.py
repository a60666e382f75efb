"""Sequences, foundations (issue 15): date selection by pixel clear fraction on the REAL eo-learn
Sentinel-2 series (68 dates with s2cloudless masks, PROVENANCE.md section 1), the ``time.series``
config section (validated at load, outside the hash when absent), and ``build`` refusing a
sequence that cannot work."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from geodelta.pipelines.cli import app
from geodelta.pipelines.stages.series import (
    SeriesCandidate,
    SeriesInputError,
    clear_fraction,
    select_series,
)
from geodelta.schemas import ConfigError, QuarantineRecord, load_config
from geodelta.schemas.series import (
    SeriesConfig,
    SeriesSelection,
    SeriesWindow,
    series_windows,
)
from tests.conftest import REPO

#: A 64 x 64 cell window of the 101 x 100 eo-learn grid (rows 20:84, columns 30:94).
CELL = (slice(20, 84), slice(30, 94))


@pytest.fixture(scope="module")
def eolearn(shared_data: Path) -> dict[str, Any]:
    root = shared_data / "eolearn_slovenia_s2"
    times = [
        datetime.fromisoformat(t).replace(tzinfo=UTC)
        for t in json.loads((root / "timestamps.json").read_text())
    ]
    return {
        "times": times,
        "is_valid": np.load(root / "mask" / "IS_VALID.npy")[..., 0],  # data and not cloud
        "clm": np.load(root / "mask" / "CLM.npy")[..., 0],  # 1 = cloud
        "is_data": np.load(root / "mask" / "IS_DATA.npy")[..., 0],
    }


def _candidates(
    eo: dict[str, Any], indices: range | list[int] | None = None
) -> list[SeriesCandidate]:
    idx = range(len(eo["times"])) if indices is None else indices
    return [
        SeriesCandidate(
            item_id=f"S2_{i:02d}", datetime=eo["times"][i], clear=eo["is_valid"][i][CELL]
        )
        for i in idx
    ]


def _independent_fraction(eo: dict[str, Any], i: int) -> float:
    """Clear fraction from the cloud mask itself (CLM == 0 where IS_DATA), not from IS_VALID."""
    clm, data = eo["clm"][i][CELL], eo["is_data"][i][CELL]
    return float(((clm == 0) & (data == 1)).sum()) / clm.size


def test_the_real_series_is_what_provenance_says(eolearn: dict[str, Any]) -> None:
    assert len(eolearn["times"]) == 68
    assert eolearn["is_valid"].shape == (68, 101, 100)
    assert eolearn["times"][0] == datetime(2015, 7, 11, 10, 0, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "threshold", "expected"),
    [
        (dict(start="2015-07-01", end="2018-01-01", step="season"), 0.9, None),
        # partly cloudy months of 2016 (IS_VALID fractions over CELL: Feb 0.81; Mar 0.50, 0.00;
        # Apr 0.00; May 1.00, 0.79, 1.00 (a tie: 05-26T10:xx is nearer the centre
        # 05-16T12:00 than 05-06T10:xx); Jun 0.95, 0.00, 0.47)
        (
            dict(start="2016-02-01", end="2016-07-01", step="month"),
            0.5,
            ["2016-02-06", "2016-03-17", "2016-05-26", "2016-06-05"],
        ),
    ],
)
def test_clearest_date_per_window_on_real_cloud_masks(
    eolearn: dict[str, Any], spec: dict[str, str], threshold: float, expected: list[str] | None
) -> None:
    windows = series_windows(SeriesConfig(**spec, min_clear_fraction=threshold))
    cands = _candidates(eolearn)
    sel = select_series(
        "cell", windows, list(reversed(cands)), min_dates=3, min_clear_fraction=threshold
    )
    assert isinstance(sel, SeriesSelection), sel
    times = eolearn["times"]
    fractions = [_independent_fraction(eolearn, i) for i in range(68)]
    chosen = {d.window: d for d in sel.dates}
    for w in windows:
        inside = [i for i in range(68) if w.start <= times[i] < w.end]
        best = max((fractions[i] for i in inside), default=-1.0)
        if best < threshold:
            assert w.index not in chosen and w.index in sel.empty_windows
            continue
        d = chosen[w.index]
        i = int(d.item_id[3:])
        assert w.start <= d.datetime < w.end
        assert d.clear_fraction == pytest.approx(fractions[i]) == pytest.approx(best)
        # among the equally clear dates, the one nearest the window's centre
        tied = [j for j in inside if fractions[j] == pytest.approx(best)]
        assert abs(d.datetime - w.centre) == min(abs(times[j] - w.centre) for j in tied)
    assert len(sel.dates) >= 3
    assert [d.datetime for d in sel.dates] == sorted(d.datetime for d in sel.dates)
    if expected is not None:
        assert [d.datetime.date().isoformat() for d in sel.dates] == expected
        assert sel.empty_windows == (2,)  # April 2016: one fully cloudy acquisition


def test_a_window_of_only_cloudy_dates_quarantines_with_dates_and_fractions(
    eolearn: dict[str, Any],
) -> None:
    times = eolearn["times"]
    fractions = [_independent_fraction(eolearn, i) for i in range(68)]
    # the first month of the real series in which every acquisition is cloudy over the cell
    spec = SeriesConfig(start="2015-07-01", end="2018-01-01", step="month")
    months = series_windows(spec)
    cloudy = next(
        w
        for w in months
        if (inside := [i for i in range(68) if w.contains(times[i])])
        and max(fractions[i] for i in inside) < 0.5
    )
    three = months[cloudy.index - 1 : cloudy.index + 2]  # the cloudy month and its neighbours
    assert len(three) == 3 and three[1] == cloudy
    seen = [i for i in range(68) if any(w.contains(times[i]) for w in three)]
    out = select_series(
        "cell", three, _candidates(eolearn, seen), min_dates=3, min_clear_fraction=0.5
    )
    assert isinstance(out, QuarantineRecord)
    assert (out.stage, out.reason) == ("pair", "too_few_dates")
    for i in seen:  # every date seen, with its clear fraction
        assert f"{times[i]:%Y-%m-%dT%H:%M:%S}={fractions[i]:.3f}" in out.detail
    assert "time.series.min_dates (3)" in out.detail


def test_ties_go_to_the_window_centre_then_the_earlier_date() -> None:
    w = SeriesWindow(
        index=0, start=datetime(2020, 1, 1, tzinfo=UTC), end=datetime(2020, 1, 31, tzinfo=UTC)
    )
    full = np.ones((4, 4), bool)
    half = full.copy()
    half[:2] = False

    def cand(day: int, mask: np.ndarray) -> SeriesCandidate:
        return SeriesCandidate(f"d{day}", datetime(2020, 1, day, tzinfo=UTC), mask)

    # centre is 2020-01-16: day 14 and day 18 are 2 days away; day 10 is further
    picks = select_series(
        "c",
        [w],
        [cand(10, full), cand(18, full), cand(14, full), cand(16, half)],
        min_dates=1,
        min_clear_fraction=0.4,
    )
    assert isinstance(picks, SeriesSelection)
    assert picks.dates[0].item_id == "d14"  # equal fraction, equal distance: the earlier
    picks = select_series(
        "c", [w], [cand(2, full), cand(16, half)], min_dates=1, min_clear_fraction=0.4
    )
    assert isinstance(picks, SeriesSelection)
    assert picks.dates[0].item_id == "d2"  # a higher clear fraction beats the centre


def test_bad_masks_are_refused() -> None:
    t = datetime(2020, 1, 1, tzinfo=UTC)
    w = SeriesWindow(index=0, start=t, end=datetime(2021, 1, 1, tzinfo=UTC))
    with pytest.raises(SeriesInputError, match="differ in shape"):
        select_series(
            "c",
            [w],
            [
                SeriesCandidate("a", t, np.ones((2, 2), bool)),
                SeriesCandidate("b", t, np.ones((3, 3), bool)),
            ],
            min_dates=1,
            min_clear_fraction=0.5,
        )
    with pytest.raises(SeriesInputError, match="no pixels"):
        clear_fraction(np.ones((0, 3), bool))


def test_selection_round_trips() -> None:
    spec = SeriesConfig(start="2016-01-01", end="2019-01-01")
    windows = series_windows(spec)
    assert [(w.start.year, w.end.year) for w in windows] == [
        (2016, 2017),
        (2017, 2018),
        (2018, 2019),
    ]
    cands = [
        SeriesCandidate(f"i{y}", datetime(y, 6, 1, tzinfo=UTC), np.ones((2, 2), bool))
        for y in (2016, 2017, 2018)
    ]
    sel = select_series("c", windows, cands, min_dates=3, min_clear_fraction=0.9)
    assert isinstance(sel, SeriesSelection)
    assert SeriesSelection.model_validate_json(sel.model_dump_json()) == sel


# -- the config section --------------------------------------------------------------------------


def _demo_time(**series: Any) -> dict[str, Any]:
    time = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())["time"]
    return {**time, "series": series} if series else time


def test_windows_follow_the_spec() -> None:
    summers = series_windows(
        SeriesConfig(start="2016-06-01", end="2019-06-01", step="year", window_days=92)
    )
    assert [(w.start.date().isoformat(), w.end.date().isoformat()) for w in summers] == [
        ("2016-06-01", "2016-09-01"),
        ("2017-06-01", "2017-09-01"),
        ("2018-06-01", "2018-09-01"),
    ]
    seasons = series_windows(SeriesConfig(start="2016-01-31", end="2016-12-01", step="season"))
    assert [w.start.date().isoformat() for w in seasons] == [
        "2016-01-31",
        "2016-04-30",
        "2016-07-31",
        "2016-10-31",
    ]
    assert all(a.end <= b.start for a, b in itertools.pairwise(seasons))
    assert seasons[-1].end == datetime(2016, 12, 1, tzinfo=UTC)


def test_no_series_keeps_the_config_hash() -> None:
    plain = load_config(REPO / "configs" / "demo.yaml")
    assert plain.time.series is None
    assert set(plain.normalised()["time"]) == {"t0", "t1"}  # the hash of every existing config
    series = load_config(
        REPO / "configs" / "demo.yaml",
        {"time": _demo_time(start="2015-01-01", end="2018-01-01")},
    )
    assert series.time.series is not None and series.time.series.min_dates == 3
    assert series.normalised()["time"]["series"]["step"] == "year"
    assert series.config_hash() != plain.config_hash()  # a series shapes the samples


@pytest.mark.parametrize(
    ("series", "message"),
    [
        (
            {"start": "2016-01-01", "end": "2018-01-01", "step": "year"},
            "has 2 window(s), fewer than min_dates (3): no room for 3 dates",
        ),
        (
            {"start": "2016-01-01", "end": "2019-01-01", "step": "season", "window_days": 120},
            "time.series.window_days (120) is longer than the shortest season step (90 days)",
        ),
        ({"start": "2016-01-01", "end": "2020-01-01", "min_dates": 2}, "min_dates"),
        ({"start": "2019-01-01", "end": "2016-01-01"}, "start < end"),
    ],
)
def test_bad_window_specs_are_rejected_at_load(series: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(REPO / "configs" / "demo.yaml", {"time": _demo_time(**series)})
    text = str(exc.value)
    assert message in text and "time.series" in text
    assert len(text.splitlines()) == 1


runner = CliRunner()


def _config_file(tmp_path: Path, catalog: Any, **series: Any) -> Path:
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["catalog"]["url"] = str(catalog.catalog_path)
    data["aoi"] = {"bbox": list(catalog.aoi_bbox)}
    data["output"] = {"dir": str(tmp_path / "release")}
    data["runner"] = {"name": "inprocess"}
    data["time"] = _demo_time(**series)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _one_error(res: Any) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return re.sub(r"\s+", " ", lines[0])


def test_build_check_rejects_a_window_spec_without_room(tmp_path: Path, demo_catalog: Any) -> None:
    cfg = _config_file(tmp_path, demo_catalog, start="2016-01-01", end="2017-06-01")
    line = _one_error(runner.invoke(app, ["build", str(cfg), "--check"]))
    assert "fewer than min_dates (3)" in line


@pytest.mark.parametrize("check", [False, True])
def test_build_refuses_a_series_without_land_cover(
    tmp_path: Path, demo_catalog: Any, check: bool
) -> None:
    """Sequences are labelled by a land-cover map per date: a change-mask label cannot work,
    so it stops before any work, one line naming the key."""
    path = _config_file(tmp_path, demo_catalog, start="2016-01-01", end="2020-01-01")
    data = yaml.safe_load(path.read_text())
    data["labels"] = {"kind": "change_mask", "asset": "mask"}
    path.write_text(yaml.safe_dump(data))
    args = ["build", str(path), "--no-progress"] + (["--check"] if check else [])
    line = _one_error(runner.invoke(app, args))
    assert "time.series needs labels.kind: landcover" in line and "'change_mask'" in line
    assert not (tmp_path / "release").exists()  # nothing written
