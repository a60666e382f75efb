"""Great Expectations checkpoint over a release's sample table, before the shards are written.

The per-sample rule checks (:mod:`geodelta.pipelines.stages.validate`) run in the workers; this module
runs the release-wide contract of :mod:`geodelta.schemas.expectations` once per release, on
three pandas tables (samples, captions, QA) built from the staged samples
(:mod:`~geodelta.pipelines.release.gx_tables`), in one ephemeral GX context. Samples with a failing row are quarantined (stage ``validate``, reason = the name of
the first failing expectation, e.g. ``gx:expect_column_values_to_be_between:before_valid``) and
never reach a shard. Great Expectations is imported lazily, only when a checkpoint runs.

What a release keeps under ``<release>/validation/`` (listed in ``manifest.json``, so verify
checks them; byte-deterministic: GX runs at the fixed :data:`RUN_TIME`, and the batch load times
and random ids GX writes into results and Data Docs are replaced by :class:`_Settle`)::

    summary.json                  machine-readable summary (shape below)
    suites/<table>.json           the expectation suites, GX 1.x JSON
    results/<table>.json          GX validation results (ExpectationSuiteValidationResult)
    data_docs/index.html          GX Data Docs, made readable offline: no script, no CDN
                                  stylesheet, no remote image (:mod:`~geodelta.pipelines.release.datadocs`)

``summary.json``::

    {
      "format": "geodelta.gx-summary/1",
      "gx_version": "1.24.1",
      "success": false,                    # every expectation of every suite held
      "samples_checked": 12,               # rows of the samples table
      "samples_quarantined": 1,
      "quarantined": [{"key": ..., "reason": "gx:...", "detail": ...}],   # sorted by key
      "data_docs": "data_docs/index.html", # relative to validation/; null when not written
      "suites": [                          # samples, captions, qa
        {
          "name": "geodelta-samples", "table": "samples", "rows": 12, "success": false,
          "evaluated": 48, "failed": 1,
          "suite_file": "suites/samples.json", "results_file": "results/samples.json",
          "data_docs_page": "data_docs/validations/geodelta-samples/<run>/<time>/....html",
                                           # or null (all paths relative to validation/)
          "expectations": [
            {"name": "gx:expect_column_values_to_be_between:before_valid",
             "type": "expect_column_values_to_be_between", "column": "before_valid",
             "kwargs": {...}, "description": "...", "per_row": true,
             "success": false, "element_count": 12, "unexpected_count": 1,
             "unexpected_keys": ["31N-1280-0001-0002_20200615_20220620"]}
          ]
        }
      ]
    }

``column`` is the column (``A,B`` for a column pair); ``element_count``/``unexpected_count``
are GX's (rows of that table: captions and QA tables have several rows per sample);
``unexpected_keys`` are the sorted distinct sample keys of the failing rows (empty for
table-level expectations, ``per_row: false``).

Per batch: the tables can be built and checked for any subset of samples
(:func:`~geodelta.pipelines.release.gx_tables.build_tables` + :func:`run_checkpoint`), e.g. a
staging batch in a DAG; the release writer runs it once over the whole release, which
release-wide expectations (key uniqueness, split disjointness) need anyway, and which pays GX's
import (about 1.5 s) once.

Cost (demo scale 1: 70 samples, 112 expectations, 2 shared cores): about 0.6 s per release once
GX is imported, of which the three checkpoints take ~0.35 s and Data Docs ~0.06 s. What keeps
it there: a memo of GX's expectation configurations while it validates and Data Docs templates
compiled once per process (see "two changes to GX" below, and :func:`_page_view_class`); the
suites handed to GX whole; no GX index page (:func:`make_offline` writes the index) and no GX
profiling section. One checkpoint for the three tables is not possible: a pandas dataframe
reaches GX as a batch parameter of the checkpoint run, one for all its validations.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geodelta._io import json_bytes
from geodelta._optional import optional_import
from geodelta.errors import MissingDependencyError, ReleaseError
from geodelta.pipelines.release.datadocs import make_offline
from geodelta.pipelines.release.gx_tables import ReleaseRecord, build_tables, cell_text
from geodelta.pipelines.release.layout import (
    DATA_DOCS_DIR,
    GX_RESULTS_DIR,
    GX_SUITES_DIR,
    GX_SUMMARY_FILE,
    VALIDATION_DIR,
)
from geodelta.schemas import BuildConfig, QuarantineRecord, SampleMeta
from geodelta.schemas.expectations import (
    ExpectationSpec,
    SuiteSpec,
    TableName,
    release_suites,
)

__all__ = [
    "RUN_TIME",
    "SUMMARY_FORMAT",
    "Checkpoint",
    "ExpectationOutcome",
    "GXEvaluationError",
    "GXOutcome",
    "GXUnavailableError",
    "SuiteOutcome",
    "run_checkpoint",
    "validate_release",
]

SUMMARY_FORMAT = "geodelta.gx-summary/1"
#: GX's run time in every release: fixed, so results, Data Docs and the report carry no
#: wall-clock time (the same staging area gives the same bytes).
RUN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
_LOAD_TIME = RUN_TIME.strftime("%Y%m%dT%H%M%S.%fZ")  # GX's format of batch load times
_UUID_RE = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_SITE = "geodelta"
_ROW = "row"
#: What runs the checkpoint for :func:`validate_release` (:func:`run_checkpoint`'s signature).
Checkpoint = Callable[..., "GXOutcome"]
#: Memoize expectation configurations while GX validates (see :func:`_install`).
_MEMO = True


class GXUnavailableError(MissingDependencyError):
    """Great Expectations is not installed; says how to install it or switch the check off."""


class GXEvaluationError(ReleaseError):
    """GX could not evaluate an expectation (a bug in a suite or a table, not bad data).

    A :class:`~geodelta.errors.ReleaseError` (so a ``RuntimeError``).
    """

    def __init__(self, message: str, *, name: str) -> None:
        self.name = name
        super().__init__(message)


def _gx() -> Any:
    """Import Great Expectations (slow: about 1.5 s), with analytics off.

    Raises:
        GXUnavailableError: it is not installed (the message names the extra and the switch).
    """
    from geodelta.pipelines.release.preload import gx_import_env

    try:
        with gx_import_env():  # analytics off, GX's deprecated stdlib imports quiet
            return optional_import(
                "great_expectations",
                "validation",
                purpose="the Great Expectations checkpoint; or set "
                "validation.great_expectations: false",
            )
    except MissingDependencyError as exc:
        raise GXUnavailableError(str(exc)) from exc


# --- checkpoint ---------------------------------------------------------------------------


def _suite_file(s: SuiteOutcome) -> str:
    """Where a suite's JSON goes, relative to ``validation/``."""
    return f"{GX_SUITES_DIR}/{s.suite.table}.json"


