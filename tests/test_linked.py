"""Samples a --from build links (pipelines/release/linked.py): reused samples stay in the previous
release's shards (never staged), and a shard that holds exactly what a previous shard held is
that file, copied whole; the release is the one a full build writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from geodelta.errors import ReleaseError
from geodelta.pipelines.api import build, verify
from geodelta.pipelines.release.layout import SAMPLES_TABLE, shard_files
from geodelta.pipelines.release.linked import LinkedSamples
from geodelta.pipelines.release.previous import open_previous
from geodelta.pipelines.release.staging import LINKED_CELL, Staging, StagingError
from geodelta.sources.demo.catalog import DemoCatalog
from tests.conftest import SMALL_SHARDS
from tests.factories import demo_config

INPROCESS: dict[str, Any] = {**SMALL_SHARDS, "runner": {"name": "inprocess"}}


class _Spy:
    """Counts the shards copied whole and the samples put into a staging area."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.copied: list[str] = []
        self.put: list[str] = []
        copy, put = LinkedSamples.copy_shard, Staging.put_sample

        def copy_shard(linked: LinkedSamples, rel: str, dest: Path) -> str | None:
            self.copied.append(rel)
            return copy(linked, rel, dest)

        def put_sample(staging: Staging, key: str, members: dict[str, bytes]) -> None:
            self.put.append(key)
            put(staging, key, members)

        monkeypatch.setattr(LinkedSamples, "copy_shard", copy_shard)
        monkeypatch.setattr(Staging, "put_sample", put_sample)


def _files(release: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in shard_files(release)]


