"""Every file name of a release, in one place.

A release directory holds::

    manifest.json            written last: files with sha256, splits, shards, members
    README.md                the dataset card
    collection.json          a STAC collection describing the release
    samples.parquet          one row per sample
    quarantine.parquet       one row per quarantined record, with its reason
    shards/<split>-<n>.tar   WebDataset shards
    validation/              Great Expectations results (summary.json, data_docs/)
    reference/               the reference model: metrics, model card, weights
    report/index.html        the quality report
    .staging/                a build's staging area (removed when the build succeeds)

Other modules name these files through the constants here, never by their literal.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from geodelta.errors import ReleaseError
from geodelta.schemas import ReleaseManifest
from geodelta.schemas.reference import REFERENCE_CARD, REFERENCE_DIR, REFERENCE_METRICS

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "BASELINES_DIR",
    "BASELINE_POINTER",
    "CARD",
    "COLLECTION",
    "DATA_DOCS_DIR",
    "GX_SUMMARY",
    "LATEST",
    "MANIFEST",
    "QUARANTINE_TABLE",
    "REFERENCE_CARD",
    "REFERENCE_DIR",
    "REFERENCE_METRICS",
    "REPORT_DIR",
    "REPORT_FILE",
    "SAMPLES_TABLE",
    "SHARDS_DIR",
    "STAGING",
    "VALIDATION_DIR",
    "Mode",
    "iter_tar_samples",
    "read_json",
    "read_manifest",
    "read_table",
]

#: How a build treats an existing release folder: refuse it, finish it, or start again.
Mode = Literal["fresh", "resume", "overwrite"]

MANIFEST = "manifest.json"
CARD = "README.md"
COLLECTION = "collection.json"
SAMPLES_TABLE = "samples.parquet"
QUARANTINE_TABLE = "quarantine.parquet"
SHARDS_DIR = "shards"
VALIDATION_DIR = "validation"
GX_SUMMARY = f"{VALIDATION_DIR}/summary.json"
DATA_DOCS_DIR = "data_docs"
REPORT_DIR = "report"
REPORT_FILE = "index.html"
STAGING = ".staging"
# A folder of published releases (geodelta release --releases DIR):
LATEST = "LATEST"
BASELINES_DIR = "baselines"
BASELINE_POINTER = "BASELINE"


# --------------------------------------------------------------------------------------------
# The one reader of a release's files


def read_manifest(release_dir: str | Path) -> ReleaseManifest:
    """Read ``manifest.json`` of a release.

    Raises:
        ReleaseError: no manifest (an incomplete release) or an invalid one.
    """
    path = Path(release_dir) / MANIFEST
    try:
        return ReleaseManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ReleaseError(
            f"{path} is missing: the release is incomplete; re-run write_release", path=str(path)
        ) from None
    except ValidationError as exc:
        raise ReleaseError(f"{path} is not a valid manifest: {exc}", path=str(path)) from None


def iter_tar_samples(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream the samples of one shard as ``(key, {member: bytes})``, in tar order.

    Members are grouped by key as WebDataset does (the key is the name up to the first dot);
    a key whose members are not contiguous is yielded once per run of members.
    """
    with tarfile.open(path, mode="r|") as tar:
        key: str | None = None
        members: dict[str, bytes] = {}
        for info in tar:
            if not info.isfile():
                continue
            base, _, member = info.name.partition(".")
            f = tar.extractfile(info)
            data = f.read() if f is not None else b""
            if key is not None and base != key:
                yield key, members
                members = {}
            key = base
            members[member] = data
        if key is not None:
            yield key, members


def read_table(
    release_dir: str | Path, name: str = SAMPLES_TABLE, *, columns: list[str] | None = None
) -> pa.Table:
    """Read one parquet table of a release (``samples.parquet`` by default).

    Raises:
        ReleaseError: the table is missing or unreadable; names the file.
    """
    import pyarrow.parquet as pq

    path = Path(release_dir) / name
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise ReleaseError(
            f"{path} is missing: the release is incomplete", path=str(path)
        ) from None
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a broken file
        raise ReleaseError(
            f"{path} is not a readable parquet table: {exc}", path=str(path)
        ) from None


def read_json(release_dir: str | Path, rel: str) -> Any:
    """Read one JSON file of a release (``reference/metrics.json``, ``validation/summary.json``...).

    Raises:
        ReleaseError: the file is missing or not JSON; names the file.
    """
    path = Path(release_dir) / rel
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ReleaseError(f"{path} is missing", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise ReleaseError(f"{path} is not valid JSON: {exc}", path=str(path)) from None
