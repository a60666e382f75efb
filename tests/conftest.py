"""Shared fixtures: where the real data lives, and small configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real imagery and annotations; read in place, never copied)."""
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
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
