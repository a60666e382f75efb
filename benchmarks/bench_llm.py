"""LLM annotator throughput against concurrency, at 200 ms per request (the OpenAI test double).

The double (tests/openai_double.py) runs in its own process and answers every chat completion
after ``--latency`` seconds; the annotator (real ``openai`` client, prompt rendering, claim
checker, rate limiter; no cache) annotates ``n`` distinct samples per concurrency level.
Target: at least ``0.8 x concurrency / latency`` requests per second, up to the configured rate
limit (``--rpm``), i.e. ``0.8 x min(concurrency / latency, rpm / 60)``.

Writes the "LLM annotator throughput" section of benchmarks/RESULTS.md (between its own
markers; other sections are left alone)::

    .venv/bin/python benchmarks/bench_llm.py
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "RESULTS.md"
START, END = "<!-- llm-throughput:start -->", "<!-- llm-throughput:end -->"
KEY_ENV = "GEODELTA_BENCH_LLM_KEY"


def _serve(latency: float, conn: object, stop: object) -> None:
    from tests.openai_double import OpenAIDouble

    with OpenAIDouble(latency_s=latency) as d:
        conn.send(d.base_url)  # type: ignore[attr-defined]
        stop.wait()  # type: ignore[attr-defined]


def _samples(n: int, seed: int) -> list[tuple[str, object]]:
    import numpy as np

    from tests.test_template import random_facts

    rng = np.random.default_rng(seed)
    return [
        (f"bench{seed}x{i:05d}_20200101_20210101", random_facts(rng, binary=False))
        for i in range(n)
    ]


def run(levels: list[int], latency: float, rpm: float, min_requests: int) -> list[dict[str, float]]:
    from geodelta.annotators.llm.annotator import LLMAnnotator
    from geodelta.schemas.config import OpenAIConfig

    os.environ.setdefault(KEY_ENV, "sk-bench-not-a-secret")
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    stop = ctx.Event()
    server = ctx.Process(target=_serve, args=(latency, child, stop), daemon=True)
    server.start()
    try:
        base_url = parent.recv()
        rows = []
        for seed, c in enumerate(levels):
            s = OpenAIConfig(
                base_url=base_url,
                api_key_env=KEY_ENV,
                model="gpt-4o-mini",
                concurrency=c,
                requests_per_minute=rpm,
                timeout_s=30.0,
            )
            n = max(min_requests, int(6 * c))
            with LLMAnnotator(s) as a:
                a.annotate_batch(_samples(2, 10_000 + seed))  # client start-up, not timed
                batch = _samples(n, seed)
                t, cpu = time.perf_counter(), time.process_time()
                out = a.annotate_batch(batch)
                seconds = time.perf_counter() - t
                cpu_ms = 1000 * (time.process_time() - cpu) / n
                failed = sum(1 for x in out if not hasattr(x, "captions"))
            rate = n / seconds
            target = 0.8 * min(c / latency, rpm / 60.0)
            rows.append(
                {
                    "concurrency": c,
                    "requests": n,
                    "seconds": seconds,
                    "rps": rate,
                    "ideal": min(c / latency, rpm / 60.0),
                    "target": target,
                    "failed": failed,
                    "cpu_ms": cpu_ms,
                }
            )
            print(
                f"c={c:3d} n={n:4d} {seconds:6.2f} s {rate:7.1f} req/s target>={target:6.1f} "
                f"{'ok' if rate >= target else 'BELOW'} failed={failed} cpu={cpu_ms:.1f} ms/req",
                flush=True,
            )
        return rows
    finally:
        stop.set()
        server.join(timeout=10)


def section(
    runs: list[tuple[float, list[dict[str, float]]]], latency: float, command: str, load: str
) -> str:
    lines = [
        START,
        "## LLM annotator throughput",
        "",
        f"`{command}` on {platform.machine()}, {os.cpu_count()} CPU(s), shared with other jobs "
        f"(load average at start: {load}). The OpenAI test double (its own process) answers "
        f"each chat completion after {latency * 1000:.0f} ms; the annotator (real `openai` "
        "client over HTTP, prompt rendering, claim checker, token-bucket rate limit, no cache) "
        "annotates distinct samples. Target: >= 0.8 x min(concurrency / latency, rate limit). "
        "`cpu` = the annotator process's CPU time per request (the double's is extra).",
    ]
    for rpm, rows in runs:
        lines += [
            "",
            f"Rate limit {rpm:g} requests/minute ({rpm / 60:g}/s):",
            "",
            "| concurrency | requests | seconds | requests/s | ideal | target | met | cpu ms/req |",
            "|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for r in rows:
            met = "yes" if r["rps"] >= r["target"] and not r["failed"] else "NO"
            lines.append(
                f"| {r['concurrency']:.0f} | {r['requests']:.0f} | {r['seconds']:.2f} | "
                f"{r['rps']:.1f} | {r['ideal']:.1f} | {r['target']:.1f} | {met} | "
                f"{r['cpu_ms']:.1f} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def write_section(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if START in old and END in old:
        head, _, rest = old.partition(START)
        _, _, tail = rest.partition(END)
        new = head + text + tail
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="1,2,4,8,16,32,64")
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--rpm", default="1200,3000", help="rate limits to run (requests/minute)")
    ap.add_argument("--min-requests", type=int, default=24)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    runs = []
    for rpm in (float(x) for x in args.rpm.split(",")):
        print(f"rate limit {rpm:g}/min", flush=True)
        runs.append((rpm, run(levels, args.latency, rpm, args.min_requests)))
    command = "python benchmarks/bench_llm.py " + " ".join(sys.argv[1:])
    if not args.no_write:
        write_section(section(runs, args.latency, command.strip(), load))


if __name__ == "__main__":
    main()
