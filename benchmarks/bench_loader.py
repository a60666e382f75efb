"""Researcher loader throughput: ``geodelta.data.load`` vs per-file folders vs the tar floor.

Builds (or reuses, ``--release``) a demo release and reads every sample of it, ``--epochs``
times, with several readers. Every reader hands the same member bytes to the same decoder,
``geodelta.data.decode_sample`` (so the figures compare storage formats and readers, not
decoders), and produces the same sample: float32 reflectance [2, C, H, W] with nodata -> NaN,
int64 mask, captions, QA, metadata, as torch tensors.

Local (warm page cache):

- ``floor``: each shard read whole in one call and the 6 decoded members of each sample sliced
  out at offsets indexed beforehand (untimed): I/O + decode, no tar parsing, no pipeline;
- ``loader``: ``geodelta.data.load(release, split=None)`` iterated in this process (1 worker);
- ``per_file``: the same samples exported once to one folder per sample (``before.tif``,
  ``after.tif``, ``mask.png``, ``json``, ``captions.json``, ``qa.json``), read file by file;
- ``loader_workers``: ``load`` through a ``DataLoader`` with ``--workers`` persistent workers.

Over HTTP (a ``ThreadingHTTPServer`` in a thread of this process, HTTP/1.1, serving the
release folder and the per-file folders from the same disk):

- ``floor_http``: one request per shard, the body read whole and sliced like ``floor``;
- ``loader_http``: ``load("http://.../release/", split=None)``: one request per shard;
- ``per_file_http``: one request per file, all on one persistent (keep-alive) connection;
- ``per_file_http_urllib``: one request per file with ``urllib.request.urlopen`` (a new
  connection per file, as a plain script does);
- ``loader_http_latency`` / ``per_file_http_latency``: the loader and the keep-alive per-file
  reader against a second server that waits ``--latency-ms`` before each request (a remote
  store's round trip, simulated).

Writes ``bench_loader.json`` under ``--out`` and the "Loader throughput" section between its
markers in benchmarks/RESULTS.md (``--results``).

    .venv/bin/python benchmarks/bench_loader.py             # the reported run
    .venv/bin/python benchmarks/bench_loader.py --quick     # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import functools
import http.client
import http.server
import json
import os
import platform
import shutil
import sys
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from geodelta.data import DECODED_MEMBERS, decode_sample

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"
START, END = "<!-- bench_loader:start -->", "<!-- bench_loader:end -->"
TARGET_VS_FLOOR = 0.7
#: (reader, baseline) pairs reported as ratios
RATIOS = (
    ("loader", "floor"),
    ("loader_http", "floor_http"),
    ("loader", "per_file"),
    ("loader_http", "per_file_http"),
    ("loader_http", "per_file_http_urllib"),
    ("loader_http_latency", "per_file_http_latency"),
)


def build_release(out: Path, scale: float) -> Path:
    from geodelta.pipelines.api import build
    from geodelta.schemas import load_config
    from geodelta.sources.demo.catalog import write_demo_catalog

    cat = write_demo_catalog(out / "catalog", seed=0, scale=scale)
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        {
            "catalog": {"url": str(cat.catalog_path)},
            "output": {"dir": str(out / "release")},
            "aoi": {"bbox": list(cat.aoi_bbox)},
            "runner": {"name": "inprocess"},
            "shards": {"max_samples": 4},
        },
    )
    return Path(build(cfg, mode="overwrite", progress=False).release_dir)


def _decoded(members: Iterator[tuple[str, str, bytes]], url: str) -> Iterator[dict[str, Any]]:
    """Group (key, member, bytes) triples of one shard into samples and decode each."""
    cur: dict[str, Any] = {}
    for key, member, data in members:
        if cur and cur["__key__"] != key:
            yield decode_sample(cur)
            cur = {}
        if not cur:
            cur = {"__key__": key, "__url__": url}
        cur[member] = data
    if cur:
        yield decode_sample(cur)


def _tar_members(tf: tarfile.TarFile) -> Iterator[tuple[str, str, bytes]]:
    for info in tf:
        key, _, member = info.name.partition(".")
        if info.isfile() and member in DECODED_MEMBERS:
            f = tf.extractfile(info)
            if f is None:  # pragma: no cover - regular files always extract
                raise RuntimeError(f"cannot read {info.name}")
            yield key, member, f.read()


Index = list[tuple[str, str, int, int]]  # (key, member, data offset, size) per member


def tar_index(shard: Path) -> Index:
    """Where each decoded member's bytes lie in a shard (built once, outside the timing)."""
    with tarfile.open(shard) as tf:
        return [
            (key, member, info.offset_data, info.size)
            for info in tf
            for key, _, member in [info.name.partition(".")]
            if info.isfile() and member in DECODED_MEMBERS
        ]


