"""Template annotator (annotators/template.py) and claim checker (annotators/claims.py)."""

from __future__ import annotations

import numpy as np
import pytest

from geodelta.annotators.claims import (
    check_captions,
    check_qa_item,
    is_no_change_caption,
    mentioned_classes,
)
from geodelta.annotators.errors import AnnotatorConfigError
from geodelta.annotators.qa import REGISTRY, types_for
from geodelta.annotators.template import (
    TemplateAnnotator,
    format_hectares,
    format_percent,
)
from geodelta.pipelines.stages.label import binary_mask, compute_facts, transition_mask
from geodelta.schemas import ChangeFacts, QAItem
from geodelta.schemas.classes import CLASS_INDEX
from geodelta.schemas.qa import PAIR_QA_TYPES, QA_TYPES, REQUIRED_QA_TYPES, YES_NO_QA_TYPES

CLASS_TYPES = {
    "class_increase",
    "class_decrease",
    "largest_change",
    "smallest_change",
    "change_to_what",
}


def hand_facts() -> ChangeFacts:
    """12x12, 100 m2 pixels: 3x3 tree->built_up (north-west), 2x4 grass->water (south-east)."""
    before = np.full((12, 12), CLASS_INDEX["cropland"], dtype=np.uint8)
    before[0:3, 0:3] = CLASS_INDEX["tree_cover"]
    before[9:11, 7:11] = CLASS_INDEX["grassland"]
    after = before.copy()
    after[0:3, 0:3] = CLASS_INDEX["built_up"]
    after[9:11, 7:11] = CLASS_INDEX["water"]
    return compute_facts(
        transition_mask(before, after),
        np.ones((12, 12), dtype=bool),
        pixel_area_m2=100.0,
        min_region_px=2,
        binary=False,
        lc_before=before,
        lc_after=after,
    )


def no_change_facts(binary: bool = False) -> ChangeFacts:
    lc = np.full((8, 8), CLASS_INDEX["grassland"], dtype=np.uint8)
    mask = np.zeros((8, 8), dtype=np.uint8)
    return compute_facts(
        mask, np.ones((8, 8), bool), pixel_area_m2=100.0, min_region_px=1, binary=binary,
        lc_before=None if binary else lc, lc_after=None if binary else lc,
    )  # fmt: skip


def random_facts(rng: np.random.Generator, *, binary: bool, p_change: float = 0.9) -> ChangeFacts:
    """A 24x24 blocky land-cover pair with 0-4 random square changes."""
    before = np.kron(rng.integers(1, 7, size=(4, 4)), np.ones((6, 6), dtype=int)).astype(np.uint8)
    after = before.copy()
    n = int(rng.integers(1, 5)) if rng.random() < p_change else 0
    for _ in range(n):
        r, c = rng.integers(0, 20, size=2)
        s = int(rng.integers(1, 6))
        after[r : r + s, c : c + s] = rng.integers(1, 12)
    valid = np.ones(before.shape, dtype=bool)
    valid[rng.integers(0, 24), :] = False  # one unlabelled row
    min_px = int(rng.integers(1, 4))
    if binary:
        values = np.where(before != after, 2, 1).astype(np.uint8)
        values[~valid] = 0
        mask, valid = binary_mask(values, change_values=[2], nodata_values=[0])
        return compute_facts(mask, valid, pixel_area_m2=100.0, min_region_px=min_px, binary=True)
    before[~valid] = 0
    return compute_facts(
        transition_mask(before, after), valid, pixel_area_m2=100.0, min_region_px=min_px,
        binary=False, lc_before=before, lc_after=after,
    )  # fmt: skip


def qa_by_type(annotation_qa: tuple[QAItem, ...]) -> dict[str, QAItem]:
    return {q.type: q for q in annotation_qa}


# --- formatting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("area_m2", "text"),
    [(2_336_100.0, "234"), (900.0, "0.09"), (12_345.0, "1.2"), (99_600.0, "10"), (100.0, "0.01")],
)
def test_format_hectares(area_m2: float, text: str) -> None:
    assert format_hectares(area_m2) == text


def test_format_percent() -> None:
    assert format_percent(17 / 144) == "12"
    assert format_percent(0.0476) == "4.8"
    assert format_percent(0.00123) == "0.12"


