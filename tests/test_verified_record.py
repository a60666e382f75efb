"""The report's record of verified samples (``report/verified.json``, issue 14).

The report's verify records the decode digest of every sample it found without a problem; a
``build --from`` passes the previous release's digests as ``trusted`` and verify then skips the
PNG and GeoTIFF decodes of a sample with one of them, and nothing else. The trust is keyed by
content: a damaged member, or metadata that expects another shape, gives another digest and
is decoded (and caught) as in a full verify; a record the manifest does not vouch for, or one
made by other decode checks, is not used at all.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import geodelta.pipelines.release.verify as verify_module
from geodelta.pipelines.release.layout import VERIFIED, iter_tar_samples, read_manifest, shard_files
from geodelta.pipelines.release.previous import open_previous, verified_record
from geodelta.pipelines.release.verify import (
    DECODE_CHECKS,
    CarriedShard,
    decode_digest,
    shard_context,
    verify_release,
)
from geodelta.pipelines.report.render import write_report
from geodelta.schemas import SampleMeta
from tests.factories import factory_release, make_config

CFG = make_config(validation={"great_expectations": False}, shards={"max_samples": 2})


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 factory samples, 2 per shard, with its report (and so its verified.json)."""
    rel = factory_release(tmp_path_factory.mktemp("verified"), CFG, 6)
    write_report(rel)
    return rel


def _copy(release: Path, dest: Path) -> Path:
    shutil.copytree(release, dest)
    return dest


def _samples(release: Path) -> dict[str, dict[str, bytes]]:
    return {k: m for shard in shard_files(release) for k, m in iter_tar_samples(shard)}


def _replace(shard: Path, key: str, member: str, data: bytes) -> None:
    """Rewrite ``shard`` with ``{key}.{member}`` holding ``data`` (other members as they were)."""
    with tarfile.open(shard) as tar:
        items = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(shard, "w") as tar:
        for info, old in items:
            new = data if info.name == f"{key}.{member}" else old
            info.size = len(new)
            tar.addfile(info, io.BytesIO(new))


def test_the_record_holds_every_sample_digest_as_recomputed_from_the_shards(
    release: Path,
) -> None:
    record = json.loads((release / VERIFIED).read_bytes())
    assert record["decode_checks"] == DECODE_CHECKS
    samples = _samples(release)
    mode = read_manifest(release).mode or "pair"
    expected = {
        key: decode_digest(m, SampleMeta.model_validate_json(m["json"]), mode)
        for key, m in samples.items()
    }
    assert record["samples"] == expected and len(expected) == 6
    assert len(set(expected.values())) == 6  # six samples, six contents
    listed = {f.path for f in read_manifest(release).files}
    assert VERIFIED in listed  # its sha256 is in the manifest: a --from trusts nothing else
    assert verify_release(release, strict=True).ok


def test_trusted_digests_spare_the_decodes_of_those_bytes_only(
    release: Path, tmp_path: Path
) -> None:
    trusted = frozenset(json.loads((release / VERIFIED).read_bytes())["samples"].values())
    full = verify_release(release, strict=True, digests=True)
    spared = verify_release(release, strict=True, digests=True, trusted=trusted)
    assert full.ok and spared.ok
    assert (full.carried, spared.carried) == (0, 6)
    assert spared.passed == full.passed

    # one PNG member damaged: its digest is not trusted, so it is decoded and fails as it would
    rel = _copy(release, tmp_path / "damaged")
    shard = shard_files(rel)[0]
    key, members = next(iter_tar_samples(shard))
    _replace(shard, key, "before.png", members["before.png"][:100])  # a truncated PNG
    damaged = verify_release(rel, strict=True, digests=True, trusted=trusted)
    decode = [p for p in damaged.problems if "before.png does not decode as PNG" in p]
    assert decode and key in decode[0], damaged.problems
    assert damaged.carried == 5 and key not in damaged.passed
    # without the digests the same problem is found: trust changed nothing for that sample
    assert decode[0] in verify_release(rel, strict=True).problems


def test_the_digest_follows_what_the_checks_compare(release: Path) -> None:
    """The metadata the decode checks compare against is part of the digest: a sample whose
    json says another shape is not spared the decode that would catch it."""
    members = next(iter(_samples(release).values()))
    meta = SampleMeta.model_validate_json(members["json"])
    digest = decode_digest(members, meta, "pair")
    h, w = meta.shape
    other = meta.model_copy(update={"shape": (h + 1, w)})
    assert decode_digest(members, other, "pair") != digest
    fewer = meta.model_copy(update={"bands": meta.bands[:-1]})
    assert decode_digest(members, fewer, "pair") != digest
    changed = {**members, "after.tif": members["after.tif"] + b"\0"}
    assert decode_digest(changed, meta, "pair") != digest
    # the json member itself is verified apart (key, split, config hash): not in the digest
    assert decode_digest({**members, "json": b"{}"}, meta, "pair") == digest


