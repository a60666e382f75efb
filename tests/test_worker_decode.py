"""The decode checks run on the workers (finalize) and the build's report trusts them by content.

Each finished sample's PNG and GeoTIFF members are decoded by the worker that encoded them
(verify's own checks); the cell's marker records the sample's decode digest, and the report
skips the decodes of a sample whose shard bytes give that digest. A member that does not decode
quarantines its sample; the build goes on.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from geodelta.pipelines.api import build
from geodelta.pipelines.release.layout import QUARANTINE_TABLE, VERIFIED, read_table
from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.release.verify import decode_digest, verify_release
from geodelta.pipelines.stages import encode
from geodelta.pipelines.stages.finalize import StagedSample, finalize_sample
from geodelta.schemas import QuarantineRecord, SampleMeta
from tests import factories


def _config(catalog: Any, tmp_path: Path, **output: Any) -> Any:
    """The demo, in-process, GX off (not what this module tests)."""
    return factories.demo_config(
        catalog,
        tmp_path / "release",
        output={"dir": str(tmp_path / "release"), **output},
        runner={"name": "inprocess"},
        validation={"great_expectations": False},
    )


def _finalize(sample: Any) -> Any:
    return finalize_sample(sample, factories.make_config(), code_version="0", shaping_hash="h")


def test_a_finished_sample_carries_the_digest_of_its_members() -> None:
    out = _finalize(factories.make_sample(3, nan_pixels=5))
    assert isinstance(out, StagedSample)
    meta = SampleMeta.model_validate_json(out.members["json"])
    assert out.decode_digest == decode_digest(out.members, meta, "pair")


def test_a_member_that_does_not_decode_quarantines_its_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = encode.encode_members

    def truncated_png(*args: Any, **kwargs: Any) -> dict[str, bytes]:
        members = real(*args, **kwargs)
        members["before.png"] = members["before.png"][:200]
        return members

    monkeypatch.setattr(encode, "encode_members", truncated_png)
    out = _finalize(factories.make_sample(3, nan_pixels=5))
    assert isinstance(out, QuarantineRecord)
    assert (out.stage, out.reason) == ("validate", "undecodable_member")
    assert "before.png does not decode as PNG" in out.detail


def _spared(caplog: pytest.LogCaptureFixture) -> list[tuple[int, int]]:
    """(spared, samples) of each report's log line on the decodes it did not repeat."""
    found = []
    for rec in caplog.records:
        m = re.match(
            r"report: the PNG and GeoTIFF decodes of (\d+) of (\d+) samples", rec.getMessage()
        )
        if m:
            found.append((int(m.group(1)), int(m.group(2))))
    return found


def test_the_report_spares_what_the_workers_decoded(
    demo_catalog: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The markers hold the digests of the shards' very bytes; the report decodes none of
    them again (and logs so) and records what a full verify records."""
    staging_root = tmp_path / "staging"
    cfg = _config(demo_catalog, tmp_path, staging=str(staging_root))
    with caplog.at_level(logging.INFO, logger="geodelta.pipelines.report.render"):
        result = build(cfg, progress=False, keep_staging=True)
    staging = Staging(staging_root)
    digests = staging.decode_digests()
    full = verify_release(result.release_dir, strict=True, digests=True)
    assert full.ok and full.carried == 0
    assert digests == set(full.passed.values())  # the shards' bytes, digest for digest
    assert _spared(caplog) == [(result.samples, result.samples)]
    record = json.loads((result.release_dir / VERIFIED).read_bytes())
    assert record["samples"] == full.passed


def test_a_marker_without_digests_leaves_the_decodes_to_the_report(
    demo_catalog: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    staging_root = tmp_path / "staging"
    cfg = _config(demo_catalog, tmp_path, staging=str(staging_root))
    first = build(cfg, progress=False, keep_staging=True)
    markers = sorted((staging_root / "cells").glob("*"))
    stripped = 0
    for path in markers:  # as a staging area written before the workers recorded digests
        data = json.loads(path.read_text())
        if data.pop("decoded", None):
            stripped += 1
            path.write_text(json.dumps(data, sort_keys=True, indent=2))
    assert stripped == first.samples
    assert Staging(staging_root).decode_digests() == set()
    with caplog.at_level(logging.INFO, logger="geodelta.pipelines.report.render"):
        again = build(cfg, mode="resume", progress=False, keep_staging=True)
    assert _spared(caplog) == []  # every member decoded by the report
    page = (again.release_dir / "report" / "index.html").read_bytes()
    assert page == (first.release_dir / "report" / "index.html").read_bytes()  # same words
    assert (again.release_dir / VERIFIED).read_bytes() == (
        first.release_dir / VERIFIED
    ).read_bytes()


def test_an_undecodable_member_is_quarantined_and_the_build_goes_on(
    demo_catalog: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = encode.encode_members
    broken: list[str] = []

    def one_broken(sample: Any, meta: Any, cfg: Any) -> dict[str, bytes]:
        members = real(sample, meta, cfg)
        if not broken:
            broken.append(sample.key)
            members["after.tif"] = members["after.tif"][:100]
        return members

    monkeypatch.setattr(encode, "encode_members", one_broken)
    result = build(_config(demo_catalog, tmp_path), progress=False)
    rows = read_table(result.release_dir, QUARANTINE_TABLE).to_pylist()
    hit = [r for r in rows if r["key"] == broken[0]]
    assert [(r["stage"], r["reason"]) for r in hit] == [("validate", "undecodable_member")]
    assert "after.tif does not decode as GeoTIFF" in hit[0]["detail"]
    assert result.samples > 0 and verify_release(result.release_dir, strict=True).ok


def test_the_quarantine_detail_of_a_broken_geotiff_is_the_same_on_every_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GDAL names the random in-memory file it opened: not in the record (same data, same
    bytes)."""
    real = encode.encode_members

    def garbage_tif(*args: Any, **kwargs: Any) -> dict[str, bytes]:
        members = real(*args, **kwargs)
        members["after.tif"] = b"II*\x00garbage" + bytes(64)
        return members

    monkeypatch.setattr(encode, "encode_members", garbage_tif)
    sample = factories.make_sample(3, nan_pixels=5)
    first, second = _finalize(sample), _finalize(sample)
    assert isinstance(first, QuarantineRecord) and first.reason == "undecodable_member"
    assert "after.tif does not decode as GeoTIFF (the member: TIFFReadDirectory" in first.detail
    assert first == second


def test_a_from_build_decodes_nothing_again(
    demo_catalog: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The copied samples' cells get markers without digests (no worker saw them): the
    previous release's report/verified.json vouches for them, the workers for the new ones."""
    x0, y0, x1, y1 = demo_catalog.aoi_bbox
    small = {"aoi": {"bbox": [x0 + 0.3 * (x1 - x0), y0, x1, y1]}}
    prev = build(
        factories.demo_config(
            demo_catalog,
            tmp_path / "prev",
            runner={"name": "inprocess"},
            validation={"great_expectations": False},
            **small,
        ),
        progress=False,
    )
    with caplog.at_level(logging.INFO, logger="geodelta.pipelines.report.render"):
        grown = build(
            _config(demo_catalog, tmp_path), progress=False, from_release=prev.release_dir
        )
    assert 0 < grown.incremental["reused"] < grown.samples
    assert _spared(caplog) == [(grown.samples, grown.samples)]
