"""Releases (pipelines/release/: assemble, shards, card, collection), verify, and the first report."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import re
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image
from rasterio.io import MemoryFile

from geodelta.pipelines.release.assemble import write_release
from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.release.verify import verify_release
from geodelta.pipelines.report.render import write_report
from geodelta.pipelines.stages.encode import build_meta, encode_members
from geodelta.schemas import (
    SAMPLE_MEMBERS,
    BuildConfig,
    QAItem,
    QuarantineRecord,
    ReleaseManifest,
    SampleMeta,
)
from tests.factories import make_config, make_sample

SPLITS = {"train": 6, "val": 3, "test": 3}
DETERMINISTIC_FILES = (
    "samples.parquet",
    "quarantine.parquet",
    "README.md",
    "collection.json",
    "manifest.json",
)


def _fill(staging: Staging, cfg: BuildConfig) -> list[SampleMeta]:
    metas = []
    i = 0
    for split, n in SPLITS.items():
        for _ in range(n):
            sample = make_sample(
                i,
                col=i,
                row=i % 2,
                split=split,
                change=i % 4 != 0,
                nan_pixels=i,
                signed_href=i == 7,
            )
            meta = build_meta(sample, cfg, code_version="0.1.0", shaping_hash=cfg.shaping_hash())
            staging.put_sample(sample.key, encode_members(sample, meta, cfg))
            quarantine = []
            if i % 5 == 0:  # a second pair of the cell that failed validation
                quarantine.append(
                    QuarantineRecord(
                        key=f"{meta.cell_id}_20200101_20220101",
                        cell_id=meta.cell_id,
                        stage="validate",
                        reason="caption_too_short",
                        detail="caption 2 has 4 characters (min=10)",
                    )
                )
            staging.mark_cell(meta.cell_id, keys=[sample.key], quarantine=quarantine)
            metas.append(meta)
            i += 1
    # a cell with no usable pair, and a sample put but never marked (a dead worker)
    staging.mark_cell(
        "31N_0099_0099",
        keys=[],
        quarantine=[
            QuarantineRecord(
                key="31N_0099_0099",
                cell_id="31N_0099_0099",
                stage="pair",
                reason="no_clear_pair",
                detail="no scene pair with clear fraction >= 0.95",
            )
        ],
    )
    orphan = make_sample(50, col=50)
    orphan_meta = build_meta(orphan, cfg, code_version="0.1.0", shaping_hash="x")
    staging.put_sample(orphan.key, encode_members(orphan, orphan_meta, cfg))
    return metas


EXTRA = (
    QuarantineRecord(
        key="31N_0077_0001",
        cell_id="31N_0077_0001",
        stage="plan",
        reason="outside_aoi",
        detail="cell centre outside the AOI polygon",
    ),
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Staging, list[SampleMeta]]:
    root = tmp_path_factory.mktemp("release")
    cfg = make_config(shards={"max_samples": 4})
    staging = Staging(root / "staging")
    metas = _fill(staging, cfg)
    write_release(root / "rel", cfg, staging, code_version="0.1.0", extra_quarantine=EXTRA)
    return root, staging, metas


def _layout(metas: list[SampleMeta], max_samples: int) -> list[tuple[str, list[str]]]:
    """The shards the layout rule gives (pipelines/release/shards.py), stated apart: per split in
    place order, a shard ends after a key ``ends_shard`` picks or at ``max_samples``."""
    from geodelta.pipelines.release.shards import ends_shard, place_order

    out: list[tuple[str, list[str]]] = []
    for split in sorted({m.split for m in metas}):
        keys = sorted((m.key for m in metas if m.split == split), key=place_order)
        held: list[str] = []
        index = 0
        for key in keys:
            if len(held) == max_samples:
                out.append((f"shards/{split}-{index:06d}.tar", held))
                held, index = [], index + 1
            held.append(key)
            if ends_shard(key, max(2, max_samples // 2)):
                out.append((f"shards/{split}-{index:06d}.tar", held))
                held, index = [], index + 1
        if held:
            out.append((f"shards/{split}-{index:06d}.tar", held))
    return out


def _copy_release(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_layout_and_manifest(built: tuple[Path, Staging, list[SampleMeta]]) -> None:
    root, _, metas = built
    rel = root / "rel"
    manifest = ReleaseManifest.model_validate_json((rel / "manifest.json").read_bytes())
    assert manifest.splits == {"test": 3, "train": 6, "val": 3}
    assert manifest.members == SAMPLE_MEMBERS
    assert manifest.quarantined == {
        "pair:no_clear_pair": 1,
        "plan:outside_aoi": 1,
        "validate:caption_too_short": 3,  # samples 0, 5, 10
    }
    # max_samples=4: shards of 1 to 4 samples, cut where the layout rule says
    expected = _layout(metas, 4)
    assert [(s.path, s.samples) for s in manifest.shards] == [(p, len(k)) for p, k in expected]
    assert all(1 <= s.samples <= 4 for s in manifest.shards) and len(manifest.shards) > 3
    for s in manifest.shards:
        data = (rel / s.path).read_bytes()
        assert s.bytes == len(data) and s.sha256 == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in (rel / "shards").iterdir()) == [
        p.removeprefix("shards/") for p, _ in expected
    ]
    listed = [f.path for f in manifest.files]  # in path order, GX's files among them
    assert listed == sorted(listed)
    assert [p for p in listed if not p.startswith("validation/")] == [
        "README.md",
        "collection.json",
        "quarantine.parquet",
        "samples.parquet",
    ]
    assert "validation/summary.json" in listed
    cfg = make_config(shards={"max_samples": 4})
    assert manifest.config_hash == cfg.config_hash() and manifest.config == cfg.recorded()
    text = (rel / "manifest.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert str(root) not in text and "base_dir" not in text
    # the unmarked orphan sample is not in the release
    assert len(metas) == 12


def test_shards_read_back_with_webdataset(built: tuple[Path, Staging, list[SampleMeta]]) -> None:
    root, _, metas = built
    by_key = {m.key: m for m in metas}
    urls = sorted(str(p) for p in (root / "rel" / "shards").glob("*.tar"))
    counts: dict[str, int] = {}
    seen = []
    with warnings.catch_warnings():
        # webdataset 1.0.2 never closes the local files it opens (its tar streams sit in a
        # reference cycle): collect them here, inside this test, with their ResourceWarning
        # ignored, instead of letting a later test's garbage collection fail on it.
        warnings.simplefilter("ignore", ResourceWarning)
        samples = list(wds.WebDataset(urls, shardshuffle=False))
        gc.collect()
    for sample in samples:
        key = sample["__key__"]
        seen.append(key)
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == set(SAMPLE_MEMBERS)
        meta = SampleMeta.model_validate_json(sample["json"])
        assert meta == by_key[key]
        assert Path(sample["__url__"]).name.startswith(meta.split + "-")
        counts[meta.split] = counts.get(meta.split, 0) + 1
        for name in ("before.png", "after.png"):
            with Image.open(io.BytesIO(sample[name])) as img:
                assert (img.mode, img.size) == ("RGB", (32, 32))
        with Image.open(io.BytesIO(sample["mask.png"])) as img:
            mask = np.asarray(img)
        assert int((mask > 0).sum()) == meta.facts.changed_pixels
        for name in ("before.tif", "after.tif"):
            with MemoryFile(sample[name]) as mem, mem.open() as ds:
                assert ds.crs.to_string() == meta.crs and ds.count == 4
                assert (ds.height, ds.width) == meta.shape
        assert len(json.loads(sample["captions.json"])) == 5
        qa = [QAItem.model_validate(q) for q in json.loads(sample["qa.json"])]
        assert qa[0].type == "has_change"
    assert counts == SPLITS
    assert sorted(seen) == sorted(by_key)
    # within a split, samples are in place order (the factory's cells are no grid cells: key order)
    for split in SPLITS:
        keys = [k for k in seen if by_key[k].split == split]
        assert keys == sorted(keys)


def test_samples_and_quarantine_tables(built: tuple[Path, Staging, list[SampleMeta]]) -> None:
    root, _, metas = built
    rows = pq.read_table(root / "rel" / "samples.parquet").to_pylist()
    assert len(rows) == 12
    by_key = {r["key"]: r for r in rows}
    m = metas[1]  # changed sample
    r = by_key[m.key]
    shard = next(p for p, keys in _layout(metas, 4) if m.key in keys)
    assert r["split"] == "train" and r["shard"] == shard
    assert r["cell_id"] == m.cell_id and r["t0"] == m.t0 and r["t1"] == m.t1
    assert (r["min_lon"], r["max_lat"]) == (m.bbox_lonlat[0], m.bbox_lonlat[3])
    assert r["main_transition"] == "cropland->built_up"
    assert r["n_regions"] == 1 and r["n_captions"] == 5 and r["n_qa"] == 4
    assert r["changed_fraction"] == pytest.approx(64 / 1024)
    assert r["after_valid"] == pytest.approx(1 - 1 / 1024)
    assert (r["shift_dy"], r["shift_dx"]) == m.coreg.shift_px and r["coreg_applied"] is True
    r0 = by_key[metas[0].key]  # no change
    assert r0["main_transition"] == "" and r0["n_regions"] == 0 and r0["n_qa"] == 3
    q = pq.read_table(root / "rel" / "quarantine.parquet")
    assert q.column_names == ["key", "cell_id", "stage", "reason", "detail", "geometry"]
    assert q.num_rows == 5
    assert sorted(q.column("stage").to_pylist()) == [
        "pair",
        "plan",
        "validate",
        "validate",
        "validate",
    ]


def test_card_and_collection(built: tuple[Path, Staging, list[SampleMeta]]) -> None:
    root, _, metas = built
    rel = root / "rel"
    card = (rel / "README.md").read_text()
    assert "# geodelta-test 0.0.1" in card
    assert "Synthetic data" in card
    assert "CC-BY-4.0" in card and "Test data generated by geodelta" in card
    shards = {
        split: sum(p.startswith(f"shards/{split}-") for p, _ in _layout(metas, 4))
        for split in SPLITS
    }
    assert f"| train | 6 | {shards['train']} |" in card and f"| val | 3 | {shards['val']} |" in card
    assert "| 38 | cropland | built_up |" in card and "| 255 |" in card
    assert "| validate:caption_too_short | 3 |" in card
    assert "wds.WebDataset(" in card
    assert make_config(shards={"max_samples": 4}).config_hash() in card
    for member in SAMPLE_MEMBERS:
        assert f"`{member}`" in card

    col = json.loads((rel / "collection.json").read_text())
    assert col["type"] == "Collection" and col["id"] == "geodelta-test-0.0.1"
    assert col["license"] == "CC-BY-4.0"
    bbox = col["extent"]["spatial"]["bbox"][0]
    assert bbox[0] == min(m.bbox_lonlat[0] for m in metas)
    assert bbox[2] == max(m.bbox_lonlat[2] for m in metas)
    assert col["extent"]["temporal"]["interval"][0][0] == "2020-06-15T10:30:00Z"
    manifest = ReleaseManifest.model_validate_json((rel / "manifest.json").read_bytes())
    assert sum(a["roles"] == ["data"] for a in col["assets"].values()) == len(manifest.shards)
    for shard in manifest.shards:
        asset = col["assets"][Path(shard.path).stem]
        assert asset["href"] == shard.path and asset["type"] == "application/x-tar"
        assert asset["file:checksum"] == "1220" + shard.sha256
        assert asset["file:size"] == shard.bytes
    assert col["summaries"]["geodelta:splits"] == ["test", "train", "val"]
    assert str(root) not in json.dumps(col)


def test_release_is_byte_deterministic(
    built: tuple[Path, Staging, list[SampleMeta]], tmp_path: Path
) -> None:
    root, staging, _ = built
    cfg = make_config(shards={"max_samples": 4})
    write_release(tmp_path / "again", cfg, staging, code_version="0.1.0", extra_quarantine=EXTRA)
    a, b = root / "rel", tmp_path / "again"
    for name in DETERMINISTIC_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    shards_a = sorted(p.name for p in (a / "shards").iterdir())
    assert shards_a == sorted(p.name for p in (b / "shards").iterdir())
    for name in shards_a:
        assert (a / "shards" / name).read_bytes() == (b / "shards" / name).read_bytes(), name
    with tarfile.open(a / "shards" / shards_a[0]) as tar:
        info = tar.getmembers()[0]
        assert (info.mtime, info.uname, info.gname) == (0, "geodelta", "geodelta")


def test_rewrite_removes_stale_shards(
    built: tuple[Path, Staging, list[SampleMeta]], tmp_path: Path
) -> None:
    root, staging, metas = built
    rel = _copy_release(root / "rel", tmp_path / "rel")
    manifest = write_release(rel, make_config(), staging, code_version="0.1.0")
    expected = [p for p, _ in _layout(metas, 32)]
    assert [s.path for s in manifest.shards] == expected and len(expected) < 9
    stale = {p for p, _ in _layout(metas, 4)} - set(expected)  # the first write's, not this one's
    assert stale and not any((rel / p).exists() for p in stale)
    # the staged samples were made with max_samples=4: the shards section does not shape a
    # sample (its json records the shaping hash, which leaves it out), so they verify as they are
    assert verify_release(rel).problems == ()


def test_max_bytes_splits_shards(
    built: tuple[Path, Staging, list[SampleMeta]], tmp_path: Path
) -> None:
    _, staging, _ = built
    one = sum(len(v) for v in staging.read_members(staging.outcomes()[0][0]).values())
    cfg = make_config(shards={"max_samples": 100, "max_bytes": int(one * 1.5) + 10 * 1024})
    manifest = write_release(tmp_path / "rel", cfg, staging, code_version="0.1.0")
    assert sum(s.samples for s in manifest.shards) == 12
    assert all(s.samples == 1 for s in manifest.shards)
    assert verify_release(tmp_path / "rel").problems == ()  # samples made with max_samples=4


def test_bad_staged_sample_is_quarantined(tmp_path: Path) -> None:
    cfg = make_config()
    staging = Staging(tmp_path / "stg")
    good, bad = make_sample(1, col=1), make_sample(2, col=2)
    for s in (good, bad):
        members = encode_members(s, build_meta(s, cfg, code_version="0", shaping_hash="x"), cfg)
        if s is bad:
            del members["qa.json"]
        staging.put_sample(s.key, members)
        staging.mark_cell(s.pair.job.cell_id, keys=[s.key], quarantine=[])
    manifest = write_release(tmp_path / "rel", cfg, staging, code_version="0")
    assert manifest.splits == {"train": 1}
    assert manifest.quarantined == {"shard:bad_members": 1}
    q = pq.read_table(tmp_path / "rel" / "quarantine.parquet").to_pylist()
    assert q[0]["key"] == bad.key and "qa.json" in q[0]["detail"]


def test_empty_release(tmp_path: Path) -> None:
    manifest = write_release(
        tmp_path / "rel", make_config(), Staging(tmp_path / "stg"), code_version="0"
    )
    assert manifest.shards == () and manifest.splits == {}
    assert pq.read_table(tmp_path / "rel" / "samples.parquet").num_rows == 0
    result = verify_release(tmp_path / "rel")  # written, but refused: nothing is not a pass
    assert not result.ok and result.samples == 0
    assert result.problems == (
        "manifest.json: the release holds 0 samples (top quarantine reasons: none recorded); "
        "a build that yields nothing is an error, not a release: fix the cause and rebuild",
    )
    assert write_report(tmp_path / "rel").is_file()


def test_verify_passes(built: tuple[Path, Staging, list[SampleMeta]]) -> None:
    root, _, _ = built
    result = verify_release(root / "rel")
    assert result.problems == ()
    assert result.ok and result.samples == 12


def test_verify_names_a_flipped_byte(
    built: tuple[Path, Staging, list[SampleMeta]], tmp_path: Path
) -> None:
    root, _, _ = built
    rel = _copy_release(root / "rel", tmp_path / "rel")
    shard = rel / "shards" / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = verify_release(rel)
    assert not result.ok
    assert any(
        p.startswith("shards/train-000001.tar: sha256 mismatch (expected ") for p in result.problems
    )
    assert all("train-000001" in p for p in result.problems)


def _shard_entries(shard: Path) -> tuple[list[tuple[tarfile.TarInfo, bytes]], str]:
    """A shard's (header, bytes) entries, and the key of its first sample (the one to break)."""
    with tarfile.open(shard) as tar:
        entries = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    return entries, entries[0][0].name.split(".")[0]


