"""``geodelta drift RELEASE`` on the demo (issue 14, "Drift").

A demo release is built from a copy of the demo catalog; that copy is then edited as a catalog
moves under a dataset: an item used by a sample gets a new processing baseline, another a new
asset href, a third a checksum, one is withdrawn and one is added. ``drift`` must name each
item, the fields that changed and the samples affected, and exit 1; against the catalog as it
was it exits 0; bad input exits 2 in one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from geodelta.errors import ReleaseError
from geodelta.pipelines.api import build
from geodelta.pipelines.cli import app
from geodelta.pipelines.release.drift import changed_fields, release_cells, release_drift
from geodelta.pipelines.release.layout import iter_tar_samples, shard_files
from tests.factories import demo_config

if TYPE_CHECKING:
    from geodelta.schemas import BuildConfig
    from geodelta.sources.demo.catalog import DemoCatalog

FAST: dict[str, Any] = {
    "runner": {"name": "inprocess"},
    "validation": {"great_expectations": False},
}
IMAGERY = "geodelta-demo-s2l2a"
LABELS = "geodelta-demo-landcover"
runner = CliRunner()


def _item_path(catalog: Path, collection: str, item_id: str) -> Path:
    return catalog / collection / item_id / f"{item_id}.json"


def _edit(catalog: Path, collection: str, item_id: str, fn: Any) -> None:
    path = _item_path(catalog, collection, item_id)
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _withdraw(catalog: Path, collection: str, item_id: str) -> None:
    coll = catalog / collection / "collection.json"
    data = json.loads(coll.read_text())
    data["links"] = [ln for ln in data["links"] if item_id not in ln["href"]]
    coll.write_text(json.dumps(data))
    shutil.rmtree(catalog / collection / item_id)


def _add_copy(catalog: Path, collection: str, item_id: str, new_id: str, when: str) -> None:
    """A new item: a copy of ``item_id`` taken at ``when``."""
    src = _item_path(catalog, collection, item_id)
    dst = _item_path(catalog, collection, new_id)
    shutil.copytree(src.parent, dst.parent)  # the copy keeps its assets (relative hrefs)
    data = json.loads(dst.parent.joinpath(src.name).read_text())
    dst.parent.joinpath(src.name).unlink()
    data["id"] = new_id
    data["properties"]["datetime"] = when
    dst.write_text(json.dumps(data))
    coll = catalog / collection / "collection.json"
    meta = json.loads(coll.read_text())
    meta["links"].append(
        {"rel": "item", "href": f"./{new_id}/{new_id}.json", "type": "application/geo+json"}
    )
    coll.write_text(json.dumps(meta))


def _config(demo_catalog: DemoCatalog, catalog: Path, out: Path, **extra: Any) -> BuildConfig:
    """The demo config over ``catalog`` (a copy of the demo catalog), written to ``out``."""
    cfg = demo_config(demo_catalog, out, **FAST, **extra)
    url = str(catalog / "catalog.json")
    return cfg.model_copy(update={"catalog": cfg.catalog.model_copy(update={"url": url})})


@pytest.fixture(scope="module")
def release(demo_catalog: DemoCatalog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo release built from a copy of the demo catalog (``<tmp>/catalog``)."""
    root = tmp_path_factory.mktemp("drift")
    shutil.copytree(demo_catalog.root, root / "catalog")
    result = build(_config(demo_catalog, root / "catalog", root / "release"), progress=False)
    assert result.samples >= 6
    return Path(result.release_dir)


def _samples(release: Path) -> list[dict[str, Any]]:
    return pq.read_table(release / "samples.parquet").to_pylist()


