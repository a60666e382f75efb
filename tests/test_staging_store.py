"""The staging area, the build lock and the release on an object store.

``memory://`` (fsspec's in-process filesystem: no rename, like an object store) runs by
default; ``s3://`` runs against moto's server mode, a TEST DOUBLE of S3 (tests/s3_server.py),
and is marked ``integration``. The builds are the demo at the tests' scale (``slow``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

import geodelta.pipelines.release.staging as staging_module
from geodelta.pipelines.release.lock import Lease, OutputBusyError, hold_lease, hold_place
from geodelta.pipelines.release.staging import (
    LINKED_CELL,
    STAMP_FILE,
    Staging,
    StagingError,
    unpack_sample,
)
from geodelta.pipelines.release.upload import OutputError, check_reachable
from geodelta.schemas import QuarantineRecord
from tests.factories import flip_staged_member
from tests.s3_server import S3Bucket, free_port

#: A sample's members (names as a worker writes them; bytes arbitrary).
MEMBERS = {"json": b'{"k": 1}', "before.tif": b"II*\x00before", "after.tif": b"II*\x00after"}


def _q(cell: str) -> QuarantineRecord:
    return QuarantineRecord(
        key=cell, cell_id=cell, stage="pair", reason="no_clear_pair", detail="no clear scene"
    )


@pytest.fixture(
    params=["memory", pytest.param("s3", marks=pytest.mark.integration)],
)
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh staging URL: ``memory://`` (removed after) or a new bucket on the S3 double."""
    if request.param == "s3":
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        yield f"{bucket.url}/runs/stg"
        return
    name = f"geodelta-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}/runs/stg"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


def _objects(url: str) -> dict[str, bytes]:
    """Every object under ``url``: relative path -> bytes (a fresh listing)."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    prefix = str(path).rstrip("/") + "/"
    return {p[len(prefix) :]: fs.cat_file(p) for p in fs.find(path) if p.startswith(prefix)}


def _write(url: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    fs.pipe_file(path, data)


def _rm(url: str) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    fs.rm_file(path)


# -- Staging on a URL ------------------------------------------------------------------------


def test_round_trip_on_a_url(store_url: str) -> None:
    st = Staging(store_url)
    assert not st.is_local and st.root == store_url
    st.put_sample("c1_a", MEMBERS)
    st.put_sample("c2_a", {"json": b"[2]"})
    st.mark_cell("c2", keys=["c2_a"], quarantine=[])
    st.mark_cell("c1", keys=["c1_a"], quarantine=[])
    st.mark_cell("c0", keys=[], quarantine=[_q("c0")])
    assert st.done_cells() == {"c0", "c1", "c2"}
    assert [c for c, _, _ in st.cells()] == ["c0", "c1", "c2"]  # cell id order
    keys, quarantine = st.outcomes()
    assert keys == ["c1_a", "c2_a"]
    assert [(q.cell_id, q.reason) for q in quarantine] == [("c0", "no_clear_pair")]
    assert st.member_names("c1_a") == set(MEMBERS)
    assert st.read_members("c1_a") == dict(sorted(MEMBERS.items()))
    assert st.read_member("c2_a", "json") == b"[2]"
    assert st.sample_problem("c1_a") is None and st.corrupt_cells() == {}
    assert st.sample_location("c1_a") == f"{store_url}/samples/c1_a.sample"
    # the layout is the local one: one object per sample (members and checksums), one marker
    # per cell
    objects = _objects(store_url)
    cells = ["cells/c0.json", "cells/c1.json", "cells/c2.json"]
    assert sorted(objects) == [*cells, "samples/c1_a.sample", "samples/c2_a.sample"]
    digests, members = unpack_sample(objects["samples/c1_a.sample"])
    assert members == MEMBERS and sorted(digests) == sorted(MEMBERS)
    assert json.loads(objects["cells/c1.json"])["keys"] == ["c1_a"]
    assert not any(rel.startswith("tmp/") for rel in objects)  # no rename, no temp objects

    st.forget_cells(["c1", "nope"])
    assert st.done_cells() == {"c0", "c2"}
    st.put_file(STAMP_FILE, '{"config_hash": "h"}')
    st.clear()
    assert st.done_cells() == set() and list(_objects(store_url)) == [STAMP_FILE]
    st.remove()
    assert _objects(store_url) == {}


def test_the_marker_is_the_commit_point(store_url: str) -> None:
    """A sample put without its cell's marker (a worker that died before it) is not done, and
    a cell cannot be marked before its samples' checksums are in place."""
    st = Staging(store_url)
    st.put_sample("c1_a", MEMBERS)
    assert st.done_cells() == set() and st.outcomes() == ([], [])
    _rm(f"{store_url}/samples/c1_a.sample")  # died before its sample was written whole
    with pytest.raises(StagingError, match=r"\['c1_a'\] were not put"):
        st.mark_cell("c1", keys=["c1_a"], quarantine=[])
    assert st.done_cells() == set()
    st.put_sample("c1_a", MEMBERS)  # the re-run writes the same bytes again
    st.mark_cell("c1", keys=["c1_a"], quarantine=[])
    assert st.done_cells() == {"c1"} and st.sample_problem("c1_a") is None