def test_verify_names_a_sample_missing_a_member(
    built: tuple[Path, Staging, list[SampleMeta]], tmp_path: Path
) -> None:
    root, _, _ = built
    rel = _copy_release(root / "rel", tmp_path / "rel")
    shard = rel / "shards" / "val-000000.tar"
    entries, victim = _shard_entries(shard)
    with tarfile.open(shard, "w") as tar:
        for info, data in entries:
            if info.name != f"{victim}.captions.json":
                tar.addfile(info, io.BytesIO(data))
    result = verify_release(rel)
    assert not result.ok
    assert (
        f"shards/val-000000.tar: {victim}: members differ (missing=['captions.json'], extra=[])"
        in result.problems
    )


def test_verify_names_an_unknown_member(
    built: tuple[Path, Staging, list[SampleMeta]], tmp_path: Path
) -> None:
    """A member the members table does not know is a problem line naming shard, key, member."""
    root, _, _ = built
    rel = _copy_release(root / "rel", tmp_path / "rel")
    shard = rel / "shards" / "val-000000.tar"
    entries, victim = _shard_entries(shard)
    extra = tarfile.TarInfo(f"{victim}.depth.npy")
    extra.size = 3
    with tarfile.open(shard, "w") as tar:
        for i, (info, data) in enumerate(entries):
            tar.addfile(info, io.BytesIO(data))
            if i == 0:  # right after the victim's first member: still one run of its members
                tar.addfile(extra, io.BytesIO(b"abc"))
    problems = verify_release(rel).problems
    unknown = [p for p in problems if "unknown member" in p]
    assert len(unknown) == 1, problems
    assert unknown[0].startswith(f"shards/val-000000.tar: {victim}: unknown member 'depth.npy'")
    assert "geodelta.schemas.members" in unknown[0]
    assert (
        f"shards/val-000000.tar: {victim}: members differ (missing=[], extra=['depth.npy'])"
        in problems
    )
    assert not any("contiguous" in p for p in problems)


