"""The dataset card of a release (``README.md``): licence, contents, members, codes, provenance.

Markdown, deterministic (no wall-clock time, no absolute path). The "Sample members" table is
printed from the one table of members (:mod:`geodelta.schemas.members`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from geodelta.pipelines.release.layout import (
    INCREMENTAL,
    MANIFEST,
    QUARANTINE_TABLE,
    SAMPLES_TABLE,
    SHARDS_DIR,
)
from geodelta.schemas import BuildConfig, SampleMeta, ShardInfo
from geodelta.schemas.classes import BINARY_CHANGE, decode_transition
from geodelta.schemas.members import MEMBERS

__all__ = ["dataset_card"]


def _present_codes(metas: Iterable[SampleMeta]) -> list[int]:
    codes = {t.code for m in metas for t in m.facts.transitions}
    codes.add(BINARY_CHANGE)
    return sorted(codes)


def _llm_lines(metas: Iterable[SampleMeta]) -> list[str]:
    """Card lines on LLM annotation (models, prompt versions, tokens, cost); none without it."""
    llm = [m for m in metas if m.prompt_version is not None]
    if not llm:
        return []
    who = sorted({f"{m.annotator} {m.annotator_version}, model `{m.model}`" for m in llm})
    prompts = sorted({str(m.prompt_version) for m in llm})
    return [
        f"- LLM annotation: {len(llm)} samples by {'; '.join(who)}; prompt(s) "
        + ", ".join(f"`{p}`" for p in prompts),
        f"- LLM tokens: {sum(m.tokens_in for m in llm)} in, {sum(m.tokens_out for m in llm)} "
        f"out; cost ${sum(m.cost_usd for m in llm):.6f} (samples of this release; per sample "
        f"in `{SAMPLES_TABLE}`)",
    ]


def _incremental_lines(inc: dict[str, Any] | None) -> list[str]:
    """The card's section on a ``build --from`` release (none without it)."""
    if inc is None:
        return []
    return [
        "## Built incrementally",
        "",
        f"From `{inc['from']}` (config hash `{inc['from_config_hash'][:12]}`), cells:",
        "",
        "| reused | new | changed | removed |",
        "|---:|---:|---:|---:|",
        f"| {inc['reused']} | {inc['new']} | {inc['changed']} | {inc['removed']} |",
        "",
        "Reused samples were copied from the previous release's shards without reading pixels "
        "(their `json` member records this release's config hash); changed cells include "
        f"{inc['retried']} that the previous release quarantined; removed samples' cells are no "
        f"longer planned. Counts in `{INCREMENTAL}`.",
        "",
    ]


def dataset_card(
    cfg: BuildConfig,
    *,
    code_version: str,
    metas: dict[str, SampleMeta],
    splits: dict[str, int],
    shards: Sequence[ShardInfo],
    funnel: dict[str, int],
    incremental: dict[str, Any] | None = None,
) -> bytes:
    """The ``README.md`` of a release, as UTF-8 bytes.

    Args:
        cfg: the build config (name, version, description, licence, imagery, labels).
        code_version: geodelta version building the release.
        metas: key -> metadata of every sample in the shards.
        splits: split -> sample count.
        shards: the shards written.
        funnel: ``stage:reason`` -> quarantined records.
        incremental: a ``build --from`` release's counts (``incremental.json``): a section.
    """
    title = f"{cfg.name} {cfg.version}"
    desc = cfg.description.strip() or "(no description given in the config)"
    lines = [f"# {title}", "", desc, ""]
    if "synthetic" in cfg.description.lower():
        lines += [
            "> **Synthetic data.** The imagery and labels of this release are generated, not "
            "observed: use it to test pipelines and models, not to draw conclusions about the "
            "Earth's surface.",
            "",
        ]
    total = sum(splits.values())
    lines += [
        "## Licence and attribution",
        "",
        f"- Licence: {cfg.licence}",
        f"- Attribution: {cfg.attribution}",
        "",
        "## Contents",
        "",
        f"- Samples: {total} in {len(shards)} shard(s) under `{SHARDS_DIR}/`",
        f"- Imagery: `{cfg.imagery.collection}`, bands {', '.join(cfg.imagery.bands)}",
        f"- Labels: {cfg.labels.kind}"
        + (f" (`{cfg.labels.collection}`)" if cfg.labels.collection else ""),
        f"- Quarantined: {sum(funnel.values())}",
        *_llm_lines(metas.values()),
        "",
        "| split | samples | shards |",
        "|---|---:|---:|",
    ]
    shard_count = Counter(s.split for s in shards)
    for split in sorted(splits):
        lines.append(f"| {split} | {splits[split]} | {shard_count[split]} |")
    lines += [
        "",
        "## Sample members",
        "",
        "Key: `{cell_id}_{t0:%Y%m%d}_{t1:%Y%m%d}`. Each sample carries:",
        "",
        "| member | content |",
        "|---|---|",
    ]
    lines += [f"| `{m.name}` | {m.description} |" for m in MEMBERS]
    lines += [
        "",
        "GeoTIFF values: reflectance = DN * 0.0001 - 0.1 (scale/offset also in the files); "
        "DN 0 = no data.",
        "",
        "## Change mask codes",
        "",
        "| code | from | to |",
        "|---:|---|---|",
    ]
    for code in _present_codes(metas.values()):
        decoded = decode_transition(code)
        frm, to = decoded if decoded is not None else ("", "")
        note = " (binary change, classes unknown)" if code == BINARY_CHANGE else ""
        lines.append(f"| {code} | {frm} | {to}{note} |")
    lines += ["", "0 = no change.", ""]
    lines += _incremental_lines(incremental)
    lines += ["## Quarantine funnel", ""]
    if funnel:
        lines += ["| stage:reason | records |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(funnel.items())]
        lines += ["", f"Details per record in `{QUARANTINE_TABLE}`."]
    else:
        lines.append("Nothing was quarantined.")
    lines += [
        "",
        "## Reading the data",
        "",
        "```python",
        "import glob, json",
        "import webdataset as wds",
        "",
        'urls = sorted(glob.glob("shards/train-*.tar"))',
        "for sample in wds.WebDataset(urls, shardshuffle=False):",
        '    meta = json.loads(sample["json"])',
        '    captions = json.loads(sample["captions.json"])',
        '    before_tif = sample["before.tif"]  # bytes: open with rasterio.io.MemoryFile',
        "```",
        "",
        f"`{SAMPLES_TABLE}` has one row per sample (split, shard, bbox, times, fractions, "
        f"co-registration, facts summary, annotator); `{MANIFEST}` the sha256 of every file.",
        "",
        "## Provenance",
        "",
        f"- Config hash: `{cfg.config_hash()}`",
        f"- Code version: `{code_version}`",
        "",
    ]
    return "\n".join(lines).encode()
