"""Free-text claim checks (claims.check_text), rate limiting, ledger, config of the LLM annotator."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import numpy as np
import pytest

from geodelta.annotators.claims import check_captions, check_text, mentioned_classes_free
from geodelta.annotators.llm.cache import BudgetLedger
from geodelta.annotators.llm.prompt import PromptTemplate
from geodelta.annotators.llm.ratelimit import TokenBucket, backoff_delay, retry_after_seconds
from geodelta.annotators.qa import types_for
from geodelta.annotators.template import TemplateAnnotator
from geodelta.schemas import ConfigError, parse_config
from tests.conftest import minimal_config
from tests.test_template import hand_facts, no_change_facts, random_facts

# hand_facts: 12x12 px of 100 m2; tree cover -> built-up area (9 px, north-west) and
# grassland -> water (8 px, south-east); 17 px = 0.17 ha changed, 2 regions, 144 valid px.


@pytest.mark.parametrize(
    "text",
    [
        "Tree cover decreased while built-up area increased.",
        "The forest was cleared in the north-west.",
        "New urban areas appear in the northwest of the tile.",
        "Grassland turned into water and tree cover gave way to built-up area.",
        "About 0.17 ha changed, 12% of the tile, in 2 regions.",
        "About 1700 m2 changed; 17 pixels in two regions.",
        "Tree cover to built-up area is the largest change, 0.09 ha.",
    ],
)
def test_true_statements_pass(text: str) -> None:
    assert check_text(text, hand_facts()) == []


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("Built-up area decreased.", "says built-up area decreased but it went from 0 to 9"),
        ("Water shrank in the south-east.", "says water decreased"),
        ("Tree cover became water.", "tree cover became water, which is no transition"),
        ("New urban areas appear in the south.", "location 'south'"),
        ("Three regions changed.", "'Three regions' but the facts have 2 regions"),
        ("About 0.5 ha changed.", "'0.5 ha': 0.5 matches no ha"),
        ("Some 30% of the tile changed.", "'30%': 30 matches no %"),
        ("In 2021 the tile changed.", "the number 2021 matches no quantity"),
        ("Cropland expanded a lot.", "names cropland, which is not part of any transition"),
        ("Wetlands appeared near the lake.", "names wetland"),
        ("The central part changed.", "location 'central'"),
    ],
)
def test_false_statements_are_caught(text: str, complaint: str) -> None:
    found = check_text(text, hand_facts())
    assert any(complaint in c for c in found), found


def test_questions_may_ask_about_any_class_of_the_tile_without_claiming_a_direction() -> None:
    facts = hand_facts()
    assert check_text("Did cropland increase?", facts, role="question") == []
    assert check_text("Did built-up area decrease?", facts, role="question") == []
    assert check_text("Did wetland increase?", facts, role="question") != []  # not in the tile


def test_no_change_tile_admits_no_location_or_class() -> None:
    facts = no_change_facts()
    assert check_captions(["There is no change between the two dates."], facts, strict=True) == []
    bad = check_captions(["No change, except grassland in the north."], facts, strict=True)
    assert any("location 'north'" in c for c in bad) and any("grassland" in c for c in bad)


def test_synonyms_are_recognised_longest_first() -> None:
    found = mentioned_classes_free("Built-up areas replaced forests; a built-up area grew.")
    assert [c for c, _, _ in found] == ["built_up", "tree_cover", "built_up"]


def test_strict_check_accepts_every_template_caption() -> None:
    """No false alarm on 300 random tiles' template captions and questions (both label kinds)."""
    rng = np.random.default_rng(7)
    complaints = []
    for i in range(300):
        facts = random_facts(rng, binary=i % 3 == 0)
        ann = TemplateAnnotator(captions_per_sample=8).annotate(f"k{i}", facts)
        complaints += check_captions(ann.captions, facts, strict=True)
        for q in ann.qa:
            complaints += check_text(q.question, facts, role="question")
    assert complaints == []


def test_prompt_is_a_versioned_file_with_facts_and_task() -> None:
    facts = hand_facts()
    p = PromptTemplate("change_v1")
    system, user = p.messages("k_1", facts, captions_per_sample=6)
    assert system["role"] == "system" and "JSON" in system["content"]
    text = user["content"]
    assert "Sample: k_1" in text and '"changed_pixels": 17' in text
    assert '"captions": 6' in text and "north-west, south-east" in text
    assert '"changed_area_ha": "0.17"' in text
    assert all(f'"{t}"' in text for t in types_for(facts))
    assert "$" not in text  # every placeholder filled
    fix = p.fix(["caption 0: wrong"])
    assert fix["role"] == "user" and "- caption 0: wrong" in fix["content"]


# --- rate limits, back-off, ledger ------------------------------------------------------------


def test_token_bucket_paces_to_its_rate() -> None:
    async def run() -> float:
        bucket = TokenBucket(1200.0, capacity=1.0)  # 20 per second, no burst
        t = time.monotonic()
        for _ in range(6):
            await bucket.acquire()
        return time.monotonic() - t

    elapsed = asyncio.run(run())
    assert 0.24 <= elapsed < 2.0  # 5 waits of 0.05 s after the first token (slack: busy CI)


def test_backoff_is_jittered_bounded_and_honours_retry_after() -> None:
    rng = random.Random(0)
    delays = [backoff_delay(a, base_s=0.5, cap_s=4.0, rng=rng) for a in range(10)]
    assert all(0 <= d <= 4.0 for d in delays) and len(set(delays)) == 10
    assert backoff_delay(0, base_s=0.5, cap_s=4.0, retry_after_s=2.0, rng=rng) == 2.0
    assert backoff_delay(0, cap_s=4.0, retry_after_s=100.0, rng=rng) == 4.0  # bounded
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250", "Retry-After": "3"}) == 0.25
    assert retry_after_seconds({}) is None


def test_ledger_refuses_what_would_pass_the_budget(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "l.json", budget_usd=1.0)
    assert ledger.reserve(0.6)
    assert not ledger.reserve(0.5)  # 1.1 > 1.0: nothing booked
    ledger.settle(0.6, 0.2)  # the request cost less than reserved
    assert ledger.spent() == pytest.approx(0.2)
    assert BudgetLedger(tmp_path / "l.json", 1.0).reserve(0.8)  # shared through the file
    assert ledger.spent() == pytest.approx(1.0)


# --- config -----------------------------------------------------------------------------------


def test_openai_config_section_and_hash() -> None:
    template = parse_config(minimal_config())
    assert "openai" not in template.normalised()["annotation"]  # unused: not hashed
    llm = {"annotator": "openai", "openai": {"base_url": "http://127.0.0.1:1/v1", "model": "m"}}
    a = parse_config(minimal_config(annotation=llm))
    moved = {**llm, "openai": {**llm["openai"], "base_url": "http://10.0.0.1:9/v1"}}
    b = parse_config(minimal_config(annotation=moved))
    assert a.config_hash() == b.config_hash()  # where requests go does not change the data
    other = {**llm, "openai": {**llm["openai"], "model": "n"}}
    assert parse_config(minimal_config(annotation=other)).config_hash() != a.config_hash()
    assert "base_url" not in a.normalised()["annotation"]["openai"]
    assert a.normalised()["annotation"]["openai"]["prompt_version"] == "change_v1"
    for url in ("http://user:pw@host/v1", "https://host/v1?api-key=x", "ftp://host"):
        bad = {"annotator": "openai", "openai": {"base_url": url}}
        with pytest.raises(ConfigError, match=r"annotation\.openai\.base_url"):
            parse_config(minimal_config(annotation=bad))
