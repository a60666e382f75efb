"""What makes the GX checkpoint cheaper or steadier changes nothing it decides (pipelines/release/gx.py).

The memo of expectation configurations gives the same outcome and the same GX results as GX
alone, with far fewer configurations built; the changes act only while ``run_checkpoint`` runs;
Data Docs list a column pair's failing values in one order whatever the process's string
hashes; a run whose name holds "profiling" gets its validation pages; a second release in the
same process (templates already compiled) has the same bytes as the first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import geodelta.pipelines.release.gx as gxmod
from geodelta._io import json_bytes
from geodelta.pipelines.release.datadocs import make_offline
from geodelta.pipelines.release.gx import run_checkpoint, validate_release
from geodelta.pipelines.release.gx_tables import ReleaseRecord, build_tables
from geodelta.pipelines.release.layout import GX_SUMMARY_FILE, VALIDATION_DIR
from geodelta.pipelines.stages.encode import build_meta
from geodelta.schemas import BuildConfig, SampleMeta
from tests.factories import make_config, make_sample

SPLITS = ("train", "val", "test")
CFG = make_config()
PAIR = "gx:expect_column_pair_values_to_be_equal:caption_no_change,mask_no_change"
SPLIT = "gx:expect_column_values_to_be_in_set:split"
NO_CHANGE = [
    "Nothing has changed between the two images.",
    "The scene is the same on both dates.",
    "No change in land cover is visible.",
    "Both images show the same land cover.",
    "There is no visible change in this tile.",
]


@pytest.fixture(autouse=True)
def _gx_imported() -> None:
    """GX imported as gx.py imports it (analytics off, its deprecation warnings filtered)."""
    gxmod._gx()


def _records(cfg: BuildConfig) -> list[ReleaseRecord]:
    """Six samples; sample 0 (a change) has no-change captions (a failing column pair), sample
    1 a split the config does not know."""
    out = []
    for i in range(6):
        sample = make_sample(i, col=3 * i, split=SPLITS[i % 3], change=i % 2 == 0)
        meta = build_meta(sample, cfg, code_version="0.1.0", shaping_hash=cfg.shaping_hash())
        assert sample.annotation is not None
        captions: list[Any] = list(sample.annotation.captions)
        if i == 0:
            captions = list(NO_CHANGE)
        if i == 1:
            meta = meta.model_copy(update={"split": "holdout"})
        qa = [q.model_dump(mode="json") for q in sample.annotation.qa]
        out.append(ReleaseRecord(meta=meta, captions=captions, qa=qa))
    return out


def _release_inputs(
    cfg: BuildConfig,
) -> tuple[dict[str, SampleMeta], Callable[[str, str], bytes]]:
    recs = {r.meta.key: r for r in _records(cfg)}

    def read(key: str, member: str) -> bytes:
        rec = recs[key]
        return json.dumps(rec.captions if member == "captions.json" else rec.qa).encode()

    return {k: r.meta for k, r in recs.items()}, read


def _settled_results(outcome: gxmod.GXOutcome) -> list[str]:
    settle = gxmod._Settle([s.results for s in outcome.suites])
    return [settle(json_bytes(s.results, default=str).decode()) for s in outcome.suites]


def test_memo_gives_the_same_outcome_and_results(monkeypatch: pytest.MonkeyPatch) -> None:
    from great_expectations.expectations.expectation import Expectation

    tables = build_tables(_records(CFG), CFG)
    built = {"n": 0}
    dict_of = Expectation.dict

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        built["n"] += 1
        return dict_of(self, *args, **kwargs)

    monkeypatch.setattr(Expectation, "dict", counted)
    runs = {}
    for memo in (False, True):
        monkeypatch.setattr(gxmod, "_MEMO", memo)
        built["n"] = 0
        runs[memo] = (run_checkpoint(tables, CFG), built["n"])
    (plain, n_plain), (memo, n_memo) = runs[False], runs[True]
    assert not plain.success
    assert {q.reason for q in plain.quarantine_records()} == {PAIR, SPLIT}
    assert memo.summary() == plain.summary()
    assert memo.quarantine_records() == plain.quarantine_records()
    assert _settled_results(memo) == _settled_results(plain)
    assert n_memo < n_plain / 2  # pydantic .dict() calls of expectations: 12,465 -> 5,006 here


def test_changes_act_only_while_a_checkpoint_runs() -> None:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )
    from great_expectations.render import util as render_util

    run_checkpoint(build_tables(_records(CFG)[:2], CFG), CFG)  # installs them
    conf = ExpectationConfiguration(
        type="expect_column_values_to_not_be_null", kwargs={"column": "key"}
    )
    expectation = conf.to_domain_obj()
    assert expectation.configuration is not expectation.configuration  # GX's own: built per read
    assert expectation.configuration == conf
    assert type(render_util.set(["b", "a"])) is set  # type: ignore[attr-defined]
    with gxmod._gx_changes():
        assert list(render_util.set(["b", "a", "key"]).difference({"key"})) == ["a", "b"]  # type: ignore[attr-defined]
    assert not gxmod._running()


def _unsorted_pair() -> tuple[str, str]:
    """Two column names that a plain set of this process lists out of sorted order (as GX's
    set of a row's column names minus the index columns)."""
    for i in range(1000):
        a, b = f"col_{i:03d}", f"col_{i + 1:03d}"
        if list(set([a, b, "key"]).difference({"key"})) != [a, b]:
            return a, b
    raise AssertionError("no such pair")  # never: half of all pairs are


def test_data_docs_list_pair_columns_in_one_order() -> None:
    from great_expectations.render.util import _convert_unexpected_indices_to_df

    a, b = _unsorted_pair()
    args: dict[str, Any] = {
        "unexpected_index_list": [{a: "x", b: "y", "key": "k1"}],
        "partial_unexpected_counts": [{"value": ["x", "y"], "count": 1}],
        "unexpected_index_column_names": ["key"],
    }
    # GX alone: the order of its set of column names (b before a in this process)
    assert list(_convert_unexpected_indices_to_df(**args).index) == ["('y', 'x')"]
    with gxmod._gx_changes():
        assert list(_convert_unexpected_indices_to_df(**args).index) == ["('x', 'y')"]


def test_run_named_profiling_gets_its_validation_pages(tmp_path: Path) -> None:
    site = tmp_path / "data_docs"
    outcome = run_checkpoint(
        build_tables(_records(CFG)[:2], CFG), CFG, site_dir=site, run_name="profiling-1"
    )
    pages = [s.data_docs_page for s in outcome.suites]
    assert all(p is not None and "/profiling-1/" in p for p in pages), pages
    assert (site / "index.html").is_file()  # GX's own index, by default


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_second_release_in_a_process_has_the_same_bytes(tmp_path: Path) -> None:
    metas, read = _release_inputs(CFG)
    first = validate_release(tmp_path / "a", CFG, metas, read)
    view = gxmod._page_view_class()()
    assert view.env.bytecode_cache.code  # the templates compiled by the first run
    second = validate_release(tmp_path / "b", CFG, metas, read)
    assert first == second
    assert {q.reason for q in first} == {PAIR, SPLIT}
    a, b = _files(tmp_path / "a" / VALIDATION_DIR), _files(tmp_path / "b" / VALIDATION_DIR)
    assert a == b
    assert "data_docs/index.html" in a
    summary = json.loads(a[GX_SUMMARY_FILE])
    samples = summary["suites"][0]
    page = a[samples["data_docs_page"]].decode()
    # caption_no_change, mask_no_change (sorted names) of the failing row
    assert "('yes', 'no')" in page and "('no', 'yes')" not in page


def test_make_offline_writes_the_index_gx_did_not(tmp_path: Path) -> None:
    site = tmp_path / "validation" / "data_docs"
    page = site / "validations" / "s" / "run" / "t" / "s.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html><head></head><body>ok</body></html>")
    pages = make_offline(site)
    assert pages == [site / "index.html", page]
    assert "validations/s/run/t/s.html" in (site / "index.html").read_text()
