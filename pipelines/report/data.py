"""Reading a release for the report: the manifest, both tables, the shards, the side files.

Everything is read through the one reader of a release
(:mod:`geodelta.pipelines.release.layout`); this module only keeps what the report needs:
per-sample digests and text (one pass over every shard), the members of the few samples the
page shows, the Great Expectations summary and the reference model's metrics. A side file that
is missing reads as ``None``; one that cannot be read reads as ``None`` with a problem text
(relative to the release, so that the page does not depend on where the release lies).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geodelta.errors import ReleaseError
from geodelta.pipelines.release.layout import (
    GX_SUMMARY,
    QUARANTINE_TABLE,
    REFERENCE_METRICS,
    SAMPLES_TABLE,
    iter_tar_samples,
    read_json,
    read_manifest,
    read_table,
)
from geodelta.schemas import ReleaseManifest

__all__ = [
    "PROVENANCE_FIELDS",
    "Release",
    "SampleInfo",
    "cfg",
    "gx_failed_keys",
    "load_release",
    "open_release",
    "review_count",
    "review_keys",
    "scan_shards",
]

#: Metadata fields that change with every build and are not counted as a sample change.
PROVENANCE_FIELDS: frozenset[str] = frozenset({"config_hash", "code_version"})

#: Samples in the review list when the reference metrics do not say (``review_top``).
_DEFAULT_REVIEW = 20


@dataclass
class SampleInfo:
    """What the report needs of one sample read from its shard."""

    members: dict[str, str]  # member -> sha256, all members but ``json``
    meta_fields: dict[str, str]  # metadata field -> sha256 of its JSON (provenance excepted)
    transitions: list[tuple[str, str, int, float]]  # (from, to, pixels, area_m2)
    captions: list[str]
    qa: list[tuple[str, str]]  # (type, answer)


@dataclass
class Release:
    """A release as the report sees it.

    Attributes:
        root: the release folder.
        manifest: its ``manifest.json``.
        rows: rows of ``samples.parquet``, sorted by key (empty when the table is absent).
        quarantine: rows of ``quarantine.parquet``.
        samples: key -> :class:`SampleInfo`, filled by :func:`scan_shards`.
        kept: key -> members, for the samples the page shows (filled by :func:`scan_shards`).
        problems: shards that could not be read.
        gx_summary: ``validation/summary.json`` as a dict, ``None`` when absent or unreadable.
        gx_problem: why the summary could not be read, or ``None``.
        reference: ``reference/metrics.json`` as read, ``None`` when absent or unreadable.
        reference_problem: why the metrics could not be read, or ``None``.
    """

    root: Path
    manifest: ReleaseManifest
    rows: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    samples: dict[str, SampleInfo] = field(default_factory=dict)
    kept: dict[str, dict[str, bytes]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    gx_summary: dict[str, Any] | None = None
    gx_problem: str | None = None
    reference: Any = None
    reference_problem: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The normalised build config of the release (``manifest.config``)."""
        return self.manifest.config


