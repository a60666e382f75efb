"""The staging area (pipelines/release/staging.py): atomic puts, cell markers, outcomes,
concurrency."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from geodelta.pipelines.release.staging import Staging, StagingError
from geodelta.schemas import QuarantineRecord
from geodelta.schemas.records import QuarantineStage


def _q(
    cell: str, key: str, stage: QuarantineStage = "pair", reason: str = "no_clear_pair"
) -> QuarantineRecord:
    return QuarantineRecord(
        key=key, cell_id=cell, stage=stage, reason=reason, detail="no scene clear enough"
    )


def test_put_mark_outcomes(tmp_path: Path) -> None:
    st = Staging(tmp_path / "stg")
    st.put_sample("c2_20200101_20210101", {"json": b"{}", "mask.png": b"\x89PNG"})
    st.put_sample("c1_20200101_20210101", {"json": b"[1]"})
    st.mark_cell("c2", keys=["c2_20200101_20210101"], quarantine=[])
    st.mark_cell(
        "c1",
        keys=["c1_20200101_20210101"],
        quarantine=[_q("c1", "c1_x", "validate", "too_few_captions"), _q("c1", "c1_a")],
    )
    st.mark_cell("c0", keys=[], quarantine=[_q("c0", "c0")])
    assert st.done_cells() == {"c0", "c1", "c2"}
    keys, quarantine = st.outcomes()
    assert keys == ["c1_20200101_20210101", "c2_20200101_20210101"]
    assert [(q.cell_id, q.key, q.stage) for q in quarantine] == [
        ("c0", "c0", "pair"),
        ("c1", "c1_a", "pair"),
        ("c1", "c1_x", "validate"),
    ]
    assert st.read_members("c2_20200101_20210101") == {"json": b"{}", "mask.png": b"\x89PNG"}
    assert st.read_member("c1_20200101_20210101", "json") == b"[1]"
    # nothing left over in tmp after the puts and markers
    assert list((tmp_path / "stg" / "tmp").iterdir()) == []


def test_sample_without_marker_is_not_counted(tmp_path: Path) -> None:
    st = Staging(tmp_path)
    st.put_sample("a_1_2", {"json": b"{}"})
    st.put_sample("b_1_2", {"json": b"{}"})
    st.mark_cell("a", keys=["a_1_2"], quarantine=[])
    assert st.outcomes()[0] == ["a_1_2"]
    assert st.done_cells() == {"a"}


def test_reput_replaces_and_marker_is_rewritten(tmp_path: Path) -> None:
    st = Staging(tmp_path)
    st.put_sample("k_1_2", {"json": b"old", "extra.png": b"x"})
    st.put_sample("k_1_2", {"json": b"new"})
    assert st.read_members("k_1_2") == {"json": b"new"}
    st.mark_cell("k", keys=["k_1_2"], quarantine=[_q("k", "k_1_2")])
    st.mark_cell("k", keys=["k_1_2"], quarantine=[])
    assert st.outcomes() == (["k_1_2"], [])


def test_bad_names_and_unput_keys_are_rejected(tmp_path: Path) -> None:
    st = Staging(tmp_path)
    with pytest.raises(StagingError):
        st.put_sample("../evil", {"json": b""})
    with pytest.raises(StagingError):
        st.put_sample("k", {"../json": b""})
    with pytest.raises(StagingError, match="not put"):
        st.mark_cell("c", keys=["c_never_put"], quarantine=[])
    with pytest.raises(StagingError, match="not in the staging area"):
        st.read_members("nope")
    assert st.done_cells() == set()


def test_clear(tmp_path: Path) -> None:
    st = Staging(tmp_path)
    st.put_sample("a_1_2", {"json": b"{}"})
    st.mark_cell("a", keys=["a_1_2"], quarantine=[])
    st.clear()
    assert st.done_cells() == set() and st.outcomes() == ([], [])
    with pytest.raises(StagingError):
        st.read_members("a_1_2")


def _worker(root: str, worker: int, cells: int) -> None:
    st = Staging(root)
    for i in range(cells):
        cell = f"w{worker}c{i:02d}"
        key = f"{cell}_20200101_20210101"
        st.put_sample(key, {"json": key.encode(), "qa.json": b"[]"})
        st.mark_cell(cell, keys=[key], quarantine=[_q(cell, cell)] if i % 3 == 0 else [])


def test_markers_from_two_processes_all_land(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), w, 15)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    st = Staging(tmp_path)
    assert len(st.done_cells()) == 30
    keys, quarantine = st.outcomes()
    assert len(keys) == 30 and len(quarantine) == 10
    assert keys == sorted(keys)
    for key in keys:
        assert st.read_member(key, "json") == key.encode()


def _same_key_writer(root: str, worker: int) -> None:
    st = Staging(root)
    for i in range(20):
        st.put_sample("k_1_2", {"json": f"{worker}-{i}".encode(), "qa.json": b"[]"})


def test_concurrent_reputs_of_one_key_leave_one_whole_copy(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_same_key_writer, args=(str(tmp_path), w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    members = Staging(tmp_path).read_members("k_1_2")
    assert set(members) == {"json", "qa.json"}
    assert members["json"] in {b"0-19", b"1-19"}
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_marker_renamed_or_removed_while_listed_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer's temporary file listed by the scan and renamed before its stat (the race
    that stopped a breaker check mid-build) is neither an error nor a marker; nor is a marker
    removed between the listing and its stat."""
    import os

    from geodelta.pipelines.release import staging as staging_mod

    st = Staging(tmp_path)
    st.put_sample("a_1_2", {"json": b"{}"})
    st.mark_cell("a", keys=["a_1_2"], quarantine=[])
    st.put_sample("b_1_2", {"json": b"{}"})
    st.mark_cell("b", keys=["b_1_2"], quarantine=[])
    cells = tmp_path / "cells"
    (tmp := cells / ".c.json.1.ab.tmp").write_bytes(b"{}")
    (gone,) = [p for p in cells.iterdir() if p.name.startswith("b")]
    real_scandir = os.scandir

    class _Listing:
        def __init__(self, path: Path) -> None:
            with real_scandir(path) as it:
                self.entries = list(it)
            tmp.unlink()  # renamed into place by its writer ...
            gone.unlink()  # ... and a marker removed, both after the listing

        def __enter__(self) -> list[os.DirEntry[str]]:
            return self.entries

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(staging_mod.os, "scandir", _Listing)
    assert st.done_cells() == {"a"}
    monkeypatch.undo()
    # the temporary name is never taken for a marker, even while it exists
    tmp.write_bytes(b"{}")
    assert all(not n.startswith(".") for n in st._cell_files())
