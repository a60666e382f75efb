"""First page of the quality report: ``<release>/report/index.html``.

One self-contained HTML file (inline CSS, images as base64 data URIs, no script, no network):
the release summary, the funnel of quarantined records by stage and reason (table with plain
HTML/CSS bars), and a small gallery of samples read from the shards (before/after/mask, the
captions and three QA pairs). The gallery is chosen deterministically (the keys with the
smallest sha256), so the same release always gives the same page.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
import uuid
from collections import defaultdict
from pathlib import Path
from typing import get_args

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from geodelta.pipelines.release import SAMPLES_TABLE, iter_tar_samples, read_manifest
from geodelta.schemas import ReleaseManifest
from geodelta.schemas.classes import BINARY_CHANGE, N_CLASSES
from geodelta.schemas.records import QuarantineStage

REPORT_DIR = "report"
REPORT_FILE = "index.html"

#: Pipeline order of the quarantine stages (unknown stages sort after these).
STAGE_ORDER: tuple[str, ...] = get_args(QuarantineStage)

#: Colour of changed pixels in the mask preview, by the class they changed *to* (index 1..11).
_TO_CLASS_RGB: tuple[tuple[int, int, int], ...] = (
    (0, 100, 0),  # tree_cover
    (255, 187, 34),  # shrubland
    (255, 255, 76),  # grassland
    (240, 150, 255),  # cropland
    (250, 0, 0),  # built_up
    (180, 180, 180),  # bare
    (240, 240, 240),  # snow_ice
    (0, 100, 200),  # water
    (0, 150, 160),  # wetland
    (0, 207, 117),  # mangroves
    (250, 230, 160),  # moss_lichen
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bar { background: #c0392b; height: 12px; display: inline-block; }
.barcell { width: 320px; }
.sample { border: 1px solid #ddd; border-radius: 6px; padding: 10px; margin: 12px 0; }
.imgs img { width: 160px; height: 160px; image-rendering: pixelated; margin-right: 6px; }
.imgs figure { display: inline-block; margin: 0 8px 0 0; text-align: center; }
figcaption { font-size: 0.8em; color: #666; }
.key { font-family: monospace; font-size: 0.9em; }
ul { margin: 0.3em 0; }
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _mask_preview(mask_png: bytes) -> bytes:
    """Colour a mask for viewing: black = no change, class colour of the new class, white = 255."""
    with Image.open(io.BytesIO(mask_png)) as img:
        codes = np.asarray(img.convert("L"), dtype=np.int32)
    rgb = np.zeros((*codes.shape, 3), dtype=np.uint8)
    known = (codes >= 1) & (codes <= N_CLASSES * N_CLASSES)
    to_idx = (codes - 1) % N_CLASSES
    palette = np.array(_TO_CLASS_RGB, dtype=np.uint8)
    rgb[known] = palette[to_idx[known]]
    rgb[codes == BINARY_CHANGE] = (255, 255, 255)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _choose(keys: list[str], n: int) -> list[str]:
    """The ``n`` keys with the smallest sha256: deterministic, spread over splits and regions."""
    return sorted(keys, key=lambda k: hashlib.sha256(k.encode()).hexdigest())[: max(n, 0)]


def _summary(manifest: ReleaseManifest) -> str:
    total = sum(manifest.splits.values())
    quarantined = sum(manifest.quarantined.values())
    rows = [
        ("dataset", f"{manifest.name} {manifest.version}"),
        ("samples", str(total)),
        ("quarantined", str(quarantined)),
        ("shards", str(len(manifest.shards))),
        ("config hash", manifest.config_hash),
        ("code version", manifest.code_version),
    ]
    out = ["<h2>Summary</h2>", "<table>"]
    out += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows]
    out.append("</table>")
    out += ["<table><tr><th>split</th><th>samples</th><th>shards</th></tr>"]
    shard_counts: dict[str, int] = defaultdict(int)
    for s in manifest.shards:
        shard_counts[s.split] += 1
    for split, n in sorted(manifest.splits.items()):
        out.append(
            f"<tr><td>{html.escape(split)}</td><td class='n'>{n}</td>"
            f"<td class='n'>{shard_counts[split]}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _funnel(manifest: ReleaseManifest) -> str:
    out = ["<h2>Quarantine funnel</h2>"]
    if not manifest.quarantined:
        out.append("<p>Nothing was quarantined.</p>")
        return "\n".join(out)
    rows = []
    for k, n in manifest.quarantined.items():
        stage, _, reason = k.partition(":")
        rank = STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)
        rows.append((rank, stage, reason, n))
    rows.sort(key=lambda r: (r[0], -r[3], r[2]))
    top = max(r[3] for r in rows)
    out.append(
        "<table><tr><th>stage</th><th>reason</th><th>records</th><th class='barcell'></th></tr>"
    )
    for _, stage, reason, n in rows:
        width = 100.0 * n / top
        out.append(
            f"<tr><td>{html.escape(stage)}</td><td>{html.escape(reason)}</td>"
            f"<td class='n'>{n}</td><td class='barcell'>"
            f"<span class='bar' style='width: {width:.1f}%'></span></td></tr>"
        )
    kept = sum(manifest.splits.values())
    out.append("</table>")
    out.append(
        f"<p>{kept} samples kept, {sum(manifest.quarantined.values())} records quarantined "
        f"(details in <code>quarantine.parquet</code>).</p>"
    )
    return "\n".join(out)


def _gallery(root: Path, max_gallery: int) -> str:
    out = ["<h2>Samples</h2>"]
    table_path = root / SAMPLES_TABLE
    if not table_path.is_file() or max_gallery <= 0:
        out.append("<p>No samples.</p>")
        return "\n".join(out)
    table = pq.read_table(table_path, columns=["key", "shard", "split"]).to_pylist()
    shard_of = {r["key"]: r["shard"] for r in table}
    split_of = {r["key"]: r["split"] for r in table}
    chosen = _choose(sorted(shard_of), max_gallery)
    if not chosen:
        out.append("<p>No samples.</p>")
        return "\n".join(out)
    wanted: dict[str, set[str]] = defaultdict(set)
    for key in chosen:
        wanted[shard_of[key]].add(key)
    found: dict[str, dict[str, bytes]] = {}
    for shard in sorted(wanted):
        for key, sample in iter_tar_samples(root / shard):
            if key in wanted[shard]:
                found[key] = sample
            if wanted[shard] <= found.keys():
                break
    for key in chosen:
        if key not in found:
            out.append(
                f"<div class='sample'><p>{html.escape(key)}: not found in its shard</p></div>"
            )
            continue
        out.append(_sample_card(key, split_of[key], found[key]))
    return "\n".join(out)


def _sample_card(key: str, split: str, members: dict[str, bytes]) -> str:
    meta = json.loads(members.get("json", b"{}"))
    captions = json.loads(members.get("captions.json", b"[]"))
    qa = json.loads(members.get("qa.json", b"[]"))[:3]
    figs = []
    for name, label in (("before.png", "before"), ("after.png", "after"), ("mask.png", "change")):
        if name not in members:
            continue
        png = _mask_preview(members[name]) if name == "mask.png" else members[name]
        figs.append(
            f"<figure><img src='{_data_uri(png)}' alt='{html.escape(label)}'>"
            f"<figcaption>{html.escape(label)}</figcaption></figure>"
        )
    t0, t1 = str(meta.get("t0", ""))[:10], str(meta.get("t1", ""))[:10]
    facts = meta.get("facts", {})
    head = (
        f"<p><span class='key'>{html.escape(key)}</span> &middot; {html.escape(split)} &middot; "
        f"{html.escape(t0)} &rarr; {html.escape(t1)} &middot; changed "
        f"{100.0 * float(facts.get('changed_fraction', 0.0)):.1f}%</p>"
    )
    caps = "".join(f"<li>{html.escape(str(c))}</li>" for c in captions)
    qas = "".join(
        f"<li><b>{html.escape(str(q.get('question', '')))}</b> "
        f"{html.escape(str(q.get('answer', '')))}</li>"
        for q in qa
    )
    return (
        f"<div class='sample'>{head}<div class='imgs'>{''.join(figs)}</div>"
        f"<p>Captions</p><ul>{caps}</ul><p>Questions</p><ul>{qas}</ul></div>"
    )


def write_report(release_dir: str | Path, *, max_gallery: int = 8) -> Path:
    """Write ``<release_dir>/report/index.html``.

    Args:
        release_dir: a release written by :func:`geodelta.pipelines.release.write_release`.
        max_gallery: samples shown in the gallery.

    Returns:
        Path of the HTML file.

    Raises:
        ReleaseError: the release has no (valid) manifest.
    """
    root = Path(release_dir)
    manifest = read_manifest(root)
    title = f"{manifest.name} {manifest.version}: quality report"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='sub'>geodelta {html.escape(manifest.code_version)} &middot; config "
        f"{html.escape(manifest.config_hash[:12])}</p>",
        _summary(manifest),
        _funnel(manifest),
        _gallery(root, max_gallery),
    ]
    page = (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
    out_dir = root / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / REPORT_FILE
    tmp = out_dir / f".{REPORT_FILE}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
