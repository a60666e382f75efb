"""Labels of a sequence (pipelines/stages/labels/series.py): step masks, first_change and the
SeriesFacts, against hand-made stacks whose answers are known, random stacks (consistency of
the counts), and the demo catalogs' land-cover maps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from geodelta.pipelines.stages.label import LabelError, clean_mask, transition_mask
from geodelta.pipelines.stages.labels.base import Rejection
from geodelta.pipelines.stages.labels.series import (
    SeriesLabels,
    label_series,
    pick_series_landcover,
    read_series_landcover,
    trend_threshold,
)
from geodelta.schemas import SceneRef
from geodelta.schemas.classes import CLASS_INDEX, CLASSES, decode_transition, transition_code
from geodelta.schemas.config import LabelConfig
from geodelta.schemas.series import SeriesFacts

TREE, GRASS, CROP, BUILT, BARE, WATER = (
    CLASS_INDEX[n] for n in ("tree_cover", "grassland", "cropland", "built_up", "bare", "water")
)
LC = "io-lulc-annual-v02"


def years(t: int, first: int = 2018) -> list[datetime]:
    return [datetime(first + i, 7, 14, 10, 30, tzinfo=UTC) for i in range(t)]


def stack(t: int, shape: tuple[int, int] = (12, 12), fill: int = TREE) -> np.ndarray:
    return np.full((t, *shape), fill, dtype=np.uint8)


def run(lc: np.ndarray, min_region_px: int = 1, first: int = 2018) -> SeriesLabels:
    return label_series(lc, years(len(lc), first), min_region_px=min_region_px)


# --------------------------------------------------------------------------------------------
# Hand-made stacks


def test_a_region_appearing_at_step_two_and_persisting() -> None:
    lc = stack(4)
    lc[2:, 1:4, 4:8] = BUILT  # 12 px built from date 2 on
    out = run(lc, min_region_px=4)
    f = out.facts
    assert out.step_masks.shape == (3, 12, 12) and out.step_masks.dtype == np.uint8
    assert out.first_change.dtype == np.uint8 and out.valid.all()
    assert [s.changed_pixels for s in f.steps] == [0, 12, 0]
    assert [s.index for s in f.steps] == [1, 2, 3]
    assert f.steps[1].start == years(4)[1] and f.steps[1].end == years(4)[2]
    assert set(np.unique(out.step_masks[1])) == {0, transition_code("tree_cover", "built_up")}
    assert (out.first_change[1:4, 4:8] == 2).all() and out.first_change.sum() == 24
    assert f.ever_changed_pixels == 12 and f.valid_pixels == 144
    (region,) = f.regions
    assert region.id == 1 and region.pixels == 12
    assert region.classes == ("tree_cover", "tree_cover", "built_up", "built_up")
    assert region.changed_steps == (2,) and region.persistent
    assert region.bbox_px == (4, 1, 8, 4)  # x0, y0, x1, y1 (pixel edges)
    assert region.box == (333, 83, 667, 334)  # low edges down, high edges up
    assert region.position == "north"  # centroid row 2, col 5.5 of a 12 x 12 tile


def test_a_transient_flood_comes_back() -> None:
    lc = stack(4, fill=GRASS)
    lc[1, 6:10, 0:5] = WATER  # flooded at date 1 only
    out = run(lc, min_region_px=4)
    f = out.facts
    assert [s.changed_pixels for s in f.steps] == [20, 20, 0]
    assert set(np.unique(out.step_masks[0])) == {0, transition_code("grassland", "water")}
    assert set(np.unique(out.step_masks[1])) == {0, transition_code("water", "grassland")}
    assert (out.first_change[6:10, 0:5] == 1).all() and f.ever_changed_pixels == 20
    (region,) = f.regions
    assert region.classes == ("grassland", "water", "grassland", "grassland")
    assert region.changed_steps == (1, 2) and not region.persistent
    assert region.position == "south-west"
    water = next(c for c in f.classes if c.class_name == "water")
    assert water.pixels == (0, 20, 0, 0) and water.trend == "stable" and water.max_index == 1


def test_a_region_changing_twice() -> None:
    lc = stack(5)
    lc[1:, 0:4, 8:12] = CROP  # cleared at step 1
    lc[3:, 0:4, 8:12] = BUILT  # built over at step 3
    out = run(lc, min_region_px=4)
    (region,) = out.facts.regions
    assert region.classes == ("tree_cover", "cropland", "cropland", "built_up", "built_up")
    assert region.changed_steps == (1, 3) and region.persistent
    assert region.position == "north-east"
    assert (out.first_change[0:4, 8:12] == 1).all()  # the first change, not the last
    assert [s.changed_pixels for s in out.facts.steps] == [16, 0, 16, 0]
    assert set(np.unique(out.step_masks[2])) == {0, transition_code("cropland", "built_up")}


def test_a_region_whose_dominant_class_never_changes_is_still_listed() -> None:
    lc = stack(4)
    lc[1, 0:2, 0:2] = CROP  # three 4 px blocks side by side, each cropland at one date only
    lc[2, 0:2, 2:4] = CROP
    lc[3, 0:2, 4:6] = CROP
    out = run(lc, min_region_px=4)
    assert [s.changed_pixels for s in out.facts.steps] == [4, 8, 8]
    assert out.first_change[0, 0] == 1 and out.first_change[0, 2] == 2
    assert out.first_change[0, 4] == 3
    (region,) = out.facts.regions
    assert region.pixels == 12 and region.bbox_px == (0, 0, 6, 2)
    assert region.classes == ("tree_cover",) * 4  # 4 of 12 px at most: tree cover dominates
    assert region.changed_steps == () and not region.persistent


def test_class_trends_at_the_threshold_boundary() -> None:
    # 20 x 20 = 400 valid px: threshold = max(min_region_px, ceil(400 / 100)) = 4 at min 2
    lc = stack(3, (20, 20), fill=GRASS)
    lc[2, 0, 0:4] = WATER  # +4: not beyond the threshold -> stable
    lc[2, 5, 0:5] = BUILT  # +5 -> grew
    lc[0, 10, 0:5] = CROP  # -5 -> shrank
    lc[0, 15, 0:4] = BARE  # -4 -> stable
    out = run(lc, min_region_px=2)
    f = out.facts
    assert f.threshold_px == 4
    trends = {c.class_name: c for c in f.classes}
    assert [c.class_name for c in f.classes] == sorted(trends, key=CLASS_INDEX.__getitem__)
    assert trends["water"].trend == "stable" and trends["water"].pixels == (0, 0, 4)
    assert trends["built_up"].trend == "grew" and trends["built_up"].pixels == (0, 0, 5)
    assert trends["cropland"].trend == "shrank" and trends["cropland"].pixels == (5, 0, 0)
    assert trends["bare"].trend == "stable"
    assert trends["grassland"].pixels == (391, 400, 391)
    assert trends["grassland"].max_index == 1 and trends["grassland"].trend == "stable"
    # min_region_px above 1 % of the valid pixels sets the threshold
    assert run(lc, min_region_px=5).facts.threshold_px == 5
    assert {c.class_name: c.trend for c in run(lc, min_region_px=5).facts.classes}[
        "built_up"
    ] == "stable"
    # ceil, not round: 401 valid pixels -> 5
    assert trend_threshold(401, 1) == 5 and trend_threshold(400, 1) == 4
    assert trend_threshold(0, 3) == 3


def test_ties_lowest_class_and_first_date() -> None:
    lc = stack(4, (8, 8))
    lc[1:, 0:2, 0:2] = BUILT  # a 4 px region: 2 built + 2 crop at dates 1..3
    lc[1:, 1, 0:2] = CROP
    lc[1:, 6:8, 6:8] = WATER  # a second 4 px region, later in raster order
    f = run(lc).facts
    assert [r.pixels for r in f.regions] == [4, 4]
    first, second = f.regions
    assert first.bbox_px == (0, 0, 2, 2) and second.bbox_px == (6, 6, 8, 8)  # raster order
    # tie 2 cropland (4) / 2 built_up (5): the lowest index wins
    assert first.classes == ("tree_cover", "cropland", "cropland", "cropland")
    # a class whose largest area is reached twice: the first date
    lc2 = stack(4, (10, 10))
    lc2[1, 0:5, :] = CROP
    lc2[2, 5:10, :] = CROP
    trends = {c.class_name: c for c in run(lc2).facts.classes}
    assert trends["cropland"].pixels == (0, 50, 50, 0) and trends["cropland"].max_index == 1


def test_invalid_pixels_are_excluded() -> None:
    lc = stack(3)
    lc[1:, 2:6, 2:6] = BUILT  # 16 px change at step 1
    lc[2, 2, 2:6] = 0  # unknown at date 2: a row of the region is not valid
    lc[0, 11, 11] = 0  # unknown at date 0 only
    out = run(lc, min_region_px=4)
    f = out.facts
    assert f.valid_pixels == 144 - 5
    assert not out.valid[2, 3] and not out.valid[11, 11] and out.valid[3, 3]
    # the step mask is the pair mask of its two dates: pixels known on both are in it...
    assert (out.step_masks[0][2:6, 2:6] > 0).all() and out.first_change[2, 3] == 1
    # ...but facts count pixels known on every date
    assert f.steps[0].changed_pixels == 12 and f.ever_changed_pixels == 12
    (region,) = f.regions
    assert region.pixels == 12 and region.bbox_px == (2, 3, 6, 6)
    assert sum(c.pixels[0] for c in f.classes) == f.valid_pixels
    assert {c.class_name: c.pixels for c in f.classes}["built_up"] == (0, 12, 12)


def test_invalid_pixels_can_cut_a_region_below_the_minimum() -> None:
    lc = stack(3)
    lc[1:, 0:2, 0:3] = CROP  # 6 px, kept by the step mask (min 5)...
    lc[0, 0, 0:3] = 0  # ...but 3 of them are not known at date 0
    out = run(lc, min_region_px=5)
    assert (out.step_masks[0] > 0).sum() == 0  # the step mask saw only 3 px: removed
    lc[0, 0, 0:3] = TREE
    lc[2, 0, 0:2] = 0
    out = run(lc, min_region_px=5)
    assert (out.step_masks[0] > 0).sum() == 6 and out.facts.ever_changed_pixels == 4
    assert out.facts.regions == ()  # 4 valid changed px < 5


def test_min_region_px_removes_small_specks() -> None:
    lc = stack(4)
    lc[1:, 0, 0:3] = CROP  # 3 px speck: removed at min 4
    lc[2:, 5:7, 5:7] = BUILT  # 4 px: kept
    lc[3, 10, 10] = WATER  # 1 px at the last step: removed
    out = run(lc, min_region_px=4)
    assert out.step_masks[0].sum() == 0 and out.first_change[0, 0] == 0
    assert out.step_masks[2].sum() == 0
    assert [s.changed_pixels for s in out.facts.steps] == [0, 4, 0]
    assert [r.pixels for r in out.facts.regions] == [4]
    # the specks still count in the class areas (raw maps over valid pixels)
    assert {c.class_name: c.pixels for c in out.facts.classes}["cropland"] == (0, 3, 3, 3)
    kept = run(lc, min_region_px=1)
    assert sorted(r.pixels for r in kept.facts.regions) == [1, 3, 4]
    assert kept.first_change[10, 10] == 3


def test_dates_are_utc_and_facts_round_trip() -> None:
    lc = stack(3)
    lc[1:, 0:3, 0:3] = BUILT
    plus2 = [d.astimezone(timezone(timedelta(hours=2))) for d in years(3)]
    out = label_series(lc, plus2, min_region_px=1)
    assert out.facts.dates == tuple(years(3))
    assert all(d.utcoffset() == timedelta(0) for d in out.facts.dates)
    again = SeriesFacts.model_validate_json(out.facts.model_dump_json())
    assert again == out.facts
    assert label_series(lc, years(3), min_region_px=1).facts.model_dump_json() == (
        out.facts.model_dump_json()
    )


@pytest.mark.parametrize(
    ("lc", "dates", "match"),
    [
        (stack(2), years(2), "3..256 dates"),
        (stack(3)[0], years(3), r"\(T, H, W\)"),
        (stack(3), years(4), "3 land-cover maps but 4 dates"),
        (np.full((3, 4, 4), 12, np.uint8), years(3), "outside the geodelta class indices"),
        (np.full((3, 4, 4), -1, np.int16), years(3), "outside the geodelta class indices"),
        (np.ones((3, 4, 4), np.float32), years(3), "integer class indices"),
        (stack(3), [d.replace(tzinfo=None) for d in years(3)], "timezone-aware"),
        (stack(3), [years(3)[0], years(3)[2], years(3)[1]], "dates must increase"),
        (stack(3), [years(3)[0], years(3)[0], years(3)[1]], "dates must increase"),
    ],
)
def test_bad_stacks_are_refused(lc: np.ndarray, dates: list[datetime], match: str) -> None:
    with pytest.raises(LabelError, match=match):
        label_series(lc, dates, min_region_px=1)


def test_min_region_px_below_one_is_refused() -> None:
    with pytest.raises(LabelError, match=r"labels\.min_region_px"):
        label_series(stack(3), years(3), min_region_px=0)


# --------------------------------------------------------------------------------------------
# Random stacks: the counts agree with each other and with the definitions


def random_stack(rng: np.random.Generator, t: int, shape: tuple[int, int]) -> np.ndarray:
    """Blocky maps (2 x 2 blocks of 4 classes), each date changing a random part of the
    previous one, with a few unknown pixels."""
    h, w = shape
    classes = np.array([TREE, CROP, BUILT, WATER], dtype=np.uint8)
    base = classes[rng.integers(0, 4, (h // 2 + 1, w // 2 + 1))]
    cur = np.kron(base, np.ones((2, 2), dtype=np.uint8))[:h, :w]
    out = []
    for _ in range(t):
        change = np.kron(rng.random((h // 2 + 1, w // 2 + 1)) < 0.15, np.ones((2, 2), bool))
        new = classes[rng.integers(0, 4, (h, w))]
        cur = np.where(change[:h, :w] & (rng.random((h, w)) < 0.8), new, cur)
        frame = cur.copy()
        frame[rng.random((h, w)) < 0.01] = 0
        out.append(frame)
    return np.stack(out).astype(np.uint8)


@pytest.mark.parametrize("seed", range(12))
def test_random_stacks_are_consistent(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = int(rng.integers(3, 7))
    shape = (int(rng.integers(8, 40)), int(rng.integers(8, 40)))
    lc = random_stack(rng, t, shape)
    m = int(rng.integers(1, 6))
    out = label_series(lc, years(t), min_region_px=m)
    f = out.facts
    valid = (lc > 0).all(axis=0)
    assert (out.valid == valid).all() and f.valid_pixels == int(valid.sum())
    assert f.shape == shape and len(f.dates) == t and len(f.steps) == t - 1
    for k in range(1, t):
        mask = out.step_masks[k - 1]
        assert (mask == clean_mask(transition_mask(lc[k - 1], lc[k]), m)).all()
        assert f.steps[k - 1].changed_pixels == int(((mask > 0) & valid).sum())
        rows, cols = np.nonzero(mask)
        for r, c in list(zip(rows.tolist(), cols.tolist(), strict=True))[:50]:
            assert decode_transition(int(mask[r, c])) == (
                CLASSES[lc[k - 1, r, c]],
                CLASSES[lc[k, r, c]],
            )
    # first_change: the first step mask > 0, 0 when none
    fc = out.first_change
    any_change = (out.step_masks > 0).any(axis=0)
    assert ((fc == 0) == ~any_change).all()
    for k in range(1, t):
        at = fc == k
        assert (out.step_masks[k - 1][at] > 0).all()
        assert not (out.step_masks[: k - 1, at] > 0).any()
    assert f.ever_changed_pixels == int(((fc > 0) & valid).sum())
    assert f.ever_changed_pixels <= sum(s.changed_pixels for s in f.steps)
    # regions: the components of the changed valid pixels with >= m pixels, by size
    labels, _ = ndimage.label((fc > 0) & valid, structure=np.ones((3, 3), bool))
    sizes = sorted((int(s) for s in np.bincount(labels.ravel())[1:] if s >= m), reverse=True)
    assert [r.pixels for r in f.regions] == sizes
    assert [r.id for r in f.regions] == list(range(1, len(sizes) + 1))
    assert sum(r.pixels for r in f.regions) <= f.ever_changed_pixels
    for r in f.regions:
        assert len(r.classes) == t and "unknown" not in r.classes
        assert r.changed_steps == tuple(k for k in range(1, t) if r.classes[k] != r.classes[k - 1])
        assert r.persistent == (r.classes[-1] != r.classes[0])
        x0, y0, x1, y1 = r.bbox_px
        assert 0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]
        assert r.pixels <= (x1 - x0) * (y1 - y0)
    # class areas: every valid pixel has one class at every date
    for i in range(t):
        assert sum(c.pixels[i] for c in f.classes) == f.valid_pixels
    for c in f.classes:
        assert c.max_index == c.pixels.index(max(c.pixels))
        delta = c.pixels[-1] - c.pixels[0]
        assert c.trend == (
            "grew" if delta > f.threshold_px else "shrank" if delta < -f.threshold_px else "stable"
        )
    # same input, same bytes
    assert (
        label_series(lc, years(t), min_region_px=m).facts.model_dump_json() == f.model_dump_json()
    )


# --------------------------------------------------------------------------------------------
# Which map labels which date


def lc_item(item_id: str, year: int | None, when: datetime | None = None) -> SceneRef:
    return SceneRef(
        collection=LC,
        item_id=item_id,
        datetime=when or datetime(year or 2000, 1, 1, tzinfo=UTC),
        start_datetime=None if year is None else datetime(year, 1, 1, tzinfo=UTC),
        end_datetime=None if year is None else datetime(year, 12, 31, 23, 59, 59, tzinfo=UTC),
        bbox_lonlat=(5.0, 45.0, 7.0, 46.0),
        assets={},
    )


LABELS = LabelConfig(kind="landcover", collection=LC, asset="data", product="io-lulc")


def test_each_date_gets_the_map_of_its_year() -> None:
    items = [lc_item(f"31T-{y}", y) for y in (2021, 2017, 2018, 2019, 2020)]
    dates = years(4)  # 2018..2021
    picked = pick_series_landcover(items, dates, LABELS)
    assert not isinstance(picked, Rejection)
    assert [p.item_id for p in picked] == ["31T-2018", "31T-2019", "31T-2020", "31T-2021"]
    # two dates of one year share its map
    two = pick_series_landcover(items, [dates[0], dates[0] + timedelta(days=30), dates[2]], LABELS)
    assert not isinstance(two, Rejection)
    assert [p.item_id for p in two] == ["31T-2018", "31T-2018", "31T-2020"]


def test_an_item_without_a_period_maps_its_datetime_year() -> None:
    items = [lc_item("a", None, datetime(2019, 1, 1, tzinfo=UTC)), lc_item("b", 2020)]
    items.append(lc_item("c", None, datetime(2021, 12, 31, tzinfo=UTC)))
    picked = pick_series_landcover(items, years(3, 2019), LABELS)
    assert not isinstance(picked, Rejection)
    assert [p.item_id for p in picked] == ["a", "b", "c"]


def test_several_maps_of_a_year_pick_deterministically() -> None:
    # two tiles of 2020 covering the cell, and a period straddling 2019-2020
    straddle = SceneRef(
        collection=LC,
        item_id="0-straddle",
        datetime=datetime(2020, 1, 1, tzinfo=UTC),
        start_datetime=datetime(2019, 7, 1, tzinfo=UTC),
        end_datetime=datetime(2020, 6, 30, tzinfo=UTC),
        bbox_lonlat=(5.0, 45.0, 7.0, 46.0),
        assets={},
    )
    items = [lc_item("32T-2020", 2020), lc_item("31T-2020", 2020), straddle]
    items += [lc_item("31T-2019", 2019), lc_item("31T-2021", 2021)]
    when = [datetime(2019, 3, 1, tzinfo=UTC), datetime(2020, 3, 1, tzinfo=UTC)]
    when.append(datetime(2021, 3, 1, tzinfo=UTC))
    for order in (items, items[::-1]):
        picked = pick_series_landcover(order, when, LABELS)
        assert not isinstance(picked, Rejection)
        assert [p.item_id for p in picked] == ["31T-2019", "31T-2020", "31T-2021"]


def test_a_year_without_a_map_is_rejected_naming_it() -> None:
    items = [lc_item(f"31T-{y}", y) for y in (2018, 2019, 2021)]
    dates = years(5, 2018)  # 2018..2022: 2020 and 2022 are missing
    rej = pick_series_landcover(items, dates, LABELS)
    assert isinstance(rej, Rejection) and rej.reason == "missing_label_year"
    assert "year(s) 2020, 2022" in rej.detail and LC in rej.detail
    assert "2018, 2019, 2021" in rej.detail and "time.series" in rej.detail
    assert "\n" not in rej.detail
    none = pick_series_landcover([], dates[:3], LABELS)
    assert isinstance(none, Rejection) and "no item" in none.detail


# --------------------------------------------------------------------------------------------
# Reading the maps of a demo catalog


def demo_lc(catalog: Any) -> tuple[Any, LabelConfig, list[SceneRef]]:
    """A cell of a demo catalog, its labels section and the land-cover items covering it."""
    from geodelta.pipelines.api import plan
    from geodelta.sources.static import StaticCatalog
    from tests.factories import demo_config

    cfg = demo_config(catalog, catalog.root / "unused-out")
    jobs = plan(cfg)
    cat = StaticCatalog(str(catalog.catalog_path))
    assert cfg.labels.collection is not None
    return jobs, cfg.labels, cat.scenes(cfg.labels.collection)


def test_read_series_landcover_on_the_pair_demo(demo_catalog: Any) -> None:
    from geodelta.sources.landcover import to_geodelta
    from geodelta.sources.raster import read_classes

    jobs, labels, items = demo_lc(demo_catalog)
    job = jobs[0]  # a cell holding changes of the demo's truth
    dates = [datetime(2020, 7, 1, tzinfo=UTC), datetime(2021, 7, 1, tzinfo=UTC)]
    dates.append(datetime(2021, 8, 1, tzinfo=UTC))
    picked = pick_series_landcover(items, dates, labels)
    assert not isinstance(picked, Rejection)
    assert [p.start_datetime.year for p in picked if p.start_datetime] == [2020, 2021, 2021]
    lc = read_series_landcover(picked, job, labels)
    assert isinstance(lc, np.ndarray)
    assert lc.shape == (3, *job.shape) and lc.dtype == np.uint8
    for t, item in enumerate(picked):
        raw = read_classes(item.assets[labels.asset], job, item_id=item.item_id)
        assert (lc[t] == to_geodelta(raw, labels.product)).all()
    assert (lc[1] == lc[2]).all() and lc.max() <= 11
    out = label_series(lc, dates, min_region_px=labels.min_region_px)
    assert out.facts.steps[1].changed_pixels == 0 and out.facts.valid_pixels == lc[0].size
    assert out.facts.steps[0].changed_pixels == int((out.step_masks[0] > 0).sum()) > 100
    assert out.facts.regions and all(r.changed_steps == (1,) for r in out.facts.regions)
    assert all(r.persistent for r in out.facts.regions)
    # a year the demo lacks
    rej = pick_series_landcover(items, [*dates, datetime(2023, 7, 1, tzinfo=UTC)], labels)
    assert isinstance(rej, Rejection) and "year(s) 2023" in rej.detail
    assert "2020, 2021" in rej.detail


def test_read_series_landcover_without_the_asset_is_rejected(demo_catalog: Any) -> None:
    jobs, labels, items = demo_lc(demo_catalog)
    wrong = labels.model_copy(update={"asset": "nope"})
    rej = read_series_landcover(items[:1] * 3, jobs[0], wrong)
    assert isinstance(rej, Rejection) and rej.reason == "no_landcover_asset"
    assert "'nope'" in rej.detail and items[0].item_id in rej.detail


@pytest.fixture(scope="module")
def series_catalog(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The series demo catalog (2018..2022, seed 0) at the demo test scale: 15 cells."""
    from geodelta.sources.demo.catalog import write_demo_catalog
    from tests.factories import DEMO_SCALE

    root = tmp_path_factory.mktemp("series-catalog")
    return write_demo_catalog(root / "catalog", seed=0, scale=DEMO_SCALE, series=True)


