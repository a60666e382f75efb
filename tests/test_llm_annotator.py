"""The LLM annotator (annotators/llm/) through the real openai client against the test double."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geodelta.annotators.claims import check_captions, check_qa_item
from geodelta.annotators.errors import AnnotationFailed, AnnotatorConfigError
from geodelta.annotators.llm import LLMAnnotator, PromptTemplate, check_output, response_schema
from geodelta.annotators.llm.cache import BudgetLedger, ResponseCache, cache_key
from geodelta.annotators.qa import types_for
from geodelta.schemas import Annotation, ChangeFacts
from geodelta.schemas.config import OpenAIConfig
from geodelta.schemas.qa import PAIR_QA_TYPES
from tests.factories import REPO
from tests.openai_double import OpenAIDouble, answer
from tests.test_template import hand_facts, no_change_facts, random_facts

pytestmark = pytest.mark.integration

KEY_ENV = "GEODELTA_TEST_LLM_KEY"
SECRET = "sk-test-geodelta-0123456789-SECRET"
PRICE_IN, PRICE_OUT = 0.15, 0.60  # gpt-4o-mini in the default price table, USD per 1M


@pytest.fixture
def double(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIDouble]:
    monkeypatch.setenv(KEY_ENV, SECRET)
    with OpenAIDouble(api_key=SECRET) as d:
        yield d


def settings(d: OpenAIDouble, **kw: Any) -> OpenAIConfig:
    base: dict[str, Any] = {
        "base_url": d.base_url,
        "api_key_env": KEY_ENV,
        "model": "gpt-4o-mini",
        "timeout_s": 2.0,
        "max_backoff_s": 0.5,
        "max_retries": 3,
    }
    return OpenAIConfig(**{**base, **kw})


def batch_of(n: int, seed: int = 0) -> list[tuple[str, ChangeFacts]]:
    rng = np.random.default_rng(seed)
    return [
        (f"cell{i:02d}_20200101_20210101", random_facts(rng, binary=i % 5 == 4)) for i in range(n)
    ]


def assert_verified(ann: Annotation, facts: ChangeFacts) -> None:
    assert check_captions(ann.captions, facts, strict=True) == []
    for q in ann.qa:
        assert check_qa_item(q, facts) == [], q


# --- happy path, accounting -------------------------------------------------------------------


def test_annotations_are_checked_and_carry_model_prompt_tokens_cost(
    double: OpenAIDouble, tmp_path: Path
) -> None:
    batch = batch_of(6)
    with LLMAnnotator(settings(double), cache_dir=tmp_path / "cache") as a:
        out = a.annotate_batch(batch)
    assert double.chat_requests == 6 and double.unauthorised == 0
    for (_, facts), ann in zip(batch, out, strict=True):
        assert isinstance(ann, Annotation)
        assert ann.annotator == "openai" and ann.model == "gpt-4o-mini"
        assert ann.prompt_version == "change_v1"
        assert len(ann.captions) == 5
        assert {q.type for q in ann.qa} == set(types_for(facts))
        assert_verified(ann, facts)
        # usage of the double: chars // 4; cost from the price table
        assert ann.tokens_in > 0 and ann.tokens_out > 0
        expected = (ann.tokens_in * PRICE_IN + ann.tokens_out * PRICE_OUT) / 1e6
        assert ann.cost_usd == pytest.approx(expected, rel=1e-6)
    assert a.stats.tokens_in == sum(x.tokens_in for x in out if isinstance(x, Annotation))
    assert a.stats.cost_usd == pytest.approx(sum(x.cost_usd for x in out))  # type: ignore[union-attr]


def test_strict_json_schema_is_sent_and_derived_from_records(double: OpenAIDouble) -> None:
    with LLMAnnotator(settings(double), captions_per_sample=7) as a:
        ann = a.annotate("k_20200101_20210101", hand_facts())
    rf = double.bodies[0]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    schema = rf["json_schema"]["schema"]
    assert schema["additionalProperties"] is False and set(schema["required"]) == {"captions", "qa"}
    assert schema["properties"]["captions"]["minItems"] == 7 == len(ann.captions)
    item = schema["$defs"]["LLMQAItem"]
    assert item["required"] == ["type", "question", "answer"]
    # a pair sample's request names the pair types only (the temporal ones are for sequences)
    assert item["properties"]["type"]["enum"] == list(PAIR_QA_TYPES)
    assert response_schema(3)["schema"]["properties"]["captions"]["maxItems"] == 3


def test_falls_back_to_json_mode_when_schemas_are_unsupported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    with OpenAIDouble(api_key=SECRET, json_schema=False) as d, LLMAnnotator(settings(d)) as a:
        out = a.annotate_batch(batch_of(3))
        assert all(isinstance(x, Annotation) for x in out)
        assert a.mode == "json_object"
        kinds = [b["response_format"]["type"] for b in d.bodies]
        # each sample: at most one rejected schema request (concurrent ones race the switch),
        # then one JSON-mode request; later samples go straight to JSON mode
        assert 1 <= kinds.count("json_schema") <= 3 and kinds.count("json_object") == 3
        with_schema = len(d.bodies)
        a.annotate_batch(batch_of(2, seed=5))
        assert [b["response_format"]["type"] for b in d.bodies[with_schema:]] == ["json_object"] * 2
    with OpenAIDouble(api_key=SECRET, json_schema=False) as d:
        with LLMAnnotator(settings(d, structured_output="json_schema")) as a:
            (res,) = a.annotate_batch(batch_of(1))
        assert isinstance(res, AnnotationFailed) and res.reason == "llm_request_rejected"
        assert d.chat_requests == 1  # a 400 is not retried


# --- the claim checker in the loop --------------------------------------------------------------


def test_wrong_numbers_are_caught_and_fixed_with_the_complaint(double: OpenAIDouble) -> None:
    key = "fix_20200101_20210101"
    double.inject(key, "wrong_number")
    with LLMAnnotator(settings(double)) as a:
        ann = a.annotate(key, hand_facts())
    assert double.per_key[key] == 2 and a.stats.fix_rounds == 1
    assert_verified(ann, hand_facts())
    second = double.bodies[-1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    complaint = second[-1]["content"]
    assert "rejected by the fact checker" in complaint
    assert "count_regions: answer 5 but facts have 2 regions" in complaint
    assert "matches no" in complaint  # the inflated hectares of a caption


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("wrong_number", "claims_failed"),
        ("wrong_class", "claims_failed"),
        ("malformed", "malformed_output"),
    ],
)
def test_persistent_hallucination_is_quarantined_after_bounded_fixes(
    double: OpenAIDouble, fault: str, reason: str
) -> None:
    key = "bad_20200101_20210101"
    double.always = fault
    with (
        LLMAnnotator(settings(double, max_fix_attempts=2)) as a,
        pytest.raises(AnnotationFailed) as err,
    ):
        a.annotate(key, hand_facts())
    assert err.value.reason == reason and err.value.key == key
    assert double.per_key[key] == 3  # the first reply + max_fix_attempts
    assert "3 replies of gpt-4o-mini (prompt change_v1)" in err.value.detail
    assert a.stats.failed[reason] == 1


def test_no_change_tile(double: OpenAIDouble) -> None:
    facts = no_change_facts()
    with LLMAnnotator(settings(double)) as a:
        ann = a.annotate("same_20200101_20210101", facts)
    assert {q.type: q.answer for q in ann.qa}["has_change"] == "no"
    assert_verified(ann, facts)


def test_check_output_rejects_what_the_facts_contradict() -> None:
    facts = hand_facts()
    good = answer("k", facts, {"captions": 5, "qa_types": types_for(facts)})
    parsed, complaints, malformed = check_output(good, facts, captions_per_sample=5)
    assert parsed is not None and complaints == [] and not malformed
    data = json.loads(good)
    data["captions"][1] = "Cropland expanded in the north-east."
    data["qa"] = [q for q in data["qa"] if q["type"] != "count_regions"]
    parsed, complaints, malformed = check_output(json.dumps(data), facts, captions_per_sample=5)
    assert parsed is None and not malformed
    text = "\n".join(complaints)
    assert "names cropland" in text and "location 'north-east'" in text
    assert "QA items of type(s) count_regions are missing" in text
    fenced = "```json\n" + good + "\n```"
    assert check_output(fenced, facts, captions_per_sample=5)[1] == []
    _, complaints, malformed = check_output('{"captions": []}', facts, captions_per_sample=5)
    assert malformed and "does not match the JSON schema" in complaints[0]


# --- transport faults ---------------------------------------------------------------------------


def test_429_retry_after_is_honoured(double: OpenAIDouble) -> None:
    double.retry_after_s = 0.3
    key = "rl_20200101_20210101"
    double.inject(key, "429", "429")
    with LLMAnnotator(settings(double)) as a:
        a.annotate(key, hand_facts())
    t = double.times[key]
    assert len(t) == 3 and a.stats.retries == 2
    assert t[1] - t[0] >= 0.29 and t[2] - t[1] >= 0.29


def test_retries_stay_bounded_on_500(double: OpenAIDouble) -> None:
    double.always = "500"
    key = "down_20200101_20210101"
    with (
        LLMAnnotator(settings(double, max_retries=2)) as a,
        pytest.raises(AnnotationFailed) as err,
    ):
        a.annotate(key, hand_facts())
    assert err.value.reason == "llm_unavailable"
    assert double.per_key[key] == 3 and a.stats.retries == 2
    assert "3 attempts" in err.value.detail and "500" in err.value.detail


def test_timeout_is_retried(double: OpenAIDouble) -> None:
    key = "slow_20200101_20210101"
    double.inject(key, "timeout")
    double.hang_s = 1.5
    with LLMAnnotator(settings(double, timeout_s=0.4)) as a:
        ann = a.annotate(key, hand_facts())
    assert double.per_key[key] == 2 and a.stats.retries == 1
    assert_verified(ann, hand_facts())


# --- budget, cache, resume ----------------------------------------------------------------------


def test_budget_stops_the_run_and_the_rest_is_quarantined(
    double: OpenAIDouble, tmp_path: Path
) -> None:
    batch = batch_of(10)
    # one request reserves at most ~(prompt/3 tokens * 0.15 + 1500 * 0.6) / 1e6 ~ 1.2e-3 USD
    budget = 0.004
    ledger = tmp_path / "ledger.json"
    s = settings(double, budget_usd=budget, concurrency=1)
    with LLMAnnotator(s, cache_dir=tmp_path / "c", ledger_path=ledger) as a:
        out = a.annotate_batch(batch)
    done = [x for x in out if isinstance(x, Annotation)]
    failed = [x for x in out if isinstance(x, AnnotationFailed)]
    assert 1 <= len(done) < 10 and len(done) + len(failed) == 10
    assert {f.reason for f in failed} == {"budget"}
    assert "budget_usd=0.004 reached" in failed[0].detail
    assert double.chat_requests == len(done)  # no request once the budget is reached
    spent = BudgetLedger(ledger, budget).spent()
    assert spent == pytest.approx(sum(x.cost_usd for x in done)) and spent <= budget


def test_cached_rerun_makes_zero_requests_and_a_crashed_run_resumes(
    double: OpenAIDouble, tmp_path: Path
) -> None:
    batch = batch_of(8)
    double.inject(batch[2][0], "wrong_number")  # the fix round is cached too
    with LLMAnnotator(settings(double), cache_dir=tmp_path / "c") as a:
        first = a.annotate_batch(batch[:5])  # "crash" after five samples
    assert double.chat_requests == 6
    with LLMAnnotator(settings(double), cache_dir=tmp_path / "c") as a:
        resumed = a.annotate_batch(batch)
    assert double.chat_requests == 6 + 3 and a.stats.cache_hits == 6
    assert resumed[:5] == first
    with LLMAnnotator(settings(double), cache_dir=tmp_path / "c") as a:
        again = a.annotate_batch(batch)
    assert double.chat_requests == 9 and a.stats.requests == 0 and again == resumed
    assert len(ResponseCache(tmp_path / "c")) == 9


def test_cache_key_covers_model_prompt_params_and_schema_version() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.2}
    k = cache_key(body, schema_version="1.0.0")
    assert k == cache_key(dict(reversed(body.items())), schema_version="1.0.0")
    assert k != cache_key({**body, "model": "n"}, schema_version="1.0.0")
    assert k != cache_key({**body, "temperature": 0.3}, schema_version="1.0.0")
    assert k != cache_key({**body, "messages": []}, schema_version="1.0.0")
    assert k != cache_key(body, schema_version="1.0.1")


# --- secrets ------------------------------------------------------------------------------------


def test_the_key_never_reaches_logs_cache_or_errors(
    double: OpenAIDouble, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = "sec_20200101_20210101"
    double.inject(key, "429", "wrong_number")
    double.always = None
    with LLMAnnotator(settings(double), cache_dir=tmp_path / "c") as a:
        a.annotate(key, hand_facts())
        double.always = "500"
        with pytest.raises(AnnotationFailed) as err:
            a.annotate("other_20200101_20210101", hand_facts())
    assert double.unauthorised == 0  # the key did go over the wire, to the double
    assert SECRET not in caplog.text and SECRET not in str(err.value)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_missing_key_variable_names_the_variable_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEODELTA_NO_SUCH_KEY", raising=False)
    with pytest.raises(AnnotatorConfigError, match="GEODELTA_NO_SUCH_KEY is not set"):
        LLMAnnotator(OpenAIConfig(api_key_env="GEODELTA_NO_SUCH_KEY"))
    with pytest.raises(AnnotatorConfigError, match="price of model 'local-model'"):
        LLMAnnotator(OpenAIConfig(api_key_env=None, model="local-model", budget_usd=1.0))
    with pytest.raises(AnnotatorConfigError, match=r"prompts/change_v9\.txt"):
        PromptTemplate("change_v9")


# --- Batch API --------------------------------------------------------------------------------


def test_batch_api_mode(double: OpenAIDouble, tmp_path: Path) -> None:
    batch = batch_of(6)
    double.inject(batch[1][0], "wrong_number")
    double.batch_polls = 2
    s = settings(double, batch=True, batch_poll_s=0.01)
    with LLMAnnotator(s, cache_dir=tmp_path / "c") as a:
        out = a.annotate_batch(batch)
    assert all(isinstance(x, Annotation) for x in out)
    for (_, facts), ann in zip(batch, out, strict=True):
        assert_verified(ann, facts)  # type: ignore[arg-type]
    assert a.stats.batches == 2  # the fix round went into a second batch of one request
    assert double.counts["batches"] == 2 and double.counts["files"] == 2
    assert double.chat_requests == 7 and double.counts["batch_polls"] >= 2
    fixed = out[1]
    assert isinstance(fixed, Annotation)
    # batch prices are half the table
    assert fixed.cost_usd == pytest.approx(
        0.5 * (fixed.tokens_in * PRICE_IN + fixed.tokens_out * PRICE_OUT) / 1e6, rel=1e-6
    )
    with LLMAnnotator(s, cache_dir=tmp_path / "c") as a:
        again = a.annotate_batch(batch)
    assert again == out and double.counts["batches"] == 2 and a.stats.requests == 0


# --- vision -----------------------------------------------------------------------------------


def test_vision_sends_both_images(double: OpenAIDouble) -> None:
    with LLMAnnotator(settings(double, vision=True)) as a:
        a.annotate(
            "vis_20200101_20210101", hand_facts(), images=(b"\x89PNG-before", b"\x89PNG-after")
        )
    content = double.bodies[0]["messages"][1]["content"]
    urls = [p["image_url"]["url"] for p in content if p["type"] == "image_url"]
    assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)


def test_concurrency_overlaps_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    with (
        OpenAIDouble(api_key=SECRET, latency_s=0.5) as d,
        LLMAnnotator(settings(d, concurrency=8)) as a,
    ):
        a.annotate("warm_20200101_20210101", hand_facts())  # client start-up is not timed
        t = time.perf_counter()
        out = a.annotate_batch(batch_of(24))
        seconds = time.perf_counter() - t
    assert all(isinstance(x, Annotation) for x in out)
    # 24 requests of 0.5 s, 8 at a time: 1.5 s ideal; one at a time would take 12 s
    assert 1.5 <= seconds < 5.0, seconds


def test_rate_limit_paces_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    with (
        OpenAIDouble(api_key=SECRET) as d,
        LLMAnnotator(settings(d, concurrency=16, requests_per_minute=600)) as a,
    ):
        a.annotate("warm_20200101_20210101", hand_facts())  # client start-up; bucket refills
        t = time.perf_counter()
        out = a.annotate_batch(batch_of(20))
        seconds = time.perf_counter() - t
    assert all(isinstance(x, Annotation) for x in out)
    # 10 per second, a bucket of one second's worth (10): the last 10 of 20 requests wait for
    # tokens that come at 10 per second, so the batch takes at least 1 s (0.2 s unlimited)
    assert 0.95 <= seconds < 6.0, seconds


@pytest.mark.parametrize("out", ["s3://bucket/releases/demo", "rel/demo"])
def test_default_cache_is_a_local_folder_also_for_a_url_release(out: str) -> None:
    """The response cache defaults beside a local release, and for a URL release (whose
    'parent' is no folder) in the local work folders next to the config."""
    from geodelta.schemas import load_config

    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        {
            "output": {"dir": out},
            "annotation": {"annotator": "openai", "openai": {"api_key_env": None}},
        },
    )
    ann = LLMAnnotator.from_config(cfg)
    root = ann.cache.root if ann.cache is not None else None
    base = (REPO / "configs").resolve()
    expected = base / ".geodelta-work" / "llm-cache" if "://" in out else base / "rel" / "llm-cache"
    assert root == expected


# --- grounding: the region table in the prompt, wrong boxes fixed or quarantined ----------------


def test_prompt_gives_the_region_table_with_boxes(double: OpenAIDouble) -> None:
    facts = hand_facts()
    msgs = PromptTemplate("change_v1").messages("k", facts, captions_per_sample=5)
    summary = json.loads(msgs[1]["content"].split("<summary>")[1].split("</summary>")[0])
    boxes = {r["id"]: r["box"] for r in summary["regions_detail"]}
    # region 1: rows 0-2, cols 0-2 of 12x12 -> [0, 0, 250, 250]; region 2: rows 9-10, cols 7-10
    assert boxes == {1: [0, 0, 250, 250], 2: [583, 750, 917, 917]}


def test_a_wrong_box_is_caught_and_fixed(double: OpenAIDouble) -> None:
    key = "box_20200101_20210101"
    double.inject(key, "wrong_box")
    with LLMAnnotator(settings(double)) as a:
        ann = a.annotate(key, hand_facts())
    assert double.per_key[key] == 2 and a.stats.fix_rounds == 1
    assert_verified(ann, hand_facts())
    complaint = double.bodies[-1]["messages"][-1]["content"]
    assert "refer_change: answer" in complaint and "but the regions' boxes are" in complaint
    refer = next(q for q in ann.qa if q.type == "refer_change")
    assert refer.evidence["region_ids"] and refer.evidence["boxes_px"]


def test_a_persistently_wrong_box_is_quarantined(double: OpenAIDouble) -> None:
    key = "badbox_20200101_20210101"
    double.always = "wrong_box"
    with (
        LLMAnnotator(settings(double, max_fix_attempts=1)) as a,
        pytest.raises(AnnotationFailed) as err,
    ):
        a.annotate(key, hand_facts())
    assert err.value.reason == "claims_failed" and "refer_change" in err.value.detail
