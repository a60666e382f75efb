"""The ``geodelta train-reference`` and ``geodelta baseline`` commands (registered on the app of
:mod:`geodelta.pipelines.cli_common` when :mod:`geodelta.pipelines.cli` imports this module).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from geodelta import __version__
from geodelta.errors import GeodeltaError
from geodelta.pipelines import api
from geodelta.pipelines.cli_common import _fail, _release, _say, app, console


def _train_reference(
    release_dir: Path, cfg: Any, report: bool, verbose: bool, strict: bool = False
) -> Any:
    """Run train_reference with progress on stderr; a user-fixable error exits cleanly
    (``strict``: it is raised for the caller)."""
    try:
        return api.train_reference(
            release_dir,
            cfg=cfg,
            code_version=__version__,
            report=report,
            on_progress=(lambda line: _say(line, style="dim")) if verbose else None,
        )
    except api.ReferenceError as exc:
        if strict:
            raise
        raise _fail(str(exc)) from None


def _reference_lines(m: Any) -> list[str]:
    """One line per metric group (what `demo` prints)."""
    r, c, k = m.retrieval, m.captions, m.masks
    return [
        f"reference masks ({m.eval_split}, {k.samples} samples): precision {k.precision:.3f} "
        f"recall {k.recall:.3f} F1 {k.f1:.3f} IoU {k.iou:.3f}",
        f"reference retrieval ({r.queries} queries, gallery {r.gallery}): R@1 "
        f"{r.recall_at_1:.3f} R@5 {r.recall_at_5:.3f} R@10 {r.recall_at_10:.3f} "
        f"(chance R@1 {r.chance_recall_at_1:.3f})",
        f"reference captions ({c.samples} samples): BLEU-4 {c.bleu4:.3f} ROUGE-L "
        f"{c.rouge_l:.3f} CIDEr {c.cider:.3f}",
        *_temporal_line(m),
    ]


def _temporal_line(m: Any) -> list[str]:
    """The hard-negative retrieval of a sequence release (none for pairs)."""
    t = getattr(m, "retrieval_temporal", None)
    if t is None:
        return []
    return [
        f"reference retrieval with {t.hard_negatives} same-place other-date negatives "
        f"(gallery {t.gallery}): R@1 {t.recall_at_1:.3f} (chance {t.chance_recall_at_1:.3f}), "
        f"temporal R@1 {t.temporal_recall_at_1:.3f} (chance "
        f"{t.chance_temporal_recall_at_1:.3f})"
    ]


@app.command("train-reference")
def train_reference_cmd(
    release_dir: Annotated[Path, typer.Argument(help="Release folder (holds manifest.json)")],
    epochs: Annotated[
        int | None, typer.Option(help="Change-model epochs (reference.epochs)")
    ] = None,
    retrieval_epochs: Annotated[
        int | None, typer.Option(help="Pair-encoder epochs (reference.retrieval_epochs)")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="DataLoader worker processes (reference.workers)")
    ] = None,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Do not re-render report/index.html")
    ] = False,
) -> None:
    """Train the reference model on a release: mask, retrieval and caption metrics, disagreement.

    Settings come from the release config's `reference:` section; the options override them.
    Writes reference/ (weights, metrics.json, MODEL_CARD.md), a `disagreement` column in
    samples.parquet, and the manifest entries that `geodelta verify` checks.
    """
    import time

    _release(release_dir)
    overrides = {
        k: v
        for k, v in (
            ("epochs", epochs),
            ("retrieval_epochs", retrieval_epochs),
            ("workers", workers),
        )
        if v is not None
    }
    try:
        cfg = api.reference_config(release_dir, **overrides)
    except api.ReferenceError as exc:
        raise _fail(str(exc)) from None
    start = time.perf_counter()
    m = _train_reference(release_dir, cfg, not no_report, verbose=True)
    seconds = time.perf_counter() - start
    table = Table(title=Text(f"geodelta train-reference: {m.release} ({seconds:.0f} s)"))
    for col in ("group", "metric", "value", "reference point"):
        table.add_column(col)
    g = max(m.retrieval.gallery, 1)
    base = m.training.get("baselines", {}).get("captions_random_train_caption", {})
    rows = [
        ("masks", "precision", m.masks.precision, None),
        ("masks", "recall", m.masks.recall, None),
        ("masks", "F1", m.masks.f1, None),
        ("masks", "IoU", m.masks.iou, None),
        ("retrieval", "Recall@1", m.retrieval.recall_at_1, ("chance", 1 / g)),
        ("retrieval", "Recall@5", m.retrieval.recall_at_5, ("chance", min(5, g) / g)),
        ("retrieval", "Recall@10", m.retrieval.recall_at_10, ("chance", min(10, g) / g)),
        ("captions", "BLEU-4", m.captions.bleu4, ("random caption", base.get("bleu4"))),
        ("captions", "ROUGE-L", m.captions.rouge_l, ("random caption", base.get("rouge_l"))),
        ("captions", "CIDEr", m.captions.cider, ("random caption", base.get("cider"))),
    ]
    for group, name, value, point in rows:
        ref = "" if point is None or point[1] is None else f"{point[0]} {float(point[1]):.3f}"
        table.add_row(group, name, f"{value:.3f}", ref)
    console.print(table)
    _say(
        f"trained on {m.train_split} ({m.train_samples} samples), evaluated on {m.eval_split} "
        f"({m.eval_samples} samples)"
    )
    if m.disagreement is not None and m.disagreement.top:
        _say(f"review first: {', '.join(m.disagreement.top[:5])}")
    typer.echo(str(release_dir / "reference" / "metrics.json"))


baseline_app = typer.Typer(
    name="baseline",
    help="The trained baseline change model (FC-Siam-diff): train on a release, evaluate.",
    no_args_is_help=True,
)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("train")
def baseline_train(
    shards: Annotated[
        Path, typer.Option("--shards", help="Release folder (or its shards/ folder) to train on")
    ],
    out: Annotated[Path, typer.Option("--out", help="Parent folder of the saved model")] = Path(
        "models"
    ),
    epochs: Annotated[int, typer.Option(help="Passes over the train split")] = 10,
    batch_size: Annotated[int, typer.Option(help="Samples per batch")] = 8,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of init, shuffling and augmentation")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes")] = 2,
    patch: Annotated[int, typer.Option(help="Random crop size in pixels (0 = whole samples)")] = 0,
    base_channels: Annotated[int, typer.Option(help="Width of the first level")] = 16,
    split: Annotated[str, typer.Option(help="Split to train on")] = "train",
    threshold: Annotated[float, typer.Option(help="Threshold of the reported metrics")] = 0.5,
    threads: Annotated[
        int, typer.Option(help="torch threads of the training process (0 = torch's default)")
    ] = 0,
    device: Annotated[
        str, typer.Option(help="Train on cpu, cuda, or auto (CUDA when torch sees one)")
    ] = "auto",
) -> None:
    """Train FC-Siam-diff on a release's shards; save weights under their hash + a model card."""
    try:
        saved, metrics = api.train_baseline(
            shards,
            out,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            workers=workers,
            patch=patch or None,
            base_channels=base_channels,
            threads=threads or None,
            split=split,
            threshold=threshold,
            on_epoch=lambda e, loss: _say(f"epoch {e + 1}/{epochs}: loss {loss:.4f}"),
            device=device,
        )
    except (GeodeltaError, ValueError) as exc:  # ShardError, ModelError, a bad setting
        raise _fail(str(exc)) from None
    for name, m in metrics.items():
        _say(
            f"{name}: precision {m['precision']:.3f} recall {m['recall']:.3f} "
            f"F1 {m['f1']:.3f} IoU {m['iou']:.3f}"
        )
    _say(f"model card: {saved.card_md}")
    typer.echo(str(saved.weights))


@baseline_app.command("eval")
def baseline_eval(
    weights: Annotated[Path, typer.Option("--weights", help="weights.pt (or its folder)")],
    shards: Annotated[Path, typer.Option("--shards", help="Release folder (or its shards/)")],
    split: Annotated[str, typer.Option(help="Split to score")] = "test",
    threshold: Annotated[float, typer.Option(help="Change probability threshold")] = 0.5,
    batch_size: Annotated[int, typer.Option(help="Pairs per forward pass")] = 8,
) -> None:
    """Score baseline weights on one split of a release (change-class metrics, JSON)."""
    try:
        out = api.evaluate_baseline(
            weights, shards, split=split, threshold=threshold, batch_size=batch_size
        )
    except (GeodeltaError, FileNotFoundError, ValueError) as exc:  # ShardError, bad weights
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(out, indent=2))
