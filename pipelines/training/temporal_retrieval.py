"""Text-to-interval retrieval with hard negatives: does a caption pin down *when*, not only
*where*? (series releases, issue 15).

The reference model's pair encoder (:mod:`geodelta.pipelines.training.retrieval`) embeds a
sample from ``before.png``/``after.png``: the interval d_0 -> d_{T-1} of a sequence. For each
evaluation series sample, every other interval d_i -> d_j (``i < j``, ``(i, j) != (0, T-1)``) of
the same place is a hard negative: same place, other dates. Its two images are rendered from
``series.tif`` (date-major bands, all dates co-registered onto d_0) exactly as the encode stage
renders ``before.png`` (:func:`geodelta.pipelines.stages.encode.rgb_png`, read back through
:func:`geodelta.data.decode_member`) and embedded by the same encoder.

Every caption of every evaluation series sample is a query:

- against the gallery of every evaluation sample plus every hard negative: Recall@1/5/10;
- against its own sequence's intervals only: the temporal Recall@1 (chance = 1 / intervals).

The hard negatives come first in each gallery, so a tie with a hard negative counts as a miss
(:func:`~geodelta.pipelines.training.retrieval.recall_at_k` gives ties to the lower index).
Nothing is trained here; pair releases get no such metrics (their metrics file is unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from geodelta.pipelines.training.retrieval import encode_texts, recall_at_k
from geodelta.schemas.reference import TemporalRetrievalMetrics

if TYPE_CHECKING:
    from geodelta.pipelines.training.retrieval import RetrievalRun
    from geodelta.schemas import ReleaseManifest

__all__ = [
    "SERIES_IMAGE",
    "SeriesIntervals",
    "hard_negative_intervals",
    "interval_images",
    "is_series_release",
    "iter_series_intervals",
    "release_temporal_retrieval",
    "rgb_settings",
    "series_reflectance",
    "temporal_metrics",
    "temporal_retrieval",
]

#: The member holding every date of a series sample.
SERIES_IMAGE = "series.tif"
#: Default of ``imagery.rgb_max_reflectance`` (:class:`geodelta.schemas.config.ImageryConfig`).
_RGB_MAX_DEFAULT = 0.3


def is_series_release(manifest: ReleaseManifest) -> bool:
    """Whether a release was built in series mode (its config has ``time.series``)."""
    if getattr(manifest, "mode", None) == "series":
        return True
    time = manifest.config.get("time")
    return isinstance(time, dict) and bool(time.get("series"))


def rgb_settings(config: Mapping[str, Any]) -> tuple[tuple[str, str, str], float]:
    """``(imagery.rgb, imagery.rgb_max_reflectance)`` of a release's normalised config."""
    imagery = config.get("imagery") or {}
    r, g, b = (str(x) for x in imagery.get("rgb", ("B04", "B03", "B02")))
    return (r, g, b), float(imagery.get("rgb_max_reflectance", _RGB_MAX_DEFAULT))


def hard_negative_intervals(t: int) -> list[tuple[int, int]]:
    """The intervals ``(i, j)``, ``i < j``, of a sequence of ``t`` dates but ``(0, t - 1)``.

    Lexicographic order; ``t * (t - 1) / 2 - 1`` of them.
    """
    return [(i, j) for i in range(t) for j in range(i + 1, t) if (i, j) != (0, t - 1)]


def series_reflectance(
    raw: Mapping[str, Any], meta: Mapping[str, Any], bands: Sequence[str] | None = None
) -> np.ndarray:
    """``series.tif`` of a raw sample as float32 reflectance (T, C, H, W), NaN = no data.

    Decoded by :func:`geodelta.data.decode_member` (date-major bands; ``bands`` kept per date,
    in this order; None = every band of ``meta["bands"]``).
    """
    from geodelta.data import decode_member

    key = str(meta.get("__key__", ""))
    stack = decode_member(SERIES_IMAGE, raw[SERIES_IMAGE], meta=meta, bands=bands, key=key)
    return np.asarray(stack, dtype=np.float32)