def test_the_same_cells_again_copy_every_shard_whole(
    small_shards_release: Any,
    demo_catalog: DemoCatalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--from a release of the same config: every sample linked, none staged, every shard
    copied whole; shards and samples table byte-identical; the release verifies."""
    small = small_shards_release
    spy = _Spy(monkeypatch)
    again = build(
        demo_config(demo_catalog, tmp_path / "again", **INPROCESS),
        progress=False,
        from_release=small.release_dir,
    )
    assert again.incremental["reused"] == small.samples > 0
    assert spy.put == []  # nothing staged: every reused sample is read from its shard
    assert sorted(spy.copied) == sorted(s.path for s in small.manifest.shards)
    assert len(spy.copied) > 1
    assert _files(again.release_dir) == _files(small.release_dir)
    table = [(r / SAMPLES_TABLE).read_bytes() for r in (small.release_dir, again.release_dir)]
    assert table[0] == table[1]
    checked = verify(again.release_dir, strict=True)
    assert checked.ok, checked.problems


def test_a_grown_aoi_copies_the_untouched_shards_and_equals_a_full_build(
    demo_catalog: DemoCatalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x0, y0, x1, y1 = demo_catalog.aoi_bbox
    cut = {"aoi": {"bbox": [x0 + 0.3 * (x1 - x0), y0, x1, y1]}}
    prev = build(demo_config(demo_catalog, tmp_path / "prev", **cut, **INPROCESS), progress=False)
    full = build(demo_config(demo_catalog, tmp_path / "full", **INPROCESS), progress=False)
    spy = _Spy(monkeypatch)
    grown = build(
        demo_config(demo_catalog, tmp_path / "grown", **INPROCESS),
        progress=False,
        from_release=prev.release_dir,
    )
    inc = grown.incremental
    assert inc["reused"] == prev.samples and inc["new"] > 0
    assert len(spy.put) == grown.samples - inc["reused"]  # only the new samples were staged
    assert spy.copied, "no shard of the previous release was kept whole"
    # the copied shards are files of the previous release, and the release is a full build's
    prev_files = {data for _, data in _files(prev.release_dir)}
    mine = dict(_files(grown.release_dir))
    kept = [name for name, data in mine.items() if data in prev_files]
    assert len(kept) >= len(spy.copied)
    assert _files(grown.release_dir) == _files(full.release_dir)
    checked = verify(grown.release_dir, strict=True)
    assert checked.ok, checked.problems


def test_a_linked_marker_needs_no_staged_sample_and_a_resume_decides_it_again(
    tmp_path: Path,
) -> None:
    staging = Staging(tmp_path / "stg")
    with pytest.raises(StagingError, match="were not put"):
        staging.mark_cell("c1", keys=["c1_20200101_20210101"], quarantine=[])
    staging.mark_cell("c1", keys=["c1_20200101_20210101"], quarantine=[], linked=True)
    assert staging.outcomes()[0] == ["c1_20200101_20210101"]
    assert staging.corrupt_cells() == {"c1": LINKED_CELL}


def test_a_previous_shard_changed_under_the_build_is_caught(
    small_shards_release: Any, demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "prev"
    shutil.copytree(small_shards_release.release_dir, copy)
    cfg = demo_config(demo_catalog, tmp_path / "out", **INPROCESS)
    prev = open_previous(copy, cfg)
    key, rel = next(iter(prev.samples.values()))
    linked = LinkedSamples(prev, [key])
    assert set(linked.read_members(key)) == linked.member_names(key) and key in linked
    linked.close()
    name, offset, _ = prev.offsets[key][0]
    path = copy / rel
    data = bytearray(path.read_bytes())
    data[offset - 512 : offset - 500] = b"x" * 12  # the member's tar header, renamed
    path.write_bytes(bytes(data))
    linked = LinkedSamples(prev, [key])
    with pytest.raises(ReleaseError, match="changed during the build"):
        linked.read_member(key, name)
    linked.close()


@pytest.mark.parametrize("again_from", [True, False])
def test_a_resumed_from_build_links_again_or_processes(
    small_shards_release: Any,
    demo_catalog: DemoCatalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    again_from: bool,
) -> None:
    """A --from build that stops after linking leaves markers without staged samples; its
    --resume decides those cells again: linked again with --from, processed without it. Either
    way the release is the previous one's shards, file for file."""
    from geodelta.pipelines.release import assemble

    small = small_shards_release
    cfg = demo_config(demo_catalog, tmp_path / "again", **INPROCESS)
    real = assemble.write_release

    def stop(*args: Any, **kwargs: Any) -> Any:
        raise OSError("the machine went away")

    monkeypatch.setattr(assemble, "write_release", stop)
    with pytest.raises(OSError, match="went away"):
        build(cfg, progress=False, from_release=small.release_dir)
    monkeypatch.setattr(assemble, "write_release", real)
    spy = _Spy(monkeypatch)
    kw: dict[str, Any] = {"from_release": small.release_dir} if again_from else {}
    resumed = build(cfg, mode="resume", progress=False, **kw)
    if again_from:
        assert resumed.incremental["reused"] == small.samples and spy.put == []
    else:
        assert resumed.incremental is None and len(spy.put) == small.samples
    assert _files(resumed.release_dir) == _files(small.release_dir)


def test_a_copy_is_hashed_again_unless_its_source_was_hashed_as_it_is(
    small_shards_release: Any, demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    import hashlib

    from geodelta.pipelines.release.previous import read_shard

    cfg = demo_config(demo_catalog, tmp_path, **INPROCESS)
    prev = open_previous(small_shards_release.release_dir, cfg)
    key, rel = next(iter(prev.samples.values()))
    want = next(s.sha256 for s in prev.manifest.shards if s.path == rel)
    linked = LinkedSamples(prev, [key])
    assert linked.copy_shard(rel, tmp_path / "a.tar") is None  # never hashed: the caller hashes
    assert read_shard(prev, rel, [key], names=("json",)) is not None  # hashes it, stamps it
    assert linked.copy_shard(rel, tmp_path / "b.tar") == want
    assert hashlib.sha256((tmp_path / "b.tar").read_bytes()).hexdigest() == want
    ino, size, mtime = prev.checked[rel]
    prev.checked[rel] = (ino, size, mtime - 1)  # the file was touched since it was hashed
    assert linked.copy_shard(rel, tmp_path / "c.tar") is None
    linked.close()


def test_a_shard_is_linked_on_one_filesystem_and_copied_across(
    small_shards_release: Any,
    demo_catalog: DemoCatalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno
    import os

    cfg = demo_config(demo_catalog, tmp_path, **INPROCESS)
    prev = open_previous(small_shards_release.release_dir, cfg)
    key, rel = next(iter(prev.samples.values()))
    source = prev.path(rel)
    linked = LinkedSamples(prev, [key])
    linked.copy_shard(rel, tmp_path / "linked.tar")
    assert os.path.samefile(source, tmp_path / "linked.tar")  # no byte written

    def cross_device(src: Any, dst: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    linked.copy_shard(rel, tmp_path / "copied.tar")
    assert not os.path.samefile(source, tmp_path / "copied.tar")
    assert (tmp_path / "copied.tar").read_bytes() == Path(source).read_bytes()
    linked.close()


def test_at_most_mapped_previous_shards_stay_open(
    small_shards_release: Any, demo_catalog: DemoCatalog, tmp_path: Path
) -> None:
    """Each mapping holds a file descriptor: reading the samples of many previous shards keeps
    only ``MAPPED`` of them mapped, and a shard read again after it was unmapped reads the same."""
    cfg = demo_config(demo_catalog, tmp_path, **INPROCESS)
    prev = open_previous(small_shards_release.release_dir, cfg)
    keys = [key for key, _ in prev.samples.values()]
    linked = LinkedSamples(prev, keys)
    linked.MAPPED = 2
    shards = {rel for _, rel in prev.samples.values()}
    assert len(shards) > 2
    first = {k: linked.read_members(k) for k in keys}
    assert len(linked._maps) == 2
    assert {k: linked.read_members(k) for k in reversed(keys)} == first
    linked.close()


def test_member_offsets_read_as_the_arrow_rows_say() -> None:
    """The flat arrays give each row's spans as the column's own rows do: a list, an empty
    one, a null; a column with a null field is read row by row, the same."""
    import pyarrow as pa

    from geodelta.pipelines.release.layout import MemberOffsets

    span = pa.struct([("name", pa.string()), ("offset", pa.int64()), ("size", pa.int64())])
    rows = [
        [{"name": "json", "offset": 512, "size": 30}, {"name": "a.png", "offset": 1536, "size": 9}],
        [],
        None,
        [{"name": "a.png", "offset": 4096, "size": 1}],
    ]
    table = pa.table(
        {"key": ["k0", "k1", "k2", "k3"], "member_offsets": pa.array(rows, pa.list_(span))}
    )
    offsets = MemberOffsets(table)
    assert dict(offsets) == {
        "k0": (("json", 512, 30), ("a.png", 1536, 9)),
        "k1": (),
        "k2": (),
        "k3": (("a.png", 4096, 1),),
    }
    rows[0][1]["size"] = None  # type: ignore[index]  # never written; still read as it is
    odd = MemberOffsets(
        pa.table(
            {"key": ["k0", "k1", "k2", "k3"], "member_offsets": pa.array(rows, pa.list_(span))}
        )
    )
    assert odd["k3"] == (("a.png", 4096, 1),) and odd["k1"] == ()


def test_a_linked_sample_s_text_members_are_read_together_once(
    small_shards_release: Any,
    demo_catalog: DemoCatalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The release stage reads json, captions and QA of a linked sample more than once: one
    read of the shard for the three, whatever the order; other members are read as asked."""
    from geodelta.pipelines.release import linked as linked_module

    cfg = demo_config(demo_catalog, tmp_path / "out", **INPROCESS)
    prev = open_previous(small_shards_release.release_dir, cfg)
    key, _ = next(iter(prev.samples.values()))
    reads: list[frozenset[str] | None] = []
    real = linked_module.members_at_offsets

    def spy(data: Any, keys: Any, offsets: Any, names: Any = None) -> Any:
        reads.append(None if names is None else frozenset(names))
        return real(data, keys, offsets, names)

    monkeypatch.setattr(linked_module, "members_at_offsets", spy)
    linked = LinkedSamples(prev, [key])
    whole = linked.read_members(key)
    for name in ("qa.json", "json", "captions.json", "qa.json", "json"):
        assert linked.read_member(key, name) == whole[name]
    assert linked.read_member(key, "mask.png") == whole["mask.png"]
    assert reads == [None, linked_module.TEXT_MEMBERS, frozenset({"mask.png"})]
    linked.close()


def test_the_release_takes_a_linked_sample_s_metadata_as_the_reuse_stage_read_it(
    small_shards_release: Any,
    demo_catalog: DemoCatalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--from parses a reused sample's json once (reuse); the release stage takes that
    metadata; a key without one is read and parsed from the shard, the same."""
    from geodelta.schemas import SampleMeta

    cfg = demo_config(demo_catalog, tmp_path / "out", **INPROCESS)
    prev = open_previous(small_shards_release.release_dir, cfg)
    (k0, _), (k1, _) = list(prev.samples.values())[:2]
    parsed = SampleMeta.model_validate_json(LinkedSamples(prev, [k0]).read_member(k0, "json"))
    linked = LinkedSamples(prev, [k0, k1], {k0: parsed})
    assert linked.meta(k0) is parsed
    assert linked.meta(k1) == SampleMeta.model_validate_json(linked.read_member(k1, "json"))
    linked.close()
    calls: list[str] = []
    real = SampleMeta.model_validate_json

    def counting(data: Any, *a: Any, **kw: Any) -> SampleMeta:
        calls.append("parse")
        return real(data, *a, **kw)

    monkeypatch.setattr(SampleMeta, "model_validate_json", counting)
    again = build(
        demo_config(demo_catalog, tmp_path / "again", **INPROCESS),
        progress=False,
        from_release=small_shards_release.release_dir,
    )
    assert again.incremental is not None and again.incremental["reused"] > 0
    assert calls == []  # every sample linked: no json parsed again by the release stage
