"""A build that cannot produce what was asked fails loudly (issue 12, section 1, second half).

* the circuit breaker (``runner.breaker_cells``, pipelines/engines/breaker.py): the first N
  finished cells all quarantined for the same reason stop the build, exit 1, with the reason, the
  count, an example and what to change; the staging area is kept and ``--resume`` after the fix
  builds the release. On the in-process loop, Beam's FnApiRunner (the default) and Dask.
* an empty result is an error: 0 samples exits 1 with the top quarantine reasons, no release is
  written; ``verify`` and ``release`` refuse a release with 0 samples.
* the pixel sanity rules of the validate stage: a constant band, reflectance out of range.

The broken build: the demo catalog at scale 0.1 on 16 px cells (60 cells), every after (t1)
imagery COG overwritten with garbage, and ``pairing.min_clear_fraction`` 0 so every cell gets as
far as reading its t1 scenes (``pair: read_error`` in every cell). The pre-flight check opens
the first t0 item only, which is intact.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from geodelta.pipelines import api
from geodelta.pipelines.cli import app
from geodelta.pipelines.engines.breaker import TRIP_FILE, Breaker
from geodelta.pipelines.release.assemble import write_release
from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.stages.finalize import StagedSample, finalize_sample
from geodelta.pipelines.stages.validate import (
    OUT_OF_RANGE_FRACTION,
    REFLECTANCE_RANGE,
    validate_pixels,
)
from geodelta.schemas import QuarantineRecord
from geodelta.sources.demo.constants import IMAGERY_COLLECTION
from tests import factories

runner = CliRunner()

#: The broken build's config sections (see the module docstring).
BROKEN: dict[str, Any] = {
    "grid": {"cell_size_px": 16},
    "pairing": {"min_clear_fraction": 0.0},
    "validation": {"great_expectations": False},
}
CELLS = 60
TRIP = re.compile(
    r"circuit breaker: the first (\d+) cells were all quarantined at stage 'pair' for "
    r"'read_error' \(e\.g\. cell \S+: cannot read raster '[^']*DEMO_S2\w+_2021\d+/\w+\.tif'"
)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _one_error(res: Any, code: int) -> str:
    """The single error line a failed command prints (no traceback)."""
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in _lines(res.stderr) if ln.startswith("error: ")]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A demo catalog (scale 0.1) and an intact copy of its files."""
    from geodelta.sources.demo.catalog import write_demo_catalog

    root = tmp_path_factory.mktemp("breaker")
    cat = write_demo_catalog(root / "catalog", seed=0, scale=0.1)
    shutil.copytree(cat.root, root / "intact")
    return cat, root / "intact"


def _broken(catalogs: tuple[Any, Path], tmp: Path) -> Any:
    """A copy of the demo catalog whose every t1 imagery COG is garbage."""
    from geodelta.sources.demo.catalog import DemoCatalog

    cat, intact = catalogs
    root = tmp / "catalog"
    shutil.copytree(intact, root)
    broken = [p for p in (root / IMAGERY_COLLECTION).glob("*_2021*/*.tif")]
    assert broken
    for p in broken:
        p.write_bytes(b"not a tiff")
    return DemoCatalog(
        root=root,
        catalog_path=root / cat.catalog_path.relative_to(cat.root),
        aoi_bbox=cat.aoi_bbox,
        truth_dir=root / cat.truth_dir.relative_to(cat.root),
    )


def _repair(catalogs: tuple[Any, Path], cat: Any) -> None:
    shutil.rmtree(cat.root)
    shutil.copytree(catalogs[1], cat.root)


def _config_file(cat: Any, tmp: Path, out: Path, runner_name: str, **runner_keys: Any) -> Path:
    """configs/demo.yaml over ``cat`` with :data:`BROKEN`, as a YAML file."""
    data = yaml.safe_load((factories.REPO / "configs" / "demo.yaml").read_text())
    data["catalog"]["url"] = str(cat.catalog_path)
    data["aoi"] = {"bbox": list(cat.aoi_bbox)}
    data["output"] = {"dir": str(out)}
    for section, values in BROKEN.items():
        data.setdefault(section, {}).update(values)
    data["runner"] = {"name": runner_name, **runner_keys}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _staging(out: Path) -> Path:
    return out / api.STAGING


# -- the circuit breaker, end to end --------------------------------------------------------------


def test_breaker_stops_the_inprocess_loop_and_resume_after_the_fix_builds(
    catalogs: tuple[Any, Path], tmp_path: Path
) -> None:
    cat = _broken(catalogs, tmp_path)
    out = tmp_path / "release"
    config = _config_file(cat, tmp_path, out, "inprocess")
    line = _one_error(runner.invoke(app, ["build", str(config), "--no-progress"]), 1)
    match = TRIP.search(line)
    assert match, line
    assert match.group(1) == "32"  # the loop stopped at the 32nd cell (default breaker_cells)
    assert "re-run with --resume" in line and "runner.breaker_cells=32" in line
    assert "(0: never)" in line
    # no release; the staging area is kept, the tripped cells forgotten (they run again)
    assert not (out / "manifest.json").exists()
    assert (_staging(out) / "config.json").is_file()
    assert not list((_staging(out) / "cells").iterdir())
    assert not (_staging(out) / TRIP_FILE).exists()

    _repair(catalogs, cat)
    res = runner.invoke(app, ["build", str(config), "--no-progress", "--resume"])
    assert res.exit_code == 0, res.output
    manifest = api.read_manifest(out)
    assert sum(manifest.splits.values()) > 0
    assert not any(k.startswith("pair:read_error") for k in manifest.quarantined)


