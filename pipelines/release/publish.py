"""Publish a release behind its gate, and promote its reference model to the next baseline.

The gate itself (rules, :func:`check_gate`, :func:`format_rules`) is
:mod:`geodelta.pipelines.release.gate`; its names are importable from here too.

``geodelta release RELEASE_DIR --releases DIR`` (and the DAG's ``publish`` task) call
:func:`publish_release`:

1. :func:`~geodelta.pipelines.release.verify.verify_release` must pass with ``strict`` (every
   checksum and member, an unedited manifest, no file the manifest does not list);
2. :func:`check_gate` must pass: the rules of the release's OWN config (the ``gate`` section of
   ``manifest.json``'s ``config``; the defaults of
   :class:`~geodelta.schemas.config.GateConfig` when absent) over the reference metrics
   (``<release>/reference/metrics.json``, written by ``geodelta train-reference``), each
   compared with a floor (``min``) and with the previous release's value (``max_drop``);
3. the release folder is renamed to ``<releases>/<name>-<version>`` (:func:`os.replace`:
   atomic on one filesystem), its manifest's sha256 is recorded in
   ``<releases>/published/<name>-<version>.sha256`` (verify compares it: an edit after
   publishing shows), then the ``LATEST`` pointer file is replaced atomically.

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
from dataclasses import dataclass, field
from pathlib import Path

from geodelta._io import json_bytes, sha256_file, tmp_name, write_atomic
from geodelta.pipelines.release.gate import (
    GateError,
    GateResult,
    PublishError,
    RuleResult,
    check_gate,
    format_rules,
    read_metrics,
    release_manifest,
)
from geodelta.pipelines.release.layout import (
    BASELINE_POINTER,
    BASELINES_DIR,
    LATEST,
    MANIFEST,
    PROMOTION_RECORD,
    PUBLISHED_DIR,
    STAGING,
)
from geodelta.pipelines.release.manifest import checksum_line, manifest_sha256, recorded_sha256
from geodelta.schemas.reference import REFERENCE_DIR, REFERENCE_METRICS

# The gate's names are re-exported: the CLI and the DAG meet them where they publish.
__all__ = [
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
    manifest = release_manifest(Path(release_dir), "release")
    return None if latest.name == f"{manifest.name}-{manifest.version}" else latest


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
        PublishError: the release holds 0 samples, verification failed, the version was
            published from another config, the folder cannot be renamed into
            ``releases_dir``, or the promotion failed (the release is then published; only the
            promotion is missing).
    """
    from geodelta.pipelines.release.verify import verify_release

    src = Path(release_dir)
    releases = Path(releases_dir)
    manifest = release_manifest(src, "release")
    if not sum(manifest.splits.values()):
        from geodelta.pipelines.release.verify import empty_release_problem

        raise PublishError(f"{src}: {empty_release_problem(manifest)}", release=src)
    name = f"{manifest.name}-{manifest.version}"
    releases.mkdir(parents=True, exist_ok=True)
    target = releases / name

    if target.exists():
        published = release_manifest(target, "published")
        if published.config_hash != manifest.config_hash:
            raise PublishError(
                f"{target} already holds version {manifest.version} built from another config "
                f"(hash {published.config_hash[:12]}, this release {manifest.config_hash[:12]}); "
                "bump 'version' (published versions are never overwritten)",
                release=src,
            )
        _check_published(target, releases)
        same = src.resolve() == target.resolve()
        return _point_latest(
            target, releases, promote=promote, samples=0, gate=None, leftover=None if same else src
        )

    check = verify_release(src, strict=True)  # a file the manifest does not list is refused
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
    _record_published(target, releases)
    return _point_latest(target, releases, promote=promote, samples=check.samples, gate=gate)


def _published_record(target: Path, releases: Path) -> Path:
    return releases / PUBLISHED_DIR / f"{target.name}.sha256"


def _record_published(target: Path, releases: Path) -> None:
    """``<releases>/published/<name>-<version>.sha256``: the manifest's sha256 as published
    (``sha256sum -c`` format, relative to ``releases``), so an edit afterwards shows in verify."""
    line = checksum_line(manifest_sha256(target), f"{target.name}/{MANIFEST}")
    _write_if_changed(_published_record(target, releases), line)


def _check_published(target: Path, releases: Path) -> None:
    """Refuse to point at a published release whose manifest changed since it was published."""
    recorded = recorded_sha256(_published_record(target, releases))
    if recorded is None:
        _record_published(target, releases)  # published before records were kept
    elif recorded != manifest_sha256(target):
        raise PublishError(
            f"{target / MANIFEST} changed after it was published (its sha256 is not the one "
            f"{_published_record(target, releases)} records); restore it from a copy, or run "
            f"`geodelta verify {target}`",
            release=target,
        )


def _point_latest(
    target: Path,
    releases: Path,
    *,
    promote: bool,
    samples: int,
    gate: GateResult | None,
    leftover: Path | None = None,
) -> PublishResult:
    """The last step of a publication (new or repeated): ``LATEST`` names ``target``, the
    reference model is promoted when asked; the result (``gate`` None: already published)."""
    latest = releases / LATEST
    _write_if_changed(latest, target.name + "\n")
    promotion = promote_reference(target, releases) if promote else None
    return PublishResult(
        target=target,
        latest=latest,
        already_published=gate is None,
        samples=samples,
        gate=gate,
        promotion=promotion,
        leftover=leftover,
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
    metrics, unreadable = read_metrics(root)
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
        tmp = tmp_name(dest)
        tmp.mkdir(parents=True)
        try:
            shutil.copyfile(src, tmp / "weights.pt")
            for extra in ("card.json", "card.md"):
                if (src.parent / extra).is_file():
                    shutil.copyfile(src.parent / extra, tmp / extra)
            if not (tmp / "card.json").exists():  # load_model reads the card beside the weights
                (tmp / "card.json").write_bytes(json_bytes(card))
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
    text = json_bytes(record).decode("utf-8")
    _write_if_changed(promotion.pointer, text)
    (root / REFERENCE_DIR).mkdir(exist_ok=True)
    _write_if_changed(root / PROMOTION_RECORD, text)
    return promotion