def test_card_member_lines_come_from_the_members_table(
    built: tuple[Path, Staging, list[SampleMeta]],
) -> None:
    from geodelta.schemas.members import MEMBERS

    card = (built[0] / "rel" / "README.md").read_text()
    lines = [f"| `{m.name}` | {m.description} |" for m in MEMBERS]
    assert "\n".join(["| member | content |", "|---|---|", *lines]) in card


def test_verify_reports_missing_manifest_and_unlisted_shard(
    built: tuple[Path, Staging, list[SampleMeta]], tmp_path: Path
) -> None:
    root, _, _ = built
    rel = _copy_release(root / "rel", tmp_path / "rel")
    shutil.copy(rel / "shards" / "val-000000.tar", rel / "shards" / "val-000001.tar")
    result = verify_release(rel)
    assert result.problems == ("shards/val-000001.tar: shard on disk is not in the manifest",)
    (rel / "manifest.json").unlink()
    result = verify_release(rel)
    assert not result.ok and "manifest.json" in result.problems[0]


def test_report(built: tuple[Path, Staging, list[SampleMeta]], tmp_path: Path) -> None:
    root, _, _ = built
    rel = _copy_release(root / "rel", tmp_path / "rel")
    path = write_report(rel, max_gallery=3)
    assert path == rel / "report" / "index.html"
    page = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?https?://""", page)
    assert "<script" not in page
    assert "geodelta-test 0.0.1" in page
    assert re.search(r"<th>samples</th><td>12</td>", page)
    assert re.search(r"<th>quarantined</th><td>5</td>", page)
    assert re.search(r"<td>train</td><td class='n'>6</td>", page)
    assert "caption_too_short" in page and "no_clear_pair" in page
    images = re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 9  # 3 samples x (before, after, mask)
    assert page.count("class='sample'") == 3
    assert write_report(rel, max_gallery=3).read_text() == page  # deterministic


def test_no_secret_or_absolute_path_in_release(
    built: tuple[Path, Staging, list[SampleMeta]], tmp_path: Path
) -> None:
    _, staging, _ = built
    cfg = make_config(
        catalog={"url": "https://example.org/stac/catalog.json?se=2030&sig=TOPSECRET"}
    )
    rel = tmp_path / "rel"
    write_release(rel, cfg, staging, code_version="0.1.0")
    write_report(rel)
    manifest = ReleaseManifest.model_validate_json((rel / "manifest.json").read_bytes())
    assert manifest.config["catalog"]["url"] == "https://example.org/stac/catalog.json"
    assert manifest.config_hash == cfg.config_hash()
    for path in rel.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"SECRETSIGNATURE" not in data and b"TOPSECRET" not in data, path
            assert str(tmp_path).encode() not in data, path
