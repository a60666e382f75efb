"""Pre-flight and config rules: a build that can never produce a sample exits 2 before any work.

Every bad catalog is a copy of the SYNTHETIC demo catalog (scale 0.1, ~2 s to write) with one
thing broken, as a user would meet it: a missing or non-JSON catalog.json, a malformed item, an
unknown collection, a band missing from the items, a band stored as float32 reflectance where
its STAC ``raster:bands`` declares uint16 DN. Each case runs ``geodelta build`` and asserts exit
code 2, a one-line message naming the key / file / item to change, and an output folder with
nothing in it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from geodelta.pipelines.cli import app
from geodelta.schemas import ConfigError, load_config
from tests.conftest import REPO

runner = CliRunner()

S2 = "geodelta-demo-s2l2a"
LC = "geodelta-demo-landcover"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The demo catalog at scale 0.1 (4 cells with grid.keep: intersects), written once."""
    from geodelta.sources.demo.catalog import write_demo_catalog

    return write_demo_catalog(tmp_path_factory.mktemp("pf") / "catalog", seed=0, scale=0.1)


def _config(tmp: Path, catalog: Path, **extra: Any) -> Path:
    """configs/demo.yaml over ``catalog``, output in ``tmp/out``; ``extra`` sections update
    the file's (``aoi`` replaces it)."""
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["catalog"]["url"] = str(catalog)
    data["output"]["dir"] = str(tmp / "out")
    data["aoi"] = {"bbox": [5.99, 45.0405, 6.01, 45.0495]}
    data["grid"]["keep"] = "intersects"
    data["runner"] = {"name": "inprocess"}
    data["validation"] = {"great_expectations": False}
    for key, value in extra.items():
        if key != "aoi" and isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _copy(pristine: Any, tmp: Path) -> Path:
    root = tmp / "catalog"
    shutil.copytree(pristine.root, root)
    return root


def _items(root: Path, collection: str) -> list[Path]:
    return sorted(p for p in (root / collection).glob("*/*.json"))


def _edit_items(root: Path, collection: str, edit: Callable[[dict[str, Any]], None]) -> None:
    for path in _items(root, collection):
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))


def _refused(config: Path, *needles: str, check: bool = False) -> str:
    """Run ``geodelta build`` (or ``--check``): exit 2, the needles on one line, nothing built."""
    args = ["build", str(config), "--no-progress"] + (["--check"] if check else [])
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    # rich wraps long lines in a narrow terminal: compare the message without line breaks
    text = " ".join(res.output.split())
    for needle in needles:
        assert needle in text, f"{needle!r} not in {res.output!r}"
    out = config.parent / "out"
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    return text


# -- the pre-flight passes on a good catalog --------------------------------------------------


