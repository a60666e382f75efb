"""Samples a ``--from`` build takes from the previous release as they are: linked, not staged.

A reused sample (:mod:`.incremental`) has exactly the bytes it has in the previous release, so
its members are not copied into the staging area: its cell's marker names it as *linked*
(:meth:`~.staging.Staging.mark_cell`) and the release stage reads it from the previous shard, at
the offsets the previous samples table records (one mapping of each shard, each member's tar
header checked to name it). A shard of the new layout that holds exactly the samples one previous
shard held, in the same order (a place the new version left alone: :mod:`.shards`), is copied
whole (:meth:`LinkedSamples.whole`).

A resumed build does not trust links (the previous release is only known to a ``--from``
build): the cells that linked are decided again (:func:`~.incremental.reuse_previous` links
them again with ``--from``; without it they are processed).
"""

from __future__ import annotations

import mmap
import os
import shutil
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from geodelta.errors import ReleaseError
from geodelta.pipelines.release.layout import members_at_offsets
from geodelta.pipelines.release.shards import tar_entry_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from geodelta.pipelines.release.incremental import Incremental
    from geodelta.pipelines.release.layout import Span
    from geodelta.pipelines.release.previous import Previous
    from geodelta.schemas import SampleMeta, ShardInfo

__all__ = ["TEXT_MEMBERS", "LinkedSamples", "linked_samples"]

#: The members of a linked sample kept once read (a few kB a sample: its metadata, captions
#: and QA; the release stage holds every sample's metadata and tables of them anyway).
TEXT_MEMBERS = frozenset({"json", "captions.json", "qa.json"})


