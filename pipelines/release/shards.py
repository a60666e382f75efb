"""Write a release's WebDataset shards: ``shards/{split}-{i:06d}.tar``, byte-deterministic.

**Layout by place.** Samples are grouped by split and written in place order
(:func:`place_order`: the square of :data:`PLACE_CELLS` x :data:`PLACE_CELLS` grid cells holding
the sample's cell, squares column by column, then the key). Where a shard ends is decided by the
samples themselves (:func:`ends_shard`: a hash of the key, one key in ``max(2, max_samples //
2)``), besides the caps (``shards.max_samples``, ``shards.max_bytes``): content-defined
boundaries, as rsync or restic cut files into chunks. So a version that adds or removes samples
in one place (a grown AOI) changes only the shards of that place: every other shard holds the same
samples as before, and with the same sample bytes (:mod:`.incremental`) it is the same file, which
``--from`` copies whole and a mirror does not download again. Shards hold about
``max_samples // 2`` samples on average (a geometric spread, capped at ``max_samples``).

A sample's members are written in name order; every tar header carries the same mtime, owner
and mode (:data:`TAR_MTIME`, :data:`TAR_USER`, :data:`TAR_GROUP`, :data:`TAR_MODE`), so the same
staged samples give the same bytes. Each shard is written to a temporary file and renamed into
place when closed.

The tars are written with the standard library's :mod:`tarfile` exactly as webdataset's
``TarWriter`` (``encoder=False``, ``compress=False``) writes them: a streamed ``"w|"`` archive
in tarfile's default (PAX) format, a sample's members in sorted name order, each named
``{key}.{member}``. The same bytes, without importing webdataset (which imports torch: about
1 s of CPU per build); ``tests/test_perf_equivalence.py`` checks the bytes against ``TarWriter``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from geodelta._io import sha256_file, tmp_name
from geodelta.pipelines.release.layout import SHARDS_DIR
from geodelta.pipelines.release.staging import Staging
from geodelta.pipelines.stages.plan import parse_cell_id
from geodelta.schemas import BuildConfig, SampleMeta, ShardInfo

__all__ = [
    "PLACE_CELLS",
    "TAR_GROUP",
    "TAR_MODE",
    "TAR_MTIME",
    "TAR_USER",
    "Linked",
    "RowFn",
    "clean_shards",
    "ends_shard",
    "place_order",
    "shard_name",
    "tar_entry_bytes",
    "write_shards",
]

#: Fixed tar header fields, so shards are byte-deterministic.
TAR_MTIME = 0
TAR_USER = "geodelta"
TAR_GROUP = "geodelta"
TAR_MODE = 0o444

#: ``(meta, shard path relative to the release, members, member offsets) -> sample-table row``;
#: the offsets are the sample's members as written: ``[{name, offset, size}]`` in tar order,
#: ``offset`` the byte offset of the member's data in the shard.
RowFn = Callable[[SampleMeta, str, dict[str, bytes], list[dict[str, Any]]], dict[str, Any]]


#: Side, in grid cells, of the squares that order samples by place (:func:`place_order`).
PLACE_CELLS = 16


def place_order(key: str) -> tuple[int, str, int, int, str]:
    """Where a sample goes among its split's samples: the square of ``PLACE_CELLS x
    PLACE_CELLS`` cells of its grid holding its cell (zone, hemisphere and cell size, then the
    squares column by column), then its key. A key whose cell is not a geodelta grid cell goes
    after, by key."""
    try:
        c = parse_cell_id(key.rsplit("_", 2)[0])  # key = {cell_id}_{t0}_{t1}
    except ValueError:
        return (1, "", 0, 0, key)
    grid = f"{c.zone:02d}{'N' if c.north else 'S'}-{c.size_m}"
    return (0, grid, c.col // PLACE_CELLS, c.row // PLACE_CELLS, key)


def ends_shard(key: str, every: int) -> bool:
    """Whether a shard ends after the sample ``key`` (the caps aside): one key in ``every``,
    by a hash of the key alone, so adding or removing a sample moves no boundary but its own."""
    if every <= 1:
        return True
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % every == 0


def shard_name(split: str, index: int) -> str:
    """The path of a split's ``index``-th shard, relative to the release folder."""
    return f"{SHARDS_DIR}/{split}-{index:06d}.tar"


def tar_entry_bytes(name: str, size: int) -> int:
    """Bytes one member takes in a tar: a 512-byte header plus the data padded to 512."""
    return 512 + (size + 511) // 512 * 512 + (1024 if len(name) > 100 else 0)


