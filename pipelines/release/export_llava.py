"""Instruction export: a release as LLaVA / TEOChat-style conversation files.

``geodelta export RELEASE --format llava --out DIR`` writes::

    DIR/README.md                  the format, in short (:data:`README_TEXT`)
    DIR/<split>.json               one conversation per sample of the split
    DIR/images/<key>/before.png    the sample's before image (the release's before.png)
    DIR/images/<key>/after.png     its after image
    DIR/images/<key>/regions.png   its region ids (uint16; the masks of segmentation answers)

One conversation per sample: the first human turn holds the two images (``<image>`` tokens,
before then after) and asks for a change caption (the sample's first caption answers it); then
one turn per QA item, in the release's order. Boxes are normalised integers ``[x0, y0, x1,
y1]`` in 0..1000 (0 = the left/top edge, 1000 = the right/bottom edge of the image, low edges
rounded down, high edges up), the convention of GeoChat / TEOChat-style models. A referring
segmentation answer (``segment_change``) is written as the boxes of its regions, and the turn's
``region_ids`` (in ``grounding``) select the answer mask in ``regions.png``.

Deterministic: the same release gives the same bytes. A non-empty ``DIR`` is refused unless
``overwrite`` (its contents are then replaced).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geodelta._io import write_atomic
from geodelta.errors import ReleaseError
from geodelta.pipelines.release.layout import iter_tar_samples, read_manifest, shard_files
from geodelta.schemas import SampleMeta
from geodelta.schemas.records import format_box

__all__ = ["FORMATS", "README_TEXT", "ExportResult", "export_llava", "export_release"]

#: Export formats (``--format``).
FORMATS = ("llava",)

#: The first human turn: the two images, then the caption request.
CAPTION_PROMPT = (
    "<image>\n<image>\nThese are two satellite images of the same place, before ({t0}) and "
    "after ({t1}). Describe the changes between them."
)
#: The first human turn of a sequence sample: one image per date, then the caption request.
SERIES_PROMPT = (
    "These are {n} satellite images of the same place, taken on {dates}, in this order. "
    "Describe the changes between them."
)
#: How boxes are explained in the first turn when the sample's QA uses them.
BOX_NOTE = (
    " Boxes are written [x0, y0, x1, y1] with integer coordinates from 0 to 1000 across the "
    "image (0 = left or top edge, 1000 = right or bottom edge)."
)

README_TEXT = """# geodelta instruction export (LLaVA / TEOChat layout)

Exported from the release `{name}` version `{version}` (manifest sha256 `{manifest}`).

Files:

- `<split>.json`: a JSON list of conversations, one per sample of the split ({splits}).
- `images/<key>/before.png`, `images/<key>/after.png`: the 8-bit true-colour before and after
  images (paths in `image` are relative to this folder).
- `images/<key>/regions.png`: 16-bit region ids (0 = no change, k = region k of `regions`).
- `images/<key>/date_<i>.png` (sequence releases): the 8-bit true-colour image of each date,
  in time order; `image` then lists them all and `dates` gives their acquisition times.

One conversation:

```json
{{
  "id": "<sample key>",
  "image": ["images/<key>/before.png", "images/<key>/after.png"],
  "image_size": [width, height],
  "conversations": [
    {{"from": "human", "value": "<image>\\n<image>\\n... Describe the changes between them."}},
    {{"from": "gpt", "value": "<a change caption>"}},
    {{"from": "human", "value": "Where did tree cover become cropland?"}},
    {{"from": "gpt", "value": "[120, 40, 380, 290], [600, 700, 720, 810]"}}
  ],
  "grounding": [{{"turn": 3, "type": "refer_change", "region_ids": [1, 3]}}],
  "regions": [{{"id": 1, "box": [120, 40, 380, 290], "from": "tree_cover", "to": "cropland"}}],
  "captions": ["<every caption of the sample>"],
  "captions_grounded": [{{"text": "...", "spans": [{{"start": 0, "end": 9, "regions": [1]}}]}}],
  "t0": "...", "t1": "...", "split": "train"
}}
```

