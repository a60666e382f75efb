"""geodelta_release: one DAG run builds, checks and publishes one dataset version.

Airflow 3 TaskFlow DAG. It needs an Airflow environment with geodelta installed (``pip install -e
.`` next to ``apache-airflow>=3.3``; ``make test`` builds one in ``.venv-airflow``). Parsing
imports only the standard library and ``airflow.sdk``: every geodelta module is imported inside
the task that uses it, so the DAG processor never loads rasterio, Beam or torch.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

if TYPE_CHECKING:
    from geodelta.schemas import BuildConfig

DAG_ID = "geodelta_release"
LLM_POOL = "geodelta_llm"  # bounds concurrent build tasks, hence concurrent LLM requests
STAGING = ".staging"  # same folder name as geodelta.pipelines.api.STAGING
RELEASES = "releases"
LATEST = "LATEST"

DOC_MD = """
### geodelta_release

One run = one dataset version, built from a geodelta build config (the YAML `geodelta build`
takes).

`plan` -> `build` (one mapped task per group of grid cells) -> `release` (shards, manifest,
quality report) -> `validate` (`geodelta verify`) -> `train_reference` (reference model:
`reference/metrics.json`, disagreement scores, the report re-rendered with them) -> `publish`
(the release gate of the config's `gate` section, then the atomic move, `geodelta release`).

**Params**
- `config`: path of the build config (absolute, or relative to the DAG run's working directory).
- `version`: dataset version; overrides the config's `version` when set.
- `previous`: an earlier release folder for the report's diff and the gate's `max_drop` rules;
  by default the release `LATEST` points at, when it is another version.
- `releases_dir`: where published releases go; default `releases/` beside `output.dir`.
- `cells_per_task`: grid cells per mapped build task.
- `promote`: after publishing, make the release's reference change model the baseline of the
  next version (`<releases_dir>/baselines/<hash>/`, `<releases_dir>/BASELINE`; the config line
  to use is in the `publish` task's log).

**Gate.** `publish` refuses (the task fails, nothing moves, `LATEST` unchanged) when a rule of
the config's `gate` section fails; the log names the metric, e.g. `gate: masks.f1 = 0.12, 0.31
below the previous release 0.43 (gate.rules[0] max_drop 0.05)`.

**Idempotence.** Every cell's outcome lands in `<output.dir>/.staging` with a completion marker
(written atomically); a retried or re-run build task skips the cells already marked, so nothing
is produced twice. `release` rewrites the release from the staging area (same bytes every time);
`train_reference` is skipped when this version is already published from this config;
`publish` renames the verified, gated release into `<releases_dir>/<name>-<version>` and then
replaces the `LATEST` pointer file atomically; re-running it after success changes nothing.

**Pool.** Build tasks run in the `geodelta_llm` pool: its size bounds how many cells are
annotated at once, hence the load on the LLM endpoint (`airflow pools set geodelta_llm 2 ...`).
"""


def _params(context: dict[str, Any]) -> dict[str, Any]:
    return dict(context["params"])


def _load(params: dict[str, Any]) -> BuildConfig:
    """The run's build config (with profile defaults), version overridden by the params."""
    from geodelta.schemas import load_config
    from geodelta.sources.profiles import apply_defaults

    overrides: dict[str, Any] = {}
    if params.get("version"):
        overrides["version"] = str(params["version"])
    path = Path(str(params["config"])).expanduser()
    if not path.exists():
        raise AirflowFailException(f"param 'config': {path} does not exist")
    return apply_defaults(load_config(path, overrides or None))


def _build_dir(cfg: BuildConfig) -> Path:
    return Path(cfg.resolve(cfg.output.dir))


def _releases_dir(cfg: BuildConfig, params: dict[str, Any]) -> Path:
    if params.get("releases_dir"):
        return Path(str(params["releases_dir"])).expanduser().resolve()
    return _build_dir(cfg).parent / RELEASES


def _published_name(cfg: BuildConfig) -> str:
    return f"{cfg.name}-{cfg.version}"


def _previous(cfg: BuildConfig, params: dict[str, Any]) -> Path | None:
    """The release to diff and gate against: the param, else LATEST when another version."""
    if params.get("previous"):
        return Path(str(params["previous"])).expanduser()
    releases = _releases_dir(cfg, params)
    pointer = releases / LATEST
    if pointer.exists():
        candidate = releases / pointer.read_text().strip()
        if candidate.name != _published_name(cfg) and candidate.is_dir():
            return candidate
    return None


def _manifest_hash(release_dir: Path) -> str | None:
    try:
        return str(json.loads((release_dir / "manifest.json").read_text())["config_hash"])
    except (OSError, ValueError, KeyError):
        return None


@dag(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    max_active_runs=1,
    doc_md=DOC_MD,
    tags=["geodelta"],
    params={
        "config": Param("configs/demo.yaml", type="string", description="build config path"),
        "version": Param(None, type=["null", "string"], description="dataset version"),
        "previous": Param(None, type=["null", "string"], description="earlier release to diff"),
        "releases_dir": Param(None, type=["null", "string"], description="publish folder"),
        "cells_per_task": Param(8, type="integer", minimum=1, description="cells per build task"),
        "promote": Param(
            False, type="boolean", description="promote the reference model to the next baseline"
        ),
    },
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=30),
    },
)
def geodelta_release() -> None:
    """The DAG (see DOC_MD)."""

    @task(execution_timeout=timedelta(minutes=10), doc_md="Plan the grid cells; group them.")
    def plan(**context: Any) -> list[list[str]]:
        """Plan the cells, stamp the staging area with the config hash, return groups of ids.

        Fails at once when this version was already published from another config. Groups
        follow the AOI regions (a group never mixes two regions), chunked to
        ``cells_per_task`` cells. A staging area left by another config fails the task: its
        cells are not this version's.
        """
        from geodelta import __version__
        from geodelta._io import write_atomic
        from geodelta.pipelines.stages.plan import plan_jobs

        params = _params(context)
        cfg = _load(params)
        published = _releases_dir(cfg, params) / _published_name(cfg)
        if published.exists() and _manifest_hash(published) != cfg.config_hash():
            raise AirflowFailException(
                f"{published} already holds version {cfg.version} built from another config; "
                "bump 'version' (published versions are never overwritten)"
            )
        staging = _build_dir(cfg) / STAGING
        stamp = staging / "config.json"
        if stamp.exists():
            built_from = json.loads(stamp.read_text()).get("config_hash")
            if built_from != cfg.config_hash():
                raise AirflowFailException(
                    f"{staging} was made from another config (hash {str(built_from)[:12]}, now "
                    f"{cfg.config_hash()[:12]}); remove {_build_dir(cfg)} or change output.dir"
                )
        staging.mkdir(parents=True, exist_ok=True)
        write_atomic(
            stamp,
            json.dumps({"config_hash": cfg.config_hash(), "code_version": __version__}).encode(),
        )
        jobs = plan_jobs(cfg)
        if not jobs:
            raise AirflowFailException(
                "the AOI holds no whole cell; enlarge aoi, reduce grid.cell_size_px or set "
                "grid.keep: intersects"
            )
        size = int(params["cells_per_task"])
        by_region: dict[str, list[str]] = {}
        for job in jobs:
            by_region.setdefault(job.region, []).append(job.cell_id)
        return [
            ids[i : i + size]
            for _, ids in sorted(by_region.items())
            for i in range(0, len(ids), size)
        ]

    @task(
        pool=LLM_POOL,
        execution_timeout=timedelta(hours=2),
        doc_md="Process one group of cells into the staging area (skips cells already marked).",
    )
    def build(group: list[str], **context: Any) -> dict[str, int]:
        """Run geodelta's stages over the group's unfinished cells (``runners.run_jobs``)."""
        from geodelta import __version__
        from geodelta.pipelines.engines.runners import run_jobs
        from geodelta.pipelines.release.staging import Staging
        from geodelta.pipelines.stages.plan import plan_jobs

        cfg = _load(_params(context))
        staging_root = _build_dir(cfg) / STAGING
        staging = Staging(staging_root)
        wanted = set(group)
        done = staging.done_cells()
        jobs = [j for j in plan_jobs(cfg) if j.cell_id in wanted]
        if len(jobs) != len(wanted):
            raise AirflowFailException(
                f"{len(wanted) - len(jobs)} cells of the group are not in the plan any more "
                "(the config changed since the plan task ran); clear the whole run"
            )
        todo = [j for j in jobs if j.cell_id not in done]
        run_jobs(todo, cfg, staging_root, code_version=__version__)
        missing = wanted - staging.done_cells()
        if missing:
            raise RuntimeError(
                f"{len(missing)} cells have no outcome after the run (e.g. {sorted(missing)[:3]})"
            )
        return {"cells": len(jobs), "processed": len(todo), "resumed": len(jobs) - len(todo)}

    @task(execution_timeout=timedelta(hours=1), doc_md="Write shards, manifest and report.")
    def release(built: list[dict[str, int]], **context: Any) -> str:
        """Assemble the release from the staging area (``write_release``), then its report."""
        from geodelta import __version__
        from geodelta.pipelines.release.assemble import write_release
        from geodelta.pipelines.release.staging import Staging
        from geodelta.pipelines.report.render import write_report

        params = _params(context)
        cfg = _load(params)
        release_dir = _build_dir(cfg)
        write_release(release_dir, cfg, Staging(release_dir / STAGING), code_version=__version__)
        write_report(release_dir, previous=_previous(cfg, params))
        return str(release_dir)

    @task(
        retries=0,
        execution_timeout=timedelta(hours=1),
        doc_md="Verify every checksum and member of the release; fail on any problem.",
    )
    def validate(release_dir: str) -> int:
        """``geodelta verify``: the run stops here when the release has a problem."""
        from geodelta.pipelines.release.verify import verify_release

        result = verify_release(release_dir)
        if not result.ok:
            shown = "\n".join(result.problems[:20])
            raise AirflowFailException(
                f"{len(result.problems)} problem(s) in {release_dir}:\n{shown}"
            )
        return result.samples

    @task(
        retries=0,
        execution_timeout=timedelta(hours=4),
        doc_md="Train the reference model on the release (`geodelta train-reference`): "
        "reference/metrics.json, model card, weights, disagreement scores; re-render the report.",
    )
    def train_reference(release_dir: str, samples: int, **context: Any) -> dict[str, float]:
        """Train and evaluate the reference model (epochs etc. from the config's ``reference``).

        Skipped when this version is already published from this config: its metrics are there,
        and training again would only duplicate them.
        """
        from geodelta import __version__
        from geodelta.pipelines.report.render import write_report
        from geodelta.pipelines.training.reference import train_reference as train

        params = _params(context)
        cfg = _load(params)
        published = _releases_dir(cfg, params) / _published_name(cfg)
        if published.exists() and _manifest_hash(published) == cfg.config_hash():
            raise AirflowSkipException(
                f"train_reference: {published} is already published from this config, with "
                "its reference metrics; nothing to train"
            )
        metrics = train(release_dir, code_version=__version__, report=False)
        write_report(release_dir, previous=_previous(cfg, params))  # with the reference section
        out = {
            name: metrics.metric(name)
            for name in ("masks.f1", "retrieval.recall_at_5", "captions.cider")
        }
        logging.getLogger(__name__).info(
            "reference model on %s (%d samples): %s", release_dir, samples, out
        )
        return out

    @task(
        trigger_rule="none_failed",
        execution_timeout=timedelta(minutes=30),
        doc_md="Gate the release on its reference metrics, move it into the releases folder, "
        "then point LATEST at it (atomic); optionally promote its model to the next baseline.",
    )
    def publish(release_dir: str, **context: Any) -> str:
        """``geodelta release``: verify, gate, rename to ``<releases_dir>/<name>-<version>``,
        rewrite ``LATEST`` (``publish_release``).

        A gate refusal fails the task with the rule's message and moves nothing. Idempotent:
        when the target already holds this config's release (a re-run after success), the
        fresh copy is dropped and only ``LATEST`` is rewritten. A target built from another
        config fails the task: versions are never overwritten.
        """
        from geodelta.pipelines.release.publish import PublishError, publish_release

        params = _params(context)
        cfg = _load(params)
        src = Path(release_dir)
        releases = _releases_dir(cfg, params)
        target = releases / _published_name(cfg)
        if not src.exists() and target.exists():
            src = target  # an earlier try moved it; finish the pointer (and promotion)
        if _manifest_hash(src) != cfg.config_hash():
            raise AirflowFailException(f"{src} holds no release of this config to publish")
        previous = Path(str(params["previous"])).expanduser() if params.get("previous") else None
        try:
            out = publish_release(
                src, releases, previous=previous, promote=bool(params.get("promote"))
            )
        except PublishError as exc:  # GateError included: the message names the metric
            raise AirflowFailException(str(exc)) from None
        log = logging.getLogger(__name__)
        if out.gate is not None:
            for note in out.gate.notes:
                log.info("gate note: %s", note)
        if out.leftover is not None:
            shutil.rmtree(out.leftover)  # this run's duplicate of a published version
        if out.promotion is not None:
            log.info(
                "promoted %s; next version's config: %s",
                out.promotion.model_id,
                out.promotion.config_line,
            )
        return str(out.target)

    groups = plan()
    built = build.expand(group=groups)
    release_dir = release(built)
    samples = validate(release_dir)
    trained = train_reference(release_dir, samples)
    published = publish(release_dir)
    trained >> published


geodelta_release()
