"""The public API of geodelta's pipelines: build, plan, search, verify, report, train, publish.

The command line (:mod:`geodelta.pipelines.cli`) and the Airflow DAG (``dags/``) call only
this module (and :mod:`geodelta.errors`); so can a notebook or another orchestrator. Every
function loads what it needs when it is called, so importing this module stays cheap (no
Beam, torch, rasterio or GDAL).

A build is resumable and idempotent: every cell's outcome lands in the staging area
(``<release>/.staging``) with a completion marker, written atomically; ``resume`` skips the
cells that have one, and refuses a staging area made from another config. The release itself
is assembled from the staging area in key order, so a resumed build is byte-identical to an
uninterrupted one. :func:`build_cells` runs the stages over some cells only (one mapped task of
an orchestrator), :func:`build` then finishes the release.

When ``output.dir`` is an fsspec URL, the release is assembled in a local work folder and then
uploaded with ``manifest.json`` last (:mod:`geodelta.pipelines.release.upload`); the work
folder, its staging area included, is kept until the upload has succeeded, so ``resume``
finishes a failed upload without running any cell again.

Errors: everything raised on purpose is a :class:`~geodelta.errors.GeodeltaError`, or one of
the classes re-exported here (each names the key, file or option to change).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geodelta import __version__
from geodelta._io import write_atomic
from geodelta.errors import BuildError, GeodeltaError, ModelError, ReleaseError
from geodelta.pipelines.engines.run import BreakerError, RunnerError, check_runner
from geodelta.pipelines.release.gate import GateError, PublishError, format_rules
from geodelta.pipelines.release.layout import MANIFEST, STAGING, Mode, read_manifest
from geodelta.pipelines.release.publish import latest_release
from geodelta.pipelines.release.publish import promote_reference as promote
from geodelta.pipelines.release.qa_balance import format_balance
from geodelta.pipelines.release.upload import OutputError, is_url, shown, verify_url
from geodelta.pipelines.stages.plan import PlanError
from geodelta.pipelines.training.reference import ReferenceError, reference_config
from geodelta.pipelines.training.shards import ShardError
from geodelta.schemas import BuildConfig, ConfigError, ReleaseManifest, TileJob, json_schemas
from geodelta.schemas import load_config as _load_config
from geodelta.secrets import install_log_redaction, redact, register_env_secret
from geodelta.sources.catalog import CatalogError

if TYPE_CHECKING:
    from geodelta.annotators.models.change_model import SavedModel
    from geodelta.pipelines.release.gate import GateResult
    from geodelta.pipelines.release.publish import PublishResult
    from geodelta.pipelines.release.qa_balance import QABalance
    from geodelta.pipelines.release.verify import VerifyResult
    from geodelta.pipelines.stages.search import SearchReport
    from geodelta.schemas.reference import ReferenceMetrics
    from geodelta.sources.demo.catalog import DemoCatalog

__all__ = [
    "MANIFEST",
    "STAGING",
    "BreakerError",
    "BuildConfig",
    "BuildError",
    "BuildResult",
    "CatalogError",
    "CellsResult",
    "ConfigError",
    "EmptyReleaseError",
    "GateError",
    "GeodeltaError",
    "IncompleteBuildError",
    "Mode",
    "ModelError",
    "OutputError",
    "PlanError",
    "PublishError",
    "ReferenceError",
    "ReleaseError",
    "RunnerError",
    "ShardError",
    "build",
    "build_cells",
    "cell_groups",
    "check_build",
    "check_config",
    "check_gate",
    "evaluate_baseline",
    "format_balance",
    "format_rules",
    "funnel",
    "is_url",
    "json_schemas",
    "latest_release",
    "load_config",
    "output_location",
    "plan",
    "preflight",
    "promote",
    "publish",
    "published_release",
    "qa_balance",
    "read_manifest",
    "redact",
    "reference_config",
    "release_name",
    "report",
    "require_release",
    "search",
    "space_note",
    "summary_rows",
    "train_baseline",
    "train_reference",
    "verify",
    "verify_url",
    "write_demo_catalog",
]


class IncompleteBuildError(BuildError):
    """Cells without an outcome after the engine ran; a re-run with ``resume`` finishes them."""


class EmptyReleaseError(BuildError):
    """A build that yields 0 samples: an error, not an empty release (names the top reasons)."""


#: Quarantine reasons named in :class:`EmptyReleaseError`'s message, most frequent first.
_EMPTY_TOP_REASONS = 5


def _empty_message(counts: Counter[str], examples: dict[str, str], cells: int, where: str) -> str:
    """One line: 0 samples, the top quarantine reasons (count, one example), what to do."""
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_EMPTY_TOP_REASONS]
    parts = [
        f"{reason} x{n}" + (f" (e.g. {examples[reason]})" if reason in examples else "")
        for reason, n in top
    ]
    return (
        f"the build produced 0 samples from {cells} cells ({where}); a build that yields "
        f"nothing is an error, not a release. Top quarantine reasons: "
        f"{'; '.join(parts) or 'none recorded'}. Fix the cause, then re-run with --resume "
        "(or --overwrite)"
    )


def _refuse_empty(staging: Any, cells: int) -> None:
    """Raise :class:`EmptyReleaseError` when no cell of the staging area produced a sample.

    Reads the markers until the first sample (cheap for a build that made something). The
    quarantined cells' markers are then forgotten: ``--resume`` after fixing the cause runs
    them again.
    """
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    ids: list[str] = []
    for cell_id, keys, records in staging.cells():
        if keys:
            return
        ids.append(cell_id)
        for r in records:
            reason = f"{r.stage}:{r.reason}"
            counts[reason] += 1
            examples.setdefault(reason, f"cell {r.cell_id}: {' '.join(r.detail.split())[:200]}")
    staging.forget_cells(ids)
    raise EmptyReleaseError(_empty_message(counts, examples, cells, "no release was written"))


def _register_secrets(cfg: BuildConfig) -> None:
    """The secrets this build may meet, by value, in this process (:mod:`geodelta.secrets`):
    the API key of the variable ``annotation.openai.api_key_env`` names and the Planetary
    Computer subscription key; every log record is redacted from now on. Worker processes
    register what they read themselves."""
    install_log_redaction()
    register_env_secret(cfg.annotation.openai.api_key_env)
    register_env_secret("PC_SDK_SUBSCRIPTION_KEY")


# -- configs and plans ------------------------------------------------------------------------


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """Load and validate a build config, with the collection profiles' defaults filled in.

    Args:
        path: the YAML file.
        overrides: nested values that replace the file's (as ``geodelta build`` options do).

    Returns:
        The config as the build sees it (its ``config_hash`` is the one releases record).

    Raises:
        ConfigError: a missing file, a misspelt key or a value out of range (names the key).
    """
    from geodelta.sources.profiles import apply_defaults

    return apply_defaults(_load_config(path, overrides))


def check_config(cfg: BuildConfig) -> list[str]:
    """What the collection profiles find wrong in a config (warnings; empty = none)."""
    from geodelta.sources.profiles import check_config as profile_problems

    return profile_problems(cfg)


def write_demo_catalog(out_dir: str | Path, *, seed: int = 0, scale: float = 1.0) -> DemoCatalog:
    """Write the SYNTHETIC demo STAC catalog (scenes, land cover, truth) into ``out_dir``.

    ``scale``: AOI size factor (1 = the demo AOI). Returns where its catalog, AOI and truth are.
    """
    from geodelta.sources.demo.catalog import write_demo_catalog as write

    return write(out_dir, seed=seed, scale=scale)


def output_location(cfg: BuildConfig) -> str:
    """Where a config's release goes: ``output.dir`` resolved (a local folder or a URL)."""
    return cfg.resolve(cfg.output.dir)


