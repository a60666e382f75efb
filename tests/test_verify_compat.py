"""A release verifies with a newer geodelta whose config sections gained keys (issue 16's
co-registration keys made every earlier release fail `verify`: it re-parsed the embedded config,
which added the new defaults, and hashed that)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from geodelta.pipelines.release.manifest import write_manifest
from geodelta.pipelines.release.verify import verify_release
from geodelta.schemas import ReleaseManifest
from geodelta.schemas.config import recorded_hash


def _older(release: Path, tmp_path: Path, edit: Any) -> Path:
    copy = tmp_path / "release"
    shutil.copytree(release, copy)
    data = json.loads((copy / "manifest.json").read_text())
    edit(data)
    write_manifest(copy, ReleaseManifest.model_validate(data))
    return copy


def test_a_release_without_todays_default_keys_still_verifies(
    small_shards_release: Any, tmp_path: Path
) -> None:
    def built_by_an_older_geodelta(data: dict[str, Any]) -> None:
        section = data["config"]["coregistration"]
        section.pop(sorted(section)[-1])  # a key the older code did not have
        data["config_hash"] = recorded_hash(data["config"])  # what it hashed then

    copy = _older(small_shards_release.release_dir, tmp_path, built_by_an_older_geodelta)
    check = verify_release(copy)
    assert not [p for p in check.problems if "hashes to" in p], check.problems


def test_an_edited_embedded_config_is_still_caught(
    small_shards_release: Any, tmp_path: Path
) -> None:
    def edit_the_gate(data: dict[str, Any]) -> None:
        data["config"]["shards"]["max_samples"] = 999  # edited after the build

    copy = _older(small_shards_release.release_dir, tmp_path, edit_the_gate)
    check = verify_release(copy)
    assert any("hashes to" in p for p in check.problems), check.problems
