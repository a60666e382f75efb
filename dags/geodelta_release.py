"""geodelta_release: one DAG run builds, checks and publishes one dataset version.

Airflow 3 TaskFlow DAG. It needs an Airflow environment with geodelta installed (``pip install -e
.`` next to ``apache-airflow>=3.3``; ``make test`` builds one in ``.venv-airflow``). Parsing
imports only the standard library and ``airflow.sdk``: geodelta's public API
(:mod:`geodelta.pipelines.api`, the only part of geodelta the tasks call) is imported inside
the task that uses it, so the DAG processor never loads rasterio, Beam or torch.
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

if TYPE_CHECKING:
    from geodelta.pipelines.api import BuildConfig

DAG_ID = "geodelta_release"
LLM_POOL = "geodelta_llm"  # bounds concurrent build tasks, hence concurrent LLM requests
RELEASES = "releases"

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

**Idempotence.** Every cell's outcome lands in the release's staging area (`output.staging`: a
folder or an object-store URL such as `s3://bucket/staging/demo`, which build tasks on any worker
reach; by default `<output.dir>/.staging`, or the local work folder of a URL output) with a
completion marker (written atomically, last); a retried or re-run build task skips the cells
already marked, so nothing is produced twice; a staging area of another config is refused. `release` rewrites the release from the staging
area (same bytes every time) and uploads it when `output.dir` is a URL (`s3://`, `gs://`...);
`train_reference` is skipped when this version is already published from this config (and,
like `publish`, for a URL output: both work on a local release folder);
`publish` renames the verified, gated release into `<releases_dir>/<name>-<version>` and then
replaces the `LATEST` pointer file atomically; re-running it after success changes nothing.

**Pool.** Build tasks run in the `geodelta_llm` pool: its size bounds how many cells are
annotated at once, hence the load on the LLM endpoint (`airflow pools set geodelta_llm 2 ...`).
"""


def _params(context: dict[str, Any]) -> dict[str, Any]:
    return dict(context["params"])


def _load(params: dict[str, Any]) -> BuildConfig:
    """The run's build config (with profile defaults), version overridden by the params."""
    from geodelta.pipelines import api

    overrides: dict[str, Any] = {}
    if params.get("version"):
        overrides["version"] = str(params["version"])
    path = Path(str(params["config"])).expanduser()
    if not path.exists():
        raise AirflowFailException(f"param 'config': {path} does not exist")
    try:
        return api.load_config(path, overrides or None)
    except api.ConfigError as exc:
        raise AirflowFailException(str(exc)) from None


def _releases_dir(cfg: BuildConfig, params: dict[str, Any]) -> Path | None:
    """The publish folder: the param, else ``releases/`` beside a local ``output.dir``."""
    from geodelta.pipelines import api

    if params.get("releases_dir"):
        return Path(str(params["releases_dir"])).expanduser().resolve()
    out = api.output_location(cfg)
    return None if api.is_url(out) else Path(out).parent / RELEASES


def _previous(cfg: BuildConfig, params: dict[str, Any]) -> Path | None:
    """The release to diff and gate against: the param, else LATEST when another version."""
    from geodelta.pipelines import api

    if params.get("previous"):
        return Path(str(params["previous"])).expanduser()
    releases = _releases_dir(cfg, params)
    latest = api.latest_release(releases) if releases is not None else None
    return latest if latest is not None and latest.name != api.release_name(cfg) else None


def _published(cfg: BuildConfig, params: dict[str, Any]) -> Path | None:
    """This version's published release (None: not published); refuses another config's."""
    from geodelta.pipelines import api

    releases = _releases_dir(cfg, params)
    try:
        return api.published_release(cfg, releases) if releases is not None else None
    except api.ReleaseError as exc:
        raise AirflowFailException(str(exc)) from None


