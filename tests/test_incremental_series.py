"""``geodelta build CONFIG --from PREVIOUS_RELEASE`` for sequence releases (issues 14 and 15).

The SYNTHETIC series demo catalog (five summers, a date per summer) at a small scale, built with
``configs/demo-series.yaml`` over its AOI without the west side (the previous version), then
over the whole AOI from scratch and ``--from`` the previous version: the same shards and tables,
byte for byte, with the previous sequences copied (their pair stage not run: the catalog did not
move) and only the new cells processed. Then the catalog moves under the whole-AOI release: one
imagery item that some sequences use for a middle date gets a new processing baseline, and one
item that the searches return but no sequence uses gets one too. ``--from`` rebuilds exactly the
sequences of the first (named by their ``dates.json``), runs the sequence pair stage of the cells
whose searches return the second and reuses their sequences (the same dates picked), and the
release is still the same bytes (no pixel changed).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from geodelta.pipelines.api import build
from geodelta.pipelines.release.incremental import (
    _same_picks,
    _unchanged,
    sample_inputs,
    series_picks,
)
from geodelta.pipelines.release.layout import (
    DRIFT,
    QUARANTINE_TABLE,
    SAMPLES_TABLE,
    iter_tar_samples,
    shard_files,
)
from geodelta.schemas import BuildConfig, ScenePair, load_config
from geodelta.sources.demo.catalog import DemoCatalog, write_demo_catalog
from tests.conftest import REPO
from tests.factories import record_cells

#: The series demo's scale: 8 cells of 1280 m, a sequence each.
SCALE = 0.4
#: Share of the AOI's width the previous version leaves out (its west side).
CUT = 0.3
IMAGERY = "geodelta-demo-s2l2a"


def _config(catalog: DemoCatalog, out: Path, url: Path | None = None, **extra: Any) -> BuildConfig:
    """``configs/demo-series.yaml`` over the catalog (or its copy at ``url``), in-process, no
    Great Expectations (alike in every build here)."""
    overrides = {
        "catalog": {"url": str(url or catalog.catalog_path)},
        "output": {"dir": str(out)},
        "aoi": {"bbox": list(catalog.aoi_bbox)},
        "runner": {"name": "inprocess"},
        "validation": {"great_expectations": False},
        "shards": {"max_samples": 4},
        **extra,
    }
    return load_config(REPO / "configs" / "demo-series.yaml", overrides)


def _small_bbox(catalog: DemoCatalog) -> list[float]:
    x0, y0, x1, y1 = catalog.aoi_bbox
    return [x0 + CUT * (x1 - x0), y0, x1, y1]


def _members(release: Path) -> dict[str, dict[str, bytes]]:
    return {k: m for shard in shard_files(release) for k, m in iter_tar_samples(shard)}


def _same_release(a: Path, b: Path) -> None:
    """The shards and the tables of two releases, byte for byte."""
    x, y = shard_files(a), shard_files(b)
    assert x and [p.name for p in x] == [p.name for p in y]
    assert [p.read_bytes() for p in x] == [p.read_bytes() for p in y]
    for table in (SAMPLES_TABLE, QUARANTINE_TABLE):
        assert (a / table).read_bytes() == (b / table).read_bytes(), table


def _calls(mp: pytest.MonkeyPatch) -> list[str]:
    """The cells whose sequence pair stage runs from now on."""
    from geodelta.pipelines.stages.worker import Worker

    return record_cells(mp, Worker, "series_pair")


def _edit(catalog: Path, item: str) -> None:
    """A new processing baseline for an imagery item (same id, same pixels)."""
    path = catalog / IMAGERY / item / f"{item}.json"
    data = json.loads(path.read_text())
    data["properties"]["s2:processing_baseline"] = "05.11"
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """prev (the cut AOI), full (the whole AOI), grown (the whole AOI --from prev, same
    config as full), moved (the whole AOI --from full over a moved copy of the catalog)."""
    root = tmp_path_factory.mktemp("incremental-series")
    cat = write_demo_catalog(root / "catalog", seed=0, scale=SCALE, series=True)
    out: dict[str, Any] = {"catalog": cat}
    small = {"aoi": {"bbox": _small_bbox(cat)}}
    with pytest.MonkeyPatch.context() as mp:
        out["prev"] = build(_config(cat, root / "prev", **small), progress=False)
        out["full"] = build(_config(cat, root / "full"), progress=False)
        out["grown_calls"] = _calls(mp)
        out["grown"] = build(
            _config(cat, root / "grown"), progress=False, from_release=out["prev"].release_dir
        )
    # the catalog moves: a middle date's item of some sequences, and an item no sequence uses
    dates = {k: json.loads(m["dates.json"]) for k, m in _members(out["full"].release_dir).items()}
    middle = Counter(d["item_id"] for v in dates.values() for d in v[1:-1])
    ends = {v[i]["item_id"] for v in dates.values() for i in (0, -1)}
    used = sorted(i for i, n in middle.items() if i not in ends and 0 < n < len(dates))[0]
    moved = root / "moved"
    shutil.copytree(cat.root, moved)
    every = {p.name for p in (moved / IMAGERY).iterdir() if p.is_dir()}
    unused = sorted(every - set(middle) - ends)[0]
    _edit(moved, used)
    _edit(moved, unused)
    out.update(
        dates=dates,
        used=used,
        users=sorted(k for k, v in dates.items() if used in {d["item_id"] for d in v}),
        unused=unused,
    )
    with pytest.MonkeyPatch.context() as mp:
        out["moved_calls"] = _calls(mp)
        out["moved"] = build(
            _config(cat, root / "moved-release", url=moved / "catalog.json"),
            progress=False,
            from_release=out["full"].release_dir,
        )
    return out


def test_a_grown_sequence_release_is_the_full_build_byte_for_byte(
    builds: dict[str, Any],
) -> None:
    prev, full, grown = builds["prev"], builds["full"], builds["grown"]
    assert 0 < prev.cells < full.cells  # the fixture's premise
    assert prev.samples == prev.cells and full.samples == full.cells  # a sequence per cell
    assert prev.manifest.mode == full.manifest.mode == "series"
    inc = grown.incremental
    assert inc["reused"] == prev.samples
    assert inc["new"] == full.cells - prev.cells
    assert inc["changed"] == inc["retried"] == inc["carried"] == inc["removed"] == 0
    assert grown.resumed_cells == 0
    assert grown.manifest.config_hash == full.manifest.config_hash
    _same_release(full.release_dir, grown.release_dir)
    # the catalog did not move: the previous cells are steady, their pair stage did not run;
    # the new cells ran theirs once, as the engine processed them
    assert json.loads((grown.release_dir / DRIFT).read_bytes())["items"] == []
    old = {m.cell_id for m in _metas(prev.release_dir)}
    new = {m.cell_id for m in _metas(full.release_dir)} - old
    assert sorted(builds["grown_calls"]) == sorted(new)


def _metas(release: Path) -> list[Any]:
    from geodelta.schemas import SampleMeta

    return [SampleMeta.model_validate_json(m["json"]) for m in _members(release).values()]


def test_a_moved_item_rebuilds_exactly_the_sequences_that_use_it(
    builds: dict[str, Any],
) -> None:
    full, moved = builds["full"], builds["moved"]
    users, used, unused = builds["users"], builds["used"], builds["unused"]
    assert 0 < len(users) < full.samples
    drift = json.loads((moved.release_dir / DRIFT).read_bytes())
    entries = {e["id"]: e for e in drift["items"]}
    assert set(entries) == {used, unused}
    assert {e["change"] for e in entries.values()} == {"changed"}
    # a middle date counts: the drift names the sequences whose dates.json has the item
    assert entries[used]["samples"] == users == drift["affected_sample_keys"]
    assert entries[unused]["samples"] == [] and entries[unused]["cells"]
    inc = moved.incremental
    assert (inc["reused"], inc["changed"], inc["new"]) == (full.samples - len(users), len(users), 0)
    # the sequence pair stage ran once for each cell whose searches moved: the users' cells as
    # the engine processed them, the others' to compare what they pick (the same dates)
    cell = {m.key: m.cell_id for m in _metas(full.release_dir)}
    moved_cells = set(entries[used]["cells"]) | set(entries[unused]["cells"])
    assert {cell[k] for k in users} <= moved_cells
    assert sorted(builds["moved_calls"]) == sorted(moved_cells & set(cell.values()))
    assert set(entries[unused]["cells"]) - {cell[k] for k in users}  # some ran and were reused
    _same_release(full.release_dir, moved.release_dir)


def test_a_sequence_is_reused_only_with_the_dates_it_recorded(builds: dict[str, Any]) -> None:
    """The identity rule on one sequence: its pair stage run again picks what its ``json`` and
    ``dates.json`` members record; another window, item, clear fraction, land-cover item or
    one date fewer does not match."""
    from geodelta.pipelines.build import planned
    from geodelta.pipelines.stages.worker import Worker
    from geodelta.sources.profiles import apply_defaults

    full = builds["full"]
    cfg = apply_defaults(_config(builds["catalog"], full.release_dir))
    key, members = sorted(_members(full.release_dir).items())[0]
    meta = json.loads(members["json"])
    job = next(j for j in planned(cfg) if j.cell_id == meta["cell_id"])
    pair = Worker(cfg, code_version=meta["code_version"]).series_pair(job)
    assert isinstance(pair, ScenePair) and pair.key == key and len(pair.series) >= 3
    inputs = sample_inputs(pair)
    assert list(inputs["label_items"]) == [d["label_item"] for d in builds["dates"][key]]
    assert _unchanged(members["json"], inputs, meta["shaping_hash"], meta["code_version"])
    recorded = json.loads(members["dates.json"])
    picks = series_picks(pair)
    assert _same_picks(recorded, picks)
    for i, field, value in (
        (1, "window", recorded[1]["window"] + 1),
        (1, "item_id", "another-item"),
        (1, "clear_fraction", 0.5),
        (1, "label_item", "another-map"),
        (0, "datetime", "2018-07-01T00:00:00Z"),
    ):
        other = [dict(p) for p in picks]
        other[i][field] = value
        assert not _same_picks(recorded, other), field
    assert not _same_picks(recorded, picks[:-1])
    assert not _same_picks(None, picks)
    # the json member alone: other land-cover items of the sequence do not match either
    other_labels = {**inputs, "label_items": (*inputs["label_items"][:-1], "another-map")}
    shaping = meta["shaping_hash"]
    assert not _unchanged(members["json"], other_labels, shaping, meta["code_version"])
