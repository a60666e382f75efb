"""Config sections for annotation (template or LLM), rule validation, the baseline and
reference models, and the release gate.

Part of the build config (:class:`geodelta.schemas.config.BuildConfig`), which re-exports every
class here; import them from ``geodelta.schemas.config``. Pure pydantic.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from geodelta.schemas._section import Section


class PriceConfig(Section):
    """Price of one model, in US dollars per million tokens."""

    input: float = Field(ge=0, description="USD per 1M prompt tokens")
    output: float = Field(ge=0, description="USD per 1M completion tokens")


class OpenAIConfig(Section):
    """The LLM annotator: any OpenAI-compatible endpoint (``annotation.annotator: openai``).

    The API key itself is never in the config: ``api_key_env`` names the environment variable
    holding it. Keys in :attr:`OPERATIONAL` (where and how fast requests go) do not change
    the data and are left out of the config hash.
    """

    OPERATIONAL: ClassVar[tuple[str, ...]] = (
        "base_url",
        "api_key_env",
        "timeout_s",
        "max_retries",
        "max_backoff_s",
        "concurrency",
        "requests_per_minute",
        "tokens_per_minute",
        "cache_dir",
        "batch_poll_s",
        "batch_max_wait_s",
    )

    base_url: str = Field(
        default="https://api.openai.com/v1", description="Endpoint base URL (ends in /v1)"
    )
    model: str = Field(default="gpt-4o-mini", min_length=1, description="Model name")
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY",
        description="NAME of the environment variable holding the API key (None: no key)",
    )
    prompt_version: str = Field(
        default="change_v1",
        pattern=r"^[a-z0-9_]+$",
        description="Prompt file annotators/prompts/<prompt_version>.txt",
    )
    temperature: float = Field(default=0.2, ge=0, le=2, description="Sampling temperature")
    max_output_tokens: int = Field(
        default=1500, ge=64, description="Completion token limit per request"
    )
    structured_output: Literal["auto", "json_schema", "json_object"] = Field(
        default="auto",
        description="Strict JSON schema, JSON mode + validation, or schema falling back to JSON mode",
    )
    max_fix_attempts: int = Field(
        default=2, ge=0, le=10, description="Re-asks with the claim checker's complaint"
    )
    max_retries: int = Field(
        default=4, ge=0, le=20, description="Retries per request on 429/5xx/timeouts"
    )
    max_backoff_s: float = Field(
        default=30.0, gt=0, description="Longest wait between retries (Retry-After included)"
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Per-request timeout")
    concurrency: int = Field(default=8, ge=1, le=1024, description="Requests in flight")
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="Request rate limit (whole build); None: no limit"
    )
    tokens_per_minute: float | None = Field(
        default=None, gt=0, description="Token rate limit (whole build); None: no limit"
    )
    prices: dict[str, PriceConfig] = Field(
        default={
            "gpt-4o-mini": PriceConfig(input=0.15, output=0.60),
            "gpt-4o": PriceConfig(input=2.50, output=10.00),
        },
        description="Model -> price per 1M tokens; a model not listed costs 0",
    )
    budget_usd: float | None = Field(
        default=None, gt=0, description="Hard spending limit; the rest is quarantined 'budget'"
    )
    cache_dir: str | None = Field(
        default=None,
        description="Response cache (default: <output.dir>/../llm-cache; for a URL output.dir, "
        ".geodelta-work/llm-cache next to the config)",
    )
    batch: bool = Field(default=False, description="Use the Batch API (files + batches)")
    batch_price_factor: float = Field(
        default=0.5, gt=0, le=1, description="Batch API price relative to the price table"
    )
    batch_poll_s: float = Field(default=5.0, gt=0, description="Batch status poll interval")
    batch_max_wait_s: float = Field(
        default=86400.0, gt=0, description="Give up on a batch after this long"
    )
    vision: bool = Field(default=False, description="Send before.png/after.png with the prompt")

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {url!r}")
        if parts.username or parts.password or parts.query:
            raise ValueError(
                "base_url must not carry credentials or a query string; put the key in the "
                "environment variable named by api_key_env"
            )
        return url


class AnnotationConfig(Section):
    """Caption and QA generation."""

    annotator: Literal["template", "openai"] = Field(
        default="template", description="'template' (offline) or 'openai' (any compatible LLM)"
    )
    openai: OpenAIConfig = Field(
        default=OpenAIConfig(), description="LLM annotator settings (annotator: openai)"
    )
    captions_per_sample: int = Field(default=5, ge=1, le=20, description="Captions per sample")
    no_change_epsilon: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Changed fractions at or below this read as 'no change'",
    )


class ValidationConfig(Section):
    """Rule checks before sharding."""

    min_captions: int = Field(default=5, ge=1, description="Fewest captions per sample")
    caption_chars: tuple[int, int] = Field(
        default=(10, 400), description="(min, max) caption length"
    )
    max_abs_shift_px: float = Field(default=3.0, gt=0, description="Largest recorded shift")
    max_residual_px: float = Field(default=0.5, gt=0, description="Largest recorded residual")
    max_captions: int | None = Field(
        default=None, ge=1, description="Most captions per sample (None = no upper bound)"
    )
    great_expectations: bool = Field(
        default=True,
        description="Run the Great Expectations checkpoint over the release's sample table "
        "before sharding (needs the 'validation' extra); failing rows go to quarantine",
    )
    data_docs: bool = Field(
        default=True, description="Write GX Data Docs (static HTML) under <release>/validation/"
    )


class BaselineConfig(Section):
    """The trained baseline change model (``geodelta baseline train``), run in the label stage.

    With ``weights`` unset (the default) the label stage is exactly as without this section,
    and the section is left out of the config hash.
    """

    weights: str | None = Field(
        default=None,
        description="weights.pt from `geodelta baseline train` (or its folder); None = no model",
    )
    threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Change probability at and above which it is change"
    )
    fusion: Literal["none", "intersect", "union"] = Field(
        default="intersect",
        description="Mask fusion: 'none' (record only), 'intersect' (a transition counts only "
        "where the model also sees change) or 'union' (model changes added as code 255)",
    )
    batch_size: int = Field(default=8, ge=1, description="Pairs or tiles per forward pass")


class ReferenceConfig(Section):
    """The reference model that ``geodelta train-reference`` trains on a release.

    Part of the config hash (it decides ``reference/``); it does not change shard bytes.
    """

    train_split: str = Field(default="train", description="Split the models train on")
    eval_split: str = Field(default="test", description="Split the metrics are computed on")
    epochs: int = Field(default=8, ge=1, description="Epochs of the change model")
    retrieval_epochs: int = Field(default=20, ge=1, description="Epochs of the pair encoder")
    batch_size: int = Field(default=8, ge=1, description="Samples per batch")
    workers: int = Field(default=2, ge=0, description="DataLoader worker processes")
    shuffle_buffer: int = Field(default=64, ge=0, description="webdataset shuffle buffer (samples)")
    seed: int = Field(default=0, description="Seed of weights, shuffling and augmentation")
    review_top: int = Field(
        default=20, ge=0, description="Samples the report lists to review first (by disagreement)"
    )
    lr: float = Field(default=3e-3, gt=0, description="Adam learning rate of the change model")
    base_channels: int = Field(
        default=8, ge=1, description="Width of the change model's first level (FC-Siam-diff)"
    )
    patch: int | None = Field(
        default=64, ge=8, description="Random crop of the change model's training (None = whole)"
    )
    threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Change probability of the mask metrics"
    )
    retrieval_lr: float = Field(default=2e-3, gt=0, description="AdamW lr of the pair encoder")
    retrieval_width: int = Field(
        default=16, ge=1, description="Channels of the pair encoder's first convolution"
    )
    caption_neighbours: int = Field(
        default=3, ge=1, description="Training pairs pooled by the nearest-neighbour captioner"
    )
    disagreement_smoothing: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Smoothing of the per-sample disagreement, as a share of the sample's valid "
        "pixels (0 = plain 1 - IoU; see geodelta.pipelines.training.reference)",
    )
    threads: int = Field(
        default=1,
        ge=0,
        description="torch intra-op threads while training (0 = torch's default); 1, with the "
        "kernels the training pins (pipelines/training/numerics.py), gives the same metrics on "
        "any x86-64 machine",
    )


class GateRule(Section):
    """One release-gate rule over a reference metric (``geodelta.schemas.reference``)."""

    metric: str = Field(description="Dotted metric name, e.g. 'masks.f1' (see GATE_METRICS)")
    min: float | None = Field(default=None, description="Lowest acceptable value (None = none)")
    max_drop: float | None = Field(
        default=None,
        ge=0,
        description="Largest acceptable drop below the previous release's value, in the "
        "metric's own units (None = not compared)",
    )

    @model_validator(mode="after")
    def _known(self) -> GateRule:
        from geodelta.schemas.reference import GATE_METRICS

        if self.metric not in GATE_METRICS:
            raise ValueError(
                f"gate metric {self.metric!r} is unknown; use one of: {', '.join(GATE_METRICS)}"
            )
        if self.min is None and self.max_drop is None:
            raise ValueError(f"gate rule for {self.metric!r} sets neither 'min' nor 'max_drop'")
        return self


class GateConfig(Section):
    """What ``geodelta release`` checks before it publishes a release."""

    require_reference: bool = Field(
        default=True,
        description="Refuse a release without reference/metrics.json (run train-reference)",
    )
    rules: list[GateRule] = Field(
        default_factory=lambda: [
            GateRule(metric="masks.f1", max_drop=0.05),
            GateRule(metric="retrieval.recall_at_5", max_drop=0.1),
            GateRule(metric="captions.cider", max_drop=0.2),
        ],
        description="Rules; every one must hold",
    )
