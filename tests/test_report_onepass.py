"""The report reads each shard once (issue 13): verify's read, shown to every other reader.

The one read must give each part of the page exactly what it got reading the shards alone, on
a sound release and on damaged ones (a truncated or missing shard, a member that is not JSON,
a shard that is no tar...): the verdict's verify result, ``scan_shards``' per-sample info, kept
members and problems, the grounding section's samples and problems, the series section's
counts. The readers "alone" are the loops the report ran before (kept here as the reference).
The release stage takes the member offsets from the tar as it writes it: they must be what
tarfile reads back. The map is drawn without add_patch's per-box limit update: same bytes.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from geodelta.pipelines.release.geoparquet import member_offsets
from geodelta.pipelines.release.layout import iter_tar_samples
from geodelta.pipelines.release.shards import _SampleTar
from geodelta.pipelines.release.verify import verify_release
from geodelta.pipelines.report.data import Release, _sample_info, open_release
from geodelta.pipelines.report.scan import scan_release
from geodelta.pipelines.report.series import SeriesScan, _add_sample
from tests.factories import factory_release, make_config
from tests.series_release import series_release

# -- the readers as the report ran them before, one pass each -----------------------------------


def _alone_scan_shards(rel: Release, keep: Iterable[str]) -> None:
    wanted = set(keep)
    for shard in rel.manifest.shards:
        try:
            for key, members in iter_tar_samples(rel.root / shard.path):
                rel.samples[key] = _sample_info(members)
                if key in wanted:
                    rel.kept[key] = members
        except (OSError, tarfile.TarError, json.JSONDecodeError) as exc:
            why = str(exc).replace(str(rel.root / shard.path), shard.path)  # path-free page
            rel.problems.append(f"{shard.path}: cannot be read ({type(exc).__name__}: {why})")


def _alone_grounding(rel: Release) -> tuple[list[dict[str, Any]], list[str]]:
    out, problems = [], []
    for shard in rel.manifest.shards:
        try:
            for _key, members in iter_tar_samples(rel.root / shard.path):
                meta = json.loads(members.get("json", b"{}"))
                out.append(
                    {
                        "regions": list(meta.get("regions", [])),
                        "captions": list(meta.get("captions_grounded", [])),
                        "qa": list(json.loads(members.get("qa.json", b"[]"))),
                    }
                )
        except (OSError, tarfile.TarError, ValueError) as exc:
            problems.append(f"{shard.path}: cannot be read ({type(exc).__name__})")
    return out, problems


def _alone_series(rel: Release) -> SeriesScan:
    scan = SeriesScan()
    for shard in rel.manifest.shards:
        try:
            for key, members in iter_tar_samples(rel.root / shard.path):
                _add_sample(scan, key, members)
        except (OSError, tarfile.TarError, ValueError, KeyError) as exc:
            scan.problems.append(f"{shard.path}: cannot be read ({type(exc).__name__})")
    return scan


# -- releases and damage ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """9 factory samples, at most 3 per shard: several shards, some with 2 samples or more."""
    cfg = make_config(validation={"great_expectations": False}, shards={"max_samples": 3})
    return factory_release(tmp_path_factory.mktemp("onepass"), cfg, 9)


@pytest.fixture(scope="module")
def series_rel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return series_release(tmp_path_factory.mktemp("onepass-series"), n=8)


def _rewrite(path: Path, change: Callable[[int, str, bytes], bytes]) -> None:
    """Rewrite a shard member by member: ``change(i, name, data)`` -> new data."""
    with tarfile.open(path) as tar:
        items = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(path, "w") as tar:
        for i, (info, data) in enumerate(items):
            data = change(i, info.name, data)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _nth(
    member: str, n: int, new: bytes | Callable[[bytes], bytes]
) -> Callable[[int, str, bytes], bytes]:
    """Replace the ``n``-th ``member`` (``{key}.{member}``) of a shard by ``new`` (or
    ``new(data)``)."""
    seen = [0]

    def change(_i: int, name: str, data: bytes) -> bytes:
        if name.partition(".")[2] == member:
            seen[0] += 1
            if seen[0] == n:
                return new(data) if callable(new) else new
        return data

    return change


def _damage(root: Path, kind: str) -> None:
    held = {
        s["path"]: s["samples"] for s in json.loads((root / "manifest.json").read_text())["shards"]
    }
    first = next(root / p for p in sorted(held) if held[p] >= 2)  # a shard of 2 samples or more
    second = next(root / p for p in sorted(held) if root / p != first)
    if kind == "truncated":
        first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    elif kind == "missing":
        second.unlink()
    elif kind == "directory":
        second.unlink()
        second.mkdir()
    elif kind == "garbage":
        first.write_bytes(b"x" * 4096)
    elif kind == "json":  # the first sample's metadata is not JSON (the shard holds 2)
        _rewrite(first, _nth("json", 1, b"{oops"))
    elif kind == "qa":
        _rewrite(first, _nth("qa.json", 1, b"[1,"))
    elif kind == "png":
        _rewrite(first, _nth("after.png", 2, lambda d: d[:200]))  # truncated
    elif kind == "unlisted":
        (root / "notes.txt").write_text("not in the manifest")
    elif kind == "dates":
        _rewrite(first, _nth("dates.json", 1, b"[{"))
    elif kind == "steps":  # series facts whose steps lack their index: the series reader fails

        def drop_index(_i: int, name: str, data: bytes) -> bytes:
            if name.partition(".")[2] != "json":
                return data
            meta = json.loads(data)
            for step in meta["series"]["steps"]:
                step.pop("index")
            return json.dumps(meta).encode()

        _rewrite(first, drop_index)
    elif kind != "none":
        raise AssertionError(kind)


def _copy(src: Path, dst: Path, kind: str) -> Path:
    shutil.copytree(src, dst)
    _damage(dst, kind)
    return dst


def _keep(root: Path) -> list[str]:
    keys = sorted(r["key"] for r in pq.read_table(root / "samples.parquet").to_pylist())
    return [keys[0], keys[-1]]


# -- the one read -------------------------------------------------------------------------------


PAIR_DAMAGE = [
    "none",
    "truncated",
    "missing",
    "directory",
    "garbage",
    "json",
    "qa",
    "png",
    "unlisted",
]


@pytest.mark.parametrize("kind", PAIR_DAMAGE)
def test_one_read_gives_every_reader_what_it_read_alone(
    pair_release: Path, tmp_path: Path, kind: str
) -> None:
    root = _copy(pair_release, tmp_path / "rel", kind)
    keep = _keep(root)

    rel = open_release(root)
    scan = scan_release(rel, keep)
    assert scan.series is None  # a pair release

    alone = open_release(root)
    _alone_scan_shards(alone, keep)
    assert scan.verified == verify_release(root, strict=True)  # the verdict's own verify
    assert rel.samples == alone.samples
    assert rel.kept == alone.kept and set(rel.kept) <= set(keep)
    assert rel.problems == alone.problems
    assert (scan.grounding.samples, scan.grounding.problems) == _alone_grounding(alone)

    if kind == "none":
        assert scan.verified.ok and len(rel.samples) == 9 and not rel.problems
        assert set(rel.kept) == set(keep)
    else:  # the damage shows: the test compares something
        assert not scan.verified.ok
    if kind in ("truncated", "missing", "directory", "garbage", "json", "qa"):
        assert rel.problems and scan.grounding.problems
    assert not any(str(tmp_path) in p for p in rel.problems)  # the page names no folder


def test_without_digests_the_rest_is_the_same(pair_release: Path) -> None:
    """No previous release: the digests only a diff reads are left out, nothing else."""
    with_digests, without = open_release(pair_release), open_release(pair_release)
    scan_release(with_digests)
    scan_release(without, digests=False)
    assert set(with_digests.samples) == set(without.samples)
    for key, info in with_digests.samples.items():
        other = without.samples[key]
        assert other.members == {} and other.meta_fields == {}
        assert info.members and info.meta_fields
        assert (other.transitions, other.captions, other.qa) == (
            info.transitions,
            info.captions,
            info.qa,
        )


@pytest.mark.parametrize("kind", ["none", "dates", "steps", "missing", "truncated"])
def test_series_counts_from_the_one_read(series_rel: Path, tmp_path: Path, kind: str) -> None:
    root = _copy(series_rel, tmp_path / "rel", kind)
    rel = open_release(root)
    scan = scan_release(rel)
    alone = open_release(root)
    assert scan.series == _alone_series(alone)
    assert scan.verified == verify_release(root, strict=True)
    assert scan.series is not None
    if kind == "none":
        assert scan.series.samples == 8 and not scan.series.problems
    else:
        assert scan.series.problems


def test_the_report_opens_each_shard_once(
    pair_release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geodelta.pipelines.report.render import render_report

    root = _copy(pair_release, tmp_path / "rel", "none")
    opened: list[str] = []
    real_open = tarfile.open

    def counting_open(name: Any = None, *args: Any, **kwargs: Any) -> Any:
        if name is not None:
            opened.append(Path(name).relative_to(root).as_posix())
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(tarfile, "open", counting_open)
    page = render_report(root)
    assert "PUBLISH" in page
    shards = [s.path for s in open_release(root).manifest.shards]
    assert len(shards) >= 4
    assert sorted(opened) == sorted(shards)  # each shard once, for verify and every section


# -- verify's visitor -----------------------------------------------------------------------------


class _Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail_on = fail_on

    def sample(self, shard: str, key: str, members: dict[str, bytes]) -> None:
        if key == self.fail_on:
            raise OSError("the visitor's own error")
        self.calls.append(("sample", shard, key))

    def done(self, shard: str, error: Exception | None) -> None:
        self.calls.append(("done", shard, type(error).__name__))

    def unread(self, shard: str) -> None:
        self.calls.append(("unread", shard))

    def carried(self, shard: str, keys: Sequence[str]) -> None:
        self.calls.append(("carried", shard, *keys))


@pytest.mark.parametrize("kind", ["none", "truncated", "missing", "png"])
def test_verify_shows_every_sample_read_and_decides_the_same(
    pair_release: Path, tmp_path: Path, kind: str
) -> None:
    root = _copy(pair_release, tmp_path / "rel", kind)
    seen = _Recorder()
    assert verify_release(root, strict=True, visitor=seen) == verify_release(root, strict=True)
    expected: list[tuple[str, ...]] = []
    for shard in open_release(root).manifest.shards:
        if not (root / shard.path).is_file():
            expected.append(("unread", shard.path))
            continue
        error = None
        try:
            for key, _members in iter_tar_samples(root / shard.path):
                expected.append(("sample", shard.path, key))
        except tarfile.TarError as exc:
            error = exc
        expected.append(("done", shard.path, type(error).__name__))
    assert seen.calls == expected
    assert any(c[0] == "sample" for c in seen.calls)


def test_a_visitor_error_is_not_a_verify_problem(pair_release: Path) -> None:
    key = sorted(r["key"] for r in pq.read_table(pair_release / "samples.parquet").to_pylist())[0]
    with pytest.raises(OSError, match="the visitor's own error"):
        verify_release(pair_release, visitor=_Recorder(fail_on=key))


# -- the release stage and the map ----------------------------------------------------------------


def test_offsets_taken_while_writing_are_what_tarfile_reads_back(pair_release: Path) -> None:
    rows = pq.read_table(pair_release / "samples.parquet").to_pylist()
    read_back: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        if row["shard"] not in read_back:
            read_back[row["shard"]] = member_offsets(pair_release / row["shard"])
        assert row["member_offsets"] == read_back[row["shard"]][row["key"]]
    assert len(rows) == 9

    # PAX headers (a long key, a non-ASCII key) and empty, 512-byte and odd-sized members
    samples = [
        ("k" * 120, {"qa.json": b"q" * 1000, "before.png": b""}),
        ("zone-\u00e9t\u00e9_20200101_20210101", {"mask.png": b"1234567", "a": b"\x00" * 512}),
        ("plain", {"json": b"{}"}),
    ]
    buf = io.BytesIO()
    writer = _SampleTar(buf)
    written = {key: writer.write(key, members) for key, members in samples}
    writer.close()
    path = Path(pair_release.parent / "offsets.tar")
    path.write_bytes(buf.getvalue())
    assert written == member_offsets(path)
    data = buf.getvalue()
    for key, members in samples:
        for m in written[key]:
            assert data[m["offset"] : m["offset"] + m["size"]] == members[m["name"]]


def test_the_map_as_one_collection_is_the_same_png_as_a_patch_per_box(
    pair_release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.axes import Axes
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Rectangle

    from geodelta.pipelines.report import plots
    from geodelta.pipelines.report.sections import aoi, box

    rel = open_release(pair_release)
    boxes = [(box(r), str(r["split"])) for r in rel.rows]
    cases = [
        (boxes, plots.SPLIT_COLOURS, aoi(rel.config)),
        (
            [(b, "added" if i % 2 else "other") for i, (b, _) in enumerate(boxes)],
            plots.DIFF_COLOURS,
            None,
        ),
        (boxes[:1], plots.SPLIT_COLOURS, None),
    ]
    fast = [plots.footprint_map(b, colours=c, title="t", aoi=a) for b, c, a in cases]
    add_artist = Axes.add_artist

    def per_box(ax: Axes, artist: Any) -> Any:  # what the map drew before: a patch per box
        if not isinstance(artist, PolyCollection):
            return add_artist(ax, artist)
        for path, face in zip(artist.get_paths(), artist.get_facecolors(), strict=True):
            (x0, y0), (x1, y1) = path.vertices.min(axis=0), path.vertices.max(axis=0)
            rect = Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=face[:3], edgecolor="black")
            rect.set_linewidth(0.4)
            rect.set_alpha(0.55)
            ax.add_patch(rect)
        return artist

    monkeypatch.setattr(Axes, "add_artist", per_box)
    slow = [plots.footprint_map(b, colours=c, title="t", aoi=a) for b, c, a in cases]
    assert fast == slow
    assert len(set(fast)) == len(cases)