@pytest.fixture(scope="module")
def moved(release: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The release's catalog, copied and moved: which items were touched how."""
    catalog = tmp_path_factory.mktemp("moved") / "catalog"
    shutil.copytree(release.parent / "catalog", catalog)
    rows = sorted(_samples(release), key=lambda r: r["key"])
    # four distinct imagery items that samples used
    used: list[str] = []
    for r in rows:
        for item in (r["before_item"], r["after_item"]):
            if item not in used:
                used.append(item)
    baseline, href, checksum, withdrawn = used[:4]
    _edit(
        catalog,
        IMAGERY,
        baseline,
        lambda d: d["properties"].update({"s2:processing_baseline": "05.11"}),
    )
    _edit(catalog, IMAGERY, href, lambda d: d["assets"]["B04"].update({"href": "./B04_v2.tif"}))
    _edit(
        catalog,
        IMAGERY,
        checksum,
        lambda d: d["assets"]["B03"].update({"file:checksum": "1220" + "ab" * 32}),
    )
    _withdraw(catalog, IMAGERY, withdrawn)
    first = next(r for r in rows if r["before_item"] == baseline or r["after_item"] == baseline)
    added = f"{baseline}_NEW"
    when = json.loads(_item_path(catalog, IMAGERY, baseline).read_text())["properties"]["datetime"]
    _add_copy(catalog, IMAGERY, baseline, added, when.replace("T10:", "T11:"))
    return {
        "catalog": catalog / "catalog.json",
        "baseline": baseline,
        "href": href,
        "checksum": checksum,
        "withdrawn": withdrawn,
        "added": added,
        "first": first,
        "rows": rows,
    }


def _members(release: Path) -> dict[str, dict[str, bytes]]:
    """key -> members of every sample in a release's shards."""
    return {k: m for shard in shard_files(release) for k, m in iter_tar_samples(shard)}


def _users(rows: list[dict[str, Any]], item: str) -> list[str]:
    return sorted(r["key"] for r in rows if item in (r["before_item"], r["after_item"]))


def test_an_unchanged_catalog_has_no_drift(release: Path) -> None:
    found = release_drift(release, catalog=str(release.parent / "catalog" / "catalog.json"))
    assert not found.drifted and found.items == [] and found.samples == []
    snapshot = pq.read_table(release / "snapshot" / "items.parquet")
    assert found.before == found.after == snapshot.num_rows > 0
    assert found.cells == len(release_cells(release)) > len(_samples(release))  # + quarantined
    res = runner.invoke(app, ["drift", str(release), "--catalog", str(release.parent / "catalog")])
    assert res.exit_code == 0, res.output
    assert "0 added, 0 removed, 0 changed" in res.output and "no drift" in res.output


def test_drift_names_the_items_the_fields_and_the_samples(
    release: Path, moved: dict[str, Any]
) -> None:
    found = release_drift(release, catalog=str(moved["catalog"]))
    by_id = {i.item_id: i for i in found.items}
    assert {i: by_id[i].change for i in by_id} == {
        moved["baseline"]: "changed",
        moved["href"]: "changed",
        moved["checksum"]: "changed",
        moved["withdrawn"]: "removed",
        moved["added"]: "added",
    }
    fields = {i: [(f.name, f.before, f.after) for f in by_id[i].fields] for i in by_id}
    assert fields[moved["baseline"]] == [("s2:processing_baseline", None, "05.11")]
    (href,) = fields[moved["href"]]
    assert href[0] == "assets.B04.href" and href[2].endswith("B04_v2.tif")
    assert href[1].endswith(f"{moved['href']}/B04.tif")
    assert fields[moved["checksum"]] == [("assets.B03.file:checksum", None, "1220" + "ab" * 32)]
    rows = moved["rows"]
    for item in ("baseline", "href", "checksum", "withdrawn"):
        assert list(by_id[moved[item]].samples) == _users(rows, moved[item]), item
        assert by_id[moved[item]].samples, item
    # the added item: every sample of the cells it now appears in (it covers its model's cells)
    new = by_id[moved["added"]]
    assert new.cells and set(new.cells) <= set(by_id[moved["baseline"]].cells)
    at_cells = sorted(r["key"] for r in rows if r["cell_id"] in new.cells)
    assert list(new.samples) == at_cells and moved["first"]["key"] in new.samples
    every = set().union(*(set(i.samples) for i in found.items))
    assert found.samples == sorted(every)
    d = found.as_dict()
    assert (d["added"], d["removed"], d["changed"]) == (1, 1, 3)
    assert d["affected_samples"] == len(found.samples) and d["previous_version"] == "0.1.0"


def test_the_cli_exits_1_on_drift_short_and_json(release: Path, moved: dict[str, Any]) -> None:
    res = runner.invoke(app, ["drift", str(release), "--catalog", str(moved["catalog"])])
    assert res.exit_code == 1, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith(
        "geodelta-demo 0.1.0 against catalog.json: 1 added, 1 removed, 3 changed"
    )
    assert any(
        moved["baseline"] in ln and "s2:processing_baseline null -> 05.11" in ln for ln in lines
    ), lines
    assert len(lines) == 1 + 5
    res = runner.invoke(app, ["drift", str(release), "--catalog", str(moved["catalog"]), "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["changed"] == 3 and len(data["items"]) == 5
    assert data["affected_sample_keys"] == sorted(data["affected_sample_keys"])


def test_changed_fields_names_properties_geometry_and_assets() -> None:
    old = {
        "id": "a",
        "geometry": {"type": "Point", "coordinates": [0, 0]},
        "bbox": [0, 0, 0, 0],
        "properties": {"datetime": "2020-01-01T00:00:00Z", "eo:cloud_cover": 5.0},
        "assets": {"B04": {"href": "https://x/B04.tif"}, "SCL": {"href": "https://x/SCL.tif"}},
    }
    new = json.loads(json.dumps(old))
    new["geometry"]["coordinates"] = [0, 1]
    new["bbox"] = [0, 1, 0, 1]
    new["properties"]["datetime"] = "2020-01-02T00:00:00Z"
    new["properties"]["eo:cloud_cover"] = 7.5
    del new["assets"]["SCL"]
    assert [(f.name, f.before, f.after) for f in changed_fields(old, new)] == [
        ("assets.SCL", True, False),
        ("bbox", [0, 0, 0, 0], [0, 1, 0, 1]),
        ("datetime", "2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"),
        ("eo:cloud_cover", 5.0, 7.5),
        ("geometry", None, None),  # values left out: the snapshots hold them
    ]
    assert changed_fields(old, json.loads(json.dumps(old))) == []


def _exit_2(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_bad_input_exits_2_in_one_line(release: Path, tmp_path: Path) -> None:
    catalog = str(release.parent / "catalog" / "catalog.json")
    line = _exit_2(["drift", str(tmp_path), "--catalog", catalog])
    assert "manifest.json" in line
    line = _exit_2(["drift", str(tmp_path / "nowhere"), "--catalog", catalog])
    assert "no such folder" in line
    # a local catalog is recorded by its file name only: --catalog is needed
    line = _exit_2(["drift", str(release)])
    assert "local catalog (catalog.json)" in line and "--catalog" in line
    line = _exit_2(["drift", str(release), "--catalog", str(tmp_path / "gone" / "catalog.json")])
    assert "catalog.json not found" in line
    old = tmp_path / "old"
    shutil.copytree(release, old)
    (old / "snapshot" / "items.parquet").unlink()
    line = _exit_2(["drift", str(old), "--catalog", catalog])
    assert "has no snapshot/items.parquet" in line
    (old / "snapshot" / "items.parquet").write_text("not parquet")
    line = _exit_2(["drift", str(old), "--catalog", catalog])
    assert "not a stac-geoparquet file" in line
    with pytest.raises(ReleaseError, match="no such folder"):
        release_drift(tmp_path / "nowhere")


# -- build --from: drift.json, the report section, no reuse of a changed item --------------------


def test_a_release_built_without_from_says_why_it_has_no_drift_check(release: Path) -> None:
    assert not (release / "drift.json").exists()
    page = (release / "report" / "index.html").read_text()
    assert "<h2>Catalog drift</h2>" in page and "href='#drift'" in page
    assert "No drift check: this release was not built with --from" in page


@pytest.fixture(scope="module")
def rebuilt(
    release: Path, demo_catalog: DemoCatalog, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Version 0.2.0 built ``--from`` the release after one item it used was reprocessed (a
    new processing baseline, same id, same pixels)."""
    root = tmp_path_factory.mktemp("rebuilt")
    catalog = root / "catalog"
    shutil.copytree(release.parent / "catalog", catalog)
    rows = _samples(release)
    item = sorted(rows, key=lambda r: r["key"])[0]["after_item"]
    _edit(
        catalog,
        IMAGERY,
        item,
        lambda d: d["properties"].update({"s2:processing_baseline": "05.11"}),
    )
    cfg = _config(demo_catalog, catalog, root / "release", version="0.2.0")
    result = build(cfg, progress=False, from_release=release)
    return {"result": result, "item": item, "users": _users(rows, item), "rows": rows}


def test_from_writes_the_drift_and_processes_the_samples_of_a_changed_item(
    release: Path, rebuilt: dict[str, Any]
) -> None:
    result, item, users = rebuilt["result"], rebuilt["item"], rebuilt["users"]
    out = Path(result.release_dir)
    drift = json.loads((out / "drift.json").read_bytes())
    assert "drift.json" in {f.path for f in result.manifest.files}
    assert (drift["added"], drift["removed"], drift["changed"]) == (0, 0, 1)
    assert drift["previous_version"] == "0.1.0"
    (entry,) = drift["items"]
    assert (entry["collection"], entry["id"], entry["change"]) == (IMAGERY, item, "changed")
    assert entry["fields"] == [{"name": "s2:processing_baseline", "before": None, "after": "05.11"}]
    assert entry["samples"] == users and drift["affected_samples"] == len(users) > 0
    assert drift["cells_searched"] == len(release_cells(release))
    # the samples of the changed item are processed again, the others copied
    inc = result.incremental
    quarantined = len(set(release_cells(release))) - len(rebuilt["rows"])
    assert inc["reused"] == len(rebuilt["rows"]) - len(users)
    assert inc["changed"] == len(users) + inc["retried"] and inc["retried"] <= quarantined
    # ... and give the same bytes (the item's pixels did not change)
    old, new = _members(release), _members(out)
    assert set(old) == set(new)
    for key in users:
        assert {n: v for n, v in old[key].items() if n != "json"} == {
            n: v for n, v in new[key].items() if n != "json"
        }
    page = (out / "report" / "index.html").read_text()
    assert "<h2>Catalog drift</h2>" in page and item in page
    assert "s2:processing_baseline" in page and "No drift check" not in page