class LinkedSamples:
    """The linked samples of a ``--from`` build: where each is in the previous release, and its
    members read from there.

    Args:
        prev: the previous release (its shards were checked against its manifest when the
            samples were reused: :func:`~.previous.read_shard`).
        keys: the keys of the samples linked.
        metas: their metadata as read before (the reuse stage's: sample key -> ``SampleMeta``
            of its ``json`` member), given back by :meth:`meta` without parsing it again.
    """

    #: Previous shards kept mapped at once (the least recently read is unmapped first).
    MAPPED = 64

    def __init__(
        self, prev: Previous, keys: Collection[str], metas: Mapping[str, SampleMeta] | None = None
    ) -> None:
        self.prev = prev
        self._metas = metas or {}
        wanted = set(keys)
        self._shard = {key: shard for key, shard in prev.samples.values() if key in wanted}
        self._maps: OrderedDict[str, mmap.mmap | bytes] = OrderedDict()  # least recent first
        self._held: dict[str, list[str]] | None = None
        self._infos = {s.path: s for s in prev.manifest.shards}  # the previous manifest's entries
        self._text: dict[str, dict[str, bytes]] = {}  # key -> its text members, once read

    def __contains__(self, key: object) -> bool:
        return key in self._shard

    def __len__(self) -> int:
        return len(self._shard)

    def spans(self, key: str) -> tuple[Span, ...]:
        """The sample's members in its previous shard: (name, data offset, size), tar order."""
        return tuple(self.prev.offsets.get(key, ()))

    def entry_bytes(self, key: str) -> int:
        """The bytes the sample takes in a tar (headers and padding included)."""
        return sum(tar_entry_bytes(f"{key}.{name}", size) for name, _, size in self.spans(key))

    def _data(self, rel: str) -> mmap.mmap | bytes:
        """The previous shard ``rel``, mapped; at most :attr:`MAPPED` stay mapped (each mapping
        holds a file descriptor: a release of thousands of shards would run out of them)."""
        data = self._maps.get(rel)
        if data is not None:
            self._maps.move_to_end(rel)
            return data
        with open(self.prev.path(rel), "rb") as fh:
            empty = fh.seek(0, 2) == 0  # mmap refuses an empty file
            data = b"" if empty else mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps[rel] = data
        while len(self._maps) > self.MAPPED:
            _, old = self._maps.popitem(last=False)
            if isinstance(old, mmap.mmap):
                old.close()  # what was read from it was copied out (bytes)
        return data

    def member_names(self, key: str) -> set[str]:
        """Names of the sample's members."""
        return {name for name, _, _ in self.spans(key)}

    def _read(self, key: str, names: Collection[str] | None) -> dict[str, bytes]:
        """The sample's members ``names`` (all: None), sliced from its previous shard by
        :func:`~.previous.members_at_offsets` (each member's tar header must name it).

        Raises:
            ReleaseError: the sample is not linked, or its previous shard does not hold its
                members where its samples table says (the shard changed).
        """
        rel = self._shard.get(key)
        spans = self.spans(key)
        if rel is None or not spans:
            raise ReleaseError(f"sample {key} is not linked")
        found = members_at_offsets(self._data(rel), [key], {key: spans}, names)
        if found is None:
            raise ReleaseError(
                f"{rel}: the members of {key} are not where its samples table says: the previous "
                "release changed during the build"
            )
        return {name: bytes(data) for name, data in found[0][1].items()}

    def read_member(self, key: str, name: str) -> bytes:
        """One member, read from the previous shard (:meth:`_read`'s errors; also a member the
        sample does not have). The text members (:data:`TEXT_MEMBERS`) are read together the
        first time one is asked for and kept: the release stage reads each of them more than
        once (the metadata, Great Expectations' tables, the rows of the samples table)."""
        if name in TEXT_MEMBERS:
            got = self._text.get(key)
            if got is None:
                got = self._text[key] = self._read(key, TEXT_MEMBERS)
        else:
            got = self._read(key, (name,))
        if name not in got:
            raise ReleaseError(f"sample {key} has no linked member {name!r}")
        return got[name]

    def meta(self, key: str) -> SampleMeta:
        """The sample's metadata: as read before, or its ``json`` member read and parsed
        (:meth:`read_member`'s errors; pydantic's ``ValidationError`` for a bad one)."""
        from geodelta.schemas import SampleMeta

        known = self._metas.get(key)
        if known is not None and key in self._shard:
            return known
        return SampleMeta.model_validate_json(self.read_member(key, "json"))

    def read_members(self, key: str) -> dict[str, bytes]:
        """Every member of the sample, by name (sorted)."""
        return dict(sorted(self._read(key, None).items()))

    def _shard_keys(self) -> dict[str, list[str]]:
        """previous shard -> the keys of its linked samples, in tar order."""
        if self._held is None:
            held: dict[str, list[tuple[int, str]]] = {}
            for key, rel in self._shard.items():
                spans = self.spans(key)
                if spans:
                    held.setdefault(rel, []).append((min(s[1] for s in spans), key))
            self._held = {rel: [k for _, k in sorted(v)] for rel, v in held.items()}
        return self._held

    def whole(self, split: str, keys: list[str]) -> ShardInfo | None:
        """The previous shard's manifest entry when it holds exactly ``keys``, in this order,
        every one of them linked, in ``split``: the new shard is that file, byte for byte (the
        same samples' members, written the same way). None otherwise."""
        rel = self._shard.get(keys[0]) if keys else None
        if rel is None:
            return None
        info = self._infos.get(rel)
        if info is None or info.split != split or info.samples != len(keys):
            return None
        return info if self._shard_keys().get(rel) == keys else None

    def copy_shard(self, rel: str, dest: Path) -> str | None:
        """Put the previous shard ``rel`` at ``dest``: a hard link to it when both are on one
        filesystem (no byte written: a release's files are never written in place, only
        beside and renamed over, so the two names keep the same bytes whatever happens to
        either release), else a copy (``shutil.copyfile``: in the kernel, ~6x faster here than
        writing it from a mapping). Demo scale 4: 194 shards, 1.2 GB, ~0.4 s of copying and as
        many dirty pages for the disk to write back.

        Returns:
            Its sha256 when :func:`~.previous.read_shard` hashed the very file (same inode, size
            and modification time, before and after the copy) to its manifest entry; None when
            the copy must be hashed.
        """
        path = self.prev.path(rel)
        stamp = self.prev.checked.get(rel)

        def now() -> tuple[int, int, int]:
            st = os.stat(path)
            return (st.st_ino, st.st_size, st.st_mtime_ns)

        same = stamp is not None and now() == stamp
        try:
            os.link(path, dest)
        except OSError:  # another filesystem, or one without hard links
            shutil.copyfile(path, dest)
        info = self._infos.get(rel)
        return info.sha256 if same and info is not None and now() == stamp else None

    def close(self) -> None:
        """Unmap the previous shards."""
        for data in self._maps.values():
            if isinstance(data, mmap.mmap):
                data.close()
        self._maps.clear()
        self._text.clear()


@contextmanager
def linked_samples(
    prev: Previous | None, incremental: Incremental | None
) -> Iterator[LinkedSamples | None]:
    """The samples a ``--from`` build linked (``incremental``: what its reuse stage did),
    unmapped on exit; None without ``--from`` or links."""
    keys = None if incremental is None else incremental.linked
    if prev is None or not keys:
        yield None
        return
    linked = LinkedSamples(prev, keys, incremental.metas if incremental is not None else None)
    try:
        yield linked
    finally:
        linked.close()
