"""The baseline change model: FC-Siam-diff, training, content-hashed weights, inference, fusion."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geodelta.annotators.models.baseline import (
    BaselineChangeAnnotator,
    BaselineError,
    change_metrics,
    fuse_masks,
)
from geodelta.pipelines.stages.encode import build_meta, meta_json
from geodelta.pipelines.stages.labels.landcover import label_from_landcover
from geodelta.schemas import SampleMeta, parse_config
from geodelta.schemas.classes import BINARY_CHANGE, CLASS_INDEX, transition_code
from tests.conftest import REPO, minimal_config
from tests.factories import make_config, make_sample

torch = pytest.importorskip("torch")

from geodelta.annotators.models.change_model import (  # noqa: E402  (after the torch skip)
    FCSiamDiff,
    ModelIntegrityError,
    TrainConfig,
    change_loss,
    fit,
    load_model,
    predict_proba,
    save_model,
    seed_everything,
    state_dict_sha256,
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, 2 spinning threads ran 9x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(bands: int = 4, seed: int = 0) -> FCSiamDiff:
    seed_everything(seed)
    return FCSiamDiff(bands, base_channels=4, dropout=0.0).eval()


# -- the network ------------------------------------------------------------------------------
@pytest.mark.parametrize(("bands", "h", "w"), [(1, 16, 16), (4, 37, 50), (13, 64, 48)])
def test_forward_shape_for_any_band_count_and_size(bands: int, h: int, w: int) -> None:
    model = tiny_model(bands)
    out = model(torch.rand(2, bands, h, w), torch.rand(2, bands, h, w))
    assert tuple(out.shape) == (2, 1, h, w)
    assert torch.isfinite(out).all()


def test_forward_rejects_wrong_band_count() -> None:
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        tiny_model(4)(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_swapping_the_dates_gives_the_same_output() -> None:
    model = tiny_model(4)
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(3, 4, 40, 40, generator=gen)
    b = a.clone()
    b[:, :, 10:20, 10:20] += 0.3
    with torch.no_grad():
        ab, ba = model(a, b), model(b, a)
        aa = model(a, a)
    assert torch.equal(ab, ba)  # |f(a) - f(b)| at every level: exactly symmetric
    assert not torch.allclose(ab, aa)  # and the output does depend on the difference


def test_change_loss_weights_the_rare_class() -> None:
    logits = torch.zeros(1, 1, 4, 4)  # p = 0.5 everywhere
    target = torch.zeros(1, 4, 4)
    target[0, 0, 0] = 1.0
    valid = torch.ones(1, 4, 4)
    ln2 = float(np.log(2.0))
    # auto weight = 15 unchanged / 1 changed: (15 * ln2 + 15 * ln2) / 16
    bce = change_loss(logits, target, valid, dice_weight=0.0)
    assert float(bce) == pytest.approx(30 * ln2 / 16, rel=1e-6)
    plain = change_loss(logits, target, valid, pos_weight=1.0, dice_weight=0.0)
    assert float(plain) == pytest.approx(ln2, rel=1e-6)
    # invalid pixels do not count: only the changed pixel left
    only = torch.zeros(1, 4, 4)
    only[0, 0, 0] = 1.0
    assert float(change_loss(logits, target, only, dice_weight=0.0)) == pytest.approx(ln2)


# -- training ---------------------------------------------------------------------------------
def synthetic_pairs(n: int, seed: int, size: int = 32, bands: int = 3) -> tuple[Any, ...]:
    """Textured scenes; the after date has one bright square (the change) and small noise."""
    rng = np.random.default_rng(seed)
    before = rng.normal(0.2, 0.03, (n, bands, size, size)).astype(np.float32)
    after = before + rng.normal(0.0, 0.005, before.shape).astype(np.float32)
    target = np.zeros((n, size, size), np.float32)
    for i in range(n):
        s = int(rng.integers(6, 11))
        r, c = (int(v) for v in rng.integers(0, size - s, 2))
        after[i, :, r : r + s, c : c + s] += 0.25
        target[i, r : r + s, c : c + s] = 1.0
    return before, after, target


def batches_of(before: np.ndarray, after: np.ndarray, target: np.ndarray, size: int) -> Any:
    def epoch_batches(epoch: int) -> Iterator[Any]:
        order = np.random.default_rng(epoch).permutation(len(before))
        for k in range(0, len(order), size):
            idx = order[k : k + size]
            yield (
                torch.from_numpy(before[idx]),
                torch.from_numpy(after[idx]),
                torch.from_numpy(target[idx]),
                torch.ones(len(idx), *target.shape[1:]),
            )

    return epoch_batches


def train_tiny(seed: int = 0, epochs: int = 30, n: int = 16) -> tuple[FCSiamDiff, Any]:
    before, after, target = synthetic_pairs(n, seed=10)
    cfg = TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, seed=seed, base_channels=4, dropout=0)
    seed_everything(seed)
    model = FCSiamDiff(3, base_channels=4, dropout=0.0)
    result = fit(model, batches_of(before, after, target, 8), cfg)
    return model, result


def test_a_few_epochs_decrease_the_loss() -> None:
    _, result = train_tiny(epochs=5)
    assert len(result.losses) == 5 and result.batches == 10
    assert result.losses[-1] < 0.8 * result.losses[0]


@pytest.mark.slow
def test_tiny_training_learns_an_easy_change() -> None:
    model, result = train_tiny()
    assert result.losses[-1] < 0.3 * result.losses[0]
    before, after, target = synthetic_pairs(8, seed=99)  # unseen scenes
    probs = predict_proba(model, list(zip(before, after, strict=True)), batch_size=4)
    m = change_metrics(np.stack(probs) >= 0.5, target > 0)
    assert m.f1 > 0.9, m


def test_training_is_deterministic_and_the_hash_is_stable(tmp_path: Path) -> None:
    a, _ = train_tiny(seed=3, epochs=1, n=8)
    b, _ = train_tiny(seed=3, epochs=1, n=8)
    c, _ = train_tiny(seed=4, epochs=1, n=8)
    ha, hb = state_dict_sha256(a.state_dict()), state_dict_sha256(b.state_dict())
    assert ha == hb and len(ha) == 64
    assert state_dict_sha256(c.state_dict()) != ha
    # a copy with the same numbers hashes alike; one changed weight does not
    clone = {k: v.clone() for k, v in a.state_dict().items()}
    assert state_dict_sha256(clone) == ha
    clone["head.bias"] += 1e-6
    assert state_dict_sha256(clone) != ha


# -- saving, model card -----------------------------------------------------------------------
def test_saved_under_content_hash_with_model_card(tmp_path: Path) -> None:
    model = tiny_model(4)
    card = {
        "bands": ["B02", "B03", "B04", "B08"],
        "tile": None,
        "trained_on": {"name": "demo", "version": "0.1.0", "config_hash": "ab" * 32},
        "training": {"epochs": 3, "losses": [0.9, 0.5, 0.4]},
        "metrics": {
            "val": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "iou": 0.2, "pixels": 100}
        },
    }
    saved = save_model(model, tmp_path, card)
    digest = state_dict_sha256(model.state_dict())
    assert saved.sha256 == digest and saved.directory == tmp_path / digest[:16]
    assert saved.model_id == f"fc-siam-diff@sha256:{digest}"
    data = json.loads(saved.card_json.read_text())
    assert data["sha256"] == digest and data["bands"] == card["bands"]
    assert data["hparams"] == {"in_channels": 4, "base_channels": 4, "dropout": 0.0}
    assert data["trained_on"]["config_hash"] == "ab" * 32
    md = saved.card_md.read_text()
    assert digest in md and "F1 0.3333" in md and "demo 0.1.0" in md
    # identical weights, same folder and bytes
    again = save_model(model, tmp_path, card)
    assert again.weights == saved.weights
    assert again.weights.read_bytes() == saved.weights.read_bytes()
    loaded, loaded_card = load_model(saved.directory)
    assert state_dict_sha256(loaded.state_dict()) == digest
    assert loaded_card["model_id"] == saved.model_id


def test_load_refuses_weights_that_differ_from_the_card(tmp_path: Path) -> None:
    saved = save_model(tiny_model(4), tmp_path, {"bands": ["a", "b", "c", "d"]})
    other = tiny_model(4, seed=9)
    blob = {
        "architecture": "fc-siam-diff",
        "hparams": other.hparams(),
        "state_dict": other.state_dict(),
    }
    torch.save(blob, saved.weights)
    with pytest.raises(ModelIntegrityError, match="differs from the card"):
        load_model(saved.weights)
    torch.save({"something": "else"}, saved.weights)
    with pytest.raises(ModelIntegrityError, match="not a fc-siam-diff weights file"):
        load_model(saved.weights)
    with pytest.raises(FileNotFoundError, match=r"baseline\.weights"):
        load_model(tmp_path / "nope.pt")


# -- inference annotator ----------------------------------------------------------------------
def test_annotator_is_batched_and_loads_once(tmp_path: Path) -> None:
    saved = save_model(tiny_model(4), tmp_path, {"bands": ["B02", "B03", "B04", "B08"]})
    ann = BaselineChangeAnnotator(saved.weights, batch_size=2)
    assert ann.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 2}
    rng = np.random.default_rng(0)
    pairs = [
        (rng.random((4, 24, 24), np.float32), rng.random((4, 24, 24), np.float32)) for _ in range(3)
    ]
    pairs[2][1][:, 0, :5] = np.nan  # no data on the after date
    batched = ann.run_inference(pairs)
    single = [ann.run_inference([p])[0] for p in pairs]
    assert ann.loads == 1
    assert len(batched) == 3 and all(p.shape == (24, 24) and p.dtype == np.float32 for p in batched)
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert (batched[2][0, :5] == 0).all() and ((batched[0] > 0) & (batched[0] < 1)).all()
    assert ann.model_id == saved.model_id
    ann.check_bands(["B02", "B03", "B04", "B08"])
    with pytest.raises(BaselineError, match="trained on bands"):
        ann.check_bands(["B02", "B03", "B04"])
    with pytest.raises(BaselineError, match="takes 4 bands"):
        ann.run_inference([(pairs[0][0][:3], pairs[0][1][:3])])


def test_tiled_inference_covers_every_pixel() -> None:
    model = tiny_model(2)
    rng = np.random.default_rng(1)
    pair = (rng.random((2, 40, 56), np.float32), rng.random((2, 40, 56), np.float32))
    (whole,) = predict_proba(model, [pair])
    (tiled,) = predict_proba(model, [pair], tile=16, batch_size=5)
    assert tiled.shape == whole.shape == (40, 56)
    assert ((tiled > 0) & (tiled < 1)).all()


def test_importing_the_annotator_does_not_import_torch() -> None:
    code = (
        "import sys, geodelta.annotators.models.baseline, geodelta.pipelines.training.change_model;"
        "print('torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


# -- fusion and metrics -----------------------------------------------------------------------
def test_fusion_modes_on_a_hand_made_case() -> None:
    code = transition_code("cropland", "built_up")
    label = np.array([[0, code, code], [0, 0, code], [0, 0, 0]], np.uint8)
    prob = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.5], [0.6, 0.1, 0.0]], np.float32)
    valid = np.array([[1, 1, 1], [1, 1, 1], [0, 1, 1]], bool)
    none = fuse_masks(label, prob, threshold=0.5, mode="none")
    assert (none == label).all() and none is not label
    inter = fuse_masks(label, prob, threshold=0.5, mode="intersect")
    assert inter.tolist() == [[0, code, 0], [0, 0, code], [0, 0, 0]]
    union = fuse_masks(label, prob, threshold=0.5, mode="union", valid=valid)
    b = BINARY_CHANGE
    assert union.tolist() == [[b, code, code], [0, b, code], [0, 0, 0]]  # (2,0) is not valid
    assert fuse_masks(label, prob, threshold=0.5, mode="union")[2, 0] == b
    with pytest.raises(BaselineError, match="threshold"):
        fuse_masks(label, prob, threshold=1.0, mode="intersect")
    with pytest.raises(BaselineError, match="unknown fusion mode"):
        fuse_masks(label, prob, threshold=0.5, mode="xor")  # type: ignore[arg-type]
    with pytest.raises(BaselineError, match="one shape"):
        fuse_masks(label, prob[:2], threshold=0.5, mode="none")


def test_change_metrics_against_hand_counts() -> None:
    pred = np.array([1, 1, 1, 0, 0, 0, 1, 0], bool)
    target = np.array([1, 1, 0, 1, 0, 0, 1, 1], bool)
    m = change_metrics(pred, target)
    assert (m.tp, m.fp, m.fn, m.tn) == (3, 1, 2, 2)
    assert m.precision == pytest.approx(0.75) and m.recall == pytest.approx(0.6)
    assert m.f1 == pytest.approx(6 / 9) and m.iou == pytest.approx(0.5)
    valid = np.array([1, 1, 0, 0, 1, 1, 1, 1], bool)  # drops one fp and one fn
    mv = change_metrics(pred, target, valid)
    assert (mv.tp, mv.fp, mv.fn, mv.tn) == (3, 0, 1, 2) and mv.pixels == 6
    empty = change_metrics(np.zeros(4, bool), np.zeros(4, bool))
    assert empty.precision == empty.recall == empty.f1 == empty.iou == 0.0


def _landcover_sample(flicker: bool = True) -> Any:
    """A 24x24 sample: a real 6x6 change (cropland -> built-up) and a 3x3 flicker region."""
    base = make_sample(0, shape=(24, 24), change=False)
    crop, built, grass = CLASS_INDEX["cropland"], CLASS_INDEX["built_up"], CLASS_INDEX["grassland"]
    lc0 = np.full((24, 24), crop, np.uint8)
    lc1 = lc0.copy()
    lc1[2:8, 2:8] = built
    if flicker:
        lc1[15:18, 15:18] = grass
    lc0[23, 23] = 0  # one unknown pixel
    return label_from_landcover(base, lc0, lc1, min_region_px=4, source="landcover:x", items=())


def test_fuse_sample_intersect_drops_flicker_and_recomputes_facts() -> None:
    from geodelta.pipelines.stages.fuse import fuse_sample

    sample = _landcover_sample()
    assert sample.facts.changed_pixels == 36 + 9 and sample.valid.sum() == 24 * 24 - 1
    prob = np.zeros((24, 24), np.float32)
    prob[1:9, 1:9] = 0.9  # the model sees the real change (and a ring around it)
    fused = fuse_sample(
        sample, prob, model_id="m", mode="intersect", threshold=0.5, min_region_px=4
    )
    assert fused.facts.changed_pixels == 36 and fused.facts.n_regions == 1
    assert int((fused.mask > 0).sum()) == 36
    assert fused.facts.class_pixels_after["built_up"] == 36
    assert fused.baseline is not None and fused.baseline.fusion == "intersect"
    # IoU of model (64 px) and label (45 px): 36 / (64 + 45 - 36)
    assert fused.baseline.iou == pytest.approx(36 / 73)
    union = fuse_sample(sample, prob, model_id="m", mode="union", threshold=0.5, min_region_px=4)
    assert union.facts.changed_pixels == 64 + 9
    assert {t.code for t in union.facts.transitions} >= {BINARY_CHANGE}
    none = fuse_sample(sample, prob, model_id="m", mode="none", threshold=0.5, min_region_px=4)
    assert none.facts == sample.facts and (none.mask == sample.mask).all()


def test_meta_records_model_and_fusion_only_when_present() -> None:
    from geodelta.pipelines.stages.fuse import fuse_sample

    cfg = make_config()
    plain = make_sample(0)
    meta = build_meta(plain, cfg, code_version="0", shaping_hash="h")
    data = meta_json(meta)
    assert not {"baseline_model", "fusion", "baseline_iou"} & set(data)
    assert SampleMeta.model_validate(data) == meta
    sample = _landcover_sample()
    sample = dataclasses.replace(sample, annotation=plain.annotation)
    fused = fuse_sample(
        sample,
        np.ones((24, 24), np.float32),
        model_id="fc-siam-diff@sha256:" + "0" * 64,
        mode="intersect",
        threshold=0.5,
        min_region_px=4,
    )
    data = meta_json(build_meta(fused, cfg, code_version="0", shaping_hash="h"))
    assert data["baseline_model"].endswith("0" * 64) and data["fusion"] == "intersect"
    assert data["baseline_iou"] == pytest.approx(45 / (24 * 24 - 1))


def test_config_without_weights_hashes_as_before() -> None:
    plain = parse_config(minimal_config())
    unset = parse_config(minimal_config(baseline={"threshold": 0.7, "fusion": "union"}))
    assert "baseline" not in plain.normalised()
    assert unset.config_hash() == plain.config_hash()
    with_model = parse_config(minimal_config(baseline={"weights": "models/x/weights.pt"}))
    assert with_model.config_hash() != plain.config_hash()
    assert with_model.normalised()["baseline"]["fusion"] == "intersect"


# -- end to end on a demo release -------------------------------------------------------------
@pytest.fixture(scope="module")
def baseline_demo(demo_catalog: Any, demo_release: Any) -> tuple[Any, Path]:
    """The session's demo release (tests/conftest.py) and the overrides that build it again."""
    overrides = {
        "catalog": {"url": str(demo_catalog.catalog_path)},
        "output": {"dir": str(demo_release.release_dir)},
        "aoi": {"bbox": list(demo_catalog.aoi_bbox)},
        "runner": {"name": "inprocess"},
    }
    return overrides, demo_release.release_dir


