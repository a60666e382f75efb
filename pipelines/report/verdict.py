"""The report's first screen: PUBLISH or DO NOT PUBLISH, and why.

The verdict is what ``geodelta release`` would decide, from the same code: the release must
pass :func:`~geodelta.pipelines.release.verify.verify_release` with ``strict`` and
:func:`~geodelta.pipelines.release.gate.check_gate` (the gate rules of the release's own config
over its reference metrics, ``max_drop`` against the report's previous version). Nothing else
blocks, so the page and the publisher cannot disagree. The other reasons are shown with their
values but inform only: the Great Expectations checkpoint (failing rows were quarantined before
sharding; a failed table-level expectation is a warning), the quarantine rate (the gate sets no
limit on it), the reference metrics old -> new, and the catalog drift since the previous
snapshot (``drift.json``, written by ``build --from``; "no drift check" when absent).

Why the report computes the gate rather than reading a ``gate.json``: the gate runs at
publication, after the report is written (build -> report, train-reference -> report again,
release -> gate), and its answer depends on the previous release; a file written at build time
would be stale when the gate runs, one written at publication would change a manifest that is
then recorded as published. Re-running the gate's own function on the release is one source of
truth at both moments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from geodelta.errors import GeodeltaError
from geodelta.pipelines.release.layout import (
    DRIFT,
    MANIFEST,
    REPORT_DIR,
    REPORT_FILE,
    VERIFIED,
    read_json,
    read_manifest,
)
from geodelta.pipelines.report.data import Release
from geodelta.pipelines.report.metrics import Signed, pct
from geodelta.pipelines.report.sections import Section
from geodelta.schemas.reference import ReferenceMetrics

if TYPE_CHECKING:  # pragma: no cover
    from geodelta.pipelines.release.verify import VerifyResult

__all__ = [
    "DRIFT_FILE",
    "REFERENCE_HEADLINE",
    "MetricChange",
    "Reason",
    "Verdict",
    "metric_changes",
    "reference_metrics",
    "release_verdict",
    "verdict_section",
]

#: The drift record of a ``build --from`` (written by the drift check).
DRIFT_FILE = DRIFT

#: Reference metrics shown old -> new: (label, dotted name of :class:`ReferenceMetrics`).
REFERENCE_HEADLINE: tuple[tuple[str, str], ...] = (
    ("masks F1", "masks.f1"),
    ("masks IoU", "masks.iou"),
    ("masks precision", "masks.precision"),
    ("masks recall", "masks.recall"),
    ("retrieval R@1", "retrieval.recall_at_1"),
    ("retrieval R@5", "retrieval.recall_at_5"),
    ("retrieval R@10", "retrieval.recall_at_10"),
    ("captions BLEU-4", "captions.bleu4"),
    ("captions ROUGE-L", "captions.rouge_l"),
    ("captions CIDEr", "captions.cider"),
)

#: How many problems of one check the first screen lists (the rest: "... and N more").
_SHOWN = 5

State = Literal["pass", "fail", "warn", "info", "skip"]


@dataclass(frozen=True)
class Reason:
    """One line of the verdict.

    Attributes:
        check: what was checked (``verify``, ``gate.rules[0] masks.f1``, ``quarantine rate``).
        state: ``fail`` blocks publication (verify and gate only); ``pass``; ``warn`` and
            ``info`` inform; ``skip``: not checked (``detail`` says why).
        value: the release's value, as text.
        threshold: the limit it is held to, as text ('' when none).
        detail: why, in one or a few sentences.
    """

    check: str
    state: State
    value: str = ""
    threshold: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    """PUBLISH (``publish``) or DO NOT PUBLISH, with every reason.

    Attributes:
        publish: verify (strict) and the gate both pass: ``geodelta release`` would publish.
        reasons: blocking reasons first, then the others in a fixed order.
        previous: the version the gate's ``max_drop`` rules and the metric changes compare
            with (None: no previous version given).
        metrics: reference metrics old -> new (empty: neither release has reference metrics).
    """

    publish: bool
    reasons: tuple[Reason, ...]
    previous: str | None = None
    metrics: tuple[MetricChange, ...] = ()

    @property
    def blocking(self) -> tuple[Reason, ...]:
        """The reasons that say DO NOT PUBLISH."""
        return tuple(r for r in self.reasons if r.state == "fail")


def _num(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _path_free(text: str, paths: dict[Path, str]) -> str:
    """``text`` with the folders of ``paths`` (as given and resolved) replaced by their names
    (the page must not depend on where the releases lie); longest first, whole paths only."""
    forms = {
        form: name for path, name in paths.items() for form in (str(path), str(path.resolve()))
    }
    for form in sorted(forms, key=lambda f: (-len(f), f)):
        text = re.sub(rf"(?<![\w./-]){re.escape(form)}(?![\w.-])", forms[form], text)
    return text


def reference_metrics(data: Any) -> ReferenceMetrics | None:
    """``reference/metrics.json`` as read by :mod:`.data` as a record (None: absent, invalid)."""
    if data is None:
        return None
    from pydantic import ValidationError

    try:
        return ReferenceMetrics.model_validate(data)
    except ValidationError:
        return None


@dataclass(frozen=True)
class MetricChange:
    """One reference metric old -> new (texts), its change and the gate's rule on it."""

    label: str
    previous: str
    current: str
    change: Signed | None
    rule: str