def _config_hash_of(release: Path) -> str | None:
    from geodelta.pipelines import api

    try:
        return api.read_manifest(release).config_hash
    except api.ReleaseError:
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
        "yes": Param(
            False, type="boolean", description="build even when the estimate exceeds the budget"
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
        """Check the build can go ahead, plan the cells, return groups of ids (``api.cell_groups``).

        Fails at once (no retry: a retry cannot fix it) when this version was already
        published from another config, or the build cannot start (``api.check_build``: a
        runner that cannot run, a staging area or URL target of another config), or can
        never produce a sample (``api.preflight``: catalog, collections, assets), or its
        estimate exceeds the config's ``budget`` (``api.check_budget``; param ``yes`` builds
        anyway, as ``geodelta build --yes`` does). Groups
        follow the AOI regions (a group never mixes two regions), chunked to
        ``cells_per_task`` cells. Writes nothing.
        """
        from geodelta.pipelines import api

        params = _params(context)
        cfg = _load(params)
        _published(cfg, params)
        try:
            api.check_build(cfg, "resume")
            if not params.get("yes"):
                api.check_budget(cfg)
            api.preflight(cfg)  # catalog, collections, a sampled item's assets and headers
            return api.cell_groups(cfg, int(params["cells_per_task"]))
        except api.BudgetError as exc:
            raise AirflowFailException(f"{exc} (DAG: trigger with param yes=true)") from None
        except api.GeodeltaError as exc:
            raise AirflowFailException(str(exc)) from None

    @task(
        pool=LLM_POOL,
        execution_timeout=timedelta(hours=2),
        doc_md="Process one group of cells into the staging area (skips cells already marked).",
    )
    def build(group: list[str], **context: Any) -> dict[str, int]:
        """Run geodelta's stages over the group's unfinished cells (``api.build_cells``).

        A refusal (the plan changed since the plan task, a staging area of another config)
        fails the task without retry; cells left without an outcome (a worker that died) are
        retried, and the retry runs only those.
        """
        from geodelta.pipelines import api

        cfg = _load(_params(context))
        try:
            done = api.build_cells(cfg, group)
        except api.IncompleteBuildError:
            raise  # a retry finishes the cells without an outcome
        except api.GeodeltaError as exc:
            raise AirflowFailException(str(exc)) from None
        for stage, passed, quarantined in done.counts:
            logging.getLogger(__name__).info(
                "%s: %d passed, %d quarantined", stage, passed, quarantined
            )
        return {"cells": done.cells, "processed": done.processed, "resumed": done.resumed}

    @task(execution_timeout=timedelta(hours=1), doc_md="Write shards, manifest and report.")
    def release(built: list[dict[str, int]], **context: Any) -> str:
        """Assemble the release from the staging area, then its report (``api.build``, resume).

        Every cell is done (the build tasks), so this writes the release, the report (diff
        against ``previous``) and, for a URL output, uploads it. A local release keeps its
        staging area until ``publish``; returns where the release is (a folder or a URL).
        """
        from geodelta.pipelines import api

        params = _params(context)
        cfg = _load(params)
        local = not api.is_url(api.output_location(cfg))
        try:
            result = api.build(
                cfg,
                mode="resume",
                progress=False,
                keep_staging=local,
                previous=_previous(cfg, params),
            )
        except api.IncompleteBuildError:
            raise
        except api.GeodeltaError as exc:
            raise AirflowFailException(str(exc)) from None
        return result.location

    @task(
        retries=0,
        execution_timeout=timedelta(hours=1),
        doc_md="Verify every checksum and member of the release; fail on any problem.",
    )
    def validate(release_dir: str) -> int:
        """``geodelta verify`` (a folder or a URL): the run stops here when the release has a
        problem."""
        from geodelta.pipelines import api

        try:
            result = api.verify(release_dir)
        except api.GeodeltaError as exc:
            raise AirflowFailException(str(exc)) from None
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
        """Train and evaluate the reference model (epochs etc. from the config's ``reference``),
        then re-render the report with it (``api.train_reference``).

        Skipped when this version is already published from this config (its metrics are
        there, and training again would only duplicate them), and for a release at a URL
        (training reads a local release folder).
        """
        from geodelta.pipelines import api

        params = _params(context)
        cfg = _load(params)
        published = _published(cfg, params)
        if published is not None:
            raise AirflowSkipException(
                f"train_reference: {published} is already published from this config, with "
                "its reference metrics; nothing to train"
            )
        if api.is_url(release_dir):
            raise AirflowSkipException(
                f"train_reference: {release_dir} is a URL; the reference model trains on a "
                "local release folder (geodelta train-reference)"
            )
        try:
            metrics = api.train_reference(release_dir, previous=_previous(cfg, params))
        except api.GeodeltaError as exc:
            raise AirflowFailException(str(exc)) from None
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
        rewrite ``LATEST`` (``api.publish``).

        A gate refusal fails the task with the rule's message and moves nothing. Idempotent:
        when the target already holds this config's release (a re-run after success), the
        fresh copy is dropped and only ``LATEST`` is rewritten. A target built from another
        config fails the task: versions are never overwritten. A release at a URL is not
        moved (the task is skipped; publishing renames a local folder).
        """
        from geodelta.pipelines import api

        params = _params(context)
        cfg = _load(params)
        releases = _releases_dir(cfg, params)
        if api.is_url(release_dir) or releases is None:
            raise AirflowSkipException(
                f"publish: {release_dir} is a URL; `geodelta release` publishes a local "
                "release folder (set releases_dir and a local output.dir)"
            )
        src = Path(release_dir)
        if not src.exists():
            src = _published(cfg, params) or src  # an earlier try moved it; finish the pointer
        if _config_hash_of(src) != cfg.config_hash():
            raise AirflowFailException(f"{src} holds no release of this config to publish")
        previous = Path(str(params["previous"])).expanduser() if params.get("previous") else None
        try:
            out = api.publish(src, releases, previous=previous, promote=bool(params.get("promote")))
        except api.PublishError as exc:  # GateError included: the message names the metric
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