def test_check_passes_and_prints_what_was_checked(pristine: Any, tmp_path: Path) -> None:
    cfg = _config(tmp_path, pristine.catalog_path)
    res = runner.invoke(app, ["build", str(cfg), "--check"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    for needle in (
        "catalog.url:",
        "imagery.collection: 'geodelta-demo-s2l2a' has items",
        "B08: uint16, nodata 0.0, scale 0.0001 offset -0.1: file and STAC agree",
        "SCL: uint8",
        "labels.collection: 'geodelta-demo-landcover' has items",
        "map: uint8",
        "pre-flight passed",
    ):
        assert needle in out, out
    assert not (tmp_path / "out").exists()  # --check builds nothing


# -- the catalog opens and parses -------------------------------------------------------------


def test_missing_catalog(pristine: Any, tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "nowhere" / "catalog.json")
    _refused(cfg, "catalog.url", "nowhere/catalog.json")


def test_catalog_not_json(pristine: Any, tmp_path: Path) -> None:
    root = _copy(pristine, tmp_path)
    (root / "catalog.json").write_text("this is not JSON {")
    _refused(_config(tmp_path, root / "catalog.json"), "catalog.json", "not a readable STAC")


def test_malformed_item_names_its_file(pristine: Any, tmp_path: Path) -> None:
    root = _copy(pristine, tmp_path)
    bad = _items(root, S2)[-1]
    bad.write_text('{"type": "Feature", "id": ')  # truncated
    _refused(_config(tmp_path, root / "catalog.json"), bad.name, "fix or remove that file")


def test_item_without_datetime_names_its_file(pristine: Any, tmp_path: Path) -> None:
    root = _copy(pristine, tmp_path)
    bad = _items(root, S2)[0]
    data = json.loads(bad.read_text())
    del data["properties"]["datetime"]  # and no start/end_datetime either
    bad.write_text(json.dumps(data))
    _refused(_config(tmp_path, root / "catalog.json"), bad.name, "datetime")


# -- the collections exist --------------------------------------------------------------------


def test_unknown_imagery_collection(pristine: Any, tmp_path: Path) -> None:
    cfg = _config(tmp_path, pristine.catalog_path, imagery={"collection": "sentinel-2-l2a"})
    _refused(cfg, "imagery.collection", "'sentinel-2-l2a'", S2)


def test_wrong_labels_collection(pristine: Any, tmp_path: Path) -> None:
    cfg = _config(tmp_path, pristine.catalog_path, labels={"collection": "esa-worldcover"})
    _refused(cfg, "labels.collection", "'esa-worldcover'", LC)


# -- the sampled items have every asset the config names --------------------------------------


def test_band_absent_from_items(pristine: Any, tmp_path: Path) -> None:
    root = _copy(pristine, tmp_path)
    _edit_items(root, S2, lambda d: d["assets"].pop("B08"))
    text = _refused(_config(tmp_path, root / "catalog.json"), "imagery.bands", "'B08'", "item")
    assert "DEMO_S2" in text  # the item is named


def test_band_the_collection_never_had(pristine: Any, tmp_path: Path) -> None:
    bands = ["B02", "B03", "B04", "B8A"]
    cfg = _config(tmp_path, pristine.catalog_path, imagery={"bands": bands})
    _refused(cfg, "imagery.bands", "'B8A'", "'B08'")  # the assets it does have are listed


def test_classification_asset_absent(pristine: Any, tmp_path: Path) -> None:
    cfg = _config(tmp_path, pristine.catalog_path, imagery={"classification_asset": "QA60"})
    _refused(cfg, "imagery.classification_asset", "'QA60'")


def test_label_asset_absent(pristine: Any, tmp_path: Path) -> None:
    cfg = _config(tmp_path, pristine.catalog_path, labels={"asset": "lulc"})
    _refused(cfg, "labels.asset", "'lulc'", "DEMO_LC")


# -- file headers agree with STAC raster:bands ------------------------------------------------


def _rewrite(path: Path, fn: Callable[[np.ndarray, dict[str, Any]], np.ndarray]) -> None:
    import rasterio

    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    data = fn(data, profile)
    profile.update(dtype=data.dtype.name, driver="GTiff")
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave"):
        profile.pop(key, None)
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_band_stored_as_float_reflectance(pristine: Any, tmp_path: Path) -> None:
    """B08 rewritten as float32 reflectance in every item, STAC still declaring uint16 DN."""
    root = _copy(pristine, tmp_path)
    for tif in (root / S2).glob("*/B08.tif"):
        _rewrite(tif, lambda a, _: (a.astype(np.float32) * 1e-4 - 0.1).astype(np.float32))
    text = _refused(
        _config(tmp_path, root / "catalog.json"),
        "imagery.bands",
        "'B08'",
        "float32",
        "uint16",
    )
    assert "item 'DEMO_S2" in text


def test_nodata_disagreeing_with_stac(pristine: Any, tmp_path: Path) -> None:
    root = _copy(pristine, tmp_path)

    def nodata_65535(a: np.ndarray, profile: dict[str, Any]) -> np.ndarray:
        profile["nodata"] = 65535
        return a

    for tif in (root / S2).glob("*/B03.tif"):
        _rewrite(tif, nodata_65535)
    _refused(_config(tmp_path, root / "catalog.json"), "imagery.bands", "'B03'", "nodata 65535")


def test_asset_file_missing(pristine: Any, tmp_path: Path) -> None:
    root = _copy(pristine, tmp_path)
    for tif in (root / S2).glob("*/SCL.tif"):
        tif.unlink()
    _refused(
        _config(tmp_path, root / "catalog.json"),
        "imagery.classification_asset",
        "'SCL'",
        "cannot be opened",
    )


def test_check_refuses_like_build(pristine: Any, tmp_path: Path) -> None:
    cfg = _config(tmp_path, pristine.catalog_path, imagery={"collection": "nope"})
    _refused(cfg, "imagery.collection", "'nope'", check=True)


# -- config rules checked at load -------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (
            {"imagery": {"rgb": ["B04", "B03", "B05"]}},
            ("imagery.rgb", "['B05'] not in imagery.bands"),
        ),
        (
            {"coregistration": {"band": "B11"}},
            ("coregistration.band", "'B11' not in imagery.bands"),
        ),
        (
            {"pairing": {"min_gap_days": 800, "max_gap_days": 730}},
            ("pairing.min_gap_days (800)", "pairing.max_gap_days (730)"),
        ),
    ],
)
def test_config_rules_at_load(
    pristine: Any, tmp_path: Path, extra: dict[str, Any], needles: tuple[str, ...]
) -> None:
    cfg = _config(tmp_path, pristine.catalog_path, **extra)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    for needle in needles:
        assert needle in str(err.value)
    _refused(cfg, *needles)


def _square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


BOW_TIE = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"name": "bowtie"},
            "geometry": {
                "type": "Polygon",
                # the corners of the demo AOI in the wrong order: two triangles touching
                "coordinates": [
                    [
                        [5.99, 45.0405],
                        [6.01, 45.0495],
                        [6.01, 45.0405],
                        [5.99, 45.0495],
                        [5.99, 45.0405],
                    ]
                ],
            },
        }
    ],
}


