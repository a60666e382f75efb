"""The build orchestration behind :func:`geodelta.pipelines.api.build` and
:func:`~geodelta.pipelines.api.build_cells`: the checks before any work, the staging area's
stamp, the resumable run of the cells, the refusal of an empty release, the ``--overwrite``
swap, the upload of a URL release, and the end-of-build summary.

Callers go through :mod:`geodelta.pipelines.api` (which re-exports the result and error classes
defined here); this module never imports it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geodelta import __version__
from geodelta._heap import frozen_heap, refreeze
from geodelta.errors import BuildError, GeodeltaError
from geodelta.pipelines.engines.run import check_remote, check_runner
from geodelta.pipelines.progress import Progress
from geodelta.pipelines.release.layout import MANIFEST, STAGING, Mode, read_manifest
from geodelta.pipelines.release.preload import PLOT_MODULES, Preload, preload_modules
from geodelta.pipelines.release.sidecar import Sidecar
from geodelta.pipelines.release.upload import is_url, shown
from geodelta.schemas import BuildConfig, ReleaseManifest, TileJob
from geodelta.secrets import install_log_redaction, register_env_secret

__all__ = [
    "BuildResult",
    "CellsResult",
    "EmptyReleaseError",
    "IncompleteBuildError",
    "build",
    "build_cells",
    "cells_by_region",
    "check_build",
    "funnel",
    "output_location",
    "plan",
    "planned",
    "preflight",
    "space_note",
    "summary_rows",
]


class IncompleteBuildError(BuildError):
    """Cells without an outcome after the engine ran; a re-run with ``resume`` finishes them."""


class EmptyReleaseError(BuildError):
    """A build that yields 0 samples: an error, not an empty release (names the top reasons)."""


#: Quarantine reasons named in :class:`EmptyReleaseError`'s message, most frequent first.
_EMPTY_TOP_REASONS = 5


def _empty_message(
    counts: Counter[str], examples: dict[str, str], cells: int, where: str, retry: str
) -> str:
    """One line: 0 samples, the top quarantine reasons (count, one example), what to do
    (``retry``: the option that builds again, ``--resume`` or ``--overwrite``)."""
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_EMPTY_TOP_REASONS]
    parts = [
        f"{reason} x{n}" + (f" (e.g. {examples[reason]})" if reason in examples else "")
        for reason, n in top
    ]
    return (
        f"the build produced 0 samples from {cells} cells ({where}); a build that yields "
        f"nothing is an error, not a release. Top quarantine reasons: "
        f"{'; '.join(parts) or 'none recorded'}. Fix the cause, then re-run with {retry}"
    )


def _refuse_empty(staging: Any, cells: int, retry: str = "--resume") -> None:
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
    raise EmptyReleaseError(
        _empty_message(counts, examples, cells, "no release was written", retry)
    )


def _register_secrets(cfg: BuildConfig) -> None:
    """The secrets this build may meet, by value, in this process (:mod:`geodelta.secrets`):
    the API key of the variable ``annotation.openai.api_key_env`` names and the Planetary
    Computer subscription key; every log record is redacted from now on. Worker processes
    register what they read themselves."""
    install_log_redaction()
    register_env_secret(cfg.annotation.openai.api_key_env)
    register_env_secret("PC_SDK_SUBSCRIPTION_KEY")


# -- plans ------------------------------------------------------------------------------------


def output_location(cfg: BuildConfig) -> str:
    """Where a config's release goes: ``output.dir`` resolved (a local folder or a URL)."""
    return cfg.resolve(cfg.output.dir)


def plan(cfg: BuildConfig) -> list[TileJob]:
    """The grid cells a config plans, with the collection profiles' defaults filled in."""
    from geodelta.pipelines.stages.plan import plan_jobs
    from geodelta.sources.profiles import apply_defaults

    return plan_jobs(apply_defaults(cfg))


def _no_cells() -> BuildError:
    return BuildError(
        "the AOI holds no whole cell; enlarge aoi, reduce grid.cell_size_px or set grid.keep: "
        "intersects"
    )


def planned(cfg: BuildConfig) -> list[TileJob]:
    """:func:`plan`, refusing an AOI that holds no whole cell (:class:`BuildError`)."""
    jobs = plan(cfg)
    if not jobs:
        raise _no_cells()
    return jobs


