"""Retrieval with hard negatives (issue 15): same-place, different-date intervals of a series
release as negatives of the reference model's text-to-sample retrieval."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from geodelta.pipelines.release.layout import iter_tar_samples, read_manifest
from geodelta.pipelines.training.temporal_retrieval import (
    hard_negative_intervals,
    interval_images,
    is_series_release,
    iter_series_intervals,
    rgb_settings,
    series_reflectance,
    temporal_metrics,
    temporal_retrieval,
)
from geodelta.schemas.reference import ReferenceMetrics, TemporalRetrievalMetrics
from tests.factories import make_metrics
from tests.series_release import plan_of, series_release

# -- the arithmetic, hand-computed ---------------------------------------------------------------


def _unit(*v: float) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


def test_intervals_of_a_sequence() -> None:
    assert hard_negative_intervals(3) == [(0, 1), (1, 2)]
    five = hard_negative_intervals(5)
    assert len(five) == 5 * 4 // 2 - 1 == 9 and (0, 4) not in five
    assert five == sorted(five) and all(i < j for i, j in five)


def test_metrics_hand_computed() -> None:
    # gallery samples a, b, c (c is a pair sample: no hard negatives); 2-d embeddings
    eval_keys = ["a", "b", "c"]
    eval_emb = np.stack([_unit(1, 0), _unit(0, 1), _unit(-1, 0)])
    negatives = {
        "a": np.stack([_unit(1, 0.1), _unit(0, -1)]),  # the first beats a's true pair for q1
        "b": np.stack([_unit(0.2, 1), _unit(1, 1)]),
    }
    queries = {
        "a": np.stack([_unit(1, 0.2), _unit(1, -0.2)]),  # q1 ranks (a-neg0, a) -> miss at 1
        "b": np.stack([_unit(0, 1)]),  # b itself: hit at 1
        "c": np.stack([_unit(-1, 0)]),  # not a series sample: no query
    }
    m = temporal_metrics(eval_keys, eval_emb, negatives, queries)
    assert m is not None
    assert (m.queries, m.samples, m.hard_negatives, m.gallery) == (3, 2, 4, 7)
    # q1 (a, +0.2): sims a-neg0 0.995+, a 0.981, b-neg1 ... -> rank 1 (miss at 1)
    # q2 (a, -0.2): a 0.981 beats a-neg0 (0.96) and every other -> hit
    # q3 (b): b 1.0 -> hit
    assert m.recall_at_1 == pytest.approx(2 / 3)
    assert m.recall_at_5 == 1.0 and m.recall_at_10 == 1.0
    # own place only: a has 3 intervals (2 negatives + itself), b 3
    assert m.temporal_recall_at_1 == pytest.approx(2 / 3)
    assert m.chance_temporal_recall_at_1 == pytest.approx(1 / 3)
    assert m.chance_recall_at_1 == pytest.approx(1 / 7)


def test_a_tie_with_a_hard_negative_is_a_miss() -> None:
    same = _unit(1, 0)
    m = temporal_metrics(["a"], same[None, :], {"a": same[None, :]}, {"a": same[None, :]})
    assert m is not None and m.recall_at_1 == 0.0 and m.temporal_recall_at_1 == 0.0
    assert m.recall_at_5 == 1.0


def test_no_series_sample_gives_none() -> None:
    emb = np.eye(2, dtype=np.float32)
    assert temporal_metrics(["a", "b"], emb, {}, {"a": emb[:1]}) is None
    # a series sample without captions asks nothing
    assert temporal_metrics(["a"], emb[:1], {"a": emb[1:]}, {"a": emb[:0]}) is None


def test_pair_metrics_file_has_no_temporal_key() -> None:
    """A pair release's metrics.json stays byte-identical: no new key, and it reads back."""
    pair = make_metrics()
    data = pair.model_dump(mode="json")
    assert "retrieval_temporal" not in data and "retrieval_temporal" not in pair.model_dump_json()
    assert ReferenceMetrics.model_validate(data) == pair
    t = TemporalRetrievalMetrics(
        recall_at_1=0.25,
        recall_at_5=0.5,
        recall_at_10=0.75,
        temporal_recall_at_1=0.4,
        queries=8,
        samples=2,
        hard_negatives=18,
        gallery=22,
        chance_recall_at_1=1 / 22,
        chance_temporal_recall_at_1=0.1,
    )
    series = pair.model_copy(update={"retrieval_temporal": t})
    out = series.model_dump(mode="json")
    assert out["retrieval_temporal"]["temporal_recall_at_1"] == 0.4
    assert {k: v for k, v in out.items() if k != "retrieval_temporal"} == data
    assert ReferenceMetrics.model_validate_json(series.model_dump_json()) == series


# -- a hand-made series release -----------------------------------------------------------------


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return series_release(tmp_path_factory.mktemp("temporal"), n=12)


def _samples(release: Path, split: str) -> list[tuple[str, dict[str, bytes]]]:
    out = []
    for shard in read_manifest(release).shards:
        if shard.split == split:
            out += list(iter_tar_samples(release / shard.path))
    return out


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32).transpose(2, 0, 1)