@pytest.mark.parametrize(
    ("geojson", "needles"),
    [
        (BOW_TIE, ("aoi.geojson", "feature 0 ('bowtie')", "Self-intersection", "make_valid")),
        (
            {"type": "Point", "coordinates": [6.0, 45.04]},
            ("aoi.geojson", "is a Point", "FeatureCollection"),
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [_square(5.99, 45.04, 6.01, 45.05)],
                        },
                    },
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {
                            "type": "LineString",
                            "coordinates": [[6.0, 45.0], [6.1, 45.1]],
                        },
                    },
                ],
            },
            ("aoi.geojson", "feature 1", "LineString", "(Multi)Polygon"),
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "properties": {}, "geometry": None}],
            },
            ("aoi.geojson", "feature 0", "no geometry"),
        ),
        (
            {
                "type": "Feature",
                "properties": {},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [_square(640000, 4990000, 650000, 5000000)],
                },
            },
            ("aoi.geojson", "lon/lat"),
        ),
        ([1, 2, 3], ("aoi.geojson", "is a list")),
    ],
    ids=["bow-tie", "point", "linestring-feature", "no-geometry", "projected", "not-an-object"],
)
def test_bad_aoi_geojson(
    pristine: Any, tmp_path: Path, geojson: Any, needles: tuple[str, ...]
) -> None:
    (tmp_path / "aoi.geojson").write_text(json.dumps(geojson))
    cfg = _config(tmp_path, pristine.catalog_path, aoi={"geojson": "aoi.geojson"})
    _refused(cfg, *needles)
    res = runner.invoke(app, ["plan", str(cfg)])
    assert res.exit_code == 2 and "aoi.geojson" in res.output


def test_valid_geojson_aoi_plans_like_its_bbox(pristine: Any, tmp_path: Path) -> None:
    """The bow-tie's corners in the right order: the same cells as the bbox."""
    good = {
        "type": "Feature",
        "properties": {"name": "aoi"},
        "geometry": {"type": "Polygon", "coordinates": [_square(5.99, 45.0405, 6.01, 45.0495)]},
    }
    (tmp_path / "aoi.geojson").write_text(json.dumps(good))
    from geodelta.pipelines import api

    by_file = api.plan(
        load_config(_config(tmp_path, pristine.catalog_path, aoi={"geojson": "aoi.geojson"}))
    )
    by_bbox = api.plan(load_config(_config(tmp_path, pristine.catalog_path)))
    assert [j.cell_id for j in by_file] == [j.cell_id for j in by_bbox]
    assert len(by_file) == 4


# -- the same checks against a STAC API -------------------------------------------------------


def _api_items(catalog: Path) -> list[dict[str, Any]]:
    """The items of a static catalog as a STAC API returns them (absolute asset hrefs)."""
    import pystac

    root = pystac.Catalog.from_file(str(catalog))
    out = []
    for item in root.get_items(recursive=True):
        item.make_asset_hrefs_absolute()
        d = item.to_dict(include_self_link=False)
        d["links"] = []
        out.append(d)
    return out


def _api_config(tmp: Path, url: str, **extra: Any) -> Path:
    cfg = _config(tmp, Path("unused"), **extra)
    data = yaml.safe_load(cfg.read_text())
    data["catalog"] = {"kind": "stac-api", "url": url, "retries": 0}
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def test_stac_api_check_passes_then_refuses(pristine: Any, tmp_path: Path) -> None:
    from tests.http_doubles import RecordedStacApi

    root = _copy(pristine, tmp_path)
    api = RecordedStacApi(extra_items=_api_items(root / "catalog.json"))
    with api.running():
        res = runner.invoke(app, ["build", str(_api_config(tmp_path, api.url)), "--check"])
        assert res.exit_code == 0, res.output
        assert "catalog.url: STAC API" in res.stdout and "B08: uint16" in res.stdout
        unknown = _api_config(tmp_path, api.url, imagery={"collection": "nope"})
        _refused(unknown, "imagery.collection", "'nope'", "returns no item")
        for tif in (root / S2).glob("*/B08.tif"):
            _rewrite(tif, lambda a, _: (a.astype(np.float32) * 1e-4 - 0.1).astype(np.float32))
        _refused(_api_config(tmp_path, api.url), "imagery.bands", "'B08'", "float32", "uint16")
    searches = [r.body for r in api.seen if r.method == "POST"]
    assert searches and all(b.get("limit") in (1, 50) for b in searches)  # one small page each


def test_asset_without_crs(pristine: Any, tmp_path: Path) -> None:
    root = _copy(pristine, tmp_path)

    def no_crs(a: np.ndarray, profile: dict[str, Any]) -> np.ndarray:
        profile.pop("crs", None)
        return a

    for tif in (root / LC).glob("*/*.tif"):
        _rewrite(tif, no_crs)
    _refused(_config(tmp_path, root / "catalog.json"), "labels.asset", "'map'", "no CRS")
