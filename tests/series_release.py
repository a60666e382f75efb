"""A small hand-made SERIES release for the report and reference-model tests (issue 15).

Until the pipeline builds series releases, tests need one: :func:`series_release` stages
:func:`tests.factories.make_sample` samples (before = date 0, after = date T-1) with their
series members as the contract lays them out (``series.tif``, ``dates.json``,
``first_change.png``, ``step_masks.tif`` after the pair members, the ``series`` key of the
``json`` member, temporal QA items and captions) and writes the release of a ``time.series``
config with :func:`geodelta.pipelines.release.assemble.write_release`.

Every sample's sequence is known by construction (:class:`SeriesPlan`): T dates in chosen
windows of 2018..2022 (one per year), the pair's change rectangle appearing at step
``change_step`` and, for a transient sample, reverting to its date-0 class at step
``revert_step``, so tests can compare the report's figures with plain counts. The pair members
stay as the factory makes them (a transient sample's pair still shows the change); the before
and after reflectance are put on the DN grid first, so that date 0 and date T-1 of
``series.tif`` render exactly as ``before.png`` and ``after.png``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from geodelta.pipelines.release.assemble import write_release
from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.stages.encode import build_meta, encode_members, index_png, to_dn
from geodelta.schemas.classes import CLASSES
from geodelta.schemas.members import SERIES_SAMPLE_MEMBERS
from geodelta.schemas.records import normalised_box
from geodelta.schemas.series import (
    ClassTrend,
    RegionHistory,
    SeriesDateMeta,
    SeriesFacts,
    SeriesStep,
)
from tests.factories import BANDS, make_config, make_sample

SPLIT_OF = ("train", "train", "val", "test")
#: The windows of the fixture's ``time.series`` (one per year).
YEARS = (2018, 2019, 2020, 2021, 2022)
SERIES_CONFIG = {"start": "2018-01-01", "end": "2023-01-01", "step": "year"}
_POSITIONS = (
    ("north-west", "north", "north-east"),
    ("west", "centre", "east"),
    ("south-west", "south", "south-east"),
)


@dataclass(frozen=True)
class SeriesPlan:
    """The sequence of one fixture sample."""

    windows: tuple[int, ...]  # window (year index) of each date
    change_step: int  # step k at which the rectangle changes (0 = no change at all)
    revert_step: int = 0  # step at which it changes back (0 = never: permanent)
    residual: float = 0.1  # residual_px of dates 1.. (date d gets residual * d)


def plan_of(i: int) -> SeriesPlan:
    """Sample i: T = 3, 4, 5 in turn; every 4th sample unchanged; every 5th transient."""
    windows = ((0, 2, 4), (0, 1, 3, 4), (0, 1, 2, 3, 4))[i % 3]
    t = len(windows)
    if i % 4 == 0:
        return SeriesPlan(windows, 0)
    if i % 5 == 1 and t >= 4:
        return SeriesPlan(windows, 1, revert_step=t - 2)
    return SeriesPlan(windows, 1 + i % (t - 1))


def _dates(plan: SeriesPlan, seed: int) -> list[datetime]:
    return [
        datetime(YEARS[w], 6, 10 + (seed + k) % 15, 10, 30, tzinfo=UTC)
        for k, w in enumerate(plan.windows)
    ]


def _geotiff(arr: np.ndarray, crs: str, transform: tuple[float, ...], names: list[str]) -> bytes:
    """A (B, H, W) uint8 or uint16 array as a GeoTIFF with band descriptions."""
    import rasterio
    from affine import Affine
    from rasterio.io import MemoryFile

    from geodelta.pipelines.stages.encode import OUTPUT_DN_OFFSET, OUTPUT_DN_SCALE

    profile: dict[str, Any] = {
        "driver": "GTiff",
        "dtype": str(arr.dtype),
        "count": arr.shape[0],
        "height": arr.shape[1],
        "width": arr.shape[2],
        "crs": rasterio.crs.CRS.from_user_input(crs),
        "transform": Affine(*transform),
        "compress": "deflate",
        "interleave": "band",
    }
    if arr.dtype == np.uint16:
        profile["nodata"] = 0
    with MemoryFile() as mf:
        with mf.open(**profile) as dst:
            dst.write(np.ascontiguousarray(arr))
            for b, name in enumerate(names, start=1):
                dst.set_band_description(b, name)
            if arr.dtype == np.uint16:
                dst.scales = (OUTPUT_DN_SCALE,) * arr.shape[0]
                dst.offsets = (OUTPUT_DN_OFFSET,) * arr.shape[0]
        return bytes(mf.read())


def _on_dn_grid(reflectance: np.ndarray) -> np.ndarray:
    """Reflectance as geodelta.data decodes it back from its DN (float32 arithmetic)."""
    from geodelta.pipelines.stages.encode import OUTPUT_DN_OFFSET, OUTPUT_DN_SCALE

    dn = to_dn(reflectance)
    out = dn.astype(np.float32) * np.float32(OUTPUT_DN_SCALE) + np.float32(OUTPUT_DN_OFFSET)
    out[dn == 0] = np.nan
    return out


def _position(row: float, col: float, shape: tuple[int, int]) -> str:
    h, w = shape
    return _POSITIONS[min(int(row * 3 // h), 2)][min(int(col * 3 // w), 2)]


def series_arrays(
    sample: Any, plan: SeriesPlan, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(stack (T, C, H, W), lc (T, H, W), step masks (T-1, H, W), first_change (H, W))."""
    t = len(plan.windows)
    rng = np.random.default_rng(1000 + seed)
    changed = sample.mask > 0
    lc = []
    stack = []
    for d in range(t):
        after_change = plan.change_step and d >= plan.change_step
        reverted = plan.revert_step and d >= plan.revert_step
        on = bool(after_change and not reverted)
        lc.append(np.where(changed & on, sample.lc_after, sample.lc_before).astype(np.uint8))
        if d == 0:
            img = sample.before
        elif d == t - 1:
            img = sample.after
        else:
            img = np.where(changed[None] & on, sample.after, sample.before)
            img = img + rng.normal(0.0, 0.01, size=img.shape).astype(np.float32)
        stack.append(np.asarray(img, dtype=np.float32))
    lc_arr = np.stack(lc)
    steps = np.zeros((t - 1, *sample.mask.shape), dtype=np.uint8)
    for k in range(1, t):
        diff = lc_arr[k] != lc_arr[k - 1]
        steps[k - 1][diff] = sample.mask[diff] if k == plan.change_step else 1
    first = np.zeros(sample.mask.shape, dtype=np.uint8)
    for k in range(t - 1, 0, -1):
        first[steps[k - 1] > 0] = k
    return np.stack(stack), lc_arr, steps, first