def metric_changes(
    current: ReferenceMetrics | None,
    previous: ReferenceMetrics | None,
    rules: dict[str, str] | None = None,
) -> tuple[MetricChange, ...]:
    """Reference metrics old -> new (:data:`REFERENCE_HEADLINE`); empty when neither release
    has reference metrics."""
    if current is None and previous is None:
        return ()
    out = []
    for label, name in REFERENCE_HEADLINE:
        c = current.metric(name) if current is not None else None
        p = previous.metric(name) if previous is not None else None
        change = None
        if c is not None and p is not None:
            d = round(c - p, 3)
            change = Signed(
                f"{d:+.3f}" if d else "0.000", "pos" if d > 0 else "neg" if d < 0 else "muted"
            )
        out.append(MetricChange(label, _num(p), _num(c), change, (rules or {}).get(name, "")))
    return tuple(out)


def _verify_reason(
    rel: Release, paths: dict[Path, str], verified: VerifyResult | None = None
) -> Reason:
    from geodelta.pipelines.release.verify import verify_release

    result = (  # as `geodelta release` verifies
        verified if verified is not None else verify_release(rel.root, strict=True)
    )
    # the page being rendered replaces an earlier render of itself (a --resume, a re-render):
    # that file is listed once this render is written, so it is no problem of the release
    own = {
        f"{rel}: in the release folder, not in {MANIFEST}"
        for rel in (f"{REPORT_DIR}/{REPORT_FILE}", VERIFIED)
    }
    problems = [p for p in result.problems if p not in own]
    if not problems:
        # the same words whether this verify decoded a member or trusted its digest (the
        # workers' that encoded it, a previous release's report/verified.json): the page is a
        # function of the release, regenerated byte for byte (the count goes to the log)
        return Reason(
            "verify (strict)",
            "pass",
            f"{result.samples} samples",
            "0 problems",
            "every checksum, member and count matches the manifest, every PNG and GeoTIFF "
            "member decodes; no unlisted file",
        )
    shown = [_path_free(p, paths) for p in problems[:_SHOWN]]
    more = len(problems) - len(shown)
    return Reason(
        "verify (strict)",
        "fail",
        f"{len(problems)} problem(s)",
        "0 problems",
        "; ".join(shown) + (f"; ... and {more} more" if more else ""),
    )


def _rule_threshold(rule: Any) -> str:
    parts = []
    if rule.min is not None:
        parts.append(f"min {rule.min:g}")
    if rule.max_drop is not None:
        if rule.previous is None:
            parts.append(f"max_drop {rule.max_drop:g} (no previous metrics)")
        else:
            parts.append(
                f"max_drop {rule.max_drop:g} below previous {_num(rule.previous)} "
                f"(>= {rule.previous - rule.max_drop:.3f})"
            )
    return "; ".join(parts)