def test_series_images_render_as_the_pair_members(release: Path) -> None:
    manifest = read_manifest(release)
    assert is_series_release(manifest)
    rgb, vmax = rgb_settings(manifest.config)
    assert rgb == ("B04", "B03", "B02") and vmax == 0.3
    for key, members in _samples(release, "train"):
        meta = json.loads(members["json"])
        stack = series_reflectance(members, meta)
        t = len(json.loads(members["dates.json"]))
        assert stack.shape == (t, 4, 32, 32) and stack.dtype == np.float32
        images = interval_images(stack, meta["bands"], rgb, vmax)
        before, after = _png(members["before.png"]) / 255.0, _png(members["after.png"]) / 255.0
        np.testing.assert_array_equal(images[0], before.astype(np.float32))
        np.testing.assert_array_equal(images[-1], after.astype(np.float32))
        assert t == len(plan_of(int(key.split("_")[1])).windows)


def test_hard_negatives_of_the_test_split(release: Path) -> None:
    urls = [str(release / s.path) for s in read_manifest(release).shards if s.split == "test"]
    got = list(iter_series_intervals(urls, ("B04", "B03", "B02"), 0.3))
    assert [s.key for s in got] == [k for k, _ in _samples(release, "test")]
    for s in got:
        t = len(plan_of(int(s.key.split("_")[1])).windows)
        assert s.dates == t and len(s.pairs) == t * (t - 1) // 2 - 1
        assert all(b.shape == (3, 32, 32) for pair in s.pairs for b in pair)


def _fake_text(texts: Sequence[str]) -> np.ndarray:
    """Deterministic unit vectors per text (no model)."""
    out = []
    for t in texts:
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).normal(size=16).astype(np.float32)
        out.append(v / np.linalg.norm(v))
    return np.stack(out) if out else np.zeros((0, 16), np.float32)


