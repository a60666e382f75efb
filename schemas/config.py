"""The build config: one YAML file per dataset version, validated before anything runs.

Unknown or misspelt keys are rejected with the dotted path of the key (``ConfigError``). Paths
in the file are relative to the file's folder. The config is frozen and picklable, so it can be
shipped to workers as it is.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    model_validator,
)

from geodelta.errors import ConfigError
from geodelta.schemas._section import Section as Section
from geodelta.schemas.annotation_config import AnnotationConfig as AnnotationConfig
from geodelta.schemas.annotation_config import BaselineConfig as BaselineConfig
from geodelta.schemas.annotation_config import GateConfig as GateConfig
from geodelta.schemas.annotation_config import GateRule as GateRule
from geodelta.schemas.annotation_config import OpenAIConfig as OpenAIConfig
from geodelta.schemas.annotation_config import PriceConfig as PriceConfig
from geodelta.schemas.annotation_config import ReferenceConfig as ReferenceConfig
from geodelta.schemas.annotation_config import ValidationConfig as ValidationConfig
from geodelta.schemas.operational import BudgetConfig as BudgetConfig
from geodelta.schemas.operational import GdalConfig as GdalConfig
from geodelta.schemas.operational import OutputConfig as OutputConfig
from geodelta.schemas.operational import RunnerConfig as RunnerConfig
from geodelta.schemas.series import SeriesConfig as SeriesConfig


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


class InvalidConfigError(ConfigError):
    """A config file that cannot be used; the message names each key to change.

    A :class:`geodelta.errors.ConfigError` (``geodelta.schemas.ConfigError`` is that family
    class, so catching it catches this and every other config mistake).
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        if len(problems) == 1:  # one mistake, one line
            super().__init__(f"invalid config {source}: {problems[0]}")
            return
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config {source}:\n{lines}")


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
    """Where scenes come from: a local static catalog, or a STAC API searched over HTTP.

    Keys in :attr:`OPERATIONAL` (how requests are made: retries, timeouts, concurrency, the
    token endpoint) do not change the data and are left out of the config hash; so is ``url``
    (where the catalog lives: the same items copied elsewhere are the same data).
    """

    OPERATIONAL: ClassVar[tuple[str, ...]] = (
        "page_size",
        "retries",
        "backoff_s",
        "max_wait_s",
        "timeout_s",
        "concurrency_per_host",
        "sas_url",
        "token_refresh_s",
    )

    kind: Literal["static", "stac-api", "planetary-computer", "snapshot"] = Field(
        default="static",
        description="'static': a local STAC catalog; 'stac-api': any STAC API (pystac-client); "
        "'planetary-computer': the Planetary Computer STAC API, asset hrefs signed at read time; "
        "'snapshot': a search snapshot (stac-geoparquet, `geodelta snapshot` or a release's "
        "snapshot/items.parquet) searched in process, no API call",
    )
    url: str = Field(
        description="Path or URL of catalog.json (static), the STAC API root URL "
        "(e.g. https://planetarycomputer.microsoft.com/api/stac/v1), or the snapshot file "
        "(a local path or any fsspec URL)"
    )
    max_items: int | None = Field(
        default=None, ge=1, description="Most items one search returns (None = all); a bound"
    )
    page_size: int = Field(default=100, ge=1, le=10000, description="Items per search page")
    retries: int = Field(
        default=5, ge=0, le=20, description="Retries of a request on 429 / 5xx / timeouts"
    )
    backoff_s: float = Field(
        default=0.5, ge=0, description="Exponential backoff factor between retries (seconds)"
    )
    max_wait_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait before one retry (caps backoff and the server's Retry-After)",
    )
    timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one HTTP request")
    concurrency_per_host: int = Field(
        default=4, ge=1, description="Concurrent requests per host, per worker process"
    )
    signing: Literal["auto", "none", "planetary-computer"] = Field(
        default="auto",
        description="Sign asset hrefs at read time; 'auto' signs for kind planetary-computer",
    )
    sas_url: str | None = Field(
        default=None,
        description="SAS token endpoint (default: the planetary-computer package's, "
        "env PC_SDK_SAS_URL); the subscription key comes from env PC_SDK_SUBSCRIPTION_KEY only",
    )
    sign_hosts: tuple[str, ...] = Field(
        default=(".blob.core.windows.net",),
        description="Hosts (or host suffixes) whose hrefs are signed",
    )
    token_refresh_s: float = Field(
        default=300.0, ge=0, description="Refresh a SAS token when less than this is left"
    )

    @property
    def recorded_url(self) -> str:
        """``url`` as a release records it (``manifest.json``), never where a copy lies on disk.

        A remote URL (``https://``, ``s3://``...) is kept without its query string or fragment:
        it reads the same from every machine and says which service the items came from. A local
        path or ``file://`` URL is reduced to its file name (``catalog.json``): the same catalog
        copied to another folder is the same data, so it gives the same bytes.
        """
        parts = urlsplit(self.url)
        if "://" in self.url and parts.scheme != "file":
            return parts._replace(query="", fragment="").geturl()
        return Path(parts.path if parts.scheme == "file" else self.url).name


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
    cloud_bits: tuple[int, ...] = Field(
        default=(),
        description="Bit positions of a bit-mask classification band (Landsat QA_PIXEL) that "
        "make a pixel not clear; when given, clear_classes is not used",
    )
    max_cloud_cover: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Search pre-filter on the scene-wide eo:cloud_cover (percent); only "
        "narrows the candidates: the pixel-level clear fraction over the cell still decides",
    )