def _results_file(s: SuiteOutcome) -> str:
    """Where a suite's GX results go, relative to ``validation/``."""
    return f"{GX_RESULTS_DIR}/{s.suite.table}.json"


@dataclass(frozen=True)
class ExpectationOutcome:
    """What one expectation said."""

    spec: ExpectationSpec
    success: bool
    element_count: int
    unexpected_count: int
    unexpected_rows: tuple[int, ...]
    unexpected_keys: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The ``expectations[]`` entry of ``summary.json``."""
        return {
            "name": self.spec.name,
            "type": self.spec.type,
            "column": self.spec.target,
            "kwargs": dict(self.spec.kwargs),
            "description": self.spec.description,
            "per_row": self.spec.per_row,
            "success": self.success,
            "element_count": self.element_count,
            "unexpected_count": self.unexpected_count,
            "unexpected_keys": list(self.unexpected_keys),
        }


@dataclass(frozen=True)
class SuiteOutcome:
    """What one suite said about its table."""

    suite: SuiteSpec
    rows: int
    expectations: tuple[ExpectationOutcome, ...]
    results: dict[str, Any]
    data_docs_page: str | None = None

    @property
    def success(self) -> bool:
        """Every expectation held."""
        return all(e.success for e in self.expectations)


@dataclass
class GXOutcome:
    """The checkpoint's verdict over a set of tables.

    Attributes:
        suites: one outcome per suite, in :data:`~geodelta.schemas.expectations.TABLES` order.
        failures: sample key -> ``(expectation name, detail)`` per failing row, suite order.
        cell_ids: sample key -> cell id (for quarantine records).
        gx_version: the Great Expectations version that ran.
        data_docs: Data Docs index relative to the validation folder, when written.
    """

    suites: list[SuiteOutcome]
    failures: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    cell_ids: dict[str, str] = field(default_factory=dict)
    gx_version: str = ""
    data_docs: str | None = None

    @property
    def success(self) -> bool:
        """Every expectation of every suite held."""
        return all(s.success for s in self.suites)

    def outcome(self, name: str) -> ExpectationOutcome:
        """The outcome of the expectation called ``name`` (``gx:<type>:<column>``)."""
        for s in self.suites:
            for e in s.expectations:
                if e.spec.name == name:
                    return e
        raise KeyError(name)

    def quarantine_records(self) -> list[QuarantineRecord]:
        """One record per failing sample: reason = first failing expectation, detail = all."""
        out = []
        for key in sorted(self.failures):
            fails = self.failures[key]
            out.append(
                QuarantineRecord(
                    key=key,
                    cell_id=self.cell_ids.get(key, key.rsplit("_", 2)[0]),
                    stage="validate",
                    reason=fails[0][0],
                    detail="; ".join(f"{name}: {detail}" for name, detail in fails),
                )
            )
        return out

    def summary(self) -> dict[str, Any]:
        """The content of ``validation/summary.json`` (shape in the module docstring)."""
        samples_rows = next((s.rows for s in self.suites if s.suite.table == "samples"), 0)
        quarantined = self.quarantine_records()
        return {
            "format": SUMMARY_FORMAT,
            "gx_version": self.gx_version,
            "success": self.success,
            "samples_checked": samples_rows,
            "samples_quarantined": len(quarantined),
            "quarantined": [
                {"key": q.key, "reason": q.reason, "detail": q.detail} for q in quarantined
            ],
            "data_docs": self.data_docs,
            "suites": [
                {
                    "name": s.suite.name,
                    "table": s.suite.table,
                    "rows": s.rows,
                    "success": s.success,
                    "evaluated": len(s.expectations),
                    "failed": sum(not e.success for e in s.expectations),
                    "suite_file": _suite_file(s),
                    "results_file": _results_file(s),
                    "data_docs_page": s.data_docs_page,
                    "expectations": [e.to_json() for e in s.expectations],
                }
                for s in self.suites
            ],
        }


def _context(gx: Any, site_dir: Path | None, run_name: str) -> Any:
    """An ephemeral context with in-memory stores and, with ``site_dir``, one Data Docs site.

    The site renders the expectation suites and this run's validation results with
    :class:`_PageView` (GX's page view, templates compiled once per process). GX's profiling
    section is off (no profiler runs here) and the validations section shows the results of
    ``run_name`` (GX's default hides any run whose name includes "profiling", and its
    profiling section then fails on them: a dataset called ``profiling-demo`` had no
    validation pages).
    """
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites: dict[str, Any] = {}
    if site_dir is not None:
        view = {"module_name": __name__, "class_name": _page_view_class().__name__}
        sites[_SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(site_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "site_section_builders": {
                "expectations": {"view": view},
                "validations": {"view": view, "run_name_filter": {"equals": run_name}},
                "profiling": "None",  # GX's "off"
            },
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites=sites,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


@functools.cache
def _page_view_class() -> type:
    """GX's ``DefaultJinjaPageView`` whose templates are compiled once per process (the same
    templates, filters and pages). GX makes a Jinja environment per view, so each build
    compiled the same ~50 templates again, twice (once per section); these views share a
    ``jinja2.BytecodeCache`` kept in memory (Jinja checks each template's source checksum).
    Made on first use (it needs GX) and kept as ``_PageView`` in this module, where GX's
    ``view`` config finds it by name."""
    import jinja2
    from great_expectations.render.view.view import DefaultJinjaPageView

    class _Compiled(jinja2.BytecodeCache):
        def __init__(self) -> None:
            self.code: dict[str, bytes] = {}

        def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            if (code := self.code.get(bucket.key)) is not None:
                bucket.bytecode_from_string(code)

        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            self.code[bucket.key] = bucket.bytecode_to_string()

    compiled = _Compiled()

    class _PageView(DefaultJinjaPageView):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.env.bytecode_cache = compiled

    globals()[_PageView.__name__] = _PageView
    return _PageView


# --- two changes to GX while run_checkpoint runs ------------------------------------------
#
# Both take effect only in the thread running :func:`run_checkpoint`, between its start and
# its end; everywhere else GX runs as it came. They are installed once per process (by
# :func:`_install`; each one only where GX's code is what it was written for) and checked by
# tests/test_gx_fast.py.
#
# 1. A memo of expectation configurations. GX 1.x rebuilds an expectation's configuration (a
#    pydantic v1 ``.dict()`` and a new ExpectationConfiguration) on every read of
#    ``Expectation.configuration``: validating the release suites reads it ~8,500 times for 112
#    expectations, a quarter of the checkpoints' time. Inside ``Validator.graph_validate``,
#    each expectation object's configuration is built once: that method's expectation objects
#    are its own (made from the suite's configurations) and nothing changes them once made.
#    Same results, same bytes (:data:`_MEMO` turns it off).
# 2. Stable Data Docs. GX lists the columns of a failing column-pair (or multi-column)
#    expectation's unexpected values in the iteration order of a ``set`` of column names,
#    which changes from process to process (str hashes are salted): the same failing row was
#    shown as ``('no', 'yes')`` by one build and ``('yes', 'no')`` by the next. In
#    ``great_expectations.render.util`` (whose one ``set()`` is that one), ``set`` makes sets
#    that iterate in sorted order.

_ours = threading.local()  # .on: run_checkpoint runs; .table: id -> (expectation, conf)


def _running() -> bool:
    return bool(getattr(_ours, "on", False))


class _SortedSet(set[Any]):
    """A set that iterates in sorted order (by ``repr``); its ``difference`` is one too."""

    def __iter__(self) -> Iterator[Any]:
        return iter(sorted(super().__iter__(), key=repr))

    def difference(self, *others: Iterable[Any]) -> _SortedSet:
        return _SortedSet(super().difference(*others))


def _install_memo() -> None:
    """Change 1, when GX's ``Expectation.configuration`` is the property it was written for."""
    try:
        from great_expectations.expectations.expectation import Expectation
        from great_expectations.validator.validator import Validator
    except ImportError:
        return
    prop = Expectation.__dict__.get("configuration")
    validate = Validator.__dict__.get("graph_validate")
    if not isinstance(prop, property) or prop.fget is None or not callable(validate):
        return
    build = prop.fget

    def configuration(self: Any) -> Any:
        table = getattr(_ours, "table", None)
        if table is None:
            return build(self)
        hit = table.get(id(self))
        if hit is None or hit[0] is not self:  # the object is kept: its id is not reused
            hit = table[id(self)] = (self, build(self))
        return hit[1]

    @functools.wraps(validate)
    def graph_validate(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not (_MEMO and _running()) or getattr(_ours, "table", None) is not None:
            return validate(self, *args, **kwargs)
        _ours.table = {}
        try:
            return validate(self, *args, **kwargs)
        finally:
            _ours.table = None

    setattr(Expectation, "configuration", property(configuration, doc=prop.__doc__))  # noqa: B010
    setattr(Validator, "graph_validate", graph_validate)  # noqa: B010


def _install_stable_sets() -> None:
    """Change 2, when GX's ``render.util`` has the function it was written for."""
    import builtins

    try:
        from great_expectations.render import util as render_util
    except ImportError:
        return
    if "set" in vars(render_util) or not callable(
        getattr(render_util, "_convert_unexpected_indices_to_df", None)
    ):
        return

    def stable_set(items: Iterable[Any] = ()) -> set[Any]:
        return _SortedSet(items) if _running() else builtins.set(items)

    setattr(render_util, "set", stable_set)  # noqa: B010


@functools.cache
def _install() -> None:
    """Install both changes, once per process."""
    _install_memo()
    _install_stable_sets()


@contextmanager
def _gx_changes() -> Iterator[None]:
    """Turn both changes on in this thread for the duration."""
    _install()
    before = _running()
    _ours.on = True
    try:
        yield
    finally:
        _ours.on = before


def _gx_suite(gx: Any, spec: SuiteSpec) -> Any:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    expectations = []
    for e in spec.expectations:
        # no ``description``: Data Docs would show it instead of GX's own wording with the
        # bounds; the name and the reason go to the notes, which Data Docs show beside it
        notes = {"format": "string", "content": [e.name, e.description]}
        conf = ExpectationConfiguration(
            type=e.type,
            kwargs=dict(e.kwargs),
            meta={"name": e.name, "per_row": e.per_row, "notes": notes},
        )
        expectations.append(conf.to_domain_obj())  # raises on a bad spec
    # given whole, not one by one: add_expectation compares each new expectation with every
    # one before it (pydantic dicts, O(n^2)) to drop duplicates, which suites cannot hold (the
    # names, one per type and column, are unique: tests/test_gx_expectations.py)
    return gx.ExpectationSuite(
        name=spec.name, expectations=expectations, meta={"table": spec.table}
    )


def _plain(value: Any) -> str:
    """A table value as a reader wants it: 0.5, 'x', null, an ISO time."""
    if isinstance(value, pd.Timestamp):
        return "null" if pd.isna(value) else value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    return repr(value)


def _value(table: pd.DataFrame, row: int, spec: ExpectationSpec) -> str:
    cols = [spec.kwargs[k] for k in ("column", "column_A", "column_B") if k in spec.kwargs]
    return ", ".join(
        f"{c}={_plain(table.at[row, c] if c in table.columns else None)}" for c in cols
    )


def _bounds(spec: ExpectationSpec) -> str:
    k = spec.kwargs
    if "min_value" in k or "max_value" in k:
        return f"expected [{k.get('min_value', '-inf')}, {k.get('max_value', 'inf')}]"
    if "value_set" in k:
        return f"expected one of {k['value_set']}"
    if "regex" in k:
        return f"expected to match {k['regex']!r}"
    return "expected otherwise"


def _exception(info: Any) -> str | None:
    """The message of an exception GX caught while evaluating an expectation, if any."""
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "unknown error")
    for value in info.values():  # keyed by metric id in some GX code paths
        found = _exception(value)
        if found is not None:
            return found
    return None


def _row(entry: Any) -> int:
    """Row number of an ``unexpected_index_list`` entry ({..., "row": n} or a bare index)."""
    return int(entry[_ROW] if isinstance(entry, Mapping) else entry)


def _outcomes(
    spec: SuiteSpec, table: pd.DataFrame, result: Any
) -> tuple[list[ExpectationOutcome], dict[int, list[tuple[str, str]]]]:
    by_name = {e.name: e for e in spec.expectations}
    outcomes: list[ExpectationOutcome] = []
    rows: dict[int, list[tuple[str, str]]] = {}
    keys = table["key"].to_numpy() if len(table) else np.array([], dtype=object)
    for r in result.results:
        e = by_name[r.expectation_config.meta["name"]]
        res = r.result or {}
        problem = _exception(r.exception_info)
        if problem is not None:
            raise GXEvaluationError(f"GX could not evaluate {e.name}: {problem}", name=e.name)
        idx = tuple(_row(i) for i in (res.get("unexpected_index_list") or ()) if e.per_row)
        outcomes.append(
            ExpectationOutcome(
                spec=e,
                success=bool(r.success),
                element_count=int(res.get("element_count") or len(table)),
                unexpected_count=int(res.get("unexpected_count") or 0),
                unexpected_rows=idx,
                unexpected_keys=tuple(sorted({cell_text(keys[i]) for i in idx})),
            )
        )
        for i in idx:
            detail = f"{_value(table, i, e)}; {_bounds(e)} ({e.description})"
            rows.setdefault(i, []).append((e.name, detail))
    order = {e.name: n for n, e in enumerate(spec.expectations)}
    outcomes.sort(key=lambda o: order[o.spec.name])
    for fails in rows.values():
        fails.sort(key=lambda f: order[f[0]])
    return outcomes, rows


def run_checkpoint(
    tables: Mapping[TableName, pd.DataFrame],
    cfg: BuildConfig,
    *,
    site_dir: str | Path | None = None,
    run_name: str | None = None,
    gx_index: bool = True,
) -> GXOutcome:
    """Run the release suites on the tables as GX checkpoints (one context, one per table).

    Args:
        tables: :func:`~geodelta.pipelines.release.gx_tables.build_tables` output (every table of
            :data:`~geodelta.schemas.expectations.TABLES`).
        cfg: the build config (bounds of the suites).
        site_dir: where to build GX Data Docs (None = no Data Docs). The pages are left as GX
            writes them; :func:`~geodelta.pipelines.release.datadocs.make_offline` strips their network references.
        run_name: GX run name (default ``<name>-<version>``).
        gx_index: build GX's own ``index.html`` (blank without its scripts; off when
            :func:`~geodelta.pipelines.release.datadocs.make_offline` writes the index).

    Returns:
        The verdict: per-expectation outcomes and failing rows per sample key.
    """
    gx = _gx()
    site = Path(site_dir).resolve() if site_dir is not None else None
    with _gx_changes():
        return _run(gx, tables, cfg, site, run_name or f"{cfg.name}-{cfg.version}", gx_index)


def _run(
    gx: Any,
    tables: Mapping[TableName, pd.DataFrame],
    cfg: BuildConfig,
    site: Path | None,
    run_name: str,
    gx_index: bool,
) -> GXOutcome:
    """:func:`run_checkpoint`'s work."""
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(gx, site, run_name)
    source = context.data_sources.add_pandas("geodelta")
    run_id = RunIdentifier(run_name=run_name, run_time=RUN_TIME)
    outcome = GXOutcome(suites=[], gx_version=str(gx.__version__))
    for spec in release_suites(cfg):
        # GX reports failing rows by these columns (Data Docs show them): the key for readers,
        # the row number to find the row again
        table = tables[spec.table].reset_index(drop=True)
        table = table.assign(**{_ROW: np.arange(len(table), dtype=np.int64)})
        batch = source.add_dataframe_asset(spec.table).add_batch_definition_whole_dataframe(
            "release"
        )
        suite = context.suites.add(_gx_suite(gx, spec))
        vd = context.validation_definitions.add(
            gx.ValidationDefinition(name=spec.name, data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=spec.name,
                validation_definitions=[vd],
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": ["key", _ROW],
                },
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": table}, run_id=run_id)
        (vr,) = result.run_results.values()
        exps, rows = _outcomes(spec, table, vr)
        outcome.suites.append(
            SuiteOutcome(
                suite=spec, rows=len(table), expectations=tuple(exps), results=vr.to_json_dict()
            )
        )
        for i, fails in rows.items():
            key = cell_text(table.at[i, "key"])
            outcome.failures.setdefault(key, []).extend(fails)
    samples = tables["samples"]
    outcome.cell_ids = {
        cell_text(k): cell_text(c)
        for k, c in zip(samples["key"].tolist(), samples["cell_id"].tolist(), strict=True)
    }
    if site is not None:
        # once for all suites: each UpdateDataDocsAction would rebuild the whole site
        context.build_data_docs(site_names=[_SITE], build_index=gx_index)
        outcome.data_docs = (site / "index.html").relative_to(site.parent).as_posix()
        for i, s in enumerate(outcome.suites):
            pages = sorted((site / "validations" / s.suite.name).rglob("*.html"))
            page = pages[-1].relative_to(site.parent).as_posix() if pages else None
            outcome.suites[i] = dataclasses.replace(s, data_docs_page=page)
    return outcome


class _Settle:
    """Replace what GX makes up per run in the text it writes: random ids (uuid4) become
    ``00000000-0000-4000-8000-<n>`` in order of first appearance, and the batch load times
    (``meta.batch_markers.ge_load_time`` of the results) become :data:`RUN_TIME`. One instance
    per release, applied to results, then Data Docs pages in sorted order: deterministic."""

    def __init__(self, results: list[dict[str, Any]]) -> None:
        self._ids: dict[str, str] = {}
        self._times = sorted(
            {
                str(t)
                for r in results
                if (t := (r.get("meta") or {}).get("batch_markers", {}).get("ge_load_time"))
            }
        )

    def _id(self, match: re.Match[str]) -> str:
        found = match.group(0)
        if found not in self._ids:
            self._ids[found] = f"00000000-0000-4000-8000-{len(self._ids) + 1:012x}"
        return self._ids[found]

    def __call__(self, text: str) -> str:
        for t in self._times:
            text = text.replace(t, _LOAD_TIME)
        return _UUID_RE.sub(self._id, text)


# --- the release hook ---------------------------------------------------------------------


def _read_json_list(read: Callable[[str, str], bytes], key: str, member: str) -> list[Any]:
    try:
        value = json.loads(read(key, member))
    except (OSError, ValueError):
        return []  # fails the count expectations, so the sample is quarantined, not lost
    return value if isinstance(value, list) else []


def validate_release(
    release_dir: str | Path,
    cfg: BuildConfig,
    metas: Mapping[str, SampleMeta],
    read_member: Callable[[str, str], bytes],
    *,
    checkpoint: Checkpoint | None = None,
) -> list[QuarantineRecord]:
    """Run the checkpoint over a release's samples and keep the results under ``validation/``.

    Called by :func:`geodelta.pipelines.release.assemble.write_release` before any shard is written.
    ``<release>/validation/`` is replaced (or removed when
    ``validation.great_expectations`` is off).

    Args:
        release_dir: the release folder.
        cfg: the build config.
        metas: key -> metadata of every sample about to be sharded.
        read_member: ``(key, member name) -> bytes`` (e.g. ``Staging.read_member``), used for
            ``captions.json`` and ``qa.json``.
        checkpoint: what runs the checkpoint (default :func:`run_checkpoint`; a build's
            :class:`~geodelta.pipelines.release.sidecar.Sidecar` runs it in a child).

    Returns:
        One quarantine record (stage ``validate``) per sample with a failing row; the caller
        leaves those samples out of the shards.
    """
    out = Path(release_dir) / VALIDATION_DIR
    shutil.rmtree(out, ignore_errors=True)
    if not cfg.validation.great_expectations:
        return []
    records = [
        ReleaseRecord(
            meta=metas[key],
            captions=_read_json_list(read_member, key, "captions.json"),
            qa=[q for q in _read_json_list(read_member, key, "qa.json") if isinstance(q, dict)],
        )
        for key in sorted(metas)
    ]
    tables = build_tables(records, cfg)
    out.mkdir(parents=True)
    site = out / DATA_DOCS_DIR if cfg.validation.data_docs else None
    run = run_checkpoint if checkpoint is None else checkpoint
    outcome = run(tables, cfg, site_dir=site, gx_index=False)  # make_offline writes the index
    settle = _Settle([s.results for s in outcome.suites])
    (out / GX_SUITES_DIR).mkdir()
    (out / GX_RESULTS_DIR).mkdir()
    for s in outcome.suites:
        (out / _suite_file(s)).write_bytes(json_bytes(s.suite.to_json(), default=str))
        results = settle(json_bytes(s.results, default=str).decode("utf-8"))
        (out / _results_file(s)).write_bytes(results.encode("utf-8"))
    if site is not None:
        for page in make_offline(site):
            page.write_text(settle(page.read_text(encoding="utf-8")), encoding="utf-8")
    (out / GX_SUMMARY_FILE).write_bytes(json_bytes(outcome.summary(), default=str))
    return outcome.quarantine_records()