def cells_by_region(cfg: BuildConfig) -> dict[str, list[str]]:
    """The planned cell ids per AOI region, in cell-id order, streamed from the plan (no
    TileJob is made); refuses an AOI that holds no whole cell (:class:`BuildError`)."""
    from geodelta.pipelines.stages.plan import iter_cells
    from geodelta.sources.profiles import apply_defaults

    by_region: dict[str, list[str]] = {}
    for cell_id, _, region in iter_cells(apply_defaults(cfg)):
        by_region.setdefault(region, []).append(cell_id)
    if not by_region:
        raise _no_cells()
    return by_region


def _first_job(cfg: BuildConfig) -> TileJob:
    """The plan's first cell (in cell-id order), planning no other column of cells."""
    from geodelta.pipelines.stages.blocks import job_of
    from geodelta.pipelines.stages.plan import iter_cells

    for cell_id, _, region in iter_cells(cfg):
        return job_of(cfg, cell_id, region)
    raise _no_cells()


def preflight(cfg: BuildConfig) -> list[str]:
    """The checks of :func:`geodelta.pipelines.api.preflight`: the plan (counted, not built),
    then the sources."""
    from geodelta.pipelines.stages.plan import count_cells
    from geodelta.sources.preflight import check_sources
    from geodelta.sources.profiles import apply_defaults

    cfg = apply_defaults(cfg)
    first = _first_job(cfg)
    lines = [f"aoi: {count_cells(cfg).total} cells planned (first {first.cell_id})"]
    return lines + check_sources(cfg, first)


