"""The search snapshot's block searches on threads (issue 13: continental scale).

:func:`~geodelta.pipelines.stages.block_search.snapshot_items` searches a STAC API's plan blocks
on ``catalog.concurrency_per_host x 2`` threads; the snapshot's bytes are those of a serial run
(per-block recorders merged in block order), a truncated search falls back per cell for its own
block only, and the per-host limit still holds. Static and snapshot catalogs stay serial.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pystac
import pytest

from geodelta.pipelines.stages.block_search import (
    THREADS_PER_SLOT,
    search_threads,
    snapshot_items,
)
from geodelta.pipelines.stages.blocks import iter_blocks
from geodelta.schemas import BuildConfig
from geodelta.schemas.records import BBox
from geodelta.sources import stac_api
from geodelta.sources.catalog import open_catalog
from geodelta.sources.demo.catalog import DemoCatalog, write_demo_catalog
from geodelta.sources.snapshot import snapshot_bytes
from geodelta.sources.stac_api import StacApiCatalog
from geodelta.sources.static import StaticCatalog
from tests.factories import REPO, demo_config
from tests.http_doubles import RecordedStacApi

#: 32 px cells in blocks of 2 x 2: ~40 plan blocks over the small demo catalog.
GRID = {"cell_size_px": 32, "resolution_m": 10, "keep": "within"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoCatalog, BuildConfig]:
    root = tmp_path_factory.mktemp("snapshot-threads")
    cat = write_demo_catalog(root / "catalog", seed=0, scale=0.3)
    cfg = demo_config(cat, root / "out", runner={"name": "inprocess", "block_cells": 2}, grid=GRID)
    assert sum(1 for _ in iter_blocks(cfg)) >= 20  # many blocks, so threads interleave
    return cat, cfg


def _demo_items(cfg: BuildConfig) -> list[dict[str, Any]]:
    """The demo catalog's items as a STAC API would answer them (hrefs absolute)."""
    static = open_catalog(cfg.catalog, resolve=cfg.resolve)
    assert isinstance(static, StaticCatalog)
    found = []
    for _, href in sorted(static.item_hrefs.items()):
        item = pystac.Item.from_file(href)
        item.make_asset_hrefs_absolute()
        found.append(item.to_dict(include_self_link=False, transform_hrefs=False))
    return found


def _api_cfg(cfg: BuildConfig, url: str, **catalog: Any) -> BuildConfig:
    section = cfg.catalog.model_copy(update={"kind": "stac-api", "url": url, **catalog})
    return cfg.model_copy(update={"catalog": section})


def test_a_snapshot_on_threads_is_the_serial_one_byte_for_byte(
    demo: tuple[DemoCatalog, BuildConfig],
) -> None:
    _, cfg = demo
    static = open_catalog(cfg.catalog, resolve=cfg.resolve)
    assert search_threads(cfg, static) == 1  # in memory: serial by default
    serial = snapshot_bytes(snapshot_items(cfg, static, threads=1))
    assert len(snapshot_items(cfg, static)) > 2
    for threads in (2, 8):
        assert snapshot_bytes(snapshot_items(cfg, static, threads=threads)) == serial


def test_block_searches_overlap_within_the_per_host_limit(
    demo: tuple[DemoCatalog, BuildConfig],
) -> None:
    """Against an HTTP STAC API test double: the default threads (2 per host slot) keep the
    limit's slots busy, never more, and the snapshot is the serial one."""
    _, cfg = demo
    api_double = RecordedStacApi(extra_items=_demo_items(cfg))
    with api_double.running():
        api_double.delay_s = 0.02
        acfg = _api_cfg(cfg, api_double.url, concurrency_per_host=2, backoff_s=0.0)
        runs = {}
        for threads in (None, 1):
            stac_api._HOST_SLOTS.clear()  # this test's limit for the double's port
            api = StacApiCatalog(acfg.catalog)
            if threads is None:
                assert search_threads(acfg, api) == 2 * THREADS_PER_SLOT
            api_double.max_in_flight = 0
            items = snapshot_items(acfg, api, threads=threads)
            runs[threads] = (snapshot_bytes(items), api.searches, api_double.max_in_flight)
    (threaded, n_threaded, peak_threaded), (serial, n_serial, peak_serial) = runs.values()
    assert peak_threaded == 2 and peak_serial == 1
    assert n_threaded == n_serial >= 40
    assert threaded == serial


class TruncatingApiDouble:
    """A STAC-API-like catalog test double: answers from the static demo catalog, flags the
    search of every other plan block as truncated at ``catalog.max_items`` (a shared counter
    as the real client's, and a per-search flag), and records how many searches overlap."""

    def __init__(self, static: StaticCatalog, delay_s: float) -> None:
        self.static = static
        self.delay_s = delay_s
        self.truncated = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: list[BBox] = []
        self._lock = threading.Lock()

    def _cut(self, bbox: BBox) -> bool:
        wide = bbox[2] - bbox[0] > 0.005  # a block's box, not a 320 m cell's
        return wide and round(bbox[0] * 1e4) % 2 == 0

    def search_items_flagged(
        self,
        collections: Any,
        *,
        bbox: BBox,
        window: tuple[datetime, datetime],
        max_cloud_cover: float | None = None,
    ) -> tuple[list[pystac.Item], bool]:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.calls.append(bbox)
        try:
            time.sleep(self.delay_s)
            scenes = self.static.search(collections, bbox, window, max_cloud_cover=max_cloud_cover)
            found = []
            for s in scenes:
                item = pystac.Item.from_file(self.static.item_hrefs[(s.collection, s.item_id)])
                item.make_asset_hrefs_absolute()
                found.append(item)
            cut = self._cut(bbox)
            with self._lock:
                self.truncated += int(cut)
            return found, cut
        finally:
            with self._lock:
                self.in_flight -= 1

    def search_items(self, collections: Any, **kw: Any) -> list[pystac.Item]:
        return self.search_items_flagged(collections, **kw)[0]


def test_a_truncated_block_falls_back_per_cell_for_that_block_only(
    demo: tuple[DemoCatalog, BuildConfig],
) -> None:
    _, cfg = demo
    static = open_catalog(cfg.catalog, resolve=cfg.resolve)
    assert isinstance(static, StaticCatalog)
    serial_double = TruncatingApiDouble(static, delay_s=0.0)
    serial = snapshot_bytes(snapshot_items(cfg, serial_double, threads=1))
    threaded_double = TruncatingApiDouble(static, delay_s=0.005)
    threads = search_threads(cfg, threaded_double)
    assert threads == cfg.catalog.concurrency_per_host * THREADS_PER_SLOT
    threaded = snapshot_bytes(snapshot_items(cfg, threaded_double))
    assert 1 < threaded_double.max_in_flight <= threads  # overlapping, never over the pool
    assert 0 < serial_double.truncated == threaded_double.truncated
    # the same searches (block, then its cells where the block's was cut), in any order
    assert sorted(threaded_double.calls) == sorted(serial_double.calls)
    assert threaded == serial


def test_signing_a_snapshot_s_local_hrefs_never_loads_planetary_computer(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from geodelta.schemas.config import CatalogConfig\n"
        "from geodelta.sources.signing import signer_for\n"
        "sign = signer_for(CatalogConfig(kind='snapshot', url='items.parquet'))\n"
        "assert sign is not None\n"
        "assert sign('/data/a.tif') == '/data/a.tif'\n"
        "assert sign('https://example.org/a.tif') == 'https://example.org/a.tif'\n"
        "print(sorted(m for m in sys.modules if m.startswith('planetary_computer')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
