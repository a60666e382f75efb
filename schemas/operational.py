"""The operational sections of the build config: how and where a build runs (``runner``,
``gdal``, ``output``, ``budget``). None of them shapes a sample, so all stay out of the config
hash (:meth:`geodelta.schemas.config.BuildConfig.normalised`); :mod:`geodelta.schemas.config`
re-exports them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from geodelta.schemas._section import Section


class RunnerConfig(Section):
    """Which engine runs the stages."""

    name: Literal["direct", "inprocess", "dask", "beam"] = Field(
        default="direct",
        description="'direct': Beam FnApiRunner; 'inprocess': a plain loop; 'dask': Beam's "
        "DaskRunner (a LocalCluster, or the scheduler at dask_address); 'beam': the runner the "
        "pass-through options name (e.g. --runner=DataflowRunner)",
    )
    workers: int = Field(
        default=2, ge=1, description="Worker processes (direct runner, dask LocalCluster)"
    )
    mode: Literal["multi_processing", "multi_threading", "in_memory"] = Field(
        default="multi_processing", description="FnApiRunner running mode"
    )
    dask_address: str | None = Field(
        default=None,
        description="Scheduler address of an existing Dask cluster (dask runner); none: "
        "geodelta starts a LocalCluster of `workers` processes and closes it after the run",
    )
    options: list[str] = Field(
        default=[],
        description="Beam pipeline options passed straight through, e.g. "
        "['--runner=FlinkRunner', '--flink_master=host:8081'] (dask, beam; direct: added to "
        "the FnApiRunner's own)",
    )
    breaker_cells: int = Field(
        default=32,
        ge=0,
        description="Circuit breaker: when the first this-many finished cells were all "
        "quarantined for the same reason, the build stops with that reason (exit 1) instead of "
        "running every other cell into the same wall; the staging area is kept, so "
        "`geodelta build --resume` after fixing the cause runs those cells again. 0: never stop",
    )
    block_cells: int = Field(
        default=8,
        ge=1,
        description="Cells per side of a plan block (up to block_cells x block_cells cells of "
        "one UTM zone's grid): the element the engines distribute (expanded into its cells on "
        "the worker) and the unit of one STAC search per collection and time window, reused "
        "for every cell of the block. 1: one element and one search per cell. Changes no "
        "sample byte",
    )


class GdalConfig(Section):
    """GDAL options for remote (HTTP range) COG reads, applied around every read on every worker."""

    disable_readdir_on_open: str = Field(
        default="EMPTY_DIR",
        description="GDAL_DISABLE_READDIR_ON_OPEN: never list a remote folder for sidecar files",
    )
    allowed_extensions: str = Field(
        default=".tif,.tiff,.TIF,.TIFF,.jp2,.vrt",
        description="CPL_VSIL_CURL_ALLOWED_EXTENSIONS: only these files are opened over HTTP",
    )
    http_multiplex: bool = Field(default=True, description="GDAL_HTTP_MULTIPLEX (HTTP/2)")
    merge_consecutive_ranges: bool = Field(
        default=True, description="GDAL_HTTP_MERGE_CONSECUTIVE_RANGES"
    )
    http_max_retry: int = Field(default=5, ge=0, description="GDAL_HTTP_MAX_RETRY (429 / 5xx)")
    http_retry_delay_s: float = Field(default=1.0, ge=0, description="GDAL_HTTP_RETRY_DELAY")
    http_timeout_s: int = Field(default=60, ge=1, description="GDAL_HTTP_TIMEOUT")
    vsi_cache: bool = Field(default=True, description="VSI_CACHE: cache remote blocks in memory")
    vsi_cache_size: int = Field(
        default=64 * 1024 * 1024, ge=0, description="VSI_CACHE_SIZE in bytes (per open file)"
    )
    options: dict[str, str] = Field(
        default={}, description="Further GDAL config options (name -> value); win over the above"
    )

    def env(self) -> dict[str, str]:
        """The GDAL config options (name -> value) for :class:`rasterio.Env`."""
        yes = {True: "YES", False: "NO"}
        out = {
            "GDAL_DISABLE_READDIR_ON_OPEN": self.disable_readdir_on_open,
            "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": self.allowed_extensions,
            "GDAL_HTTP_MULTIPLEX": yes[self.http_multiplex],
            "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": yes[self.merge_consecutive_ranges],
            "GDAL_HTTP_MAX_RETRY": str(self.http_max_retry),
            "GDAL_HTTP_RETRY_DELAY": f"{self.http_retry_delay_s:g}",
            "GDAL_HTTP_TIMEOUT": str(self.http_timeout_s),
            "VSI_CACHE": "TRUE" if self.vsi_cache else "FALSE",
            "VSI_CACHE_SIZE": str(self.vsi_cache_size),
        }
        out.update(self.options)
        return out


class OutputConfig(Section):
    """Where the release goes."""

    dir: str = Field(
        description="Release directory (relative to the config file) or an fsspec URL "
        "(file://, memory://, s3://, gs://, az://...): a URL release is assembled in work_dir, "
        "then uploaded with manifest.json last"
    )
    work_dir: str | None = Field(
        default=None,
        description="Local folder a URL release is assembled in (relative to the config file); "
        "default: .geodelta-work/<name>-<version>-<hash of the URL> next to the config",
    )
    staging: str | None = Field(
        default=None,
        description="Where the staging area lives: a local folder (relative to the config file) "
        "or an fsspec URL (s3://, gs://, az://, file://, memory://) that every worker can "
        "write; credentials come from the environment (e.g. AWS_*), never from here. Default: "
        ".staging/ inside the folder the release is assembled in",
    )


class BudgetConfig(Section):
    """Limits above which ``geodelta build`` refuses to start without ``--yes`` (``api.build``:
    ``confirm=True``), judged on the estimate ``geodelta plan --estimate`` prints (counted from
    the config, no cell materialised, no network). None: no limit. Not part of the config hash.
    """

    max_cells: int | None = Field(
        default=100_000, ge=1, description="Most planned cells (None = no limit)"
    )
    max_usd: float | None = Field(
        default=100.0,
        ge=0,
        description="Most estimated LLM spend in US dollars (annotation.openai prices; the "
        "template annotator costs 0) (None = no limit)",
    )
    max_cpu_hours: float | None = Field(
        default=1000.0,
        ge=0,
        description="Most estimated CPU-hours (at the per-tile cost benchmarks/bench_build.py "
        "measured) (None = no limit)",
    )
    max_read_bytes: int | None = Field(
        default=10 * 10**12,
        ge=0,
        description="Most estimated bytes of pixels read (cell windows at native resolution, "
        "uncompressed) (None = no limit); default 10 TB",
    )