class TimeConfig(Section):
    """Before (t0) and after (t1) search windows."""

    t0: TimeWindow = Field(description="(start, end) of the before window, UTC")
    t1: TimeWindow = Field(description="(start, end) of the after window, UTC")
    series: SeriesConfig | None = Field(
        default=None,
        description="Sequence mode (N dates per cell, one per window); None = pairs. With it, "
        "t0 and t1 may be left out: they default to the first and the last window",
    )

    @model_validator(mode="before")
    @classmethod
    def _series_windows_as_t0_t1(cls, data: Any) -> Any:
        """With ``series`` and no ``t0``/``t1``: the first and the last series window."""
        if not isinstance(data, dict) or data.get("series") is None:
            return data
        if "t0" in data and "t1" in data:
            return data
        from geodelta.schemas.series import series_windows

        windows = series_windows(SeriesConfig.model_validate(data["series"]))
        return {
            "t0": (windows[0].start, windows[0].end),
            "t1": (windows[-1].start, windows[-1].end),
            **data,
        }

    @model_validator(mode="after")
    def _ordered(self) -> TimeConfig:
        for name, (start, end) in (("t0", self.t0), ("t1", self.t1)):
            if start >= end:
                raise ValueError(
                    f"time.{name} must be (start, end) with start < end "
                    f"(got {start.date().isoformat()} .. {end.date().isoformat()})"
                )
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

    @model_validator(mode="after")
    def _gap_ordered(self) -> PairingConfig:
        if self.min_gap_days > self.max_gap_days:
            raise ValueError(
                f"pairing.min_gap_days ({self.min_gap_days:g}) is larger than "
                f"pairing.max_gap_days ({self.max_gap_days:g}): no pair could ever be chosen; "
                "lower min_gap_days or raise max_gap_days"
            )
        return self


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
    margin_px: int = Field(
        default=64,
        ge=0,
        description="Context read around each cell (px per side) for the tie points that check "
        "its shift; 0 = no neighbourhood check (the cell's own estimate only)",
    )
    tie_window_px: int = Field(
        default=64, ge=16, description="Size of the tie-point windows (px), laid side by side"
    )
    consistency_tolerance_px: float = Field(
        default=0.25,
        gt=0,
        description="Largest distance (px) between the cell's shift and the tie points' "
        "consensus for the cell's own estimate to be kept",
    )
    tie_agreement_px: float = Field(
        default=0.5,
        gt=0,
        description="Tie points within this distance (px) of their median agree; the consensus "
        "is the median of the agreeing ones",
    )
    min_tie_points: int = Field(
        default=3,
        ge=1,
        description="Fewest agreeing tie points (and a strict majority of the usable ones) for a "
        "consensus; without one the cell is quarantined ('inconsistent')",
    )