# --- template annotator -------------------------------------------------------------------


def test_hand_facts_annotation() -> None:
    facts = hand_facts()
    ann = TemplateAnnotator().annotate("cell_20200601_20210601", facts)
    assert ann.annotator == "template" and ann.annotator_version == TemplateAnnotator.version
    assert len(ann.captions) == 5 and len(set(ann.captions)) == 5
    qa = qa_by_type(ann.qa)
    assert qa["has_change"].answer == "yes"
    assert qa["change_ratio"].answer == "10-25%"  # 17/144 = 0.118
    assert qa["count_regions"].answer == "2"
    assert qa["location"].answer == "north-west"
    assert qa["largest_change"].answer == "tree cover to built-up area"
    assert qa["smallest_change"].answer == "grassland to water"
    assert qa["has_change"].evidence == {
        "changed_pixels": 17, "valid_pixels": 144, "regions": 2, "region_ids": [1, 2]
    }  # fmt: skip
    assert qa["change_to_what"].answer in {"built-up area", "water"}
    assert check_captions(ann.captions, facts) == []
    for item in ann.qa:
        assert check_qa_item(item, facts) == []


def test_captions_distinct_and_varied_up_to_20() -> None:
    rng = np.random.default_rng(7)
    cases = [hand_facts(), no_change_facts(), random_facts(rng, binary=True, p_change=1.0)]
    one_region = compute_facts(
        np.pad(np.full((2, 2), 5, np.uint8), 3), np.ones((8, 8), bool), pixel_area_m2=100.0,
        min_region_px=1, binary=False, lc_before=np.ones((8, 8), np.uint8),
        lc_after=np.where(np.pad(np.ones((2, 2)), 3) > 0, 5, 1).astype(np.uint8),
    )  # fmt: skip
    assert one_region.n_regions == 1 and len(one_region.transitions) == 1
    cases.append(one_region)
    annotator = TemplateAnnotator(captions_per_sample=20)
    for facts in cases:
        captions = annotator.annotate("k", facts).captions
        assert len(captions) == 20 and len(set(captions)) == 20
        assert check_captions(captions, facts) == []
        # varied wording: not all captions start the same way
        assert len({c.split()[0] for c in captions}) >= 4


def test_deterministic_per_key() -> None:
    facts = hand_facts()
    a = TemplateAnnotator(seed=3)
    assert a.annotate("x_20200101_20210101", facts) == a.annotate("x_20200101_20210101", facts)
    assert TemplateAnnotator(seed=3).annotate("x", facts) == a.annotate("x", facts)
    variants = {a.annotate(f"key{i}", facts).captions for i in range(10)}
    assert len(variants) >= 8
    assert a.annotate("x", facts) != TemplateAnnotator(seed=4).annotate("x", facts)
    batch = a.annotate_batch([("x", facts), ("y", no_change_facts())])
    assert batch == [a.annotate("x", facts), a.annotate("y", no_change_facts())]


def test_random_facts_all_claims_hold() -> None:
    rng = np.random.default_rng(2024)
    annotator = TemplateAnnotator()
    seen_types: set[str] = set()
    for i in range(200):
        facts = random_facts(rng, binary=i % 4 == 0)
        ann = annotator.annotate(f"cell{i}_20200101_20210101", facts)
        assert len(set(ann.captions)) == 5
        assert check_captions(ann.captions, facts) == [], (i, ann.captions)
        types = [q.type for q in ann.qa]
        assert {"has_change", "change_ratio", "count_regions"} <= set(types)
        assert len(types) == len(set(types))
        for item in ann.qa:
            assert check_qa_item(item, facts) == [], (i, item)
        if facts.binary:
            assert not CLASS_TYPES & set(types)
        seen_types |= set(types)
    assert seen_types == {
        "has_change", "class_increase", "class_decrease", "change_ratio", "largest_change",
        "smallest_change", "change_to_what", "count_regions", "location",
        "refer_change", "count_boxes", "what_changed_here", "segment_change",
    }  # fmt: skip