def release_name(cfg: BuildConfig) -> str:
    """The folder name a config's release is published under: ``<name>-<version>``."""
    return f"{cfg.name}-{cfg.version}"


def plan(cfg: BuildConfig) -> list[TileJob]:
    """The grid cells a config plans (reads no pixels).

    Raises:
        PlanError: the grid or the AOI cannot be planned (names the key).
    """
    from geodelta.pipelines.stages.plan import plan_jobs
    from geodelta.sources.profiles import apply_defaults

    return plan_jobs(apply_defaults(cfg))


def cell_groups(cfg: BuildConfig, cells_per_task: int) -> list[list[str]]:
    """The planned cell ids in groups for separate tasks: per AOI region, ``cells_per_task`` each.

    A group never mixes two regions; regions come in sorted order, cells in plan order.

    Raises:
        BuildError: the AOI holds no whole cell.
        PlanError: the grid or the AOI cannot be planned.
    """
    jobs = _planned(cfg)
    by_region: dict[str, list[str]] = {}
    for job in jobs:
        by_region.setdefault(job.region, []).append(job.cell_id)
    return [
        ids[i : i + cells_per_task]
        for _, ids in sorted(by_region.items())
        for i in range(0, len(ids), cells_per_task)
    ]


def search(
    cfg: BuildConfig, *, max_cells: int | None = 20, read_clear: bool = False
) -> SearchReport:
    """Dry run of search and pairing: per cell the candidates, the chosen pair, bytes to read.

    ``max_cells``: cells to search (None = every planned one); ``read_clear``: read the
    classification band for pixel-level clear fractions.

    Raises:
        PlanError: the plan fails. CatalogError: the catalog cannot be searched.
    """
    from geodelta.pipelines.stages.search import dry_run

    return dry_run(cfg, max_cells=max_cells, read_clear=read_clear)


