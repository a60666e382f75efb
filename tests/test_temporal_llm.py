"""The LLM annotator on sequence samples (issue 15): the prompt carries the sequence's facts,
the reply's temporal captions and answers go through the independent temporal checker, and a
false or malformed temporal answer is rejected like a pair one; pair requests are unchanged.

Runs against the local OpenAI-compatible test double (tests/openai_double.py), extended here
to answer the ``series`` part of a prompt with the template's temporal annotation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geodelta.annotators.errors import REASON_CLAIMS, REASON_MALFORMED, AnnotationFailed
from geodelta.annotators.llm import LLMAnnotator, response_schema
from geodelta.annotators.llm.checks import check_output
from geodelta.annotators.llm.prompt import PromptTemplate
from geodelta.annotators.temporal import (
    SeriesInput,
    annotate_series,
    check_temporal_captions,
    check_temporal_qa,
    is_temporal_caption,
)
from geodelta.pipelines.stages.labels.series import label_series
from geodelta.schemas import ChangeFacts
from geodelta.schemas.config import OpenAIConfig
from geodelta.schemas.qa import PAIR_QA_TYPES, QA_TYPES, TEMPORAL_QA_TYPES
from geodelta.schemas.series import SeriesFacts
from tests.openai_double import OpenAIDouble
from tests.test_template import random_facts
from tests.test_temporal_qa import random_stack

pytestmark = pytest.mark.integration

_SERIES_RE = re.compile(r"<series_facts>\s*(.*?)\s*</series_facts>", re.DOTALL)
_KEY_RE = re.compile(r"^Sample: (\S+)", re.MULTILINE)


class SeriesDouble(OpenAIDouble):
    """The test double, answering a prompt's ``series`` part too (template temporal captions
    and QA), with temporal faults scripted per key: ``wrong_when`` (another interval),
    ``wrong_count`` (a count off by one), ``bad_date`` (a temporal caption naming a date that
    is no acquisition), ``bad_type`` (a QA type that does not exist: malformed)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.temporal: dict[str, deque[str]] = defaultdict(deque)
        self.prompts: list[str] = []

    def chat(
        self, body: dict[str, Any], *, auth: str | None = None
    ) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        status, headers, out = super().chat(body, auth=auth)
        prompt = body["messages"][1]["content"]
        self.prompts.append(prompt)
        m = _SERIES_RE.search(prompt)
        if status != 200 or out is None or m is None:
            return status, headers, out
        key = _KEY_RE.search(prompt).group(1)  # type: ignore[union-attr]
        facts = SeriesFacts.model_validate_json(m.group(1))
        captions, qa = annotate_series(facts, key=key, seed=0, captions_per_sample=3)
        data = json.loads(out["choices"][0]["message"]["content"])
        data["temporal_captions"] = list(captions)
        data["qa"] += [{"type": q.type, "question": q.question, "answer": q.answer} for q in qa]
        fault = self.temporal[key].popleft() if self.temporal[key] else None
        days = [d.date().isoformat() for d in facts.dates]
        for item in data["qa"]:
            if fault == "wrong_when" and item["type"] == "when_appeared":
                item["answer"] = f"between {days[0]} and {days[-1]}"
            if fault == "wrong_count" and item["type"] == "change_count":
                item["answer"] = str(int(item["answer"]) + 1)
            if fault == "bad_type" and item["type"] == "class_trend":
                item["type"] = "class_trend_over_time"
        if fault == "bad_date":
            first = data["temporal_captions"][0]
            data["temporal_captions"][0] = re.sub(
                r"\d{4}-\d{2}-\d{2}", "1999-12-31", first, count=1
            )
        out["choices"][0]["message"]["content"] = json.dumps(data)
        return status, headers, out


@pytest.fixture
def double() -> Iterator[SeriesDouble]:
    with SeriesDouble() as d:
        yield d


def settings(d: OpenAIDouble, **kw: Any) -> OpenAIConfig:
    base: dict[str, Any] = {
        "base_url": d.base_url,
        "api_key_env": None,
        "model": "gpt-4o-mini",
        "timeout_s": 2.0,
        "max_backoff_s": 0.2,
        "max_retries": 1,
        "max_fix_attempts": 1,
    }
    return OpenAIConfig(**{**base, **kw})


def series_sample(seed: int) -> tuple[str, ChangeFacts, SeriesInput]:
    """A sequence sample whose facts give every temporal type it can (a region that changed)."""
    for s in range(seed, seed + 200):
        lc, dates, mrp = random_stack(s)
        facts = label_series(lc, dates, min_region_px=mrp).facts
        if any(r.changed_steps for r in facts.regions):
            pair = random_facts(np.random.default_rng(s), binary=False)
            key = f"cell{s:03d}_{dates[0]:%Y%m%d}_{dates[-1]:%Y%m%d}"
            return key, pair, SeriesInput(facts=facts, lc=lc)
    raise AssertionError("no sequence with change")


