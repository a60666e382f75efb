"""End to end on the synthetic demo catalog, checked against the generator's truth."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from geodelta.pipelines.api import BuildResult, build
from geodelta.pipelines.release.verify import verify_release
from geodelta.schemas import SAMPLE_MEMBERS, SampleMeta, load_config
from geodelta.schemas.classes import transition_code
from geodelta.sources.demo.catalog import DemoCatalog, load_truth
from tests.conftest import REPO
from tests.factories import demo_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(demo_catalog: DemoCatalog, demo_release: BuildResult) -> tuple[DemoCatalog, BuildResult]:
    """The session's demo release (tests/conftest.py) and its catalog."""
    return demo_catalog, demo_release


def read_samples(release: Path) -> list[dict[str, Any]]:
    import webdataset as wds

    shards = sorted(str(p) for p in (release / "shards").glob("*.tar"))
    return list(wds.WebDataset(shards, shardshuffle=False, empty_check=False))


def test_release_reads_with_plain_webdataset(demo: tuple[DemoCatalog, BuildResult]) -> None:
    import rasterio
    from PIL import Image

    _, result = demo
    samples = read_samples(result.release_dir)
    assert len(samples) == result.samples >= 12
    assert len({s["__key__"] for s in samples}) == len(samples)
    crs_seen = set()
    for s in samples:
        assert set(SAMPLE_MEMBERS) <= set(s), s["__key__"]
        meta = SampleMeta.model_validate_json(s["json"])
        assert meta.key == s["__key__"]
        with rasterio.MemoryFile(s["before.tif"]) as mf, mf.open() as ds:
            assert ds.count == len(meta.bands) and ds.dtypes[0] == "uint16"
            assert ds.crs.to_string() == meta.crs
            crs_seen.add(meta.crs)
        assert Image.open(io.BytesIO(s["after.png"])).mode == "RGB"
        assert Image.open(io.BytesIO(s["mask.png"])).size == (meta.shape[1], meta.shape[0])
        assert len(json.loads(s["captions.json"])) >= 5
        assert {q["type"] for q in json.loads(s["qa.json"])} >= {
            "has_change",
            "change_ratio",
            "count_regions",
        }
    assert crs_seen == {"EPSG:32631", "EPSG:32632"}  # cells on both zones' grids


def _truth_codes(meta: SampleMeta, truth: Any) -> np.ndarray:
    import shapely
    from pyproj import Transformer
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    to_utm = Transformer.from_crs(4326, meta.crs, always_xy=True)
    shapes = []
    for change in truth.changes:
        geom = shapely.transform(change["geometry"], to_utm.transform, interleaved=False)
        shapes.append((geom, transition_code(change["from_class"], change["to_class"])))
    if not shapes:
        return np.zeros(meta.shape, np.uint8)
    return rasterize(
        shapes, out_shape=meta.shape, transform=Affine(*meta.transform), fill=0, dtype="uint8"
    )


def test_masks_match_the_generators_truth(demo: tuple[DemoCatalog, BuildResult]) -> None:
    from PIL import Image

    cat, result = demo
    truth = load_truth(cat.root)
    changed_samples = 0
    for s in read_samples(result.release_dir):
        meta = SampleMeta.model_validate_json(s["json"])
        mask = np.asarray(Image.open(io.BytesIO(s["mask.png"])))
        expected = _truth_codes(meta, truth)
        agree = float(((mask > 0) == (expected > 0)).mean())
        assert agree >= 0.99, (meta.key, agree)
        both = (mask > 0) & (expected > 0)
        if both.any():
            changed_samples += 1
            assert float((mask[both] == expected[both]).mean()) >= 0.99, (
                meta.key
            )  # right transition
        assert meta.facts.changed_pixels == int((mask > 0).sum())
    assert changed_samples >= 3


def test_coregistration_recovers_the_known_shifts(demo: tuple[DemoCatalog, BuildResult]) -> None:
    cat, result = demo
    shifts = load_truth(cat.root).shifts
    errors = []
    for s in read_samples(result.release_dir):
        meta = SampleMeta.model_validate_json(s["json"])
        dy, dx = shifts[meta.after_item]
        assert shifts[meta.before_item] == (0.0, 0.0)
        assert meta.coreg.applied
        got = meta.coreg.shift_px
        errors.append(max(abs(got[0] + dy), abs(got[1] + dx)))  # correction = -displacement
        assert meta.coreg.residual_px < 0.2
    assert max(errors) < 0.15, errors


