"""reference/MODEL_CARD.md: what the reference model was trained on, its metrics, its limits.

:func:`model_card` renders the card from the :class:`~geodelta.schemas.reference.ReferenceMetrics`
that ``train_reference`` writes next to it (nothing else: the card says what metrics.json says).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geodelta.schemas import ReleaseManifest
    from geodelta.schemas.reference import ReferenceMetrics

__all__ = ["model_card"]


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _trained_on(metrics: ReferenceMetrics, manifest: ReleaseManifest) -> list[str]:
    """Title and "What was trained on what"."""
    r, c = metrics.retrieval, metrics.captions
    t = metrics.training
    cm, pe = t["change_model"], t["pair_encoder"]
    return [
        f"# Reference model of {metrics.release}",
        "",
        f"Trained by `geodelta train-reference` (geodelta {metrics.code_version or '?'}) on the "
        f"release {manifest.name} {manifest.version} (config hash {manifest.config_hash[:12]}).",
        "",
        "## What was trained on what",
        "",
        f"- Data: split `{metrics.train_split}` ({metrics.train_samples} samples) for training, "
        f"split `{metrics.eval_split}` ({metrics.eval_samples} samples) for every metric below. "
        "Splits are spatially disjoint blocks of cells (see the dataset card, README.md).",
        f"- Change model: FC-Siam-diff (the baseline annotator's architecture), "
        f"{cm['base_channels']} base channels, {cm['epochs']} epochs, batch {cm['batch_size']}, "
        f"Adam lr {cm['lr']}, crops of {cm['patch'] or 'whole'} px with flips/rotations, on the "
        f"multispectral `before.tif`/`after.tif`; target `mask.png > 0`. Weights: "
        f"`{metrics.weights['change_model'].path}` ({cm['model_id']}); usable as "
        "`baseline.weights` of the next version.",
        f"- Text-to-pair retrieval: a dual encoder. Text side frozen: {r.text_encoder}. Pair "
        f"side trained: a small CNN over `before.png`, `after.png` and their difference "
        f"(width {pe['width']}, 3x3-grid + max pooling, 384-d), {pe['epochs']} epochs, "
        f"AdamW lr {pe['lr']}, symmetric InfoNCE against one caption of the pair per epoch. "
        f"Weights: `{metrics.weights['pair_encoder'].path}`.",
        f"- Caption baseline: {c.method}.",
        f"- Loader: {t['loader']['library']}, {t['loader']['workers']} workers, shuffle buffer "
        f"{t['loader']['shuffle_buffer']}, shards split by node (rank) and worker. Seed "
        f"{t['reference_config']['seed']} for weights, shuffling and augmentation.",
        "",
    ]


def _metrics_table(metrics: ReferenceMetrics) -> list[str]:
    """The metrics of the evaluation split, next to their reference points."""
    m, r, c = metrics.masks, metrics.retrieval, metrics.captions
    base = metrics.training["baselines"]
    return [
        f"## Metrics (split `{metrics.eval_split}`)",
        "",
        "| group | metric | value | reference point |",
        "|---|---|---|---|",
        f"| masks | precision | {_fmt(m.precision)} | |",
        f"| masks | recall | {_fmt(m.recall)} | |",
        f"| masks | F1 | {_fmt(m.f1)} | |",
        f"| masks | IoU | {_fmt(m.iou)} | changed share of pixels {_fmt(m.changed_fraction)} |",
        f"| retrieval | Recall@1 | {_fmt(r.recall_at_1)} | chance "
        f"{_fmt(base['retrieval_chance']['recall_at_1'])} |",
        f"| retrieval | Recall@5 | {_fmt(r.recall_at_5)} | chance "
        f"{_fmt(base['retrieval_chance']['recall_at_5'])} |",
        f"| retrieval | Recall@10 | {_fmt(r.recall_at_10)} | chance "
        f"{_fmt(base['retrieval_chance']['recall_at_10'])} |",
        f"| captions | BLEU-4 | {_fmt(c.bleu4)} | random training caption "
        f"{_fmt(base['captions_random_train_caption']['bleu4'])} |",
        f"| captions | ROUGE-L | {_fmt(c.rouge_l)} | random training caption "
        f"{_fmt(base['captions_random_train_caption']['rouge_l'])} |",
        f"| captions | CIDEr | {_fmt(c.cider)} | random training caption "
        f"{_fmt(base['captions_random_train_caption']['cider'])} |",
        "",
        f"Masks: {m.samples} samples, {m.pixels} pixels valid on both dates, threshold "
        f"{m.threshold}. Retrieval: {r.queries} caption queries against a gallery of {r.gallery} "
        f"pairs. Captions: {c.samples} samples, tokenizer {c.tokenizer}.",
        "",
        *_temporal_retrieval(metrics),
    ]


def _temporal_retrieval(metrics: ReferenceMetrics) -> list[str]:
    """Retrieval with hard negatives (series releases only; nothing for a pair release)."""
    t = metrics.retrieval_temporal
    if t is None:
        return []
    return [
        "Retrieval with hard negatives (series release): each caption of the "
        f"{t.samples} evaluation sequences against {t.gallery} image pairs, the evaluation "
        f"samples plus {t.hard_negatives} other intervals of the same places: Recall@1 "
        f"{_fmt(t.recall_at_1)} (chance {_fmt(t.chance_recall_at_1)}), Recall@5 "
        f"{_fmt(t.recall_at_5)}, Recall@10 {_fmt(t.recall_at_10)}; among the same place's "
        f"intervals only, Recall@1 {_fmt(t.temporal_recall_at_1)} (chance "
        f"{_fmt(t.chance_temporal_recall_at_1)}).",
        "",
    ]


def _disagreement(metrics: ReferenceMetrics) -> list[str]:
    """The disagreement column and the samples to review first (nothing when not scored)."""
    d = metrics.disagreement
    if d is None:
        return []
    return [
        "## Disagreement",
        "",
        f"`samples.parquet` column `disagreement`: {d.definition}. {d.samples} samples, mean "
        f"{_fmt(d.mean)}. Train-split samples were seen in training (optimistic scores). "
        f"Review first: {', '.join(f'`{k}`' for k in d.top[:10]) or 'none'}.",
        "",
    ]


def _use_and_limits() -> list[str]:
    """Intended use, limits, how to reproduce."""
    return [
        "## Intended use",
        "",
        "A yardstick for this release: its metrics gate the release (`geodelta release`) and "
        "compare versions; the change model can become the next version's baseline annotator "
        "(`--promote`); the disagreement column orders samples for human review. It is NOT a "
        "production change detector or captioner.",
        "",
        "## Limits",
        "",
        "- Small data and short training: the figures measure the release as much as the model; "
        "compare them between versions built the same way, not with published benchmarks.",
        "- The labels are the release's own (land-cover transitions, possibly fused with an "
        "earlier baseline): agreement with them is not agreement with the ground.",
        "- Recall@k depends on the gallery size (chance Recall@k = k / gallery); Recall@10 is "
        "1.0 whenever the gallery has 10 pairs or fewer.",
        "- Captions made from templates repeat phrasings, which inflates n-gram metrics "
        "compared with human captions. CIDEr uses the evaluation split's document frequencies.",
        "",
        "## Reproduce",
        "",
        "```",
        "geodelta train-reference RELEASE_DIR   # settings: the release config's `reference:`",
        "```",
        "",
        "Same release + same settings + same number of loader workers = the same metrics.",
        "",
    ]


def model_card(metrics: ReferenceMetrics, manifest: ReleaseManifest) -> str:
    """The text of reference/MODEL_CARD.md.

    Args:
        metrics: what train_reference measured (also written to reference/metrics.json).
        manifest: the release the model was trained on.

    Returns:
        Markdown, lines joined with newlines.
    """
    lines = [
        *_trained_on(metrics, manifest),
        *_metrics_table(metrics),
        *_disagreement(metrics),
        *_use_and_limits(),
    ]
    return "\n".join(lines)