def interval_images(
    stack: np.ndarray, bands: Sequence[str], rgb: Sequence[str], max_reflectance: float
) -> list[np.ndarray]:
    """Each date of a (T, C, H, W) stack rendered as the encode stage renders ``before.png``,
    then read as the pair encoder reads it: (3, H, W) float32 in [0, 1]."""
    from geodelta.data import decode_member
    from geodelta.pipelines.stages.encode import rgb_png

    idx = (bands.index(rgb[0]), bands.index(rgb[1]), bands.index(rgb[2]))
    out = []
    for date in stack:
        png = rgb_png(date, idx, max_reflectance)
        img = np.asarray(decode_member("before.png", png), dtype=np.float32) / np.float32(255.0)
        out.append(np.ascontiguousarray(img.transpose(2, 0, 1)))
    return out


@dataclass(frozen=True)
class SeriesIntervals:
    """The hard negatives of one series sample: its intervals but (0, T-1), their images."""

    key: str
    dates: int
    intervals: tuple[tuple[int, int], ...]
    pairs: tuple[tuple[np.ndarray, np.ndarray], ...]


def iter_series_intervals(
    urls: Sequence[str], rgb: Sequence[str], max_reflectance: float
) -> Iterator[SeriesIntervals]:
    """The hard negatives of every series sample of some shards, in shard order.

    Read by :func:`geodelta.data.load` (``decode="raw"``, one node); samples without
    ``series.tif`` (pair samples) are passed over.
    """
    if not urls:
        return
    from geodelta.data import load

    for s in load(list(urls), split=None, decode="raw", rank=0, world_size=1):
        if SERIES_IMAGE not in s:
            continue
        meta = s["meta"]
        stack = series_reflectance(s, meta, bands=rgb)  # the three rendered bands only
        images = interval_images(stack, list(rgb), rgb, max_reflectance)
        intervals = hard_negative_intervals(stack.shape[0])
        yield SeriesIntervals(
            key=str(meta["__key__"]),
            dates=stack.shape[0],
            intervals=tuple(intervals),
            pairs=tuple((images[i], images[j]) for i, j in intervals),
        )


def _hits(sim: np.ndarray, truth: Sequence[int], k: int) -> int:
    """Queries whose true item ranks within the first k (recall_at_k's ranking)."""
    return round(recall_at_k(sim, truth, (k,))[k] * len(truth))


def temporal_metrics(
    eval_keys: Sequence[str],
    eval_emb: np.ndarray,
    negatives: Mapping[str, np.ndarray],
    query_emb: Mapping[str, np.ndarray],
) -> TemporalRetrievalMetrics | None:
    """Recall@k against hard negatives, from embeddings (the arithmetic, no model).

    Args:
        eval_keys: keys of the evaluation samples (the gallery's sample rows, in this order).
        eval_emb: (N, D) their pair embeddings (interval d_0 -> d_{T-1}).
        negatives: key -> (M_s, D) embeddings of the sample's hard negatives, for the series
            samples (M_s = T(T-1)/2 - 1; a key missing here is not a series sample).
        query_emb: key -> (Q_s, D) embeddings of the sample's captions.

    Returns:
        The metrics; None when no series sample has a caption.
    """
    keys = [k for k in eval_keys if k in negatives and len(query_emb.get(k, ())) > 0]
    if not keys:
        return None
    row = {k: i for i, k in enumerate(eval_keys)}
    dim = eval_emb.shape[1]
    neg = [np.asarray(negatives[k], dtype=np.float32).reshape(-1, dim) for k in keys]
    n_neg = sum(len(n) for n in neg)
    gallery = np.concatenate([*neg, np.asarray(eval_emb, dtype=np.float32)], axis=0)
    queries = np.concatenate([np.asarray(query_emb[k], dtype=np.float32) for k in keys], axis=0)
    truth = [n_neg + row[k] for k in keys for _ in range(len(query_emb[k]))]
    recall = recall_at_k(queries @ gallery.T, truth)
    temporal_hits = 0
    chance = 0.0
    for k, own_neg in zip(keys, neg, strict=True):
        own = np.concatenate([own_neg, eval_emb[row[k]][None, :].astype(np.float32)], axis=0)
        q = np.asarray(query_emb[k], dtype=np.float32)
        temporal_hits += _hits(q @ own.T, [len(own_neg)] * len(q), 1)
        chance += len(q) / len(own)
    return TemporalRetrievalMetrics(
        recall_at_1=recall[1],
        recall_at_5=recall[5],
        recall_at_10=recall[10],
        temporal_recall_at_1=temporal_hits / len(truth),
        queries=len(truth),
        samples=len(keys),
        hard_negatives=n_neg,
        gallery=len(gallery),
        chance_recall_at_1=1.0 / len(gallery),
        chance_temporal_recall_at_1=chance / len(truth),
    )


