"""The reference-model section: ``reference/metrics.json`` as tables, and the review list.

"Not trained yet" when the release has no metrics; a metrics file that is not a
:class:`~geodelta.schemas.reference.ReferenceMetrics` is shown field by field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geodelta.pipelines.release.layout import REFERENCE_CARD, REFERENCE_METRICS
from geodelta.pipelines.report.data import Release
from geodelta.pipelines.report.metrics import flatten, pct, scalar
from geodelta.pipelines.report.samples import REVIEW_THUMBNAILS, review_data
from geodelta.pipelines.report.sections import Section, release_link, table
from geodelta.schemas.reference import ReferenceMetrics

__all__ = ["predicted_masks", "reference_section"]

_TITLE = "Reference model"


def _tables(m: ReferenceMetrics) -> dict[str, Any]:
    """Readable tables of the metrics: masks, retrieval (with chance), captions, weights."""
    masks, ret, caps = m.masks, m.retrieval, m.captions
    base = m.training.get("baselines", {}) if isinstance(m.training, dict) else {}
    rand = base.get("captions_random_train_caption", {})
    gallery = max(int(ret.gallery), 1)

    def chance(k: int) -> str:
        return f"{min(k, gallery) / gallery:.3f}"

    def ref(key: str) -> str:
        value = rand.get(key)
        return f"{float(value):.3f}" if isinstance(value, int | float) else "–"

    return {
        "masks": table(
            ["precision", "recall", "F1", "IoU", "threshold", "samples", "pixels", "changed"],
            [
                (
                    f"{masks.precision:.3f}",
                    f"{masks.recall:.3f}",
                    f"{masks.f1:.3f}",
                    f"{masks.iou:.3f}",
                    masks.threshold,
                    masks.samples,
                    masks.pixels,
                    pct(masks.changed_fraction),
                )
            ],
            numeric=range(8),
        ),
        "retrieval": table(
            ["metric", "value", "chance"],
            [
                ("Recall@1", f"{ret.recall_at_1:.3f}", chance(1)),
                ("Recall@5", f"{ret.recall_at_5:.3f}", chance(5)),
                ("Recall@10", f"{ret.recall_at_10:.3f}", chance(10)),
            ],
            numeric=(1, 2),
        ),
        "captions": table(
            ["metric", "value", "random training caption"],
            [
                ("BLEU-4", f"{caps.bleu4:.3f}", ref("bleu4")),
                ("ROUGE-L", f"{caps.rouge_l:.3f}", ref("rouge_l")),
                ("CIDEr", f"{caps.cider:.3f}", ref("cider")),
            ],
            numeric=(1, 2),
        ),
        "weights": table(
            ["model", "file", "sha256", "bytes"],
            [(n, w.path, w.sha256[:16], w.bytes) for n, w in sorted(m.weights.items())],
            numeric=(3,),
        ),
    }


def predicted_masks(
    rel: Release, m: ReferenceMetrics, keys: Sequence[str]
) -> tuple[dict[str, np.ndarray], str]:
    """The reference change model's mask of each sample of ``keys`` that the page shows.

    The change model named in ``m.weights["change_model"]`` is run on the samples' before and
    after images (members kept by :func:`~.data.scan_shards`) and thresholded at the metrics'
    threshold, as train-reference scored disagreement. Loads torch (only here).

    Returns:
        ``(key -> (H, W) bool mask, note)``; the note says why there are none ('' otherwise).
    """
    shown = [k for k in keys if k in rel.kept]
    ref = m.weights.get("change_model")
    if not shown or ref is None:
        return {}, "" if not shown else "no change-model weights in the reference metrics"
    path = rel.root / ref.path
    if not path.is_file():
        return {}, f"the change model's weights {ref.path} are missing"
    from geodelta.errors import GeodeltaError

    try:
        import torch

        from geodelta.annotators.models.baseline import BaselineChangeAnnotator
        from geodelta.data import decode_sample

        # (C, H, W) reflectance, NaN = no data: what the change model saw in train-reference
        images = [
            decode_sample({**rel.kept[k], "__key__": k}, decode="numpy")["image"] for k in shown
        ]
        threads = torch.get_num_threads()
        try:  # one thread, as train-reference scores (reference.threads): fast on a busy machine
            model = BaselineChangeAnnotator(path, threads=1)
            probs = model.run_inference([(img[0], img[1]) for img in images])
        finally:
            torch.set_num_threads(threads)
    except (GeodeltaError, ImportError, OSError, ValueError) as exc:
        return {}, f"the change model could not be run ({type(exc).__name__}: {exc})"
    threshold = float(m.masks.threshold)
    return {k: np.asarray(p) >= threshold for k, p in zip(shown, probs, strict=True)}, ""


def reference_section(rel: Release, review: Sequence[str] = ()) -> Section:
    """The reference model's metrics and the samples to review first."""
    from pydantic import ValidationError

    data: dict[str, Any] = {"metrics_link": release_link(REFERENCE_METRICS)}
    if rel.reference_problem is not None:
        return Section(
            "reference", _TITLE, data | {"kind": "problem", "problem": rel.reference_problem}
        )
    if rel.reference is None:
        return Section("reference", _TITLE, data | {"kind": "absent", "file": REFERENCE_METRICS})
    try:
        m = ReferenceMetrics.model_validate(rel.reference)
    except ValidationError:
        rows = [(k, scalar(v)) for k, v in flatten(rel.reference)]
        return Section(
            "reference",
            _TITLE,
            data | {"kind": "generic", "table": table(["metric", "value"], rows)},
        )
    definition = m.disagreement.definition if m.disagreement is not None else ""
    predicted, note = predicted_masks(rel, m, review[:REVIEW_THUMBNAILS])
    return Section(
        "reference",
        _TITLE,
        data
        | {
            "kind": "metrics",
            "m": m,
            "card_link": release_link(REFERENCE_CARD),
            "review": review_data(rel, review, definition, predicted, note),
            **_tables(m),
        },
    )
