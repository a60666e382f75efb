"""Grounded change (issue 18): regions.png and the region table, grounded QA, the checker.

Every box is re-derived from the instance image (``regions.png`` or :func:`region_image`),
never from the facts the annotator used: on >= 200 random cases, on the demo release and (in
tests/test_e2e_oscd.py) on the real OSCD release.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from geodelta.annotators.caption_grounding import check_grounded_caption, ground_captions
from geodelta.annotators.claims import check_grounding, check_qa_item, check_text
from geodelta.annotators.qa.grounding import parse_boxes, parse_ids
from geodelta.annotators.template import TemplateAnnotator
from geodelta.pipelines.stages.label import compute_facts, region_image, region_records
from geodelta.schemas import ChangeFacts, QAItem, SampleMeta
from geodelta.schemas.qa import GROUNDED_QA_TYPES
from geodelta.schemas.records import normalised_box
from tests.test_template import hand_facts

TRANSFORM = (10.0, 0.0, 440000.0, 0.0, -10.0, 5420000.0)
CRS = "EPSG:32631"


def boxes_from_image(image: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """Region id -> pixel-edge box (x0, y0, x1, y1), straight from an instance image."""
    out = {}
    for rid in np.unique(image):
        if rid == 0:
            continue
        rows, cols = np.nonzero(image == rid)
        out[int(rid)] = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    return out


def assert_grounded(
    qa: list[QAItem], image: np.ndarray, facts: ChangeFacts, regions: list[dict[str, Any]]
) -> int:
    """Every QA item names existing regions, every box is re-derived from ``image``; returns
    the number of boxes checked."""
    shape = image.shape
    px = boxes_from_image(image)
    norm = {rid: normalised_box(b, shape) for rid, b in px.items()}
    assert sorted(px) == list(range(1, len(px) + 1)) == [r["id"] for r in regions]
    for r in regions:
        assert tuple(r["bbox_px"]) == px[r["id"]]
        assert tuple(r["box"]) == norm[r["id"]]
        assert r["pixels"] == int((image == r["id"]).sum())
    checked = 0
    for item in qa:
        ids = item.evidence["region_ids"]
        assert isinstance(ids, list) and set(ids) <= set(px), item
        if "boxes_px" in item.evidence:
            assert item.evidence["boxes_px"] == [list(px[i]) for i in ids], item
            checked += len(ids)
        if item.type in ("refer_change", "count_boxes"):
            assert sorted(parse_boxes(item.answer)) == sorted(norm[i] for i in ids), item
            checked += len(ids)
        if item.type == "what_changed_here":
            (box,) = parse_boxes(item.question)
            assert all(norm[i] == box for i in ids) and ids, item
            checked += 1
        if item.type == "segment_change":
            assert parse_ids(item.answer) == ids
            union = np.isin(image, ids)
            assert union.sum() == sum(r["pixels"] for r in regions if r["id"] in ids)
        assert check_qa_item(item, facts) == [], item
    return checked


def test_region_image_ids_are_the_components() -> None:
    facts = hand_facts()
    mask = np.zeros((12, 12), np.uint8)
    mask[0:3, 0:3] = 1
    mask[9:11, 7:11] = 2
    image = region_image(mask)
    assert image.dtype == np.uint16
    assert boxes_from_image(image) == {1: (0, 0, 3, 3), 2: (7, 9, 11, 11)}
    regions = region_records(facts, crs=CRS, transform=TRANSFORM)
    assert [(r.id, r.bbox_px, r.box, r.position) for r in regions] == [
        (1, (0, 0, 3, 3), (0, 0, 250, 250), "north-west"),
        (2, (7, 9, 11, 11), (583, 750, 917, 917), "south-east"),
    ]
    r1 = regions[0]
    assert r1.area_m2 == 900.0 and r1.pixels == 9
    lon0, lat0, lon1, lat1 = r1.bbox_lonlat
    assert 2.0 < lon0 < lon1 < 2.3 and 48.8 < lat0 < lat1 < 49.0
    assert lon0 < r1.centroid_lonlat[0] < lon1 and lat0 < r1.centroid_lonlat[1] < lat1
    # 30 m x 30 m: about 0.0004 degree of longitude at 49 N
    assert 0.0003 < lon1 - lon0 < 0.0005


def test_ids_break_size_ties_in_raster_order() -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[4, 4] = mask[0, 5] = mask[2, 0] = 7  # three 1-pixel regions
    image = region_image(mask)
    assert image[0, 5] == 1 and image[2, 0] == 2 and image[4, 4] == 3
    assert np.array_equal(region_image(mask), image)  # same mask, same ids


def test_two_hundred_random_cases_rederive_every_box() -> None:
    rng = np.random.default_rng(18)
    annotator = TemplateAnnotator()
    boxes = spans = 0
    grounded_types: set[str] = set()
    for i in range(240):
        mask = _mask_of(rng, i)
        facts = compute_facts(
            mask,
            np.ones(mask.shape, bool),
            pixel_area_m2=100.0,
            min_region_px=1,
            binary=i % 4 == 0,
            lc_before=None if i % 4 == 0 else _lc(mask, before=True),
            lc_after=None if i % 4 == 0 else _lc(mask, before=False),
        )
        image = region_image(mask)
        ann = annotator.annotate(f"cell{i}_20200101_20210101", facts)
        regions = [
            r.model_dump(mode="json") for r in region_records(facts, crs=CRS, transform=TRANSFORM)
        ]
        boxes += assert_grounded(list(ann.qa), image, facts, regions)
        for g in ground_captions(ann.captions, facts):
            assert check_grounded_caption(g, facts) == [], (i, g)
            spans += len(g.spans)
        grounded_types |= {q.type for q in ann.qa} & set(GROUNDED_QA_TYPES)
    assert grounded_types == set(GROUNDED_QA_TYPES)
    assert boxes >= 200 and spans >= 200


def _mask_of(rng: np.random.Generator, i: int) -> np.ndarray:
    """A 32x40 mask with 0-6 random rectangles of random transition codes."""
    mask = np.zeros((32, 40), np.uint8)
    for _ in range(int(rng.integers(0, 7))):
        r, c = int(rng.integers(0, 30)), int(rng.integers(0, 38))
        h, w = int(rng.integers(1, 8)), int(rng.integers(1, 9))
        mask[r : r + h, c : c + w] = 255 if i % 4 == 0 else int(rng.choice([2, 14, 27, 40]))
    return mask


def _lc(mask: np.ndarray, *, before: bool) -> np.ndarray:
    """Land-cover maps consistent with transition codes (code = 1 + (a-1)*N + (b-1))."""
    from geodelta.schemas.classes import N_CLASSES

    code = mask.astype(np.int64)
    a = 1 + (code - 1) // N_CLASSES
    b = 1 + (code - 1) % N_CLASSES
    base = np.where(mask > 0, a if before else b, 1)
    return base.astype(np.uint8)


# --- the checker: wrong boxes, ids, transitions and positions are caught --------------------


def _item(facts: ChangeFacts, kind: str) -> QAItem:
    ann = TemplateAnnotator().annotate("k_20200101_20210101", facts)
    return next(q for q in ann.qa if q.type == kind)


def test_checker_catches_a_wrong_box() -> None:
    facts = hand_facts()
    item = _item(facts, "count_boxes")
    assert item.answer == "2: [0, 0, 250, 250], [583, 750, 917, 917]"
    bad = item.model_copy(update={"answer": "2: [0, 0, 250, 251], [583, 750, 917, 917]"})
    assert any("but the regions' boxes are" in m for m in check_qa_item(bad, facts))
    moved = dict(item.evidence) | {"boxes_px": [[0, 0, 3, 4], [7, 9, 11, 11]]}
    complaints = check_grounding(item.model_copy(update={"evidence": moved}), facts)
    assert complaints == [
        "count_boxes: boxes_px [[0, 0, 3, 4], [7, 9, 11, 11]] but regions [1, 2] have boxes "
        "[[0, 0, 3, 3], [7, 9, 11, 11]]"
    ]


def test_checker_catches_a_missing_region_and_ungrounded_evidence() -> None:
    facts = hand_facts()
    item = _item(facts, "has_change")
    ghost = item.model_copy(update={"evidence": dict(item.evidence) | {"region_ids": [1, 5]}})
    assert "has_change: region 5 does not exist (regions: 1..2)" in check_qa_item(ghost, facts)
    bare = {k: v for k, v in item.evidence.items() if k != "region_ids"}
    (complaint,) = check_grounding(item.model_copy(update={"evidence": bare}), facts)
    assert "not grounded" in complaint


def test_checker_catches_a_wrong_transition_or_position_of_a_region() -> None:
    facts = hand_facts()
    largest = _item(facts, "largest_change")
    assert largest.evidence["region_ids"] == [1]
    wrong = largest.model_copy(update={"evidence": dict(largest.evidence) | {"region_ids": [2]}})
    assert (
        "largest_change: region 2 went grassland to water, not tree_cover to built_up"
        in check_qa_item(wrong, facts)
    )
    seg = _item(facts, "segment_change")
    pos = seg.evidence["position"]
    other = 2 if seg.evidence["region_ids"] == [1] else 1
    moved = seg.model_copy(update={"evidence": dict(seg.evidence) | {"region_ids": [other]}})
    assert any(f"not the {pos}" in m for m in check_qa_item(moved, facts))
    loc = _item(facts, "location")
    wrong_loc = loc.model_copy(update={"evidence": dict(loc.evidence) | {"region_ids": [2]}})
    assert (
        "location: no region of the evidence lies in the north-west (region 2 in the south-east)"
        in check_qa_item(wrong_loc, facts)
    )


def test_what_changed_here_reads_the_box_of_the_question() -> None:
    facts = hand_facts()
    item = QAItem(
        type="what_changed_here",
        question="What changed in the area [583, 750, 917, 917]?",
        answer="grassland to water",
        evidence={"from_class": "grassland", "to_class": "water", "region_ids": [2],
                  "boxes_px": [[7, 9, 11, 11]]},
    )  # fmt: skip
    assert check_qa_item(item, facts) == []
    wrong = item.model_copy(update={"answer": "tree cover to built-up area"})
    assert any("went grassland to water" in m for m in check_qa_item(wrong, facts))
    nowhere = item.model_copy(update={"question": "What changed in [10, 10, 20, 20]?"})
    assert any("is the box of no region" in m for m in check_qa_item(nowhere, facts))
    # free text: a box must be a region's box, and its numbers are no quantities
    assert check_text("Look at [583, 750, 917, 917].", facts, role="question") == []
    assert check_text("Look at [1, 2, 3, 4].", facts, role="question") == [
        "the box [1, 2, 3, 4] is the box of no region"
    ]


# --- the demo release ----------------------------------------------------------------------


def _png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


def assert_release_grounded(samples: list[dict[str, Any]]) -> tuple[int, int]:
    """Every sample of a release read with plain webdataset: (QA items, boxes) checked."""
    n_qa = n_boxes = 0
    for s in samples:
        meta = SampleMeta.model_validate_json(s["json"])
        image = _png(s["regions.png"])
        assert image.dtype == np.uint16 and image.shape == tuple(meta.shape), meta.key
        mask = _png(s["mask.png"])
        assert np.array_equal(image > 0, mask > 0), meta.key
        assert np.array_equal(region_image(mask), image), meta.key
        qa = [QAItem.model_validate(q) for q in json.loads(s["qa.json"])]
        regions = [r.model_dump(mode="json") for r in meta.regions]
        assert [r["id"] for r in regions] == [
            c.id for c in sorted(meta.facts.components, key=lambda c: c.id)
        ]
        n_boxes += assert_grounded(qa, image, meta.facts, regions)
        n_qa += len(qa)
        # grounded captions: the same texts as captions.json, every span true of its regions
        captions = json.loads(s["captions.json"])
        assert [g.text for g in meta.captions_grounded] == captions, meta.key
        for g in meta.captions_grounded:
            assert check_grounded_caption(g, meta.facts) == [], (meta.key, g)
    return n_qa, n_boxes


@pytest.mark.slow
def test_demo_release_is_grounded(demo_release: Any) -> None:
    import webdataset as wds

    shards = sorted(str(p) for p in (demo_release.release_dir / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    n_qa, n_boxes = assert_release_grounded(samples)
    assert n_qa > 0 and n_boxes > 0
    types = {q["type"] for s in samples for q in json.loads(s["qa.json"])}
    assert set(GROUNDED_QA_TYPES) <= types


@pytest.mark.slow
def test_loader_decodes_regions(demo_release: Any) -> None:
    from geodelta.data import load

    sample = next(iter(load(demo_release.release_dir, split=None, decode="numpy")))
    regions = sample["regions"]
    assert regions.dtype == np.int64 and regions.shape == sample["mask"].shape
    assert np.array_equal(regions > 0, sample["mask"] > 0)
    assert int(regions.max()) == len(sample["meta"]["regions"])


@pytest.mark.slow
def test_report_grounding_section(demo_release: Any) -> None:
    from geodelta.pipelines.report.data import load_release
    from geodelta.pipelines.report.grounding import grounding_section
    from geodelta.pipelines.report.render import render_report

    section = grounding_section(load_release(demo_release.release_dir))
    d = section.data
    assert not section.empty and d["qa"] > 0
    assert d["qa_grounded"] == d["qa"] and d["qa_grounded_pct"] == "100.0%"
    assert sum(int(r[1]) for r in d["region_table"].rows) == d["samples"]
    assert sum(int(r[1]) for r in d["box_table"].rows) == d["regions"] > 0
    html = render_report(demo_release.release_dir)
    assert "<section id='grounding'>" in html
    assert "regions of change in" in html


def test_caption_spans_point_at_their_regions() -> None:
    facts = hand_facts()
    text = (
        "Two distinct patches show change; the largest, in the north-west, went from tree "
        "cover to built-up area."
    )
    (g,) = ground_captions([text], facts)
    assert [(text[sp.start : sp.end], sp.regions) for sp in g.spans] == [
        ("Two distinct patches", (1, 2)),
        ("north-west", (1,)),
        ("tree cover to built-up area", (1,)),
    ]
    assert check_grounded_caption(g, facts) == []
    wrong = g.model_copy(update={"spans": (g.spans[1].model_copy(update={"regions": (2,)}),)})
    assert check_grounded_caption(wrong, facts) == [
        "span 54:64 'north-west': region 2 lies in the south-east"
    ]