@pytest.mark.slow  # writes the series demo catalog (~15 s) and reads 5 maps of every cell
def test_regions_of_the_series_demo_follow_its_truth(series_catalog: Any) -> None:
    """Every region over the demo's cells is one injected change: its dominant class per year,
    changed steps and permanence are the truth's."""
    import shapely
    from affine import Affine
    from pyproj import Transformer
    from rasterio.features import rasterize

    from geodelta.pipelines.stages.label import region_image
    from geodelta.sources.demo.series import load_series_truth

    truth = load_series_truth(series_catalog.root)
    jobs, labels, items = demo_lc(series_catalog)
    dates = [datetime(y, 7, 1, tzinfo=UTC) for y in truth.years]
    picked = pick_series_landcover(items, dates, labels)
    assert not isinstance(picked, Rejection)
    assert [p.item_id for p in picked] == [f"DEMO_LC_{y}" for y in truth.years]
    seen: dict[str, int] = {}
    for job in jobs:
        lc = read_series_landcover(picked, job, labels)
        assert isinstance(lc, np.ndarray)
        out = label_series(lc, dates, min_region_px=labels.min_region_px)
        to_cell = Transformer.from_crs("EPSG:4326", job.crs, always_xy=True)
        polygons = [
            (shapely.transform(ch["geometry"], partial(_project, to_cell)), i + 1)
            for i, ch in enumerate(truth.changes)
        ]
        burnt = rasterize(
            polygons, out_shape=job.shape, transform=Affine(*job.transform), fill=0, dtype="int32"
        )
        keep = clean_mask(
            ((out.first_change > 0) & out.valid).astype(np.uint8), labels.min_region_px
        )
        ids = region_image(keep)
        for region in out.facts.regions:
            values, counts = np.unique(burnt[ids == region.id], return_counts=True)
            which = int(values[np.argmax(counts)])
            assert which > 0 and counts.max() >= 0.9 * region.pixels, (job.cell_id, region)
            change = truth.changes[which - 1]
            years_ = truth.years
            assert region.classes == tuple(change["classes_by_year"][y] for y in years_)
            assert region.changed_steps == tuple(years_.index(y) for y in change["change_years"])
            assert region.persistent == change["permanent"]
            seen[change["kind"]] = seen.get(change["kind"], 0) + 1
    # the transient flood and the double change are among the regions checked
    assert {"flood", "double_change"} <= set(seen) and sum(seen.values()) >= 5, seen


def _project(transformer: Any, xy: np.ndarray) -> np.ndarray:
    return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
