"""The public API of geodelta's pipelines: build, plan, search, verify, report, train, publish.

The command line (:mod:`geodelta.pipelines.cli`) and the Airflow DAG (``dags/``) call only
this module (and :mod:`geodelta.errors`); so can a notebook or another orchestrator. Every
function loads what it needs when it is called, so importing this module stays cheap (no
Beam, torch, rasterio or GDAL).

A build is resumable and idempotent: every cell's outcome lands in the staging area
(``<release>/.staging``) with a completion marker, written atomically; ``resume`` skips the
cells that have one, and refuses a staging area made from another config. The release itself
is assembled from the staging area in place order, so a resumed build is byte-identical to an
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

from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geodelta import __version__
from geodelta._optional import missing_module_line
from geodelta.errors import BuildError, GeodeltaError, ModelError, ReleaseError
from geodelta.pipelines import build as _builder
from geodelta.pipelines.build import (
    BuildResult,
    CellsResult,
    EmptyReleaseError,
    IncompleteBuildError,
    funnel,
    summary_rows,
)
from geodelta.pipelines.engines.run import BreakerError, RunnerError
from geodelta.pipelines.release.gate import GateError, PublishError, format_rules
from geodelta.pipelines.release.layout import MANIFEST, STAGING, Mode, read_manifest
from geodelta.pipelines.release.publish import latest_release
from geodelta.pipelines.release.publish import promote_reference as promote
from geodelta.pipelines.release.qa_balance import format_balance
from geodelta.pipelines.release.upload import OutputError, is_url, verify_url
from geodelta.pipelines.stages.estimate import BudgetError, Estimate
from geodelta.pipelines.stages.plan import PlanCount, PlanError
from geodelta.pipelines.training.reference import ReferenceError, reference_config
from geodelta.pipelines.training.shards import ShardError
from geodelta.pipelines.verbosity import is_verbose, set_verbose
from geodelta.schemas import BuildConfig, ConfigError, TileJob, json_schemas
from geodelta.schemas import load_config as _load_config
from geodelta.secrets import redact
from geodelta.sources.catalog import CatalogError

if TYPE_CHECKING:
    from geodelta.annotators.models.change_model import SavedModel
    from geodelta.pipelines.release.drift import Drift
    from geodelta.pipelines.release.export_llava import ExportResult
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
    "BudgetError",
    "BuildConfig",
    "BuildError",
    "BuildResult",
    "CatalogError",
    "CellsResult",
    "ConfigError",
    "EmptyReleaseError",
    "Estimate",
    "GateError",
    "GeodeltaError",
    "IncompleteBuildError",
    "Mode",
    "ModelError",
    "OutputError",
    "PlanCount",
    "PlanError",
    "PublishError",
    "ReferenceError",
    "ReleaseError",
    "RunnerError",
    "ShardError",
    "build",
    "build_cells",
    "cell_groups",
    "check_budget",
    "check_build",
    "check_config",
    "check_from",
    "check_gate",
    "drift",
    "drift_lines",
    "estimate",
    "evaluate_baseline",
    "export",
    "format_balance",
    "format_rules",
    "funnel",
    "is_url",
    "is_verbose",
    "json_schemas",
    "latest_release",
    "load_config",
    "missing_module_line",
    "no_space",
    "output_location",
    "plan",
    "plan_count",
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
    "set_verbose",
    "snapshot",
    "space_note",
    "summary_rows",
    "train_baseline",
    "train_reference",
    "verify",
    "verify_url",
    "write_demo_catalog",
    "write_plan",
]


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


def write_demo_catalog(
    out_dir: str | Path, *, seed: int = 0, scale: float = 1.0, series: bool = False
) -> DemoCatalog:
    """Write the SYNTHETIC demo STAC catalog (scenes, land cover, truth) into ``out_dir``.

    ``scale``: AOI size factor (1 = the demo AOI); ``series``: five summers of imagery and
    yearly land cover (2018-2022) for sequence builds instead of the two of the pair demo.
    Returns where its catalog, AOI and truth are.
    """
    from geodelta.sources.demo.catalog import write_demo_catalog as write

    return write(out_dir, seed=seed, scale=scale, series=series)


def output_location(cfg: BuildConfig) -> str:
    """Where a config's release goes: ``output.dir`` resolved (a local folder or a URL)."""
    return _builder.output_location(cfg)


def release_name(cfg: BuildConfig) -> str:
    """The folder name a config's release is published under: ``<name>-<version>``."""
    return f"{cfg.name}-{cfg.version}"


def plan(cfg: BuildConfig) -> list[TileJob]:
    """The grid cells a config plans (reads no pixels).

    Raises:
        PlanError: the grid or the AOI cannot be planned (names the key).
    """
    return _builder.plan(cfg)


def plan_count(cfg: BuildConfig) -> PlanCount:
    """Cells a config plans per split and per zone, exact, without building cell objects.

    Raises:
        PlanError: the grid or the AOI cannot be planned.
    """
    from geodelta.pipelines.stages.plan import count_cells

    return count_cells(cfg)