def preflight(cfg: BuildConfig) -> list[str]:
    """Refuse, before any pixel is read, a build that can never produce a sample.

    Plans the cells, opens and parses the catalog, checks that the imagery (and label)
    collection has items, that a sampled item of each has every asset the config names, and
    that those assets' file headers (no pixels) agree with their STAC ``raster:bands``
    (:mod:`geodelta.sources.preflight`). :func:`build` runs it first; ``geodelta build CONFIG
    --check`` prints what it checked.

    Returns:
        One line per check that held.

    Raises:
        ConfigError: a collection or an asset the config names is not there, or the AOI
            cannot be planned (names the key).
        CatalogError: the catalog cannot be opened, parsed or searched (names the file, item).
        SourceError: a sampled asset cannot be opened or disagrees with its STAC metadata
            (names the key, the item and the asset).
        BuildError: the AOI holds no whole cell.
    """
    from geodelta.sources.preflight import check_sources
    from geodelta.sources.profiles import apply_defaults

    cfg = apply_defaults(cfg)
    jobs = _planned(cfg)
    lines = [f"aoi: {len(jobs)} cells planned (first {jobs[0].cell_id})"]
    return lines + check_sources(cfg, jobs[0])


# -- build ------------------------------------------------------------------------------------


@dataclass
class BuildResult:
    """What a build produced."""

    release_dir: Path
    manifest: ReleaseManifest
    cells: int
    resumed_cells: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    url: str | None = None
    """The fsspec URL the release was uploaded to, without query string or user info
    (``release_dir`` was the local work folder, removed after the upload unless
    ``keep_staging``); None for a local release."""

    @property
    def location(self) -> str:
        """Where the release is: its URL, or its local folder."""
        return self.url if self.url is not None else str(self.release_dir)

    @property
    def samples(self) -> int:
        """Samples in the release."""
        return sum(self.manifest.splits.values())

    @property
    def quarantined(self) -> int:
        """Records in quarantine."""
        return sum(self.manifest.quarantined.values())


@dataclass(frozen=True)
class CellsResult:
    """What :func:`build_cells` did: cells asked for, run now, and found already done."""

    cells: int
    processed: int
    resumed: int
    counts: list[tuple[str, int, int]] = field(default_factory=list)
    """(stage, passed, quarantined) of the cells run now, where the engine reports them."""


def _release_dir(cfg: BuildConfig) -> tuple[Path, str | None]:
    """The local folder the release is assembled in, and the URL it goes to (None: local)."""
    dest = output_location(cfg)
    if not is_url(dest):
        return Path(dest), None
    from geodelta.pipelines.release.upload import work_dir_for

    return work_dir_for(cfg, dest), dest


def _stamp_hash(staging: Path) -> str | None:
    """The config hash a staging area was made from (None: no stamp yet)."""
    stamp = staging / "config.json"
    if not stamp.exists():
        return None
    return str(json.loads(stamp.read_text()).get("config_hash"))


