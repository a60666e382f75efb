"""The reference model's metrics (``<release>/reference/metrics.json``) and the release gate.

``geodelta train-reference RELEASE_DIR`` trains the reference model on a release's train split and
writes :class:`ReferenceMetrics`; ``geodelta release RELEASE_DIR`` checks them against the gate
rules of the release's config (:class:`geodelta.schemas.config.GateConfig`) and refuses to publish
when a rule fails. Gate rules name a metric by its dotted path (``masks.f1``,
``retrieval.recall_at_5``, ``captions.cider``; ``retrieval_temporal.recall_at_1`` on series
releases): :data:`GATE_METRICS` lists them all.

Importing this module imports pydantic only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

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


class TemporalRetrievalMetrics(Record):
    """Text-to-interval retrieval with hard negatives (series releases only, issue 15).

    Each caption of an evaluation series sample (dates d_0 .. d_{T-1}) queries a gallery that
    holds every evaluation sample (interval d_0 -> d_{T-1}, from before.png/after.png) plus the
    hard negatives: the other intervals d_i -> d_j (i < j) of every evaluation sequence, rendered
    from ``series.tif`` as before.png is and embedded by the same pair encoder. A hit at k = the
    caption's own sample among the k most similar; a tie with a hard negative counts as a miss.
    ``temporal_*``: the same queries against their own place's intervals only (does the text
    pin down *when*, not only *where*)."""

    recall_at_1: float = Field(ge=0, le=1, description="Hit at 1 among samples + hard negatives")
    recall_at_5: float = Field(ge=0, le=1, description="Hit at 5 among samples + hard negatives")
    recall_at_10: float = Field(ge=0, le=1, description="Hit at 10 among samples + hard negatives")
    temporal_recall_at_1: float = Field(
        ge=0, le=1, description="Hit at 1 among the intervals of the query's own sequence"
    )
    queries: int = Field(ge=0, description="Captions of evaluation series samples used as queries")
    samples: int = Field(ge=0, description="Evaluation series samples (sequences)")
    hard_negatives: int = Field(ge=0, description="Other intervals of those sequences")
    gallery: int = Field(ge=0, description="Evaluation samples + hard negatives")
    chance_recall_at_1: float = Field(ge=0, le=1, description="1 / gallery")
    chance_temporal_recall_at_1: float = Field(
        ge=0, le=1, description="Mean over queries of 1 / intervals of the query's sequence"
    )


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
    retrieval_temporal: TemporalRetrievalMetrics | None = Field(
        default=None,
        description="Retrieval against same-place, different-date negatives (series releases "
        "only; absent from a pair release's metrics.json)",
    )

    @model_serializer(mode="wrap")
    def _absent_when_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A pair release's metrics.json stays as it was: no ``retrieval_temporal`` key."""
        data: dict[str, Any] = handler(self)
        if self.retrieval_temporal is None:
            data.pop("retrieval_temporal", None)
        return data

    def has_metric(self, name: str) -> bool:
        """Whether these metrics hold gate metric ``name`` (the ``retrieval_temporal.*`` ones
        only for a series release)."""
        return name in GATE_METRICS and getattr(self, name.split(".", 1)[0]) is not None

    def metric(self, name: str) -> float:
        """The value of a gate metric by dotted path (``masks.f1``).

        Raises:
            KeyError: ``name`` is not a gate metric (the message lists :data:`GATE_METRICS`),
                or a series-only metric of a pair release's metrics (:meth:`has_metric`).
        """
        if name not in GATE_METRICS:
            raise KeyError(
                f"unknown reference metric {name!r}; use one of: {', '.join(GATE_METRICS)}"
            )
        section, field = name.split(".", 1)
        if getattr(self, section) is None:
            raise KeyError(
                f"reference metric {name!r} is measured on series releases only (time.series); "
                "these metrics have none"
            )
        return float(getattr(getattr(self, section), field))


#: Gate metrics of series releases only (:class:`TemporalRetrievalMetrics`).
TEMPORAL_GATE_METRICS: tuple[str, ...] = tuple(
    f"retrieval_temporal.{f}"
    for f in ("recall_at_1", "recall_at_5", "recall_at_10", "temporal_recall_at_1")
)

#: Metric names a gate rule may use (``section.field`` of :class:`ReferenceMetrics`).
GATE_METRICS: tuple[str, ...] = (
    *(f"masks.{f}" for f in ("precision", "recall", "f1", "iou")),
    *(f"retrieval.{f}" for f in ("recall_at_1", "recall_at_5", "recall_at_10")),
    *(f"captions.{f}" for f in ("bleu4", "rouge_l", "cider")),
    *TEMPORAL_GATE_METRICS,
)
