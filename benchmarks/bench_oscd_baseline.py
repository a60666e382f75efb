"""Baseline change model (FC-Siam-diff) on the real OSCD cities: leave-one-city-out.

Reads the 11 OSCD cities of ``../shared/data/oscd`` (PROVENANCE.md section 2) straight with
rasterio: 13 Sentinel-2 L1C bands per date, DN / 10000, the 20 m and 60 m bands and date 2
(whose grid is a few pixels smaller in abudhabi and saclay_e) resampled (bilinear) onto date
1's B02 10 m grid, where the change mask ``cm/<city>-cm.tif`` lies (1 = no change, 2 = change).

The protocol (issue 16): for each city in turn, it is the **test** city; the next city in the
fixed order is the **validation** city; the other nine train. Training: random 64 x 64 crops
(about one per 64 x 64 of each training city per epoch, ``--pos-fraction`` of them centred on a
changed pixel: change oversampling), random flips / 90-degree rotations, BCE with a fixed
change weight + soft Dice, Adam; after every epoch the validation city is predicted (tiled,
50 % overlap) and the best epoch by validation F1 is kept (early stopping with
``--patience``); the decision threshold is the one that maximises F1 on the validation city,
never chosen on the test city. Every fold runs for each of ``--seeds``. Reported: per test city
P/R/F1/IoU (mean and spread over seeds), pooled over all test cities (TP/FP/FN summed) per
seed, and the unsupervised change-vector-analysis floor (magnitude of the 13-band difference,
Otsu threshold) per city. Target: pooled F1 >= 0.58, the CVA floor beaten in every city.

    .venv/bin/python benchmarks/bench_oscd_baseline.py --device auto       # the protocol
    .venv/bin/python benchmarks/bench_oscd_baseline.py --quick             # smoke test

``--device auto`` trains on CUDA when present. On this project's 2-core CPU machines one
epoch over nine cities takes minutes (``--epoch-timing`` measures it without the full run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OSCD = REPO.parent / "shared" / "data" / "oscd"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
CITIES = (
    "abudhabi", "aguasclaras", "beihai", "beirut", "bercy", "bordeaux", "cupertino", "mumbai",
    "paris", "pisa", "saclay_e",
)  # fmt: skip
BANDS_13 = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
BANDS_RGB = ("B04", "B03", "B02")
START, END = "<!-- baseline-oscd:start -->", "<!-- baseline-oscd:end -->"
KM2_PER_PX = 1e-4  # a 10 m pixel
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))


@dataclass
class City:
    name: str
    before: np.ndarray  # (C, H, W) float32 reflectance
    after: np.ndarray
    change: np.ndarray  # (H, W) bool


def _band_file(folder: Path, band: str) -> Path:
    (path,) = folder.glob(f"*_{band}.tif")
    return path


def _grid(folder: Path) -> tuple[tuple[int, int], Any, Any]:
    import rasterio

    with rasterio.open(_band_file(folder, "B02")) as ref:
        return ref.shape, ref.transform, ref.crs


def _read_date(folder: Path, bands: tuple[str, ...], grid: tuple[Any, Any, Any]) -> np.ndarray:
    """The bands of one date on ``grid`` (date 1's B02 grid), reflectance."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    shape, transform, crs = grid
    out = np.empty((len(bands), *shape), np.float32)
    for i, band in enumerate(bands):
        with rasterio.open(_band_file(folder, band)) as ds:
            dn = ds.read(1).astype(np.float32)
            if ds.shape == shape and ds.transform == transform:
                out[i] = dn
            else:
                reproject(
                    dn,
                    out[i],
                    src_transform=ds.transform,
                    src_crs=ds.crs,
                    dst_transform=transform,
                    dst_crs=crs,
                    resampling=Resampling.bilinear,
                )
    return out / 10000.0


def load_city(name: str, bands: tuple[str, ...]) -> City:
    """One OSCD city on date 1's 10 m B02 grid (the mask's grid)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    root = OSCD / name
    grid = _grid(root / "imgs_1")
    before = _read_date(root / "imgs_1", bands, grid)
    after = _read_date(root / "imgs_2", bands, grid)
    with warnings.catch_warnings():  # cm.tif has no georeferencing (PROVENANCE.md)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(root / "cm" / f"{name}-cm.tif") as ds:
            cm = ds.read(1)
    if cm.shape != before.shape[1:]:
        raise ValueError(f"{name}: mask {cm.shape} is not on B02's grid {before.shape[1:]}")
    return City(name, before, after, cm == 2)


def crops_for_epoch(
    cities: list[City], patch: int, pos_fraction: float, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """(city, row, col) of this epoch's crops: about one crop per patch area of each city."""
    out = []
    for ci, city in enumerate(cities):
        h, w = city.change.shape
        n = math.ceil(h * w / patch**2)
        changed = np.argwhere(city.change)
        for _ in range(n):
            if len(changed) and rng.random() < pos_fraction:
                r, c = changed[rng.integers(len(changed))]
                r0 = int(np.clip(r - rng.integers(patch), 0, h - patch))
                c0 = int(np.clip(c - rng.integers(patch), 0, w - patch))
            else:
                r0, c0 = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
            out.append((ci, r0, c0))
    rng.shuffle(out)
    return out


def make_batches(
    cities: list[City], patch: int, batch_size: int, pos_fraction: float, seed: int
) -> Any:
    import torch

    def epoch_batches(epoch: int) -> Any:
        rng = np.random.default_rng([seed, epoch])
        crops = crops_for_epoch(cities, patch, pos_fraction, rng)
        for k in range(0, len(crops), batch_size):
            b, a, t = [], [], []
            for ci, r0, c0 in crops[k : k + batch_size]:
                city = cities[ci]
                sl = (slice(r0, r0 + patch), slice(c0, c0 + patch))
                x1, x2, y = (
                    city.before[:, sl[0], sl[1]],
                    city.after[:, sl[0], sl[1]],
                    city.change[sl],
                )
                rot, flip = int(rng.integers(4)), bool(rng.integers(2))
                x1, x2, y = np.rot90(x1, rot, (1, 2)), np.rot90(x2, rot, (1, 2)), np.rot90(y, rot)
                if flip:
                    x1, x2, y = x1[:, :, ::-1], x2[:, :, ::-1], y[:, ::-1]
                b.append(np.ascontiguousarray(x1))
                a.append(np.ascontiguousarray(x2))
                t.append(np.ascontiguousarray(y, dtype=np.float32))
            tt = torch.from_numpy(np.stack(t))
            yield (
                torch.from_numpy(np.stack(b)),
                torch.from_numpy(np.stack(a)),
                tt,
                torch.ones_like(tt),
            )

    return epoch_batches


def _counts(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    return {
        "tp": int((pred & truth).sum()),
        "fp": int((pred & ~truth).sum()),
        "fn": int((~pred & truth).sum()),
        "pixels": int(truth.size),
    }


def scores(c: dict[str, int]) -> dict[str, float]:
    """Precision, recall, F1, IoU of the change class from TP/FP/FN."""
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    return {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "iou": tp / (tp + fp + fn) if tp else 0.0,
    }


def best_threshold(prob: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 over :data:`THRESHOLDS` (ties: the lower threshold)."""
    best = (0.5, -1.0)
    for t in THRESHOLDS:
        f1 = scores(_counts(prob >= t, truth))["f1"]
        if f1 > best[1]:
            best = (t, f1)
    return best


def cva_floor(city: City) -> dict[str, Any]:
    """Unsupervised change-vector analysis: the per-pixel magnitude of the band difference
    (bands standardised over the city), thresholded by Otsu."""
    from skimage.filters import threshold_otsu

    diff = city.after - city.before
    std = diff.reshape(diff.shape[0], -1).std(axis=1).reshape(-1, 1, 1) + 1e-6
    mag = np.sqrt(((diff / std) ** 2).sum(axis=0))
    pred = mag > threshold_otsu(mag)
    c = _counts(pred, city.change)
    return c | scores(c)


def run_fold(
    test: City, val: City, train: list[City], seed: int, args: argparse.Namespace, device: Any
) -> dict[str, Any]:
    import torch

    from geodelta.annotators.models.change_model import (
        FCSiamDiff,
        change_loss,
        predict_proba,
        seed_everything,
        train_epochs,
    )

    seed_everything(seed)
    model = FCSiamDiff(test.before.shape[0], base_channels=args.base_channels, dropout=0.2).to(
        device
    )
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    batches = make_batches(train, args.patch, args.batch_size, args.pos_fraction, seed)

    def loss_of(batch: Any) -> Any:
        before, after, target, valid = (t.to(device) for t in batch)
        logits = model(before.float(), after.float())
        return change_loss(logits, target, valid, pos_weight=args.pos_weight, dice_weight=1.0)

    best: dict[str, Any] = {"f1": -1.0}
    epoch_s: list[float] = []
    losses: list[float] = []
    stale = 0
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        (loss,), _ = train_epochs(model, opt, lambda _e, ep=epoch: batches(ep), 1, loss_of)
        epoch_s.append(time.perf_counter() - t0)
        losses.append(loss)
        (prob,) = predict_proba(model, [(val.before, val.after)], batch_size=32, tile=args.patch)
        thr, f1 = best_threshold(prob, val.change)
        print(
            f"    epoch {epoch + 1}: loss {loss:.4f}, val {val.name} F1 {f1:.3f} at {thr} "
            f"({epoch_s[-1]:.0f} s)",
            flush=True,
        )
        if f1 > best["f1"]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best = {"f1": f1, "threshold": thr, "epoch": epoch + 1, "state": state}
            stale = 0
        else:
            stale += 1
            if stale >= args.patience:
                break
    model.load_state_dict(best["state"])
    (prob,) = predict_proba(model, [(test.before, test.after)], batch_size=32, tile=args.patch)
    c = _counts(prob >= best["threshold"], test.change)
    return {
        "test": test.name,
        "val": val.name,
        "seed": seed,
        "threshold": best["threshold"],
        "best_epoch": best["epoch"],
        "val_f1": best["f1"],
        "epochs_run": len(epoch_s),
        "epoch_s": epoch_s,
        "losses": losses,
        "changed_px": int(test.change.sum()),
        **c,
        **scores(c),
        "model": model,
    }


def throughput(model: Any, city: City, patch: int, batch_size: int, n: int) -> dict[str, float]:
    """Forward passes only: n patches of patch x patch, batched."""
    import torch

    h, w = city.change.shape
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, h - patch + 1, n), rng.integers(0, w - patch + 1, n)
    b = torch.from_numpy(
        np.stack(
            [city.before[:, r : r + patch, c : c + patch] for r, c in zip(rows, cols, strict=True)]
        )
    )
    a = torch.from_numpy(
        np.stack(
            [city.after[:, r : r + patch, c : c + patch] for r, c in zip(rows, cols, strict=True)]
        )
    )
    device = next(model.parameters()).device
    b, a = b.to(device), a.to(device)
    model.eval()
    with torch.no_grad():
        model(b[:batch_size], a[:batch_size])  # warm-up
        t0 = time.perf_counter()
        for k in range(0, n, batch_size):
            model(b[k : k + batch_size], a[k : k + batch_size])
        secs = time.perf_counter() - t0
    return {
        "patches": n,
        "seconds": secs,
        "patches_per_s": n / secs,
        "km2_per_s": n * patch * patch * KM2_PER_PX / secs,
    }


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def summarise(folds: list[dict[str, Any]], floors: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per test city (over seeds), pooled per seed (TP/FP/FN summed over cities), the floor."""
    seeds = sorted({f["seed"] for f in folds})
    cities = list(dict.fromkeys(f["test"] for f in folds))
    per_city = {}
    for name in cities:
        runs = [f for f in folds if f["test"] == name]
        per_city[name] = {
            k: [r[k] for r in runs] for k in ("precision", "recall", "f1", "iou", "threshold")
        } | {"val": runs[0]["val"], "changed_px": runs[0]["changed_px"]}
        per_city[name]["beats_floor"] = bool(np.mean(per_city[name]["f1"]) > floors[name]["f1"])
    pooled = {}
    for seed in seeds:
        runs = [f for f in folds if f["seed"] == seed]
        pooled[seed] = scores({k: sum(r[k] for r in runs) for k in ("tp", "fp", "fn", "pixels")})
    f1s = [v["f1"] for v in pooled.values()]
    epoch_s = [s for f in folds for s in f["epoch_s"]]
    return {
        "seeds": seeds,
        "per_city": per_city,
        "pooled": pooled,
        "pooled_f1_mean": float(np.mean(f1s)),
        "pooled_f1_std": float(np.std(f1s)),
        "pooled_f1_min": float(np.min(f1s)),
        "beats_floor_everywhere": all(c["beats_floor"] for c in per_city.values()),
        "epoch_s_median": float(np.median(epoch_s)) if epoch_s else 0.0,
        "floor_pooled": scores(
            {k: sum(floors[c][k] for c in cities) for k in ("tp", "fp", "fn", "pixels")}
        ),
    }


def markdown(report: dict[str, Any]) -> str:
    a = report["args"]
    summ = report["summary"]
    target = 0.58
    met = summ["pooled_f1_mean"] >= target
    full = len(summ["per_city"]) == len(CITIES) and len(summ["seeds"]) >= 3
    lines = [
        START,
        "## Baseline change model (OSCD, leave-one-city-out)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; torch {report['torch']}, device {report['device']}, "
        f"{a['threads']} intra-op thread(s). Total {report['total_s']:.0f} s; one training "
        f"epoch ({len(summ['per_city']) - 2} training cities) {summ['epoch_s_median']:.0f} s "
        "(median).",
        "",
        f"FC-Siam-diff ({report['n_bands']} bands; first level {a['base_channels']} channels). "
        f"Per fold: one test city, the next city in alphabetical order for validation (early "
        f"stopping, patience {a['patience']}; threshold chosen there), the others train; at "
        f"most {a['epochs']} epochs of random {a['patch']} px crops ({a['pos_fraction']:.0%} "
        f"centred on change), flips/rotations, batch {a['batch_size']}, Adam lr {a['lr']}, "
        f"BCE (change weight {a['pos_weight']}) + Dice. Seeds: "
        f"{', '.join(map(str, summ['seeds']))}.",
        "",
        "| test city | val city | changed px | precision | recall | F1 | IoU | CVA floor F1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in summ["per_city"].items():
        floor = report["floors"][name]["f1"]
        lines.append(
            f"| {name} | {c['val']} | {c['changed_px']:,} | {_spread(c['precision'])} | "
            f"{_spread(c['recall'])} | {_spread(c['f1'])} | {_spread(c['iou'])} | "
            f"{floor:.3f}{'' if c['beats_floor'] else ' (not beaten)'} |"
        )
    fp = summ["floor_pooled"]
    lines += [
        "",
        f"**Pooled F1 {summ['pooled_f1_mean']:.3f}** (± {summ['pooled_f1_std']:.3f} over "
        f"{len(summ['seeds'])} seed(s), min {summ['pooled_f1_min']:.3f}); CVA + Otsu floor "
        f"pooled F1 {fp['f1']:.3f}. Target pooled F1 >= {target}: "
        f"**{'met' if met else 'NOT met'}**"
        + (
            ""
            if full
            else " (and this run is not the full protocol: "
            f"{len(summ['per_city'])} of {len(CITIES)} cities, {len(summ['seeds'])} seed(s))"
        )
        + f"; CVA floor beaten in every city: **{'yes' if summ['beats_floor_everywhere'] else 'no'}**.",
        "",
        f"Inference throughput ({report['device']}, forward passes only, "
        f"{report['throughput']['patches']} patches of {a['patch']}x{a['patch']} px x "
        f"{report['n_bands']} bands x 2 dates): {report['throughput']['patches_per_s']:.1f} "
        f"patches/s = {report['throughput']['km2_per_s']:.2f} km²/s at 10 m.",
        "",
        ANCHOR_NOTE,
        *(["", report["extra_note"]] if report.get("extra_note") else []),
        END,
    ]
    return "\n".join(lines) + "\n"


ANCHOR_NOTE = (
    "Published anchor (Daudt, Le Saux, Boulch, *Fully Convolutional Siamese Networks for Change "
    "Detection*, ICIP 2018, Table 1): FC-Siam-diff on OSCD with 13 bands F1 57.92 % (FC-EF "
    "56.91 %), trained on OSCD's 14 training cities and tested on its 10 test cities; here "
    "nine cities train per fold and each of the 11 is tested once."
)


def write_results(text: str) -> None:
    """Replace (or append) the section between the markers in RESULTS.md."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if START in old and END in old:
        head, rest = old.split(START, 1)
        _, tail = rest.split(END, 1)
        new = head + text.rstrip("\n") + tail
    else:
        new = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new)


def pick_device(name: str) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; use --device cpu or auto")
    return torch.device(name)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: 3 cities, 1 epoch, 1 seed")
    p.add_argument("--cities", nargs="+", choices=CITIES, default=list(CITIES))
    p.add_argument("--bands", choices=("13", "rgb"), default="13")
    p.add_argument("--epochs", type=int, default=60, help="most epochs per fold")
    p.add_argument("--patience", type=int, default=10, help="epochs without a better val F1")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pos-fraction", type=float, default=0.5)
    p.add_argument("--pos-weight", type=float, default=3.0, help="BCE weight of change")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--epoch-timing",
        type=int,
        metavar="N",
        help="only time N training epochs of the first fold (seed 0) and print s/epoch",
    )
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--render", type=Path, help="write RESULTS.md from an earlier --json report")
    args = p.parse_args(argv)
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        write_results(markdown(saved))
        return saved
    if args.quick:
        args.cities, args.epochs, args.seeds, args.base_channels = (
            ["bercy", "paris", "aguasclaras"], 1, [0], 4,
        )  # fmt: skip

    import torch

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    t_start = time.perf_counter()
    bands = BANDS_13 if args.bands == "13" else BANDS_RGB
    names = sorted(args.cities)
    cities = {name: load_city(name, bands) for name in names}
    floors = {name: cva_floor(cities[name]) for name in names}
    print(f"loaded {len(cities)} cities, {len(bands)} bands; device {device}", flush=True)
    if args.epoch_timing:
        args.epochs, args.patience = args.epoch_timing, args.epoch_timing
        train = [cities[c] for c in names[2:]]
        fold = run_fold(cities[names[0]], cities[names[1]], train, 0, args, device)
        timing = {
            "command": "python benchmarks/bench_oscd_baseline.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "device": str(device),
            "threads": args.threads,
            "training_cities": len(train),
            "epoch_s": fold["epoch_s"],
        }
        print(json.dumps(timing))
        if args.json:
            args.json.write_text(json.dumps(timing, indent=2))
        return timing
    folds = []
    for seed in args.seeds:
        for i, name in enumerate(names):
            val = names[(i + 1) % len(names)]
            train = [cities[c] for c in names if c not in (name, val)]
            print(f"seed {seed}, test {name}, val {val}, train {len(train)} cities", flush=True)
            fold = run_fold(cities[name], cities[val], train, seed, args, device)
            print(
                f"  {name}: P {fold['precision']:.3f} R {fold['recall']:.3f} F1 "
                f"{fold['f1']:.3f} (floor {floors[name]['f1']:.3f}) at threshold "
                f"{fold['threshold']}, epoch {fold['best_epoch']}",
                flush=True,
            )
            folds.append(fold)
    speed = throughput(
        folds[-1]["model"], cities[names[-1]], args.patch, args.batch_size,
        32 if args.quick else 256,
    )  # fmt: skip
    for f in folds:
        del f["model"]
    report = {
        "command": "python benchmarks/bench_oscd_baseline.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "device": str(device)
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "args": vars(args) | {"json": str(args.json) if args.json else None, "render": None},
        "bands": list(bands),
        "n_bands": len(bands),
        "folds": folds,
        "floors": floors,
        "summary": summarise(folds, floors),
        "throughput": speed,
    }
    report["total_s"] = time.perf_counter() - t_start
    text = markdown(report)
    print(text)
    if not args.no_write and not args.quick:
        write_results(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
