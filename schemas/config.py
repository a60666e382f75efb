"""The build config: one YAML file per dataset version, validated before anything runs.

Unknown or misspelt keys are rejected with the dotted path of the key (``ConfigError``). Paths
in the file are relative to the file's folder. The config is frozen and picklable, so it can be
shipped to workers as it is.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator


def parse_datetime(value: str | date | datetime) -> datetime:
    """Normalise an ISO string, a date or a datetime to an aware UTC datetime.

    Naive values are taken as UTC; a bare date means its midnight UTC.
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO date or datetime: {value!r}") from None
    else:
        raise ValueError(f"not a date or datetime: {value!r}")
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


ConfigDatetime = Annotated[datetime, BeforeValidator(parse_datetime)]
TimeWindow = tuple[ConfigDatetime, ConfigDatetime]


class ConfigError(ValueError):
    """A config file that cannot be used; the message names each key to change."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config {source}:\n{lines}")


class Section(BaseModel):
    """Base of config sections: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AOIConfig(Section):
    """Area of interest: a lon/lat bbox or a GeoJSON file (Polygon/MultiPolygon features)."""

    bbox: tuple[float, float, float, float] | None = Field(
        default=None, description="(min_lon, min_lat, max_lon, max_lat)"
    )
    geojson: str | None = Field(default=None, description="GeoJSON file; each feature is a region")
    name_property: str = Field(default="name", description="Feature property naming the region")

    @model_validator(mode="after")
    def _one_of(self) -> AOIConfig:
        if (self.bbox is None) == (self.geojson is None):
            raise ValueError("give exactly one of aoi.bbox or aoi.geojson")
        if self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
                raise ValueError(
                    f"aoi.bbox must be (min_lon, min_lat, max_lon, max_lat), got {self.bbox}"
                )
        return self


class GridConfig(Section):
    """The output grid: square cells in the local UTM zone, anchored at the zone's origin."""

    cell_size_px: int = Field(default=128, ge=16, le=4096, description="Cell side in pixels")
    resolution_m: float = Field(default=10.0, gt=0, description="Pixel size in metres")
    keep: Literal["within", "intersects"] = Field(
        default="within", description="Keep cells inside the AOI, or every cell touching it"
    )


class CatalogConfig(Section):
    """Where scenes come from."""

    kind: Literal["static"] = Field(default="static", description="'static': a local STAC catalog")
    url: str = Field(description="Path or URL of catalog.json")


class ImageryConfig(Section):
    """Which imagery to pair, and how to read it."""

    collection: str = Field(description="Imagery collection id")
    bands: tuple[str, ...] = Field(min_length=1, description="Asset keys stacked in this order")
    rgb: tuple[str, str, str] = Field(
        description="Bands rendered to before.png/after.png (R, G, B)"
    )
    rgb_max_reflectance: float = Field(default=0.3, gt=0, description="Reflectance shown as white")
    classification_asset: str | None = Field(
        default=None, description="Scene classification asset (e.g. Sentinel-2 'SCL'); None = none"
    )
    clear_classes: tuple[int, ...] = Field(
        default=(4, 5, 6, 7, 11), description="Classification values that count as clear"
    )


class TimeConfig(Section):
    """Before (t0) and after (t1) search windows."""

    t0: TimeWindow = Field(description="(start, end) of the before window, UTC")
    t1: TimeWindow = Field(description="(start, end) of the after window, UTC")

    @model_validator(mode="after")
    def _ordered(self) -> TimeConfig:
        for name, (start, end) in (("t0", self.t0), ("t1", self.t1)):
            if start >= end:
                raise ValueError(f"time.{name} must be (start, end) with start < end")
        if self.t0[0] >= self.t1[1]:
            raise ValueError("time.t0 must start before time.t1 ends")
        return self


class PairingConfig(Section):
    """How the before/after scenes of a cell are chosen."""

    min_clear_fraction: float = Field(
        default=0.95, ge=0, le=1, description="Per scene, over the cell"
    )
    allow_unknown_clear: bool = Field(
        default=False,
        description="Keep scenes without a classification band (clear fraction unknown)",
    )
    min_gap_days: float = Field(default=30, ge=0, description="Smallest t1 - t0")
    max_gap_days: float = Field(default=3650, gt=0, description="Largest t1 - t0")
    season_weight: float = Field(
        default=0.5, ge=0, description="Score penalty per 30 days of day-of-year difference"
    )
    min_valid_fraction: float = Field(
        default=0.98, ge=0, le=1, description="Per scene, over the cell"
    )


class CoregConfig(Section):
    """Co-registration of the after scene onto the before scene."""

    band: str | None = Field(default=None, description="Band used (default: the last imagery band)")
    upsample_factor: int = Field(default=50, ge=1, description="Sub-pixel precision = 1/upsample")
    max_shift_px: float = Field(
        default=3.0, gt=0, description="Reject pairs shifted more than this"
    )
    max_residual_px: float = Field(
        default=0.5, gt=0, description="Reject when the residual exceeds this"
    )
    min_shift_px: float = Field(default=0.05, ge=0, description="Smaller shifts are not applied")
    max_error: float = Field(
        default=0.97,
        gt=0,
        description="Phase-correlation error above which a shift is not applied "
        "(unrelated images score >= 0.99)",
    )