def _read_metas(release: Path) -> list[dict[str, Any]]:
    import webdataset as wds

    urls = sorted(str(p) for p in (release / "shards").glob("*.tar"))
    return [json.loads(s["json"]) for s in wds.WebDataset(urls, shardshuffle=False)]


@pytest.mark.slow
def test_cli_trains_on_demo_shards_and_a_build_records_the_model(
    baseline_demo: tuple[Any, Path], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from geodelta.pipelines.api import build
    from geodelta.pipelines.cli import app
    from geodelta.schemas import load_config

    overrides, release = baseline_demo
    plain = _read_metas(release)
    assert plain and all("baseline_model" not in m and "fusion" not in m for m in plain)

    args = ["baseline", "train", "--shards", str(release), "--out", str(tmp_path / "models")]
    res = CliRunner().invoke(
        app, [*args, "--epochs", "1", "--batch-size", "4", "--workers", "2", "--threads", "1"]
    )
    assert res.exit_code == 0, res.output
    weights = Path(res.stdout.strip().splitlines()[-1])
    card = json.loads((weights.parent / "card.json").read_text())
    manifest = json.loads((release / "manifest.json").read_text())
    assert weights.parent.name == card["sha256"][:16]
    assert card["bands"] == ["B02", "B03", "B04", "B08"]
    assert card["trained_on"]["config_hash"] == manifest["config_hash"]
    assert card["trained_on"]["samples"] == manifest["splits"]["train"]
    assert len(card["training"]["losses"]) == 1
    assert set(card["metrics"]) <= {"val", "test"}
    for m in card["metrics"].values():
        assert 0.0 <= m["f1"] <= 1.0 and m["pixels"] > 0

    res = CliRunner().invoke(
        app,
        [
            "baseline",
            "eval",
            "--weights",
            str(weights),
            "--shards",
            str(release),
            "--split",
            "train",
        ],
    )
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)
    assert scores["model_id"] == card["model_id"] and scores["pixels"] > 0

    fused_overrides = {
        **overrides,
        "output": {"dir": str(tmp_path / "fused")},
        "baseline": {"weights": str(weights), "fusion": "union", "threshold": 0.5},
    }
    result = build(load_config(REPO / "configs" / "demo.yaml", fused_overrides), progress=False)
    metas = _read_metas(result.release_dir)
    assert len(metas) == len(plain)
    for m in metas:
        assert m["baseline_model"] == card["model_id"] and m["fusion"] == "union"
        assert 0.0 <= m["baseline_iou"] <= 1.0
    # union never removes a labelled change
    by_key = {m["key"]: m for m in plain}
    for m in metas:
        assert m["facts"]["changed_pixels"] >= by_key[m["key"]]["facts"]["changed_pixels"]
