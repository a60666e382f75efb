"""The release gate: the rules of a release's own config over its reference metrics.

:func:`check_gate` reads the ``gate`` section of the config recorded in ``manifest.json`` (the
defaults of :class:`~geodelta.schemas.config.GateConfig` when absent) and checks every rule's
metric in ``<release>/reference/metrics.json`` against a floor (``min``) and against the
previous release's value (``max_drop``); :func:`format_rules` renders the outcome as table rows.
:func:`~geodelta.pipelines.release.publish.publish_release` refuses a release the gate refuses
(:class:`GateError`). The publish errors live here because :class:`GateError` is one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from geodelta.errors import ReleaseError
from geodelta.pipelines.release.layout import read_manifest, read_record
from geodelta.schemas import ReleaseManifest
from geodelta.schemas.config import GateConfig, GateRule
from geodelta.schemas.reference import REFERENCE_METRICS, ReferenceMetrics

__all__ = [
    "GateError",
    "GateResult",
    "PublishError",
    "RuleResult",
    "check_gate",
    "format_rules",
    "read_metrics",
    "release_manifest",
]

#: Tolerance of the rule comparisons (metrics are stored as floats).
_EPS = 1e-9


class PublishError(ReleaseError):
    """A release that cannot be published; says what to change.

    A :class:`~geodelta.errors.ReleaseError` (so a ``RuntimeError``); ``path`` is the release.

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
        super().__init__(message, path=self.release)


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


# -- reading a release ---------------------------------------------------------------------


def release_manifest(release_dir: Path, what: str) -> ReleaseManifest:
    """The manifest of a release, or :class:`PublishError` naming ``what`` it was to be."""
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


def read_metrics(release_dir: Path) -> tuple[ReferenceMetrics | None, str | None]:
    """A release's reference metrics.

    Returns:
        ``(metrics, None)``; ``(None, None)`` when absent; ``(None, problem)`` when unreadable.
    """
    if not (release_dir / REFERENCE_METRICS).is_file():
        return None, None
    try:
        metrics = read_record(
            release_dir, REFERENCE_METRICS, ReferenceMetrics, what="reference metrics"
        )
    except ReleaseError as exc:
        return None, str(exc)
    return metrics, None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


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


def _absent_metric(index: int, rule: GateRule) -> RuleResult:
    """A rule on a metric these reference metrics do not hold (``retrieval_temporal.*`` of a
    pair release): it fails, naming the rule to remove."""
    return RuleResult(
        index=index,
        metric=rule.metric,
        value=None,
        previous=None,
        min=rule.min,
        max_drop=rule.max_drop,
        passed=False,
        skipped=(f"{rule.metric}: not in the reference metrics",),
        message=(
            f"gate: {rule.metric} is measured on series releases only (time.series) and this "
            f"release has none; remove gate.rules[{index}] or build with time.series"
        ),
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
    manifest = release_manifest(root, "release")
    name = f"{manifest.name}-{manifest.version}"
    gate = _gate_of(root, manifest.config)
    prev_root = Path(previous) if previous is not None else None
    if prev_root is not None:
        release_manifest(prev_root, "previous release")

    problems: list[str] = []
    notes: list[str] = []
    metrics, unreadable = read_metrics(root)
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
        prev_metrics, prev_unreadable = read_metrics(prev_root)
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
            if not metrics.has_metric(rule.metric):  # a series-only metric, a pair release
                result = _absent_metric(i, rule)
                rules.append(result)
                problems.append(result.message)
                continue
            value = metrics.metric(rule.metric)
            before = (
                prev_metrics.metric(rule.metric)
                if prev_metrics is not None and prev_metrics.has_metric(rule.metric)
                else None
            )
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