def test_from_trusts_the_record_only_as_its_manifest_lists_it(
    release: Path, tmp_path: Path
) -> None:
    cfg = make_config(validation={"great_expectations": False}, shards={"max_samples": 2})
    good = verified_record(open_previous(release, cfg)).digests
    assert good == frozenset(json.loads((release / VERIFIED).read_bytes())["samples"].values())

    edited = _copy(release, tmp_path / "edited")
    record = json.loads((edited / VERIFIED).read_bytes())
    record["samples"]["extra"] = "0" * 64  # a digest added after the report wrote it
    (edited / VERIFIED).write_text(json.dumps(record))
    assert verified_record(open_previous(edited, cfg)).digests == frozenset()

    other = _copy(release, tmp_path / "other-checks")
    record = json.loads((other / VERIFIED).read_bytes())
    record["decode_checks"] = DECODE_CHECKS + 1  # recorded by other decode checks
    (other / VERIFIED).write_text(json.dumps(record))
    from geodelta.pipelines.release.manifest import list_files

    list_files(other, [VERIFIED])  # the manifest vouches for it, the checks differ
    assert verified_record(open_previous(other, cfg)).digests == frozenset()


def test_from_reads_reused_members_at_the_recorded_offsets(release: Path, tmp_path: Path) -> None:
    """``--from`` copies a reused sample's members by the samples table's offsets (no walk
    through the tar), each checked against its tar header; offsets that do not match give None
    there, and the shard is then read as a tar; a shard that is not its manifest entry gives
    nothing to reuse."""
    from geodelta.pipelines.release.layout import members_at_offsets
    from geodelta.pipelines.release.previous import read_shard

    prev = open_previous(release, CFG)
    shard = shard_files(release)[0]
    rel = shard.relative_to(release).as_posix()
    in_tar = dict(iter_tar_samples(shard))
    data = shard.read_bytes()
    at = members_at_offsets(data, set(in_tar), prev.offsets)
    assert at is not None and dict(at) == in_tar
    assert [list(m) for _, m in at] == [list(m) for m in in_tar.values()]  # tar order
    key = sorted(in_tar)[0]
    name, offset, size = prev.offsets[key][0]
    wrong_spans = (
        (name, offset + 512, size),
        (name, offset, size - 1),
        ("other", offset, size),
        (name, len(data) - 10, size),
    )
    for wrong in wrong_spans:
        moved = {**prev.offsets, key: (wrong, *prev.offsets[key][1:])}
        assert members_at_offsets(data, set(in_tar), moved) is None, wrong
    missing = {k: v for k, v in prev.offsets.items() if k != key}
    assert members_at_offsets(data, set(in_tar), missing) is None
    # read_shard: by offsets, or as a tar when they do not match; the same samples either way
    assert dict(read_shard(prev, rel, set(in_tar)) or []) == in_tar
    bad = replace(prev, offsets=missing)
    assert dict(read_shard(bad, rel, set(in_tar)) or []) == in_tar
    # a release whose samples table has no offsets (an older layout): its shards read as tars
    import pyarrow.parquet as pq

    older = _copy(release, tmp_path / "older")
    table = pq.read_table(older / "samples.parquet")
    pq.write_table(table.drop_columns(["member_offsets"]), older / "samples.parquet")
    no_offsets = open_previous(older, CFG)
    assert len(no_offsets.offsets) == 0 and len(prev.offsets) == 6
    assert dict(read_shard(no_offsets, rel, set(in_tar)) or []) == in_tar
    # a shard whose bytes are not its manifest entry's: nothing reused from it
    copy = _copy(release, tmp_path / "edited")
    (copy / rel).write_bytes(data[:-512] + b"x" * 512)
    assert read_shard(open_previous(copy, CFG), rel, set(in_tar)) is None


# -- shards verified before: carried by checksum ---------------------------------------------


class _Visits:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def sample(self, shard: str, key: str, members: dict[str, bytes]) -> None:
        self.calls.append(("sample", shard, key))

    def done(self, shard: str, error: Exception | None) -> None:
        self.calls.append(("done", shard))

    def unread(self, shard: str) -> None:
        self.calls.append(("unread", shard))

    def carried(self, shard: str, keys: Sequence[str]) -> None:
        self.calls.append(("carried", shard, *keys))


