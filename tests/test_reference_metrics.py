"""Caption metrics (fixed tokenizer + pycocoevalcap), disagreement and Recall@k on hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geodelta.pipelines.training.caption_metrics import CaptionScoreError, caption_scores, tokenize
from geodelta.pipelines.training.disagreement import disagreement_score
from geodelta.pipelines.training.retrieval import recall_at_k


# -- tokenizer ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Grassland became cropland.", "grassland became cropland"),
        ("In the North-West, 2.5 ha changed!", "in the north-west 2.5 ha changed"),
        (
            "Water to bare ground is 100% of all change.",
            "water to bare ground is 100 % of all change",
        ),
        ("The tile's cover: 1,200 m²", "the tile 's cover 1,200 m 2"),
        ("  spaces\tand\nnewlines  ", "spaces and newlines"),
        ("Ｆｕｌｌｗｉｄｔｈ ＴＥＸＴ", "fullwidth text"),
        ("It’s (unchanged)", "it 's unchanged"),
        ("", ""),
    ],
)
def test_tokenizer_is_fixed(text: str, tokens: str) -> None:
    assert tokenize(text) == tokens


# -- scores ------------------------------------------------------------------------------------
def test_identical_captions_score_one() -> None:
    refs = {
        "a": ["Grassland became cropland in the east of the scene."],
        "b": ["No change can be detected in this tile."],
    }
    cands = {k: v[0] for k, v in refs.items()}
    s = caption_scores(refs, cands)
    assert s.bleu4 == pytest.approx(1.0, abs=1e-6)
    assert s.rouge_l == pytest.approx(1.0, abs=1e-9)
    assert s.per_sample["a"][:2] == pytest.approx((1.0, 1.0), abs=1e-6)
    assert s.cider > 0


def test_punctuation_and_case_do_not_count() -> None:
    refs = {"a": ["grassland became cropland in the east"]}
    s = caption_scores(refs, {"a": "Grassland  became Cropland, in the EAST!"})
    assert s.bleu4 == pytest.approx(1.0, abs=1e-6)
    assert s.rouge_l == pytest.approx(1.0)


def test_disjoint_captions_score_zero() -> None:
    refs = {"a": ["grassland became cropland in the east"], "b": ["no change at all here"]}
    s = caption_scores(refs, {"a": "water turned to bare soil", "b": "forest lost many trees"})
    assert s.bleu4 < 1e-6
    assert s.rouge_l == 0.0
    assert s.cider == 0.0


def test_hand_computed_bleu_and_rouge() -> None:
    # candidate "a b c d" against "a b c d e": every n-gram precision is 1, brevity penalty
    # exp(1 - 5/4); ROUGE-L: LCS 4, P = 1, R = 0.8, F(beta=1.2) = 2.44 * 0.8 / (0.8 + 1.44)
    s = caption_scores({"x": ["a b c d e"]}, {"x": "a b c d"})
    assert s.bleu4 == pytest.approx(math.exp(1 - 5 / 4), rel=1e-6)
    assert s.rouge_l == pytest.approx(2.44 * 0.8 / (0.8 + 1.44), rel=1e-9)


def test_rouge_takes_the_best_reference() -> None:
    refs = {"x": ["something else entirely", "a b c d"]}
    assert caption_scores(refs, {"x": "a b c d"}).rouge_l == pytest.approx(1.0)


def test_mismatched_keys_are_named() -> None:
    with pytest.raises(CaptionScoreError, match=r"only in references: \['b'\]"):
        caption_scores({"a": ["x"], "b": ["y"]}, {"a": "x"})
    with pytest.raises(CaptionScoreError, match="no samples"):
        caption_scores({}, {})


# -- disagreement ------------------------------------------------------------------------------
def test_disagreement_hand_made_masks() -> None:
    label = np.zeros((4, 4), bool)
    label[0, :4] = True  # 4 px
    pred = np.zeros((4, 4), bool)
    pred[0, 2:4] = True  # 2 px inside the label
    pred[1, 0] = True  # 1 px outside
    valid = np.ones((4, 4), bool)
    # IoU = 2 / (4 + 1) -> disagreement 0.6
    assert disagreement_score(pred, label, valid) == pytest.approx(0.6)
    assert disagreement_score(label, label, valid) == 0.0
    assert disagreement_score(~label, label, valid) == 1.0


def test_disagreement_ignores_invalid_pixels_and_empty_is_zero() -> None:
    label = np.zeros((3, 3), bool)
    pred = np.zeros((3, 3), bool)
    assert disagreement_score(pred, label, np.ones((3, 3), bool)) == 0.0
    pred[2, 2] = True  # the only disagreement is on an invalid pixel
    valid = np.ones((3, 3), bool)
    valid[2, 2] = False
    assert disagreement_score(pred, label, valid) == 0.0
    valid[2, 2] = True
    assert disagreement_score(pred, label, valid) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        disagreement_score(pred, label, valid[:2])


# -- Recall@k ----------------------------------------------------------------------------------
def test_recall_at_k_by_hand() -> None:
    sim = np.array(
        [
            [0.9, 0.1, 0.0],  # truth 0: rank 0
            [0.5, 0.4, 0.6],  # truth 1: rank 2
            [0.2, 0.3, 0.3],  # truth 2: tied with index 1, which wins -> rank 1
            [0.7, 0.8, 0.1],  # truth 1: rank 0
        ]
    )
    r = recall_at_k(sim, [0, 1, 2, 1], ks=(1, 2, 3))
    assert r == {1: 0.5, 2: 0.75, 3: 1.0}