def _gate_reasons(
    root: Path, previous: Path | None, paths: dict[Path, str]
) -> tuple[list[Reason], dict[str, str]]:
    """The gate's rules (one reason each), its other problems and its notes; the rule text per
    metric (for the metrics table)."""
    from geodelta.pipelines.release.gate import PublishError, check_gate

    try:
        gate = check_gate(root, previous)
    except PublishError as exc:  # an invalid gate config: the publisher refuses it too
        return [Reason("gate", "fail", "", "", _path_free(str(exc), paths))], {}
    reasons: list[Reason] = []
    rules: dict[str, str] = {}
    rule_messages = set()
    for r in gate.rules:
        threshold = _rule_threshold(r)
        rules[r.metric] = f"gate.rules[{r.index}]: {threshold}"
        if not r.passed:
            state: State = "fail"
            detail = r.message
            rule_messages.add(r.message)
        elif r.value is None:
            state, detail = "skip", "; ".join(r.skipped)
        else:
            state, detail = "pass", "; ".join(r.skipped)
        reasons.append(
            Reason(
                f"gate.rules[{r.index}] {r.metric}",
                state,
                _num(r.value),
                threshold,
                _path_free(detail, paths),
            )
        )
    for problem in gate.problems:  # missing or stale metrics, a rule that cannot be checked
        if problem not in rule_messages:
            reasons.append(Reason("gate", "fail", "", "", _path_free(problem, paths)))
    if not gate.rules and gate.ok:
        reasons.append(Reason("gate", "pass", "", "", "the gate has no rules"))
    for note in gate.notes:
        reasons.append(Reason("gate", "info", "", "", _path_free(note, paths)))
    return reasons, rules


def _gx_reason(rel: Release) -> Reason:
    check = "Great Expectations"
    if rel.gx_problem is not None:
        return Reason(check, "warn", "unreadable", "", rel.gx_problem)
    summary = rel.gx_summary
    if summary is None:
        return Reason(check, "skip", "not run", "", "validation.great_expectations is off")
    suites = [s for s in summary.get("suites", []) if isinstance(s, dict)]
    failing = [
        e
        for s in suites
        for e in s.get("expectations", [])
        if isinstance(e, dict) and not e.get("success", True)
    ]
    evaluated = sum(int(s.get("evaluated", 0)) for s in suites)
    value = f"{evaluated - len(failing)} of {evaluated} expectations held"
    whole = [str(e.get("name", "")) for e in failing if not e.get("per_row", True)]
    rows = [str(e.get("name", "")) for e in failing if e.get("per_row", True)]
    quarantined = summary.get("samples_quarantined", 0)
    if whole:
        return Reason(
            check,
            "warn",
            value,
            "every expectation",
            f"the release as a whole fails {', '.join(whole)} (a table-level expectation: "
            "nothing was quarantined for it; the gate does not check it)",
        )
    if rows:
        return Reason(
            check,
            "info",
            value,
            "every expectation",
            f"{quarantined} sample(s) failed {', '.join(sorted(set(rows)))} and were quarantined "
            "before sharding: none of them is in the release",
        )
    return Reason(check, "pass", value, "every expectation", "the checkpoint passed")