def test_breaker_on_the_default_beam_runner_raises_from_api_build(
    catalogs: tuple[Any, Path], tmp_path: Path
) -> None:
    cat = _broken(catalogs, tmp_path)
    out = tmp_path / "release"
    cfg = factories.demo_config(cat, out, **BROKEN)
    assert cfg.runner.name == "direct" and cfg.runner.breaker_cells == 32
    with pytest.raises(api.BreakerError, match=TRIP.pattern) as info:
        api.build(cfg, mode="fresh", progress=False)
    n = int(TRIP.search(str(info.value)).group(1))  # type: ignore[union-attr]
    assert 32 <= n <= CELLS
    assert not (out / "manifest.json").exists()
    assert not list((_staging(out) / "cells").iterdir())
    assert not (_staging(out) / TRIP_FILE).exists()


@pytest.mark.slow  # a Dask LocalCluster (~25 s)
def test_breaker_on_dask(catalogs: tuple[Any, Path], tmp_path: Path) -> None:
    cat = _broken(catalogs, tmp_path)
    out = tmp_path / "release"
    config = _config_file(cat, tmp_path, out, "dask", breaker_cells=8)
    line = _one_error(runner.invoke(app, ["build", str(config), "--no-progress"]), 1)
    match = TRIP.search(line)
    assert match and int(match.group(1)) >= 8, line
    assert "runner.breaker_cells=8" in line
    assert not (out / "manifest.json").exists()


def test_breaker_off_then_the_empty_result_is_an_error(
    catalogs: tuple[Any, Path], tmp_path: Path
) -> None:
    """breaker_cells: 0 runs every cell; 0 samples then exit 1 with the top reasons."""
    cat = _broken(catalogs, tmp_path)
    out = tmp_path / "release"
    config = _config_file(cat, tmp_path, out, "inprocess", breaker_cells=0)
    line = _one_error(runner.invoke(app, ["build", str(config), "--no-progress"]), 1)
    assert line.startswith(
        f"error: the build produced 0 samples from {CELLS} cells (no release was written); "
        "a build that yields nothing is an error, not a release. Top quarantine reasons: "
        f"pair:read_error x{CELLS} (e.g. cell "
    ), line
    assert "DEMO_S2" in line and line.endswith("then re-run with --resume")
    assert not (out / "manifest.json").exists()
    assert not list((_staging(out) / "cells").iterdir())  # --resume runs them all again


def test_empty_result_from_api_build_names_the_top_reasons(
    catalogs: tuple[Any, Path], tmp_path: Path
) -> None:
    cat = _broken(catalogs, tmp_path)
    cfg = factories.demo_config(
        cat, tmp_path / "release", **BROKEN, runner={"name": "inprocess", "breaker_cells": 100}
    )
    with pytest.raises(
        api.EmptyReleaseError,
        match=rf"0 samples from {CELLS} cells.*"
        rf"Top quarantine reasons: pair:read_error x{CELLS} ",
    ):
        api.build(cfg, mode="fresh", progress=False)


# -- the breaker's rule ---------------------------------------------------------------------------


def _quarantine(cell: str, reason: str = "read_error", stage: str = "load") -> QuarantineRecord:
    return QuarantineRecord(key=cell, cell_id=cell, stage=stage, reason=reason, detail=f"{cell} x")


def test_breaker_trips_only_when_every_finished_cell_failed_alike(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "stg")
    breaker = Breaker(staging, 3)
    for i in range(2):
        rec = _quarantine(f"c{i}")
        staging.mark_cell(rec.cell_id, keys=[], quarantine=[rec])
        assert breaker.after(rec) is False
    rec = _quarantine("c2")
    staging.mark_cell("c2", keys=[], quarantine=[rec])
    assert breaker.after(rec) is True
    trip = breaker.tripped()
    assert trip is not None and (trip.stage, trip.reason) == ("load", "read_error")
    assert trip.cells == ("c0", "c1", "c2") and trip.example.cell_id == "c0"
    # finished meanwhile by other workers: one more of the same (forgotten too), other outcomes
    late = _quarantine("c3")
    staging.mark_cell("c3", keys=[], quarantine=[late])
    staging.mark_cell("c4", keys=[], quarantine=[_quarantine("c4", "no_clear_pair", "pair")])
    staging.put_sample("k5", {"json": b"{}"})
    staging.mark_cell("c5", keys=["k5"], quarantine=[])
    breaker.reset(trip)
    assert staging.done_cells() == {"c4", "c5"} and breaker.tripped() is None

    # another reason among the first cells: never trips (disarmed for good)
    other = Staging(tmp_path / "other")
    breaker = Breaker(other, 3)
    recs = [_quarantine("c0"), _quarantine("c1", "no_clear_pair", "pair")] + [
        _quarantine(f"c{i}") for i in range(2, 6)
    ]
    for rec in recs:
        other.mark_cell(rec.cell_id, keys=[], quarantine=[rec])
        assert breaker.after(rec) is False
    assert not breaker.armed and breaker.tripped() is None

    # a sample disarms it; 0 turns it off
    assert Breaker(staging, 0).armed is False
    staged = Breaker(staging, 1)
    assert staged.after(StagedSample(cell_id="s", key="s", members={})) is False
    assert not staged.armed


