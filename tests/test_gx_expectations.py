"""The Great Expectations suites (schemas/expectations.py) on seeded tables (pipelines/release/gx.py).

One checkpoint run holds every seeded defect, each on its own sample: for every expectation of
the suites, the test checks that it fails on exactly the rows of its seeded sample and that the
clean samples pass (a clean run passes everything). Running GX once per module keeps this fast.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from geodelta.pipelines.release.datadocs import offline_html
from geodelta.pipelines.release.gx import GXOutcome, run_checkpoint
from geodelta.pipelines.release.gx_tables import (
    ReleaseRecord,
    build_tables,
    refresh_split_conflicts,
    split_conflicts,
)
from geodelta.pipelines.stages.encode import build_meta
from geodelta.schemas import BuildConfig
from geodelta.schemas.expectations import (
    NON_NULL_COLUMNS,
    REQUIRED_QA_TYPES,
    qa_count_column,
    release_suites,
)
from tests.factories import make_config, make_sample

SPLITS = ("train", "val", "test")
NO_CHANGE_CAPTIONS = [
    "Nothing has changed between the two images.",
    "The scene is the same on both dates.",
    "No change in land cover is visible.",
    "Both images show the same land cover.",
    "There is no visible change in this tile.",
]


def _config() -> BuildConfig:
    return make_config(splits={"buffer_cells": 1})


CFG = _config()


def _record(i: int, cfg: BuildConfig, **kw: Any) -> ReleaseRecord:
    """Sample ``i``: cells 3 columns apart (2 cells between), splits cycling, change on even i."""
    args: dict[str, Any] = {"col": 3 * i, "split": SPLITS[i % 3], "change": i % 2 == 0}
    args.update(kw)
    sample = make_sample(i, **args)
    meta = build_meta(sample, cfg, code_version="0.1.0", shaping_hash=cfg.shaping_hash())
    assert sample.annotation is not None
    return ReleaseRecord(
        meta=meta,
        captions=list(sample.annotation.captions),
        qa=[q.model_dump(mode="json") for q in sample.annotation.qa],
    )


# --- defects ------------------------------------------------------------------------------

RecordFix = Callable[[ReleaseRecord, list[ReleaseRecord]], list[ReleaseRecord]]
TableFix = Callable[[dict[str, pd.DataFrame], int], None]


@dataclass(frozen=True)
class Defect:
    """A seeded defect: edits the record (before the tables) or the tables (after)."""

    record: RecordFix | None = None
    table: TableFix | None = None
    change: bool | None = None  # the sample needs (True) / must not have (False) change
    split: str | None = None


def _meta(**update: Any) -> RecordFix:
    return lambda rec, recs: [replace(rec, meta=rec.meta.model_copy(update=update))]


def _coreg(**update: Any) -> RecordFix:
    return lambda rec, recs: [
        replace(
            rec,
            meta=rec.meta.model_copy(update={"coreg": rec.meta.coreg.model_copy(update=update)}),
        )
    ]


def _set(column: str, value: Any, table: str = "samples") -> TableFix:
    def fix(tables: dict[str, pd.DataFrame], row: int) -> None:
        df = tables[table]
        if value is None and df[column].dtype.kind in "iu":
            df[column] = df[column].astype(float)  # an int column cannot hold a null
        df.loc[row, column] = value

    return fix


def _below(column: str, other: str, by: float) -> TableFix:
    """Make ``column`` = ``other`` - ``by`` on the row (a max at or below its min)."""

    def fix(tables: dict[str, pd.DataFrame], row: int) -> None:
        samples = tables["samples"]
        samples.loc[row, column] = samples.loc[row, other] - by

    return fix


def _without_qa(kind: str) -> RecordFix:
    return lambda rec, recs: [replace(rec, qa=[q for q in rec.qa if q["type"] != kind])]


def _qa_answer(kind: str, answer: Any) -> RecordFix:
    return lambda rec, recs: [
        replace(rec, qa=[{**q, "answer": answer} if q["type"] == kind else q for q in rec.qa])
    ]


def _extra_qa(kind: str, answer: Any) -> RecordFix:
    item = {"type": kind, "question": "Where is the change?", "answer": answer, "evidence": {}}
    return lambda rec, recs: [replace(rec, qa=[*rec.qa, item])]


def _captions(update: Callable[[list[Any]], list[Any]]) -> RecordFix:
    return lambda rec, recs: [replace(rec, captions=update(list(rec.captions)))]


def _duplicate(rec: ReleaseRecord, recs: list[ReleaseRecord]) -> list[ReleaseRecord]:
    return [rec, rec]


def _same_cell_as_test(rec: ReleaseRecord, recs: list[ReleaseRecord]) -> list[ReleaseRecord]:
    """A train sample whose cell id is that of a test sample (the cell is in two splits)."""
    other = next(r for r in recs if r.meta.split == "test")
    return [replace(rec, meta=rec.meta.model_copy(update={"cell_id": other.meta.cell_id}))]


def _beside_test(rec: ReleaseRecord, recs: list[ReleaseRecord]) -> list[ReleaseRecord]:
    """A train sample on the cell east of a test sample (inside a 1-cell buffer)."""
    other = next(r for r in recs if r.meta.split == "test")
    col = int(other.meta.cell_id.split("_")[1]) + 1
    return [_record(90, CFG, col=col, split="train")]


def _swap_times(rec: ReleaseRecord, recs: list[ReleaseRecord]) -> list[ReleaseRecord]:
    m = rec.meta
    return [replace(rec, meta=m.model_copy(update={"t0": m.t1, "t1": m.t0}))]


def _bad_key(rec: ReleaseRecord, recs: list[ReleaseRecord]) -> list[ReleaseRecord]:
    key = rec.meta.key.replace("_", ".", 1)
    return [replace(rec, meta=rec.meta.model_copy(update={"key": key}))]


def _null(column: str) -> Defect:
    return Defect(table=_set(column, None))


DEFECTS: dict[str, Defect] = {
    "gx:expect_column_values_to_be_unique:key": Defect(record=_duplicate),
    "gx:expect_column_values_to_match_regex:key": Defect(record=_bad_key),
    **{f"gx:expect_column_values_to_not_be_null:{c}": _null(c) for c in NON_NULL_COLUMNS},
    "gx:expect_column_values_to_not_be_null:before_clear": _null("before_clear"),
    "gx:expect_column_values_to_not_be_null:after_clear": _null("after_clear"),
    "gx:expect_column_values_to_be_between:before_clear": Defect(record=_meta(before_clear=0.5)),
    "gx:expect_column_values_to_be_between:after_clear": Defect(record=_meta(after_clear=1.2)),
    "gx:expect_column_values_to_be_between:before_valid": Defect(record=_meta(before_valid=0.5)),
    "gx:expect_column_values_to_be_between:after_valid": Defect(record=_meta(after_valid=0.9)),
    "gx:expect_column_values_to_be_between:shift_px": Defect(record=_coreg(shift_px=(2.5, 2.5))),
    "gx:expect_column_values_to_be_between:residual_px": Defect(record=_coreg(residual_px=0.9)),
    "gx:expect_column_values_to_be_between:gap_days": Defect(record=_meta(gap_days=10.0)),
    "gx:expect_column_pair_values_a_to_be_greater_than_b:t1,t0": Defect(record=_swap_times),
    "gx:expect_column_values_to_be_between:changed_fraction": Defect(
        table=_set("changed_fraction", 1.5), change=True
    ),
    "gx:expect_column_values_to_be_between:n_captions": Defect(record=_captions(lambda c: c[:4])),
    **{
        f"gx:expect_column_values_to_be_between:{qa_count_column(t)}": Defect(record=_without_qa(t))
        for t in REQUIRED_QA_TYPES
    },
    "gx:expect_column_pair_values_to_be_equal:caption_no_change,mask_no_change": Defect(
        record=_captions(lambda c: NO_CHANGE_CAPTIONS), change=True
    ),
    "gx:expect_column_values_to_be_in_set:split": Defect(record=_meta(split="holdout")),
    "gx:expect_column_values_to_be_between:split_cell_conflicts": Defect(
        record=_same_cell_as_test, split="train"
    ),
    "gx:expect_column_values_to_be_between:split_buffer_conflicts": Defect(record=_beside_test),
    "gx:expect_column_values_to_match_regex:crs": Defect(record=_meta(crs="UTM 31N")),
    "gx:expect_column_values_to_be_between:crs_zone_offset": Defect(record=_meta(crs="EPSG:32634")),
    "gx:expect_column_values_to_be_between:min_lon": Defect(table=_set("min_lon", -181.0)),
    "gx:expect_column_values_to_be_between:max_lon": Defect(table=_set("max_lon", 181.0)),
    "gx:expect_column_values_to_be_between:min_lat": Defect(table=_set("min_lat", -91.0)),
    "gx:expect_column_values_to_be_between:max_lat": Defect(table=_set("max_lat", 91.0)),
    "gx:expect_column_pair_values_a_to_be_greater_than_b:max_lon,min_lon": Defect(
        table=_below("max_lon", "min_lon", 1e-3)
    ),
    "gx:expect_column_pair_values_a_to_be_greater_than_b:max_lat,min_lat": Defect(
        table=_below("max_lat", "min_lat", 0.0)
    ),
    "gx:expect_column_values_to_match_regex:licence": Defect(record=_meta(licence="  ")),
    "gx:expect_column_values_to_match_regex:attribution": Defect(record=_meta(attribution="")),
    # captions
    "gx:expect_column_values_to_not_be_null:caption": Defect(
        record=_captions(lambda c: [*c[:4], None]), change=True
    ),
    "gx:expect_column_value_lengths_to_be_between:caption": Defect(
        record=_captions(lambda c: [*c[:4], "Changed."]), change=True
    ),
    # qa
    "gx:expect_column_values_to_be_in_set:type": Defect(record=_extra_qa("weather", "sunny")),
    "gx:expect_column_values_to_not_be_null:answer": Defect(record=_extra_qa("location", None)),
    "gx:expect_column_values_to_match_regex:answer": Defect(record=_extra_qa("location", " ")),
    "gx:expect_column_values_to_be_in_set:answer_yes_no": Defect(
        record=_qa_answer("has_change", "maybe")
    ),
    "gx:expect_column_values_to_match_regex:answer_count": Defect(
        record=_qa_answer("count_regions", "2.5")
    ),
    "gx:expect_column_values_to_be_in_set:answer_ratio": Defect(
        record=_qa_answer("change_ratio", "half")
    ),
}
TABLE_LEVEL = "gx:expect_column_distinct_values_to_contain_set:type"


@dataclass
class Seeded:
    """The seeded run: its outcome, tables, and the key each defect was seeded on."""

    outcome: GXOutcome
    tables: dict[str, pd.DataFrame]
    keys: dict[str, str]
    clean_keys: set[str]


@pytest.fixture(scope="module")
def clean() -> GXOutcome:
    records = [_record(i, CFG) for i in range(6)]
    return run_checkpoint(build_tables(records, CFG), CFG)


@pytest.fixture(scope="module")
def seeded() -> Seeded:
    clean_records = [_record(i, CFG) for i in range(6)]
    records = list(clean_records)
    table_fixes: dict[str, tuple[TableFix, str]] = {}
    keys: dict[str, str] = {}
    i = 10
    for name, defect in DEFECTS.items():
        while (defect.change is not None and (i % 2 == 0) != defect.change) or (
            defect.split is not None and SPLITS[i % 3] != defect.split
        ):
            i += 1
        rec = _record(i, CFG)
        i += 1
        keys[name] = rec.meta.key
        if defect.record is not None:
            new = defect.record(rec, clean_records)
            keys[name] = new[0].meta.key
            records += new
        else:
            records.append(rec)
        if defect.table is not None:
            table_fixes[name] = (defect.table, rec.meta.key)
    tables: dict[str, pd.DataFrame] = dict(build_tables(records, CFG))
    for fix, key in table_fixes.values():
        (row,) = np.flatnonzero(tables["samples"]["key"].to_numpy() == key)
        fix(tables, int(row))
    outcome = run_checkpoint(tables, CFG)
    return Seeded(outcome, tables, keys, {r.meta.key for r in clean_records})


def _names(cfg: BuildConfig) -> list[str]:
    return [e.name for s in release_suites(cfg) for e in s.expectations]


def test_every_expectation_has_a_seeded_defect() -> None:
    names = _names(CFG)
    assert len(names) == len(set(names))  # names are unique: they are quarantine reasons
    assert set(names) == set(DEFECTS) | {TABLE_LEVEL}


def test_clean_samples_pass_every_expectation(clean: GXOutcome) -> None:
    assert clean.success
    assert clean.failures == {}
    assert clean.quarantine_records() == []
    evaluated = [e.spec.name for s in clean.suites for e in s.expectations]
    assert sorted(evaluated) == sorted(_names(CFG))
    samples = next(s for s in clean.suites if s.suite.table == "samples")
    assert samples.rows == 6
    assert all(e.unexpected_count == 0 for s in clean.suites for e in s.expectations)


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_expectation_fails_on_its_seeded_row_only(seeded: Seeded, name: str) -> None:
    key = seeded.keys[name]
    outcome = seeded.outcome.outcome(name)
    assert not outcome.success
    if name.endswith(":key") and "not_be_null" in name:
        assert outcome.unexpected_keys == ("None",)  # the key itself is what is missing
        return
    assert outcome.unexpected_keys == (key,)
    assert outcome.unexpected_count >= 1
    # the seeded sample fails this expectation and nothing else, and goes to quarantine
    assert [n for n, _ in seeded.outcome.failures[key]] == [name] * outcome.unexpected_count
    records = {q.key: q for q in seeded.outcome.quarantine_records()}
    assert records[key].reason == name
    assert records[key].stage == "validate"


def test_clean_rows_of_the_seeded_run_are_not_quarantined(seeded: Seeded) -> None:
    quarantined = {q.key for q in seeded.outcome.quarantine_records()}
    assert quarantined.isdisjoint(seeded.clean_keys)
    null_key = "gx:expect_column_values_to_not_be_null:key"
    expected = {k for n, k in seeded.keys.items() if n != null_key} | {"None"}
    assert quarantined == expected


def test_quarantine_detail_names_value_and_bound(seeded: Seeded) -> None:
    key = seeded.keys["gx:expect_column_values_to_be_between:before_valid"]
    (record,) = [q for q in seeded.outcome.quarantine_records() if q.key == key]
    assert "before_valid=0.5" in record.detail
    assert "[0.98, 1.0]" in record.detail
    assert record.cell_id == key.rsplit("_", 2)[0]


def test_table_level_coverage_is_reported_not_quarantined() -> None:
    cfg = CFG
    records = [_record(i, cfg) for i in range(3)]
    tables = build_tables(records, cfg)
    qa = tables["qa"]
    tables["qa"] = qa[qa["type"] != "count_regions"].reset_index(drop=True)
    outcome = run_checkpoint(tables, cfg)
    table_level = outcome.outcome(TABLE_LEVEL)
    assert not table_level.success
    assert table_level.unexpected_keys == ()
    assert all(TABLE_LEVEL not in [n for n, _ in f] for f in outcome.failures.values())
    assert outcome.summary()["success"] is False


def test_buffer_expectation_only_with_a_buffer() -> None:
    name = "gx:expect_column_values_to_be_between:split_buffer_conflicts"
    assert name in _names(make_config(splits={"buffer_cells": 2}))
    assert name not in _names(make_config())  # default buffer_cells = 0


def test_unknown_clear_allowed_by_config() -> None:
    name = "gx:expect_column_values_to_not_be_null:before_clear"
    assert name in _names(make_config())
    assert name not in _names(make_config(pairing={"allow_unknown_clear": True}))


def test_bounds_come_from_the_config() -> None:
    cfg = make_config(
        pairing={"min_valid_fraction": 0.5, "min_clear_fraction": 0.7},
        validation={"max_abs_shift_px": 1.5, "caption_chars": [5, 50], "max_captions": 7},
    )
    specs = {e.name: e.kwargs for s in release_suites(cfg) for e in s.expectations}
    assert specs["gx:expect_column_values_to_be_between:before_valid"]["min_value"] == 0.5
    assert specs["gx:expect_column_values_to_be_between:after_clear"]["min_value"] == 0.7
    assert specs["gx:expect_column_values_to_be_between:shift_px"]["max_value"] == 1.5
    assert specs["gx:expect_column_values_to_be_between:n_captions"] == {
        "column": "n_captions",
        "min_value": 5,
        "max_value": 7,
    }
    caption = specs["gx:expect_column_value_lengths_to_be_between:caption"]
    assert (caption["min_value"], caption["max_value"]) == (5, 50)


# --- split conflicts, by hand -------------------------------------------------------------


def _grid(cells: list[tuple[int, int, str]], size: float = 0.01) -> pd.DataFrame:
    """Square lon/lat footprints on a grid: (col, row, split)."""
    return pd.DataFrame(
        {
            "cell_id": [f"c{c}r{r}" for c, r, _ in cells],
            "split": [s for _, _, s in cells],
            "min_lon": [c * size for c, _, _ in cells],
            "max_lon": [(c + 1) * size for c, _, _ in cells],
            "min_lat": [-(r + 1) * size for _, r, _ in cells],
            "max_lat": [-r * size for _, r, _ in cells],
        }
    )


def test_split_conflicts_by_hand() -> None:
    # test at (0,0); train at 1, 2 and 3 cells east; val on the diagonal (1,1); train at (0,0) too
    cells = [
        (0, 0, "test"),
        (1, 0, "train"),
        (2, 0, "train"),
        (3, 0, "train"),
        (1, 1, "val"),
        (0, 0, "train"),
    ]
    df = _grid(cells)
    one = make_config(splits={"buffer_cells": 1})
    cell, buffer = split_conflicts(df, one)
    # the test cell keeps everything; the train copy of its cell is in two splits
    assert cell.tolist() == [0, 0, 0, 0, 0, 1]
    # buffer 1: (1,0) touches test and val; (1,1) val touches test diagonally; (2,0) touches val
    # diagonally; the train copy at (0,0) touches val diagonally ((0,0) test is the same cell)
    assert buffer.tolist() == [0, 2, 1, 0, 1, 1]
    two = make_config(splits={"buffer_cells": 2})
    _, buffer2 = split_conflicts(df, two)
    # buffer 2: one cell between is still too close; (3,0) is 3 columns from test, 2 from val
    assert buffer2.tolist() == [0, 2, 2, 1, 1, 1]
    _, buffer0 = split_conflicts(df, make_config())
    assert buffer0.tolist() == [0] * 6


def test_split_conflicts_same_place_under_another_id() -> None:
    # the same footprint gridded in two UTM zones has two ids: it is still one place
    df = _grid([(0, 0, "val"), (0, 0, "train")])
    df.loc[1, "cell_id"] = "other-zone-id"
    df.loc[1, "min_lon"] += 0.002  # a fifth of a cell off
    df.loc[1, "max_lon"] += 0.002
    cell, _ = split_conflicts(df, make_config())
    assert cell.tolist() == [0, 1]


def test_priority_smaller_fraction_then_name() -> None:
    cfg = make_config(splits={"fractions": {"a": 0.5, "b": 0.3, "c": 0.2}, "buffer_cells": 1})
    df = _grid([(0, 0, "a"), (1, 0, "b"), (2, 0, "c")])
    _, buffer = split_conflicts(df, cfg)
    assert buffer.tolist() == [1, 1, 0]  # c keeps its cell, b gives way to c, a to b
    tie = make_config(splits={"fractions": {"x": 0.5, "y": 0.5}, "buffer_cells": 1})
    _, buffer = split_conflicts(_grid([(0, 0, "y"), (1, 0, "x")]), tie)
    assert buffer.tolist() == [1, 0]


def test_refresh_split_conflicts_after_edit() -> None:
    records = [_record(i, CFG) for i in range(3)]
    tables = build_tables(records, CFG)
    samples = tables["samples"]
    assert samples["split_cell_conflicts"].tolist() == [0, 0, 0]
    test_row = int(np.flatnonzero(samples["split"].to_numpy() == "test")[0])
    train_row = int(np.flatnonzero(samples["split"].to_numpy() == "train")[0])
    samples.loc[train_row, "cell_id"] = samples.loc[test_row, "cell_id"]
    refresh_split_conflicts(samples, CFG)
    assert samples.loc[train_row, "split_cell_conflicts"] == 1
    assert samples["split_cell_conflicts"].sum() == 1


# --- tables -------------------------------------------------------------------------------


def test_tables_hold_the_derived_columns() -> None:
    records = [_record(0, CFG), _record(1, CFG)]  # 0: change, 1: no change
    tables = build_tables(records, CFG)
    s = tables["samples"]
    assert s["mask_no_change"].tolist() == ["no", "yes"]
    assert s["caption_no_change"].tolist() == ["no", "yes"]
    meta = records[0].meta
    assert s.loc[0, "shift_px"] == pytest.approx(math.hypot(*meta.coreg.shift_px))
    assert s.loc[0, "crs_zone_offset"] == 0.0  # EPSG:32631 near Paris
    assert s.loc[0, "qa_n_has_change"] == 1
    assert len(tables["captions"]) == 10
    qa = tables["qa"]
    row = qa[(qa["key"] == meta.key) & (qa["type"] == "has_change")].iloc[0]
    # missing answers are None (pandas 2 object columns) or NaN (pandas >= 3 string columns)
    assert row["answer_yes_no"] == "yes"
    assert pd.isna(row["answer_count"]) and pd.isna(row["answer_ratio"])
    row = qa[(qa["key"] == meta.key) & (qa["type"] == "count_regions")].iloc[0]
    assert pd.isna(row["answer_yes_no"]) and row["answer_count"] == "1"


def test_epsilon_moves_the_no_change_line() -> None:
    cfg = make_config(annotation={"no_change_epsilon": 0.5})
    tables = build_tables([_record(0, cfg)], cfg)  # 1/16 of the tile changed
    assert tables["samples"].loc[0, "mask_no_change"] == "yes"


def test_empty_release_passes_per_row_checks() -> None:
    outcome = run_checkpoint(build_tables([], CFG), CFG)
    assert outcome.failures == {}
    assert outcome.quarantine_records() == []
    assert not outcome.outcome(TABLE_LEVEL).success  # no QA type at all is reported


# --- offline Data Docs --------------------------------------------------------------------


def test_offline_html_strips_network_references() -> None:
    html = (
        "<html><head><link rel='stylesheet' href='https://cdn.example/b.css'/>"
        '<script src="https://code.jquery.com/jquery.js"></script>'
        "<style>.x{background:url('https://s3.example/logo.png') 0 0}</style>"
        '<link rel="shortcut icon" href="../static/images/favicon.ico"/></head>'
        '<body><img src="//cdn.example/x.png"><a href="https://greatexpectations.io">GX</a>'
        '<a href="index.html">home</a><script>$(function(){ vegaEmbed("#c", {}); });</script>'
        "<table><tr><td>ok</td></tr></table></body></html>"
    )
    out = offline_html(html)
    assert "http" not in out and "//cdn" not in out
    assert "<script" not in out
    assert "favicon" not in out and 'href="index.html"' in out
    assert ">GX</a>" in out and "<td>ok</td>" in out
    assert "border-collapse" in out  # the inline fallback style


def test_schemas_expectations_imports_no_gx_nor_pandas() -> None:
    code = (
        "import sys, geodelta.schemas.expectations as e;"
        "bad = [m for m in ('great_expectations', 'pandas') if m in sys.modules];"
        "assert not bad, bad; print(len(e.TABLE_COLUMNS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"
