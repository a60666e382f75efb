"""Shared fixtures: where the real data lives, and small configs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.prerequisites import missing
from tests.s3_server import s3_bucket, s3_server  # noqa: F401 (fixtures: a test double of S3)

if TYPE_CHECKING:
    from geodelta.pipelines.api import BuildResult
    from geodelta.sources.demo.catalog import DemoCatalog
    from tests.pgstac_server import PgstacServer

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real imagery and annotations; read in place, never copied)."""
    if not SHARED_DATA.exists():
        missing(f"real data not found at {SHARED_DATA} (../shared beside the checkout)")
    return SHARED_DATA


def minimal_config(**overrides: Any) -> dict[str, Any]:
    """The smallest valid build-config mapping (landcover labels, a bbox AOI)."""
    cfg: dict[str, Any] = {
        "name": "test",
        "version": "0.0.1",
        "licence": "CC0-1.0",
        "attribution": "test",
        "aoi": {"bbox": [5.95, 45.02, 6.05, 45.06]},
        "catalog": {"url": "catalog.json"},
        "imagery": {
            "collection": "s2",
            "bands": ["B02", "B03", "B04", "B08"],
            "rgb": ["B04", "B03", "B02"],
            "classification_asset": "SCL",
        },
        "time": {"t0": ["2020-06-01", "2020-08-31"], "t1": ["2021-06-01", "2021-08-31"]},
        "labels": {"kind": "landcover", "collection": "lc"},
        "output": {"dir": "release"},
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def pgstac_api(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgstacServer]:
    """A real STAC API (stac-fastapi-pgstac on a throwaway PostgreSQL + PostGIS cluster) on
    127.0.0.1, loaded with OSCD (``tests.pgstac_server.OSCD_CITIES``) and ESA WorldCover
    2020/2021 (``esa-worldcover``), whose COG assets another local server serves over HTTP with
    byte ranges; everything is stopped at the end of the session.

    Skips when the PostgreSQL/PostGIS binaries are missing, except in CI (``CI=true``), where
    that is a failure: CI installs them (.ci/run).
    """
    from tests import pgstac_server as pgs

    absent = pgs.missing_prerequisites()
    if absent:
        missing(f"the pgstac server cannot start: {absent} (`make test` installs it)")
    root = tmp_path_factory.mktemp("pgstac")
    assets = root / "assets"
    oscd = pgs.oscd_stac(shared_data / "oscd", pgs.OSCD_CITIES, assets / "oscd")
    worldcover = pgs.worldcover_stac(shared_data / "esa_worldcover_pair", assets / "worldcover")
    items = oscd[1] + worldcover[1]
    with pgs.RangeFileServer(assets) as files:
        pgs.publish(items, files)  # the COGs are read over HTTP, as from blob storage
        with pgs.run_pgstac_server(root / "server", [oscd[0], worldcover[0]], items) as server:
            yield dataclasses.replace(server, asset_server=files)


# --------------------------------------------------------------------------------------------
# The demo release, built once per session and shared by the modules that read it. Tests treat
# these as read-only: a test that breaks a file copies the release (or the catalog) first.


@pytest.fixture(scope="session")
def demo_catalog(tmp_path_factory: pytest.TempPathFactory) -> DemoCatalog:
    """The SYNTHETIC demo catalog at ``tests.factories.DEMO_SCALE`` (seed 0), written once."""
    from geodelta.sources.demo.catalog import write_demo_catalog
    from tests.factories import DEMO_SCALE

    root = tmp_path_factory.mktemp("demo-catalog")
    return write_demo_catalog(root / "catalog", seed=0, scale=DEMO_SCALE)


@pytest.fixture(scope="session")
def demo_release(
    demo_catalog: DemoCatalog, tmp_path_factory: pytest.TempPathFactory
) -> BuildResult:
    """``configs/demo.yaml`` over :func:`demo_catalog`, as it ships (default runner, GX on)."""
    from geodelta.pipelines.api import build
    from tests.factories import demo_config

    out = tmp_path_factory.mktemp("demo-release") / "release"
    return build(demo_config(demo_catalog, out), mode="fresh", progress=False)


#: Overrides of :func:`small_shards_release`: several shards from the demo's 12 samples; GX is
#: not what the modules that share it test (~6 s).
SMALL_SHARDS: dict[str, Any] = {
    "shards": {"max_samples": 4},
    "validation": {"great_expectations": False},
}


@pytest.fixture(scope="session")
def small_shards_release(
    demo_catalog: DemoCatalog, tmp_path_factory: pytest.TempPathFactory
) -> BuildResult:
    """The demo with :data:`SMALL_SHARDS` on the default runner (Beam's FnApiRunner)."""
    from geodelta.pipelines.api import build
    from tests.factories import demo_config

    out = tmp_path_factory.mktemp("demo-small") / "release"
    return build(demo_config(demo_catalog, out, **SMALL_SHARDS), mode="fresh", progress=False)


@pytest.fixture
def hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``datasets`` offline, its caches under ``tmp_path``."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    import datasets  # the dev extra; imported after the env is set (it reads it at import)

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    datasets.disable_progress_bars()
    return datasets