# -- verify and release refuse a release with 0 samples -------------------------------------------


@pytest.fixture()
def empty_release(tmp_path: Path) -> Path:
    rel = tmp_path / "rel"
    write_release(rel, factories.make_config(), Staging(tmp_path / "stg"), code_version="0")
    return rel


def test_verify_refuses_a_release_with_0_samples(empty_release: Path) -> None:
    res = runner.invoke(app, ["verify", str(empty_release)])
    assert res.exit_code == 1, res.output
    assert "the release holds 0 samples" in res.stderr
    assert _lines(res.stderr)[-1] == f"error: 1 problem(s) in {empty_release}"
    check = api.verify(empty_release)
    assert not check.ok and check.samples == 0


def test_release_refuses_a_release_with_0_samples(empty_release: Path, tmp_path: Path) -> None:
    releases = tmp_path / "published"
    line = _one_error(
        runner.invoke(app, ["release", str(empty_release), "--releases", str(releases)]), 1
    )
    assert line == (
        f"error: {empty_release}: manifest.json: the release holds 0 samples (top quarantine "
        "reasons: none recorded); a build that yields nothing is an error, not a release: fix "
        "the cause and rebuild"
    )
    assert not (releases / "LATEST").exists()
    assert empty_release.is_dir()  # nothing moved
    res = runner.invoke(
        app, ["release", str(empty_release), "--releases", str(releases), "--check"]
    )
    assert res.exit_code == 1 and "holds 0 samples" in res.stderr
    with pytest.raises(api.PublishError, match="holds 0 samples"):
        api.publish(empty_release, releases)


# -- pixel sanity (validate stage) ----------------------------------------------------------------


def _finalize(sample: Any) -> Any:
    return finalize_sample(sample, factories.make_config(), code_version="0", shaping_hash="h")


def test_a_clean_sample_passes_the_pixel_rules() -> None:
    sample = factories.make_sample(3, nan_pixels=5)
    assert validate_pixels(sample.before, sample.after, factories.BANDS) == []
    assert isinstance(_finalize(sample), StagedSample)


def test_a_constant_band_quarantines_the_sample() -> None:
    sample = factories.make_sample(1, nan_pixels=5)
    after = sample.after.copy()
    after[3][np.isfinite(after[3])] = 0.0001  # a DN of 1 where the data was read wrongly
    out = _finalize(dataclasses.replace(sample, after=after))
    assert isinstance(out, QuarantineRecord)
    assert (out.stage, out.reason) == ("validate", "constant_band")
    assert out.detail.startswith(
        "constant_band: after band B08 is constant (0.0001 in all 1019 valid pixels): check its "
        "dtype, nodata and scale in the items' raster:bands"
    ), out.detail


def test_reflectance_out_of_range_quarantines_the_sample() -> None:
    sample = factories.make_sample(2)
    before = sample.before.copy()
    before[0] = before[0] * 10000  # DN where reflectance was expected (scale missing)
    out = _finalize(dataclasses.replace(sample, before=before))
    assert isinstance(out, QuarantineRecord)
    assert (out.stage, out.reason) == ("validate", "reflectance_range")
    assert out.detail.startswith(
        "reflectance_range: before band B02 has 1024 of 1024 valid pixels outside the "
        f"reflectance range [{REFLECTANCE_RANGE[0]}, {REFLECTANCE_RANGE[1]}]"
    ), out.detail
    assert "check its scale and offset" in out.detail

    negative = sample.after.copy()
    negative[2] -= 0.5  # below -0.2 almost everywhere
    ((name, detail),) = validate_pixels(sample.before, negative, factories.BANDS)
    assert name == "reflectance_range" and detail.startswith("after band B04 has ")


def test_a_few_saturated_pixels_are_tolerated() -> None:
    sample = factories.make_sample(4)
    after = sample.after.copy()
    n = int(OUT_OF_RANGE_FRACTION * after[0].size)  # at the tolerance: still sane
    after[0].reshape(-1)[:n] = 6.5535
    assert validate_pixels(sample.before, after, factories.BANDS) == []
    after[0].reshape(-1)[: n + 1] = 6.5535
    assert [name for name, _ in validate_pixels(sample.before, after, factories.BANDS)] == [
        "reflectance_range"
    ]