def check_build(cfg: BuildConfig, mode: Mode = "fresh") -> None:
    """Refuse, before any work and without writing anything, a build that cannot go ahead.

    Args:
        cfg: the build config.
        mode: ``fresh``, ``resume`` or ``overwrite`` (see :func:`build`).

    Raises:
        RunnerError: the ``runner`` section cannot run.
        OutputError: the URL target breaks the release rules for ``mode``.
        BuildError: ``fresh`` and the release folder is not empty, or ``resume`` and its
            staging area (or its finished release) was made from another config; the output
            path is a file.
    """
    check_runner(cfg)
    release_dir, url = _release_dir(cfg)
    if url is not None:
        from geodelta.pipelines.release.upload import check_target

        check_target(url, cfg, mode)
    if release_dir.exists() and not release_dir.is_dir():
        raise BuildError(
            f"output {release_dir} is a file, not a folder; set output.dir (or --out) to a folder"
        )
    if mode == "fresh" and release_dir.exists() and any(release_dir.iterdir()):
        raise BuildError(
            f"{release_dir} is not empty; pass --resume to finish an interrupted build of the same "
            "config, or --overwrite to rebuild from scratch"
        )
    built_from = _stamp_hash(release_dir / STAGING)
    if mode == "resume" and built_from is not None and built_from != cfg.config_hash():
        raise BuildError(
            f"{release_dir / STAGING} was made from another config (hash {built_from[:12]}, now "
            f"{cfg.config_hash()[:12]}); use --overwrite to rebuild"
        )
    if mode == "resume" and built_from is None and (release_dir / MANIFEST).is_file():
        finished = read_manifest(release_dir).config_hash
        if finished != cfg.config_hash():
            raise BuildError(
                f"{release_dir} holds a finished release built from another config (hash "
                f"{finished[:12]}, now {cfg.config_hash()[:12]}); --resume only finishes a build "
                "of the same config: use --overwrite to replace it, or another output.dir"
            )


def _build_dir(release_dir: Path, mode: Mode) -> Path:
    """Where a build writes: the release folder, or (``overwrite`` of an existing one) a folder
    beside it, swapped in at the end, so a failed build leaves the old release intact."""
    from geodelta.pipelines.release.layout import OVERWRITE_NEXT, beside

    if mode == "overwrite" and release_dir.exists():
        return beside(release_dir, OVERWRITE_NEXT)
    return release_dir


def _prepare(release_dir: Path, cfg: BuildConfig, mode: Mode) -> Path:
    """Clear the folder a build writes (``overwrite``), then stamp its staging area.

    ``release_dir`` is the folder the build writes (see :func:`_build_dir`); :func:`check_build`
    has refused what cannot go ahead.
    """
    if mode == "overwrite" and release_dir.exists():
        shutil.rmtree(release_dir)
    staging = release_dir / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    stamp = {"config_hash": cfg.config_hash(), "code_version": __version__}
    write_atomic(staging / "config.json", json.dumps(stamp))
    return staging


def _planned(cfg: BuildConfig) -> list[TileJob]:
    jobs = plan(cfg)
    if not jobs:
        raise BuildError(
            "the AOI holds no whole cell; enlarge aoi, reduce grid.cell_size_px or set grid.keep: "
            "intersects"
        )
    return jobs


def _trusted_done(staging: Any, cell_ids: Collection[str] | None = None) -> set[str]:
    """The done cells a resumed build skips: a cell with a staged file that no longer matches
    the checksum written with it (of ``cell_ids``, or all) is forgotten, so it runs again and
    the corrupt file never reaches a shard."""
    import logging

    corrupt = staging.corrupt_cells(cell_ids)
    for cell_id, problem in sorted(corrupt.items()):
        logging.getLogger(__name__).warning("resume: cell %s runs again: %s", cell_id, problem)
    staging.forget_cells(corrupt)
    return set(staging.done_cells())


def _check_done(staging: Any, cell_ids: Collection[str]) -> None:
    missing = set(cell_ids) - staging.done_cells()
    if missing:
        raise IncompleteBuildError(
            f"{len(missing)} cells have no outcome after the run (e.g. {sorted(missing)[:3]}); "
            "re-run with --resume"
        )


def build_cells(cfg: BuildConfig, cells: Collection[str]) -> CellsResult:
    """Run the stages over some planned cells into the release's staging area (``resume``).

    For orchestrators that spread one build over tasks (one group of :func:`cell_groups`
    each): cells already marked done are skipped, a staging area of another config is
    refused. :func:`build` with ``mode="resume"`` then assembles the release.

    Returns:
        How many of the ``cells`` (ids of planned cells) were asked for, run now and done.

    Raises:
        BuildError: a cell is not in the plan (the config changed), or the staging area was
            made from another config. IncompleteBuildError: a cell has no outcome after the run.
        RunnerError: the ``runner`` section cannot run.
    """
    from geodelta.pipelines.release.lock import hold_output
    from geodelta.sources.profiles import apply_defaults

    cfg = apply_defaults(cfg)
    _register_secrets(cfg)
    check_runner(cfg)
    with hold_output(_release_dir(cfg)[0], shared=True):  # cell tasks side by side, no build
        return _build_cells(cfg, cells)