def write_plan(cfg: BuildConfig, out: str | Path) -> int:
    """Stream the planned cells to a GeoParquet file in row groups (bounded memory); cells written.

    Raises:
        PlanError: the grid or the AOI cannot be planned.
    """
    from geodelta.pipelines.stages.plan_parquet import write_plan as write

    return write(cfg, out)


def cell_groups(cfg: BuildConfig, cells_per_task: int) -> list[list[str]]:
    """The planned cell ids in groups for separate tasks: per AOI region, ``cells_per_task`` each.

    A group never mixes two regions; regions come in sorted order, cells in plan order.

    Raises:
        BuildError: the AOI holds no whole cell.
        PlanError: the grid or the AOI cannot be planned.
    """
    by_region = _builder.cells_by_region(cfg)  # streamed: no TileJob per cell
    return [
        ids[i : i + cells_per_task]
        for _, ids in sorted(by_region.items())
        for i in range(0, len(ids), cells_per_task)
    ]


def search(
    cfg: BuildConfig, *, max_cells: int | None = None, read_clear: bool = False
) -> SearchReport:
    """Dry run of search and pairing: per cell the candidates, the chosen pair, bytes to read.

    ``max_cells``: cells to search, evenly spaced in plan order (None = every planned one;
    the report says when it sampled); ``read_clear``: read the classification band for
    pixel-level clear fractions, so paired and quarantined counts are the build's.

    Raises:
        PlanError: the plan fails. CatalogError: the catalog cannot be searched.
    """
    from geodelta.pipelines.stages.search import dry_run

    return dry_run(cfg, max_cells=max_cells, read_clear=read_clear)


def estimate(cfg: BuildConfig, *, sample_catalog: bool = True) -> Estimate:
    """What a build of ``cfg`` will cost, before any work (``geodelta plan --estimate``).

    Cells (exact, counted without cell objects), plan blocks and STAC searches, bytes to read
    (cell windows at native resolution and, where the catalog can be read, the COG tiles of a
    sampled item), CPU-hours at the per-tile cost ``benchmarks/bench_build.py`` measured, the
    output size, the LLM tokens and dollars at the configured prices, and the ``budget``
    limits exceeded; every figure an estimate with its basis (``Estimate.lines()``,
    ``Estimate.as_dict()``).

    ``sample_catalog``: read a sampled item's headers (False: the config alone, no network).

    Raises:
        PlanError: the grid or the AOI cannot be planned.
    """
    from geodelta.pipelines.stages.estimate import estimate as run
    from geodelta.sources.profiles import apply_defaults

    return run(apply_defaults(cfg), sample_catalog=sample_catalog)


def check_budget(cfg: BuildConfig) -> Estimate:
    """Refuse a build whose estimate exceeds a ``budget`` limit (what :func:`build` checks
    first unless ``confirm``): counts the cells, reads nothing, no network.

    Returns:
        The estimate, within every limit.

    Raises:
        BudgetError: one line naming each limit exceeded (count, estimate, limit, key) and
            ``--yes``. PlanError: the grid or the AOI cannot be planned.
    """
    from geodelta.pipelines.stages.estimate import check_budget as check
    from geodelta.sources.profiles import apply_defaults

    return check(apply_defaults(cfg))


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
    return _builder.preflight(cfg)


def snapshot(cfg: BuildConfig, out: str | Path) -> tuple[int, str]:
    """Write the search snapshot of a build without building: the STAC items every search the
    build would run returns (per plan block: the imagery of both windows and the label
    collection), no pixel read, to ``out`` (a local path or an fsspec URL) in stac-geoparquet
    (:mod:`geodelta.sources.snapshot`). Build from it with ``catalog.kind: snapshot``.

    Returns:
        (items written, sha256 of the file).

    Raises:
        CatalogError: the catalog cannot be opened or searched.
        BuildError: the AOI holds no whole cell.
    """
    from geodelta.pipelines.release.snapshot import make_snapshot
    from geodelta.sources.profiles import apply_defaults

    cfg = apply_defaults(cfg)
    _builder._register_secrets(cfg)
    return make_snapshot(cfg, out)


def drift(release: str | Path, *, catalog: str | None = None) -> Drift:
    """Run a release's searches again and compare with its snapshot (``geodelta drift``): items
    added, removed, changed (which fields) and the samples affected
    (:func:`geodelta.pipelines.release.drift.release_drift`).

    Raises:
        ReleaseError: not a release, no snapshot in it. SnapshotError, CatalogError: its
            snapshot is unusable, the catalog cannot be searched.
    """
    from geodelta.pipelines.release.drift import release_drift

    return release_drift(release, catalog=catalog)


