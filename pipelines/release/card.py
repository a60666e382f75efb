"""The dataset card of a release (``README.md``): licence, contents, members, codes, provenance.

Markdown with Hugging Face YAML front matter (licence, task categories, size category, tags,
one ``configs`` entry whose ``data_files`` list each split's shards, and the
``dataset_info.features`` of the members), so ``datasets.load_dataset(<release folder>)`` reads
the shards as they are: without it the loader would take the Great Expectations
``validation/`` folder for a split. Deterministic (no wall-clock time, no absolute path). The
"Sample members" table and the features are printed from the one table of members
(:mod:`geodelta.schemas.members`).
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
from geodelta.schemas.members import hf_feature_list, members_for

__all__ = ["dataset_card", "front_matter", "hf_license"]

#: SPDX licence ids (lower case) the Hugging Face Hub knows by the same id; any other licence
#: is ``license: other`` with its name in ``license_name``.
_HF_LICENSES = frozenset(
    {
        "apache-2.0", "mit", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
        "cc-by-nc-sa-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-4.0", "cc-by-3.0", "cc-by-sa-3.0",
        "odbl", "odc-by", "pddl", "cdla-permissive-2.0", "cdla-sharing-1.0", "bsd-3-clause",
    }
)  # fmt: skip


def hf_license(licence: str) -> dict[str, str]:
    """The card's licence keys: ``{"license": id}`` or ``{"license": "other", "license_name"}``."""
    spdx = licence.strip().lower()
    if spdx in _HF_LICENSES:
        return {"license": spdx}
    return {"license": "other", "license_name": licence.strip()}