def _no_tar(*_: Any) -> Any:
    raise AssertionError("a carried shard was read as a tar")


def test_the_record_holds_every_clean_shard_with_its_keys_in_tar_order(release: Path) -> None:
    record = json.loads((release / VERIFIED).read_bytes())
    manifest = read_manifest(release)
    assert len(manifest.shards) > 1
    assert set(record["shards"]) == {s.sha256 for s in manifest.shards}
    for s in manifest.shards:
        keys = [k for k, _ in iter_tar_samples(release / s.path)]
        assert record["shards"][s.sha256]["keys"] == keys
        shaping = json.loads(next(iter_tar_samples(release / s.path))[1]["json"])["shaping_hash"]
        assert record["shards"][s.sha256]["context"] == shard_context(
            s.split, shaping, manifest.mode or "pair", manifest.members
        )


def test_carried_shards_are_not_read_and_verify_decides_the_same(
    release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = verify_release(release, strict=True, digests=True)
    carried = verified_record(open_previous(release, CFG)).shards
    assert set(carried) == set(full.shards) == {s.sha256 for s in read_manifest(release).shards}
    seen = _Visits()
    monkeypatch.setattr(verify_module, "iter_tar_samples", _no_tar)
    again = verify_release(release, strict=True, digests=True, carried=carried, visitor=seen)
    assert again == full and again.ok  # ok, samples, problems, notes
    assert (again.passed, again.shards, again.carried) == (full.passed, full.shards, 6)
    shards = read_manifest(release).shards
    assert seen.calls == [("carried", s.path, *full.shards[s.sha256][1]) for s in shards]


def test_a_shard_is_carried_only_with_its_bytes_and_context(
    release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    carried = verified_record(open_previous(release, CFG)).shards
    # other bytes under the shard's name: not carried, read and caught as without the record
    rel = _copy(release, tmp_path / "damaged")
    shard = shard_files(rel)[0]
    key, members = next(iter_tar_samples(shard))
    _replace(shard, key, "before.png", members["before.png"][:100])
    damaged = verify_release(rel, strict=True, digests=True, carried=carried)
    assert damaged == verify_release(rel, strict=True, digests=True)
    assert any("sha256 mismatch" in p for p in damaged.problems)
    assert any("before.png does not decode as PNG" in p for p in damaged.problems)
    in_shard = len(list(iter_tar_samples(shard)))
    assert damaged.carried == 6 - in_shard  # the other shards' samples
    # the same bytes in another context (a record of other checks, split, config...): read
    other = {sha: CarriedShard("0" * 64, c.samples) for sha, c in carried.items()}
    seen = _Visits()
    read = verify_release(release, strict=True, digests=True, carried=other, visitor=seen)
    assert read == verify_release(release, strict=True) and read.carried == 0
    assert [c[0] for c in seen.calls].count("sample") == 6
    # every input of the context counts
    base = ("train", "a" * 64, "pair", ("json", "before.png"))
    variants = [
        ("val", *base[1:]),
        (base[0], "b" * 64, *base[2:]),
        (*base[:2], "series", base[3]),
        (*base[:3], ("json",)),
    ]
    assert len({shard_context(*v) for v in [base, *variants]}) == 5


def test_the_report_reads_the_same_with_carried_shards(
    release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page and the record are the same when the report's verify carries every shard: the
    page's readers get the members they read sliced at the samples table's offsets (no tar
    read), or, where the offsets do not match, the shard read as a tar."""
    import geodelta.pipelines.report.data as data_module

    carried = verified_record(open_previous(release, CFG)).shards
    page = (release / "report" / "index.html").read_bytes()
    record = (release / VERIFIED).read_bytes()
    at_offsets = _copy(release, tmp_path / "offsets")
    with monkeypatch.context() as m:
        m.setattr(verify_module, "iter_tar_samples", _no_tar)
        m.setattr(data_module, "iter_tar_samples", _no_tar)
        write_report(at_offsets, carried=carried)
    as_tar = _copy(release, tmp_path / "tar")
    with monkeypatch.context() as m:
        m.setattr(verify_module, "iter_tar_samples", _no_tar)
        m.setattr(data_module, "members_at_offsets", lambda *_: None)  # offsets that differ
        write_report(as_tar, carried=carried)
    for rel in (at_offsets, as_tar):
        assert (rel / "report" / "index.html").read_bytes() == page
        assert (rel / VERIFIED).read_bytes() == record
        assert verify_release(rel, strict=True).ok