def _build_cells(cfg: BuildConfig, cells: Collection[str]) -> CellsResult:
    """:func:`build_cells` with the output folder's lock held (shared)."""
    from geodelta.pipelines.engines.run import run_cells
    from geodelta.pipelines.release.staging import Staging

    check_build(cfg, "resume")
    release_dir, _ = _release_dir(cfg)
    staging_root = _prepare(release_dir, cfg, "resume")
    staging = Staging(staging_root)
    wanted = set(cells)
    jobs = [j for j in _planned(cfg) if j.cell_id in wanted]
    if len(jobs) != len(wanted):
        raise BuildError(
            f"{len(wanted) - len(jobs)} of the cells are not in the plan (e.g. "
            f"{sorted(wanted - {j.cell_id for j in jobs})[:3]}); the config changed since they "
            "were planned"
        )
    done = _trusted_done(staging, wanted)
    todo = [j for j in jobs if j.cell_id not in done]
    counts = run_cells(todo, cfg, staging_root, code_version=__version__)
    _check_done(staging, wanted)
    return CellsResult(len(jobs), len(todo), len(jobs) - len(todo), counts.rows())


def build(
    cfg: BuildConfig,
    *,
    mode: Mode = "fresh",
    progress: bool = True,
    keep_staging: bool = False,
    on_stage: Callable[[str], None] | None = None,
    previous: str | Path | None = None,
) -> BuildResult:
    """Build the release a config describes: plan, stages, release, report (and upload).

    Args:
        cfg: the validated build config.
        mode: ``fresh`` (refuse a non-empty release dir), ``resume`` (skip finished cells) or
            ``overwrite`` (start from scratch).
        progress: show rich progress bars.
        keep_staging: keep ``.staging`` after a successful build (for a URL release: keep the
            whole local work folder).
        on_stage: called with each top-level stage name as it starts (for logs and tests).
        previous: an earlier release the report diffs against.

    Returns:
        The release directory, its manifest and timings.

    Raises:
        BuildError: see :func:`check_build`; no whole cell in the AOI; cells without an
            outcome after the run (IncompleteBuildError).
        OutputError: the URL target cannot be written.
        PlanError, CatalogError: the plan or the catalog fails.
        OutputBusyError: another build holds the output folder (names it).
    """
    from geodelta.pipelines.release.lock import hold_output, restore_swapped
    from geodelta.sources.profiles import apply_defaults

    cfg = apply_defaults(cfg)  # keys left out of the file, from the collections' profiles
    _register_secrets(cfg)
    check_runner(cfg)
    release_dir, _ = _release_dir(cfg)
    with hold_output(release_dir):  # one build per output folder
        restore_swapped(release_dir)  # an --overwrite that died between its two renames
        try:
            return _build(cfg, mode, progress, keep_staging, on_stage, previous)
        except GeodeltaError as exc:
            if mode == "overwrite":
                _advise_overwrite(exc)
            raise


#: The advice of a failed build to finish it; an --overwrite build is not resumed in place.
_RESUME_ADVICE = "re-run with --resume"


def _advise_overwrite(exc: GeodeltaError) -> None:
    """An --overwrite build works in a folder beside the old release, which --resume (aimed at
    the old release) does not finish: its errors advise --overwrite again."""
    exc.args = tuple(
        a.replace(_RESUME_ADVICE, "re-run with --overwrite") if isinstance(a, str) else a
        for a in exc.args
    )