def _sliced(data: bytes, index: Index) -> Iterator[tuple[str, str, bytes]]:
    for key, member, offset, size in index:
        yield key, member, data[offset : offset + size]


def floor(shards: list[Path], indexes: list[Index]) -> Iterator[dict[str, Any]]:
    """Each shard read whole in one call, members sliced at known offsets, + the decoder."""
    for shard, index in zip(shards, indexes, strict=True):
        with open(shard, "rb") as f:
            data = f.read()
        yield from _decoded(_sliced(data, index), str(shard))


def floor_http(urls: list[str], indexes: list[Index]) -> Iterator[dict[str, Any]]:
    """One GET per shard, the body read whole, members sliced at known offsets, + the decoder."""
    for url, index in zip(urls, indexes, strict=True):
        with urllib.request.urlopen(url, timeout=60) as resp:
            data = resp.read()
        yield from _decoded(_sliced(data, index), url)


def export_per_file(shards: list[Path], folder: Path) -> list[str]:
    """Write each sample's decoded members to ``folder/<key>/<member>``; return the keys."""
    if folder.exists():
        shutil.rmtree(folder)
    for shard in shards:
        with tarfile.open(shard) as tf:
            for key, member, data in _tar_members(tf):
                (folder / key).mkdir(parents=True, exist_ok=True)
                (folder / key / member).write_bytes(data)
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def per_file(folder: Path, keys: list[str]) -> Iterator[dict[str, Any]]:
    for key in keys:
        d = folder / key
        raw: dict[str, Any] = {"__key__": key, "__url__": str(d)}
        for member in DECODED_MEMBERS:
            with open(d / member, "rb") as f:
                raw[member] = f.read()
        yield decode_sample(raw)