def cfg(config: dict[str, Any], section: str, name: str, default: Any) -> Any:
    """``config[section][name]``, or ``default`` when either is missing."""
    value = config.get(section, {})
    return value.get(name, default) if isinstance(value, dict) else default


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_sha(value: Any) -> str:
    return _sha(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def _sample_info(members: dict[str, bytes]) -> SampleInfo:
    meta = json.loads(members.get("json", b"{}"))
    facts = meta.get("facts", {}) if isinstance(meta, dict) else {}
    captions = json.loads(members.get("captions.json", b"[]"))
    qa = json.loads(members.get("qa.json", b"[]"))
    return SampleInfo(
        members={n: _sha(v) for n, v in sorted(members.items()) if n != "json"},
        meta_fields={
            k: _json_sha(v) for k, v in sorted(meta.items()) if k not in PROVENANCE_FIELDS
        },
        transitions=[
            (
                str(t.get("from_class", "")),
                str(t.get("to_class", "")),
                int(t.get("pixels", 0)),
                float(t.get("area_m2", 0.0)),
            )
            for t in facts.get("transitions", [])
        ],
        captions=[str(c) for c in captions],
        qa=[(str(q.get("type", "")), str(q.get("answer", ""))) for q in qa],
    )


def _rows(root: Path, name: str) -> list[dict[str, Any]]:
    """The rows of one table of the release; none when the table is absent."""
    if not (root / name).is_file():
        return []
    return list(read_table(root, name).to_pylist())


def _side_json(root: Path, rel: str) -> tuple[Any, str | None]:
    """A JSON side file: ``(data, None)``, ``(None, why)``, or ``(None, None)`` when absent."""
    if not (root / rel).is_file():
        return None, None
    try:
        return read_json(root, rel), None
    except ReleaseError as exc:  # names the file by its full path: keep the page path-free
        return None, str(exc).replace(str(root / rel), rel)
    except (OSError, ValueError) as exc:  # not UTF-8, unreadable
        return None, f"{rel} cannot be read: {exc}"


def open_release(root: str | Path) -> Release:
    """Read the manifest, both tables and the side files (no shard yet).

    Raises:
        ReleaseError: the release has no (valid) manifest.
    """
    root = Path(root)
    manifest = read_manifest(root)
    rows = sorted(_rows(root, SAMPLES_TABLE), key=lambda r: str(r["key"]))
    rel = Release(root, manifest, rows, _rows(root, QUARANTINE_TABLE))
    summary, rel.gx_problem = _side_json(root, GX_SUMMARY)
    if summary is not None and not isinstance(summary, dict):
        rel.gx_problem = f"{GX_SUMMARY} is not a JSON object"
    else:
        rel.gx_summary = summary
    rel.reference, rel.reference_problem = _side_json(root, REFERENCE_METRICS)
    return rel


def scan_shards(rel: Release, keep: Iterable[str] = ()) -> Release:
    """One pass over every shard: per-sample digests and text, members of the ``keep`` keys."""
    wanted = set(keep)
    for shard in rel.manifest.shards:
        try:
            for key, members in iter_tar_samples(rel.root / shard.path):
                rel.samples[key] = _sample_info(members)
                if key in wanted:
                    rel.kept[key] = members
        except (OSError, tarfile.TarError, json.JSONDecodeError) as exc:
            rel.problems.append(f"{shard.path}: cannot be read ({type(exc).__name__}: {exc})")
    return rel


def load_release(root: str | Path, keep: Iterable[str] = ()) -> Release:
    """:func:`open_release`, then :func:`scan_shards`."""
    return scan_shards(open_release(root), keep)


def gx_failed_keys(summary: dict[str, Any] | None) -> dict[str, str]:
    """Sample key -> first failing expectation, from the ``unexpected_keys`` of the summary."""
    out: dict[str, str] = {}
    if summary is None:
        return out
    for suite in summary.get("suites", []) if isinstance(summary.get("suites"), list) else []:
        for exp in suite.get("expectations", []) if isinstance(suite, dict) else []:
            if not isinstance(exp, dict) or exp.get("success", True):
                continue
            for key in exp.get("unexpected_keys", []) or []:
                out.setdefault(str(key), str(exp.get("name", "gx")))
    return out


def review_keys(rows: Sequence[dict[str, Any]], n: int) -> list[str]:
    """The ``n`` keys with the highest ``disagreement`` (samples.parquet), ties by key."""
    scored = [r for r in rows if isinstance(r.get("disagreement"), int | float)]
    scored.sort(key=lambda r: (-float(r["disagreement"]), str(r["key"])))
    return [str(r["key"]) for r in scored[: max(n, 0)]]


def review_count(reference: Any) -> int:
    """How many samples the review list shows (``reference_config.review_top`` of the metrics)."""
    try:
        return int(reference["training"]["reference_config"]["review_top"])
    except (ValueError, KeyError, TypeError):
        return _DEFAULT_REVIEW