def _build(
    cfg: BuildConfig,
    mode: Mode,
    progress: bool,
    keep_staging: bool,
    on_stage: Callable[[str], None] | None,
    previous: str | Path | None,
) -> BuildResult:
    """:func:`build` with the output folder's lock held."""
    from geodelta.pipelines.engines.run import run_cells
    from geodelta.pipelines.progress import Progress, Watcher
    from geodelta.pipelines.release.assemble import write_release
    from geodelta.pipelines.release.staging import Staging
    from geodelta.pipelines.report.render import write_report

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    check_build(cfg, mode)  # before any work
    preflight(cfg)  # the catalog, the collections, a sampled item of each: before any pixel
    release_dir, url = _release_dir(cfg)
    build_dir = _build_dir(release_dir, mode)
    staging_root = _prepare(build_dir, cfg, mode)
    staging = Staging(staging_root)

    def stage(name: str) -> None:
        if on_stage is not None:
            on_stage(name)

    stage("plan")
    t = time.perf_counter()
    jobs = _planned(cfg)
    done = _trusted_done(staging) if mode == "resume" else set()
    todo = [j for j in jobs if j.cell_id not in done]
    timings["plan"] = time.perf_counter() - t

    stage("process")
    t = time.perf_counter()
    with Progress(progress, "cells", len(jobs), len(jobs) - len(todo)) as bar:
        # Beam's workers report nothing back while they run: poll the completion markers.
        watcher = Watcher(staging, bar) if cfg.runner.name != "inprocess" else None
        try:
            run_cells(todo, cfg, staging_root, code_version=__version__, progress=bar.advance)
        finally:
            if watcher is not None:
                watcher.stop()
        bar.set(len(staging.done_cells()))
    _check_done(staging, {j.cell_id for j in jobs})
    _refuse_empty(staging, len(jobs))
    timings["process"] = time.perf_counter() - t

    stage("release")
    t = time.perf_counter()
    manifest = write_release(build_dir, cfg, staging, code_version=__version__)
    if not sum(manifest.splits.values()):  # every staged sample was dropped while sharding
        where = f"{build_dir} holds none; verify and release refuse it"
        raise EmptyReleaseError(_empty_message(Counter(manifest.quarantined), {}, len(jobs), where))
    timings["release"] = time.perf_counter() - t

    stage("report")
    t = time.perf_counter()
    write_report(build_dir, previous=previous)
    timings["report"] = time.perf_counter() - t
    if build_dir != release_dir:  # --overwrite: the new release replaces the old one now
        from geodelta.pipelines.release.lock import swap_in

        swap_in(build_dir, release_dir)
        staging_root = release_dir / STAGING

    if url is not None:
        from geodelta.pipelines.release.upload import upload_release

        stage("upload")
        t = time.perf_counter()
        upload_release(release_dir, url)  # raises before the work folder is removed
        timings["upload"] = time.perf_counter() - t
        if not keep_staging:
            shutil.rmtree(release_dir, ignore_errors=True)
            if cfg.output.work_dir is None:  # the default .geodelta-work/, once it is empty
                with contextlib.suppress(OSError):
                    release_dir.parent.rmdir()
    elif not keep_staging:
        shutil.rmtree(staging_root, ignore_errors=True)
    return BuildResult(
        release_dir=release_dir,
        manifest=manifest,
        cells=len(jobs),
        resumed_cells=len(jobs) - len(todo),
        seconds=time.perf_counter() - t_start,
        stage_seconds=timings,
        url=None if url is None else shown(url),
    )


def space_note(path: str | Path | None, cfg: BuildConfig | None = None) -> str:
    """What a 'no space left on device' message says: the space free where ``path`` is and,
    given the build's config, about how much the build needs (staged samples, then shards)."""
    where = Path(path) if path else (_release_dir(cfg)[0] if cfg is not None else Path.cwd())
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f"{shutil.disk_usage(probe).free / 1e6:.1f} MB free on {probe}'s filesystem"
    except OSError:
        free = "the free space is unknown"
    if cfg is None:
        return f"{free}; free space there, then run again"
    try:
        cells = len(plan(cfg))
    except GeodeltaError:
        cells = 0
    side = cfg.grid.cell_size_px  # a sample per cell: both dates' bands (16 bit), RGB, masks
    per_cell = side * side * (len(cfg.imagery.bands) * 2 * 2 + 2 * 3 + 4)
    need = 2 * cells * per_cell  # staged, then sharded
    return (
        f"the build needs about {need / 1e6:.1f} MB ({cells} cells), {free}; free space there "
        "or set output.dir (--out) elsewhere, then re-run with --resume"
    )


def funnel(manifest: ReleaseManifest) -> list[tuple[str, str, int]]:
    """(stage, reason, count) of the quarantined records, largest first."""
    rows = []
    for key, n in manifest.quarantined.items():
        stage_name, _, reason = key.partition(":")
        rows.append((stage_name, reason, n))
    return sorted(rows, key=lambda r: (-r[2], r[0], r[1]))


def summary_rows(result: BuildResult) -> list[tuple[str, str]]:
    """Label/value rows for the end-of-build summary table."""
    m = result.manifest
    rows = [
        ("release", result.location),
        ("dataset", f"{m.name} {m.version}"),
        ("cells planned", str(result.cells)),
        ("cells resumed", str(result.resumed_cells)),
        ("samples", str(result.samples)),
    ]
    rows += [(f"  {split}", str(n)) for split, n in sorted(m.splits.items())]
    rows.append(("quarantined", str(result.quarantined)))
    rows += [(f"  {s}:{r}", str(n)) for s, r, n in funnel(m)]
    rows.append(("shards", str(len(m.shards))))
    rows += [(f"time {k}", f"{v:.1f} s") for k, v in result.stage_seconds.items()]
    rows.append(("time total", f"{result.seconds:.1f} s"))
    counts = Counter(s.split for s in m.shards)
    rows.append(("shards per split", ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))))
    return rows