class LabelConfig(Section):
    """Where change labels come from."""

    kind: Literal["landcover", "change_mask"] = Field(
        default="landcover", description="Land-cover maps of both dates, or a change-mask asset"
    )
    collection: str | None = Field(default=None, description="Land-cover collection (landcover)")
    asset: str = Field(default="map", description="Asset key of the map or the change mask")
    product: Literal["worldcover", "geodelta"] = Field(
        default="worldcover", description="Class table of the land-cover product"
    )
    change_values: tuple[int, ...] = Field(
        default=(1,), description="change_mask: values meaning 'changed' (OSCD: 2)"
    )
    nodata_values: tuple[int, ...] = Field(default=(0,), description="Values meaning 'no label'")
    min_region_px: int = Field(default=4, ge=1, description="Drop change regions smaller than this")

    @model_validator(mode="after")
    def _collection(self) -> LabelConfig:
        if self.kind == "landcover" and not self.collection:
            raise ValueError("labels.collection is required when labels.kind is 'landcover'")
        return self


class AnnotationConfig(Section):
    """Caption and QA generation."""

    annotator: Literal["template"] = Field(default="template", description="Annotator")
    captions_per_sample: int = Field(default=5, ge=1, le=20, description="Captions per sample")
    no_change_epsilon: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Changed fractions at or below this read as 'no change'",
    )


class ValidationConfig(Section):
    """Rule checks before sharding."""

    min_captions: int = Field(default=5, ge=1, description="Fewest captions per sample")
    caption_chars: tuple[int, int] = Field(
        default=(10, 400), description="(min, max) caption length"
    )
    max_abs_shift_px: float = Field(default=3.0, gt=0, description="Largest recorded shift")
    max_residual_px: float = Field(default=0.5, gt=0, description="Largest recorded residual")


class SplitConfig(Section):
    """Spatially disjoint splits by blocks of cells."""

    block_cells: int = Field(
        default=2, ge=1, description="Block side in cells; a block is in one split"
    )
    fractions: dict[str, float] = Field(
        default={"train": 0.8, "val": 0.1, "test": 0.1}, description="Split -> share of blocks"
    )
    seed: int = Field(default=0, description="Seed of the block -> split assignment")

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        total = sum(self.fractions.values())
        if abs(total - 1.0) > 1e-6 or any(v < 0 for v in self.fractions.values()):
            raise ValueError(f"splits.fractions must be >= 0 and sum to 1 (actual sum={total:.4f})")
        return self


class ShardConfig(Section):
    """WebDataset shard sizes."""

    max_samples: int = Field(default=32, ge=1, description="Samples per shard at most")
    max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="Bytes per shard at most"
    )


class RunnerConfig(Section):
    """Which engine runs the stages."""

    name: Literal["direct", "inprocess"] = Field(
        default="direct", description="'direct': Beam FnApiRunner; 'inprocess': a plain loop"
    )
    workers: int = Field(default=2, ge=1, description="Worker processes (direct runner)")
    mode: Literal["multi_processing", "multi_threading", "in_memory"] = Field(
        default="multi_processing", description="FnApiRunner running mode"
    )


class OutputConfig(Section):
    """Where the release goes."""

    dir: str = Field(description="Release directory (relative to the config file)")


class BuildConfig(Section):
    """One dataset version."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Dataset name")
    version: str = Field(min_length=1, description="Dataset version, e.g. '0.1.0'")
    description: str = Field(default="", description="One paragraph for the dataset card")
    licence: str = Field(description="Licence of the released samples")
    attribution: str = Field(description="Attribution the licence requires")
    aoi: AOIConfig
    grid: GridConfig = GridConfig()
    catalog: CatalogConfig
    imagery: ImageryConfig
    time: TimeConfig
    pairing: PairingConfig = PairingConfig()
    coregistration: CoregConfig = CoregConfig()
    labels: LabelConfig
    annotation: AnnotationConfig = AnnotationConfig()
    validation: ValidationConfig = ValidationConfig()
    splits: SplitConfig = SplitConfig()
    shards: ShardConfig = ShardConfig()
    runner: RunnerConfig = RunnerConfig()
    output: OutputConfig
    base_dir: str = Field(
        default=".", description="Folder relative paths resolve against (set by the loader)"
    )

    def resolve(self, path: str) -> str:
        """Resolve a path from the config against ``base_dir``; URLs pass through."""
        if "://" in path:
            return path
        p = Path(path)
        return str(p if p.is_absolute() else (Path(self.base_dir) / p).resolve())

    def normalised(self) -> dict[str, Any]:
        """The config as plain JSON data, without what must not change the data.

        ``base_dir`` (where the file lives), ``output`` (where the release goes) and ``runner``
        (which engine ran it) are left out: the same dataset built elsewhere or on another
        engine has the same hash and the same bytes.
        """
        data = self.model_dump(mode="json")
        for key in ("base_dir", "output", "runner"):
            data.pop(key, None)
        return data

    def config_hash(self) -> str:
        """sha256 of the normalised config (identifies what the release was built from)."""
        blob = json.dumps(self.normalised(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def parse_config(
    data: dict[str, Any], source: str = "<dict>", base_dir: str | None = None
) -> BuildConfig:
    """Validate a config mapping; every problem is reported with the key to change."""
    if not isinstance(data, dict):
        raise ConfigError(source, [f"the config must be a mapping, got {type(data).__name__}"])
    if base_dir is not None:
        data = {**data, "base_dir": base_dir}
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = _format_loc(err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"{key}: unknown key (misspelt?); remove or rename it")
            elif err["type"] == "missing":
                problems.append(f"{key}: required key is missing")
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(source, problems) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """Read and validate a YAML config; relative paths resolve against the file's folder."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from None
    if overrides:
        data = _merge(data or {}, overrides)
    return parse_config(data or {}, source=str(path), base_dir=str(path.resolve().parent))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out