class LabelConfig(Section):
    """Where change labels come from."""

    kind: Literal["landcover", "change_mask"] = Field(
        default="landcover", description="Land-cover maps of both dates, or a change-mask asset"
    )
    collection: str | None = Field(default=None, description="Land-cover collection (landcover)")
    asset: str = Field(default="map", description="Asset key of the map or the change mask")
    product: Literal["worldcover", "io-lulc", "geodelta"] = Field(
        default="worldcover", description="Class table of the land-cover product"
    )
    change_values: tuple[int, ...] = Field(
        default=(1,), description="change_mask: values meaning 'changed' (OSCD: 2)"
    )
    nodata_values: tuple[int, ...] = Field(default=(0,), description="Values meaning 'no label'")
    min_region_px: int = Field(default=4, ge=1, description="Drop change regions smaller than this")

    #: ``kind`` -> the keys that kind needs set (a kind not listed needs none). ``collection``
    #: among them means the labels are items searched in that collection (its profile then
    #: fills ``asset`` / ``product``); how they are read is the kind's label source
    #: (``geodelta.pipelines.stages.labels``).
    REQUIRED_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {"landcover": ("collection",)}

    @model_validator(mode="after")
    def _required_keys(self) -> LabelConfig:
        for key in self.REQUIRED_KEYS.get(self.kind, ()):
            if not getattr(self, key):
                raise ValueError(f"labels.{key} is required when labels.kind is {self.kind!r}")
        return self

    @property
    def searched_collection(self) -> str | None:
        """The collection the pair stage searches for label items; None when the kind has none."""
        return self.collection if "collection" in self.REQUIRED_KEYS.get(self.kind, ()) else None


class SplitConfig(Section):
    """Spatially disjoint splits by blocks of cells."""

    block_cells: int = Field(
        default=2, ge=1, description="Block side in cells; a block is in one split"
    )
    fractions: dict[str, float] = Field(
        default={"train": 0.8, "val": 0.1, "test": 0.1}, description="Split -> share of blocks"
    )
    seed: int = Field(default=0, description="Seed of the block -> split assignment")
    buffer_cells: int = Field(
        default=0,
        ge=0,
        description="Cells closer than this (in cells, any direction) to a cell of another split "
        "are quarantined at validate; the split with the smaller fraction keeps its cells",
    )

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


