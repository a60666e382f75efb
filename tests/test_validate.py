"""Rule checks before sharding (pipelines/stages/validate.py): one clean sample, one break per rule."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from geodelta.annotators.template import TemplateAnnotator
from geodelta.pipelines.stages.label import region_records
from geodelta.pipelines.stages.labels.landcover import label_from_landcover
from geodelta.pipelines.stages.sample import Sample
from geodelta.pipelines.stages.validate import RULES, validate_sample, validate_stage
from geodelta.schemas import (
    Annotation,
    BuildConfig,
    ChangeComponent,
    ChangeFacts,
    CoregResult,
    QAItem,
    QuarantineRecord,
    SampleMeta,
    ScenePair,
    SceneRef,
    TileJob,
    TransitionStat,
    parse_config,
    sample_key,
)
from geodelta.schemas.classes import CLASS_INDEX

CELL = "32631_0044_0542"
T0 = datetime(2020, 6, 1, 10, 30, tzinfo=UTC)
T1 = datetime(2021, 6, 3, 10, 30, tzinfo=UTC)
SHAPE = (16, 16)
CODE = 5  # tree_cover -> built_up


def make_cfg(coregistration: dict[str, Any] | None = None, **validation: Any) -> BuildConfig:
    return parse_config(
        {
            "name": "test",
            "version": "0.0.1",
            "licence": "CC-BY-4.0",
            "attribution": "test attribution",
            "aoi": {"bbox": [2.0, 48.0, 2.1, 48.1]},
            "catalog": {"url": "catalog.json"},
            "imagery": {
                "collection": "s2",
                "bands": ["B02", "B03", "B04"],
                "rgb": ["B04", "B03", "B02"],
            },
            "time": {"t0": ["2020-05-01", "2020-09-30"], "t1": ["2021-05-01", "2021-09-30"]},
            "labels": {"kind": "landcover", "collection": "esa-worldcover"},
            "output": {"dir": "release"},
            "validation": validation,
            "coregistration": coregistration or {},
        }
    )


def make_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[1:3, 1:3] = CODE  # 4 px, centroid (1.5, 1.5): north-west
    return mask


def make_facts() -> ChangeFacts:
    return ChangeFacts(
        shape=SHAPE,
        pixel_area_m2=100.0,
        valid_pixels=256,
        changed_pixels=4,
        changed_fraction=4 / 256,
        binary=False,
        transitions=(
            TransitionStat(
                code=CODE, from_class="tree_cover", to_class="built_up", pixels=4, area_m2=400.0
            ),
        ),
        class_pixels_before={"tree_cover": 4, "cropland": 252},
        class_pixels_after={"built_up": 4, "cropland": 252},
        components=(
            ChangeComponent(
                id=1,
                code=CODE,
                from_class="tree_cover",
                to_class="built_up",
                pixels=4,
                area_m2=400.0,
                centroid=(1.5, 1.5),
                position="north-west",
                bbox=(1, 1, 2, 2),
            ),
        ),
        min_region_px=2,
    )


def make_annotation() -> Annotation:
    qa = [
        (
            "has_change",
            "Has anything changed?",
            "yes",
            {"changed_pixels": 4, "valid_pixels": 256, "region_ids": [1]},
        ),
        (
            "change_ratio",
            "How much changed?",
            "1-5%",
            {"changed_fraction": 4 / 256, "region_ids": [1]},
        ),
        ("count_regions", "How many regions changed?", "1", {"regions": 1, "region_ids": [1]}),
        (
            "location",
            "Where is the largest change?",
            "north-west",
            {"component": 1, "region_ids": [1]},
        ),
        (
            "largest_change",
            "What is the main change?",
            "tree cover to built-up area",
            {"pixels": 4, "region_ids": [1]},
        ),
        (
            "class_increase",
            "Did the area of built-up area increase?",
            "yes",
            {"class": "built_up", "pixels_before": 0, "pixels_after": 4, "region_ids": [1]},
        ),
    ]
    return Annotation(
        captions=(
            "About 0.04 ha of tree cover became built-up area.",
            "One region changed, in the north-west of the tile.",
            "Changes cover about 1.6% of the scene.",
            "New built-up area appears in the north-west, where there was tree cover.",
            "The main change is tree cover turning into built-up area.",
        ),
        qa=tuple(
            QAItem.model_validate({"type": t, "question": q, "answer": a, "evidence": e})
            for t, q, a, e in qa
        ),
        annotator="template",
        annotator_version="1.0.0",
    )


def make_meta(facts: ChangeFacts | None = None) -> SampleMeta:
    return SampleMeta(
        key=sample_key(CELL, T0, T1),
        cell_id=CELL,
        region="aoi",
        split="train",
        collection="sentinel-2-l2a",
        before_item="S2A_before",
        after_item="S2B_after",
        t0=T0,
        t1=T1,
        gap_days=(T1 - T0).days,
        crs="EPSG:32631",
        transform=(10.0, 0.0, 440000.0, 0.0, -10.0, 5420000.0),
        shape=SHAPE,
        bbox_lonlat=(2.18, 48.93, 2.19, 48.94),
        bands=("B02", "B03", "B04"),
        dn_scale=0.0001,
        dn_offset=0.0,
        before_clear=0.99,
        after_clear=None,
        before_cloud_cover=3.0,
        after_cloud_cover=None,
        before_valid=1.0,
        after_valid=0.99,
        coreg=CoregResult(shift_px=(0.4, -0.3), residual_px=0.05, error=0.2, applied=True),
        label_source="landcover:esa-worldcover",
        label_items=("wc2020", "wc2021"),
        facts=facts or make_facts(),
        annotator="template",
        annotator_version="1.0.0",
        prompt_version=None,
        model=None,
        tokens_in=0,
        tokens_out=0,
        cost_usd=0.0,
        licence="CC-BY-4.0",
        attribution="test attribution",
        code_version="0.1.0",
        shaping_hash="0" * 64,
        regions=region_records(
            facts or make_facts(),
            crs="EPSG:32631",
            transform=(10.0, 0.0, 440000.0, 0.0, -10.0, 5420000.0),
        ),
    )


Case = tuple[SampleMeta, Annotation, np.ndarray, BuildConfig]


def clean_case() -> Case:
    return make_meta(), make_annotation(), make_mask(), make_cfg()


def _meta(**update: Any) -> Callable[[Case], Case]:
    """Break the metadata (model_copy skips validation, like a corrupted record would)."""

    def apply(case: Case) -> Case:
        meta, ann, mask, cfg = case
        return meta.model_copy(update=update), ann, mask, cfg

    return apply


def _ann(**update: Any) -> Callable[[Case], Case]:
    def apply(case: Case) -> Case:
        meta, ann, mask, cfg = case
        return meta, ann.model_copy(update=update), mask, cfg

    return apply


def _mask(edit: Callable[[np.ndarray], np.ndarray]) -> Callable[[Case], Case]:
    def apply(case: Case) -> Case:
        meta, ann, mask, cfg = case
        return meta, ann, edit(mask.copy()), cfg

    return apply


def _set(mask: np.ndarray, where: tuple[Any, ...], value: int) -> np.ndarray:
    mask[where] = value
    return mask


def _replace_qa(kind: str, **update: Any) -> Callable[[Case], Case]:
    def apply(case: Case) -> Case:
        meta, ann, mask, cfg = case
        qa = tuple(q.model_copy(update=update) if q.type == kind else q for q in ann.qa)
        return meta, ann.model_copy(update={"qa": qa}), mask, cfg

    return apply


CAPTIONS = make_annotation().captions

BREAKS: dict[str, list[Callable[[Case], Case]]] = {
    "key_format": [
        _meta(key=f"{CELL}_20200601_20210604"),
        _meta(key="32631.0044_20200601_20210603"),
    ],
    "time_order": [
        _meta(t0=T1, t1=T0, key=sample_key(CELL, T1, T0)),
        _meta(t1=T0, key=sample_key(CELL, T0, T0)),
    ],
    "bbox_lonlat": [
        _meta(bbox_lonlat=(2.19, 48.93, 2.18, 48.94)),
        _meta(bbox_lonlat=(2.18, 48.93, 2.19, 91.0)),
        _meta(bbox_lonlat=(float("nan"), 48.93, 2.19, 48.94)),
    ],
    "crs": [_meta(crs="32631"), _meta(crs="epsg:32631"), _meta(crs="EPSG:")],
    "valid_fraction": [_meta(after_valid=0.9)],
    "coreg_applied": [
        # below coregistration.min_shift_px=0.05, yet marked applied
        _meta(coreg=CoregResult(shift_px=(0.03, 0.0), residual_px=0.01, error=0.2, applied=True)),
        # large enough to be applied, yet marked not applied
        _meta(coreg=CoregResult(shift_px=(0.4, -0.3), residual_px=0.5, error=0.2, applied=False)),
        # not applied: what is left is the shift itself, not another residual
        _meta(coreg=CoregResult(shift_px=(0.03, 0.0), residual_px=0.2, error=0.2, applied=False)),
        _meta(
            coreg=CoregResult(
                shift_px=(float("nan"), 0.0), residual_px=0.05, error=0.2, applied=True
            )
        ),
    ],
    "caption_count": [_ann(captions=CAPTIONS[:4])],
    "caption_length": [
        _ann(captions=(*CAPTIONS[:4], "Changed.")),
        _ann(captions=(*CAPTIONS[:4], "The north-west changed. " * 20)),
    ],
    "qa_types": [
        lambda c: (c[0], c[1].model_copy(update={"qa": c[1].qa[:2] + c[1].qa[3:]}), c[2], c[3])
    ],
    "qa_answers": [
        _replace_qa("count_regions", answer="2"),
        _replace_qa("change_ratio", answer="5-10%"),
        _replace_qa("location", answer="south-east"),
        _replace_qa("class_increase", answer="no"),
    ],
    "caption_claims": [
        _ann(captions=(*CAPTIONS[:4], "About 0.4 ha of tree cover became built-up area.")),
        _ann(captions=(*CAPTIONS[:4], "There is no change between the two dates.")),
        _ann(captions=(*CAPTIONS[:4], "Some grassland turned into water in the north-west.")),
    ],
    "mask_codes": [
        _mask(lambda m: np.where(m > 0, 1, 0).astype(np.uint8)),  # code 1 = tree -> tree
        _mask(lambda m: np.where(m > 0, 200, 0).astype(np.uint8)),  # beyond 121
    ],
    "mask_facts": [
        _mask(lambda m: _set(m, (10, 10), CODE)),  # 5 changed pixels, facts say 4
        _mask(lambda m: np.pad(m, ((0, 0), (0, 1)))),  # wrong shape
    ],
    "licence": [_meta(licence=""), _meta(attribution="   ")],
    "regions": [
        _meta(regions=()),  # region 1 of regions.png has no record
        lambda case: _meta(
            regions=(case[0].regions[0].model_copy(update={"bbox_px": (0, 0, 3, 3)}),)
        )(case),
        lambda case: _meta(
            regions=(*case[0].regions, case[0].regions[0].model_copy(update={"id": 7}))
        )(case),
    ],
}


def test_every_rule_has_a_break() -> None:
    assert set(BREAKS) == {name for name, _ in RULES}


def test_clean_sample_passes() -> None:
    assert validate_sample(*clean_case()) == []


@pytest.mark.parametrize(
    ("rule", "index"), [(rule, i) for rule, breaks in BREAKS.items() for i in range(len(breaks))]
)
def test_each_break_fails_its_rule_only(rule: str, index: int) -> None:
    failures = validate_sample(*BREAKS[rule][index](clean_case()))
    assert [name for name, _ in failures] == [rule], failures
    assert failures[0][1]  # a detail for the human


def test_details_name_limits_and_values() -> None:
    (fail,) = validate_sample(*_meta(after_valid=0.9)(clean_case()))
    assert fail == ("valid_fraction", "after_valid=0.9000 < pairing.min_valid_fraction=0.98")
    (fail,) = validate_sample(*_replace_qa("count_regions", answer="2")(clean_case()))
    assert fail == ("qa_answers", "count_regions: answer 2 but facts have 1 regions")
    meta, ann, mask, _ = clean_case()
    small = CoregResult(shift_px=(0.03, 0.0), residual_px=0.01, error=0.2, applied=True)
    (fail,) = validate_sample(meta.model_copy(update={"coreg": small}), ann, mask, make_cfg())
    assert fail == (
        "coreg_applied",
        "shift (dy=0.03, dx=0.0) of 0.030000 px is marked applied, but shifts below "
        "coregistration.min_shift_px=0.05 are not applied",
    )
    # a config that applies smaller shifts lets the same record through
    looser = make_cfg({"min_shift_px": 0.01})
    assert validate_sample(meta.model_copy(update={"coreg": small}), ann, mask, looser) == []
    # an unapplied shift whose residual is the shift (to the recorded precision) holds
    kept = CoregResult(shift_px=(0.0300004, 0.0), residual_px=0.03, error=0.2, applied=False)
    assert validate_sample(meta.model_copy(update={"coreg": kept}), ann, mask, make_cfg()) == []


def test_coregister_stage_records_hold_the_coreg_rule() -> None:
    """The real path: what the coregister stage records (applied or not) passes coreg_applied,
    and the same record with its flag flipped does not."""
    from geodelta.pipelines.stages.coregister import coregister
    from tests.test_coregister import make_sample as coreg_sample
    from tests.test_coregister import shifted_pair

    meta, ann, mask, cfg = clean_case()
    for displacement, applied in (((0.3, -1.7), True), ((0.02, 0.0), False)):
        out = coregister(
            coreg_sample(*shifted_pair(displacement)), cfg.coregistration, band_index=1
        )
        assert isinstance(out, Sample) and out.coreg is not None and out.coreg.applied is applied
        recorded = meta.model_copy(update={"coreg": out.coreg})
        assert validate_sample(recorded, ann, mask, cfg) == []
        flipped = meta.model_copy(
            update={"coreg": out.coreg.model_copy(update={"applied": not applied})}
        )
        assert [name for name, _ in validate_sample(flipped, ann, mask, cfg)] == ["coreg_applied"]


def test_fractions_are_bounded_by_the_record() -> None:
    """Why no rule checks the valid fractions: SampleMeta refuses one outside [0, 1] (NaN too).

    (The clear fractions come from the pair stage: a mean of a clear-pixel mask, kept only at or
    above pairing.min_clear_fraction, or None.)
    """
    data = make_meta().model_dump()
    for bad in (1.2, -0.1, float("nan")):
        with pytest.raises(ValidationError, match="after_valid"):
            SampleMeta.model_validate({**data, "after_valid": bad})


def make_sample_record(mask: np.ndarray | None, annotation: Annotation | None) -> Sample:
    job = TileJob(
        cell_id=CELL,
        crs="EPSG:32631",
        transform=(10.0, 0.0, 440000.0, 0.0, -10.0, 5420000.0),
        shape=SHAPE,
        bbox_lonlat=(2.18, 48.93, 2.19, 48.94),
        t0_window=(T0, T0),
        t1_window=(T1, T1),
    )

    def scene(item: str, when: datetime) -> SceneRef:
        return SceneRef(
            collection="s2", item_id=item, datetime=when, bbox_lonlat=job.bbox_lonlat, assets={}
        )

    pair = ScenePair(
        job=job, before=scene("a", T0), after=scene("b", T1), before_clear=1.0, after_clear=1.0
    )
    bands = np.random.default_rng(0).uniform(0.02, 0.3, (3, *SHAPE)).astype(np.float32)
    return Sample(pair=pair, before=bands, after=bands.copy(), mask=mask, annotation=annotation)


def test_validate_stage_passes_and_quarantines() -> None:
    meta, ann, mask, cfg = clean_case()
    sample = make_sample_record(mask, ann)
    assert validate_stage(sample, meta, cfg) is sample

    broken_meta = meta.model_copy(update={"crs": "32631", "licence": ""})
    record = validate_stage(sample, broken_meta, cfg)
    assert isinstance(record, QuarantineRecord)
    assert (record.stage, record.reason, record.key, record.cell_id) == (
        "validate",
        "crs",
        meta.key,
        CELL,
    )
    assert record.detail.startswith("crs: crs '32631' is not of the form 'EPSG:<code>'; licence: ")

    record = validate_stage(make_sample_record(None, ann), meta, cfg)
    assert isinstance(record, QuarantineRecord) and record.reason == "incomplete_sample"
    assert "mask" in record.detail


def test_label_and_template_output_passes_validation() -> None:
    """The real path: label stage facts + template annotation satisfy every rule."""
    lc_before = np.full(SHAPE, CLASS_INDEX["cropland"], dtype=np.uint8)
    lc_before[1:4, 1:4] = CLASS_INDEX["tree_cover"]
    lc_before[10:14, 9:15] = CLASS_INDEX["grassland"]
    lc_after = lc_before.copy()
    lc_after[1:4, 1:4] = CLASS_INDEX["built_up"]
    lc_after[10:14, 9:12] = CLASS_INDEX["water"]
    lc_after[12:14, 12:15] = CLASS_INDEX["bare"]
    sample = label_from_landcover(
        make_sample_record(None, None),
        lc_before,
        lc_after,
        min_region_px=2,
        source="landcover:x",
        items=(),
    )
    assert sample.facts is not None and sample.mask is not None
    cfg = make_cfg()
    for seed in range(10):
        ann = TemplateAnnotator(seed=seed).annotate(sample.key, sample.facts)
        meta = make_meta(sample.facts)
        assert validate_sample(meta, ann, sample.mask, cfg) == []
        annotated = dataclasses.replace(sample, annotation=ann)
        assert validate_stage(annotated, meta, cfg) is annotated


def test_region_table_failures_name_the_key_and_the_region() -> None:
    meta, ann, mask, cfg = clean_case()
    assert len(meta.regions) == 1 and meta.regions[0].id == 1
    bad = meta.model_copy(update={"regions": (meta.regions[0].model_copy(update={"id": 2}),)})
    failures = dict(validate_sample(bad, ann, mask, cfg))
    assert set(failures) == {"regions"}
    assert (
        f"sample {meta.key}: region 1 of regions.png is not in the region table"
        in failures["regions"]
    )
    assert (
        f"sample {meta.key}: region 2 of the region table is not in regions.png"
        in failures["regions"]
    )
    wrong = meta.regions[0].model_copy(update={"bbox_px": (0, 0, 9, 9)})
    detail = dict(validate_sample(meta.model_copy(update={"regions": (wrong,)}), ann, mask, cfg))
    assert (
        f"sample {meta.key}: region 1 bbox_px (0, 0, 9, 9) but regions.png has" in detail["regions"]
    )
