"""Records that cross stage boundaries.

Every stage of the pipeline is a function from one of these records to the next; the Beam and
Dask adapters only move them around. All records are frozen pydantic models: they validate on
construction, round-trip through ``model_dump(mode="json")`` / ``model_validate`` and export a
JSON Schema (``geodelta schema``).

Conventions:
- times are timezone-aware UTC datetimes; ``t0`` is the before date, ``t1`` the after date;
- a ``transform`` is the 6 affine coefficients in rasterio order ``(a, b, c, d, e, f)``:
  ``x = a*col + b*row + c``, ``y = d*col + e*row + f``;
- a ``shape`` is ``(height, width)`` in pixels; pixel shifts are ``(dy, dx)`` in pixels;
- a ``bbox_lonlat`` is ``(min_lon, min_lat, max_lon, max_lat)`` in EPSG:4326.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from geodelta.schemas.qa import QAType
from geodelta.secrets import redact

SCHEMA_VERSION = "1.2.0"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("datetime must be timezone-aware (UTC), e.g. 2021-06-01T10:00:00Z")
    return value


UTCDatetime = Annotated[datetime, AfterValidator(_utc)]
Transform = tuple[float, float, float, float, float, float]
BBox = tuple[float, float, float, float]
TimeWindow = tuple[UTCDatetime, UTCDatetime]


def strip_secret(href: str) -> str:
    """Remove the query string and fragment of a URL (where signed URLs carry SAS tokens).

    Local paths are returned unchanged.
    """
    parts = urlsplit(href)
    if not parts.scheme or len(parts.scheme) == 1:  # plain path (or a Windows drive letter)
        return href
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class Record(BaseModel):
    """Base of every geodelta record: frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TileJob(Record):
    """One cell of the output grid and the two time windows to search for it."""

    cell_id: str = Field(
        description="Stable id of the cell: UTM zone + column/row at the cell size"
    )
    crs: str = Field(description="Projected CRS of the cell grid, e.g. 'EPSG:32631'")
    transform: Transform = Field(description="Affine transform of the cell grid (rasterio order)")
    shape: tuple[int, int] = Field(description="Cell size in pixels (height, width)")
    bbox_lonlat: BBox = Field(
        description="Cell footprint in lon/lat (min_lon, min_lat, max_lon, max_lat)"
    )
    t0_window: TimeWindow = Field(description="Search window (start, end) for the before scene")
    t1_window: TimeWindow = Field(description="Search window (start, end) for the after scene")
    region: str = Field(default="aoi", description="Name of the AOI feature the cell came from")
    split: str = Field(default="train", description="Split of the cell's spatial block")

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units (square pixels)."""
        return abs(self.transform[0])

    def bounds(self) -> BBox:
        """Cell bounds in its own CRS (left, bottom, right, top)."""
        a, _, c, _, e, f = self.transform
        h, w = self.shape
        return (c, f + e * h, c + a * w, f)


class AssetRef(Record):
    """One raster asset of a STAC item, with what is needed to read it as physical values."""

    href: str = Field(description="Asset URL or path, with any query-string secret removed")
    scale: float = Field(default=1.0, description="Physical value = DN * scale + offset")
    offset: float = Field(default=0.0, description="Physical value = DN * scale + offset")
    nodata: float | None = Field(default=None, description="DN that marks missing data")
    roles: tuple[str, ...] = Field(default=(), description="STAC asset roles")

    @field_validator("href")
    @classmethod
    def _no_secret(cls, href: str) -> str:
        return strip_secret(href)


class SceneRef(Record):
    """A STAC item chosen as a candidate scene, reduced to what later stages need."""

    collection: str = Field(description="STAC collection id")
    item_id: str = Field(description="STAC item id")
    datetime: UTCDatetime = Field(description="Acquisition time (UTC)")
    crs: str | None = Field(
        default=None, description="Native CRS of the item (proj:epsg / proj:code)"
    )
    bbox_lonlat: BBox = Field(description="Item footprint bounding box in lon/lat")
    geometry: dict[str, Any] | None = Field(
        default=None, description="Item footprint as a GeoJSON geometry in lon/lat"
    )
    start_datetime: UTCDatetime | None = Field(
        default=None,
        description="Start of the period the item covers (e.g. a yearly land-cover map)",
    )
    end_datetime: UTCDatetime | None = Field(
        default=None, description="End of the period the item covers"
    )
    assets: dict[str, AssetRef] = Field(description="Asset key -> asset, secrets removed")
    cloud_cover: float | None = Field(
        default=None, description="Scene-wide eo:cloud_cover in percent (informational only)"
    )
    platform: str | None = Field(default=None, description="STAC 'platform', e.g. 'sentinel-2a'")


class ScenePair(Record):
    """The before/after scenes chosen for one cell, with the label source for the pair."""

    job: TileJob = Field(description="The cell this pair is for")
    before: SceneRef = Field(description="The before scene (t0)")
    after: SceneRef = Field(description="The after scene (t1)")
    before_clear: float | None = Field(
        description="Clear-pixel fraction of the before scene over the cell; None = unknown"
    )
    after_clear: float | None = Field(
        description="Clear-pixel fraction of the after scene over the cell; None = unknown"
    )
    label_before: SceneRef | None = Field(
        default=None, description="Land-cover item for the before date (landcover labels)"
    )
    label_after: SceneRef | None = Field(
        default=None,
        description="Land-cover item for the after date, or the item carrying the change mask",
    )
    score: float = Field(default=0.0, description="Pair score the pair stage maximised")
    series: tuple[SceneRef, ...] = Field(
        default=(),
        description="Sequence mode: every chosen date in time order (before = the first, "
        "after = the last); empty for a pair",
    )
    series_clear: tuple[float | None, ...] = Field(
        default=(), description="Clear fraction of each date of ``series`` over the cell"
    )
    series_windows: tuple[int, ...] = Field(
        default=(), description="Series window index of each date of ``series``"
    )
    series_labels: tuple[SceneRef, ...] = Field(
        default=(), description="Land-cover item of each date of ``series`` (its year's map)"
    )

    @property
    def key(self) -> str:
        """Sample key: ``{cell_id}_{t0:%Y%m%d}_{t1:%Y%m%d}`` (stable across versions)."""
        return sample_key(self.job.cell_id, self.before.datetime, self.after.datetime)

    @property
    def gap_days(self) -> float:
        """Days between the before and the after scene."""
        return (self.after.datetime - self.before.datetime).total_seconds() / 86400.0


def sample_key(cell_id: str, t0: datetime, t1: datetime) -> str:
    """The sample key of DESIGN.md; contains no dots (webdataset splits members at dots)."""
    return f"{cell_id}_{t0:%Y%m%d}_{t1:%Y%m%d}"


class TransitionStat(Record):
    """Pixels that went from one land-cover class to another."""

    code: int = Field(description="Mask code (see geodelta.schemas.classes)")
    from_class: str = Field(description="Class at t0 ('unknown' for a binary label)")
    to_class: str = Field(description="Class at t1 ('unknown' for a binary label)")
    pixels: int = Field(ge=0, description="Changed pixels with this transition")
    area_m2: float = Field(ge=0, description="Their area in square metres")


#: Position words of the 3x3 grid of a tile, row by row from the north-west corner.
POSITION_GRID: tuple[tuple[str, str, str], ...] = (
    ("north-west", "north", "north-east"),
    ("west", "centre", "east"),
    ("south-west", "south", "south-east"),
)
#: The nine position words, in grid order.
POSITION_WORDS: tuple[str, ...] = tuple(w for row in POSITION_GRID for w in row)


class ChangeComponent(Record):
    """One connected region of change (8-connectivity)."""

    id: int = Field(description="1-based id, by decreasing size")
    code: int = Field(description="Dominant mask code in the region")
    from_class: str = Field(description="Dominant transition's t0 class")
    to_class: str = Field(description="Dominant transition's t1 class")
    pixels: int = Field(ge=1, description="Region size in pixels")
    area_m2: float = Field(ge=0, description="Region area in square metres")
    centroid: tuple[float, float] = Field(description="Centroid (row, col) in pixels")
    position: str = Field(
        description="Cell of a 3x3 grid holding the centroid: 'north-west' ... 'centre' ... 'south-east'"
    )
    bbox: tuple[int, int, int, int] = Field(
        description="(row_min, col_min, row_max, col_max), inclusive"
    )


#: Boxes in answers and questions are normalised integers ``[x0, y0, x1, y1]`` in 0..1000
#: (GeoChat / TEOChat convention): 0 is the left (top) edge of the image, 1000 the right
#: (bottom) edge.
BOX_SCALE = 1000


def component_box_px(bbox: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A :class:`ChangeComponent` bbox ``(row_min, col_min, row_max, col_max)`` (inclusive) as
    a pixel-edge box ``(x0, y0, x1, y1)``: columns ``x0 .. x1 - 1``, rows ``y0 .. y1 - 1``."""
    r0, c0, r1, c1 = bbox
    return (int(c0), int(r0), int(c1) + 1, int(r1) + 1)