class _SampleTar:
    """Samples (``{member: bytes}``) into a streamed tar, byte for byte as webdataset's
    ``TarWriter(stream, user=TAR_USER, group=TAR_GROUP, mode=TAR_MODE, encoder=False,
    mtime=TAR_MTIME, compress=False)`` writes them."""

    def __init__(self, stream: IO[bytes]) -> None:
        # TarWriter opens "w|" without passing its format: tarfile's default (PAX) applies
        self._tar = tarfile.open(fileobj=stream, mode="w|")  # noqa: SIM115 (see close)

    def write(self, key: str, members: dict[str, bytes]) -> list[dict[str, Any]]:
        """Append one sample: its members in sorted name order, as ``{key}.{name}``.

        Returns:
            Each member's ``{name, offset, size}`` in tar order: ``offset`` is where its data
            starts in the tar (after its header), as :func:`.geoparquet.member_offsets` reads
            it back.
        """
        offsets = []
        for name in sorted(members):
            data = members[name]
            if not isinstance(data, bytes | bytearray | memoryview):
                raise ValueError(f"member {name} of {key} is not bytes ({type(data).__name__})")
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size = len(data)
            info.mtime = TAR_MTIME
            info.mode = TAR_MODE
            info.uname = TAR_USER
            info.gname = TAR_GROUP
            self._tar.addfile(info, io.BytesIO(data))
            # the tar's offset is past the data, padded to whole blocks
            padded = (info.size + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE
            offsets.append({"name": name, "offset": self._tar.offset - padded, "size": info.size})
        return offsets

    def close(self) -> None:
        """Write the end-of-archive blocks (the stream stays open)."""
        self._tar.close()


@dataclass
class _ShardOut:
    """A shard being written: a temp file that becomes ``path`` on close."""

    path: Path
    tmp: Path
    stream: IO[bytes]
    writer: _SampleTar
    split: str
    samples: int = 0


def _open_shard(path: Path, split: str) -> _ShardOut:
    tmp = tmp_name(path)
    stream = tmp.open("wb")
    return _ShardOut(path=path, tmp=tmp, stream=stream, writer=_SampleTar(stream), split=split)


def _close_shard(shard: _ShardOut, release_dir: Path) -> ShardInfo:
    shard.writer.close()
    shard.stream.close()
    os.replace(shard.tmp, shard.path)
    return ShardInfo(
        path=shard.path.relative_to(release_dir).as_posix(),
        split=shard.split,
        samples=shard.samples,
        bytes=shard.path.stat().st_size,
        sha256=sha256_file(shard.path),
    )


def clean_shards(release_dir: Path) -> None:
    """Remove the shards (and temp files) an earlier run left under ``shards/``."""
    shards_dir = release_dir / SHARDS_DIR
    shards_dir.mkdir(parents=True, exist_ok=True)
    for path in shards_dir.iterdir():
        if path.is_file() and (path.suffix == ".tar" or path.name.endswith(".tmp")):
            path.unlink()


class Linked(Protocol):
    """Samples taken from a previous release as they are (:class:`~.linked.LinkedSamples`)."""

    def __contains__(self, key: object) -> bool: ...

    def entry_bytes(self, key: str) -> int: ...

    def spans(self, key: str) -> tuple[tuple[str, int, int], ...]: ...

    def read_member(self, key: str, name: str) -> bytes: ...

    def read_members(self, key: str) -> dict[str, bytes]: ...

    def whole(self, split: str, keys: list[str]) -> ShardInfo | None: ...

    def copy_shard(self, rel: str, dest: Path) -> str | None: ...


class _LazyMembers(Mapping[str, bytes]):
    """A linked sample's members, each read when asked (a copied shard's rows need two)."""

    def __init__(self, linked: Linked, key: str) -> None:
        self._linked, self._key = linked, key
        self._names = [name for name, _, _ in linked.spans(key)]

    def __getitem__(self, name: str) -> bytes:
        if name not in self._names:
            raise KeyError(name)
        return self._linked.read_member(self._key, name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names))

    def __len__(self) -> int:
        return len(self._names)