def test_no_change_only_no_change_captions() -> None:
    for binary in (False, True):
        facts = no_change_facts(binary)
        for key in ("a", "b", "c"):
            ann = TemplateAnnotator().annotate(key, facts)
            assert all(is_no_change_caption(c) for c in ann.captions), ann.captions
            qa = qa_by_type(ann.qa)
            assert qa["has_change"].answer == "no"
            assert qa["count_regions"].answer == "0"
            assert qa["change_ratio"].answer == "none"
            assert not {"location", "largest_change", "change_to_what"} & set(qa)
    # change captions never read as "no change"
    ann = TemplateAnnotator(captions_per_sample=20).annotate("k", hand_facts())
    assert not any(is_no_change_caption(c) for c in ann.captions)


def test_epsilon_turns_small_change_into_no_change() -> None:
    facts = hand_facts()  # 11.8% changed
    ann = TemplateAnnotator(no_change_epsilon=0.2).annotate("k", facts)
    assert all(is_no_change_caption(c) for c in ann.captions)
    assert qa_by_type(ann.qa)["has_change"].answer == "no"
    assert check_captions(ann.captions, facts, no_change_epsilon=0.2) == []
    for item in ann.qa:
        assert check_qa_item(item, facts, no_change_epsilon=0.2) == []
    # the same captions contradict the facts when no epsilon is allowed
    assert check_captions(ann.captions, facts)


def test_class_question_balance() -> None:
    rng = np.random.default_rng(11)
    annotator = TemplateAnnotator()
    answers: dict[str, list[str]] = {"class_increase": [], "class_decrease": []}
    n = 0
    while n < 200:  # samples with change: without any, no class can have grown or shrunk
        facts = random_facts(rng, binary=False, p_change=1.0)
        if not facts.has_change:
            continue
        qa = qa_by_type(annotator.annotate(f"s{n}", facts).qa)
        for kind, got in answers.items():
            got.append(qa[kind].answer)
        n += 1
    for kind, got in answers.items():
        share = got.count("yes") / len(got)
        assert 0.35 <= share <= 0.65, (kind, share)


def test_binary_facts_have_no_class_questions() -> None:
    rng = np.random.default_rng(5)
    for i in range(20):
        facts = random_facts(rng, binary=True, p_change=1.0)
        ann = TemplateAnnotator().annotate(f"b{i}", facts)
        assert not CLASS_TYPES & {q.type for q in ann.qa}
        assert all(not mentioned_classes(c) for c in ann.captions)


def test_annotator_rejects_bad_settings() -> None:
    with pytest.raises(AnnotatorConfigError, match="captions_per_sample"):
        TemplateAnnotator(captions_per_sample=0)
    with pytest.raises(AnnotatorConfigError, match="no_change_epsilon"):
        TemplateAnnotator(no_change_epsilon=1.0)


# --- claim checker ------------------------------------------------------------------------


def _item(kind: str, question: str, answer: str, **evidence: str | int | float) -> QAItem:
    """A QA item; grounded on no region unless ``region_ids`` is given (these tests check
    answers; tests/test_grounding.py checks grounding)."""
    return QAItem.model_validate(
        {
            "type": kind,
            "question": question,
            "answer": answer,
            "evidence": {"region_ids": [], **evidence},
        }
    )


def test_claims_catch_wrong_answers() -> None:
    facts = hand_facts()
    assert check_qa_item(_item("count_regions", "How many regions?", "2"), facts) == []
    assert check_qa_item(_item("count_regions", "How many regions?", "3"), facts) == [
        "count_regions: answer 3 but facts have 2 regions"
    ]
    assert check_qa_item(_item("change_ratio", "How much changed?", "10-25%"), facts) == []
    (msg,) = check_qa_item(_item("change_ratio", "How much changed?", "1-5%"), facts)
    assert "bin '10-25%'" in msg
    assert check_qa_item(_item("has_change", "Any change?", "yes"), facts) == []
    assert check_qa_item(_item("has_change", "Any change?", "yes"), no_change_facts())
    (msg,) = check_qa_item(_item("has_change", "Any change?", "no"), facts)
    assert msg.startswith("has_change: answer 'no'")
    assert check_qa_item(_item("location", "Where?", "north-west"), facts) == []
    (msg,) = check_qa_item(_item("location", "Where?", "south-east"), facts)
    assert "largest region is in the north-west" in msg
    assert check_qa_item(_item("location", "Where?", "somewhere"), facts)


