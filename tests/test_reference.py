"""geodelta train-reference on a small demo release: metrics recomputed independently, the
disagreement column, the manifest, verify, the report, the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from geodelta.pipelines.release.layout import iter_tar_samples, read_manifest
from geodelta.pipelines.release.verify import verify_release
from geodelta.schemas.reference import ReferenceMetrics
from tests.factories import build_demo_release

torch = pytest.importorskip("torch")

from geodelta.annotators.models.baseline import BaselineChangeAnnotator, change_metrics  # noqa: E402
from geodelta.annotators.models.pair_encoder import (  # noqa: E402
    PairEncoder,
    fit_pair_encoder,
    load_pair_encoder,
)
from geodelta.pipelines.cli import app  # noqa: E402
from geodelta.pipelines.report.render import write_report  # noqa: E402
from geodelta.pipelines.training.disagreement import disagreement_score  # noqa: E402
from geodelta.pipelines.training.reference import (  # noqa: E402
    ReferenceError,
    reference_config,
    train_reference,
)
from geodelta.pipelines.training.retrieval import encode_texts, make_pair_loader  # noqa: E402
from geodelta.pipelines.training.shards import change_sample  # noqa: E402

SCALE = 0.75  # 35 samples: 23 train / 6 val / 6 test


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One demo release (4 samples per shard), trained once with few epochs."""
    root = tmp_path_factory.mktemp("reference")
    release = build_demo_release(root, scale=SCALE, max_samples=4)
    before = {
        "table": pq.read_table(release / "samples.parquet"),
        "manifest": json.loads((release / "manifest.json").read_text()),
    }
    rcfg = reference_config(release, epochs=4, retrieval_epochs=15, review_top=5)
    lines: list[str] = []
    metrics = train_reference(release, cfg=rcfg, code_version="test", on_progress=lines.append)
    write_report(release)  # what the public API does after training
    return {"release": release, "metrics": metrics, "cfg": rcfg, "before": before, "lines": lines}


def _eval_samples(release: Path, split: str) -> list[tuple[str, dict[str, bytes]]]:
    out = []
    for shard in read_manifest(release).shards:
        if shard.split == split:
            out += list(iter_tar_samples(release / shard.path))
    return sorted(out)


def _rgb(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32).transpose(2, 0, 1)