def test_a_changed_object_is_found(store_url: str) -> None:
    st = Staging(store_url)
    for cell in ("c1", "c2", "c3"):
        st.put_sample(f"{cell}_a", MEMBERS)
        st.mark_cell(cell, keys=[f"{cell}_a"], quarantine=[])
    c1 = f"{store_url}/samples/c1_a.sample"
    _write(c1, flip_staged_member(_objects(store_url)["samples/c1_a.sample"], "after.tif"))
    c2 = _objects(store_url)["samples/c2_a.sample"]
    _write(f"{store_url}/samples/c2_a.sample", c2[: len(c2) - 3])  # cut short
    _rm(f"{store_url}/samples/c3_a.sample")  # deleted
    problem = st.sample_problem("c1_a")
    assert problem is not None and "'after.tif'" in problem and "checksum" in problem
    with pytest.raises(StagingError, match="does not match the checksum"):
        st.read_members("c1_a")
    with pytest.raises(StagingError, match="does not match the checksum"):
        st.read_member("c1_a", "after.tif")
    assert st.read_member("c1_a", "json") == MEMBERS["json"]  # the others still read
    corrupt = st.corrupt_cells()
    assert sorted(corrupt) == ["c1", "c2", "c3"]
    assert "truncated" in corrupt["c2"] and "not in the staging area" in corrupt["c3"]
    assert st.corrupt_cells(["c1"]) == {"c1": corrupt["c1"]}


def test_iter_members_reads_ahead_in_order_and_raises_at_the_changed_sample(
    store_url: str,
) -> None:
    st = Staging(store_url)
    keys = [f"c{i:02d}_a" for i in range(20)]
    for i, key in enumerate(keys):
        st.put_sample(key, {"json": f"[{i}]".encode()})
    got = [(k, m["json"]) for k, m in st.iter_members(keys, ahead=4)]
    assert got == [(k, f"[{i}]".encode()) for i, k in enumerate(keys)]
    c07 = f"{store_url}/samples/c07_a.sample"
    _write(c07, flip_staged_member(_objects(store_url)["samples/c07_a.sample"], "json"))
    seen: list[str] = []
    with pytest.raises(StagingError, match="sample c07_a"):
        for key, _ in st.iter_members(keys, ahead=4):
            seen.append(key)
    assert seen == keys[:7]


def test_a_reput_drops_members_the_new_copy_lacks(store_url: str) -> None:
    st = Staging(store_url)
    st.put_sample("c1_a", MEMBERS)
    assert st.member_names("c1_a") == set(MEMBERS)
    st.put_sample("c1_a", {"json": b"new"})
    assert st.member_names("c1_a") == {"json"}
    assert st.read_members("c1_a") == {"json": b"new"} and st.sample_problem("c1_a") is None


def test_file_urls_stay_local(tmp_path: Path) -> None:
    """A ``file://`` root is a local folder: today's atomic renames, a Path root."""
    st = Staging(f"file://{tmp_path}/stg")
    assert st.is_local and st.root == tmp_path / "stg"
    st.put_sample("c1_a", MEMBERS)
    assert st.sample_location("c1_a") == str(tmp_path / "stg" / "samples" / "c1_a.sample")