def test_a_series_sample_gets_the_sequence_facts_and_checked_temporal_answers(
    double: SeriesDouble, tmp_path: Path
) -> None:
    samples = [series_sample(10 * i) for i in range(6)]
    with LLMAnnotator(settings(double), captions_per_sample=3, cache_dir=tmp_path / "c") as a:
        out = a.annotate_batch([(k, f) for k, f, _ in samples], series=[s for _, _, s in samples])
    assert double.chat_requests == 6
    kinds: set[str] = set()
    for (_, _, s), ann in zip(samples, out, strict=True):
        assert not isinstance(ann, AnnotationFailed), ann
        temporal = [c for c in ann.captions if is_temporal_caption(c)]
        assert len(ann.captions) == 3 + len(temporal) and 1 <= len(temporal) <= 3
        assert ann.captions[3:] == tuple(temporal)  # pair captions first
        assert (
            check_temporal_captions(
                temporal, s.lc, s.facts.dates, min_region_px=s.facts.min_region_px
            )
            == []
        )
        items = [q for q in ann.qa if q.type in TEMPORAL_QA_TYPES]
        assert items and {q.type for q in ann.qa} & set(PAIR_QA_TYPES)
        for q in items:
            kinds.add(q.type)
            assert (
                check_temporal_qa(q, s.lc, s.facts.dates, min_region_px=s.facts.min_region_px) == []
            )
            assert q.evidence  # found from the facts, not taken from the model
    assert {"when_appeared", "change_count", "permanence", "class_trend"} <= kinds
    # the prompt carried the sequence facts and the temporal task; the schema allows them
    prompt = double.prompts[0]
    assert "<series_facts>" in prompt and '"temporal_qa_types"' in prompt
    body = double.bodies[0]
    schema = body["response_format"]["json_schema"]
    assert schema["name"] == "geodelta_series_annotation"
    enum = schema["schema"]["$defs"]["LLMSeriesQAItem"]["properties"]["type"]["enum"]
    assert enum == list(QA_TYPES)
    assert schema["schema"]["properties"]["temporal_captions"]["maxItems"] == 3


def test_a_wrong_temporal_answer_is_sent_back_and_fixed(
    double: SeriesDouble, tmp_path: Path
) -> None:
    key, pair, s = series_sample(3)
    double.temporal[key].extend(["wrong_when"])
    with LLMAnnotator(settings(double), captions_per_sample=3) as a:
        ann = a.annotate(key, pair, series=s)
    assert double.chat_requests == 2  # the first reply was rejected, the fix accepted
    fix = double.bodies[1]["messages"][-1]["content"]
    assert "when_appeared: answer 'between" in fix and "first changed between" in fix
    when = [q for q in ann.qa if q.type == "when_appeared"]
    assert (
        when
        and check_temporal_qa(when[0], s.lc, s.facts.dates, min_region_px=s.facts.min_region_px)
        == []
    )


@pytest.mark.parametrize(
    ("fault", "reason", "says"),
    [
        ("wrong_count", REASON_CLAIMS, "change_count: answer"),
        ("bad_date", REASON_CLAIMS, "names 1999-12-31, which is no acquisition"),
        ("bad_type", REASON_MALFORMED, "qa."),
    ],
)
def test_a_false_or_malformed_temporal_reply_fails_the_sample(
    double: SeriesDouble, fault: str, reason: str, says: str
) -> None:
    key, pair, s = series_sample(7)
    if fault == "wrong_count":
        assert s.facts.regions
    if fault == "bad_type":
        assert s.facts.classes
    double.temporal[key].extend([fault, fault])
    with LLMAnnotator(settings(double), captions_per_sample=3) as a:
        out = a.annotate_batch([(key, pair)], series=[s])
    assert isinstance(out[0], AnnotationFailed)
    assert out[0].reason == reason and says in out[0].detail, out[0].detail
    assert double.chat_requests == 2


def test_a_pair_reply_with_a_temporal_type_is_malformed_as_before() -> None:
    pair = random_facts(np.random.default_rng(1), binary=False)
    reply = json.dumps(
        {
            "captions": ["x"],
            "qa": [{"type": "change_count", "question": "How often? [0, 0, 9, 9]", "answer": "1"}],
        }
    )
    parsed, complaints, malformed = check_output(reply, pair, captions_per_sample=1)
    assert parsed is None and malformed
    assert "qa.0.type" in complaints[0]


def test_pair_requests_do_not_mention_the_sequence() -> None:
    """A pair sample's prompt and schema are the pair ones: no series section, pair types."""
    pair = random_facts(np.random.default_rng(2), binary=False)
    msgs = PromptTemplate("change_v1").messages("k", pair, captions_per_sample=3)
    assert "series" not in msgs[1]["content"] and "YYYY" not in msgs[1]["content"]
    schema = response_schema(3)
    assert schema["name"] == "geodelta_annotation"
    assert schema["schema"]["$defs"]["LLMQAItem"]["properties"]["type"]["enum"] == list(
        PAIR_QA_TYPES
    )
    assert "temporal_captions" not in schema["schema"]["properties"]


def test_a_prompt_without_a_series_section_refuses_a_sequence_sample(tmp_path: Path) -> None:
    key, pair, s = series_sample(1)
    p = PromptTemplate("change_v1")
    del p.templates["series"]
    with pytest.raises(Exception, match="series"):
        p.messages(key, pair, captions_per_sample=3, series=s.facts)


#: sha256 over the request bodies of 8 pair samples, recorded with the code of commit 5d0c97b,
#: before the temporal QA types existed: pair requests (and so their cache keys and every
#: recorded response) must not change with them.
PAIR_BODIES_SHA256 = "c83e1cf7a77e9f33641658da25d4d5fd5578dd5b3ca675c0db9e8ba451ec629b"


def test_pair_request_bodies_are_byte_identical_to_before_the_temporal_types() -> None:
    config = OpenAIConfig(base_url="http://127.0.0.1:9/v1", api_key_env=None, model="gpt-4o-mini")
    digest = hashlib.sha256()
    with LLMAnnotator(config, captions_per_sample=5) as a:
        for i in range(8):
            facts = random_facts(np.random.default_rng(i), binary=i % 4 == 3)
            body = a._body(a._messages(f"cell{i}_20200101_20210101", facts, None))
            digest.update(json.dumps(body).encode())
    assert digest.hexdigest() == PAIR_BODIES_SHA256