def test_verify_passes_then_fails_after_one_flipped_byte(
    demo: tuple[DemoCatalog, BuildResult], tmp_path: Path
) -> None:
    _, result = demo
    assert verify_release(result.release_dir).ok
    copy = tmp_path / "release"
    shutil.copytree(result.release_dir, copy)
    shard = sorted((copy / "shards").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    check = verify_release(copy)
    assert not check.ok
    assert any(shard.name in p for p in check.problems)
    cli = subprocess.run(
        [sys.executable, "-m", "geodelta.pipelines.cli", "verify", str(copy)],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1 and shard.name in cli.stderr


def assert_same_release(got: Path, expected: Path) -> None:
    """Byte-identical shards and files; on failure, show how the manifests differ."""
    import difflib

    a, b = _snapshot(got), _snapshot(expected)
    if a != b:
        diff = difflib.unified_diff(
            b["manifest.json"].splitlines(), a["manifest.json"].splitlines(), lineterm="", n=2
        )
        raise AssertionError("releases differ:\n" + "\n".join(diff))


def _snapshot(release: Path) -> dict[str, str]:
    manifest = json.loads((release / "manifest.json").read_text())
    files = {s["path"]: s["sha256"] for s in manifest["shards"]}
    files.update({f["path"]: f["sha256"] for f in manifest["files"]})
    files["manifest.json"] = (release / "manifest.json").read_text()
    return files


def test_same_config_builds_byte_identical_shards(
    demo: tuple[DemoCatalog, BuildResult], tmp_path: Path
) -> None:
    cat, result = demo
    again = build(
        demo_config(cat, tmp_path / "again", runner={"name": "inprocess"}),
        mode="fresh",
        progress=False,
    )
    assert_same_release(again.release_dir, result.release_dir)


def test_sigkill_then_resume_gives_the_same_release(
    demo: tuple[DemoCatalog, BuildResult], tmp_path: Path
) -> None:
    cat, result = demo
    out = tmp_path / "killed"
    cfg_file = tmp_path / "demo.yaml"
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["catalog"]["url"] = str(cat.catalog_path)
    data["output"]["dir"] = str(out)
    data["aoi"]["bbox"] = list(cat.aoi_bbox)
    cfg_file.write_text(yaml.safe_dump(data))

    proc = subprocess.Popen(
        [sys.executable, "-m", "geodelta.pipelines.cli", "build", str(cfg_file), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: Beam's workers die with it
    )
    markers = out / ".staging" / "cells"
    deadline = time.monotonic() + 240
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        done = len(list(markers.glob("*.json"))) if markers.exists() else 0
        if done >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(markers.glob("*.json")))
    assert 0 < done < result.cells, done
    assert not (out / "manifest.json").exists()

    resumed = build(load_config(cfg_file), mode="resume", progress=False)
    assert resumed.resumed_cells >= done
    assert_same_release(resumed.release_dir, result.release_dir)


def test_fresh_build_refuses_a_non_empty_release(demo: tuple[DemoCatalog, BuildResult]) -> None:
    from geodelta.pipelines.api import BuildError

    cat, result = demo
    with pytest.raises(BuildError, match="--resume"):
        build(demo_config(cat, result.release_dir), mode="fresh", progress=False)


def test_a_broken_raster_quarantines_its_cells_and_the_run_goes_on(
    demo: tuple[DemoCatalog, BuildResult], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    cat, _ = demo
    broken = tmp_path / "catalog"
    shutil.copytree(cat.root, broken)
    victims = sorted(broken.rglob("*UTM31_2021*/B08*.tif"))
    assert victims, "expected after-scene B08 COGs of the zone-31 tile"
    for path in victims:
        path.write_bytes(b"this is not a GeoTIFF" * 10)
    bad = DemoCatalog(
        root=broken,
        catalog_path=broken / "catalog.json",
        aoi_bbox=cat.aoi_bbox,
        truth_dir=broken / "truth",
    )
    out = build(
        demo_config(bad, tmp_path / "release", runner={"name": "inprocess"}),
        mode="fresh",
        progress=False,
    )
    rows = pq.read_table(out.release_dir / "quarantine.parquet").to_pylist()
    read_errors = [r for r in rows if r["reason"] == "read_error"]
    assert read_errors and all(r["stage"] == "load" for r in read_errors)
    assert all("B08" in r["detail"] for r in read_errors)
    assert out.samples + out.quarantined == out.cells  # nothing lost
    assert out.samples > 0 and verify_release(out.release_dir).ok  # the rest of the run went on