def series_facts(
    lc: np.ndarray, steps: np.ndarray, first: np.ndarray, dates: list[datetime]
) -> SeriesFacts:
    """SeriesFacts of the fixture's arrays (one rectangle at most, every pixel valid)."""
    t, h, w = lc.shape
    valid = h * w
    regions: list[RegionHistory] = []
    ys, xs = np.nonzero(first > 0)
    if len(ys):
        classes = tuple(
            CLASSES[int(Counter(lc[d][ys, xs].tolist()).most_common(1)[0][0])] for d in range(t)
        )
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        regions.append(
            RegionHistory(
                id=1,
                pixels=len(ys),
                classes=classes,
                changed_steps=tuple(k for k in range(1, t) if classes[k] != classes[k - 1]),
                persistent=classes[-1] != classes[0],
                bbox_px=box,
                box=normalised_box(box, (h, w)),
                position=_position(float(ys.mean()), float(xs.mean()), (h, w)),
            )
        )
    threshold = max(4, int(np.ceil(0.01 * valid)))
    trends = []
    for idx in sorted({int(v) for v in np.unique(lc) if v > 0}):
        px = tuple(int((lc[d] == idx).sum()) for d in range(t))
        delta = px[-1] - px[0]
        trend = "grew" if delta > threshold else "shrank" if delta < -threshold else "stable"
        trends.append(
            ClassTrend(
                class_name=CLASSES[idx], pixels=px, trend=trend, max_index=int(np.argmax(px))
            )
        )
    return SeriesFacts(
        dates=tuple(dates),
        shape=(h, w),
        valid_pixels=valid,
        steps=tuple(
            SeriesStep(
                index=k,
                start=dates[k - 1],
                end=dates[k],
                changed_pixels=int((steps[k - 1] > 0).sum()),
            )
            for k in range(1, t)
        ),
        ever_changed_pixels=int((first > 0).sum()),
        regions=tuple(regions),
        classes=tuple(trends),
        min_region_px=4,
        threshold_px=threshold,
    )


