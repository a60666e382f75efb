"""The gallery's after image shows each change region's box and id (issue 18)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geodelta.pipelines.report.samples import BOX_RGB, boxed_after


def _a_sample_with_regions(release: Path) -> tuple[bytes, list[dict[str, Any]]]:
    for shard in sorted((release / "shards").glob("*.tar")):
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(shard) as tar:
            for info in tar:
                key, _, name = info.name.partition(".")
                f = tar.extractfile(info)
                assert f is not None
                members.setdefault(key, {})[name] = f.read()
        for m in members.values():
            regions = json.loads(m["json"]).get("regions") or []
            if regions:
                return m["after.png"], regions
    raise AssertionError("no sample with a change region in the demo release")


def test_boxes_are_drawn_at_the_region_boxes(demo_release: Any) -> None:
    after, regions = _a_sample_with_regions(Path(demo_release.release_dir))
    plain = np.asarray(Image.open(io.BytesIO(after)).convert("RGB"))
    boxed = np.asarray(Image.open(io.BytesIO(boxed_after(after, regions))).convert("RGB"))
    assert boxed.shape == plain.shape
    for r in regions:
        x0, y0, x1, y1 = r["bbox_px"]
        for x, y in ((x1 - 1, y1 - 1), (x1 - 1, y0), (x0, y1 - 1)):  # corners off the id text
            assert tuple(boxed[y, x]) == BOX_RGB, (r["id"], x, y)
    # outside every box (and its label) the image is untouched
    touched = np.zeros(plain.shape[:2], bool)
    for r in regions:
        x0, y0, x1, y1 = r["bbox_px"]
        touched[max(0, y0 - 1) : y1 + 16, max(0, x0 - 1) : x1 + 16] = True
    assert np.array_equal(boxed[~touched], plain[~touched])
    assert boxed_after(after, regions) == boxed_after(after, regions)  # deterministic bytes