def temporal_retrieval(
    encoder: Any,
    eval_urls: Sequence[str],
    eval_keys: Sequence[str],
    eval_emb: np.ndarray,
    eval_caps: Mapping[str, Sequence[str]],
    *,
    rgb: Sequence[str],
    max_reflectance: float,
    embed: Callable[..., np.ndarray] | None = None,
    encode: Callable[[Sequence[str]], np.ndarray] = encode_texts,
    say: Callable[[str], None] = lambda _msg: None,
) -> TemporalRetrievalMetrics | None:
    """Score the trained pair encoder against same-place, different-date negatives.

    Args:
        encoder: the trained pair encoder.
        eval_urls: shards of the evaluation split.
        eval_keys: its sample keys, in the order of ``eval_emb``.
        eval_emb: (N, D) pair embeddings of the evaluation samples (the retrieval step's).
        eval_caps: key -> captions of the evaluation samples.
        rgb: the release's ``imagery.rgb`` band names.
        max_reflectance: its ``imagery.rgb_max_reflectance``.
        embed: ``(encoder, [(before, after)]) -> (N, D)``; default
            :func:`geodelta.annotators.models.pair_encoder.embed_pairs`.
        encode: captions -> (Q, D) text embeddings (default: the frozen text encoder).
        say: progress, one line.

    Returns:
        The metrics; None when the evaluation split has no series sample.
    """
    if embed is None:
        from geodelta.annotators.models.pair_encoder import embed_pairs

        embed = embed_pairs
    negatives: dict[str, np.ndarray] = {}
    for s in iter_series_intervals(eval_urls, rgb, max_reflectance):  # embedded one at a time
        negatives[s.key] = embed(encoder, list(s.pairs))
    queries = {k: encode(list(eval_caps.get(k, ()))) for k in sorted(negatives)}
    metrics = temporal_metrics(eval_keys, eval_emb, negatives, queries)
    if metrics is not None:
        say(
            f"retrieval with hard negatives: R@1 {metrics.recall_at_1:.3f} R@5 "
            f"{metrics.recall_at_5:.3f} R@10 {metrics.recall_at_10:.3f} over {metrics.gallery}; "
            f"temporal R@1 {metrics.temporal_recall_at_1:.3f} (chance "
            f"{metrics.chance_temporal_recall_at_1:.3f})"
        )
    return metrics


def release_temporal_retrieval(
    manifest: ReleaseManifest,
    run: RetrievalRun,
    eval_urls: Sequence[str],
    eval_caps: Mapping[str, Sequence[str]],
    say: Callable[[str], None],
) -> TemporalRetrievalMetrics | None:
    """The step of ``train_reference``: :func:`temporal_retrieval` for a series release, None
    (nothing read) for a pair release."""
    if not is_series_release(manifest):
        return None
    rgb, vmax = rgb_settings(manifest.config)
    return temporal_retrieval(
        run.encoder,
        eval_urls,
        run.eval_keys,
        run.eval_emb,
        eval_caps,
        rgb=rgb,
        max_reflectance=vmax,
        say=say,
    )