def _size_category(n: int) -> str:
    """The Hub's ``size_categories`` value of ``n`` samples (``n<1K``, ``1K<n<10K``, ...)."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
              (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")]  # fmt: skip
    return next((label for bound, label in bounds if n < bound), "10M<n<100M")


def front_matter(cfg: BuildConfig, total: int, shards: Sequence[ShardInfo]) -> str:
    """The card's YAML front matter (between ``---`` lines), deterministic.

    ``configs`` has one ``default`` config whose ``data_files`` list each split's shards (paths
    relative to the release, in manifest order): ``load_dataset(<release folder>)`` reads those
    and nothing else. ``dataset_info.features`` keeps the GeoTIFFs as bytes.
    """
    import yaml

    by_split: dict[str, list[str]] = {}
    for shard in shards:
        by_split.setdefault(shard.split, []).append(shard.path)
    tags = ["geodelta", "remote-sensing", "earth-observation", "satellite-imagery",
            "change-detection", "geospatial", "webdataset", cfg.imagery.collection]  # fmt: skip
    if "synthetic" in cfg.description.lower():
        tags.append("synthetic")
    data: dict[str, Any] = {
        **hf_license(cfg.licence),
        "pretty_name": f"{cfg.name} {cfg.version}",
        "task_categories": ["image-segmentation", "image-to-text", "visual-question-answering"],
        "size_categories": [_size_category(total)],
        "tags": tags,
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {"split": split, "path": paths} for split, paths in sorted(by_split.items())
                ],
            }
        ],
        "dataset_info": {"config_name": "default", "features": hf_feature_list(_mode(cfg))},
    }
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{body}---\n"


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
        "| reused | new | changed | carried | removed |",
        "|---:|---:|---:|---:|---:|",
        f"| {inc['reused']} | {inc['new']} | {inc['changed']} | {inc.get('carried', 0)} "
        f"| {inc['removed']} |",
        "",
        "Reused samples were copied from the previous release's shards without reading pixels "
        "(their `json` member records this release's config hash); changed cells include "
        f"{inc['retried']} that the previous release quarantined (retried); carried cells kept "
        "the previous release's quarantine record without being processed (a verdict on the "
        "same, unchanged items); removed samples' cells are no longer planned. Counts in "
        f"`{INCREMENTAL}`.",
        "",
    ]


#: How to read each codec with plain tools (the card's "Reading each member" table).
_READ_WITH: dict[str, str] = {
    "geotiff": "`tifffile.imread(io.BytesIO(b))` or `rasterio.open(io.BytesIO(b)).read()`: "
    "uint16 DN (band, y, x), every band. Not `PIL.Image.open`, `datasets.Image()` or "
    "webdataset's image decoders: they read band 1 only, silently",
    "png-rgb": "`np.asarray(PIL.Image.open(io.BytesIO(b)))`: uint8 (y, x, 3)",
    "png-index": "`np.asarray(PIL.Image.open(io.BytesIO(b)))`: uint8 values as stored. Not "
    'webdataset\'s `decode("l")`/`decode("rgb")`: they scale the codes to fractions of 255',
    "png-instance": "`np.asarray(PIL.Image.open(io.BytesIO(b)))`: uint16 values as stored. Not "
    "webdataset's image decoders: they convert to 8 bits",
    "json": "`json.loads(b)`",
    "geotiff-index": "`rasterio.open(io.BytesIO(b)).read()`: uint8 codes (band, y, x), every "
    "band (one band per step)",
}


def _mode(cfg: BuildConfig) -> str:
    """The release mode of a config: ``series`` with ``time.series``, else ``pair``."""
    return "pair" if cfg.time.series is None else "series"


def _series_lines(cfg: BuildConfig) -> list[str]:
    """What a sequence release adds to the card (nothing for pairs)."""
    if cfg.time.series is None:
        return []
    s = cfg.time.series
    return [
        "## Sequences",
        "",
        f"Each sample is a sequence of at least {s.min_dates} dates, the clearest one per "
        f"{s.step} window from {s.start:%Y-%m-%d} to {s.end:%Y-%m-%d} (pixel clear fraction >= "
        f"{s.min_clear_fraction:g}), every date co-registered onto the first. The pair members "
        "are its first and last date; `series.tif`, `dates.json`, `step_masks.tif` and "
        '`first_change.png` hold every date and step. `geodelta.data.load(path, mode="series")` '
        "yields `image` [T, C, H, W], `dates`, `mask` [T-1, H, W] and `first_change`; the "
        "temporal QA types are when_appeared, which_first, change_count, permanence, "
        "class_trend and max_area_date.",
        "",
    ]


def _reading_lines(shards: Sequence[ShardInfo], mode: str = "pair") -> list[str]:
    """The card's "Reading the data" section: each member with plain tools, then HF datasets,
    webdataset, PyTorch (geodelta.data) and the GeoParquet sample table."""
    first = next((s.path for s in shards if s.split == "train"), None)
    first = first or (shards[0].path if shards else f"{SHARDS_DIR}/train-000000.tar")
    split = next((s.split for s in shards if s.path == first), "train")
    lines = [
        "",
        "## Reading the data",
        "",
        "Each member with plain tools (`b` = the member's bytes):",
        "",
        "| member | read with |",
        "|---|---|",
    ]
    lines += [
        f"| `{m.name}` | {_READ_WITH.get(m.codec, '(see geodelta.data)')} |"
        for m in members_for(mode)
    ]
    lines += [
        "",
        "Reflectance = DN * `dn_scale` + `dn_offset` (both in the `json` member); DN 0 = no data. "
        "`geodelta.data` decodes every member this way (it imports no GDAL, Beam or Great "
        "Expectations).",
        "",
        "Hugging Face `datasets` (the front matter above lists each split's shards; GeoTIFFs "
        "stay bytes):",
        "",
        "```python",
        "from datasets import load_dataset",
        "import geodelta.data",
        "",
        f'ds = load_dataset("path/to/release", split="{split}")',
        "ds = ds.with_transform(geodelta.data.hf_transform)  # GeoTIFFs -> float32 reflectance",
        "```",
        "",
        'or `load_dataset("webdataset", data_files={...}, features=geodelta.data.hf_features())`.',
        "",
        "webdataset (list the shards from `manifest.json` or this card, not by a brace range):",
        "",
        "```python",
        "import webdataset as wds",
        "import geodelta.data",
        "",
        f'urls = geodelta.data.resolve_shards("path/to/release", "{split}")',
        "ds = wds.WebDataset(urls, shardshuffle=False).map(geodelta.data.decode_members)",
        "# or keep webdataset's decoders for the rest:",
        '# .decode(geodelta.data.webdataset_handler, "rgb8")',
        "```",
        "",
        "PyTorch (TorchGeo-like samples, `len()`, `transforms=`, a padding `collate`, `plot`):",
        "",
        "```python",
        "from torch.utils.data import DataLoader",
        "import geodelta.data",
        "",
        f'ds = geodelta.data.load("path/to/release", split="{split}")',
        "loader = DataLoader(ds, batch_size=8, collate_fn=geodelta.data.collate)",
        "```",
        "",
        f"`{SAMPLES_TABLE}` is GeoParquet (one row per sample: footprint `geometry` in lon/lat, "
        "split, shard and each member's byte offset and size in it, times, fractions, "
        "co-registration, facts summary, captions, annotator): "
        f'`geopandas.read_parquet("{SAMPLES_TABLE}")`, or DuckDB spatial. '
        f"`{QUARANTINE_TABLE}` carries each quarantined cell's footprint; `{MANIFEST}` the "
        "sha256 of every file; `collection.json` a STAC Collection of the release.",
        "",
    ]
    return lines


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
    total = sum(splits.values())
    lines = [front_matter(cfg, total, shards), f"# {title}", "", desc, ""]
    if "synthetic" in cfg.description.lower():
        lines += [
            "> **Synthetic data.** The imagery and labels of this release are generated, not "
            "observed: use it to test pipelines and models, not to draw conclusions about the "
            "Earth's surface.",
            "",
        ]
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
    lines += [f"| `{m.name}` | {m.description} |" for m in members_for(_mode(cfg))]
    lines += [
        "",
        "GeoTIFF values: reflectance = DN * 0.0001 - 0.1 (scale/offset also in the files); "
        "DN 0 = no data.",
        "",
        *_series_lines(cfg),
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
    lines += _reading_lines(shards, _mode(cfg))
    lines += [
        "## Provenance",
        "",
        f"- Config hash: `{cfg.config_hash()}`",
        f"- Code version: `{code_version}`",
        "",
    ]
    return "\n".join(lines).encode()
