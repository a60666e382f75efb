"""pair: pixel clear fraction, unknown clear fraction, gap bounds, season, tie-breaks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from geodelta.pipelines.stages.labels.landcover import pick_landcover
from geodelta.pipelines.stages.pair import choose_pair, season_gap_days
from geodelta.schemas import AssetRef, QuarantineRecord, ScenePair, SceneRef, TileJob, parse_config
from tests.conftest import minimal_config

JOB = TileJob(
    cell_id="31N-1280-0569-3902",
    crs="EPSG:32631",
    transform=(10.0, 0.0, 728320.0, 0.0, -10.0, 4995840.0),
    shape=(128, 128),
    bbox_lonlat=(5.90, 45.06, 5.92, 45.08),
    t0_window=(datetime(2020, 6, 1, tzinfo=UTC), datetime(2020, 8, 31, tzinfo=UTC)),
    t1_window=(datetime(2021, 6, 1, tzinfo=UTC), datetime(2021, 8, 31, tzinfo=UTC)),
)
FOOTPRINT = {
    "type": "Polygon",
    "coordinates": [[[5.8, 45.0], [6.0, 45.0], [6.0, 45.1], [5.8, 45.1], [5.8, 45.0]]],
}


def scene(
    item_id: str,
    y: int,
    m: int,
    d: int,
    *,
    crs: str = "EPSG:32631",
    geometry: dict | None = FOOTPRINT,
) -> SceneRef:
    return SceneRef(
        collection="s2",
        item_id=item_id,
        datetime=datetime(y, m, d, 10, tzinfo=UTC),
        crs=crs,
        bbox_lonlat=(5.8, 45.0, 6.0, 45.1),
        geometry=geometry,
        assets={"B04": AssetRef(href="/x.tif")},
    )


def clear_table(table: dict[str, float | None]):
    return lambda s, job: table[s.item_id]


def cfg(**pairing):
    return parse_config(minimal_config(pairing=pairing))


def test_clearest_pair_wins_using_pixel_clear_fraction() -> None:
    before = [scene("b1", 2020, 7, 10), scene("b2", 2020, 7, 9)]
    after = [scene("a1", 2021, 7, 11), scene("a2", 2021, 7, 14)]
    # same season: b1 is the clearer before scene even though a scene-wide cloud cover might say otherwise
    pair = choose_pair(
        JOB, before, after, clear_table({"b1": 0.99, "b2": 0.96, "a1": 0.5, "a2": 0.98}), cfg()
    )
    assert isinstance(pair, ScenePair)
    assert (pair.before.item_id, pair.after.item_id) == ("b1", "a2")
    assert pair.before_clear == 0.99 and pair.after_clear == 0.98


def test_no_clear_scene_is_quarantined_with_the_fractions() -> None:
    before = [scene("b1", 2020, 6, 14), scene("b2", 2020, 7, 9)]
    after = [scene("a1", 2021, 6, 19)]
    out = choose_pair(JOB, before, after, clear_table({"b1": 0.40, "b2": 0.90, "a1": 1.0}), cfg())
    assert isinstance(out, QuarantineRecord)
    assert (out.stage, out.reason) == ("pair", "no_clear_scene_t0")
    assert (
        "b1=0.400" in out.detail
        and "b2=0.900" in out.detail
        and "min_clear_fraction=0.95" in out.detail
    )


def test_unknown_clear_fraction_is_never_assumed_clear() -> None:
    before, after = [scene("b1", 2020, 6, 14)], [scene("a1", 2021, 6, 19)]
    unknown = clear_table({"b1": None, "a1": None})
    out = choose_pair(JOB, before, after, unknown, cfg())
    assert isinstance(out, QuarantineRecord) and out.reason == "unknown_clear_fraction"
    assert "allow_unknown_clear" in out.detail
    kept = choose_pair(JOB, before, after, unknown, cfg(allow_unknown_clear=True))
    assert isinstance(kept, ScenePair)
    assert kept.before_clear is None and kept.after_clear is None


def test_gap_bounds() -> None:
    before, after = [scene("b1", 2020, 6, 14)], [scene("a1", 2021, 6, 19)]
    out = choose_pair(
        JOB, before, after, clear_table({"b1": 1.0, "a1": 1.0}), cfg(max_gap_days=300)
    )
    assert isinstance(out, QuarantineRecord) and out.reason == "no_pair_in_gap"
    assert "pairing.max_gap_days" in out.detail


def test_same_season_preferred_when_equally_clear() -> None:
    before = [scene("b1", 2020, 6, 14)]
    after = [scene("a_far", 2021, 8, 30), scene("a_near", 2021, 6, 16)]
    pair = choose_pair(
        JOB, before, after, clear_table({"b1": 1.0, "a_far": 1.0, "a_near": 1.0}), cfg()
    )
    assert isinstance(pair, ScenePair) and pair.after.item_id == "a_near"
    assert season_gap_days(
        datetime(2020, 12, 30, tzinfo=UTC), datetime(2021, 1, 2, tzinfo=UTC)
    ) == pytest.approx(3.0, abs=1)


def test_own_grid_preferred_and_ties_break_on_ids() -> None:
    before = [scene("b_other", 2020, 6, 14, crs="EPSG:32632"), scene("b_own", 2020, 6, 14)]
    after = [scene("a2", 2021, 6, 14), scene("a1", 2021, 6, 14)]
    pair = choose_pair(
        JOB, before, after, clear_table(dict.fromkeys(["b_other", "b_own", "a1", "a2"], 1.0)), cfg()
    )
    assert isinstance(pair, ScenePair)
    assert (pair.before.item_id, pair.after.item_id) == ("b_own", "a1")


def test_scene_that_does_not_cover_the_cell_is_skipped() -> None:
    partial = {
        "type": "Polygon",
        "coordinates": [[[5.8, 45.0], [5.91, 45.0], [5.91, 45.1], [5.8, 45.1], [5.8, 45.0]]],
    }
    before = [scene("b1", 2020, 6, 14, geometry=partial)]
    after = [scene("a1", 2021, 6, 19)]
    out = choose_pair(JOB, before, after, clear_table({"b1": 1.0, "a1": 1.0}), cfg())
    assert isinstance(out, QuarantineRecord) and out.reason == "no_scene_t0"
    assert "none covers the cell" in out.detail


def test_pick_landcover_by_period() -> None:
    def lc(item_id: str, year: int) -> SceneRef:
        return scene(item_id, year, 7, 1).model_copy(
            update={
                "start_datetime": datetime(year, 1, 1, tzinfo=UTC),
                "end_datetime": datetime(year, 12, 31, 23, tzinfo=UTC),
            }
        )

    items = [lc("lc2020", 2020), lc("lc2021", 2021)]
    assert pick_landcover(items, datetime(2021, 2, 1, tzinfo=UTC)).item_id == "lc2021"  # type: ignore[union-attr]
    assert pick_landcover(items, datetime(2019, 12, 1, tzinfo=UTC)).item_id == "lc2020"  # type: ignore[union-attr]
    assert pick_landcover([], datetime(2019, 12, 1, tzinfo=UTC)) is None


class RecordingCatalog:
    """A catalog over fixed scenes per collection that records every search."""

    def __init__(self, scenes: dict[str, list[SceneRef]]) -> None:
        self.scenes = scenes
        self.searches: list[tuple[tuple[str, ...], tuple[datetime, datetime]]] = []

    def search(self, collections, bbox, window, *, max_cloud_cover=None):  # type: ignore[no-untyped-def]
        self.searches.append((tuple(collections), window))
        lo, hi = window
        return [s for c in collections for s in self.scenes.get(c, []) if lo <= s.datetime <= hi]


def _landcover_item(item_id: str, year: int) -> SceneRef:
    return scene(item_id, year, 7, 1).model_copy(
        update={
            "collection": "lc",
            "start_datetime": datetime(year, 1, 1, tzinfo=UTC),
            "end_datetime": datetime(year, 12, 31, 23, tzinfo=UTC),
        }
    )


def test_search_and_pair_picks_landcover_items_per_date() -> None:
    from geodelta.pipelines.stages.pair import search_and_pair

    catalog = RecordingCatalog(
        {
            "s2": [scene("b1", 2020, 7, 10), scene("a1", 2021, 7, 11)],
            "lc": [_landcover_item("lc2020", 2020), _landcover_item("lc2021", 2021)],
        }
    )
    out = search_and_pair(JOB, cfg(), catalog, clear_table({"b1": 1.0, "a1": 1.0}))  # type: ignore[arg-type]
    assert isinstance(out, ScenePair)
    assert (out.label_before.item_id, out.label_after.item_id) == ("lc2020", "lc2021")  # type: ignore[union-attr]
    # the land-cover collection is searched once, from the start of t0 to the end of t1
    assert catalog.searches[-1] == (("lc",), (JOB.t0_window[0], JOB.t1_window[1]))

    one_map = RecordingCatalog({**catalog.scenes, "lc": [_landcover_item("lc2020", 2020)]})
    out = search_and_pair(JOB, cfg(), one_map, clear_table({"b1": 1.0, "a1": 1.0}))  # type: ignore[arg-type]
    assert isinstance(out, QuarantineRecord)
    assert (out.stage, out.reason) == ("pair", "same_landcover_item")
    none = RecordingCatalog({**catalog.scenes, "lc": []})
    out = search_and_pair(JOB, cfg(), none, clear_table({"b1": 1.0, "a1": 1.0}))  # type: ignore[arg-type]
    assert isinstance(out, QuarantineRecord) and out.reason == "no_landcover"
    assert "check labels.collection" in out.detail


def test_search_and_pair_change_mask_rides_on_the_after_item() -> None:
    from geodelta.pipelines.stages.pair import search_and_pair

    labels = {"kind": "change_mask", "asset": "cm", "collection": "lc", "change_values": [2]}
    config = parse_config(minimal_config(labels=labels))
    after = scene("a1", 2021, 7, 11).model_copy(
        update={"assets": {"B04": AssetRef(href="/x.tif"), "cm": AssetRef(href="/cm.tif")}}
    )
    catalog = RecordingCatalog({"s2": [scene("b1", 2020, 7, 10), after], "lc": []})
    out = search_and_pair(JOB, config, catalog, clear_table({"b1": 1.0, "a1": 1.0}))  # type: ignore[arg-type]
    assert isinstance(out, ScenePair)
    assert out.label_after == out.after and out.label_before is None
    # labels.collection is not a change mask's: nothing but the imagery is searched
    assert [c for c, _ in catalog.searches] == [("s2",), ("s2",)]

    catalog = RecordingCatalog({"s2": [scene("b1", 2020, 7, 10), scene("a1", 2021, 7, 11)]})
    out = search_and_pair(JOB, config, catalog, clear_table({"b1": 1.0, "a1": 1.0}))  # type: ignore[arg-type]
    assert isinstance(out, QuarantineRecord)
    assert (out.stage, out.reason) == ("pair", "no_change_mask")
    assert "has no 'cm' asset" in out.detail