def per_file_http(host: str, port: int, base: str, keys: list[str]) -> Iterator[dict[str, Any]]:
    """Every member file by its own GET, all on one keep-alive HTTP/1.1 connection."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        for key in keys:
            raw: dict[str, Any] = {"__key__": key, "__url__": f"{base}{key}/"}
            for member in DECODED_MEMBERS:
                conn.request("GET", f"{base}{key}/{member}")
                resp = conn.getresponse()
                if resp.status != 200:
                    raise RuntimeError(f"GET {base}{key}/{member}: HTTP {resp.status}")
                raw[member] = resp.read()
            yield decode_sample(raw)
    finally:
        conn.close()


def per_file_http_urllib(url: str, keys: list[str]) -> Iterator[dict[str, Any]]:
    """Every member file by its own ``urlopen`` (a new connection per file)."""
    for key in keys:
        raw: dict[str, Any] = {"__key__": key, "__url__": f"{url}{key}/"}
        for member in DECODED_MEMBERS:
            with urllib.request.urlopen(f"{url}{key}/{member}", timeout=60) as resp:
                raw[member] = resp.read()
        yield decode_sample(raw)


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for clients that ask for it
    # headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK stall
    # every keep-alive response by ~40 ms (an artefact of the test server, not of per-file)
    disable_nagle_algorithm = True

    latency_s = 0.0

    def handle_one_request(self) -> None:
        # a remote store's round trip, modelled as a wait before each request is read (the
        # sleep releases the GIL: it costs the client time, not CPU)
        if self.latency_s:
            time.sleep(self.latency_s)
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(
    root: Path, latency_ms: float = 0.0
) -> tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    handler_cls = type("Handler", (_Handler,), {"latency_s": latency_ms / 1000.0})
    handler = functools.partial(handler_cls, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def timed(makers: dict[str, Callable[[], Any]], epochs: int, n: int) -> dict[str, Any]:
    """Per-reader median epoch rate; readers interleaved epoch by epoch (shared-CPU noise)."""
    rates: dict[str, list[float]] = {name: [] for name in makers}
    cpu_rates: dict[str, list[float]] = {name: [] for name in makers}
    for epoch in range(epochs + 1):  # epoch 0 warms up (page cache, imports, workers)
        for name, make in makers.items():
            t, c = time.perf_counter(), time.process_time()
            count = 0
            for s in make():
                count += 1
                if s["image"].ndim != 4:
                    raise RuntimeError(f"{name}: image is not [2, C, H, W]")
            dt, dc = time.perf_counter() - t, time.process_time() - c
            if count != n:
                raise RuntimeError(f"{name}: read {count} samples, expected {n}")
            if epoch:
                rates[name].append(count / dt)
                cpu_rates[name].append(count / max(dc, 1e-9))
    out: dict[str, Any] = {}
    for name, r in rates.items():
        q1, med, q3 = np.percentile(r, [25, 50, 75])
        out[name] = {
            "samples": n * epochs,
            "samples_s": round(float(med), 1),
            "q1_s": round(float(q1), 1),
            "q3_s": round(float(q3), 1),
            "min_s": round(min(r), 1),
            "max_s": round(max(r), 1),
            # this process's CPU time (all its threads, the HTTP server's included; not the
            # DataLoader's worker processes): steadier than wall clock on a shared machine
            "samples_per_cpu_s": round(float(np.median(cpu_rates[name])), 1),
        }
    return out


def check_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    """The readers must produce the same sample (else the comparison is meaningless)."""
    if a["meta"]["__key__"] != b["meta"]["__key__"]:
        raise RuntimeError(
            f"sample order differs: {a['meta']['__key__']} vs {b['meta']['__key__']}"
        )
    if not np.array_equal(a["image"].numpy(), b["image"].numpy(), equal_nan=True):
        raise RuntimeError(f"image of {a['meta']['__key__']} differs between readers")
    if not np.array_equal(a["mask"].numpy(), b["mask"].numpy()) or a["qa"] != b["qa"]:
        raise RuntimeError(f"mask/qa of {a['meta']['__key__']} differs between readers")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--release", type=Path, help="an existing release (default: build a demo)")
    p.add_argument("--out", type=Path, default=REPO / "build" / "bench_loader")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--latency-ms",
        type=float,
        default=5.0,
        help="simulated round trip per request of the second HTTP server (a remote store)",
    )
    p.add_argument("--quick", action="store_true", help="scale 0.5, 1 epoch")
    a = p.parse_args()
    if a.quick:
        a.scale, a.epochs = 0.5, 1
    import torch
    from torch.utils.data import DataLoader

    from geodelta.data import load

    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    release = (a.release or build_release(a.out / "demo", a.scale)).resolve()
    manifest = json.loads((release / "manifest.json").read_text())
    shards = [release / s["path"] for s in manifest["shards"]]
    n = sum(s["samples"] for s in manifest["shards"])
    keys = export_per_file(shards, a.out / "per_file")
    indexes = [tar_index(s) for s in shards]
    # one HTTP root serving both layouts: <root>/release/... and <root>/per_file/<key>/<member>
    root = a.out / "http_root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    (root / "release").symlink_to(release, target_is_directory=True)
    (root / "per_file").symlink_to((a.out / "per_file").resolve(), target_is_directory=True)
    server, thread = serve(root)
    port = int(server.server_address[1])
    http_base = f"http://127.0.0.1:{port}"
    slow_server, slow_thread = serve(root, a.latency_ms)
    slow_port = int(slow_server.server_address[1])
    shard_urls = [f"{http_base}/release/{s['path']}" for s in manifest["shards"]]

    # persistent workers: the figure is steady-state reading, not worker start-up per epoch
    dl = DataLoader(
        load(release, split=None), num_workers=a.workers, batch_size=None, persistent_workers=True
    )
    makers: dict[str, Callable[[], Any]] = {
        "floor": lambda: floor(shards, indexes),
        "loader": lambda: load(release, split=None),
        "per_file": lambda: per_file(a.out / "per_file", keys),
        "loader_workers": lambda: dl,
        "floor_http": lambda: floor_http(shard_urls, indexes),
        "loader_http": lambda: load(f"{http_base}/release/", split=None),
        "per_file_http": lambda: per_file_http("127.0.0.1", port, "/per_file/", keys),
        "per_file_http_urllib": lambda: per_file_http_urllib(f"{http_base}/per_file/", keys),
        "loader_http_latency": lambda: load(f"http://127.0.0.1:{slow_port}/release/", split=None),
        "per_file_http_latency": lambda: per_file_http("127.0.0.1", slow_port, "/per_file/", keys),
    }
    try:
        # every reader yields the same samples (same order for the in-process ones)
        ref = list(floor(shards, indexes))
        by_key = {s["meta"]["__key__"]: s for s in ref}
        for name in ("loader", "floor_http", "loader_http", "loader_http_latency"):
            for s, r in zip(makers[name](), ref, strict=True):
                check_same(s, r)
        for name in ("per_file", "per_file_http", "per_file_http_urllib", "per_file_http_latency"):
            for s in makers[name]():
                check_same(s, by_key[s["meta"]["__key__"]])
        load_avg = os.getloadavg()
        figures: dict[str, Any] = {
            "samples": n,
            "shards": len(shards),
            "tar_mb": round(sum(s["bytes"] for s in manifest["shards"]) / 1e6, 2),
            "per_file_mb": round(
                sum(f.stat().st_size for f in (a.out / "per_file").rglob("*") if f.is_file()) / 1e6,
                2,
            ),
            "epochs": a.epochs,
            "workers": a.workers,
            "latency_ms": a.latency_ms,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, torch {torch.__version__}",
            "load_avg": [round(x, 2) for x in load_avg],
            "command": " ".join(["python benchmarks/bench_loader.py", *sys.argv[1:]]),
        }
        figures["readers"] = timed(makers, a.epochs, n)
    finally:
        for srv, th in ((server, thread), (slow_server, slow_thread)):
            srv.shutdown()
            srv.server_close()
            th.join(5)
    r = figures["readers"]
    figures["ratios"] = {
        f"{a_}_vs_{b_}": {
            "wall": round(r[a_]["samples_s"] / r[b_]["samples_s"], 2),
            "cpu": round(r[a_]["samples_per_cpu_s"] / r[b_]["samples_per_cpu_s"], 2),
        }
        for a_, b_ in RATIOS
    }
    (a.out / "bench_loader.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    write_results(a.results, figures)


def _r(name: str, v: dict[str, Any]) -> str:
    cpu = "-" if name == "loader_workers" else v["samples_per_cpu_s"]
    return f"{v['samples_s']} | {v['q1_s']}-{v['q3_s']} | {v['min_s']}-{v['max_s']} | {cpu}"


def _ratio(q: dict[str, float]) -> str:
    return f"**{q['wall']}x** wall clock, {q['cpu']}x per CPU second"


def _verdict(q: dict[str, float], target: float) -> str:
    met = q["wall"] >= target and q["cpu"] >= target
    return f"{_ratio(q)} ({'met' if met else 'NOT met'})"


def _ahead(q: dict[str, float]) -> str:
    if q["wall"] > 1.15 and q["cpu"] > 1.15:
        return "ahead"
    if q["wall"] < 0.87 and q["cpu"] < 0.87:
        return "behind"
    return "level: within the noise of this machine"


LABELS = {
    "floor": "floor: shard read whole, members sliced at pre-indexed offsets, + decoder",
    "loader": "`geodelta.data.load`, in-process (1 worker)",
    "per_file": "per-file folders (6 files per sample)",
    "loader_workers": "`geodelta.data.load` + DataLoader, {workers} persistent workers",
    "floor_http": "HTTP floor: 1 GET per shard, body sliced at pre-indexed offsets, + decoder",
    "loader_http": "HTTP `geodelta.data.load`: 1 GET per shard",
    "per_file_http": "HTTP per-file: 1 GET per file, one keep-alive connection",
    "per_file_http_urllib": "HTTP per-file: 1 `urlopen` per file (new connection each)",
    "loader_http_latency": "HTTP + {latency} ms per request: `geodelta.data.load`",
    "per_file_http_latency": "HTTP + {latency} ms per request: per-file, keep-alive",
}


def write_results(path: Path, f: dict[str, Any]) -> None:
    r, q = f["readers"], f["ratios"]
    rows = []
    for name, label in LABELS.items():
        base = r["floor_http"] if "_http" in name else r["floor"]
        vs = (
            "-" if name.endswith("_latency") else round(r[name]["samples_s"] / base["samples_s"], 2)
        )
        rows.append(
            f"| {label.format(workers=f['workers'], latency=f['latency_ms'])} | "
            f"{_r(name, r[name])} | {vs} |"
        )
    table = "\n".join(rows)
    section = f"""{START}
