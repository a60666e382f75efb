"""Build one dataset version: plan -> stages (on the configured runner) -> release -> report.

Runs are resumable and idempotent: every cell's outcome lands in the staging area
(``<release>/.staging``) with a completion marker, written atomically; ``resume`` skips the cells
that have one. The release itself is assembled from the staging area in key order, so a resumed
build is byte-identical to an uninterrupted one.

When ``output.dir`` is an fsspec URL, the release is assembled in a local work folder and then
uploaded with ``manifest.json`` last (:mod:`geodelta.pipelines.release.upload`); the work folder, its
staging area included, is kept until the upload has succeeded, so ``resume`` finishes a failed
upload without running any cell again.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from geodelta import __version__
from geodelta.errors import BuildError
from geodelta.pipelines.release.layout import STAGING, Mode
from geodelta.schemas import BuildConfig, ReleaseManifest

if TYPE_CHECKING:
    from geodelta.pipelines.release.staging import Staging

__all__ = ["STAGING", "BuildError", "Mode"]


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


def _prepare(release_dir: Path, cfg: BuildConfig, mode: Mode) -> Path:
    staging = release_dir / STAGING
    stamp = staging / "config.json"
    if mode == "overwrite" and release_dir.exists():
        shutil.rmtree(release_dir)
    elif mode == "fresh" and release_dir.exists() and any(release_dir.iterdir()):
        raise BuildError(
            f"{release_dir} is not empty; pass --resume to finish an interrupted build of the same "
            "config, or --overwrite to rebuild from scratch"
        )
    elif mode == "resume" and stamp.exists():
        built_from = json.loads(stamp.read_text()).get("config_hash")
        if built_from != cfg.config_hash():
            raise BuildError(
                f"{staging} was made from another config (hash {built_from[:12]}, now "
                f"{cfg.config_hash()[:12]}); use --overwrite to rebuild"
            )
    staging.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config_hash": cfg.config_hash(), "code_version": __version__}))
    tmp.replace(stamp)
    return staging


def build(
    cfg: BuildConfig,
    *,
    mode: Mode = "fresh",
    progress: bool = True,
    keep_staging: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build the release a config describes.

    Args:
        cfg: the validated build config.
        mode: ``fresh`` (refuse a non-empty release dir), ``resume`` (skip finished cells) or
            ``overwrite`` (start from scratch).
        progress: show rich progress bars.
        keep_staging: keep ``.staging`` after a successful build (for a URL release: keep the
            whole local work folder).
        on_stage: called with each top-level stage name as it starts (for logs and tests).

    Returns:
        The release directory, its manifest and timings.
    """
    from geodelta.pipelines.engines.runners import check_runner, run_jobs
    from geodelta.pipelines.release.assemble import write_release
    from geodelta.pipelines.release.staging import Staging
    from geodelta.pipelines.report.render import write_report
    from geodelta.pipelines.stages.plan import plan_jobs
    from geodelta.sources.profiles import apply_defaults

    cfg = apply_defaults(cfg)  # keys left out of the file, from the collections' profiles
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    check_runner(cfg)
    dest = cfg.resolve(cfg.output.dir)
    url: str | None = None
    if "://" in dest:  # an fsspec URL: build in a local work folder, then upload
        from geodelta.pipelines.release.upload import check_target, shown, work_dir_for

        url = dest
        check_target(url, cfg, mode)  # before any work
        release_dir = work_dir_for(cfg, url)
    else:
        release_dir = Path(dest)
    staging_root = _prepare(release_dir, cfg, mode)
    staging = Staging(staging_root)

    def stage(name: str) -> None:
        if on_stage is not None:
            on_stage(name)

    stage("plan")
    t = time.perf_counter()
    jobs = plan_jobs(cfg)
    if not jobs:
        raise BuildError(
            "the AOI holds no whole cell; enlarge aoi, reduce grid.cell_size_px or set grid.keep: intersects"
        )
    done = staging.done_cells() if mode == "resume" else set()
    todo = [j for j in jobs if j.cell_id not in done]
    timings["plan"] = time.perf_counter() - t

    stage("process")
    t = time.perf_counter()
    with _Progress(progress, "cells", len(jobs), len(jobs) - len(todo)) as bar:
        # Beam's workers report nothing back while they run: poll the completion markers.
        watcher = _Watcher(staging, bar) if cfg.runner.name != "inprocess" else None
        try:
            run_jobs(todo, cfg, staging_root, code_version=__version__, progress=bar.advance)
        finally:
            if watcher is not None:
                watcher.stop()
        bar.set(len(staging.done_cells()))
    missing = {j.cell_id for j in jobs} - staging.done_cells()
    if missing:
        raise BuildError(
            f"{len(missing)} cells have no outcome after the run (e.g. {sorted(missing)[:3]}); "
            "re-run with --resume"
        )
    timings["process"] = time.perf_counter() - t

    stage("release")
    t = time.perf_counter()
    manifest = write_release(release_dir, cfg, staging, code_version=__version__)
    timings["release"] = time.perf_counter() - t

    stage("report")
    t = time.perf_counter()
    write_report(release_dir)
    timings["report"] = time.perf_counter() - t

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


def funnel(manifest: ReleaseManifest) -> list[tuple[str, str, int]]:
    """(stage, reason, count) of the quarantined records, largest first."""
    rows = []
    for key, n in manifest.quarantined.items():
        stage_name, _, reason = key.partition(":")
        rows.append((stage_name, reason, n))
    return sorted(rows, key=lambda r: (-r[2], r[0], r[1]))


class _Progress:
    """A rich progress bar, or nothing when progress is off."""

    def __init__(self, enabled: bool, label: str, total: int, completed: int) -> None:
        self.enabled = enabled
        self.label = label
        self.total = total
        self.completed = completed
        self._lock = threading.Lock()

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._p = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=False,
            )
            self._p.__enter__()
            self._task = self._p.add_task(self.label, total=self.total, completed=self.completed)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._p.__exit__(None, None, None)

    def advance(self, n: int) -> None:
        with self._lock:
            self.completed += n
            if self.enabled:
                self._p.update(self._task, completed=self.completed)

    def set(self, completed: int) -> None:
        with self._lock:
            self.completed = completed
            if self.enabled:
                self._p.update(self._task, completed=completed)


class _Watcher:
    """Sets the progress bar from the staging area's completion markers every half second."""

    def __init__(self, staging: Staging, bar: _Progress) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(staging, bar), daemon=True)
        self._thread.start()

    def _run(self, staging: Staging, bar: _Progress) -> None:
        while not self._stop.wait(0.5):
            bar.set(len(staging.done_cells()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


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