def test_the_breaker_and_the_progress_watcher_work_on_a_url(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geodelta.pipelines import progress
    from geodelta.pipelines.engines.breaker import TRIP_FILE, Breaker, is_tripped

    st = Staging(store_url)
    breaker = Breaker(st, 2)
    for cell in ("c1", "c2"):
        st.mark_cell(cell, keys=[], quarantine=[_q(cell)])
    assert not is_tripped(store_url)
    assert breaker.after(_q("c2"))  # two cells, one reason: tripped
    assert is_tripped(store_url) and TRIP_FILE in _objects(store_url)
    trip = breaker.tripped()
    assert trip is not None and trip.cells == ("c1", "c2") and trip.reason == "no_clear_pair"
    breaker.reset(trip)
    assert not is_tripped(store_url) and st.done_cells() == set()  # they run again

    monkeypatch.setattr(progress, "POLL_REMOTE_S", 0.01)
    st.mark_cell("c3", keys=[], quarantine=[_q("c3")])
    bar = progress.Progress(False, "cells", 5, 0)
    watcher = progress.Watcher(st, bar)
    try:
        for _ in range(500):  # until a poll lands (no timing asserted)
            if bar.completed == 1:
                break
            time.sleep(0.01)
    finally:
        watcher.stop()
    assert bar.completed == 1


# -- the lease -------------------------------------------------------------------------------


def test_a_second_build_is_refused_by_the_lease(store_url: str) -> None:
    with hold_lease(store_url) as lease:
        holders = lease.holders()
        assert list(holders) == ["build.json"] and holders["build.json"]["id"] == lease.id
        with (
            pytest.raises(OutputBusyError, match=r"is being built by pid \d+ on "),
            hold_lease(store_url),
        ):
            pass
        with (
            pytest.raises(OutputBusyError, match="is being built by"),
            hold_lease(store_url, shared=True),
        ):  # a cell task too
            pass
    assert lease.holders() == {}  # released
    with hold_lease(store_url, shared=True), hold_lease(store_url, shared=True) as second:
        assert len(second.holders()) == 2  # cell tasks side by side
        with pytest.raises(OutputBusyError), hold_lease(store_url):  # ... never beside a build
            pass
    with hold_lease(store_url):  # free again
        pass


def test_a_stale_lease_is_taken_over(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    dead = Lease(store_url)
    old = time.time() - 3600  # a build killed an hour ago: its heartbeat stopped
    info = {"id": "dead", "pid": 4242, "host": "gone", "started": old, "heartbeat": old}
    dead.fs.pipe_file(f"{dead.folder}/build.json", json.dumps(info).encode())
    with caplog.at_level(logging.WARNING), hold_lease(store_url) as lease:
        assert lease.holders()["build.json"]["id"] == lease.id
    assert "taking over the stale build lease" in caplog.text and "pid 4242 on gone" in caplog.text


def test_the_heartbeat_refreshes_the_lease(store_url: str) -> None:
    with hold_lease(store_url, heartbeat_s=0.05) as lease:
        first = lease.holders()["build.json"]["heartbeat"]
        for _ in range(200):  # until a beat lands (no timing asserted)
            time.sleep(0.05)
            if lease.holders()["build.json"]["heartbeat"] > first:
                break
        assert lease.holders()["build.json"]["heartbeat"] > first


def test_a_taken_over_lease_is_never_overwritten_by_its_old_holder(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A build that looked dead (its lease taken over) stops beating instead of overwriting
    the new holder's object, and says so."""
    with caplog.at_level(logging.ERROR), hold_lease(store_url, heartbeat_s=0.05) as lease:
        other = {"id": "other", "pid": 7, "host": "elsewhere", "started": 0, "heartbeat": 1e12}
        lease.fs.pipe_file(f"{lease.folder}/build.json", json.dumps(other).encode())
        for _ in range(200):  # until the next beat saw it (no timing asserted)
            if "was taken over by pid 7 on elsewhere" in caplog.text:
                break
            time.sleep(0.05)
        assert lease.holders()["build.json"]["id"] == "other"
    assert "was taken over by pid 7 on elsewhere" in caplog.text
    assert lease.holders()["build.json"]["id"] == "other"  # not removed by the old holder


def test_a_bucket_root_has_no_room_for_a_lease() -> None:
    with pytest.raises(Exception, match="root of a bucket"):
        Lease("memory://bucket-only")


def test_local_places_keep_the_flock(tmp_path: Path) -> None:
    with hold_place(tmp_path / "stg"):
        assert (tmp_path / ".stg.geodelta-lock").is_file()
        with pytest.raises(OutputBusyError), hold_place(f"file://{tmp_path}/stg"):
            pass


# -- reachability ----------------------------------------------------------------------------


@pytest.mark.integration
def test_a_missing_bucket_is_one_line(s3_bucket: S3Bucket) -> None:
    with pytest.raises(OutputError) as err:
        check_reachable("s3://no-such-bucket-here/stg?X-Amz-Signature=secret", "output.staging")
    msg = str(err.value)
    assert "\n" not in msg and "s3://no-such-bucket-here/stg" in msg and "secret" not in msg
    assert "'no-such-bucket-here' does not exist" in msg and "output.staging" in msg
    check_reachable(f"{s3_bucket.url}/stg", "output.staging")  # an existing bucket passes


def test_an_unreachable_endpoint_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("s3fs")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": closed,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(OutputError) as err:
        check_reachable("s3://bucket/release", "output.dir")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cannot reach output.dir s3://bucket/release (")
    assert closed in msg  # botocore names the endpoint it could not connect to


# -- builds ----------------------------------------------------------------------------------


def _demo(cat: Any, out: str | Path, **output: Any) -> Any:
    from tests import factories
    from tests.conftest import SMALL_SHARDS

    return factories.demo_config(
        cat,
        out,
        **SMALL_SHARDS,
        runner={"name": "inprocess"},
        output={"dir": str(out), **output},
    )


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.integration
def test_a_build_staged_on_s3_resumes_and_matches_the_local_build(
    demo_catalog: Any, small_shards_release: Any, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    """Part of the cells staged on S3 (an orchestrator's task, or a run that stopped), then
    ``--resume``: only the missing cells run, and the release is byte-identical, every file
    of it, to the same config built all-local."""
    from geodelta.pipelines.api import BuildError, build, build_cells, plan

    staging = f"{s3_bucket.url}/stg"
    cfg = _demo(demo_catalog, tmp_path / "release", staging=staging)
    cells = [j.cell_id for j in plan(cfg)]
    first = cells[: len(cells) // 2]
    staged = build_cells(cfg, first)
    assert staged.processed == len(first)
    assert Staging(staging).done_cells() == set(first)
    assert not (tmp_path / "release" / ".staging").exists()  # staged on S3 only
    with pytest.raises(BuildError, match="holds the staging area of a build"):
        build(cfg, mode="fresh", progress=False)

    Staging(staging).forget_cells(first[:1])  # as if that cell's task had died before its marker
    result = build(cfg, mode="resume", progress=False)
    assert result.resumed_cells == len(first) - 1 and result.cells == len(cells)
    assert _tree(result.release_dir) == _tree(Path(small_shards_release.release_dir))
    assert s3_bucket.keys("stg") == []  # the staging area is removed at the end
    assert s3_bucket.keys() == []  # the lease too


@pytest.mark.slow
@pytest.mark.integration
def test_a_release_uploaded_to_s3_matches_the_local_build(
    demo_catalog: Any, small_shards_release: Any, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    from geodelta.pipelines.api import build

    url = f"{s3_bucket.url}/releases/demo"
    cfg = _demo(demo_catalog, url, work_dir=str(tmp_path / "work"))
    result = build(cfg, mode="fresh", progress=False)
    assert result.url == url
    local = _tree(Path(small_shards_release.release_dir))
    remote = {k.removeprefix("releases/demo/"): v for k, v in _objects(url).items()}
    assert remote == {k: v for k, v in local.items() if not k.startswith(".staging/")}
    assert [k for k in s3_bucket.keys("") if not k.startswith("releases/demo/")] == []  # no lease


@pytest.mark.integration
def test_a_build_is_refused_while_another_holds_the_lease(
    demo_catalog: Any, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    from geodelta.pipelines.api import build

    staging = f"{s3_bucket.url}/stg"
    cfg = _demo(demo_catalog, tmp_path / "release", staging=staging)
    with hold_lease(staging), pytest.raises(OutputBusyError) as err:
        build(cfg, mode="fresh", progress=False)
    assert f"{staging} is being built by pid" in str(err.value)
    assert s3_bucket.keys() == []  # nothing staged


def test_overwrite_clears_a_url_staging_area(demo_catalog: Any, tmp_path: Path) -> None:
    from geodelta.pipelines import build as builder

    url = f"memory://geodelta-{uuid.uuid4().hex[:8]}/stg"
    cfg = _demo(demo_catalog, tmp_path / "release", staging=url)
    st = Staging(url)
    st.put_sample("c1_a", MEMBERS)
    st.mark_cell("c1", keys=["c1_a"], quarantine=[])
    assert builder._prepare(tmp_path / "release", cfg, "resume") == url
    assert st.done_cells() == {"c1"}  # --resume keeps what is staged
    assert json.loads(st.get_file(STAMP_FILE) or b"{}")["config_hash"] == cfg.config_hash()
    builder._prepare(tmp_path / "release", cfg, "overwrite")
    assert st.done_cells() == set() and st.has_file(STAMP_FILE)  # cleared, stamped again
    st.remove()


def test_resume_refuses_a_url_staging_area_of_another_config(
    demo_catalog: Any, tmp_path: Path
) -> None:
    from geodelta.pipelines.api import BuildError, check_build

    url = f"memory://geodelta-{uuid.uuid4().hex[:8]}/stg"
    cfg = _demo(demo_catalog, tmp_path / "release", staging=url)
    check_build(cfg, "fresh")  # nothing there yet
    Staging(url).put_file(STAMP_FILE, json.dumps({"config_hash": "0123456789abcdef"}))
    with pytest.raises(
        BuildError, match=rf"^{url} was made from another config \(hash 0123456789ab"
    ):
        check_build(cfg, "resume")
    with pytest.raises(BuildError, match=rf"^output.staging {url} holds the staging area"):
        check_build(cfg, "fresh")
    check_build(cfg, "overwrite")
    Staging(url).remove()


def test_an_unreachable_staging_store_stops_the_build_first(
    demo_catalog: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("s3fs")
    from geodelta.pipelines.api import build

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cfg = _demo(demo_catalog, tmp_path / "release", staging="s3://bucket/stg")
    with pytest.raises(OutputError, match=r"^cannot reach output.staging s3://bucket/stg \("):
        build(cfg, mode="fresh", progress=False)
    assert not (tmp_path / "release").exists()  # refused before anything was written


def _no_loads(*_: Any, **__: Any) -> Any:
    raise AssertionError("a group file read again")


@pytest.mark.parametrize("where", ["local", "store"])
def test_many_cells_marked_in_one_file_read_as_their_own_markers(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mark_cells (what a --from build marks: linked samples, carried verdicts) writes one file
    (one PUT), and every reader sees the same cells as with a marker per cell; a cell's own
    marker wins; forgetting cells rewrites the file without them, all of them removes it."""
    bucket = f"geodelta-{uuid.uuid4().hex[:8]}"
    roots = (
        [tmp_path / "each", tmp_path / "group"]
        if where == "local"
        else [f"memory://{bucket}/{x}" for x in ("each", "group")]
    )
    each, group = Staging(roots[0]), Staging(roots[1])
    cells: list[tuple[str, list[str], list[QuarantineRecord]]] = [
        ("c1", ["c1_a"], []),
        ("c0", [], [_q("c0")]),
        ("c2", ["c2_a"], []),
    ]
    for cell_id, keys, records in cells:
        each.mark_cell(cell_id, keys=keys, quarantine=records, linked=True)
    group.mark_cells(cells, linked=True)
    group.mark_cells([])  # nothing to mark: no file
    files = list(group._cell_files())
    assert len(files) == 1 and files[0].endswith(".cells")
    for st in (each, group):
        assert st.done_cells() == {"c0", "c1", "c2"}
        assert st.corrupt_cells() == dict.fromkeys(["c0", "c1", "c2"], LINKED_CELL)
    assert list(each.cells()) == list(group.cells())
    assert each.outcomes() == group.outcomes() == (["c1_a", "c2_a"], [_q("c0")])
    # a worker's own marker of a grouped cell is the one read
    group.put_sample("c2_a", MEMBERS)
    group.mark_cell("c2", keys=["c2_a"], quarantine=[], decoded={"c2_a": "d" * 64})
    assert group.corrupt_cells() == dict.fromkeys(["c0", "c1"], LINKED_CELL)
    assert group.decode_digests() == {"d" * 64}
    group.forget_cells(["c1", "c2"])
    assert group.done_cells() == {"c0"} and len(group._cell_files()) == 1
    group.forget_cells(["c0"])
    assert group.done_cells() == set() and group._cell_files() == {}
    # a file per 10,000 cells (here 2), each read once while it stays as it was
    monkeypatch.setattr(staging_module, "_GROUP_CELLS", 2)
    group.mark_cells(cells, linked=True)
    assert len(group._cell_files()) == 2 and group.done_cells() == {"c0", "c1", "c2"}
    monkeypatch.setattr(json, "loads", _no_loads)
    assert group.done_cells() == {"c0", "c1", "c2"}  # the progress bar's polls: no re-read
    monkeypatch.undo()
    group.forget_cells(["c0", "c1", "c2"])
    # a group file that is no JSON: one error naming it
    group.mark_cells(cells[:1], linked=True)
    (name,) = group._cell_files()
    if where == "local":
        (Path(roots[1]) / "cells" / name).write_bytes(b"{broken")
    else:
        fsspec.core.url_to_fs(roots[1])[0].pipe_file(
            fsspec.core.url_to_fs(roots[1])[1] + f"/cells/{name}", b"{broken"
        )
    with pytest.raises(StagingError, match=rf"cell markers .*{name} cannot be read"):
        group.done_cells()
    if where == "store":
        fsspec.filesystem("memory").rm(f"/{bucket}", recursive=True)