def _quarantine_reason(rel: Release) -> Reason:
    m = rel.manifest
    kept, dropped = sum(m.splits.values()), sum(m.quarantined.values())
    total = kept + dropped
    rate = dropped / total if total else 0.0
    top = sorted(m.quarantined.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    detail = "; ".join(f"{k} x{n}" for k, n in top) if top else "nothing quarantined"
    return Reason(
        "quarantine rate",
        "info",
        f"{pct(rate)} ({dropped} of {total} records)",
        "no limit (the gate sets none)",
        detail,
    )


def _reference_reason(cur: ReferenceMetrics | None, problem: str | None) -> Reason:
    if problem is not None:
        return Reason("reference model", "warn", "unreadable", "", problem)
    if cur is None:
        return Reason("reference model", "skip", "not trained", "", "run geodelta train-reference")
    return Reason(
        "reference model",
        "info",
        f"F1 {cur.masks.f1:.3f}, R@1 {cur.retrieval.recall_at_1:.3f}, "
        f"CIDEr {cur.captions.cider:.3f}",
        "see the gate rules",
        f"trained on {cur.train_split} ({cur.train_samples}), evaluated on {cur.eval_split} "
        f"({cur.eval_samples}); every metric old -> new in the table below",
    )


def _drift_reason(rel: Release) -> Reason:
    if not (rel.root / DRIFT_FILE).is_file():
        return Reason("catalog drift", "skip", "", "", "no drift check (no previous snapshot)")
    try:
        d = read_json(rel.root, DRIFT_FILE)
        value = (
            f"{int(d['added'])} added, {int(d['removed'])} removed, {int(d['changed'])} changed "
            f"item(s)"
        )
        detail = (
            f"since the snapshot of {d['previous_version']}: {int(d['affected_samples'])} "
            "sample(s) affected (informational: drift does not block publication)"
        )
    except (GeodeltaError, KeyError, TypeError, ValueError, OSError) as exc:
        return Reason("catalog drift", "warn", "unreadable", "", f"{DRIFT_FILE}: {exc}")
    return Reason("catalog drift", "info", value, "", detail)


_ORDER: dict[str, int] = {"fail": 0, "warn": 1, "pass": 2, "info": 2, "skip": 2}


def release_verdict(
    rel: Release, previous: str | Path | None = None, *, verified: VerifyResult | None = None
) -> Verdict:
    """PUBLISH or DO NOT PUBLISH for a release, with every reason.

    Args:
        rel: the release (opened by :func:`~.data.open_release`; shards need not be scanned).
        previous: the previous version's release folder (the gate's ``max_drop`` rules and the
            metric changes compare with it), or None.
        verified: what ``verify_release(rel.root, strict=True)`` returned for it already
            (:func:`~.scan.scan_release`); None: verify it here.

    Returns:
        The verdict: ``publish`` is True exactly when strict verification and the gate pass.
    """
    from geodelta.pipelines.release.gate import read_metrics

    m = rel.manifest
    paths = {rel.root: f"{m.name}-{m.version}"}  # not the folder: the page is path-free
    prev_root = Path(previous) if previous is not None else None
    prev_version = None
    if prev_root is not None:
        pm = read_manifest(prev_root)
        prev_version = pm.version
        paths[prev_root] = f"{pm.name}-{pm.version}"
    verify = _verify_reason(rel, paths, verified)
    gate, rules = _gate_reasons(rel.root, prev_root, paths)
    current = reference_metrics(rel.reference)
    prev_metrics = read_metrics(prev_root)[0] if prev_root is not None else None
    others = [
        _gx_reason(rel),
        _quarantine_reason(rel),
        _reference_reason(current, rel.reference_problem),
        _drift_reason(rel),
    ]
    reasons = sorted([verify, *gate, *others], key=lambda r: _ORDER[r.state])  # stable
    return Verdict(
        publish=not any(r.state == "fail" for r in reasons),
        reasons=tuple(reasons),
        previous=prev_version,
        metrics=metric_changes(current, prev_metrics, rules),
    )


def _headline(r: Reason) -> str:
    """A blocking reason in a few words for the banner ('' when another line says it)."""
    if r.check.startswith("gate.rules["):
        if r.value == "n/a":  # no metrics: the gate's own line says so
            return ""
        return f"{r.check.split(' ', 1)[1]} = {r.value} ({r.threshold})"
    first = r.detail.split("; ")[0]
    return f"{r.check}: {first.removeprefix('gate: ')}"


def verdict_section(
    rel: Release, previous: str | Path | None = None, *, verified: VerifyResult | None = None
) -> Section:
    """The first section of the page: the verdict banner, its reasons, the metric changes
    (``verified``: as for :func:`release_verdict`)."""
    v = release_verdict(rel, previous, verified=verified)
    blocking: Sequence[Reason] = v.blocking
    return Section(
        "verdict",
        "Verdict",
        {
            "v": v,
            "word": "PUBLISH" if v.publish else "DO NOT PUBLISH",
            "why": (
                "strict verification and every gate rule pass"
                if v.publish
                else "; ".join(dict.fromkeys(_headline(r) for r in blocking if _headline(r)))
            ),
        },
    )
