"""Hashes computed ahead of their use (geodelta/_io.py HashAhead) and the build's frozen heap
(geodelta/_heap.py): the same digests and the same collections as without them."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from geodelta._heap import frozen_heap, refreeze
from geodelta._io import HashAhead, file_stamp, sha256_file


def _files(tmp_path: Path, n: int = 6) -> list[Path]:
    out = []
    for i in range(n):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(os.urandom(1000 + 7919 * i))
        out.append(p)
    return out


def test_a_child_hashes_ahead_and_gives_each_file_s_own_digest(tmp_path: Path) -> None:
    files = _files(tmp_path)
    with HashAhead(files, min_bytes=0) as ahead:
        assert ahead._child is not None  # started: there was enough to hash
        # asked out of order: the lines before are kept
        got = {p: ahead.sha256(p) for p in reversed(files)}
    assert got == {p: sha256_file(p) for p in files}


def test_a_file_written_after_it_was_hashed_is_hashed_again(tmp_path: Path) -> None:
    files = _files(tmp_path, 3)
    with HashAhead(files, min_bytes=0) as ahead:
        assert ahead.sha256(files[0]) == sha256_file(files[0])  # the child is past file 1
        ahead._result(2)  # every line read: the digests of the files as they were
        files[1].write_bytes(b"new bytes")
        os.utime(files[1], ns=(1, 1))  # another stamp whatever the clock's resolution
        assert ahead.sha256(files[1]) == sha256_file(files[1])
        # the caller's own stamp (of the file it holds open) is what is compared
        st = os.stat(files[2])
        stale = (st.st_ino, st.st_size + 1, st.st_mtime_ns)
        assert ahead.sha256(files[2], stale) == sha256_file(files[2])


def test_a_missing_file_fails_as_when_hashed_here(tmp_path: Path) -> None:
    files = _files(tmp_path, 2)
    gone = tmp_path / "gone.bin"
    with HashAhead([*files, gone], min_bytes=0) as ahead:
        with pytest.raises(FileNotFoundError):
            ahead.sha256(gone)
        assert ahead.sha256(files[1]) == sha256_file(files[1])  # asked after: still there


def test_little_to_hash_starts_no_child_and_close_stops_one(tmp_path: Path) -> None:
    files = _files(tmp_path, 2)
    with HashAhead(files) as ahead:  # a few kB: below AHEAD_MIN_BYTES
        assert ahead._child is None
        assert ahead.sha256(files[0]) == sha256_file(files[0])
    ahead = HashAhead(files, min_bytes=0)
    child = ahead._child
    ahead.close()
    assert child is not None and child.poll() is not None  # stopped, nothing left running
    assert ahead.sha256(files[1]) == sha256_file(files[1])  # hashed here after close


def test_the_stamp_is_inode_size_and_mtime(tmp_path: Path) -> None:
    p = _files(tmp_path, 1)[0]
    st = os.stat(p)
    assert file_stamp(st) == (st.st_ino, st.st_size, st.st_mtime_ns)


def test_frozen_heap_freezes_for_the_build_and_leaves_a_caller_s_freeze() -> None:
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        kept = [[i] for i in range(10)]  # tracked by the collector
        refreeze()  # what was made since joins the frozen objects
        assert gc.get_freeze_count() >= frozen + len(kept)
        with frozen_heap():  # a build in a build: its end does not unfreeze the outer one
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0  # unfrozen: collected as before
    refreeze()  # outside: nothing frozen
    assert gc.get_freeze_count() == 0
    gc.freeze()  # the caller's own (a pre-fork server)
    try:
        before = gc.get_freeze_count()
        with frozen_heap():
            refreeze()
        assert gc.get_freeze_count() == before  # left as it was, not unfrozen
    finally:
        gc.unfreeze()


def test_ahead_gives_only_the_child_s_digest_for_the_stamp_asked(tmp_path: Path) -> None:
    """What read_shard uses (it hashes the bytes it holds mapped itself otherwise): the
    digest for the file as it is, None for another stamp, a file never listed, or asked twice."""
    files = _files(tmp_path, 2)
    with HashAhead(files, min_bytes=0) as ahead:
        st = os.stat(files[0])
        assert ahead.ahead(files[0], file_stamp(st)) == sha256_file(files[0])
        assert ahead.ahead(files[0], file_stamp(st)) is None  # given once
        other = (st.st_ino, st.st_size, st.st_mtime_ns + 1)
        assert ahead.ahead(files[1], other) is None
        assert ahead.ahead(tmp_path / "never-listed", other) is None
