"""Publish a release behind its gate, and promote its reference model to the next baseline.

``geodelta release RELEASE_DIR --releases DIR`` (and the DAG's ``publish`` task) call
:func:`publish_release`:

1. :func:`~geodelta.pipelines.release.verify.verify_release` must pass (every checksum and member);
2. :func:`check_gate` must pass: the rules of the release's OWN config (the ``gate`` section of
   ``manifest.json``'s ``config``; the defaults of
   :class:`~geodelta.schemas.config.GateConfig` when absent) over the reference metrics
   (``<release>/reference/metrics.json``, written by ``geodelta train-reference``), each
   compared with a floor (``min``) and with the previous release's value (``max_drop``);
3. the release folder is renamed to ``<releases>/<name>-<version>`` (:func:`os.replace`:
   atomic on one filesystem), then the ``LATEST`` pointer file is replaced atomically.

A refusal (:class:`GateError`, :class:`PublishError`) moves nothing and leaves ``LATEST`` as it
was. Publishing again a version already published from the same config is a no-op that only
rewrites ``LATEST``; the same version from another config is refused (versions are never
overwritten).

``promote=True`` (``--promote``) then makes the published release's reference change model the
baseline annotator of the next version (:func:`promote_reference`): its weights and card are
copied under their content hash to ``<releases>/baselines/<sha256[:16]>/`` (the layout
``baseline.weights`` reads), ``<releases>/BASELINE`` records which weights came from which
release, and the exact config line for the next version is returned. A build with that
``baseline.weights`` records ``fc-siam-diff@sha256:<the same hash>`` in every sample's
``baseline_model``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from geodelta._io import sha256_file, write_atomic
from geodelta.errors import ReleaseError
from geodelta.pipelines.release.layout import STAGING, read_manifest
from geodelta.schemas import ReleaseManifest
from geodelta.schemas.config import GateConfig, GateRule
from geodelta.schemas.reference import REFERENCE_DIR, REFERENCE_METRICS, ReferenceMetrics

__all__ = [
    "BASELINES_DIR",
    "BASELINE_POINTER",
    "LATEST",
    "PROMOTION_RECORD",
    "GateError",
    "GateResult",
    "Promotion",
    "PublishError",
    "PublishResult",
    "RuleResult",
    "check_gate",
    "default_previous",
    "format_rules",
    "latest_release",
    "promote_reference",
    "publish_release",
]

#: Pointer file in the releases folder: the folder name of the newest published release.
LATEST = "LATEST"
#: Promoted baseline weights, one content-hashed folder each, in the releases folder.
BASELINES_DIR = "baselines"
#: Pointer file (JSON) in the releases folder: the baseline promoted last.
BASELINE_POINTER = "BASELINE"
#: Written into a published release when its reference model is promoted (not in the manifest:
#: it records an event after publication, not the release's content).
PROMOTION_RECORD = f"{REFERENCE_DIR}/promotion.json"

#: Tolerance of the rule comparisons (metrics are stored as floats).
_EPS = 1e-9


class PublishError(RuntimeError):
    """A release that cannot be published; says what to change.

    Attributes:
        release: the release folder concerned.
        problems: one message per problem.
        failed: the gate rules that failed (empty when the refusal is not the gate's).
    """

    def __init__(
        self,
        message: str,
        *,
        release: str | Path | None = None,
        problems: tuple[str, ...] = (),
        failed: tuple[RuleResult, ...] = (),
    ) -> None:
        self.release = str(release) if release is not None else None
        self.problems = problems or (message,)
        self.failed = failed
        super().__init__(message)


@dataclass(frozen=True)
class RuleResult:
    """One gate rule checked against a release's reference metrics.

    Attributes:
        index: position of the rule in ``gate.rules`` (the config key is ``gate.rules[index]``).
        metric: dotted metric name (``masks.f1``).
        value: the release's value (None when it has no reference metrics).
        previous: the previous release's value (None when there is none, or it has no metrics).
        min: the rule's floor (None = none).
        max_drop: the rule's largest allowed drop below ``previous`` (None = not compared).
        passed: True when every part of the rule that could be checked holds.
        skipped: parts not checked and why (e.g. ``max_drop`` with no previous metrics).
        message: what failed, naming the metric and the key to change ('' when passed).
    """

    index: int
    metric: str
    value: float | None
    previous: float | None
    min: float | None
    max_drop: float | None
    passed: bool
    skipped: tuple[str, ...] = ()
    message: str = ""

    @property
    def drop(self) -> float | None:
        """``previous - value`` when both are known."""
        if self.value is None or self.previous is None:
            return None
        return self.previous - self.value


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`check_gate`.

    Attributes:
        release: the release folder checked.
        release_name: ``<name>-<version>`` from its manifest.
        previous: the previous release compared with (None = none).
        gate: the gate that was applied (the release's own).
        rules: one result per rule.
        problems: why the gate refuses (rule messages, missing or stale metrics); empty = pass.
        notes: what was not checked and why (no previous release, no previous metrics).
    """

    release: Path
    release_name: str
    previous: Path | None
    gate: GateConfig
    rules: tuple[RuleResult, ...]
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the gate lets the release through."""
        return not self.problems

    @property
    def failed(self) -> tuple[RuleResult, ...]:
        """The rules that failed."""
        return tuple(r for r in self.rules if not r.passed)


class GateError(PublishError):
    """The gate refused the release; ``result`` holds every rule, ``failed`` the failed ones."""

    def __init__(self, result: GateResult) -> None:
        self.result = result
        head = f"the gate refuses {result.release_name} ({result.release}):"
        super().__init__(
            "\n".join([head, *result.problems]),
            release=result.release,
            problems=result.problems,
            failed=result.failed,
        )


@dataclass(frozen=True)
class Promotion:
    """A reference change model promoted to the baseline of the next version.

    Attributes:
        directory: ``<releases>/baselines/<sha256[:16]>`` (weights.pt, card.json, card.md).
        weights: the promoted ``weights.pt``.
        sha256: content hash of the weights (what ``model_id`` names).
        model_id: ``fc-siam-diff@sha256:<sha256>``: what the next version's samples record.
        file_sha256: sha256 of the weights file's bytes (as in the release's metrics.json).
        release: ``<name>-<version>`` the weights were trained on.
        pointer: the ``<releases>/BASELINE`` file.
    """

    directory: Path
    weights: Path
    sha256: str
    model_id: str
    file_sha256: str
    release: str
    pointer: Path

    @property
    def config_line(self) -> str:
        """The config line that makes the next version use these weights."""
        return f"baseline.weights: {self.weights}"

    @property
    def config_yaml(self) -> str:
        """The same as a YAML snippet to paste into the next version's config."""
        return f"baseline:\n  weights: {json.dumps(str(self.weights))}\n"