# -- reading and checking a release -----------------------------------------------------------


def require_release(path: str | Path, what: str | None = None) -> Path:
    """``path`` as a release folder; refuses one without ``manifest.json``.

    Args:
        path: the folder.
        what: how the caller names it in the message (e.g. ``--previous``).

    Raises:
        ReleaseError: no ``manifest.json`` there.
    """
    folder = Path(path)
    if not (folder / MANIFEST).exists():
        named = f"{what} {path}" if what else str(path)
        raise ReleaseError(f"{named} has no {MANIFEST}; is it a release folder?", path=str(folder))
    return folder


def verify(release: str | Path, *, strict: bool = False) -> VerifyResult:
    """Recompute every checksum and decode every member of a release (a folder or a URL).

    A URL other than ``file://`` is downloaded to a temporary folder first. The manifest is
    checked too (its checksum, its config's hash); files it does not list are notes, or
    problems with ``strict``.

    Returns:
        ``ok``, the samples verified and one line per problem.

    Raises:
        ReleaseError: a local folder without ``manifest.json``.
        OutputError: the URL cannot be read.
    """
    from geodelta.pipelines.release.verify import verify_release

    if is_url(str(release)):
        return verify_url(str(release), strict=strict)

    return verify_release(require_release(release), strict=strict)


def qa_balance(release_dir: str | Path) -> QABalance:
    """Yes/no and answer-class balance of a release's QA (render with :func:`format_balance`).

    Raises:
        ReleaseError: not a release folder.
    """
    from geodelta.pipelines.release.qa_balance import qa_balance as balance

    return balance(require_release(release_dir))


def report(
    release_dir: str | Path, *, previous: str | Path | None = None, max_gallery: int = 8
) -> Path:
    """(Re)write a release's HTML report (``report/index.html``), optionally with a diff.

    ``previous``: an earlier release to diff against (added/removed/changed samples);
    ``max_gallery``: samples shown in the gallery. Returns the HTML file's path.

    Raises:
        ReleaseError: a folder is not a release, or a file of it cannot be read.
    """
    from geodelta.pipelines.report.render import write_report

    require_release(release_dir, "RELEASE_DIR")
    if previous is not None:
        require_release(previous, "--previous")
    return write_report(release_dir, previous=previous, max_gallery=max_gallery)


# -- training ---------------------------------------------------------------------------------


def train_reference(
    release_dir: str | Path,
    cfg: Any = None,
    *,
    report: bool = True,
    previous: str | Path | None = None,
    code_version: str = __version__,
    on_progress: Callable[[str], None] | None = None,
) -> ReferenceMetrics:
    """Train and evaluate the reference model of a release and write it into the release.

    Writes ``reference/`` (weights, ``metrics.json``, model card), a ``disagreement`` column in
    ``samples.parquet`` and the manifest entries ``verify`` checks; then, with ``report``,
    re-renders ``report/index.html`` with the reference section.

    Args:
        release_dir: the release folder.
        cfg: a :class:`~geodelta.schemas.config.ReferenceConfig` (see :func:`reference_config`);
            None = the ``reference`` section of the release's config.
        report: re-render the report afterwards.
        previous: the release the re-rendered report diffs against.
        code_version: geodelta version (recorded).
        on_progress: called with one human-readable line per step and epoch.

    Raises:
        ReferenceError: no manifest, no or empty train/evaluation split, captions missing.
    """
    from geodelta.pipelines.report.render import write_report
    from geodelta.pipelines.training.reference import train_reference as train

    metrics = train(release_dir, cfg=cfg, code_version=code_version, on_progress=on_progress)
    if report:
        path = write_report(release_dir, previous=previous)
        if on_progress is not None:
            on_progress(f"report: {path}")
    return metrics


