"""The report's ``grounding`` section: regions per sample, box sizes, share of grounded QA.

Read from the shards (each sample's ``json`` region table, ``qa.json`` evidence and the
grounded captions of its ``json``): how many regions of change the samples hold, how large
their boxes are (share of the tile a box covers), which share of the QA items names the
regions it rests on (``region_ids`` in the evidence; the grounded types answer or ask with
boxes), and which share of the captions has at least one phrase grounded in regions.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from typing import Any, ClassVar

from geodelta.pipelines.report.data import Release, read_shards
from geodelta.pipelines.report.sections import Section, table
from geodelta.schemas.qa import GROUNDED_QA_TYPES

__all__ = ["GroundingScan", "grounding_section"]

_TITLE = "Grounding"
#: Bins of regions per sample.
REGION_BINS: tuple[tuple[str, int, int], ...] = (
    ("0", 0, 0),
    ("1", 1, 1),
    ("2", 2, 2),
    ("3-5", 3, 5),
    ("6-10", 6, 10),
    ("over 10", 11, 10**9),
)
#: Bins of box size, as the share of the tile a region's box covers (upper bound inclusive).
BOX_BINS: tuple[tuple[str, float], ...] = (
    ("under 1%", 0.01),
    ("1-5%", 0.05),
    ("5-25%", 0.25),
    ("over 25%", 1.0),
)


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "–"


class GroundingScan:
    """What the section reads of every sample: a :class:`~.data.ShardReader`.

    Attributes:
        samples: per sample, its regions, QA items and grounded captions.
        problems: the shards that could not be read.
    """

    catches: ClassVar[tuple[type[Exception], ...]] = (OSError, tarfile.TarError, ValueError)

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self.problems: list[str] = []

    def add(self, key: str, members: dict[str, bytes]) -> None:
        """One sample's regions, QA items and grounded captions."""
        meta = json.loads(members.get("json", b"{}"))
        self.samples.append(
            {
                "regions": list(meta.get("regions", [])),
                "captions": list(meta.get("captions_grounded", [])),
                "qa": list(json.loads(members.get("qa.json", b"[]"))),
            }
        )

    def needs(self, key: str) -> frozenset[str] | None:
        """Its members: the metadata and the QA items."""
        return frozenset({"json", "qa.json"})

    def fail(self, shard: str, error: Exception) -> None:
        """A shard that could not be read."""
        self.problems.append(f"{shard}: cannot be read ({type(error).__name__})")


def _scan(rel: Release) -> tuple[list[dict[str, Any]], list[str]]:
    """Per sample: regions, QA items and grounded captions; and the shards that failed."""
    scan = GroundingScan()
    read_shards(rel, [scan])
    return scan.samples, scan.problems


def grounding_section(rel: Release, scan: GroundingScan | None = None) -> Section:
    """Regions per sample, box sizes, the share of QA items and captions that are grounded.

    Args:
        rel: the release.
        scan: its samples as read already (:func:`~.scan.scan_release`); None: read them here.
    """
    samples, problems = (scan.samples, scan.problems) if scan is not None else _scan(rel)
    if not samples:
        return Section("grounding", _TITLE, empty=True)
    per_sample = [len(s["regions"]) for s in samples]
    region_rows = [
        (label, n := sum(lo <= k <= hi for k in per_sample), _pct(n, len(samples)))
        for label, lo, hi in REGION_BINS
    ]
    shares = []
    for s in samples:
        for r in s["regions"]:
            x0, y0, x1, y1 = r.get("box", (0, 0, 0, 0))
            shares.append((x1 - x0) * (y1 - y0) / 1_000_000.0)
    box_rows = []
    low = 0.0
    for label, high in BOX_BINS:
        n = sum(low < v <= high if low else v <= high for v in shares)
        box_rows.append((label, n, _pct(n, len(shares))))
        low = high
    items = [q for s in samples for q in s["qa"]]
    by_type: Counter[str] = Counter(str(q.get("type", "")) for q in items)
    grounded_by_type: Counter[str] = Counter(
        str(q.get("type", ""))
        for q in items
        if isinstance(q.get("evidence", {}).get("region_ids"), list)
    )
    boxed: Counter[str] = Counter(
        str(q.get("type", "")) for q in items if "boxes_px" in q.get("evidence", {})
    )
    qa_rows = [
        (t, by_type[t], grounded_by_type[t], _pct(grounded_by_type[t], by_type[t]), boxed[t])
        for t in sorted(by_type)
    ]
    captions = [c for s in samples for c in s["captions"]]
    with_span = sum(bool(c.get("spans")) for c in captions)
    grounded = sum(grounded_by_type.values())
    n_grounded_types = sum(by_type[t] for t in GROUNDED_QA_TYPES)
    return Section(
        "grounding",
        _TITLE,
        {
            "samples": len(samples),
            "regions": sum(per_sample),
            "mean_regions": f"{sum(per_sample) / len(samples):.2f}",
            "max_regions": max(per_sample),
            "qa": len(items),
            "qa_grounded": grounded,
            "qa_grounded_pct": _pct(grounded, len(items)),
            "qa_box_types": n_grounded_types,
            "captions": len(captions),
            "captions_spans": with_span,
            "captions_pct": _pct(with_span, len(captions)),
            "region_table": table(["regions", "samples", "share"], region_rows, numeric=[1, 2]),
            "box_table": table(
                ["box covers of the tile", "regions", "share"], box_rows, numeric=[1, 2]
            ),
            "qa_table": table(
                ["QA type", "items", "grounded", "share", "with boxes"],
                qa_rows,
                numeric=[1, 2, 3, 4],
            ),
            "problems": problems,
        },
    )