- The first human turn holds one `<image>` token per image, before then after.
- Turn 1 (gpt) is the sample's first caption; then one human/gpt pair per QA item of the sample.
- Boxes: `[x0, y0, x1, y1]`, integers 0..1000 across the image width (x) and height (y);
  low edges rounded down, high edges up, so a box always covers its region. In pixels of an
  image of width W and height H: `x = box_x * W / 1000`.
- `grounding`: for each gpt turn that rests on regions, the index of that turn in
  `conversations`, the QA type and the region ids (values of `regions.png`). A
  `segment_change` answer is written as the boxes of its regions; its mask is
  `isin(regions.png, region_ids)`.
- `regions`: every region of the sample with its box and dominant transition (`unknown` for a
  binary change label).
- `captions`: every caption of the sample (turn 1 uses the first); `captions_grounded`: the same
  captions with the phrases that refer to regions (`text[start:end]` -> region ids), for
  phrase-grounding training.
"""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote.

    Attributes:
        out_dir: the export folder.
        conversations: split -> number of conversations.
        images: number of image files written.
    """

    out_dir: Path
    conversations: dict[str, int]
    images: int


def _refuse_non_empty(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ReleaseError(f"--out {out} is a file, not a folder; choose a folder", path=str(out))
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ReleaseError(
                f"--out {out} is not empty; choose an empty folder or pass --overwrite",
                path=str(out),
            )
        for child in sorted(out.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def _answer_value(q: dict[str, Any], boxes: dict[int, list[int]]) -> str:
    """The gpt turn of a QA item: its answer; segmentation answers as their regions' boxes."""
    if q["type"] == "segment_change":
        ids = q["evidence"].get("region_ids") or []
        return ", ".join(format_box(boxes[i]) for i in ids)
    return str(q["answer"])


def conversation(meta: SampleMeta, captions: list[str], qa: list[dict[str, Any]]) -> dict[str, Any]:
    """The conversation of one sample (image paths relative to the export folder): a pair's
    two images, or every date of a sequence (``date_<i>.png``, in time order)."""
    key = meta.key
    boxes = {r.id: list(r.box) for r in meta.regions}
    grounded_types = {"refer_change", "count_boxes", "what_changed_here", "segment_change"}
    if meta.series is None:
        first = CAPTION_PROMPT.format(t0=f"{meta.t0:%Y-%m-%d}", t1=f"{meta.t1:%Y-%m-%d}")
        image = [f"images/{key}/before.png", f"images/{key}/after.png"]
    else:
        days = [f"{d:%Y-%m-%d}" for d in meta.series.dates]
        first = "<image>\n" * len(days) + SERIES_PROMPT.format(n=len(days), dates=", ".join(days))
        image = [f"images/{key}/date_{i}.png" for i in range(len(days))]
    if any(q["type"] in grounded_types for q in qa):
        first += BOX_NOTE
    turns: list[dict[str, str]] = [
        {"from": "human", "value": first},
        {"from": "gpt", "value": captions[0] if captions else "No caption."},
    ]
    grounding = []
    for q in qa:
        turns.append({"from": "human", "value": str(q["question"])})
        turns.append({"from": "gpt", "value": _answer_value(q, boxes)})
        ids = q["evidence"].get("region_ids")
        if ids:
            grounding.append({"turn": len(turns) - 1, "type": q["type"], "region_ids": ids})
    return {
        "id": key,
        "image": image,
        "image_size": [meta.shape[1], meta.shape[0]],
        "conversations": turns,
        "grounding": grounding,
        "regions": [
            {"id": r.id, "box": list(r.box), "from": r.from_class, "to": r.to_class}
            for r in meta.regions
        ],
        "captions": list(captions),
        "captions_grounded": [g.model_dump(mode="json") for g in meta.captions_grounded],
        "t0": meta.t0.isoformat(),
        "t1": meta.t1.isoformat(),
        **({} if meta.series is None else {"dates": [d.isoformat() for d in meta.series.dates]}),
        "split": meta.split,
    }


def _date_pngs(meta: SampleMeta, members: dict[str, bytes], config: dict[str, Any]) -> list[bytes]:
    """One 8-bit true-colour PNG per date of a sequence sample, from ``series.tif`` (the
    release's ``imagery.rgb`` bands and ``rgb_max_reflectance``, the encoder's rendering)."""
    from geodelta.data import decode_member
    from geodelta.pipelines.stages.encode import rgb_png

    imagery = config.get("imagery") or {}
    rgb = [str(b) for b in imagery.get("rgb", ("B04", "B03", "B02"))]
    vmax = float(imagery.get("rgb_max_reflectance", 0.3))
    stack = decode_member(
        "series.tif", members["series.tif"], meta=meta.model_dump(mode="json"), bands=rgb
    )
    return [rgb_png(stack[t], (0, 1, 2), vmax) for t in range(stack.shape[0])]


def export_llava(
    release_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False
) -> ExportResult:
    """Write a release as LLaVA / TEOChat conversation files (see the module docstring).

    Args:
        release_dir: a local release folder.
        out_dir: the export folder (created; must be empty unless ``overwrite``).
        overwrite: replace the contents of a non-empty ``out_dir``.

    Raises:
        ReleaseError: not a release, a release without ``regions.png`` (built before regions
            existed), or a non-empty ``out_dir`` without ``overwrite``.
    """
    release = Path(release_dir)
    manifest = read_manifest(release)
    if "regions.png" not in manifest.members:
        raise ReleaseError(
            f"{release} has no regions.png member (built by an older geodelta); rebuild it to "
            "export grounded conversations",
            path=str(release),
        )
    out = Path(out_dir)
    _refuse_non_empty(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    per_split: dict[str, list[dict[str, Any]]] = {s: [] for s in sorted(manifest.splits)}
    images = 0
    for shard in shard_files(release):
        for key, members in iter_tar_samples(shard):
            meta = SampleMeta.model_validate_json(members["json"])
            folder = out / "images" / key
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("before.png", "after.png", "regions.png"):
                write_atomic(folder / name, members[name])
                images += 1
            if meta.series is not None:  # a sequence: every date, in time order
                for i, png in enumerate(_date_pngs(meta, members, manifest.config)):
                    write_atomic(folder / f"date_{i}.png", png)
                    images += 1
            conv = conversation(
                meta, json.loads(members["captions.json"]), json.loads(members["qa.json"])
            )
            per_split.setdefault(meta.split, []).append(conv)
    counts = {}
    for split, convs in sorted(per_split.items()):
        convs.sort(key=lambda c: c["id"])
        data = json.dumps(convs, indent=1, ensure_ascii=False, sort_keys=False) + "\n"
        write_atomic(out / f"{split}.json", data.encode())
        counts[split] = len(convs)
    manifest_sha = (
        (release / "manifest.sha256").read_text().split()[0]
        if (release / "manifest.sha256").is_file()
        else "unknown"
    )
    readme = README_TEXT.format(
        name=manifest.name,
        version=manifest.version,
        manifest=manifest_sha,
        splits=", ".join(f"`{s}.json`: {n}" for s, n in counts.items()),
    )
    write_atomic(out / "README.md", readme.encode())
    return ExportResult(out_dir=out, conversations=counts, images=images)


def export_release(
    release_dir: str | Path, out_dir: str | Path, *, fmt: str = "llava", overwrite: bool = False
) -> ExportResult:
    """Export a release in one of :data:`FORMATS`.

    Raises:
        ReleaseError: an unknown format, or what :func:`export_llava` raises.
    """
    if fmt not in FORMATS:
        raise ReleaseError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return export_llava(release_dir, out_dir, overwrite=overwrite)
