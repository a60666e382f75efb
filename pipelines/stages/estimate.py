"""What a build will cost, before any work: ``geodelta plan CONFIG --estimate`` and the budget
check of ``geodelta build``.

Every figure is an estimate and carries its basis:

* **cells** per split and zone: exact, counted from the AOI and the grid without cell objects
  (:func:`~geodelta.pipelines.stages.plan.count_cells`);
* **blocks** and **STAC searches**: exact block count
  (:func:`~geodelta.pipelines.stages.plan.count_blocks`), times one search per block,
  collection and time window (a search is one request per page of results);
* **bytes to read**: the uncompressed pixels of the cell windows at each asset's native
  resolution (:func:`asset_reads`, the config alone), and, where the catalog can be read, the
  COG tiles of a sampled item: a window read fetches whole internal tiles, so each window is
  rounded up to the tile grid and scaled by the file's compression (its size over its
  uncompressed pixels);
* **CPU-hours**: at the per-tile cost ``benchmarks/bench_build.py`` measured
  (:data:`CPU_MS_PER_TILE`), network waits not included;
* **output size**: up to one sample per cell, at the uncompressed size of a sample's members
  (the bands of both dates, the RGB renderings, the masks);
* **LLM tokens and USD**: the prompt of a typical changed cell rendered and counted as the
  annotator counts it, the reply at ``annotation.openai.max_output_tokens``, at
  ``annotation.openai.prices`` for the model; the template annotator costs nothing.

:func:`check_budget` compares the offline part (no catalog, no network) with the ``budget``
section and raises :class:`BudgetError` naming the count, the estimate and the limit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from geodelta.errors import BuildError, GeodeltaError
from geodelta.schemas import BuildConfig

if TYPE_CHECKING:
    from geodelta.schemas import ChangeFacts

__all__ = [
    "CPU_MS_PER_TILE",
    "AssetRead",
    "BudgetError",
    "Estimate",
    "Excess",
    "LLMEstimate",
    "TileLayout",
    "asset_reads",
    "check_budget",
    "estimate",
    "exceeded",
]

#: CPU milliseconds per output tile, end to end (plan, cells, release, report; user + system of
#: the whole process tree), in-process runner: ``python benchmarks/bench_build.py``,
#: benchmarks/RESULTS.md "Build throughput" (2026-12-05 19:52, an AMD EPYC, demo catalog at
#: scale 3: 762 tiles in 52.6 CPU s = 14.49 tiles per CPU second, with the co-registration's
#: neighbourhood check; 64.9 ms on the Intel Xeon of 02:56). The Beam direct runner measured
#: 74.0 ms/tile.
CPU_MS_PER_TILE = 69.0
CPU_BASIS = (
    f"at {CPU_MS_PER_TILE} ms/tile measured by benchmarks/bench_build.py (in-process runner, "
    "end to end, CPU time; RESULTS.md 2026-12-05, scale 3); network waits not included, and "
    "small builds are dominated by a fixed ~8 s (start-up, release, report: bench_build at scale 3)"
)

#: How a sequence's CPU is estimated: a pair's per date.
SERIES_CPU_NOTE = (
    "; a sequence of T dates at T/2 times a pair's cost (bench_build --series measured a T=5 "
    "sample at 1.7x a pair's wall time: an upper-side estimate)"
)

#: Classification-band reads per cell: the pair stage rates scenes lazily, best first, and
#: stops when no pair can win: 2.4 reads per cell on the demo (benchmarks/RESULTS.md, "Build
#: throughput: what was optimised", pair row).
RATED_SCENES_PER_CELL = 2.4

#: Classification-band reads per window of a sequence: the sequence stage rates every scene of
#: the series span (3 per summer window on the series demo, ``write_demo_catalog(series=True)``).
SERIES_RATED_PER_WINDOW = 3.0


def dates_per_sample(cfg: BuildConfig) -> int:
    """Dates a sample holds: 2 for a pair, the number of ``time.series`` windows at most."""
    if cfg.time.series is None:
        return 2
    from geodelta.schemas.series import series_windows

    return len(series_windows(cfg.time.series))


def rated_per_cell(cfg: BuildConfig) -> float:
    """Classification-band reads per cell: :data:`RATED_SCENES_PER_CELL` for pairs, every
    candidate of the span for sequences (:data:`SERIES_RATED_PER_WINDOW` per window)."""
    if cfg.time.series is None:
        return RATED_SCENES_PER_CELL
    return SERIES_RATED_PER_WINDOW * dates_per_sample(cfg)


#: Output bytes of the demo release 0.1.0 (configs/demo.yaml, scale 1): 16,480,256 B of shards
#: for 70 samples = 235,432 B per sample, 0.55 of :func:`sample_bytes`' 425,984 B.
DEMO_SHARD_RATIO = 0.55

#: The typical changed cell whose prompt is counted (the demo release averages 0.5
#: transitions, 0.6 regions and 4.5 classes per sample: this is above it).
_TYPICAL = "a changed cell with 2 transitions, 2 regions and 5 classes"


class BudgetError(BuildError):
    """The estimate of a build exceeds a ``budget`` limit; ``--yes`` (``confirm=True``) builds
    anyway. Attributes: ``excess`` (every limit exceeded), ``estimate``."""

    def __init__(
        self, message: str, excess: list[Excess] | None = None, est: Estimate | None = None
    ) -> None:
        super().__init__(message)
        self.excess = excess or []
        self.estimate = est


@dataclass(frozen=True)
class LLMEstimate:
    """Tokens and US dollars of the annotation (0 for the template annotator).

    Attributes:
        annotator: ``template`` or ``openai``.
        model: the LLM (None: template).
        samples: samples annotated at most (one per cell).
        tokens_in: prompt tokens, one request per sample.
        tokens_out: completion tokens at ``max_output_tokens`` per request (the most a reply
            may use; the annotator books the same worst case against ``budget_usd``).
        usd: their price at ``annotation.openai.prices`` (batch: times ``batch_price_factor``).
        usd_with_fixes: the same with every fix round (``max_fix_attempts`` more requests per
            sample, each resending the conversation).
        basis: how the figures were made, in words.
    """

    annotator: str
    model: str | None
    samples: int
    tokens_in: int
    tokens_out: int
    usd: float
    usd_with_fixes: float
    basis: str


@dataclass(frozen=True)
class TileLayout:
    """The internal tiling of one asset of a sampled item (from its file header).

    Attributes:
        asset: the asset key; ``item``: the sampled item id.
        block: tile (width, height) in pixels (a striped file: its strips).
        size: raster (width, height) in pixels.
        resolution_m: pixel (x, y) size in metres (degrees converted at the AOI's latitude).
        dtype_bytes: bytes per pixel.
        ratio: file bytes over uncompressed pixel bytes (None: the file size is unknown).
    """

    asset: str
    item: str
    block: tuple[int, int]
    size: tuple[int, int]
    resolution_m: tuple[float, float]
    dtype_bytes: int
    ratio: float | None

    def window_bytes(self, side_m: float) -> float:
        """Bytes fetched for a window of ``side_m`` x ``side_m`` metres: whole tiles (a window
        at an arbitrary offset spans ``1 + (w - 1) / t`` tiles of ``t`` px per axis on
        average, at most all of them), at the file's compression."""
        tiles = 1.0
        for axis in (0, 1):
            w = side_m / self.resolution_m[axis]
            t = self.block[axis]
            tiles *= min(1 + max(w - 1, 0) / t, math.ceil(self.size[axis] / t))
        raw = tiles * self.block[0] * self.block[1] * self.dtype_bytes
        return raw * (self.ratio if self.ratio is not None else 1.0)


@dataclass(frozen=True)
class Excess:
    """One budget limit an estimate exceeds: ``what`` (words), the ``key``
    (``budget.max_cells``), the estimate and the limit."""

    what: str
    key: str
    estimate: float
    limit: float

    def text(self) -> str:
        """``4,819,044 cells > budget.max_cells 100,000``."""
        return f"{_fmt(self.estimate, self.what)} > {self.key} {_fmt(self.limit, self.what)}"


@dataclass(frozen=True)
class AssetRead:
    """One asset a cell's build reads.

    Attributes:
        asset: the asset key.
        key: the config key naming it.
        collection: the collection of the items holding it (None: the label rides on the
            imagery items and is counted at the grid resolution).
        reads: reads per cell (2 per band: both scenes; one per rated scene for the
            classification band; one per label map).
        resolution_m: native resolution in metres (collection profile, else the grid's).
        dtype_bytes: bytes per pixel.
    """

    asset: str
    key: str
    collection: str | None
    reads: float
    resolution_m: float
    dtype_bytes: int

    def window_bytes(self, area_m2: float) -> float:
        """Uncompressed bytes of its reads over a cell of ``area_m2`` square metres."""
        px = max(1, round(area_m2 / (self.resolution_m * self.resolution_m)))
        return self.reads * px * self.dtype_bytes


def asset_reads(cfg: BuildConfig, n_rated: float, resolution: float) -> list[AssetRead]:
    """What the build reads per cell: both scenes' bands, the classification band of every
    rated scene (``n_rated``), the label maps (two land-cover maps, or one change mask).

    ``resolution``: the grid resolution (m), used where a collection profile has no figure.
    """
    from geodelta.pipelines.stages.labels.registry import label_source
    from geodelta.sources.profiles import band_resolution, get_profile

    coll = cfg.imagery.collection
    ip = get_profile(coll)
    band_bytes = ip.dtype_bytes if ip is not None else 2
    dates = dates_per_sample(cfg)
    reads = [
        AssetRead(b, "imagery.bands", coll, dates, band_resolution(coll, b, resolution), band_bytes)
        for b in cfg.imagery.bands
    ]
    cls = cfg.imagery.classification_asset
    if cls is not None:
        res = band_resolution(coll, cls, resolution)
        reads.append(AssetRead(cls, "imagery.classification_asset", coll, n_rated, res, 2))
    labels = cfg.labels
    maps = label_source(labels.kind).maps_per_pair if cfg.time.series is None else dates
    searched = labels.searched_collection
    if searched:
        res = band_resolution(searched, labels.asset, resolution)
        reads.append(AssetRead(labels.asset, "labels.asset", searched, maps, res, 1))
    else:  # the label rides on the imagery item: counted at the grid resolution
        reads.append(AssetRead(labels.asset, "labels.asset", None, maps, resolution, 1))
    return reads


@dataclass(frozen=True)
class Estimate:
    """What a build of a config will cost, before any work (every figure an estimate).

    Attributes:
        cells, cells_by_split, cells_by_zone: planned cells (exact counts).
        blocks, block_cells: non-empty plan blocks of ``block_cells`` x ``block_cells`` cells
            (None: not counted, the budget check's quick estimate).
        searches_per_block: STAC searches per block (collections x time windows).
        stac_searches: ``blocks x searches_per_block`` (None with ``blocks``).
        read_bytes_pixels: uncompressed pixels of the cell windows at native resolution.
        read_bytes_tiles: the whole COG tiles those windows touch in the sampled items, at
            their compression, each window fetching its tiles afresh (None: no item sampled).
        read_bytes_tiles_once: the same when each tile is fetched once (neighbouring cells on
            one worker share GDAL's block cache): the compressed pixels (None: not sampled).
        read_bytes: the headline figure (tiles when sampled, else pixels); ``read_basis``.
        cpu_hours: ``cells x CPU_MS_PER_TILE``; ``cpu_basis``.
        samples_max: samples at most (one per cell; quarantined cells make none).
        sample_bytes, output_bytes: per sample and in all (uncompressed members);
            ``output_basis``.
        llm: the annotation's tokens and dollars.
        budget: the ``budget`` section compared with; ``excess``: the limits exceeded.
        notes: what was assumed or could not be done.
    """

    name: str
    version: str
    cells: int
    cells_by_split: dict[str, int]
    cells_by_zone: dict[str, int]
    blocks: int | None
    block_cells: int
    searches_per_block: int
    stac_searches: int | None
    read_bytes_pixels: int
    read_bytes_tiles: int | None
    read_bytes_tiles_once: int | None
    read_bytes: int
    read_basis: str
    cpu_hours: float
    cpu_basis: str
    samples_max: int
    sample_bytes: int
    output_bytes: int
    output_basis: str
    llm: LLMEstimate
    budget: dict[str, float | None]
    excess: list[Excess] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data (``geodelta plan --estimate --json``)."""
        return {"estimate": True, **asdict(self)}

    def lines(self) -> list[str]:
        """The estimate in words, one figure per line with its basis in brackets."""
        splits = ", ".join(f"{k} {v:,}" for k, v in self.cells_by_split.items())
        zones = ", ".join(f"{k} {v:,}" for k, v in self.cells_by_zone.items())
        out = [
            f"estimate for {self.name} {self.version} (every figure an estimate, its basis in "
            "brackets)",
            f"cells        {self.cells:,} ({splits}; zones {zones}) [exact count from the AOI "
            "and grid]",
        ]
        if self.blocks is not None:
            out.append(
                f"blocks       {self.blocks:,} of up to {self.block_cells}x{self.block_cells} "
                f"cells [exact count, runner.block_cells {self.block_cells}]"
            )
            out.append(
                f"STAC         {self.stac_searches:,} searches ({self.searches_per_block} per "
                "block) [one search per block, collection and time window; one request per "
                "page of results, so at least this many requests]"
            )
        per_cell = self.read_bytes / max(self.cells, 1)
        out.append(
            f"read         {_bytes(self.read_bytes)} ({_bytes(per_cell)} per cell) "
            f"[{self.read_basis}]"
        )
        if self.read_bytes_tiles_once is not None:
            out.append(
                f"             {_bytes(self.read_bytes_tiles_once)} if each tile is fetched once "
                "(cells of a block on one worker share GDAL's block cache); "
                f"{_bytes(self.read_bytes_pixels)} as uncompressed pixels of the cell windows"
            )
        out.append(
            f"CPU          {_num(self.cpu_hours)} CPU-hours ({_duration(self.cpu_hours)}) "
            f"[{self.cpu_basis}]"
        )
        out.append(
            f"output       up to {self.samples_max:,} samples, {_bytes(self.output_bytes)} "
            f"[{self.output_basis}]"
        )
        llm = self.llm
        if llm.model is None:
            out.append("LLM          0 USD [template annotator: no LLM request]")
        else:
            out.append(
                f"LLM          {llm.usd:,.2f} USD, {llm.tokens_in:,} tokens in + "
                f"{llm.tokens_out:,} out over {llm.samples:,} samples ({llm.model}); up to "
                f"{llm.usd_with_fixes:,.2f} USD with every fix round [{llm.basis}]"
            )
        if self.excess:
            over = "; ".join(e.text() for e in self.excess)
            out.append(f"budget       over: {over}: `geodelta build` asks for --yes")
        else:
            limits = ", ".join(f"{k} {_fmt(v, k)}" for k, v in self.budget.items() if v is not None)
            out.append(f"budget       within every limit ({limits or 'none set'})")
        out += [f"note         {n}" for n in self.notes]
        return out


# -- formatting -------------------------------------------------------------------------------


def _bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:.0f} B"


def _num(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _duration(hours: float) -> str:
    seconds = hours * 3600
    if seconds < 120:
        return f"{seconds:.0f} CPU-seconds"
    if hours < 2:
        return f"{seconds / 60:.0f} CPU-minutes"
    return f"{hours / 24:,.1f} CPU-days" if hours >= 48 else f"{hours:.1f} CPU-hours"


def _fmt(value: float, what: str) -> str:
    if "bytes" in what:
        return _bytes(value)
    if "usd" in what.lower():
        return f"{value:,.2f} USD"
    if "cpu" in what.lower():
        return f"{_num(value)} CPU-hours"
    return f"{value:,.0f} cells"


# -- the figures ------------------------------------------------------------------------------


def sample_bytes(cfg: BuildConfig) -> int:
    """Uncompressed bytes of one sample's members: both dates' bands (16 bit), two RGB
    renderings (3 x 8 bit), the change mask and two land-cover maps (8 bit), as
    ``build.space_note`` counts them."""
    side = cfg.grid.cell_size_px
    pair = side * side * (len(cfg.imagery.bands) * 2 * 2 + 2 * 3 + 4)
    if cfg.time.series is None:
        return pair
    t = dates_per_sample(cfg)  # series.tif (16 bit), step masks, first_change (8 bit)
    return pair + side * side * (len(cfg.imagery.bands) * 2 * t + (t - 1) + 1)


def _searches_per_block(cfg: BuildConfig) -> int:
    """Imagery: one search per time window (a sequence: one over its span); labels of their
    own collection: one more."""
    return (2 if cfg.time.series is None else 1) + (1 if cfg.labels.searched_collection else 0)


def _typical_facts(cfg: BuildConfig) -> ChangeFacts:
    """The facts of :data:`_TYPICAL` on this config's grid (only their size matters)."""
    from geodelta.schemas import ChangeFacts
    from geodelta.schemas.classes import transition_code
    from geodelta.schemas.records import ChangeComponent, TransitionStat

    n = cfg.grid.cell_size_px
    area = cfg.grid.resolution_m**2
    changes = (("cropland", "built_up", n * n // 20), ("tree_cover", "grassland", n * n // 50))
    transitions = tuple(
        TransitionStat(
            code=transition_code(a, b), from_class=a, to_class=b, pixels=p, area_m2=p * area
        )
        for a, b, p in changes
    )
    components = tuple(
        ChangeComponent(
            id=i + 1,
            code=t.code,
            from_class=t.from_class,
            to_class=t.to_class,
            pixels=t.pixels,
            area_m2=t.area_m2,
            centroid=(n / 4, n / 4 * (2 * i + 1)),
            position=("north-west", "north-east")[i],
            bbox=(0, i * n // 2, n // 2, (i + 1) * n // 2 - 1),
        )
        for i, t in enumerate(transitions)
    )
    classes = ("tree_cover", "grassland", "cropland", "built_up", "water")
    before = {c: n * n // len(classes) for c in classes}
    after = dict(before)
    for t in transitions:
        after[t.from_class] -= t.pixels
        after[t.to_class] += t.pixels
    changed = sum(t.pixels for t in transitions)
    return ChangeFacts(
        shape=(n, n),
        pixel_area_m2=area,
        valid_pixels=n * n,
        changed_pixels=changed,
        changed_fraction=changed / (n * n),
        binary=False,
        transitions=transitions,
        class_pixels_before=before,
        class_pixels_after=after,
        components=components,
        min_region_px=cfg.labels.min_region_px,
    )


def _typical_series(cfg: BuildConfig) -> Any:
    """A sequence's facts for :data:`_TYPICAL` over the config's windows (one date each, the
    two regions changing at different steps): what a sequence sample adds to a prompt."""
    if cfg.time.series is None:
        return None
    import numpy as np

    from geodelta.pipelines.stages.labels.series import label_series
    from geodelta.schemas.classes import CLASS_INDEX as index
    from geodelta.schemas.series import series_windows

    dates = [w.start for w in series_windows(cfg.time.series)]
    n = cfg.grid.cell_size_px
    lc = np.full((len(dates), n, n), index["grassland"], dtype=np.uint8)
    lc[:, : n // 2, n // 2 :] = index["tree_cover"]
    lc[1:, : n // 4, : n // 4] = index["built_up"]  # appears at step 1 and stays
    lc[-1:, : n // 2, n // 2 : 3 * n // 4] = index["grassland"]  # cut at the last step
    return label_series(lc, dates, min_region_px=cfg.labels.min_region_px).facts


def llm_estimate(cfg: BuildConfig, samples: int) -> LLMEstimate:
    """Tokens and dollars of annotating ``samples`` samples (see :class:`LLMEstimate`)."""
    a = cfg.annotation
    if a.annotator != "openai":
        return LLMEstimate(a.annotator, None, samples, 0, 0, 0.0, 0.0, "template annotator")
    from geodelta.annotators.llm.annotator import LLMAnnotator
    from geodelta.annotators.llm.prompt import PromptTemplate

    s = a.openai
    template = PromptTemplate(s.prompt_version)
    images = (b"", b"") if s.vision else None
    messages = template.messages(
        "estimate",
        _typical_facts(cfg),
        captions_per_sample=a.captions_per_sample,
        no_change_epsilon=a.no_change_epsilon,
        images=images,
        series=_typical_series(cfg),
    )
    tokens_in = LLMAnnotator._estimate_tokens(messages)
    tokens_out = s.max_output_tokens
    fix = LLMAnnotator._estimate_tokens([template.fix(["x" * 80] * 3)])
    price = s.prices.get(s.model)
    factor = s.batch_price_factor if s.batch else 1.0

    def usd(t_in: int, t_out: int) -> float:
        if price is None:
            return 0.0
        return factor * (t_in * price.input + t_out * price.output) / 1e6

    rounds = range(s.max_fix_attempts + 1)  # round r resends the r earlier replies and fixes
    with_fixes = sum(usd(tokens_in + r * (tokens_out + fix), tokens_out) for r in rounds)
    if price is None:
        priced = (
            f"model {s.model!r} has no price in annotation.openai.prices: counted as 0 USD; "
            "add its price"
        )
    else:
        priced = f"{price.input:g} / {price.output:g} USD per 1M tokens in / out" + (
            f", batch x{s.batch_price_factor:g}" if s.batch else ""
        )
    basis = (
        f"the prompt of {_TYPICAL}"
        + ("" if cfg.time.series is None else " and its sequence facts")
        + f" counted as the annotator counts it ({tokens_in:,} tokens), "
        f"the reply at annotation.openai.max_output_tokens ({tokens_out:,}), one request per "
        f"sample, {priced}; cached replies cost nothing"
    )
    return LLMEstimate(
        "openai",
        s.model,
        samples,
        tokens_in * samples,
        tokens_out * samples,
        usd(tokens_in, tokens_out) * samples,
        with_fixes * samples,
        basis,
    )


def _layouts(
    cfg: BuildConfig, reads: list[AssetRead]
) -> tuple[dict[tuple[str, str], TileLayout], list[str]]:
    """The tile layout of every read asset of a sampled item per collection (chosen as the
    pre-flight chooses, over the AOI's box instead of the first cell's), and notes."""
    import os

    import rasterio
    from rasterio.errors import RasterioError

    from geodelta.pipelines.stages.plan import load_aoi
    from geodelta.sources.catalog import open_catalog
    from geodelta.sources.preflight import sample_item
    from geodelta.sources.signing import signer_for

    geoms = [g for _, g in load_aoi(cfg)]
    bounds = [g.bounds for g in geoms]
    bbox = (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )
    lat = math.radians((bbox[1] + bbox[3]) / 2)
    catalog = open_catalog(cfg.catalog, resolve=cfg.resolve)
    signer = signer_for(cfg.catalog)
    options = {k: v for k, v in cfg.gdal.env().items() if k != "GDAL_CACHEMAX"}
    t0, t1 = cfg.time.t0, cfg.time.t1
    windows = {cfg.imagery.collection: [t0, t1]}
    if cfg.labels.searched_collection:
        windows[cfg.labels.searched_collection] = [(t0[0], t1[1])]
    keys = {cfg.imagery.collection: "imagery.collection"}
    if cfg.labels.searched_collection:
        keys[cfg.labels.searched_collection] = "labels.collection"
    out: dict[tuple[str, str], TileLayout] = {}
    notes: list[str] = []
    for collection, when in windows.items():
        sample = sample_item(catalog, collection, keys[collection], bbox, when)
        for r in reads:
            if r.collection != collection or r.asset not in sample.scene.assets:
                continue
            href = sample.scene.assets[r.asset].href
            declared = sample.item.assets[r.asset].extra_fields.get("file:size")
            try:
                with (
                    rasterio.Env(**options),
                    rasterio.open(signer(href) if signer else href) as src,
                ):
                    bh, bw = src.block_shapes[0]
                    rx, ry = abs(src.res[0]), abs(src.res[1])
                    if src.crs is not None and src.crs.is_geographic:
                        rx, ry = rx * 111_320 * math.cos(lat), ry * 111_320
                    dtype_bytes = _dtype_bytes(src.dtypes[0])
                    width, height, count = src.width, src.height, src.count
            except (RasterioError, OSError) as exc:
                notes.append(f"{r.asset} of {sample.scene.item_id}: header unreadable ({exc})")
                continue
            local = href.removeprefix("file://")
            size = declared if isinstance(declared, int) else None
            if size is None and "://" not in local and os.path.exists(local):
                size = os.path.getsize(local)
            raw = width * height * count * dtype_bytes
            out[(collection, r.asset)] = TileLayout(
                r.asset,
                sample.scene.item_id,
                (bw, bh),
                (width, height),
                (rx, ry),
                dtype_bytes,
                None if size is None or raw == 0 else size / raw,
            )
    return out, notes


def _dtype_bytes(dtype: str) -> int:
    import numpy as np

    return int(np.dtype(dtype).itemsize)


def estimate(cfg: BuildConfig, *, sample_catalog: bool = True, blocks: bool = True) -> Estimate:
    """What a build of ``cfg`` will cost (see the module docstring).

    Args:
        cfg: the build config, profile defaults applied.
        sample_catalog: read the header of a sampled item's assets for their tile layout and
            compression (where the catalog cannot be read, a note says so and the bytes come
            from the config alone).
        blocks: count the plan blocks and STAC searches (one more pass over the plan's
            columns; the budget check skips it).

    Raises:
        PlanError: the grid or the AOI cannot be planned.
    """
    from geodelta.pipelines.stages.plan import count_blocks, count_cells

    count = count_cells(cfg)
    cells = count.total
    block_cells = cfg.runner.block_cells
    n_blocks = count_blocks(cfg) if blocks else None
    per_block = _searches_per_block(cfg)
    res = cfg.grid.resolution_m
    side_m = res * cfg.grid.cell_size_px
    rated = rated_per_cell(cfg)
    reads = asset_reads(cfg, rated, res)
    pixels = sum(r.window_bytes(side_m * side_m) for r in reads)
    notes: list[str] = []
    tiles: float | None = None
    once: float | None = None
    basis = (
        "uncompressed pixels of the cell windows at each asset's native resolution, "
        f"{rated:g} classification-band reads per cell (measured on the demo); "
        "from the config alone"
    )
    if sample_catalog:
        try:
            layouts, notes = _layouts(cfg, reads)
        except GeodeltaError as exc:  # CatalogError, ConfigError: the catalog cannot tell
            layouts = {}
            first = (str(exc).strip().splitlines() or [""])[0]
            notes.append(f"catalog not sampled ({first}): bytes from the config alone")
        if layouts:
            tiles = sum(
                r.reads * layouts[(r.collection, r.asset)].window_bytes(side_m)
                if r.collection is not None and (r.collection, r.asset) in layouts
                else r.window_bytes(side_m * side_m)
                for r in reads
            )
            once = sum(
                r.window_bytes(side_m * side_m) * (layouts[(r.collection, r.asset)].ratio or 1.0)
                if r.collection is not None and (r.collection, r.asset) in layouts
                else r.window_bytes(side_m * side_m)
                for r in reads
            )
            described = sorted(
                {f"{lay.item} ({lay.block[0]}x{lay.block[1]} px tiles)" for lay in layouts.values()}
            )
            ratios = [lay.ratio for lay in layouts.values() if lay.ratio is not None]
            how = (
                f"compressed at the files' ratio ({min(ratios):.2f}-{max(ratios):.2f} of the "
                "raw pixels)"
                if ratios
                else "uncompressed (file sizes unknown)"
            )
            basis = (
                f"COG tiles of the sampled items {', '.join(described)}: each cell window "
                f"rounded up to the tiles it touches and fetched afresh, {how}; "
                f"{rated:g} classification-band reads per cell"
            )
    per_sample = sample_bytes(cfg)
    llm = llm_estimate(cfg, cells)
    b = cfg.budget
    est = Estimate(
        name=cfg.name,
        version=cfg.version,
        cells=cells,
        cells_by_split=dict(count.by_split),
        cells_by_zone=dict(count.by_zone),
        blocks=n_blocks,
        block_cells=block_cells,
        searches_per_block=per_block,
        stac_searches=None if n_blocks is None else n_blocks * per_block,
        read_bytes_pixels=round(pixels * cells),
        read_bytes_tiles=None if tiles is None else round(tiles * cells),
        read_bytes_tiles_once=None if once is None else round(once * cells),
        read_bytes=round((tiles if tiles is not None else pixels) * cells),
        read_basis=basis,
        cpu_hours=cells * CPU_MS_PER_TILE * dates_per_sample(cfg) / 2 / 3.6e6,
        cpu_basis=CPU_BASIS if cfg.time.series is None else CPU_BASIS + SERIES_CPU_NOTE,
        samples_max=cells,
        sample_bytes=per_sample,
        output_bytes=per_sample * cells,
        output_basis=(
            f"{_bytes(per_sample)} per sample: the uncompressed members ("
            + ("both dates' bands" if cfg.time.series is None else "every date's bands")
            + ", RGB renderings, masks) from imagery.bands and grid.cell_size_px; the demo "
            f"release's shards measured {DEMO_SHARD_RATIO}x of this; a build stages them "
            "first, so it needs about twice this on disk"
        ),
        llm=llm,
        budget={
            "budget.max_cells": b.max_cells,
            "budget.max_usd": b.max_usd,
            "budget.max_cpu_hours": b.max_cpu_hours,
            "budget.max_read_bytes": b.max_read_bytes,
        },
        notes=notes,
    )
    return replace(est, excess=exceeded(est, cfg))


def exceeded(est: Estimate, cfg: BuildConfig) -> list[Excess]:
    """The ``budget`` limits ``est`` exceeds (the read limit against the pixel figure: the one
    the build's own check can make without the catalog)."""
    b = cfg.budget
    pairs = (
        ("cells", "budget.max_cells", est.cells, b.max_cells),
        ("usd", "budget.max_usd", est.llm.usd, b.max_usd),
        ("cpu", "budget.max_cpu_hours", est.cpu_hours, b.max_cpu_hours),
        ("read bytes", "budget.max_read_bytes", est.read_bytes_pixels, b.max_read_bytes),
    )
    return [Excess(w, k, v, lim) for w, k, v, lim in pairs if lim is not None and v > lim]


def check_budget(cfg: BuildConfig) -> Estimate:
    """Refuse a build whose estimate exceeds a ``budget`` limit, before any work.

    Counts the cells (no cell object, no catalog, no network) and derives the CPU-hours, the
    pixels read and the LLM dollars from the count.

    Returns:
        The estimate (within every limit).

    Raises:
        BudgetError: one line: each limit exceeded (estimate > key limit), the rest of the
            estimate, and how to go ahead (``--yes``) or change the limit.
        PlanError: the grid or the AOI cannot be planned.
    """
    est = estimate(cfg, sample_catalog=False, blocks=False)
    if not est.excess:
        return est
    over = "; ".join(e.text() for e in est.excess)
    keys = " / ".join(e.key for e in est.excess)
    raise BudgetError(
        f"the build is over budget: {over} (estimate: {est.cells:,} cells, "
        f"{_num(est.cpu_hours)} CPU-hours at {CPU_MS_PER_TILE} ms/tile, "
        f"{_bytes(est.read_bytes_pixels)} of pixels read, {est.llm.usd:,.2f} USD of LLM; "
        "`geodelta plan CONFIG --estimate` details it); pass --yes (api: confirm=True) to build "
        f"anyway, or raise {keys} in the config (null: no limit)",
        est.excess,
        est,
    )
