"""The reference model's caption baseline: nearest-neighbour consensus captions, scored.

Method (:data:`CAPTION_METHOD`; Devlin et al., "Exploring Nearest Neighbor Approaches for
Image Captioning", 2015): the ``reference.caption_neighbours`` training pairs nearest to an
evaluation pair in the pair encoder's space pool their captions, and the caption with the
highest mean cosine similarity (in the text encoder's space) to the other pooled captions is
the candidate. Scored with BLEU-4, ROUGE-L and CIDEr
(:mod:`geodelta.pipelines.training.caption_metrics`), next to a random training caption per
evaluation sample (seeded) as the reference point.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from geodelta.pipelines.training.caption_metrics import TOKENIZER, CaptionScores, caption_scores
from geodelta.pipelines.training.retrieval import RetrievalRun, encode_texts
from geodelta.schemas.reference import CaptionMetrics

if TYPE_CHECKING:
    from geodelta.schemas.config import ReferenceConfig

__all__ = ["CAPTION_METHOD", "CaptionRun", "consensus_captions", "score_captions"]

CAPTION_METHOD = (
    "nearest-neighbour consensus: the captions of the {k} training pairs nearest in the pair "
    "encoder's space; the one with the highest mean text-encoder cosine to the others"
)


def consensus_captions(
    eval_keys: Sequence[str],
    eval_emb: np.ndarray,
    train_keys: Sequence[str],
    train_emb: np.ndarray,
    train_caps: dict[str, list[str]],
    k: int,
) -> dict[str, str]:
    """The nearest-neighbour consensus caption of every evaluation pair (module docstring).

    Args:
        eval_keys: evaluation samples, in the order of ``eval_emb``'s rows.
        eval_emb: (E, D) pair embeddings of the evaluation samples.
        train_keys: training samples, in the order of ``train_emb``'s rows.
        train_emb: (T, D) pair embeddings of the training samples.
        train_caps: training sample key -> its captions.
        k: neighbours whose captions are pooled.

    Returns:
        Evaluation sample key -> the chosen training caption.
    """
    out: dict[str, str] = {}
    sim = eval_emb.astype(np.float64) @ train_emb.astype(np.float64).T
    for i, key in enumerate(eval_keys):
        order = sorted(range(len(train_keys)), key=lambda j: (-sim[i, j], train_keys[j]))
        pool = [c for j in order[:k] for c in train_caps[train_keys[j]]]
        if len(pool) == 1:
            out[key] = pool[0]
            continue
        emb = encode_texts(pool).astype(np.float64)
        cos = emb @ emb.T
        mean = (cos.sum(axis=1) - np.diag(cos)) / (len(pool) - 1)
        best = max(range(len(pool)), key=lambda c: (round(float(mean[c]), 9), -c))
        out[key] = pool[best]
    return out


@dataclass(frozen=True)
class CaptionRun:
    """What the caption step chose and measured."""

    candidates: dict[str, str]
    metrics: CaptionMetrics
    chance: CaptionScores


def score_captions(
    run: RetrievalRun,
    train_caps: dict[str, list[str]],
    eval_caps: dict[str, list[str]],
    cfg: ReferenceConfig,
    say: Callable[[str], None],
) -> CaptionRun:
    """Consensus captions of the evaluation split, scored, and a random training caption's score.

    Args:
        run: the retrieval step (its pair embeddings of both splits).
        train_caps: key -> captions of the train split.
        eval_caps: key -> captions (the references) of the evaluation split.
        cfg: the reference settings (``caption_neighbours``, ``seed``).
        say: progress.

    Returns:
        The candidates, their metrics, and the random-caption scores.
    """
    eval_keys, train_keys = run.eval_keys, run.train_keys
    candidates = consensus_captions(
        eval_keys, run.eval_emb, train_keys, run.train_emb, train_caps, cfg.caption_neighbours
    )
    references = {k: eval_caps[k] for k in eval_keys}
    scored = caption_scores(references, candidates)
    rng = random.Random(cfg.seed)
    pool = [c for k in train_keys for c in train_caps[k]]
    chance = caption_scores(references, {k: rng.choice(pool) for k in eval_keys})
    metrics = CaptionMetrics(
        bleu4=scored.bleu4,
        rouge_l=scored.rouge_l,
        cider=scored.cider,
        method=CAPTION_METHOD.format(k=cfg.caption_neighbours),
        tokenizer=TOKENIZER,
        samples=len(eval_keys),
    )
    say(
        f"captions: BLEU-4 {metrics.bleu4:.3f} ROUGE-L {metrics.rouge_l:.3f} "
        f"CIDEr {metrics.cider:.3f}"
    )
    return CaptionRun(candidates=candidates, metrics=metrics, chance=chance)