def temporal_qa(facts: SeriesFacts) -> list[dict[str, Any]]:
    """Temporal QA items of the fixture: permanence, change_count, class_trend, when_appeared."""
    iso = [d.date().isoformat() for d in facts.dates]
    items: list[dict[str, Any]] = []
    for r in facts.regions:
        if r.changed_steps:
            k = r.changed_steps[0]
            items.append(
                {
                    "type": "when_appeared",
                    "question": f"When did the change in the {r.position} appear?",
                    "answer": f"between {iso[k - 1]} and {iso[k]}",
                    "evidence": {"region_ids": [r.id], "step": k},
                }
            )
        items.append(
            {
                "type": "permanence",
                "question": f"Is the change in the {r.position} permanent?",
                "answer": "permanent" if r.persistent else "transient",
                "evidence": {"region_ids": [r.id]},
            }
        )
        items.append(
            {
                "type": "change_count",
                "question": f"How many times did the region in the {r.position} change?",
                "answer": str(len(r.changed_steps)),
                "evidence": {"region_ids": [r.id]},
            }
        )
    for c in facts.classes:
        items.append(
            {
                "type": "class_trend",
                "question": f"Did the {c.class_name} area grow or shrink?",
                "answer": c.trend,
                "evidence": {"pixels": list(c.pixels), "region_ids": []},
            }
        )
    return items


def _series_members(
    members: dict[str, bytes], sample: Any, meta: Any, plan: SeriesPlan, seed: int
) -> dict[str, bytes]:
    """The pair members of a sample plus its series members (tar order)."""
    dates = _dates(plan, seed)
    stack, lc, steps, first = series_arrays(sample, plan, seed)
    t, c = stack.shape[:2]
    iso = [d.date().isoformat() for d in dates]
    facts = series_facts(lc, steps, first, dates)
    date_meta = [
        SeriesDateMeta(
            index=d,
            window=plan.windows[d],
            item_id=f"S2_{dates[d]:%Y%m%d}_{seed}",
            datetime=dates[d],
            clear_fraction=0.99,
            valid_fraction=1.0,
            label_item=f"lulc_{dates[d]:%Y}",
            shift_px=(0.0, 0.0) if d == 0 else (0.1 * d, -0.05 * d),
            residual_px=0.0 if d == 0 else round(plan.residual * d, 3),
        ).model_dump(mode="json")
        for d in range(t)
    ]
    js = json.loads(members["json"])
    js["series"] = facts.model_dump(mode="json")
    captions = json.loads(members["captions.json"])
    if facts.regions and facts.regions[0].changed_steps:
        k = facts.regions[0].changed_steps[0]
        captions.append(f"The change happened between {iso[k - 1]} and {iso[k]}.")
    qa = json.loads(members["qa.json"]) + temporal_qa(facts)
    out = dict(members)
    out["json"] = json.dumps(js, sort_keys=True, separators=(",", ":")).encode()
    out["captions.json"] = json.dumps(captions, separators=(",", ":")).encode()
    out["qa.json"] = json.dumps(qa, sort_keys=True, separators=(",", ":")).encode()
    out["series.tif"] = _geotiff(
        to_dn(stack.reshape(t * c, *stack.shape[2:])),
        meta.crs,
        tuple(meta.transform),
        [f"{iso[d]} {b}" for d in range(t) for b in meta.bands],
    )
    out["dates.json"] = json.dumps(date_meta, sort_keys=True, separators=(",", ":")).encode()
    out["first_change.png"] = index_png(first)
    out["step_masks.tif"] = _geotiff(
        steps, meta.crs, tuple(meta.transform), [f"{iso[k - 1]}..{iso[k]}" for k in range(1, t)]
    )
    return {name: out[name] for name in SERIES_SAMPLE_MEMBERS}


def series_release(root: Path, n: int = 12, *, shape: tuple[int, int] = (32, 32)) -> Path:
    """A series release of ``n`` factory samples (cell column i, split by ``i % 4``).

    Returns:
        The release folder; ``plan_of(i)`` tells each sample's sequence.
    """
    cfg = make_config(
        validation={"great_expectations": False},
        time={
            "t0": ["2018-01-01", "2019-01-01"],
            "t1": ["2022-01-01", "2023-01-01"],
            "series": SERIES_CONFIG,
        },
    )
    staging = Staging(root / "staging")
    for i in range(n):
        plan = plan_of(i)
        dates = _dates(plan, i)
        sample = make_sample(
            i,
            col=i,
            split=SPLIT_OF[i % 4],
            change=plan.change_step > 0,
            t0=dates[0],
            t1=dates[-1],
            shape=shape,
        )
        sample = replace(sample, before=_on_dn_grid(sample.before), after=_on_dn_grid(sample.after))
        meta = build_meta(sample, cfg, code_version="0.1.0", shaping_hash=cfg.shaping_hash())
        members = _series_members(encode_members(sample, meta, cfg), sample, meta, plan, i)
        staging.put_sample(sample.key, members)
        staging.mark_cell(meta.cell_id, keys=[sample.key], quarantine=[])
    rel = root / "rel"
    write_release(rel, cfg, staging, code_version="0.1.0")
    return rel


__all__ = ["BANDS", "SERIES_CONFIG", "SeriesPlan", "plan_of", "series_release"]