@pytest.mark.slow
def test_metrics_json_is_the_returned_record(trained: dict[str, Any]) -> None:
    release, m = trained["release"], trained["metrics"]
    on_disk = ReferenceMetrics.model_validate_json((release / "reference/metrics.json").read_text())
    assert on_disk == m
    manifest = read_manifest(release)
    assert (m.train_samples, m.eval_samples) == (manifest.splits["train"], manifest.splits["test"])
    assert m.release == f"{manifest.name}-{manifest.version}"
    assert m.config_hash == manifest.config_hash and m.code_version == "test"
    assert len(m.training["change_model"]["losses"]) == 4
    assert len(m.training["pair_encoder"]["losses"]) == 15
    assert m.training["loader"]["workers"] == 2 and m.training["loader"]["shuffle_buffer"] == 64
    # trained with the kernels every x86-64 CPU runs alike (the test process's torch is not)
    assert m.training["numerics"] == {
        "aten_cpu_capability": "DEFAULT",
        "mkl_cbwr": "COMPATIBLE",
        "mkldnn": False,
        "threads": 1,
    }
    for ref in m.weights.values():
        data = (release / ref.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == ref.sha256 and len(data) == ref.bytes
    card = (release / "reference/MODEL_CARD.md").read_text()
    assert f"{m.masks.f1:.4f}" in card and "Intended use" in card and "Reproduce" in card
    assert any(line.startswith("change model: epoch 4/4") for line in trained["lines"])


@pytest.mark.slow
def test_mask_metrics_recomputed_from_the_saved_weights(trained: dict[str, Any]) -> None:
    release, m = trained["release"], trained["metrics"]
    # the weights load the way baseline.weights loads them (content hash checked)
    annotator = BaselineChangeAnnotator(release / m.weights["change_model"].path)
    assert annotator.card["sha256"].startswith(m.weights["change_model"].path.split("/")[-2])
    tp = fp = fn = 0
    pixels = 0
    for key, members in _eval_samples(release, "test"):
        s = change_sample({**members, "__key__": key})
        (prob,) = annotator.run_inference([(s["before"], s["after"])])
        valid = np.isfinite(s["before"]).all(axis=0) & np.isfinite(s["after"]).all(axis=0)
        c = change_metrics(prob >= m.masks.threshold, s["target"] > 0, valid)
        tp, fp, fn, pixels = tp + c.tp, fp + c.fp, fn + c.fn, pixels + c.pixels
    assert m.masks.pixels == pixels and m.masks.samples == 6
    assert m.masks.precision == pytest.approx(tp / (tp + fp), abs=1e-12)
    assert m.masks.recall == pytest.approx(tp / (tp + fn), abs=1e-12)
    assert m.masks.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert m.masks.iou == pytest.approx(tp / (tp + fp + fn), abs=1e-12)
    assert m.masks.changed_fraction == pytest.approx((tp + fn) / pixels, abs=1e-12)
    cf = m.masks.changed_fraction
    assert m.masks.f1 > 2 * cf / (1 + cf)  # beats calling every pixel changed


@pytest.mark.slow
def test_retrieval_recomputed_by_brute_force_and_above_chance(trained: dict[str, Any]) -> None:
    release, r = trained["release"], trained["metrics"].retrieval
    encoder, card = load_pair_encoder(release / trained["metrics"].weights["pair_encoder"].path)
    assert card["text_encoder"] == r.text_encoder
    samples = _eval_samples(release, "test")
    with torch.no_grad():
        gallery = encoder(
            torch.from_numpy(np.stack([_rgb(m["before.png"]) for _, m in samples]) / 255.0),
            torch.from_numpy(np.stack([_rgb(m["after.png"]) for _, m in samples]) / 255.0),
        ).numpy()
    hits = {1: 0, 5: 0, 10: 0}
    queries = 0
    for i, (_, members) in enumerate(samples):
        for caption in json.loads(members["captions.json"]):
            q = encode_texts([caption])[0]
            sims = gallery @ q
            order = sorted(range(len(samples)), key=lambda j: (-sims[j], j))
            rank = order.index(i)
            queries += 1
            for k in hits:
                hits[k] += rank < k
    assert (r.queries, r.gallery) == (queries, len(samples)) == (30, 6)
    assert r.recall_at_1 == pytest.approx(hits[1] / queries, abs=1e-9)
    assert r.recall_at_5 == pytest.approx(hits[5] / queries, abs=1e-9)
    assert r.recall_at_10 == pytest.approx(hits[10] / queries, abs=1e-9) == 1.0  # gallery of 6
    assert r.recall_at_1 <= r.recall_at_5 <= r.recall_at_10
    assert r.chance_recall_at_1 == pytest.approx(1 / 6)
    assert r.recall_at_1 > r.chance_recall_at_1
    assert r.recall_at_5 > 5 / 6


@pytest.mark.slow
def test_captions_scored_against_the_references(trained: dict[str, Any]) -> None:
    from geodelta.pipelines.training.caption_metrics import caption_scores

    release, c = trained["release"], trained["metrics"].captions
    chosen = json.loads((release / "reference/captions.json").read_text())
    samples = _eval_samples(release, "test")
    assert sorted(chosen) == [k for k, _ in samples] and c.samples == 6
    train_captions = {
        cap
        for shard in read_manifest(release).shards
        if shard.split == "train"
        for _, members in iter_tar_samples(release / shard.path)
        for cap in json.loads(members["captions.json"])
    }
    for key, members in samples:
        assert chosen[key]["references"] == json.loads(members["captions.json"])
        assert chosen[key]["candidate"] in train_captions  # retrieved, never copied from eval
    again = caption_scores(
        {k: v["references"] for k, v in chosen.items()},
        {k: v["candidate"] for k, v in chosen.items()},
    )
    assert (again.bleu4, again.rouge_l, again.cider) == pytest.approx((c.bleu4, c.rouge_l, c.cider))
    rand = trained["metrics"].training["baselines"]["captions_random_train_caption"]
    assert c.cider > rand["cider"] and c.rouge_l > rand["rouge_l"]


@pytest.mark.slow
def test_disagreement_column_and_summary(trained: dict[str, Any]) -> None:
    release, m = trained["release"], trained["metrics"]
    table = pq.read_table(release / "samples.parquet")
    old = trained["before"]["table"]
    # every other column and the row order unchanged; one float column added
    assert table.column_names == [*old.column_names, "disagreement"]
    assert table.drop_columns(["disagreement"]).equals(old)
    rows = table.to_pylist()
    scores = {r["key"]: r["disagreement"] for r in rows}
    assert len(scores) == sum(read_manifest(release).splits.values()) == m.disagreement.samples
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    ranked = sorted(scores, key=lambda k: (-scores[k], k))
    assert list(m.disagreement.top) == ranked[:5]
    assert scores[m.disagreement.top[0]] == max(scores.values())
    assert m.disagreement.mean == pytest.approx(np.mean(list(scores.values())))
    assert "s = 0.01" in m.disagreement.definition
    # one sample by hand, with the saved weights
    key = m.disagreement.top[0]
    annotator = BaselineChangeAnnotator(release / m.weights["change_model"].path)
    split = next(r["split"] for r in rows if r["key"] == key)
    members = dict(_eval_samples(release, split))[key]
    s = change_sample({**members, "__key__": key})
    (prob,) = annotator.run_inference([(s["before"], s["after"])])
    valid = np.isfinite(s["before"]).all(axis=0) & np.isfinite(s["after"]).all(axis=0)
    expected = disagreement_score(prob >= m.masks.threshold, s["target"] > 0, valid, smoothing=0.01)
    assert scores[key] == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_manifest_lists_reference_files_and_verify_passes(trained: dict[str, Any]) -> None:
    release = trained["release"]
    manifest = json.loads((release / "manifest.json").read_text())
    old = trained["before"]["manifest"]
    paths = [f["path"] for f in manifest["files"]]
    assert set(paths) >= {f["path"] for f in old["files"]} and paths == sorted(paths)  # path order
    ref = [p for p in paths if p.startswith("reference/")]
    assert "reference/metrics.json" in ref and "reference/MODEL_CARD.md" in ref
    assert any(p.startswith("reference/change_model/") and p.endswith("weights.pt") for p in ref)
    assert any(p.startswith("reference/pair_encoder/") and p.endswith("weights.pt") for p in ref)
    entry = next(f for f in manifest["files"] if f["path"] == "samples.parquet")
    data = (release / "samples.parquet").read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert {k: v for k, v in manifest.items() if k != "files"} == {
        k: v for k, v in old.items() if k != "files"
    }
    result = verify_release(release)
    assert result.ok, result.problems
    # verify now guards the reference files too
    copy = release.parent / "tampered"
    shutil.copytree(release, copy)
    (copy / "reference/metrics.json").write_text("{}")
    problems = verify_release(copy).problems
    assert any(p.startswith("reference/metrics.json: sha256 mismatch") for p in problems)
    shutil.rmtree(copy)


@pytest.mark.slow
def test_report_shows_metrics_and_review_list(trained: dict[str, Any]) -> None:
    release, m = trained["release"], trained["metrics"]
    page = (release / "report/index.html").read_text()
    ref = page[page.index("<section id='reference'>") :]
    ref = ref[: ref.index("</section>")]
    assert "not trained yet" not in ref
    assert f"<td class='n'>{m.masks.f1:.3f}</td>" in ref
    assert f"<td>Recall@5</td><td class='n'>{m.retrieval.recall_at_5:.3f}</td>" in ref
    assert f"<td>CIDEr</td><td class='n'>{m.captions.cider:.3f}</td>" in ref
    assert f"split <b>train</b> ({m.train_samples} samples)" in ref
    review = ref[ref.index("Samples to review first") :]
    listed = re.findall(r"<td>([0-9A-Z]{3}-[^<]+)</td>", review)
    assert listed == list(m.disagreement.top)
    assert review.count("<div class='sample'>") == 5  # thumbnails of the listed samples
    assert "href='../reference/MODEL_CARD.md'" in ref
    # the re-render is byte-identical (nothing time-dependent)
    from geodelta.pipelines.report.render import render_report

    assert render_report(release) == page


@pytest.mark.slow
def test_pair_loader_is_seeded_and_splits_by_worker(trained: dict[str, Any]) -> None:
    release, cfg = trained["release"], trained["cfg"]
    urls = [str(release / s.path) for s in read_manifest(release).shards if s.split == "train"]
    assert len(urls) >= 4

    def epoch(e: int, workers: int) -> list[tuple[str, int]]:
        loader = make_pair_loader(urls, cfg.model_copy(update={"workers": workers}), e)
        return [
            (k, int(p)) for _, _, keys, picks in loader for k, p in zip(keys, picks, strict=True)
        ]

    first = epoch(0, 2)
    assert sorted(k for k, _ in first) == sorted(
        k for u in urls for k, _ in iter_tar_samples(u)
    )  # every sample once: shards split between the 2 workers, none twice
    assert epoch(0, 2) == first
    assert epoch(1, 2) != first


@pytest.mark.slow
def test_errors_say_what_to_change(trained: dict[str, Any], tmp_path: Path) -> None:
    release = trained["release"]
    with pytest.raises(ReferenceError, match=r"no samples in split 'nope'.*reference\.eval_split"):
        train_reference(release, cfg=reference_config(release, eval_split="nope"))
    with pytest.raises(ReferenceError, match="both 'train'"):
        train_reference(release, cfg=reference_config(release, eval_split="train"))
    with pytest.raises(ReferenceError, match="not a complete release"):
        train_reference(tmp_path)
    res = CliRunner().invoke(app, ["train-reference", str(tmp_path)])
    assert res.exit_code == 2 and "has no manifest.json" in " ".join(res.output.split())
    assert verify_release(release).ok  # a refused run changed nothing


@pytest.mark.slow
def test_a_rerun_gives_the_same_bytes(
    trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same release + same settings = same metrics.json, weights, column and manifest, also
    where the CPU would pick other kernels (runs last: it retrains the fixture's release in
    place). The rerun's process sees the settings another CPU would give torch: oneDNN, MKL
    and ATen held to older instruction sets (unpinned, oneDNN's alone moved the demo's masks F1
    0.482 -> 0.591: pipelines/training/numerics.py)."""
    release = trained["release"]
    names = (
        "reference/metrics.json",
        "samples.parquet",
        "manifest.json",
        "reference/MODEL_CARD.md",
    )
    first = {n: (release / n).read_bytes() for n in names}
    weights = {p: p.read_bytes() for p in sorted((release / "reference").rglob("weights.pt"))}
    assert len(weights) == 2
    for name, value in (
        ("ONEDNN_MAX_CPU_ISA", "SSE41"),
        ("MKL_ENABLE_INSTRUCTIONS", "SSE4_2"),
        ("ATEN_CPU_CAPABILITY", "avx2"),  # the child's pinned value wins
    ):
        monkeypatch.setenv(name, value)
    again = train_reference(release, cfg=trained["cfg"], code_version="test")
    assert {p: p.read_bytes() for p in weights} == weights
    assert again == trained["metrics"]
    assert {n: (release / n).read_bytes() for n in names} == first
    manifest = json.loads(first["manifest.json"])
    paths = [f["path"] for f in manifest["files"]]
    assert len(paths) == len(set(paths))  # entries replaced, not added twice
    assert verify_release(release).ok


# -- fast: no release needed ------------------------------------------------------------------
def test_pair_encoder_training_is_deterministic() -> None:
    gen = torch.Generator().manual_seed(0)
    before = torch.rand(6, 3, 32, 32, generator=gen)
    after = before.clone()
    after[:3, :, :16, :16] += 0.5  # three pairs change in the north-west
    text = torch.nn.functional.normalize(torch.randn(6, 384, generator=gen), dim=1)

    def run() -> list[float]:
        torch.manual_seed(0)
        model = PairEncoder(3, width=4)
        losses = fit_pair_encoder(
            model, lambda _e: [(before, after, text)], epochs=25, lr=1e-2
        ).losses
        return [*losses, float(sum(p.detach().sum() for p in model.parameters()))]

    a, b = run(), run()
    assert a == b
    assert a[24] < a[0] * 0.5  # it fits six pairs to their captions


def test_cli_help_lists_the_options() -> None:
    res = CliRunner().invoke(app, ["train-reference", "--help"])
    assert res.exit_code == 0
    for opt in ("--epochs", "--retrieval-epochs", "--workers", "--no-report"):
        assert opt in res.output
