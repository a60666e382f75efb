"""A release verifies with a newer geodelta whose config sections gained keys (issue 16's
co-registration keys made every earlier release fail `verify`: it re-parsed the embedded config,
which added the new defaults, and hashed that), and a release whose samples are of the record
layout before 1.2.0 (the config hash in each sample's json, no shaping hash) verifies as before."""

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


def _layout_1_1(root: Path, cfg: Any, config_hash: str) -> Path:
    """A release whose samples are of record layout 1.1.0: their json carries the config hash,
    no shaping hash (what geodelta wrote before the shaping hash)."""
    from geodelta.pipelines.release.assemble import write_release
    from geodelta.pipelines.release.staging import Staging
    from geodelta.pipelines.stages.encode import build_meta, encode_members
    from tests.factories import make_sample

    staging = Staging(root / "staging")
    for i in range(3):
        sample = make_sample(i, col=i, row=0, split="train")
        meta = build_meta(sample, cfg, code_version="test", shaping_hash="unused")
        old = meta.model_copy(update={"shaping_hash": None, "config_hash": config_hash})
        members = encode_members(sample, old, cfg)
        assert "shaping_hash" not in json.loads(members["json"])
        staging.put_sample(sample.key, members)
        staging.mark_cell(old.cell_id, keys=[sample.key], quarantine=[])
    write_release(root / "rel", cfg, staging, code_version="test")
    return root / "rel"


def test_samples_of_the_older_layout_are_checked_against_the_config_hash(tmp_path: Path) -> None:
    from tests.factories import make_config

    cfg = make_config(validation={"great_expectations": False})
    good = _layout_1_1(tmp_path / "good", cfg, cfg.config_hash())
    assert verify_release(good).problems == ()
    bad = _layout_1_1(tmp_path / "bad", cfg, "0" * 64)
    problems = verify_release(bad).problems
    assert len(problems) == 3 and all("json config_hash is 000000000000" in p for p in problems)