def normalised_hash(data: dict[str, Any]) -> str:
    """sha256 of a normalised config (:meth:`BuildConfig.normalised`) as canonical JSON."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


#: Normalised-config sections that shape the release but not the bytes of a sample; every other
#: section (and any section added later) shapes samples.
RELEASE_SECTIONS = frozenset(
    {"name", "version", "description", "aoi", "shards", "reference", "gate"}
)


def shaping_hash(normalised: dict[str, Any]) -> str:
    """sha256 of the sections of a normalised config that shape a sample (all but
    :data:`RELEASE_SECTIONS`): what every sample's ``json`` records, so that a sample built
    alike in another version (a grown AOI, another name, version or shard size) has the same
    bytes."""
    return normalised_hash({k: v for k, v in normalised.items() if k not in RELEASE_SECTIONS})


def _hashed_part(recorded: dict[str, Any]) -> dict[str, Any]:
    """The normalised config a manifest's embedded config (:meth:`BuildConfig.recorded`) was
    hashed as: a copy without ``catalog.url`` (provenance, outside the hash)."""
    data = json.loads(json.dumps(recorded))
    data.get("catalog", {}).pop("url", None)
    return data


def recorded_shaping_hash(recorded: dict[str, Any]) -> str:
    """:func:`shaping_hash` of the config a manifest embeds, from its own text (as
    :func:`recorded_hash`)."""
    return shaping_hash(_hashed_part(recorded))


def recorded_hash(recorded: dict[str, Any]) -> str:
    """The config hash of the config a manifest embeds (:meth:`BuildConfig.recorded`), from its
    own text: without ``catalog.url`` (provenance, outside the hash) it is the normalised config
    that was hashed. Not re-parsed: a newer geodelta, whose sections have keys the release's did
    not, still finds the hash it was built with."""
    return normalised_hash(_hashed_part(recorded))


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
    baseline: BaselineConfig = BaselineConfig()
    annotation: AnnotationConfig = AnnotationConfig()
    validation: ValidationConfig = ValidationConfig()
    splits: SplitConfig = SplitConfig()
    shards: ShardConfig = ShardConfig()
    reference: ReferenceConfig = ReferenceConfig()
    gate: GateConfig = GateConfig()
    runner: RunnerConfig = RunnerConfig()
    gdal: GdalConfig = GdalConfig()
    budget: BudgetConfig = BudgetConfig()
    output: OutputConfig
    base_dir: str = Field(
        default=".", description="Folder relative paths resolve against (set by the loader)"
    )

    @model_validator(mode="after")
    def _bands_named(self) -> BuildConfig:
        """rgb and the co-registration band are read from the stack of ``imagery.bands``."""
        bands = self.imagery.bands
        rgb_out = [b for b in self.imagery.rgb if b not in bands]
        if rgb_out:
            raise ValueError(
                f"imagery.rgb: {rgb_out} not in imagery.bands {list(bands)}; add them to "
                "imagery.bands or choose rgb among them"
            )
        band = self.coregistration.band
        if band is not None and band not in bands:
            raise ValueError(
                f"coregistration.band: {band!r} not in imagery.bands {list(bands)}; add it to "
                "imagery.bands or choose one of them"
            )
        return self

    @model_validator(mode="after")
    def _tie_windows_fit(self) -> BuildConfig:
        """The tie-point windows fit in the co-registration context (cell + 2 margins)."""
        c = self.coregistration
        context = self.grid.cell_size_px + 2 * c.margin_px
        if c.margin_px > 0 and c.tie_window_px > context:
            raise ValueError(
                f"coregistration.tie_window_px ({c.tie_window_px}) is larger than the context "
                f"it is laid on (grid.cell_size_px + 2 * coregistration.margin_px = {context}); "
                "lower tie_window_px or raise margin_px"
            )
        return self

    def resolve(self, path: str) -> str:
        """Resolve a path from the config against ``base_dir``; URLs pass through."""
        if "://" in path:
            return path
        p = Path(path)
        return str(p if p.is_absolute() else (Path(self.base_dir) / p).resolve())

    def normalised(self) -> dict[str, Any]:
        """The config as plain JSON data, without what must not change the data.

        ``base_dir`` (where the file lives), ``output`` (where the release goes), ``runner``
        (which engine ran it), ``gdal`` (how remote files are fetched), ``budget`` (when a
        build asks for ``--yes``) and ``catalog.url``
        (where the catalog lives) are left out, and a local file the config names
        (``aoi.geojson``, ``baseline.weights``) enters by its content (``sha256:<hex>``), not
        its path: the same dataset built elsewhere or on another engine has the same hash and
        the same bytes. What identifies the data stays: the catalog kind, the collection ids
        and every other section that shapes samples (each sample records its item ids).
        """
        data = self.model_dump(mode="json")
        for key in ("base_dir", "output", "runner", "gdal", "budget"):
            data.pop(key, None)
        if self.time.series is None:
            data["time"].pop("series", None)  # pairs: the hash of a config without the key
        for key in (*CatalogConfig.OPERATIONAL, "url"):
            data["catalog"].pop(key, None)
        if self.aoi.geojson is not None:
            data["aoi"]["geojson"] = self._content_id(self.aoi.geojson)
        if self.catalog.kind == "snapshot":
            data["catalog"] = self._snapshot_catalog()
            data["catalog"].pop("url", None)
        if self.baseline.weights is not None:
            data["baseline"]["weights"] = self._content_id(self.baseline.weights, "weights.pt")
        if self.baseline.weights is None:
            data.pop("baseline", None)  # no model: the hash of a config without the section
        annotation = data.get("annotation", {})
        if self.annotation.annotator != "openai":
            annotation.pop("openai", None)  # unused settings do not change the data
        else:
            for key in OpenAIConfig.OPERATIONAL:
                annotation["openai"].pop(key, None)
        return data

    def config_hash(self) -> str:
        """sha256 of the normalised config (identifies what the release was built from)."""
        return normalised_hash(self.normalised())

    def shaping_hash(self) -> str:
        """sha256 of the config sections that shape a sample (:func:`shaping_hash`)."""
        return shaping_hash(self.normalised())

    def recorded(self) -> dict[str, Any]:
        """The config ``manifest.json`` embeds: :meth:`normalised` plus ``catalog.url`` as
        :attr:`CatalogConfig.recorded_url` (provenance, outside the hash: it never names a
        local folder). ``parse_config`` of it (with any ``output``) hashes to
        :meth:`config_hash`."""
        data = self.normalised()
        data["catalog"]["url"] = self.catalog.recorded_url
        if self.catalog.kind == "snapshot":
            data["catalog"]["url"] = self._snapshot_catalog().get("url", data["catalog"]["url"])
        return data

    def _snapshot_catalog(self) -> dict[str, Any]:
        """The catalog section a ``kind: snapshot`` config stands for.

        A snapshot records the catalog its items were searched in (``geodelta:origin`` in its
        Parquet metadata: that catalog's :meth:`recorded` section): building from it is
        building from that catalog, frozen, so the config hashes (and the release records the
        catalog) as the build that searched the catalog itself: a release rebuilt from its own
        snapshot has the same bytes. A snapshot without that record (written by another tool)
        enters by its content: ``{"kind": "snapshot", "snapshot": "sha256:<hex>"}``.
        """
        origin, sha = _snapshot_origin(self.resolve(self.catalog.url))
        if origin:
            return dict(origin)
        return {"kind": "snapshot", "snapshot": sha, "url": self.catalog.recorded_url}

    def _content_id(self, path: str, inside: str | None = None) -> str:
        """What a file the config names holds: ``sha256:<hex>`` of a local file (``inside`` a
        folder when given a folder); a remote URL as it is (no query); a ``sha256:`` id (a
        config read back from a manifest) unchanged; a missing file by its name only."""
        if path.startswith(CONTENT_ID_PREFIX):
            return path
        if "://" in path and not path.startswith("file://"):
            return urlsplit(path)._replace(query="", fragment="").geturl()
        local = Path(self.resolve(path.removeprefix("file://")))
        if inside is not None and local.is_dir():
            local = local / inside
        try:
            st = local.stat()
            return CONTENT_ID_PREFIX + _file_sha256(str(local), st.st_mtime_ns, st.st_size)
        except OSError:
            return local.name


#: How a local file enters the config hash and the manifest: by its content, not its path.
CONTENT_ID_PREFIX = "sha256:"
#: Parquet metadata key of a search snapshot's origin (:mod:`geodelta.sources.snapshot`).
SNAPSHOT_ORIGIN_KEY = b"geodelta:origin"


def _snapshot_origin(url: str) -> tuple[dict[str, Any], str]:
    """(the recorded origin, ``sha256:<hex>`` of the content) of a snapshot file; an unreadable
    file gives ({}, its name): opening the catalog then says what is wrong with it."""
    local = "://" not in url or url.startswith("file://")
    try:
        if local:
            path = url.removeprefix("file://")
            st = os.stat(path)
            return _snapshot_origin_cached(path, st.st_mtime_ns, st.st_size)
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        info = fs.info(path)  # one HEAD: the content is read again only when it changed
        version = str(info.get("ETag") or info.get("etag") or info.get("mtime") or "")
        return _snapshot_origin_remote(url, version, int(info.get("size") or 0))
    except (OSError, ValueError):
        return {}, Path(urlsplit(url).path).name


@functools.lru_cache(maxsize=16)
def _snapshot_origin_cached(path: str, mtime_ns: int, size: int) -> tuple[dict[str, Any], str]:
    return _snapshot_origin_read(path)


@functools.lru_cache(maxsize=16)
def _snapshot_origin_remote(url: str, version: str, size: int) -> tuple[dict[str, Any], str]:
    """A remote snapshot read once per (URL, ETag or mtime, size) in a process: a worker
    hashes its config for every sample."""
    return _snapshot_origin_read(url)


def _snapshot_origin_read(url: str) -> tuple[dict[str, Any], str]:
    import io

    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(url, "rb") as fh:
        data = fh.read()
    try:
        meta = pq.read_schema(io.BytesIO(data)).metadata or {}
    except Exception as exc:  # pyarrow: not a Parquet file
        raise ValueError(str(exc)) from exc
    origin = json.loads(meta.get(SNAPSHOT_ORIGIN_KEY, b"{}"))
    sha = CONTENT_ID_PREFIX + hashlib.sha256(data).hexdigest()
    return (origin if isinstance(origin, dict) else {}), sha


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a file, read once per (path, mtime, size) in a process."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def parse_config(
    data: dict[str, Any], source: str = "<dict>", base_dir: str | None = None
) -> BuildConfig:
    """Validate a config mapping; every problem is reported with the key to change."""
    if not isinstance(data, dict):
        raise InvalidConfigError(
            source, [f"the config must be a mapping, got {type(data).__name__}"]
        )
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
            elif isinstance(err.get("input"), dict):  # a section's own rule names its keys
                msg = err["msg"].removeprefix("Value error, ")
                named = key == "<root>" or msg.startswith(f"{key}.")
                problems.append(msg if named else f"{key}: {msg}")
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise InvalidConfigError(source, problems) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """Read and validate a YAML config; relative paths resolve against the file's folder."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidConfigError(str(path), ["file not found"]) from None
    except IsADirectoryError:
        raise InvalidConfigError(str(path), ["is a folder; pass the YAML file"]) from None
    except UnicodeDecodeError as exc:
        raise InvalidConfigError(
            str(path), [f"not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"]
        ) from None
    except OSError as exc:
        raise InvalidConfigError(str(path), [f"cannot be read ({exc.strerror or exc})"]) from None
    except yaml.YAMLError as exc:
        raise InvalidConfigError(str(path), [f"not valid YAML: {exc}"]) from None
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
