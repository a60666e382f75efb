"""The Great Expectations suites of a release, as plain data.

This module only *describes* the validation contract: three tables, their columns, and for each
table a suite of expectations whose bounds come from the build config. It imports neither
Great Expectations nor pandas (importing :mod:`geodelta.schemas` stays light);
:mod:`geodelta.pipelines.release.gx` builds the tables, turns these specs into GX
``ExpectationSuite`` objects and runs them as a checkpoint before the shards are written.

The tables (one pandas DataFrame each, see :data:`TABLE_COLUMNS` for every column):

- ``samples``: one row per sample, the release's sample table plus derived columns
  (shift magnitude, what the captions and the mask say about change, QA counts per required
  type, split conflicts, UTM zone offset);
- ``captions``: one row per caption (``key``, ``index``, ``caption``);
- ``qa``: one row per question-answer pair (``key``, ``type``, ``answer``, and the answer
  again in ``answer_yes_no`` / ``answer_count`` / ``answer_ratio`` when the type asks for that
  kind of answer, else null; GX skips nulls in those checks).

Every expectation has a stable name, ``gx:<expectation type>:<column>`` (``<A>,<B>`` for a
column pair), which is the quarantine ``reason`` of a row it rejects. Expectations with
``per_row=False`` judge the table as a whole (e.g. the release covers every required QA type):
their failures are reported in ``validation/summary.json`` but quarantine nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from geodelta.schemas.config import BuildConfig
from geodelta.schemas.qa import (
    COUNT_QA_TYPES,
    PAIR_QA_TYPES,
    QA_TYPES,
    RATIO_QA_TYPES,
    REQUIRED_QA_TYPES,
    YES_NO_QA_TYPES,
)
from geodelta.schemas.records import CHANGE_RATIO_BINS

__all__ = [
    "COUNT_PATTERN",
    "COUNT_QA_TYPES",
    "CRS_PATTERN",
    "KEY_PATTERN",
    "MAX_UTM_ZONE_OFFSET",
    "NON_NULL_COLUMNS",
    "QA_TYPES",
    "RATIO_QA_TYPES",
    "REQUIRED_QA_TYPES",
    "TABLES",
    "TABLE_COLUMNS",
    "YES_NO_QA_TYPES",
    "ExpectationSpec",
    "SuiteSpec",
    "TableName",
    "qa_count_column",
    "release_suites",
]

TableName = Literal["samples", "captions", "qa"]
TABLES: tuple[TableName, ...] = ("samples", "captions", "qa")

#: Sample keys: ``{cell_id}_{t0:%Y%m%d}_{t1:%Y%m%d}``, no '.' (webdataset splits members at dots).
KEY_PATTERN = r"^[^.]+_[0-9]{8}_[0-9]{8}$"
#: CRS strings of the sample grid.
CRS_PATTERN = r"^EPSG:[1-9][0-9]*$"
#: A count answer: a non-negative integer in digits without leading zeros.
COUNT_PATTERN = r"^(?:0|[1-9][0-9]*)$"  # no capturing group: pandas warns on those
#: Text with at least one non-blank character (licence, attribution).
NON_BLANK_PATTERN = r"\S"
#: Largest difference between the UTM zone of a sample's CRS and the zone of its centre
#: longitude (cells near a zone boundary may be gridded in the neighbouring zone).
MAX_UTM_ZONE_OFFSET = 1

#: Columns of the ``samples`` table that must never be null.
NON_NULL_COLUMNS: tuple[str, ...] = (
    "key",
    "cell_id",
    "split",
    "crs",
    "t0",
    "t1",
    "gap_days",
    "min_lon",
    "min_lat",
    "max_lon",
    "max_lat",
    "before_item",
    "after_item",
    "before_valid",
    "after_valid",
    "shift_px",
    "residual_px",
    "changed_fraction",
    "n_captions",
    "annotator",
    "licence",
    "attribution",
)


def qa_count_column(qa_type: str) -> str:
    """Column of the ``samples`` table counting a sample's QA items of one type."""
    return f"qa_n_{qa_type}"


