"""The reference model's metrics (``<release>/reference/metrics.json``) and the release gate.

``geodelta train-reference RELEASE_DIR`` trains the reference model on a release's train split and
writes :class:`ReferenceMetrics`; ``geodelta release RELEASE_DIR`` checks them against the gate
rules of the release's config (:class:`geodelta.schemas.config.GateConfig`) and refuses to publish
when a rule fails. Gate rules name a metric by its dotted path (``masks.f1``,
``retrieval.recall_at_5``, ``captions.cider``): :data:`GATE_METRICS` lists them all.

Importing this module imports pydantic only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from geodelta.schemas.records import Record

#: Version of the metrics.json layout.
REFERENCE_SCHEMA: Literal["geodelta.reference/1"] = "geodelta.reference/1"

#: Where train-reference writes into a release (paths relative to the release folder).
REFERENCE_DIR = "reference"
REFERENCE_METRICS = "reference/metrics.json"
REFERENCE_CARD = "reference/MODEL_CARD.md"


class MaskMetrics(Record):
    """Change-mask metrics of the reference change model on the evaluation split (binary
    change: any non-zero mask code is change), pooled over every pixel of the split."""

    precision: float = Field(ge=0, le=1, description="TP / (TP + FP)")
    recall: float = Field(ge=0, le=1, description="TP / (TP + FN)")
    f1: float = Field(ge=0, le=1, description="2PR / (P + R)")
    iou: float = Field(ge=0, le=1, description="TP / (TP + FP + FN)")
    threshold: float = Field(gt=0, lt=1, description="Change probability threshold")
    samples: int = Field(ge=0, description="Samples evaluated")
    pixels: int = Field(ge=0, description="Pixels evaluated")
    changed_fraction: float = Field(ge=0, le=1, description="Share of label pixels that change")


class RetrievalMetrics(Record):
    """Text-to-pair retrieval: each caption of an evaluation sample queries the gallery of every
    evaluation pair; a hit at k = the caption's own pair among the k most similar."""

    recall_at_1: float = Field(ge=0, le=1, description="Share of queries with a hit at 1")
    recall_at_5: float = Field(ge=0, le=1, description="Share of queries with a hit at 5")
    recall_at_10: float = Field(ge=0, le=1, description="Share of queries with a hit at 10")
    queries: int = Field(ge=0, description="Captions used as queries")
    gallery: int = Field(ge=0, description="Image pairs in the gallery")
    chance_recall_at_1: float = Field(ge=0, le=1, description="Recall@1 of a random ranking")
    text_encoder: str = Field(description="Frozen sentence encoder (package, version, model)")


class CaptionMetrics(Record):
    """Caption metrics (pycocoevalcap) of a simple caption baseline against each evaluation
    sample's reference captions."""

    bleu4: float = Field(ge=0, description="BLEU-4")
    rouge_l: float = Field(ge=0, description="ROUGE-L")
    cider: float = Field(ge=0, description="CIDEr (corpus statistics of the evaluation split)")
    method: str = Field(description="How the candidate caption is made")
    tokenizer: str = Field(description="The fixed tokenizer used before scoring")
    samples: int = Field(ge=0, description="Samples scored")


class WeightsRef(Record):
    """A weights file written into the release."""

    path: str = Field(description="Path relative to the release folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the file")
    bytes: int = Field(ge=0, description="File size")


class DisagreementSummary(Record):
    """Per-sample disagreement (model vs label), also a column of samples.parquet."""

    definition: str = Field(description="How the score is computed (0 = agree, 1 = disagree)")
    samples: int = Field(ge=0, description="Samples scored")
    mean: float = Field(ge=0, le=1, description="Mean score")
    top: tuple[str, ...] = Field(description="Sample keys to review first (highest score)")


class ReferenceMetrics(Record):
    """``<release>/reference/metrics.json``."""

    schema_version: Literal["geodelta.reference/1"] = Field(
        default=REFERENCE_SCHEMA, description="Layout version"
    )
    release: str = Field(description="'<name>-<version>' of the release trained on")
    config_hash: str = Field(description="config_hash of that release")
    code_version: str = Field(description="geodelta version that trained it")
    train_split: str = Field(description="Split trained on")
    eval_split: str = Field(description="Split evaluated on")
    train_samples: int = Field(ge=0, description="Samples in the train split")
    eval_samples: int = Field(ge=0, description="Samples in the evaluation split")
    masks: MaskMetrics = Field(description="Change-mask metrics")
    retrieval: RetrievalMetrics = Field(description="Text-to-pair retrieval metrics")
    captions: CaptionMetrics = Field(description="Caption-baseline metrics")
    weights: dict[str, WeightsRef] = Field(
        description="'change_model' (loadable as baseline.weights) and 'pair_encoder'"
    )
    training: dict[str, Any] = Field(description="Hyper-parameters, seeds, loader settings")
    disagreement: DisagreementSummary | None = Field(
        default=None, description="Per-sample disagreement summary"
    )

    def metric(self, name: str) -> float:
        """The value of a gate metric by dotted path (``masks.f1``).

        Raises:
            KeyError: ``name`` is not a gate metric; the message lists :data:`GATE_METRICS`.
        """
        if name not in GATE_METRICS:
            raise KeyError(
                f"unknown reference metric {name!r}; use one of: {', '.join(GATE_METRICS)}"
            )
        section, field = name.split(".", 1)
        return float(getattr(getattr(self, section), field))


#: Metric names a gate rule may use (``section.field`` of :class:`ReferenceMetrics`).
GATE_METRICS: tuple[str, ...] = (
    *(f"masks.{f}" for f in ("precision", "recall", "f1", "iou")),
    *(f"retrieval.{f}" for f in ("recall_at_1", "recall_at_5", "recall_at_10")),
    *(f"captions.{f}" for f in ("bleu4", "rouge_l", "cider")),
)