def train_baseline(
    shards: str | Path,
    out_dir: str | Path,
    *,
    epochs: int = 10,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    workers: int = 2,
    patch: int | None = None,
    base_channels: int = 16,
    threads: int | None = None,
    split: str = "train",
    threshold: float = 0.5,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[SavedModel, dict[str, dict[str, Any]]]:
    """Train the baseline change model (FC-Siam-diff) on a release's shards and save it.

    Args:
        shards: a release folder or its ``shards/`` folder.
        out_dir: parent folder of the saved model (one folder per weights hash).
        epochs, batch_size, lr, seed, workers, patch, base_channels, threads: the
            ``TrainConfig`` (``patch`` None = whole samples; ``threads`` None = torch's).
        split, threshold: the split trained on; the threshold of the reported metrics.
        on_epoch: called with (epoch index, mean loss) after each epoch.

    Returns:
        The saved model (weights, card) and the metrics per evaluated split.

    Raises:
        ShardError: no shards of ``split``. ModelError: a setting out of range.
    """
    from geodelta.annotators.models.change_model import TrainConfig
    from geodelta.pipelines.training.change_model import train_from_shards

    try:
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            workers=workers,
            patch=patch,
            base_channels=base_channels,
            threads=threads,
        )
    except ValueError as exc:
        raise ModelError(str(exc)) from exc
    return train_from_shards(
        shards,
        out_dir,
        cfg,
        split=split,
        threshold=threshold,
        code_version=__version__,
        on_epoch=on_epoch,
    )


def evaluate_baseline(
    weights: str | Path,
    shards: str | Path,
    *,
    split: str = "test",
    threshold: float = 0.5,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Score baseline weights on one split of a release (change-class metrics).

    Returns:
        ``{"model_id", "split", "threshold", **metrics}`` (JSON-ready).

    Raises:
        ShardError: no shards of ``split``. FileNotFoundError: no weights there.
    """
    from geodelta.annotators.models.baseline import BaselineChangeAnnotator
    from geodelta.pipelines.training.change_model import evaluate_on_shards
    from geodelta.pipelines.training.shards import find_shards

    found = find_shards(shards, split)
    if not found.urls:
        raise ShardError(f"no {split}-*.tar shards under {shards}")
    annotator = BaselineChangeAnnotator(weights, batch_size=batch_size)
    metrics = evaluate_on_shards(annotator, found.urls, threshold=threshold)
    out = {"model_id": annotator.model_id, "split": split, "threshold": threshold}
    return {**out, **metrics.as_dict()}


# -- publishing -------------------------------------------------------------------------------


def published_release(cfg: BuildConfig, releases_dir: str | Path) -> Path | None:
    """The published release of this config's version (None: the version is not published).

    Raises:
        ReleaseError: the version was published from another config (versions are never
            overwritten: bump ``version``).
    """
    target = Path(releases_dir) / release_name(cfg)
    if not target.exists():
        return None
    try:
        found: str | None = read_manifest(target).config_hash
    except ReleaseError:
        found = None
    if found != cfg.config_hash():
        raise ReleaseError(
            f"{target} already holds version {cfg.version} built from another config; "
            "bump 'version' (published versions are never overwritten)",
            path=str(target),
        )
    return target


def check_gate(
    release_dir: str | Path,
    previous: str | Path | None = None,
    *,
    releases_dir: str | Path | None = None,
) -> GateResult:
    """Check a release's reference metrics against the gate rules of its config.

    Args:
        release_dir: the release.
        previous: the release ``max_drop`` rules compare with; None = the release ``LATEST``
            of the folder of published releases ``releases_dir`` points at (another version).

    Raises:
        PublishError: the release or its metrics cannot be read.
    """
    from geodelta.pipelines.release.gate import check_gate as gate
    from geodelta.pipelines.release.publish import default_previous

    if previous is None and releases_dir is not None:
        previous = default_previous(release_dir, releases_dir)
    return gate(release_dir, previous)


def publish(
    release_dir: str | Path,
    releases_dir: str | Path,
    *,
    previous: str | Path | None = None,
    promote: bool = False,
) -> PublishResult:
    """Verify, gate, then atomically publish a release (``geodelta release``).

    The release is renamed into ``<releases_dir>/<name>-<version>`` and ``LATEST`` rewritten;
    publishing the same config again changes nothing but ``LATEST``.

    Args:
        release_dir, releases_dir: the built release; where published releases live (same
            filesystem).
        previous: the release the gate compares with (None: ``LATEST``'s, when another version).
        promote: make the release's reference change model the next version's baseline.

    Raises:
        GateError: the gate refused (nothing moved). PublishError: verification failed, the
            version was published from another config, or the move failed.
    """
    from geodelta.pipelines.release.publish import publish_release

    return publish_release(release_dir, releases_dir, previous=previous, promote=promote)