#: Table -> column -> what it holds.
TABLE_COLUMNS: dict[TableName, dict[str, str]] = {
    "samples": {
        "key": "sample key",
        "cell_id": "grid cell id",
        "split": "split of the sample",
        "region": "AOI feature",
        "crs": "CRS of the sample grid",
        "t0": "before acquisition time (UTC)",
        "t1": "after acquisition time (UTC)",
        "gap_days": "days between t0 and t1",
        "min_lon": "footprint bbox, lon/lat",
        "min_lat": "footprint bbox, lon/lat",
        "max_lon": "footprint bbox, lon/lat",
        "max_lat": "footprint bbox, lon/lat",
        "before_item": "STAC item of the before scene",
        "after_item": "STAC item of the after scene",
        "before_clear": "clear fraction of the before scene (null = unknown)",
        "after_clear": "clear fraction of the after scene (null = unknown)",
        "before_valid": "valid fraction of the before scene",
        "after_valid": "valid fraction of the after scene",
        "shift_dy": "co-registration shift, rows (px)",
        "shift_dx": "co-registration shift, columns (px)",
        "shift_px": "magnitude of the co-registration shift, hypot(dy, dx) (px)",
        "residual_px": "co-registration residual (px)",
        "changed_fraction": "changed pixels / valid pixels",
        "n_regions": "regions of change",
        "n_captions": "number of captions",
        "n_qa": "number of QA items",
        "annotator": "annotator name",
        "licence": "licence of the sample",
        "attribution": "attribution of the sample",
        "mask_no_change": "'yes' when the facts read as no change (no region, or changed_fraction "
        "<= annotation.no_change_epsilon), else 'no'",
        "caption_no_change": "'yes' when every caption says nothing changed, 'no' when none does, "
        "'mixed' otherwise, 'none' without captions",
        **{
            qa_count_column(t): f"QA items of type {t!r} (a required type)"
            for t in REQUIRED_QA_TYPES
        },
        "split_cell_conflicts": "splits of higher priority holding the same cell (must be 0)",
        "split_buffer_conflicts": "cells of a split of higher priority within splits.buffer_cells "
        "of this cell (must be 0); priority: smaller splits.fractions share first, then name",
        "crs_zone_offset": "|UTM zone of crs - UTM zone of the footprint centre| (null when the "
        "CRS is not UTM/WGS 84)",
    },
    "captions": {
        "key": "sample key",
        "index": "caption index within the sample",
        "caption": "caption text",
    },
    "qa": {
        "key": "sample key",
        "index": "QA index within the sample",
        "type": "QA type",
        "question": "question text",
        "answer": "answer text",
        "answer_yes_no": f"the answer when type is one of {YES_NO_QA_TYPES}, else null",
        "answer_count": f"the answer when type is one of {COUNT_QA_TYPES}, else null",
        "answer_ratio": f"the answer when type is one of {RATIO_QA_TYPES}, else null",
    },
}


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation, in Great Expectations' own terms.

    Attributes:
        type: GX expectation type, snake_case (e.g. ``expect_column_values_to_be_between``).
        kwargs: its arguments (``column``, ``min_value``, ``value_set``, ...), JSON values.
        description: what it checks and which config key sets its bounds.
        per_row: True when failing rows can be told apart (they are quarantined); False for
            table-level expectations (reported only).
    """

    type: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    per_row: bool = True

    @property
    def target(self) -> str:
        """The column (or ``A,B`` column pair) the expectation is about."""
        if "column" in self.kwargs:
            return str(self.kwargs["column"])
        if "column_A" in self.kwargs:
            return f"{self.kwargs['column_A']},{self.kwargs['column_B']}"
        if "column_list" in self.kwargs:
            return ",".join(self.kwargs["column_list"])
        return "table"

    @property
    def name(self) -> str:
        """Stable name ``gx:<type>:<target>``; the quarantine reason of a rejected row."""
        return f"gx:{self.type}:{self.target}"


@dataclass(frozen=True)
class SuiteSpec:
    """The expectations over one table."""

    name: str
    table: TableName
    expectations: tuple[ExpectationSpec, ...]

    def to_json(self) -> dict[str, Any]:
        """The suite in GX 1.x JSON form (``ExpectationSuite.to_json_dict`` layout)."""
        return {
            "name": self.name,
            "expectations": [
                {
                    "type": e.type,
                    "kwargs": dict(e.kwargs),
                    "description": e.description,
                    "meta": {"name": e.name, "per_row": e.per_row},
                }
                for e in self.expectations
            ],
            "meta": {"table": self.table},
        }


def _between(
    column: str, low: float | None, high: float | None, why: str, *, strict_min: bool = False
) -> ExpectationSpec:
    kwargs: dict[str, Any] = {"column": column}
    if low is not None:
        kwargs["min_value"] = low
    if high is not None:
        kwargs["max_value"] = high
    if strict_min:
        kwargs["strict_min"] = True
    return ExpectationSpec("expect_column_values_to_be_between", kwargs, why)


def _pair(type_: str, a: str, b: str, why: str) -> ExpectationSpec:
    # a missing value is the not-null expectations' business: each expectation checks one thing
    kwargs = {"column_A": a, "column_B": b, "ignore_row_if": "either_value_is_missing"}
    return ExpectationSpec(type_, kwargs, why)


def _not_null(column: str) -> ExpectationSpec:
    return ExpectationSpec(
        "expect_column_values_to_not_be_null", {"column": column}, f"{column} is always set"
    )


def _regex(column: str, pattern: str, why: str) -> ExpectationSpec:
    return ExpectationSpec(
        "expect_column_values_to_match_regex", {"column": column, "regex": pattern}, why
    )


def _in_set(column: str, values: list[Any], why: str) -> ExpectationSpec:
    return ExpectationSpec(
        "expect_column_values_to_be_in_set", {"column": column, "value_set": values}, why
    )


def _samples_suite(cfg: BuildConfig) -> tuple[ExpectationSpec, ...]:
    p, v, a, s = cfg.pairing, cfg.validation, cfg.annotation, cfg.splits
    specs: list[ExpectationSpec] = [
        ExpectationSpec(
            "expect_column_values_to_be_unique", {"column": "key"}, "one row per sample key"
        ),
        _regex("key", KEY_PATTERN, "key is {cell_id}_{t0:%Y%m%d}_{t1:%Y%m%d} without '.'"),
    ]
    specs += [_not_null(c) for c in NON_NULL_COLUMNS]
    if not p.allow_unknown_clear:
        specs += [_not_null("before_clear"), _not_null("after_clear")]
    specs += [
        _between(
            "before_clear",
            p.min_clear_fraction,
            1.0,
            "clear fraction between pairing.min_clear_fraction and 1 (null = unknown, allowed "
            "by pairing.allow_unknown_clear)",
        ),
        _between("after_clear", p.min_clear_fraction, 1.0, "as before_clear"),
        _between(
            "before_valid",
            p.min_valid_fraction,
            1.0,
            "valid fraction between pairing.min_valid_fraction and 1",
        ),
        _between("after_valid", p.min_valid_fraction, 1.0, "as before_valid"),
        _between(
            "shift_px", 0.0, v.max_abs_shift_px, "|shift| at most validation.max_abs_shift_px"
        ),
        _between(
            "residual_px", 0.0, v.max_residual_px, "residual at most validation.max_residual_px"
        ),
        _between(
            "gap_days",
            p.min_gap_days,
            p.max_gap_days,
            "t1 - t0 between pairing.min_gap_days and pairing.max_gap_days",
        ),
        _pair(
            "expect_column_pair_values_a_to_be_greater_than_b",
            "t1",
            "t0",
            "the after date comes after the before date",
        ),
        _between("changed_fraction", 0.0, 1.0, "a fraction"),
        _between(
            "n_captions",
            v.min_captions,
            v.max_captions,
            "caption count between validation.min_captions and validation.max_captions",
        ),
    ]
    specs += [
        _between(qa_count_column(t), 1, None, f"every sample has a {t!r} question")
        for t in REQUIRED_QA_TYPES
    ]
    specs += [
        _pair(
            "expect_column_pair_values_to_be_equal",
            "caption_no_change",
            "mask_no_change",
            "captions say 'no change' (all of them) iff the changed fraction is at most "
            f"annotation.no_change_epsilon={a.no_change_epsilon} or there is no region",
        ),
        _in_set("split", sorted(s.fractions), "split is one of splits.fractions"),
        _between(
            "split_cell_conflicts",
            0,
            0,
            "no cell in two splits (the split of higher priority keeps it)",
        ),
    ]
    if s.buffer_cells > 0:
        specs.append(
            _between(
                "split_buffer_conflicts",
                0,
                0,
                f"no cell within splits.buffer_cells={s.buffer_cells} of a cell of another split "
                "of higher priority (smaller fraction first, then name)",
            )
        )
    specs += [
        _regex("crs", CRS_PATTERN, "CRS is 'EPSG:<code>'"),
        _between(
            "crs_zone_offset",
            0,
            MAX_UTM_ZONE_OFFSET,
            "a UTM CRS is the zone of the footprint or a neighbour",
        ),
        _between("min_lon", -180.0, 180.0, "longitude"),
        _between("max_lon", -180.0, 180.0, "longitude"),
        _between("min_lat", -90.0, 90.0, "latitude"),
        _between("max_lat", -90.0, 90.0, "latitude"),
        _pair(
            "expect_column_pair_values_a_to_be_greater_than_b",
            "max_lon",
            "min_lon",
            "bbox is (min_lon, min_lat, max_lon, max_lat), each max above its min",
        ),
        _pair(
            "expect_column_pair_values_a_to_be_greater_than_b",
            "max_lat",
            "min_lat",
            "bbox is (min_lon, min_lat, max_lon, max_lat), each max above its min",
        ),
        _regex("licence", NON_BLANK_PATTERN, "licence is given (config licence)"),
        _regex("attribution", NON_BLANK_PATTERN, "attribution is given (config attribution)"),
    ]
    return tuple(specs)


def _captions_suite(cfg: BuildConfig) -> tuple[ExpectationSpec, ...]:
    low, high = cfg.validation.caption_chars
    return (
        _not_null("caption"),
        ExpectationSpec(
            "expect_column_value_lengths_to_be_between",
            {"column": "caption", "min_value": low, "max_value": high},
            "caption length within validation.caption_chars",
        ),
    )


def _qa_suite(cfg: BuildConfig) -> tuple[ExpectationSpec, ...]:
    bins = [label for label, _, _ in CHANGE_RATIO_BINS]
    return (
        # a sequence release (time.series) also holds the temporal types; a pair release's
        # suite names the pair types only, as before them (same bytes)
        _in_set(
            "type",
            list(QA_TYPES if cfg.time.series is not None else PAIR_QA_TYPES),
            "a known QA type",
        ),
        _not_null("answer"),
        _regex("answer", NON_BLANK_PATTERN, "the answer is not blank"),
        _in_set("answer_yes_no", ["yes", "no"], f"{', '.join(YES_NO_QA_TYPES)}: 'yes' or 'no'"),
        _regex("answer_count", COUNT_PATTERN, f"{', '.join(COUNT_QA_TYPES)}: an integer"),
        _in_set("answer_ratio", bins, f"{', '.join(RATIO_QA_TYPES)}: a CHANGE_RATIO_BINS label"),
        ExpectationSpec(
            "expect_column_distinct_values_to_contain_set",
            {"column": "type", "value_set": list(REQUIRED_QA_TYPES)},
            "the release covers every required QA type",
            per_row=False,
        ),
    )


def release_suites(cfg: BuildConfig) -> tuple[SuiteSpec, ...]:
    """The suites a release is validated with, bounds taken from the config.

    Args:
        cfg: the build config (``pairing``, ``validation``, ``annotation``, ``splits``).

    Returns:
        One suite per table of :data:`TABLES`, named ``geodelta-<table>``.
    """
    prefix = "geodelta"  # no dots: GX turns them into folders of the Data Docs site
    return (
        SuiteSpec(f"{prefix}-samples", "samples", _samples_suite(cfg)),
        SuiteSpec(f"{prefix}-captions", "captions", _captions_suite(cfg)),
        SuiteSpec(f"{prefix}-qa", "qa", _qa_suite(cfg)),
    )