def union_box_px(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """The pixel-edge box holding every box of a non-empty list."""
    if not boxes:
        raise ValueError("the union box of no boxes is undefined (min=1 box, actual=0)")
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def normalised_box(
    box_px: tuple[int, int, int, int], shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A pixel-edge box ``(x0, y0, x1, y1)`` as integers in 0..:data:`BOX_SCALE`.

    The low edges round down and the high edges up, so the normalised box always covers the
    pixels; integer arithmetic only (the same box on every machine).

    Args:
        box_px: pixel-edge box, ``0 <= x0 < x1 <= width``, ``0 <= y0 < y1 <= height``.
        shape: ``(height, width)`` of the image.
    """
    h, w = shape
    x0, y0, x1, y1 = box_px
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"box {box_px} is not a non-empty box inside an image of shape {shape}")
    s = BOX_SCALE
    return ((s * x0) // w, (s * y0) // h, -((-s * x1) // w), -((-s * y1) // h))


def format_box(box: tuple[int, int, int, int] | list[int]) -> str:
    """A normalised box as written in questions and answers: ``[x0, y0, x1, y1]``."""
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


class Region(Record):
    """One region of change, as a researcher reads it: the value ``id`` in ``regions.png``.

    Regions are the 8-connected regions of ``mask.png`` (the components of the facts), with
    the same ids: by decreasing size, ties by the first pixel in raster order; the same mask
    gives the same ids on every rebuild.
    """

    id: int = Field(ge=1, description="Region id: its pixels hold this value in regions.png")
    code: int = Field(description="Dominant mask code in the region (255 = binary change)")
    from_class: str = Field(description="Dominant transition's t0 class ('unknown' if binary)")
    to_class: str = Field(description="Dominant transition's t1 class ('unknown' if binary)")
    pixels: int = Field(ge=1, description="Region size in pixels")
    area_m2: float = Field(ge=0, description="Region area in square metres")
    bbox_px: tuple[int, int, int, int] = Field(
        description="Pixel-edge box (x0, y0, x1, y1): columns x0..x1-1, rows y0..y1-1"
    )
    box: tuple[int, int, int, int] = Field(
        description="bbox_px normalised to integers 0..1000 (x0, y0, x1, y1), low edges "
        "rounded down, high edges up: the box written in questions and answers"
    )
    bbox_lonlat: BBox = Field(
        description="Footprint of bbox_px in lon/lat (min_lon, min_lat, max_lon, max_lat)"
    )
    centroid_rowcol: tuple[float, float] = Field(description="Centroid (row, col) in pixels")
    centroid_lonlat: tuple[float, float] = Field(description="Centroid (lon, lat)")
    position: str = Field(description="Cell of the 3x3 grid holding the centroid")


class CaptionSpan(Record):
    """A phrase of a caption that refers to regions: ``text[start:end]``."""

    start: int = Field(ge=0, description="First character of the phrase")
    end: int = Field(ge=1, description="One past its last character")
    regions: tuple[int, ...] = Field(min_length=1, description="Ids of the regions it refers to")


class GroundedCaption(Record):
    """A caption (the same text as in ``captions.json``) with its region-referring phrases."""

    text: str = Field(min_length=1, description="The caption")
    spans: tuple[CaptionSpan, ...] = Field(
        description="Phrases that refer to regions, by start (they may nest: a transition "
        "phrase inside a sentence that also names a position)"
    )


class ChangeFacts(Record):
    """Everything a caption or an answer may claim, computed from the change mask."""

    shape: tuple[int, int] = Field(description="Mask shape (height, width)")
    pixel_area_m2: float = Field(gt=0, description="Area of one pixel in square metres")
    valid_pixels: int = Field(ge=0, description="Pixels with a label on both dates")
    changed_pixels: int = Field(ge=0, description="Pixels marked as changed in the mask")
    changed_fraction: float = Field(ge=0, le=1, description="changed_pixels / valid_pixels")
    binary: bool = Field(description="True when the label only says change / no change")
    transitions: tuple[TransitionStat, ...] = Field(
        description="Per transition, by decreasing size"
    )
    class_pixels_before: dict[str, int] = Field(
        description="Class -> pixels at t0 (landcover labels)"
    )
    class_pixels_after: dict[str, int] = Field(
        description="Class -> pixels at t1 (landcover labels)"
    )
    components: tuple[ChangeComponent, ...] = Field(
        description="Regions of change, by decreasing size"
    )
    min_region_px: int = Field(
        ge=1, description="Regions smaller than this were removed from the mask"
    )

    @property
    def n_regions(self) -> int:
        """Number of changed regions."""
        return len(self.components)

    @property
    def has_change(self) -> bool:
        """Whether any region of change remains."""
        return self.changed_pixels > 0


#: Bins of the ``change_ratio`` answer (fraction of valid pixels that changed).
CHANGE_RATIO_BINS: tuple[tuple[str, float, float], ...] = (
    ("none", 0.0, 0.0),
    ("under 1%", 0.0, 0.01),
    ("1-5%", 0.01, 0.05),
    ("5-10%", 0.05, 0.10),
    ("10-25%", 0.10, 0.25),
    ("over 25%", 0.25, 1.0),
)


def change_ratio_bin(fraction: float) -> str:
    """The bin label of a changed fraction; 0 is 'none', bins are (low, high]."""
    if fraction <= 0.0:
        return "none"
    for label, low, high in CHANGE_RATIO_BINS[1:]:
        if low < fraction <= high:
            return label
    raise ValueError(f"changed fraction out of range (max=1.0, actual={fraction})")


#: One evidence value: a fact, a list of region ids, or a list of pixel boxes.
Evidence = str | int | float | bool | list[int] | list[list[int]]


class QAItem(Record):
    """One question-answer pair about the change, with the facts it rests on."""

    type: QAType = Field(description="Question type")
    question: str = Field(min_length=1, description="The question")
    answer: str = Field(
        min_length=1, description="The answer ('yes'/'no', an integer, a bin, a class, a position)"
    )
    evidence: dict[str, Evidence] = Field(
        description="The facts fields (name -> value) the answer is derived from; "
        "'region_ids' lists the regions it rests on ([] when none), 'boxes_px' their "
        "pixel-edge boxes"
    )


class Annotation(Record):
    """Captions and QA for one sample, and who made them."""

    captions: tuple[str, ...] = Field(description="Change captions, several wordings")
    qa: tuple[QAItem, ...] = Field(description="Question-answer pairs")
    annotator: str = Field(description="Annotator name, e.g. 'template'")
    annotator_version: str = Field(description="Annotator version")
    prompt_version: str | None = Field(
        default=None, description="Prompt file version (LLM annotators)"
    )
    model: str | None = Field(default=None, description="Model name (LLM annotators)")
    tokens_in: int = Field(default=0, ge=0, description="LLM prompt tokens spent")
    tokens_out: int = Field(default=0, ge=0, description="LLM completion tokens spent")
    cost_usd: float = Field(default=0.0, ge=0, description="LLM cost in US dollars")


class CoregResult(Record):
    """Co-registration of the after scene onto the before scene.

    Sign convention of ``shift_px`` (and ``neighbourhood_px``): it is the **correction**
    applied to the after image, i.e. minus its displacement: positive ``dy`` / ``dx`` moves
    the after image's content down / right (rows / columns of the sample grid). An after scene
    whose content sits 0.3 px lower and 1.2 px further left than the before scene's records
    ``(-0.3, +1.2)``.
    """

    shift_px: tuple[float, float] = Field(
        description="Correction (dy, dx) in px applied to the after scene to align it with the "
        "before scene: minus the after scene's displacement; positive moves content down / right"
    )
    residual_px: float = Field(ge=0, description="Shift still measured after the correction (px)")
    error: float = Field(
        description="Phase-correlation error of the estimate (0 = perfect; for source "
        "'neighbourhood', the median of the agreeing tie points)"
    )
    applied: bool = Field(description="Whether the shift was applied")
    source: Literal["cell", "neighbourhood"] = Field(
        default="cell",
        description="'cell': the cell's own estimate (consistent with its neighbourhood when "
        "that was checked); 'neighbourhood': the tie points' consensus, used because the "
        "cell's own estimate disagreed with it or could not be trusted",
    )
    neighbourhood_px: tuple[float, float] | None = Field(
        default=None,
        description="Consensus (dy, dx) of the tie points over the cell plus "
        "coregistration.margin_px, same sign as shift_px; None = not checked (margin_px 0)",
    )
    tie_points: int | None = Field(
        default=None,
        ge=0,
        description="Usable tie-point windows around the cell (None = none read)",
    )
    agreeing: int | None = Field(
        default=None, ge=0, description="Tie points within the tolerance of their median"
    )


# --------------------------------------------------------------------------------------------
# What a sequence sample says (label stage -> annotate -> json / dates.json; issue 15), also
# exported by geodelta.schemas.series
# --------------------------------------------------------------------------------------------

#: How a class's area went over a whole sequence (:class:`ClassTrend`).
SERIES_TREND_WORDS: tuple[str, ...] = ("grew", "shrank", "stable")


class SeriesDateMeta(Record):
    """One date of a built sequence sample (one entry of ``dates.json``)."""

    index: int = Field(ge=0, description="Position in the sequence, from 0 (the reference)")
    window: int = Field(ge=0, description="Index of the series window it was chosen in")
    item_id: str = Field(description="STAC item id of the scene")
    datetime: UTCDatetime = Field(description="Acquisition time (UTC)")
    clear_fraction: float | None = Field(
        description="Pixel-level clear fraction over the cell (None without a classification band)"
    )
    valid_fraction: float = Field(ge=0, le=1, description="Fraction of pixels with data")
    label_item: str | None = Field(
        default=None, description="Land-cover item of this date's year (landcover labels)"
    )
    shift_px: tuple[float, float] = Field(
        default=(0.0, 0.0),
        description="(dy, dx) shift applied to register this date onto date 0 (0, 0 for date 0)",
    )
    residual_px: float = Field(
        default=0.0, ge=0, description="Shift still measured after the correction (px)"
    )


class SeriesStep(Record):
    """Step ``index`` of a sequence: from date ``index - 1`` to date ``index``."""

    index: int = Field(ge=1, description="Step number k = 1..T-1 (date k-1 -> date k)")
    start: UTCDatetime = Field(description="Acquisition time of date k-1")
    end: UTCDatetime = Field(description="Acquisition time of date k")
    changed_pixels: int = Field(ge=0, description="Valid pixels whose class changed at this step")


class RegionHistory(Record):
    """One region that changed at some step, followed through the whole sequence.

    A region is an 8-connected component (at least ``min_region_px`` pixels) of the pixels
    valid on every date whose class changed at one step or more (``first_change > 0``); ids by
    decreasing size, ties by the first pixel in raster order. Its class at a date is the most
    frequent class of its pixels at that date (ties: the lowest class index).
    """

    id: int = Field(ge=1, description="Region id (by decreasing size)")
    pixels: int = Field(ge=1, description="Region size in pixels")
    classes: tuple[str, ...] = Field(description="Dominant class at each date (length T)")
    changed_steps: tuple[int, ...] = Field(
        description="Steps k (1..T-1) at which the dominant class differs from date k-1's"
    )
    persistent: bool = Field(
        description="True when the last date's dominant class differs from date 0's "
        "(permanent); False when it came back (transient)"
    )
    bbox_px: tuple[int, int, int, int] = Field(
        description="Pixel-edge box (x0, y0, x1, y1) holding the region"
    )
    box: tuple[int, int, int, int] = Field(description="The box normalised to 0..1000")
    position: str = Field(description="Cell of the 3x3 grid holding the centroid")


class ClassTrend(Record):
    """The area of one class at each date of a sequence (pixels valid on every date)."""

    class_name: str = Field(description="geodelta class label")
    pixels: tuple[int, ...] = Field(description="Pixels of the class at each date (length T)")
    trend: Literal["grew", "shrank", "stable"] = Field(
        description="grew / shrank when last - first is beyond +/- threshold_px, else stable"
    )
    max_index: int = Field(ge=0, description="Date index of the largest area (first on ties)")


class SeriesFacts(Record):
    """Facts of a sequence sample, the ground truth of its temporal captions and QA."""

    dates: tuple[UTCDatetime, ...] = Field(description="Acquisition times, in order (length T)")
    shape: tuple[int, int] = Field(description="(height, width)")
    valid_pixels: int = Field(ge=0, description="Pixels with a label on every date")
    steps: tuple[SeriesStep, ...] = Field(description="The T-1 steps")
    ever_changed_pixels: int = Field(ge=0, description="Valid pixels that changed at some step")
    regions: tuple[RegionHistory, ...] = Field(description="Regions that changed, by size")
    classes: tuple[ClassTrend, ...] = Field(
        description="Every class present at some date, by class index"
    )
    min_region_px: int = Field(ge=1, description="Smallest region kept")
    threshold_px: int = Field(ge=0, description="Area change a trend needs (pixels)")


class SampleMeta(Record):
    """The ``json`` member of a shard sample (DESIGN.md)."""

    key: str = Field(description="Sample key {cell_id}_{t0:%Y%m%d}_{t1:%Y%m%d}")
    schema_version: str = Field(default=SCHEMA_VERSION, description="Version of this record layout")
    cell_id: str = Field(description="Grid cell id")
    region: str = Field(description="AOI feature the cell belongs to")
    split: str = Field(description="train / val / test")
    collection: str = Field(description="Imagery STAC collection")
    before_item: str = Field(description="STAC item id of the before scene")
    after_item: str = Field(description="STAC item id of the after scene")
    t0: UTCDatetime = Field(description="Before acquisition time")
    t1: UTCDatetime = Field(description="After acquisition time")
    gap_days: float = Field(description="Days between t0 and t1")
    crs: str = Field(description="CRS of before.tif / after.tif / mask.png")
    transform: Transform = Field(description="Affine transform of the sample grid")
    shape: tuple[int, int] = Field(description="(height, width)")
    bbox_lonlat: BBox = Field(description="Footprint in lon/lat")
    bands: tuple[str, ...] = Field(description="Band order of before.tif / after.tif")
    dn_scale: float = Field(description="Reflectance = DN * dn_scale + dn_offset in the tifs")
    dn_offset: float = Field(description="Reflectance = DN * dn_scale + dn_offset in the tifs")
    before_clear: float | None = Field(
        description="Clear fraction of the before scene; None = unknown"
    )
    after_clear: float | None = Field(
        description="Clear fraction of the after scene; None = unknown"
    )
    before_cloud_cover: float | None = Field(
        description="Scene-wide eo:cloud_cover of the before item"
    )
    after_cloud_cover: float | None = Field(
        description="Scene-wide eo:cloud_cover of the after item"
    )
    before_valid: float = Field(ge=0, le=1, description="Fraction of valid pixels, before")
    after_valid: float = Field(ge=0, le=1, description="Fraction of valid pixels, after")
    coreg: CoregResult = Field(description="Co-registration result")
    label_source: str = Field(description="'landcover:<collection>' or 'change_mask:<asset>'")
    label_items: tuple[str, ...] = Field(description="STAC item ids the label came from")
    facts: ChangeFacts = Field(description="Facts the annotations rest on")
    annotator: str = Field(description="Annotator name")
    annotator_version: str = Field(description="Annotator version")
    prompt_version: str | None = Field(description="Prompt version (LLM annotators)")
    model: str | None = Field(description="Model (LLM annotators) or baseline change model id")
    tokens_in: int = Field(description="LLM prompt tokens")
    tokens_out: int = Field(description="LLM completion tokens")
    cost_usd: float = Field(description="LLM cost in US dollars")
    licence: str = Field(min_length=1, description="Licence of the sample (SPDX id or text)")
    attribution: str = Field(min_length=1, description="Required attribution")
    code_version: str = Field(description="geodelta version that built the sample")
    config_hash: str | None = Field(
        default=None,
        description="Layouts before 1.2.0 only: sha256 of the normalised build config (the "
        "manifest's config_hash)",
    )
    shaping_hash: str | None = Field(
        default=None,
        description="sha256 of the config sections that shape the sample (all but name, "
        "version, description, aoi, shards, reference, gate): the same in every version that "
        "builds the sample alike; None in layouts before 1.2.0, which carry config_hash",
    )
    baseline_model: str | None = Field(
        default=None,
        description="Baseline change model that saw the sample: 'fc-siam-diff@sha256:<weights "
        "hash>'; None = no model (the key is then left out of the json member)",
    )
    fusion: str | None = Field(
        default=None,
        description="How the model's change was fused into the mask: 'none', 'intersect' or "
        "'union'; None = no model",
    )
    baseline_iou: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="IoU of the model's change and the label's change before fusion (1.0 when "
        "both see none); None = no model",
    )
    regions: tuple[Region, ...] = Field(
        default=(),
        description="The regions of change (ids as in regions.png), by id; older samples have none",
    )
    captions_grounded: tuple[GroundedCaption, ...] = Field(
        default=(),
        description="The captions of captions.json, in order, each with the phrases that refer "
        "to regions (phrase grounding); older samples have none",
    )

    series: SeriesFacts | None = Field(
        default=None,
        description="Facts of a sequence sample (dates, steps, region histories, class "
        "trends; geodelta.schemas.series.SeriesFacts); None = a pair sample",
    )

    #: Optional fields left out of the json member when None (older samples have none of them).
    OMIT_WHEN_NONE: ClassVar[tuple[str, ...]] = (
        "baseline_model",
        "fusion",
        "baseline_iou",
        "series",
        "config_hash",
        "shaping_hash",
    )

    @model_validator(mode="after")
    def _one_hash(self) -> SampleMeta:
        """A sample names the config it was built from: by shaping_hash (1.2.0 on) or by
        config_hash (earlier layouts)."""
        if self.shaping_hash is None and self.config_hash is None:
            raise ValueError("a sample carries shaping_hash (or, before layout 1.2.0, config_hash)")
        return self


QuarantineStage = Literal[
    "plan", "search", "pair", "load", "coregister", "label", "annotate", "validate", "shard"
]


class QuarantineRecord(Record):
    """A unit of work that did not become a sample, and why."""

    key: str = Field(description="Sample key, or the cell id when no pair was chosen")
    cell_id: str = Field(description="Grid cell id")
    stage: QuarantineStage = Field(description="Stage that dropped it")
    reason: str = Field(description="Short machine-readable reason, e.g. 'no_clear_pair'")
    detail: str = Field(description="What happened and what to change, for a human")

    @field_validator("detail")
    @classmethod
    def _no_secret(cls, value: str) -> str:
        """Quarantine ships with the release: no secret, by value or by shape, may be in it."""
        return redact(value)


class ShardInfo(Record):
    """One WebDataset tar of a release."""

    path: str = Field(description="Path relative to the release directory")
    split: str = Field(description="Split the shard belongs to")
    samples: int = Field(ge=0, description="Number of samples")
    bytes: int = Field(ge=0, description="File size")
    sha256: str = Field(description="sha256 of the file")


class FileInfo(Record):
    """A non-shard file of a release."""

    path: str = Field(description="Path relative to the release directory")
    bytes: int = Field(ge=0, description="File size")
    sha256: str = Field(description="sha256 of the file")


class ReleaseManifest(Record):
    """``manifest.json``: what a release holds, with checksums to verify it."""

    name: str = Field(description="Dataset name")
    version: str = Field(description="Dataset version")
    schema_version: str = Field(default=SCHEMA_VERSION, description="Record layout version")
    code_version: str = Field(description="geodelta version that built it")
    config_hash: str = Field(description="sha256 of the normalised build config")
    config: dict[str, Any] = Field(description="The normalised build config")
    members: tuple[str, ...] = Field(description="Member names every sample carries")
    mode: Literal["series"] | None = Field(
        default=None,
        description="'series' for a release of sequences (time.series); absent for pairs",
    )
    splits: dict[str, int] = Field(description="Split -> number of samples")
    quarantined: dict[str, int] = Field(description="'stage:reason' -> number of records")
    shards: tuple[ShardInfo, ...] = Field(description="The shards")
    files: tuple[FileInfo, ...] = Field(
        description="Other files (parquet tables, card, collection)"
    )
