"""A demo release built with ``annotation.annotator: openai`` against the OpenAI test double."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from geodelta.annotators.claims import check_captions, check_qa_item
from geodelta.pipelines.api import BuildResult, build
from geodelta.pipelines.cli import app
from geodelta.pipelines.release.layout import iter_tar_samples
from geodelta.pipelines.release.qa_balance import qa_balance
from geodelta.pipelines.release.verify import verify_release
from geodelta.schemas import QAItem, SampleMeta
from geodelta.sources.demo.catalog import DemoCatalog
from tests.openai_double import OpenAIDouble
from tests.test_e2e_demo import demo_config

pytestmark = [pytest.mark.slow, pytest.mark.integration]

KEY_ENV = "GEODELTA_TEST_LLM_KEY"
SECRET = "sk-test-geodelta-e2e-SECRET-42"


def bucket(key: str) -> int:
    return zlib.crc32(key.encode()) % 4


@pytest.fixture(scope="module")
def env() -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, SECRET)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def double(env: None) -> Iterator[OpenAIDouble]:
    with OpenAIDouble(api_key=SECRET) as d:
        yield d


@pytest.fixture(scope="module")
def catalog(demo_catalog: DemoCatalog) -> DemoCatalog:
    """The session's demo catalog (tests/conftest.py)."""
    return demo_catalog


def llm_config(cat: DemoCatalog, out: Path, double: OpenAIDouble) -> Any:
    return demo_config(
        cat,
        out / "release",
        runner={"name": "inprocess"},
        annotation={
            "annotator": "openai",
            "openai": {
                "base_url": double.base_url,
                "api_key_env": KEY_ENV,
                "model": "gpt-4o-mini",
                "max_backoff_s": 0.5,
                "cache_dir": str(out / "cache"),
            },
        },
    )


@pytest.fixture(scope="module")
def built(
    catalog: DemoCatalog, double: OpenAIDouble, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BuildResult, int, Path]:
    # per key, by a hash: 0 always hallucinates (-> quarantine), 1 once (-> fixed), 2 gets a 429
    def rule(key: str) -> str | None:
        first = double.per_key[key] == 1
        b = bucket(key)
        if b == 0:
            return "wrong_number"
        if b == 1 and first:
            return "wrong_number"
        if b == 2 and first:
            return "429"
        return None

    double.rule = rule
    out = tmp_path_factory.mktemp("llm-build")
    result = build(llm_config(catalog, out, double), mode="overwrite", progress=False)
    return result, double.chat_requests, out


def test_release_carries_verified_llm_captions_qa_costs_prompt_versions(
    built: tuple[BuildResult, int, Path], double: OpenAIDouble
) -> None:
    result, _, _ = built
    release = result.release_dir
    assert verify_release(release).ok
    metas: list[SampleMeta] = []
    for shard in sorted((release / "shards").glob("*.tar")):
        for _, members in iter_tar_samples(shard):
            meta = SampleMeta.model_validate_json(members["json"])
            metas.append(meta)
            assert meta.annotator == "openai" and meta.model == "gpt-4o-mini"
            assert meta.prompt_version == "change_v1"
            assert meta.tokens_in > 0 and meta.tokens_out > 0 and meta.cost_usd > 0
            captions = json.loads(members["captions.json"])
            assert len(captions) == 5
            assert check_captions(captions, meta.facts, strict=True) == []
            for q in json.loads(members["qa.json"]):
                assert check_qa_item(QAItem.model_validate(q), meta.facts) == []
    assert len(metas) == result.samples >= 6
    # keys that always hallucinated were quarantined at annotate, with the reason
    doomed = {k for k in double.per_key if bucket(k) == 0}
    assert doomed and result.manifest.quarantined.get("annotate:claims_failed") == len(doomed)
    assert not doomed & {m.key for m in metas}
    q = pq.read_table(release / "quarantine.parquet").to_pylist()
    assert {r["key"] for r in q if r["reason"] == "claims_failed"} == doomed
    assert all(double.per_key[k] == 3 for k in doomed)  # 1 reply + 2 fix rounds, no more
    # the fixed and the rate-limited keys made it, with the extra tokens counted
    fixed = [m for m in metas if bucket(m.key) == 1]
    assert fixed and all(double.per_key[m.key] == 2 for m in fixed)
    # per-release totals: samples.parquet and the card agree with the samples
    table = pq.read_table(release / "samples.parquet").to_pylist()
    total = sum(r["cost_usd"] for r in table)
    assert total == pytest.approx(sum(m.cost_usd for m in metas))
    card = (release / "README.md").read_text()
    assert f"cost ${total:.6f}" in card and "prompt(s) `change_v1`" in card
    balance = qa_balance(release)
    assert balance.samples == len(metas)
    assert sum(balance.answers["has_change"].values()) == len(metas)


def test_the_key_never_reaches_the_release(built: tuple[BuildResult, int, Path]) -> None:
    result, _, out = built
    for path in [*result.release_dir.rglob("*"), *(out / "cache").rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_cached_rebuild_makes_zero_requests_and_the_same_bytes(
    built: tuple[BuildResult, int, Path], catalog: DemoCatalog, double: OpenAIDouble
) -> None:
    result, requests, out = built
    first = (result.release_dir / "manifest.json").read_bytes()
    again = build(llm_config(catalog, out, double), mode="overwrite", progress=False)
    assert double.chat_requests == requests
    assert (again.release_dir / "manifest.json").read_bytes() == first


def test_demo_command_with_openai_annotator(
    env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAIDouble(api_key=SECRET) as d:
        res = CliRunner().invoke(
            app,
            [
                "demo",
                "--out",
                str(tmp_path),
                "--scale",
                "0.5",
                "--no-progress",
                "--no-reference",  # the LLM path is under test; test_reference covers training
                "--annotator",
                "openai",
                "--base-url",
                d.base_url,
                "--model",
                "gpt-4o-mini",
                "--api-key-env",
                KEY_ENV,
            ],
        )
        assert res.exit_code == 0, res.output
        assert d.chat_requests >= 6  # from the Beam worker processes
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    assert manifest["config"]["annotation"]["annotator"] == "openai"
    assert "base_url" not in manifest["config"]["annotation"]["openai"]
    table = pq.read_table(tmp_path / "release" / "samples.parquet").to_pylist()
    assert table and all(r["annotator"] == "openai" and r["cost_usd"] > 0 for r in table)
    monkeypatch.delenv(KEY_ENV)
    res = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path / "x"), "--annotator", "openai", "--no-progress"]
    )
    assert res.exit_code == 2 and "OPENAI_API_KEY" in res.output
    assert not (tmp_path / "x").exists()  # failed before writing a catalog