## Loader throughput

- Command: `{f["command"]}`
- Date: {f["date"]}
- Machine: {f["machine"]}; load average at start {" ".join(map(str, f["load_avg"]))} (shared
  CPUs: other jobs run alongside, so wall-clock differences under ~15 % are noise; the
  per-CPU-second rate is the steadier figure for the in-process readers).

Every sample of a demo release ({f["samples"]} samples, {f["shards"]} shards, {f["tar_mb"]} MB of
tar; the per-file copy of the 6 members the decoder reads is {f["per_file_mb"]} MB) read
{f["epochs"]} times after one warm-up epoch (page cache warm), the readers interleaved epoch by
epoch. Every reader hands the same member bytes to the same decoder
(`geodelta.data.decode_sample`: GeoTIFF strips inflated with zlib after a tifffile header parse,
rasterio for any other layout) and yields the same sample (checked before timing): float32
reflectance [2, C, H, W] with nodata -> NaN, int64 mask, captions, QA, metadata, as tensors.
One torch thread. HTTP: a `ThreadingHTTPServer` in a thread of the benchmark process (its
Python work shares the reader's GIL and the 2 cores), loopback, files on the same disk.

| reader | samples/s median | IQR | min-max | samples per CPU s | vs floor (wall) |
|---|---:|---:|---:|---:|---:|
{table}

(`vs floor`: local readers against the local floor, HTTP readers against the HTTP floor
without added latency.)

- Loader per worker vs the tar floor (target >= {TARGET_VS_FLOOR}x): local
  {_verdict(q["loader_vs_floor"], TARGET_VS_FLOOR)}; HTTP
  {_verdict(q["loader_http_vs_floor_http"], TARGET_VS_FLOOR)}.
- Loader vs per-file reading, local: {_ratio(q["loader_vs_per_file"])}
  ({_ahead(q["loader_vs_per_file"])}).
- Loader vs per-file reading over HTTP: {_ratio(q["loader_http_vs_per_file_http"])} against
  keep-alive GETs ({_ahead(q["loader_http_vs_per_file_http"])});
  {_ratio(q["loader_http_vs_per_file_http_urllib"])} against one connection per file
  ({_ahead(q["loader_http_vs_per_file_http_urllib"])}).
- With a simulated {f["latency_ms"]} ms round trip per request (a remote store; the server
  waits before reading each request): {_ratio(q["loader_http_latency_vs_per_file_http_latency"])}
  against keep-alive per-file GETs ({_ahead(q["loader_http_latency_vs_per_file_http_latency"])}).

Where a sample's time goes (128 x 128 px, 4 bands; cProfile of `load` and each step timed on
its own, CPU ms per sample, quiet moments of this machine): inflating the two deflate tifs
with zlib ~1.6, tifffile's header parse ~0.56, undoing the predictor ~0.34, reflectance
~0.2, mask PNG + 3 JSON members ~0.3; reading a sample's members with `webdataset`'s
tarfile-based reader ~0.59 (the floor slices pre-indexed offsets: ~0.14; per-file open + read:
~0.13; a GDAL MemoryFile per tif, used before: ~2.4 per tif instead of ~1.5). Reading is a
small part of a sample, which is all a storage layout can win or lose on a warm local disk:
locally the loader is level with per-file folders, not ahead. The tar format pays off where each
request costs something (HTTP, object stores). Not measured: a cold page cache or a network
filesystem, and worker scaling (2 CPUs shared with other jobs: the DataLoader row shows
contention, not scaling).
{END}"""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
