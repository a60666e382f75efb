"""The GX checkpoint inside write_release: rejected samples never reach a shard; validation/ kept."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from geodelta.pipelines.release.assemble import write_release
from geodelta.pipelines.release.layout import GX_SUMMARY_FILE, VALIDATION_DIR, iter_tar_samples
from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.release.verify import verify_release
from geodelta.pipelines.stages.encode import build_meta, encode_members
from geodelta.schemas import BuildConfig, ReleaseManifest
from tests.factories import make_config, make_sample

SPLITS = ("train", "val", "test")
#: Seeded bad samples the per-sample rules do not see: a split the config does not know, and a
#: train cell right next to a test cell (inside a 1-cell buffer). Keys filled in by ``_fill``.
BAD_SPLIT = "gx:expect_column_values_to_be_in_set:split"
BUFFER = "gx:expect_column_values_to_be_between:split_buffer_conflicts"


def _put(staging: Staging, cfg: BuildConfig, seed: int, **kw: object) -> str:
    sample = make_sample(seed, **kw)  # type: ignore[arg-type]
    meta = build_meta(sample, cfg, code_version="0.1.0", shaping_hash=cfg.shaping_hash())
    staging.put_sample(sample.key, encode_members(sample, meta, cfg))
    staging.mark_cell(meta.cell_id, keys=[sample.key], quarantine=[])
    return sample.key


def _fill(staging: Staging, cfg: BuildConfig) -> dict[str, str]:
    keys = {}
    for i in range(6):  # cells 3 columns apart: no buffer conflict among them
        keys[f"clean{i}"] = _put(staging, cfg, i, col=3 * i, split=SPLITS[i % 3], change=i % 2 == 0)
    keys[BAD_SPLIT] = _put(staging, cfg, 20, col=40, split="holdout")
    keys[BUFFER] = _put(staging, cfg, 21, col=7, split="train")  # east of clean2 (test, col 6)
    return keys


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("gxrel")
    cfg = make_config(splits={"buffer_cells": 1})
    staging = Staging(root / "staging")
    keys = _fill(staging, cfg)
    write_release(root / "rel", cfg, staging, code_version="0.1.0")
    return root / "rel", keys


def test_rejected_samples_are_quarantined_with_the_expectation_name(
    release: tuple[Path, dict[str, str]],
) -> None:
    rel, keys = release
    manifest = ReleaseManifest.model_validate_json((rel / "manifest.json").read_bytes())
    assert manifest.quarantined == {f"validate:{BAD_SPLIT}": 1, f"validate:{BUFFER}": 1}
    rows = pq.read_table(rel / "quarantine.parquet").to_pylist()
    by_key = {r["key"]: r for r in rows}
    for name in (BAD_SPLIT, BUFFER):
        assert by_key[keys[name]]["stage"] == "validate"
        assert by_key[keys[name]]["reason"] == name
    assert "split='holdout'" in by_key[keys[BAD_SPLIT]]["detail"]
    assert manifest.splits == {"test": 2, "train": 2, "val": 2}


def test_rejected_samples_never_reach_a_shard(release: tuple[Path, dict[str, str]]) -> None:
    rel, keys = release
    in_shards = {
        k for tar in sorted((rel / "shards").glob("*.tar")) for k, _ in iter_tar_samples(tar)
    }
    assert in_shards == {keys[f"clean{i}"] for i in range(6)}
    table = set(pq.read_table(rel / "samples.parquet").column("key").to_pylist())
    assert table == in_shards
    assert not any(p.name.startswith("holdout") for p in (rel / "shards").iterdir())
    assert verify_release(rel).ok


def test_summary_json(release: tuple[Path, dict[str, str]]) -> None:
    rel, keys = release
    summary = json.loads((rel / VALIDATION_DIR / GX_SUMMARY_FILE).read_text())
    assert summary["format"] == "geodelta.gx-summary/1"
    assert summary["success"] is False
    assert summary["samples_checked"] == 8
    assert summary["samples_quarantined"] == 2
    assert sorted(q["key"] for q in summary["quarantined"]) == sorted(
        [keys[BAD_SPLIT], keys[BUFFER]]
    )
    assert [s["table"] for s in summary["suites"]] == ["samples", "captions", "qa"]
    samples = summary["suites"][0]
    exps = {e["name"]: e for e in samples["expectations"]}
    assert exps[BAD_SPLIT]["success"] is False
    assert exps[BAD_SPLIT]["unexpected_keys"] == [keys[BAD_SPLIT]]
    assert exps[BUFFER]["unexpected_count"] == 1
    assert samples["failed"] == 2
    assert samples["evaluated"] == len(samples["expectations"])
    for s in summary["suites"]:
        for rel_path in (s["suite_file"], s["results_file"], s["data_docs_page"]):
            assert (rel / VALIDATION_DIR / rel_path).is_file(), rel_path
    results = json.loads((rel / VALIDATION_DIR / samples["results_file"]).read_text())
    assert results["success"] is False
    assert len(results["results"]) == samples["evaluated"]
    suite = json.loads((rel / VALIDATION_DIR / samples["suite_file"]).read_text())
    assert suite["name"] == "geodelta-samples"


_REMOTE_SRC = re.compile(r"""\bsrc\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
_REMOTE_ANY = re.compile(
    r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?https?:""", re.I
)


def test_data_docs_are_offline(release: tuple[Path, dict[str, str]]) -> None:
    rel, _ = release
    docs = rel / VALIDATION_DIR / "data_docs"
    pages = sorted(docs.rglob("*.html"))
    assert (docs / "index.html") in pages
    assert len([p for p in pages if "validations" in p.parts]) == 3  # one page per suite
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert not _REMOTE_SRC.search(html), page
        assert not _REMOTE_ANY.search(html), page
        assert "<script" not in html, page
        for ref in re.findall(r"""\b(?:src|href)\s*=\s*["']([^"'#?]+)""", html):
            assert (page.parent / ref).exists(), (page, ref)  # local links resolve
    page = next(p for p in pages if "geodelta-samples" in p.parts)
    text = page.read_text(encoding="utf-8")
    assert "split_buffer_conflicts" in text and "holdout" in text
    size = sum(p.stat().st_size for p in docs.rglob("*") if p.is_file())
    assert size < 1_000_000  # GX's fonts and animations are not kept


def test_rerun_replaces_validation(release: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    src, _ = release
    shutil.copytree(src.parent, tmp_path / "copy")  # the release and its staging area
    rel = tmp_path / "copy" / src.name
    cfg = make_config(splits={"buffer_cells": 1})
    staging = Staging(rel.parent / "staging")
    stale = rel / VALIDATION_DIR / "stale.txt"
    stale.write_text("old")
    pages_before = sorted((rel / VALIDATION_DIR / "data_docs").rglob("*.html"))
    write_release(rel, cfg, staging, code_version="0.1.0")
    assert not stale.exists()
    pages_after = sorted((rel / VALIDATION_DIR / "data_docs").rglob("*.html"))
    assert len(pages_after) == len(pages_before)  # old run pages do not pile up
    off = make_config(splits={"buffer_cells": 1}, validation={"great_expectations": False})
    manifest = write_release(rel, off, staging, code_version="0.1.0")
    assert not (rel / VALIDATION_DIR).exists()
    assert not any(k.startswith("validate:gx:") for k in manifest.quarantined)
    assert manifest.splits == {"holdout": 1, "test": 2, "train": 3, "val": 2}


def test_data_docs_can_be_switched_off(tmp_path: Path) -> None:
    cfg = make_config(validation={"data_docs": False})
    staging = Staging(tmp_path / "staging")
    _put(staging, cfg, 0, col=0)
    manifest = write_release(tmp_path / "rel", cfg, staging, code_version="0.1.0")
    assert manifest.splits == {"train": 1}
    out = tmp_path / "rel" / VALIDATION_DIR
    summary = json.loads((out / GX_SUMMARY_FILE).read_text())
    assert summary["success"] is True and summary["data_docs"] is None
    assert not (out / "data_docs").exists()
    assert all(s["data_docs_page"] is None for s in summary["suites"])