def test_claims_catch_wrong_yes_and_wrong_class() -> None:
    facts = hand_facts()
    ok = _item("class_increase", "Did the area of water increase?", "yes", **{"class": "water"})
    assert check_qa_item(ok, facts) == []
    wrong_yes = _item("class_increase", "Did the area of tree cover increase?", "yes")
    (msg,) = check_qa_item(wrong_yes, facts)
    assert "tree_cover went from 9 to 0 pixels" in msg
    assert check_qa_item(_item("class_decrease", "Has tree cover shrunk?", "yes"), facts) == []
    # evidence that disagrees with the question
    mixed = _item("class_increase", "Did the area of water increase?", "yes", **{"class": "bare"})
    assert any("question asks about water" in m for m in check_qa_item(mixed, facts))
    assert (
        check_qa_item(_item("change_to_what", "What did grassland turn into?", "water"), facts)
        == []
    )
    (msg,) = check_qa_item(
        _item("change_to_what", "What did grassland turn into?", "cropland"), facts
    )
    assert "grassland mostly became water" in msg
    bad = _item("largest_change", "Main change?", "grassland to water")
    assert "tree cover to built-up area" in check_qa_item(bad, facts)[0]
    # class questions on a binary label are wrong by construction
    binary = random_facts(np.random.default_rng(0), binary=True, p_change=1.0)
    assert check_qa_item(_item("class_increase", "Did the area of water increase?", "no"), binary)


def test_qa_registry_is_the_one_list_of_types() -> None:
    """Every schema QA type has behaviour; required types apply always; groups match kinds."""
    from geodelta.annotators.temporal import TEMPORAL_REGISTRY  # the sequence types (issue 15)

    assert set(REGISTRY) == set(PAIR_QA_TYPES)
    assert set(REGISTRY) | set(TEMPORAL_REGISTRY) == set(QA_TYPES)
    assert REQUIRED_QA_TYPES == ("has_change", "change_ratio", "count_regions")
    assert YES_NO_QA_TYPES == ("has_change", "class_increase", "class_decrease")
    assert all(REGISTRY[t].answer_kind == "yes_no" for t in YES_NO_QA_TYPES)
    rng = np.random.default_rng(5)
    for i in range(40):
        facts = random_facts(rng, binary=i % 3 == 0, p_change=0.7)
        types = types_for(facts)
        assert types[: len(REQUIRED_QA_TYPES)] == list(REQUIRED_QA_TYPES)
        ann = TemplateAnnotator().annotate(f"k{i}_20200101_20210101", facts)
        assert [q.type for q in ann.qa] == types  # the template asks in registry order
        for q in ann.qa:  # the evidence an LLM answer gets is the template's evidence
            assert REGISTRY[q.type].evidence(q.question, facts) == (dict(q.evidence), [])


def test_claims_catch_wrong_evidence() -> None:
    item = _item("has_change", "Any change?", "yes", changed_pixels=18, valid_pixels=144)
    assert check_qa_item(item, hand_facts()) == [
        "has_change: evidence changed_pixels=18 but facts have 17"
    ]


def test_caption_claims() -> None:
    facts = hand_facts()  # 0.09 ha tree->built_up, 0.08 ha grass->water, 0.17 ha, 11.8 %
    good = [
        "About 0.09 ha of tree cover became built-up area.",
        "Changes cover 0.17 ha, about 12% of the tile.",
        "Two separate regions changed; the largest is in the north-west.",
        "Grassland turned into water (0.08 ha).",
    ]
    assert check_captions(good, facts) == []
    (msg,) = check_captions(["About 0.9 ha of tree cover became built-up area."], facts)
    assert "'0.9 ha' matches no area" in msg
    (msg,) = check_captions(["Changes cover about 30% of the tile."], facts)
    assert "'30%' matches no share" in msg
    (msg,) = check_captions(["Three regions changed."], facts)
    assert "facts have 2 regions" in msg
    (msg,) = check_captions(["There is no change between the two dates."], facts)
    assert "says 'no change'" in msg
    (msg,) = check_captions(["Some cropland became bare ground."], facts)
    assert "names bare, cropland" in msg
    (msg,) = check_captions(["A new road appears in the east."], no_change_facts())
    assert "does not say so" in msg
    assert (
        check_captions(["The scene is unchanged between the two dates."], no_change_facts()) == []
    )