def check_from(cfg: BuildConfig, previous: str | Path) -> str:
    """What ``build --check --from PREVIOUS`` checks: the refusals of ``build --from`` (not a
    release, another dataset name, other sample-shaping config sections), reading only the
    previous release's manifest and tables; one line saying what held.

    Raises:
        BuildError: ``previous`` cannot be built from (names the differing sections).
    """
    from geodelta.pipelines.release.incremental import open_previous
    from geodelta.sources.profiles import apply_defaults

    prev = open_previous(previous, apply_defaults(cfg))
    m = prev.manifest
    return (
        f"from: {m.name} {m.version} ({len(prev.samples)} samples) has this config's "
        "sample-shaping sections; its unchanged samples can be reused"
    )


def drift_lines(found: Drift) -> list[str]:
    """The short text of a drift: counts, then the first changes."""
    from geodelta.pipelines.release.drift import drift_lines as lines

    return lines(found)


# -- build ------------------------------------------------------------------------------------


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
    _builder.check_build(cfg, mode)


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
    return _builder.build_cells(cfg, cells)


def build(
    cfg: BuildConfig,
    *,
    mode: Mode = "fresh",
    progress: bool = True,
    keep_staging: bool = False,
    on_stage: Callable[[str], None] | None = None,
    previous: str | Path | None = None,
    confirm: bool = False,
    from_release: str | Path | None = None,
) -> BuildResult:
    """Build the release a config describes: plan, stages, release, report (and upload).

    First, before any work and without writing anything, the estimate is compared with the
    config's ``budget`` limits (:func:`check_budget`); ``confirm`` builds anyway (``--yes``).
    A ``resume`` of a build of this config that has started (its staging area is stamped, e.g.
    by :func:`build_cells`) is not asked again.

    Args:
        cfg: the validated build config.
        mode: ``fresh`` (refuse a non-empty release dir), ``resume`` (skip finished cells) or
            ``overwrite`` (start from scratch).
        progress: show rich progress bars.
        keep_staging: keep ``.staging`` after a successful build (for a URL release: keep the
            whole local work folder).
        on_stage: called with each top-level stage name as it starts (for logs and tests).
        previous: an earlier release the report diffs against.
        confirm: go ahead even when the estimate exceeds a ``budget`` limit.
        from_release: a previous release of the same dataset (a local folder) whose samples
            with unchanged inputs are copied instead of processed (``build --from``; see
            :mod:`geodelta.pipelines.release.incremental`).

    Returns:
        The release directory, its manifest and timings.

    Raises:
        BudgetError: the estimate exceeds a ``budget`` limit and not ``confirm``.
        BuildError: see :func:`check_build`; no whole cell in the AOI; cells without an
            outcome after the run (IncompleteBuildError); ``from_release`` is not a release,
            is one of another dataset, or differs in sample-shaping config sections.
        OutputError: the URL target cannot be written.
        PlanError, CatalogError: the plan or the catalog fails.
        OutputBusyError: another build holds the output folder (names it).
    """
    return _builder.build(
        cfg,
        mode=mode,
        progress=progress,
        keep_staging=keep_staging,
        on_stage=on_stage,
        previous=previous,
        confirm=confirm,
        from_release=from_release,
    )


def no_space(exc: BaseException) -> OSError | None:
    """The 'no space left on device' error in ``exc``'s chain (Beam wraps worker errors)."""
    from geodelta._io import no_space as find

    return find(exc)


def space_note(path: str | Path | None, cfg: BuildConfig | None = None) -> str:
    """What a 'no space left on device' message says: the space free where ``path`` is and,
    given the build's config, about how much the build needs (staged samples, then shards)."""
    return _builder.space_note(path, cfg)


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
    from geodelta.pipelines.release.collection import refresh_collection
    from geodelta.pipelines.report.render import write_report
    from geodelta.pipelines.training.reference import train_reference as train

    metrics = train(release_dir, cfg=cfg, code_version=code_version, on_progress=on_progress)
    refresh_collection(release_dir)  # collection.json lists the reference model's files
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
    device: str = "cpu",
) -> tuple[SavedModel, dict[str, dict[str, Any]]]:
    """Train the baseline change model (FC-Siam-diff) on a release's shards and save it.

    Args:
        shards: a release folder or its ``shards/`` folder.
        out_dir: parent folder of the saved model (one folder per weights hash).
        epochs, batch_size, lr, seed, workers, patch, base_channels, threads: the
            ``TrainConfig`` (``patch`` None = whole samples; ``threads`` None = torch's).
        split, threshold: the split trained on; the threshold of the reported metrics.
        on_epoch: called with (epoch index, mean loss) after each epoch.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when torch sees one) for training.

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
        device=device,
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


def export(
    release_dir: str | Path, out_dir: str | Path, *, fmt: str = "llava", overwrite: bool = False
) -> ExportResult:
    """Export a release as instruction-tuning conversations (``geodelta export``; the format
    is documented in :mod:`geodelta.pipelines.release.export_llava` and the export's README).

    Raises:
        ReleaseError: not a release, an unknown format, or a non-empty ``out_dir`` without
            ``overwrite``.
    """
    from geodelta.pipelines.release.export_llava import export_release

    return export_release(release_dir, out_dir, fmt=fmt, overwrite=overwrite)