@dataclass(frozen=True)
class PublishResult:
    """Outcome of :func:`publish_release`.

    Attributes:
        target: the published release folder ``<releases>/<name>-<version>``.
        latest: the ``LATEST`` pointer file (it names ``target``).
        already_published: the version was published before from the same config (nothing
            moved; ``LATEST`` rewritten).
        samples: samples in the release (from verification; 0 when already published).
        gate: the gate's result (None when already published: it passed then).
        promotion: the promoted baseline (``promote=True``), else None.
        leftover: the release folder that was NOT moved because the same version was already
            published (a rebuilt duplicate the caller may delete), else None.
    """

    target: Path
    latest: Path
    already_published: bool
    samples: int
    gate: GateResult | None
    promotion: Promotion | None = None
    leftover: Path | None = field(default=None)


# -- small helpers ----------------------------------------------------------------------------


def _write_if_changed(path: Path, text: str) -> None:
    """Atomic write, skipped when the file already holds ``text`` (re-runs touch nothing)."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    write_atomic(path, text.encode("utf-8"))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _manifest(release_dir: Path, what: str) -> ReleaseManifest:
    try:
        return read_manifest(release_dir)
    except ReleaseError as exc:
        raise PublishError(
            f"{what} {release_dir} is not a release: {exc}", release=release_dir
        ) from None


def _gate_of(release_dir: Path, config: dict[str, Any]) -> GateConfig:
    """The release's own gate (the manifest's ``config.gate``), defaults when absent."""
    data = config.get("gate")
    if data is None:
        return GateConfig()
    try:
        return GateConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            key = f"gate.{loc}" if loc else "gate"
            problems.append(f"{key}: {err['msg']}")
        raise PublishError(
            f"the gate of {release_dir} (manifest.json config.gate) is invalid: "
            + "; ".join(problems)
            + "; fix the 'gate' section of the config and rebuild",
            release=release_dir,
            problems=tuple(problems),
        ) from None


def _read_metrics(release_dir: Path) -> tuple[ReferenceMetrics | None, str | None]:
    """``(metrics, None)``, ``(None, None)`` when absent, ``(None, problem)`` when unreadable."""
    path = release_dir / REFERENCE_METRICS
    if not path.is_file():
        return None, None
    try:
        return ReferenceMetrics.model_validate_json(path.read_bytes()), None
    except (OSError, ValidationError) as exc:
        return None, f"{path} cannot be read as reference metrics ({exc})"


def latest_release(releases_dir: str | Path) -> Path | None:
    """The release ``<releases>/LATEST`` points at, or None (no pointer, or a dangling one)."""
    releases = Path(releases_dir)
    pointer = releases / LATEST
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    candidate = releases / name
    return candidate if name and candidate.is_dir() else None


def default_previous(release_dir: str | Path, releases_dir: str | Path) -> Path | None:
    """The release a gate compares with by default: the one ``LATEST`` points at, unless that
    is the same version as ``release_dir`` (then None)."""
    latest = latest_release(releases_dir)
    if latest is None:
        return None
    manifest = _manifest(Path(release_dir), "release")
    return None if latest.name == f"{manifest.name}-{manifest.version}" else latest


# -- the gate ---------------------------------------------------------------------------------


def _check_rule(
    index: int, rule: GateRule, value: float, previous: float | None, have_previous: bool
) -> RuleResult:
    key = f"gate.rules[{index}]"
    failures: list[str] = []
    skipped: list[str] = []
    if rule.min is not None and value < rule.min - _EPS:
        failures.append(
            f"gate: {rule.metric} = {value:.4g}, below the minimum {rule.min:g} ({key}.min); "
            f"fix what lowered {rule.metric} (labels, annotator, baseline) or lower {key}.min"
        )
    if rule.max_drop is not None:
        if previous is None:
            why = (
                "the previous release has no reference metrics"
                if have_previous
                else "no previous release"
            )
            skipped.append(f"{rule.metric}: max_drop not checked ({why})")
        elif previous - value > rule.max_drop + _EPS:
            failures.append(
                f"gate: {rule.metric} = {value:.4g}, {previous - value:.4g} below the previous "
                f"release {previous:.4g} ({key} max_drop {rule.max_drop:g}); fix what lowered "
                f"{rule.metric} (labels, annotator, baseline) or, if the drop is intended, raise "
                f"{key}.max_drop"
            )
    return RuleResult(
        index=index,
        metric=rule.metric,
        value=value,
        previous=previous,
        min=rule.min,
        max_drop=rule.max_drop,
        passed=not failures,
        skipped=tuple(skipped),
        message="; ".join(failures),
    )


def check_gate(release_dir: str | Path, previous: str | Path | None = None) -> GateResult:
    """Check a release's reference metrics against its own gate.

    The gate is the ``gate`` section of the release's config (in ``manifest.json``; the
    defaults of :class:`~geodelta.schemas.config.GateConfig` when absent). Every rule's metric
    is read from ``<release>/reference/metrics.json``; a ``min`` is compared with the value, a
    ``max_drop`` with ``previous``'s value of the same metric (``<previous>/reference/
    metrics.json``). A ``max_drop`` part is skipped, with a note, when there is no previous
    release or it has no reference metrics.

    Args:
        release_dir: the release to check (holds ``manifest.json``).
        previous: the release to compare with (None = none).

    Returns:
        The result; ``ok`` is False when a rule fails, or the metrics are missing while
        ``gate.require_reference`` is set, or they were computed for another build.

    Raises:
        PublishError: ``release_dir`` or ``previous`` is not a release, or the release's gate
            config is invalid (e.g. an unknown metric name).
    """
    root = Path(release_dir)
    manifest = _manifest(root, "release")
    name = f"{manifest.name}-{manifest.version}"
    gate = _gate_of(root, manifest.config)
    prev_root = Path(previous) if previous is not None else None
    if prev_root is not None:
        _manifest(prev_root, "previous release")

    problems: list[str] = []
    notes: list[str] = []
    metrics, unreadable = _read_metrics(root)
    if unreadable:
        problems.append(f"gate: {unreadable}; re-run `geodelta train-reference {root}`")
    elif metrics is None:
        if gate.require_reference:
            problems.append(
                f"gate: {root / REFERENCE_METRICS} is missing; run `geodelta train-reference "
                f"{root}` first (or set gate.require_reference: false to publish without a "
                "reference model)"
            )
        else:
            notes.append(
                "no reference metrics and gate.require_reference is false: no rule was checked"
            )
    elif metrics.config_hash != manifest.config_hash:
        problems.append(
            f"gate: {root / REFERENCE_METRICS} was computed for config {metrics.config_hash[:12]}"
            f", the release is config {manifest.config_hash[:12]}; re-run `geodelta "
            f"train-reference {root}`"
        )
        metrics = None

    prev_metrics: ReferenceMetrics | None = None
    if prev_root is None:
        notes.append("no previous release: max_drop rules were not checked")
    else:
        prev_metrics, prev_unreadable = _read_metrics(prev_root)
        if prev_unreadable:
            notes.append(f"previous release: {prev_unreadable}; max_drop rules were not checked")
        elif prev_metrics is None:
            notes.append(
                f"the previous release {prev_root} has no {REFERENCE_METRICS}: max_drop rules "
                "were not checked"
            )

    rules: list[RuleResult] = []
    if metrics is not None:
        for i, rule in enumerate(gate.rules):
            value = metrics.metric(rule.metric)
            before = prev_metrics.metric(rule.metric) if prev_metrics is not None else None
            result = _check_rule(i, rule, value, before, have_previous=prev_root is not None)
            rules.append(result)
            if not result.passed:
                problems.append(result.message)
    else:
        for i, rule in enumerate(gate.rules):
            rules.append(
                RuleResult(
                    index=i,
                    metric=rule.metric,
                    value=None,
                    previous=None,
                    min=rule.min,
                    max_drop=rule.max_drop,
                    passed=not gate.require_reference,
                    skipped=("no reference metrics",),
                    message=(
                        f"gate: {rule.metric} cannot be checked: no reference metrics"
                        if gate.require_reference
                        else ""
                    ),
                )
            )
    return GateResult(
        release=root,
        release_name=name,
        previous=prev_root,
        gate=gate,
        rules=tuple(rules),
        problems=tuple(problems),
        notes=tuple(notes),
    )


def format_rules(result: GateResult) -> list[tuple[str, str, str, str, str, str]]:
    """Rows ``(metric, value, previous, min, max_drop, result)`` for a table."""
    rows = []
    for r in result.rules:
        if not r.passed:
            state = "FAIL"
        elif r.value is None:
            state = "not checked"
        elif r.skipped:
            state = "pass (max_drop skipped)"
        else:
            state = "pass"
        rows.append(
            (
                r.metric,
                _fmt(r.value),
                _fmt(r.previous),
                _fmt(r.min),
                _fmt(r.max_drop),
                state,
            )
        )
    return rows


# -- publish ----------------------------------------------------------------------------------


def publish_release(
    release_dir: str | Path,
    releases_dir: str | Path,
    *,
    previous: str | Path | None = None,
    promote: bool = False,
) -> PublishResult:
    """Verify, gate, then atomically publish a release (and optionally promote its model).

    Args:
        release_dir: the built release (holds ``manifest.json`` and, normally,
            ``reference/metrics.json``).
        releases_dir: where published releases live (created when missing); must be on the
            same filesystem as ``release_dir`` (the move is a rename).
        previous: the release the gate compares with; None = the release ``LATEST`` points at,
            when it is another version.
        promote: after publishing, promote the reference change model to the next baseline
            (:func:`promote_reference`).

    Returns:
        Where the release now lives, the gate's result and the promotion.

    Raises:
        GateError: the gate refused (``.failed`` holds the failed rules). Nothing moved.
        PublishError: verification failed, the version was published from another config, the
            folder cannot be renamed into ``releases_dir``, or the promotion failed (the
            release is then published; only the promotion is missing).
    """
    from geodelta.pipelines.release.verify import verify_release

    src = Path(release_dir)
    releases = Path(releases_dir)
    manifest = _manifest(src, "release")
    name = f"{manifest.name}-{manifest.version}"
    releases.mkdir(parents=True, exist_ok=True)
    target = releases / name
    latest = releases / LATEST

    if target.exists():
        published = _manifest(target, "published")
        if published.config_hash != manifest.config_hash:
            raise PublishError(
                f"{target} already holds version {manifest.version} built from another config "
                f"(hash {published.config_hash[:12]}, this release {manifest.config_hash[:12]}); "
                "bump 'version' (published versions are never overwritten)",
                release=src,
            )
        same = src.resolve() == target.resolve()
        _write_if_changed(latest, name + "\n")
        promotion = promote_reference(target, releases) if promote else None
        return PublishResult(
            target=target,
            latest=latest,
            already_published=True,
            samples=0,
            gate=None,
            promotion=promotion,
            leftover=None if same else src,
        )

    check = verify_release(src)
    if not check.ok:
        shown = "\n".join(check.problems[:20])
        raise PublishError(
            f"{src} does not verify ({len(check.problems)} problem(s)); rebuild it:\n{shown}",
            release=src,
            problems=check.problems,
        )
    if previous is None:
        previous = default_previous(src, releases)
    gate = check_gate(src, previous)
    if not gate.ok:
        raise GateError(gate)

    shutil.rmtree(src / STAGING, ignore_errors=True)
    try:
        os.replace(src, target)  # atomic on one filesystem; fails if target appeared meanwhile
    except OSError as exc:
        raise PublishError(
            f"cannot rename {src} to {target} ({exc}); the releases folder must be on the same "
            "filesystem as the release, and the version not published meanwhile",
            release=src,
        ) from exc
    _write_if_changed(latest, name + "\n")
    promotion = promote_reference(target, releases) if promote else None
    return PublishResult(
        target=target,
        latest=latest,
        already_published=False,
        samples=check.samples,
        gate=gate,
        promotion=promotion,
    )


# -- promote ----------------------------------------------------------------------------------


def promote_reference(release_dir: str | Path, releases_dir: str | Path) -> Promotion:
    """Make a published release's reference change model the next version's baseline.

    Copies the change-model weights named in ``reference/metrics.json``
    (``weights["change_model"]``, checked against its recorded sha256) with their
    ``card.json``/``card.md`` to ``<releases>/baselines/<sha256[:16]>/`` (the content hash of the
    weights, as :func:`geodelta.annotators.models.change_model.save_model` names folders), checks that
    the copy loads with that hash, writes ``<releases>/BASELINE`` (JSON) and
    ``<release>/reference/promotion.json``. Idempotent: promoting the same weights again
    rewrites the same files.

    Args:
        release_dir: the (published) release whose reference model is promoted.
        releases_dir: the releases folder.

    Returns:
        The promotion (``config_line`` is what the next version's config needs).

    Raises:
        PublishError: no reference metrics or change-model weights, a hash mismatch, or
            weights that do not load as a baseline model.
    """
    from geodelta.annotators.models.change_model import ModelIntegrityError, load_model

    root = Path(release_dir)
    releases = Path(releases_dir)
    metrics, unreadable = _read_metrics(root)
    if metrics is None:
        raise PublishError(
            unreadable
            or f"cannot promote: {root / REFERENCE_METRICS} is missing; run `geodelta "
            f"train-reference {root}` first",
            release=root,
        )
    ref = metrics.weights.get("change_model")
    if ref is None:
        raise PublishError(
            f"cannot promote: {root / REFERENCE_METRICS} names no 'change_model' weights "
            f"(it has {sorted(metrics.weights)}); re-run `geodelta train-reference {root}`",
            release=root,
        )
    src = root / ref.path
    if not src.is_file():
        raise PublishError(f"cannot promote: {src} (metrics.json weights) is missing", release=root)
    file_sha = sha256_file(src)
    if file_sha != ref.sha256:
        raise PublishError(
            f"cannot promote: {src} has sha256 {file_sha[:16]}, metrics.json records "
            f"{ref.sha256[:16]}; the file changed after training, re-run train-reference",
            release=root,
        )
    try:
        _, card = load_model(src)
    except (ModelIntegrityError, FileNotFoundError) as exc:
        raise PublishError(f"cannot promote {src}: {exc}", release=root) from exc
    digest = str(card["sha256"])

    dest = releases / BASELINES_DIR / digest[:16]
    weights = dest / "weights.pt"
    if not (weights.is_file() and sha256_file(weights) == file_sha):
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        tmp.mkdir(parents=True)
        try:
            shutil.copyfile(src, tmp / "weights.pt")
            for extra in ("card.json", "card.md"):
                if (src.parent / extra).is_file():
                    shutil.copyfile(src.parent / extra, tmp / extra)
            if not (tmp / "card.json").exists():  # load_model reads the card beside the weights
                (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
            if dest.exists():
                shutil.rmtree(dest)  # a partial or corrupted copy: replace it
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        _, copied = load_model(weights)
    except (ModelIntegrityError, FileNotFoundError) as exc:
        raise PublishError(f"the promoted copy {weights} does not load: {exc}") from exc
    if copied.get("sha256") != digest:
        raise PublishError(
            f"the promoted copy {weights} hashes to {str(copied.get('sha256'))[:16]}, "
            f"not {digest[:16]}"
        )

    name = metrics.release
    promotion = Promotion(
        directory=dest.resolve(),
        weights=weights.resolve(),
        sha256=digest,
        model_id=str(copied.get("model_id", f"fc-siam-diff@sha256:{digest}")),
        file_sha256=file_sha,
        release=name,
        pointer=releases / BASELINE_POINTER,
    )
    record = {
        "weights": weights.relative_to(releases).as_posix(),
        "sha256": digest,
        "model_id": promotion.model_id,
        "file_sha256": file_sha,
        "release": name,
        "config_hash": metrics.config_hash,
        "metrics": {m: metrics.metric(m) for m in ("masks.f1", "masks.iou")},
        "config_line": f"baseline.weights: {promotion.weights}",
    }
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    _write_if_changed(promotion.pointer, text)
    (root / REFERENCE_DIR).mkdir(exist_ok=True)
    _write_if_changed(root / PROMOTION_RECORD, text)
    return promotion