def _todo_blocks(
    cfg: BuildConfig, done: Collection[str], wanted: Collection[str] | None = None
) -> tuple[list[Any], int, set[str]]:
    """The plan's blocks (:mod:`~geodelta.pipelines.stages.blocks`) without the ``done`` cells,
    the number of planned cells, and (given ``wanted``) the ids found in the plan.

    Streams the plan (one block column at a time); holds one record per block left to run, never
    one per cell. ``wanted``: only those cells (the blocks holding none are skipped unexpanded).
    """
    from geodelta.pipelines.stages.blocks import CellBlock, iter_blocks, restrict
    from geodelta.pipelines.stages.plan import parse_cell_id

    bc = cfg.runner.block_cells
    places: set[tuple[int, bool, int, int]] | None = None
    keep = set(wanted or ())
    if wanted is not None:
        places = set()
        for cell_id in keep:
            try:
                c = parse_cell_id(cell_id)
            except ValueError:
                continue  # not a cell id: reported as not in the plan
            places.add((c.zone, c.north, c.col // bc, c.row // bc))
    todo: list[Any] = []
    cells = 0
    found: set[str] = set()
    for whole in iter_blocks(cfg):
        block: CellBlock | None = whole
        if places is not None:
            if (whole.zone, whole.north, whole.bcol, whole.brow) not in places:
                continue
            block = restrict(whole, keep.__contains__)
        if block is None:
            continue
        if places is not None:
            found.update(block.cell_ids())
        cells += block.cells
        if done:
            block = restrict(block, lambda c: c not in done)
        if block is not None:
            todo.append(block)
    return todo, cells, found


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
    incremental: dict[str, Any] | None = None
    """``--from``: the previous release and the reused / new / changed / retried / removed
    cell counts (:mod:`geodelta.pipelines.release.incremental`); None without it."""
    drift: dict[str, Any] | None = None
    """``--from``: the catalog drift since the previous release (``drift.json``,
    :mod:`geodelta.pipelines.release.drift`); None without it or without its snapshot."""

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


class _CellsBar(Progress):
    """The cells' bar; the first cell done (by the engine's count or the markers) calls
    ``first``: the preload (:mod:`~geodelta.pipelines.release.preload`) starts then."""

    def __init__(self, first: Callable[[], None], *args: Any) -> None:
        super().__init__(*args)
        self._first, self._start = first, self.completed

    def advance(self, n: int) -> None:
        super().advance(n)
        self._first()

    def set(self, completed: int) -> None:
        super().set(completed)
        if completed > self._start:
            self._first()


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


def _staging_root(cfg: BuildConfig, build_dir: Path) -> str | Path:
    """Where a build's staging area is: ``output.staging`` (a local folder or a URL), else
    ``.staging/`` in the folder the release is assembled in (``build_dir``)."""
    if cfg.output.staging is None:
        return build_dir / STAGING
    where = cfg.resolve(cfg.output.staging)
    return where if is_url(where) else Path(where)


def _stamp_hash(staging: str | Path) -> str | None:
    """The config hash a staging area (a folder or a URL) was made from (None: no stamp yet).
    Creates nothing."""
    from geodelta.pipelines.release.staging import STAMP_FILE, Staging, local_root

    local = local_root(staging)
    if local is None:
        raw = Staging(staging).get_file(STAMP_FILE)
    else:
        raw = (local / STAMP_FILE).read_bytes() if (local / STAMP_FILE).is_file() else None
    return None if raw is None else str(json.loads(raw).get("config_hash"))


def _check_stores(cfg: BuildConfig) -> None:
    """Refuse an object store that does not answer (or lacks the bucket) for ``output.dir`` or
    ``output.staging``: one line naming the URL, before any work."""
    from geodelta.pipelines.release.upload import check_reachable

    dest = output_location(cfg)
    if is_url(dest):
        check_reachable(dest, "output.dir")
    if cfg.output.staging is not None and is_url(cfg.output.staging):
        check_reachable(cfg.resolve(cfg.output.staging), "output.staging")


def _places(cfg: BuildConfig) -> list[str | Path]:
    """The locations a build locks besides its local release folder: ``output.staging`` when
    set, and the release URL (a lease on an object store, a flock beside a local folder)."""
    out: list[str | Path] = []
    if cfg.output.staging is not None:
        out.append(_staging_root(cfg, Path()))
    dest = output_location(cfg)
    if is_url(dest):
        out.append(dest)
    return out


def _drop_staging(cfg: BuildConfig, staging_root: str | Path) -> None:
    """Remove a finished build's staging area (``output.staging``: only what a build writes)."""
    from geodelta.pipelines.release.staging import Staging

    if cfg.output.staging is None:
        shutil.rmtree(staging_root, ignore_errors=True)
    else:
        Staging(staging_root).remove()


def check_series(cfg: BuildConfig) -> None:
    """Refuse a ``time.series`` build that cannot work: sequences are labelled by a yearly
    land-cover map per date (``labels.kind: landcover``)."""
    if cfg.time.series is not None and cfg.labels.kind != "landcover":
        raise BuildError(
            f"time.series needs labels.kind: landcover (a land-cover map per date), not "
            f"{cfg.labels.kind!r}; set labels.kind: landcover or remove time.series"
        )


def check_build(cfg: BuildConfig, mode: Mode = "fresh") -> None:
    """What :func:`geodelta.pipelines.api.check_build` refuses (see there); writes nothing."""
    check_series(cfg)
    check_runner(cfg)
    check_remote(cfg)  # a remote engine: staging and catalog at URLs, the scheduler answers
    _check_stores(cfg)
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
    staging = _staging_root(cfg, release_dir)
    built_from = _stamp_hash(staging)
    if mode == "fresh" and cfg.output.staging is not None and built_from is not None:
        raise BuildError(
            f"output.staging {shown(str(staging))} holds the staging area of a build (config hash "
            f"{built_from[:12]}); pass --resume to finish it, or --overwrite to clear it and "
            "rebuild"
        )
    if mode == "resume" and built_from is not None and built_from != cfg.config_hash():
        raise BuildError(
            f"{shown(str(staging))} was made from another config (hash {built_from[:12]}, now "
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


def _prepare(release_dir: Path, cfg: BuildConfig, mode: Mode) -> str | Path:
    """Clear the folder a build writes and an ``output.staging`` area (``overwrite``), then
    stamp the staging area; returns its root (a folder or a URL).

    ``release_dir`` is the folder the build writes (see :func:`_build_dir`); :func:`check_build`
    has refused what cannot go ahead.
    """
    from geodelta.pipelines.release.staging import STAMP_FILE, Staging

    if mode == "overwrite" and release_dir.exists():
        shutil.rmtree(release_dir)
    root = _staging_root(cfg, release_dir)
    staging = Staging(root)
    if mode == "overwrite" and cfg.output.staging is not None:
        staging.clear()
    stamp = {"config_hash": cfg.config_hash(), "code_version": __version__}
    staging.put_file(STAMP_FILE, json.dumps(stamp))
    return root


def _trusted_done(staging: Any, cell_ids: Collection[str] | None = None) -> set[str]:
    """The done cells a resumed build skips: a cell with a staged file that no longer matches
    the checksum written with it (of ``cell_ids``, or all) is forgotten, so it runs again and
    the corrupt file never reaches a shard."""
    import logging

    from geodelta.pipelines.release.staging import LINKED_CELL

    corrupt = staging.corrupt_cells(cell_ids)
    for cell_id, problem in sorted(corrupt.items()):  # a linked cell: decided again, quietly
        level = logging.DEBUG if problem == LINKED_CELL else logging.WARNING
        logging.getLogger(__name__).log(level, "resume: cell %s runs again: %s", cell_id, problem)
    staging.forget_cells(corrupt)
    return set(staging.done_cells())


def _check_done(staging: Any, cell_ids: Iterable[str], retry: str = "--resume") -> None:
    """Refuse a run that left cells of ``cell_ids`` (a stream, in cell-id order, or a set)
    without a completion marker. Holds the set of done cell ids (one string per done cell),
    never the plan."""
    done = staging.done_cells()
    missing = 0
    examples: list[str] = []
    for cell_id in cell_ids:
        if cell_id not in done:
            missing += 1
            examples = sorted([*examples, cell_id])[:3]
    if missing:
        raise IncompleteBuildError(
            f"{missing} cells have no outcome after the run (e.g. {examples}); re-run with {retry}"
        )


def _plan_ids(cfg: BuildConfig) -> Iterator[str]:
    """The planned cell ids, streamed in cell-id order."""
    from geodelta.pipelines.stages.plan import iter_cells

    return (cell_id for cell_id, _, _ in iter_cells(cfg))


def build_cells(cfg: BuildConfig, cells: Collection[str]) -> CellsResult:
    """Some planned cells into the staging area: see :func:`geodelta.pipelines.api.build_cells`."""
    from geodelta.pipelines.release.lock import hold_output, hold_place
    from geodelta.sources.profiles import apply_defaults

    cfg = apply_defaults(cfg)
    _register_secrets(cfg)
    check_runner(cfg)
    _check_stores(cfg)  # before a lease is taken there
    with contextlib.ExitStack() as held:  # cell tasks side by side, no build
        held.enter_context(hold_output(_release_dir(cfg)[0], shared=True))
        for place in _places(cfg):
            held.enter_context(hold_place(place, shared=True))
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
    _, _, found = _todo_blocks(cfg, (), wanted)
    if len(found) != len(wanted):
        raise BuildError(
            f"{len(wanted) - len(found)} of the cells are not in the plan (e.g. "
            f"{sorted(wanted - found)[:3]}); the config changed since they were planned"
        )
    done = _trusted_done(staging, wanted)
    todo, _, _ = _todo_blocks(cfg, done, wanted)
    n_todo = sum(block.cells for block in todo)
    from geodelta.pipelines.release.snapshot import snapshot_first

    work_cfg = snapshot_first(cfg, staging, staging_root, reuse=True)  # one for every task
    counts = run_cells(todo, work_cfg, staging_root, code_version=__version__)
    _check_done(staging, wanted)
    return CellsResult(len(found), n_todo, len(found) - n_todo, counts.rows())


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
    """Build the release a config describes: see :func:`geodelta.pipelines.api.build`."""
    from geodelta.pipelines.release.lock import hold_output, hold_place, restore_swapped
    from geodelta.sources.profiles import apply_defaults

    cfg = apply_defaults(cfg)  # keys left out of the file, from the collections' profiles
    _register_secrets(cfg)
    check_series(cfg)
    check_runner(cfg)
    if not confirm and not _resuming(cfg, mode):  # the budget, before anything is written
        from geodelta.pipelines.stages.estimate import check_budget

        check_budget(cfg)
    _check_stores(cfg)  # before a lease is taken there
    release_dir, _ = _release_dir(cfg)
    with contextlib.ExitStack() as held:  # one build per output folder (and staging area)
        held.enter_context(hold_output(release_dir))
        for place in _places(cfg):
            held.enter_context(hold_place(place))
        restore_swapped(release_dir)  # an --overwrite that died between its two renames
        held.enter_context(frozen_heap())  # no full GC pass over what was alive before
        side = held.enter_context(Sidecar(cfg, meanwhile=PLOT_MODULES))
        return _build(cfg, mode, progress, keep_staging, on_stage, previous, from_release, side)


def _resuming(cfg: BuildConfig, mode: Mode) -> bool:
    """``resume`` of a build of this config that has started (its staging area is stamped):
    the budget was accepted when it started (an orchestrator's cell tasks, or ``--yes``)."""
    if mode != "resume":
        return False
    return _stamp_hash(_staging_root(cfg, _release_dir(cfg)[0])) == cfg.config_hash()


def _build(
    cfg: BuildConfig,
    mode: Mode,
    progress: bool,
    keep_staging: bool,
    on_stage: Callable[[str], None] | None,
    previous: str | Path | None,
    from_release: str | Path | None,
    side: Sidecar,
) -> BuildResult:
    """:func:`build` with the output folder's lock held."""
    from geodelta.pipelines.engines.run import run_cells
    from geodelta.pipelines.progress import Watcher
    from geodelta.pipelines.release.assemble import write_release
    from geodelta.pipelines.release.linked import linked_samples
    from geodelta.pipelines.release.staging import Staging
    from geodelta.pipelines.report.render import write_report

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    check_build(cfg, mode)  # before any work
    prev = None
    if from_release is not None:  # --from: refused before anything is written
        from geodelta.pipelines.release.incremental import open_previous

        prev = open_previous(from_release, cfg)
    preflight(cfg)  # the catalog, the collections, a sampled item of each: before any pixel
    release_dir, url = _release_dir(cfg)
    build_dir = _build_dir(release_dir, mode)
    staging_root = _prepare(build_dir, cfg, mode)
    staging = Staging(staging_root)
    # how to build again after a failure: --overwrite works in a folder beside the old release,
    # which --resume (aimed at the old release) would not finish
    retry = "--overwrite" if mode == "overwrite" else "--resume"

    def stage(name: str) -> None:
        if on_stage is not None:
            on_stage(name)

    stage("plan")
    t = time.perf_counter()
    done = _trusted_done(staging) if mode == "resume" else set()
    from geodelta.pipelines.release.snapshot import snapshot_first

    work_cfg = snapshot_first(cfg, staging, staging_root, reuse=mode == "resume")
    incremental = None
    if prev is not None:  # unchanged samples copied from it, their cells marked done
        from geodelta.pipelines.release.incremental import reuse_previous

        stage("reuse")
        t_reuse = time.perf_counter()
        incremental = reuse_previous(  # the pair stage on the items the workers will see
            cfg, prev, staging, done, _plan_ids(cfg), code_version=__version__, search=work_cfg
        )
        done = done | incremental.reused_cells
        timings["reuse"] = time.perf_counter() - t_reuse
    todo, n_cells, _ = _todo_blocks(cfg, done)  # blocks, expanded into cells on the workers
    if not n_cells:
        raise _no_cells()
    n_todo = sum(block.cells for block in todo)
    timings["plan"] = time.perf_counter() - t - timings.get("reuse", 0.0)

    stage("process")
    t = time.perf_counter()
    side.start(n_todo)  # imports GX and matplotlib in a child process (:mod:`.release.sidecar`)
    warm = Preload(preload_modules(cfg))  # matplotlib, beside an engine's cells
    with _CellsBar(warm.start, progress, "cells", n_cells, n_cells - n_todo) as bar:
        # Beam's workers report nothing back while they run: poll the completion markers.
        watcher = Watcher(staging, bar) if cfg.runner.name != "inprocess" else None
        try:
            run_cells(
                todo,
                work_cfg,
                staging_root,
                code_version=__version__,
                progress=bar.advance,
                retry=retry,
            )
        finally:
            if watcher is not None:
                watcher.stop()
            warm.join()  # no import left running beside the next stages (or the error)
            refreeze()  # what those imports made, out of the collector's full passes too
        bar.set(len(staging.done_cells()))
    _check_done(staging, _plan_ids(cfg), retry)
    _refuse_empty(staging, n_cells, retry)
    timings["process"] = time.perf_counter() - t

    stage("release")
    t = time.perf_counter()
    with linked_samples(prev, incremental) as linked:  # --from: read from the previous shards
        manifest = write_release(
            build_dir,
            cfg,
            staging,
            code_version=__version__,
            incremental=None if incremental is None else incremental.as_dict(),
            drift=None if incremental is None else incremental.drift_dict(),
            linked=linked,
            checkpoint=side.run_checkpoint,
        )
    if not sum(manifest.splits.values()):  # every staged sample was dropped while sharding
        where = f"{build_dir} holds none; verify and release refuse it"
        raise EmptyReleaseError(
            _empty_message(Counter(manifest.quarantined), {}, n_cells, where, retry)
        )
    timings["release"] = time.perf_counter() - t

    stage("report")
    t = time.perf_counter()
    # no decode repeated of the bytes whose decode checks passed on the workers (the cell
    # markers), nor, with --from, of those the previous report/verified.json vouches for
    trusted = staging.decode_digests()
    carried = None
    if incremental is not None:  # and the shards copied whole are not read again
        trusted |= incremental.trusted
        carried = incremental.carried_shards
    write_report(build_dir, previous=previous, trusted=trusted, carried=carried, sidecar=side)
    timings["report"] = time.perf_counter() - t
    if build_dir != release_dir:  # --overwrite: the new release replaces the old one now
        from geodelta.pipelines.release.lock import swap_in

        swap_in(build_dir, release_dir)
        staging_root = _staging_root(cfg, release_dir)

    if url is not None:
        from geodelta.pipelines.release.upload import upload_release

        stage("upload")
        t = time.perf_counter()
        upload_release(release_dir, url)  # raises before the work folder is removed
        timings["upload"] = time.perf_counter() - t
        if not keep_staging:
            if cfg.output.staging is not None:
                _drop_staging(cfg, staging_root)
            shutil.rmtree(release_dir, ignore_errors=True)
            if cfg.output.work_dir is None:  # the default .geodelta-work/, once it is empty
                with contextlib.suppress(OSError):
                    release_dir.parent.rmdir()
    elif not keep_staging:
        _drop_staging(cfg, staging_root)
    return BuildResult(
        release_dir=release_dir,
        manifest=manifest,
        cells=n_cells,
        # reused_cells: the cells --from marked done (reused samples and carried quarantines)
        resumed_cells=n_cells - n_todo - len(incremental.reused_cells if incremental else ()),
        seconds=time.perf_counter() - t_start,
        stage_seconds=timings,
        url=None if url is None else shown(url),
        incremental=None if incremental is None else incremental.as_dict(),
        drift=None if incremental is None else incremental.drift_dict(),
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
        from geodelta.pipelines.stages.plan import count_cells
        from geodelta.sources.profiles import apply_defaults

        cells = count_cells(apply_defaults(cfg)).total
    except GeodeltaError:
        cells = 0
    from geodelta.pipelines.stages.estimate import sample_bytes

    need = 2 * cells * sample_bytes(cfg)  # a sample per cell, staged, then sharded
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
    ]
    inc = result.incremental
    if inc is not None:
        rows.append(("from", f"{inc['from']} ({inc['from_config_hash'][:12]})"))
        rows += [
            (f"  {k}", str(inc.get(k, 0)))
            for k in ("reused", "new", "changed", "carried", "removed")
        ]
    if result.drift is not None:
        d = result.drift
        rows.append(
            (
                "catalog drift",
                f"{d['added']} added, {d['removed']} removed, {d['changed']} changed items; "
                f"{d['affected_samples']} samples affected",
            )
        )
    rows.append(("samples", str(result.samples)))
    rows += [(f"  {split}", str(n)) for split, n in sorted(m.splits.items())]
    rows.append(("quarantined", str(result.quarantined)))
    rows += [(f"  {s}:{r}", str(n)) for s, r, n in funnel(m)]
    rows.append(("shards", str(len(m.shards))))
    rows += [(f"time {k}", f"{v:.1f} s") for k, v in result.stage_seconds.items()]
    rows.append(("time total", f"{result.seconds:.1f} s"))
    counts = Counter(s.split for s in m.shards)
    rows.append(("shards per split", ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))))
    return rows