class _SplitWriter:
    """One split's shards, one at a time. While a shard holds linked samples only, nothing is
    read: when it closes, it is the previous release's shard with those samples (copied whole)
    or they are read and written; a staged sample joining it starts the tar."""

    def __init__(
        self,
        release_dir: Path,
        split: str,
        metas: dict[str, SampleMeta],
        row: RowFn,
        linked: Linked | None,
    ) -> None:
        self.release_dir, self.split, self.metas, self.row = release_dir, split, metas, row
        self.linked = linked
        self.infos: list[ShardInfo] = []
        self.rows: list[dict[str, Any]] = []
        self.index = 0
        self.out: _ShardOut | None = None
        self.pending: list[str] = []  # linked keys of the shard, not read yet
        self.samples = 0
        self.nbytes = 0

    def full(self, size: int, max_samples: int, max_bytes: int) -> bool:
        """Whether a sample of ``size`` bytes would not fit the open shard (caps)."""
        return self.samples > 0 and (self.samples >= max_samples or self.nbytes + size > max_bytes)

    def _write(self, key: str, members: dict[str, bytes]) -> None:
        assert self.out is not None
        offsets = self.out.writer.write(key, members)
        self.out.samples += 1
        self.rows.append(self.row(self.metas[key], self._rel(), members, offsets))

    def _rel(self) -> str:
        return shard_name(self.split, self.index)

    def _open(self) -> None:
        self.out = _open_shard(self.release_dir / self._rel(), self.split)
        for key in self.pending:  # the linked samples before the first staged one
            assert self.linked is not None
            self._write(key, self.linked.read_members(key))
        self.pending = []

    def add(self, key: str, size: int, members: dict[str, bytes] | None) -> None:
        """Append a sample: staged (its ``members``) or linked (None: read when needed)."""
        self.samples += 1
        self.nbytes += size
        if members is None and self.out is None:
            self.pending.append(key)
            return
        if self.out is None:
            self._open()
        if members is None:
            assert self.linked is not None
            members = self.linked.read_members(key)
        self._write(key, members)

    def close(self) -> None:
        """Close the open shard, if any."""
        if self.pending:
            assert self.linked is not None
            whole = self.linked.whole(self.split, self.pending)
            if whole is None:
                self._open()
            else:
                self._copy(whole)
        if self.out is not None:
            self.infos.append(_close_shard(self.out, self.release_dir))
        self.out = None
        if self.samples:
            self.index += 1
        self.samples = self.nbytes = 0

    def _copy(self, previous: ShardInfo) -> None:
        """The shard is the previous release's ``previous``, byte for byte: copy it."""
        assert self.linked is not None
        rel = self._rel()
        path = self.release_dir / rel
        tmp = tmp_name(path)
        sha256 = self.linked.copy_shard(previous.path, tmp)  # known when the source was hashed
        os.replace(tmp, path)
        size = path.stat().st_size
        if size != previous.bytes:
            raise OSError(f"{rel}: copied {size} bytes of {previous.path}, not {previous.bytes}")
        self.infos.append(
            ShardInfo(
                path=rel,
                split=self.split,
                samples=len(self.pending),
                bytes=size,
                sha256=sha256 or sha256_file(path),
            )
        )
        for key in self.pending:
            spans = self.linked.spans(key)
            offsets = [{"name": n, "offset": o, "size": z} for n, o, z in spans]
            members: Any = _LazyMembers(self.linked, key)
            self.rows.append(self.row(self.metas[key], rel, members, offsets))
        self.pending = []


def write_shards(
    release_dir: Path,
    cfg: BuildConfig,
    staging: Staging,
    metas: dict[str, SampleMeta],
    row: RowFn,
    linked: Linked | None = None,
) -> tuple[list[ShardInfo], list[dict[str, Any]]]:
    """Write every split's shards, laid out by place (see the module docstring).

    A shard takes samples in place order until one ends it (:func:`ends_shard`), it holds
    ``shards.max_samples`` or the next sample would push it past ``shards.max_bytes`` (a single
    larger sample still gets a shard of its own).

    Args:
        release_dir: the release folder (``shards/`` is under it and exists).
        cfg: the build config (``shards``).
        staging: the staging area holding the samples' members.
        metas: key -> metadata of every sample to write (its ``split`` picks the shards).
        row: makes the sample-table row of each sample written (with its member offsets).
        linked: the samples a ``--from`` build takes from the previous release as they are
            (not in ``staging``); a shard of linked samples only that the previous release
            holds, the same samples in the same order, is copied from it.

    Returns:
        The shard infos (split order, then index) and the sample-table rows (shard order).
    """
    by_split: dict[str, list[str]] = defaultdict(list)
    for key, meta in metas.items():
        by_split[meta.split].append(key)
    infos: list[ShardInfo] = []
    rows: list[dict[str, Any]] = []
    max_samples, max_bytes = cfg.shards.max_samples, cfg.shards.max_bytes
    every = max(2, max_samples // 2)
    for split in sorted(by_split):
        ordered = sorted(by_split[split], key=place_order)
        mine = [linked is not None and k in linked for k in ordered]  # linked, not staged
        staged = staging.iter_members([k for k, x in zip(ordered, mine, strict=True) if not x])
        out = _SplitWriter(release_dir, split, metas, row, linked)
        for key, is_linked in zip(ordered, mine, strict=True):
            members: dict[str, bytes] | None = None
            if is_linked:
                assert linked is not None
                size = linked.entry_bytes(key)
            else:
                got, members = next(staged)
                assert got == key
                size = sum(tar_entry_bytes(f"{key}.{n}", len(v)) for n, v in members.items())
            if out.full(size, max_samples, max_bytes):
                out.close()
            out.add(key, size, members)
            if ends_shard(key, every):
                out.close()
        out.close()
        infos += out.infos
        rows += out.rows
    return infos, rows
