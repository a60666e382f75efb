"""Estimate before work (issue 13, item 2): ``geodelta plan --estimate``, the ``budget`` section
and ``build --yes``, and ``search --dry-run`` saying what it searched and what it counted.

Figures are checked against what is computed independently here: the plan's own cells, their
blocks from the cell ids, bytes from the asset sizes by hand, dollars as tokens x price.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from geodelta.pipelines import api
from geodelta.pipelines.cli import app
from geodelta.pipelines.stages.estimate import (
    CPU_MS_PER_TILE,
    RATED_SCENES_PER_CELL,
    TileLayout,
    llm_estimate,
)
from geodelta.pipelines.stages.plan import count_cells, parse_cell_id
from geodelta.pipelines.stages.search import CellSearch, SearchReport, sample_indices
from geodelta.schemas import load_config
from geodelta.sources.demo.catalog import DemoCatalog
from tests.conftest import REPO

runner = CliRunner()

#: configs/demo.yaml's cells: 128 px of 10 m.
SIDE_PX = 128


def _config_file(tmp: Path, catalog: DemoCatalog, out: Path, **extra: Any) -> Path:
    """configs/demo.yaml over the session's demo catalog, in-process, no GX: a YAML file."""
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["catalog"]["url"] = str(catalog.catalog_path)
    data["aoi"] = {"bbox": list(catalog.aoi_bbox)}
    data["output"] = {"dir": str(out)}
    data["runner"] = {"name": "inprocess"}
    data["validation"] = {"great_expectations": False}
    data.update(extra)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _stderr_lines(res: Any) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.strip()]


# -- the estimate ----------------------------------------------------------------------------