def _fake_embed(_: Any, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """A fixed random projection of the pair's pixels (a stand-in for the pair encoder)."""
    rng = np.random.default_rng(7)
    proj = rng.normal(size=(2 * 3 * 32 * 32, 16)).astype(np.float32)
    x = np.stack([np.concatenate([b.ravel(), a.ravel()]) for b, a in pairs])
    e = x @ proj
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_end_to_end_matches_a_brute_force_ranking(release: Path) -> None:
    samples = sorted(_samples(release, "val") + _samples(release, "test"))
    urls = [str(release / s.path) for s in read_manifest(release).shards if s.split != "train"]
    keys = [k for k, _ in samples]
    caps = {k: [str(c) for c in json.loads(m["captions.json"])] for k, m in samples}
    eval_emb = _fake_embed(
        None, [(_png(m["before.png"]) / 255.0, _png(m["after.png"]) / 255.0) for _, m in samples]
    )
    m = temporal_retrieval(
        None,
        urls,
        keys,
        eval_emb,
        caps,
        rgb=("B04", "B03", "B02"),
        max_reflectance=0.3,
        embed=_fake_embed,
        encode=_fake_text,
    )
    assert m is not None
    # brute force: every other interval rendered here from the stack, ranked by hand
    negs: list[tuple[str, np.ndarray]] = []
    for key, members in samples:
        meta = json.loads(members["json"])
        images = interval_images(
            series_reflectance(members, meta), meta["bands"], ["B04", "B03", "B02"], 0.3
        )
        pairs = [(images[i], images[j]) for i, j in hard_negative_intervals(len(images))]
        negs += [(key, e) for e in _fake_embed(None, pairs)]
    hits = {1: 0, 5: 0, 10: 0}
    temporal = 0
    chance = 0.0
    queries = 0
    for i, key in enumerate(keys):
        for q in _fake_text(caps[key]):
            own = float(eval_emb[i] @ q)
            sims_s = [float(e @ q) for e in eval_emb]
            sims_n = [(k, float(e @ q)) for k, e in negs]
            rank = sum(s > own for s in sims_s) + sum(s >= own for _, s in sims_n)
            for k in hits:
                hits[k] += rank < k
            own_rank = sum(s >= own for k, s in sims_n if k == key)
            temporal += own_rank == 0
            n_int = 1 + sum(1 for k, _ in negs if k == key)
            chance += 1 / n_int
            queries += 1
    assert (m.queries, m.samples) == (queries, len(keys)) == (queries, 6)
    assert m.hard_negatives == len(negs) and m.gallery == len(negs) + len(keys)
    assert m.recall_at_1 == pytest.approx(hits[1] / queries)
    assert m.recall_at_5 == pytest.approx(hits[5] / queries)
    assert m.recall_at_10 == pytest.approx(hits[10] / queries)
    assert m.temporal_recall_at_1 == pytest.approx(temporal / queries)
    assert m.chance_temporal_recall_at_1 == pytest.approx(chance / queries)
    assert m.recall_at_10 > 0 and m.recall_at_1 <= m.recall_at_5 <= m.recall_at_10


# -- train-reference on a series release ---------------------------------------------------------


@pytest.mark.slow
def test_train_reference_writes_the_temporal_metrics(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from geodelta.annotators.models.pair_encoder import load_pair_encoder
    from geodelta.pipelines.release.verify import verify_release
    from geodelta.pipelines.training.reference import reference_config, train_reference
    from geodelta.pipelines.training.retrieval import encode_texts

    rel = series_release(tmp_path, n=16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = reference_config(rel, epochs=1, retrieval_epochs=2, review_top=3, workers=0)
        lines: list[str] = []
        m = train_reference(rel, cfg=cfg, code_version="test", on_progress=lines.append)
    finally:
        torch.set_num_threads(threads)
    t = m.retrieval_temporal
    assert t is not None
    on_disk = json.loads((rel / "reference/metrics.json").read_text())
    assert on_disk["retrieval_temporal"] == t.model_dump(mode="json")
    test = [k for k, _ in _samples(rel, "test")]
    windows = [len(plan_of(int(k.split("_")[1])).windows) for k in test]
    assert t.samples == len(test) == m.eval_samples
    assert t.hard_negatives == sum(n * (n - 1) // 2 - 1 for n in windows)
    assert t.gallery == t.hard_negatives + len(test)
    assert t.chance_temporal_recall_at_1 < 0.5
    assert any(line.startswith("retrieval with hard negatives:") for line in lines)
    assert verify_release(rel).ok
    card = (rel / "reference/MODEL_CARD.md").read_text()
    assert "Retrieval with hard negatives" in card
    assert f"intervals only, Recall@1 {t.temporal_recall_at_1:.4f}" in card
    # the saved pair encoder gives the same figures again
    encoder, _ = load_pair_encoder(rel / m.weights["pair_encoder"].path)
    urls = [str(rel / s.path) for s in read_manifest(rel).shards if s.split == "test"]
    samples = sorted(_samples(rel, "test"))
    from geodelta.annotators.models.pair_encoder import embed_pairs

    eval_emb = embed_pairs(
        encoder,
        [(_png(mm["before.png"]) / 255.0, _png(mm["after.png"]) / 255.0) for _, mm in samples],
    )
    caps = {k: [str(c) for c in json.loads(mm["captions.json"])] for k, mm in samples}
    again = temporal_retrieval(
        encoder,
        urls,
        [k for k, _ in samples],
        eval_emb,
        caps,
        rgb=("B04", "B03", "B02"),
        max_reflectance=0.3,
        encode=encode_texts,
    )
    assert again is not None
    assert again.model_dump() == pytest.approx(t.model_dump())


# -- the gate -------------------------------------------------------------------------------------


def _with_temporal(r1: float) -> ReferenceMetrics:
    t = TemporalRetrievalMetrics(
        recall_at_1=r1,
        recall_at_5=0.5,
        recall_at_10=0.75,
        temporal_recall_at_1=0.3,
        queries=8,
        samples=2,
        hard_negatives=18,
        gallery=22,
        chance_recall_at_1=1 / 22,
        chance_temporal_recall_at_1=0.1,
    )
    return make_metrics().model_copy(update={"retrieval_temporal": t})


def test_gate_rules_on_the_temporal_metrics(tmp_path: Path) -> None:
    from geodelta.pipelines.release.gate import check_gate
    from tests.test_gate import fake_release

    gate = {
        "rules": [
            {"metric": "retrieval_temporal.recall_at_1", "min": 0.1, "max_drop": 0.05},
            {"metric": "masks.f1", "min": 0.1},
        ]
    }
    pair = fake_release(tmp_path / "pair", gate=gate, ref=make_metrics())
    res = check_gate(pair)
    assert not res.ok and [r.index for r in res.failed] == [0]
    assert res.problems == (
        "gate: retrieval_temporal.recall_at_1 is measured on series releases only (time.series) "
        "and this release has none; remove gate.rules[0] or build with time.series",
    )
    assert res.rules[1].passed and res.rules[1].value == 0.5

    low = fake_release(tmp_path / "low", gate=gate, ref=_with_temporal(0.05))
    res = check_gate(low, previous=pair)  # the previous release has no temporal metrics
    assert [r.metric for r in res.failed] == ["retrieval_temporal.recall_at_1"]
    assert res.rules[0].value == 0.05 and res.rules[0].previous is None
    assert "below the minimum 0.1 (gate.rules[0].min)" in res.problems[0]
    assert any("max_drop not checked" in s for s in res.rules[0].skipped)

    high = fake_release(tmp_path / "high", gate=gate, ref=_with_temporal(0.2))
    assert check_gate(high).ok
    dropped = fake_release(tmp_path / "dropped", gate=gate, ref=_with_temporal(0.12))
    res = check_gate(dropped, previous=high)
    assert not res.ok and res.rules[0].previous == 0.2
    assert "0.08 below the previous release 0.2" in res.problems[0]
    with pytest.raises(KeyError, match="series releases only"):
        make_metrics().metric("retrieval_temporal.temporal_recall_at_1")