def test_estimate_counts_cells_blocks_and_searches_as_the_plan(
    demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    cfg = api.load_config(_config_file(tmp_path, demo_catalog, tmp_path / "out"))
    jobs = api.plan(cfg)
    est = api.estimate(cfg)
    assert est.cells == len(jobs) == count_cells(cfg).total > 0
    assert est.cells_by_split == dict(Counter(j.split for j in jobs))
    assert sum(est.cells_by_zone.values()) == est.cells
    # blocks from the cell ids, independently: (zone, hemisphere, col // bc, row // bc)
    bc = cfg.runner.block_cells
    blocks = {
        (c.zone, c.north, c.col // bc, c.row // bc)
        for c in map(parse_cell_id, (j.cell_id for j in jobs))
    }
    assert est.blocks == len(blocks) >= math.ceil(est.cells / bc**2)
    # two imagery windows and the land-cover collection: three searches per block
    assert est.searches_per_block == 3
    assert est.stac_searches == 3 * len(blocks)
    # CPU at the measured per-tile cost; output at the uncompressed members
    assert est.cpu_hours == pytest.approx(est.cells * CPU_MS_PER_TILE / 3.6e6)
    assert est.sample_bytes == SIDE_PX * SIDE_PX * (4 * 2 * 2 + 2 * 3 + 4)
    assert est.output_bytes == est.cells * est.sample_bytes
    assert "benchmarks/bench_build.py" in est.cpu_basis
    # the template annotator costs nothing, and says so
    assert est.llm.usd == 0 and est.llm.model is None
    assert any("0 USD [template annotator" in line for line in est.lines())


def test_the_cpu_figure_is_the_one_bench_build_measured() -> None:
    """CPU_MS_PER_TILE is the in-process end-to-end row of benchmarks/RESULTS.md ("Build
    throughput", written by bench_build.py): re-running the benchmark moves the figure, and this
    test asks for the constant to follow."""
    text = (REPO / "benchmarks" / "RESULTS.md").read_text()
    section = text.split("<!-- bench_build:start -->")[1].split("<!-- bench_build:end -->")[0]
    (row,) = [r for r in section.splitlines() if r.startswith("| geodelta, in-process runner")]
    tiles_per_cpu_s = float(row.strip("|").split("|")[6])
    assert pytest.approx(1000 / tiles_per_cpu_s, abs=0.05) == CPU_MS_PER_TILE


def test_read_bytes_from_the_windows_and_from_the_sampled_tiles(
    demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    """The demo collections have no profile: every asset at the grid's 10 m. Per cell: 4 bands
    x 2 scenes x 16384 px x 2 B, the SCL of 2.4 rated scenes (2 B), 2 land-cover maps (1 B)."""
    cfg = api.load_config(_config_file(tmp_path, demo_catalog, tmp_path / "out"))
    est = api.estimate(cfg)
    px = SIDE_PX * SIDE_PX
    per_cell = 4 * 2 * px * 2 + RATED_SCENES_PER_CELL * px * 2 + 2 * px * 1
    assert est.read_bytes_pixels == round(per_cell * est.cells)
    # the sampled items' files are 256 px tiled: a 128 px window touches 1.5 x 1.5 tiles on
    # average, 2.25 x 256^2 px instead of 128^2 = 9x the pixels before compression
    assert est.read_bytes_tiles is not None and est.read_bytes == est.read_bytes_tiles
    assert "COG tiles of the sampled items" in est.read_basis and "256x256" in est.read_basis
    assert est.read_bytes_tiles_once is not None
    assert est.read_bytes_tiles_once < est.read_bytes_pixels < est.read_bytes_tiles


def test_an_unreachable_catalog_leaves_the_config_figures(
    demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    path = _config_file(tmp_path, demo_catalog, tmp_path / "out")
    cfg = api.load_config(path, {"catalog": {"url": str(tmp_path / "missing.json")}})
    est = api.estimate(cfg)
    assert est.read_bytes_tiles is None and est.read_bytes == est.read_bytes_pixels
    assert any(n.startswith("catalog not sampled") for n in est.notes)
    assert "from the config alone" in est.read_basis


def test_tile_layout_rounds_windows_up_to_tiles() -> None:
    tiled = TileLayout("B02", "x", (256, 256), (1000, 1000), (10.0, 10.0), 2, 0.5)
    # 1280 m = 128 px: 1 + 127/256 tiles per axis
    assert tiled.window_bytes(1280.0) == pytest.approx((383 / 256) ** 2 * 256 * 256 * 2 * 0.5)
    # a window larger than the file reads every tile, no more (4 x 4 tiles of 1000 px)
    assert tiled.window_bytes(100_000.0) == pytest.approx(16 * 256 * 256 * 2 * 0.5)
    # a striped file (strips of one row, the full width): 128 rows of 1000 px
    striped = TileLayout("B02", "x", (1000, 1), (1000, 1000), (10.0, 10.0), 2, None)
    assert striped.window_bytes(1280.0) == pytest.approx(128 * 1000 * 2)


def test_llm_usd_is_tokens_times_price(demo_catalog: DemoCatalog, tmp_path: Path) -> None:
    from geodelta.sources.profiles import apply_defaults

    path = _config_file(tmp_path, demo_catalog, tmp_path / "out")
    cfg = apply_defaults(api.load_config(path, {"annotation": {"annotator": "openai"}}))
    llm = llm_estimate(cfg, 1000)
    s = cfg.annotation.openai
    price = s.prices[s.model]
    assert llm.model == "gpt-4o-mini" and llm.samples == 1000
    assert llm.tokens_out == 1000 * s.max_output_tokens
    assert 1000 * 300 < llm.tokens_in < 1000 * 10_000  # a rendered prompt, not nothing
    assert llm.usd == pytest.approx(
        (llm.tokens_in * price.input + llm.tokens_out * price.output) / 1e6
    )
    assert llm.usd < llm.usd_with_fixes < (s.max_fix_attempts + 1) * 3 * llm.usd
    batch = apply_defaults(
        api.load_config(path, {"annotation": {"annotator": "openai", "openai": {"batch": True}}})
    )
    assert llm_estimate(batch, 1000).usd == pytest.approx(llm.usd * s.batch_price_factor)
    unpriced = apply_defaults(
        api.load_config(path, {"annotation": {"annotator": "openai", "openai": {"model": "m-x"}}})
    )
    free = llm_estimate(unpriced, 1000)
    assert free.usd == 0 and "no price" in free.basis and free.tokens_in == llm.tokens_in


def test_the_estimate_is_json(demo_catalog: DemoCatalog, tmp_path: Path) -> None:
    path = _config_file(tmp_path, demo_catalog, tmp_path / "out")
    res = runner.invoke(app, ["plan", str(path), "--estimate", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    est = api.estimate(api.load_config(path))
    assert data["estimate"] is True
    assert data["cells"] == est.cells and data["stac_searches"] == est.stac_searches
    assert data["llm"]["usd"] == 0 and data["excess"] == []
    text = runner.invoke(app, ["plan", str(path), "--estimate"])
    assert text.exit_code == 0
    assert text.stdout.startswith("estimate for geodelta-demo")
    assert f"at {CPU_MS_PER_TILE} ms/tile measured by benchmarks/bench_build.py" in text.stdout
    assert "within every limit" in text.stdout


# -- the budget ------------------------------------------------------------------------------


def test_the_shipped_demo_is_within_the_default_budget() -> None:
    cfg = api.load_config(REPO / "configs" / "demo.yaml")
    assert cfg.budget.max_cells == 100_000
    est = api.check_budget(cfg)  # no catalog needed: counted from the config
    assert est.cells == 75 and est.excess == []


def test_budget_stays_out_of_the_config_hash(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "demo.yaml")
    other = load_config(
        REPO / "configs" / "demo.yaml", {"budget": {"max_cells": 1, "max_usd": None}}
    )
    assert other.budget.max_cells == 1 and other.budget.max_usd is None
    assert other.config_hash() == cfg.config_hash()
    assert "budget" not in cfg.normalised()


def test_build_over_budget_refuses_before_any_work(
    demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    out = tmp_path / "site" / "release"
    path = _config_file(tmp_path, demo_catalog, out, budget={"max_cells": 5})
    cells = count_cells(api.load_config(path)).total
    res = runner.invoke(app, ["build", str(path), "--no-progress"])
    assert res.exit_code == 1, res.output
    lines = _stderr_lines(res)
    assert len(lines) == 1 and "Traceback" not in res.output
    line = lines[0]
    assert line.startswith("error: the build is over budget: ")
    assert f"{cells} cells > budget.max_cells 5 cells" in line
    assert "CPU-hours" in line and "--yes" in line
    assert not (tmp_path / "site").exists()  # no release, staging or lock folder
    with pytest.raises(api.BudgetError) as err:
        api.build(api.load_config(path), progress=False)
    assert [e.key for e in err.value.excess] == ["budget.max_cells"]
    assert not (tmp_path / "site").exists()
    # --check says the same (its own exit code: 2 when a build could not start)
    check = runner.invoke(app, ["build", str(path), "--check"])
    assert check.exit_code == 2 and "budget.max_cells" in check.stderr


def test_each_limit_names_its_key(demo_catalog: DemoCatalog, tmp_path: Path) -> None:
    path = _config_file(tmp_path, demo_catalog, tmp_path / "out")
    cases = {
        "max_cpu_hours": "budget.max_cpu_hours",
        "max_read_bytes": "budget.max_read_bytes",
    }
    for key, named in cases.items():
        cfg = api.load_config(path, {"budget": {key: 0}})
        with pytest.raises(api.BudgetError, match=named):
            api.check_budget(cfg)
    llm = api.load_config(
        path, {"annotation": {"annotator": "openai"}, "budget": {"max_usd": 0.0001}}
    )
    with pytest.raises(api.BudgetError) as err:
        api.check_budget(llm)
    (excess,) = err.value.excess
    assert excess.key == "budget.max_usd" and excess.estimate == pytest.approx(
        err.value.estimate.llm.usd
    )
    no_limits = {"max_cells": None, "max_usd": None, "max_cpu_hours": None, "max_read_bytes": None}
    assert api.check_budget(api.load_config(path, {"budget": no_limits})).excess == []


def test_plan_estimate_shows_what_is_over(demo_catalog: DemoCatalog, tmp_path: Path) -> None:
    path = _config_file(tmp_path, demo_catalog, tmp_path / "out", budget={"max_cells": 5})
    res = runner.invoke(app, ["plan", str(path), "--estimate"])
    assert res.exit_code == 0
    assert "budget       over: " in res.stdout and "asks for --yes" in res.stdout


def test_an_aoi_above_the_default_limit_is_refused(tmp_path: Path) -> None:
    """A 6 x 4 degree AOI at 1,280 m cells: ~130 k cells, over the default 100,000."""
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["aoi"] = {"bbox": [3.0, 44.0, 9.0, 48.0]}
    data["output"] = {"dir": str(tmp_path / "release")}
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data))
    cells = count_cells(api.load_config(path)).total
    assert cells > 100_000
    res = runner.invoke(app, ["build", str(path), "--no-progress"])
    assert res.exit_code == 1
    (line,) = _stderr_lines(res)
    assert f"{cells:,} cells > budget.max_cells 100,000 cells" in line
    assert not (tmp_path / "release").exists()
    # a dry run of every cell is refused too, naming --max-cells (before any search)
    dry = runner.invoke(app, ["search", str(path)])
    assert dry.exit_code == 2
    (line,) = _stderr_lines(dry)
    assert f"{cells:,} cells planned > budget.max_cells 100,000" in line
    assert "--max-cells N" in line


def test_yes_goes_ahead(demo_catalog: DemoCatalog, tmp_path: Path) -> None:
    out = tmp_path / "release"
    path = _config_file(tmp_path, demo_catalog, out, budget={"max_cells": 5})
    res = runner.invoke(app, ["build", str(path), "--no-progress", "--yes"])
    assert res.exit_code == 0, res.output
    assert (out / "manifest.json").is_file()
    # the dry run, deciding as the build does, counts the build's pair-stage quarantine
    with pytest.raises(api.BudgetError, match="--max-cells"):  # every cell: over budget too
        api.search(api.load_config(path))
    report = api.search(api.load_config(path, {"budget": {"max_cells": None}}), read_clear=True)
    manifest = api.read_manifest(out)
    built = {k: n for k, n in manifest.quarantined.items() if k.startswith("pair:")}
    assert built  # the demo catalog's clouds: some cells have no clear scene over them
    assert report.quarantined == built
    assert report.paired == report.cells_planned - sum(built.values())


# -- search --dry-run ------------------------------------------------------------------------


def test_sample_indices_are_evenly_spaced() -> None:
    assert sample_indices(10, 3) == [0, 3, 6]
    assert sample_indices(5, None) == sample_indices(5, 9) == [0, 1, 2, 3, 4]


def _cell(i: int, reason: str | None) -> CellSearch:
    return CellSearch(f"c{i}", "r", 3, 3, None, reason, None, 0)


def test_summary_counts_quarantine_per_reason_and_says_it_sampled() -> None:
    cells = [_cell(0, "no_clear_scene_t0"), _cell(1, "no_clear_scene_t0"), _cell(2, "no_scene_t1")]
    report = SearchReport(10, "pixel_level_classification_band", cells)
    assert report.sampled and report.paired == 0
    assert report.quarantined == {"pair:no_clear_scene_t0": 2, "pair:no_scene_t1": 1}
    lines = report.summary_lines()
    assert lines[1].startswith("sampled 3 of 10 planned cells")
    assert (
        "0 of 3 cells paired, 3 quarantined (pair:no_clear_scene_t0 x2, pair:no_scene_t1 x1)"
        in lines[2]
    )
    every = SearchReport(3, "scene_cloud_cover_estimate", cells)
    assert not every.sampled
    assert every.summary_lines()[1] == "searched every planned cell (3)"
    assert "an estimate, not the build's decision" in every.summary_lines()[2]
    assert "cells paired" not in every.summary_lines()[2]


def test_search_cli_reports_every_cell_or_says_it_sampled(
    demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    path = _config_file(tmp_path, demo_catalog, tmp_path / "out")
    planned = count_cells(api.load_config(path)).total
    every = runner.invoke(app, ["search", str(path), "--json"])
    assert every.exit_code == 0, every.output
    data = json.loads(every.stdout)
    assert data["cells_searched"] == data["cells_planned"] == planned and not data["sampled"]
    assert data["paired"] + sum(data["quarantined"].values()) == planned
    # one search per block, collection and window: what the estimate expects
    assert data["stac_searches"] == api.estimate(api.load_config(path)).stac_searches
    assert data["stac_searches"] < 3 * planned  # not one per cell
    some = runner.invoke(app, ["search", str(path), "--max-cells", "3"])
    assert some.exit_code == 0, some.output
    ids = [j.cell_id for j in api.plan(api.load_config(path))]
    sampled = runner.invoke(app, ["search", str(path), "--max-cells", "3", "--json"])
    picked = [c["cell_id"] for c in json.loads(sampled.stdout)["cells"]]
    assert picked == [ids[0], ids[planned // 3], ids[2 * planned // 3]]  # evenly spaced
    assert f"sampled 3 of {planned} planned cells" in some.stderr
    assert f"sampled 3 of {planned} cells" in some.stdout  # the table's title
    text = runner.invoke(app, ["search", str(path)])
    assert f"searched every planned cell ({planned})" in text.stderr
    assert "an estimate, not the build's decision" in text.stderr


def test_resume_of_a_started_build_is_not_asked_again(
    demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    """An orchestrator's cell tasks start the build (api.build_cells); the task that assembles
    the release (api.build, resume) then finishes it without ``confirm``. A --resume with
    nothing started is asked like a fresh build."""
    out = tmp_path / "release"
    path = _config_file(tmp_path, demo_catalog, out, budget={"max_cells": 5})
    cfg = api.load_config(path)
    res = runner.invoke(app, ["build", str(path), "--no-progress", "--resume"])
    assert res.exit_code == 1 and "budget.max_cells" in res.stderr
    assert not out.exists()
    (first, *_) = api.cell_groups(cfg, 4)
    api.build_cells(cfg, first)
    result = api.build(cfg, mode="resume", progress=False)
    assert result.cells == count_cells(cfg).total and result.samples > 0


def test_a_sequence_is_estimated_per_date() -> None:
    """A sequence config: every date's bands and land-cover map read, every scene of the span
    rated, one imagery search per block, CPU at T/2 pairs, the series members in the output."""
    from geodelta.pipelines.stages.estimate import (
        SERIES_RATED_PER_WINDOW,
        asset_reads,
        dates_per_sample,
        estimate,
        rated_per_cell,
        sample_bytes,
    )

    pair = load_config(REPO / "configs" / "demo.yaml")
    seq = load_config(REPO / "configs" / "demo-series.yaml")
    t = dates_per_sample(seq)
    assert dates_per_sample(pair) == 2 and t == 5
    assert rated_per_cell(seq) == SERIES_RATED_PER_WINDOW * t
    reads = {r.asset: r.reads for r in asset_reads(seq, rated_per_cell(seq), 10.0)}
    assert reads == {"B02": t, "B03": t, "B04": t, "B08": t, "SCL": 15.0, "map": t}
    a = estimate(pair, sample_catalog=False, blocks=False)
    b = estimate(seq, sample_catalog=False, blocks=False)
    assert a.cells == b.cells  # the same AOI and grid
    assert b.cpu_hours == pytest.approx(a.cpu_hours * t / 2)
    assert "T/2" in b.cpu_basis and "T/2" not in a.cpu_basis
    side = SIDE_PX * SIDE_PX
    assert sample_bytes(seq) - sample_bytes(pair) == side * (4 * 2 * t + (t - 1) + 1)
    assert b.searches_per_block == a.searches_per_block - 1  # one imagery search over the span


def test_a_sequence_prompt_is_counted_with_its_sequence_facts() -> None:
    """An LLM-annotated sequence: the prompt estimate holds the series section, so it counts
    more tokens than the same config's pairs."""
    openai = {"annotator": "openai", "openai": {"model": "gpt-4o-mini"}}
    pair = load_config(REPO / "configs" / "demo.yaml", {"annotation": openai})
    seq = load_config(REPO / "configs" / "demo-series.yaml", {"annotation": openai})
    a, b = llm_estimate(pair, 10), llm_estimate(seq, 10)
    assert b.tokens_in > a.tokens_in and "sequence facts" in b.basis
    assert "sequence facts" not in a.basis
