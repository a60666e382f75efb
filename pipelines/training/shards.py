"""Reading a release's shards for training: which shards, in what order, decoded how.

- :func:`find_shards` / :func:`split_urls`: the shards of one split of a release (a folder of
  tars, or the manifest's list).
- :func:`epoch_loader`: the torch DataLoader of one epoch that every geodelta training loop
  uses (a webdataset pipeline: seeded shard order, split by node and by worker, seeded
  shuffle buffer).
- :func:`change_sample` / :func:`iter_change_samples`: a sample as the change model sees it
  (reflectance of both dates, binary target), decoded by :func:`geodelta.data.decode_sample`,
  the one decoder of released samples.
- :func:`pair_sample` / :func:`iter_pair_samples`: a sample as the pair encoder sees it
  (true colour of both dates, captions).
- :func:`sample_seed`: the per-sample, per-epoch seed of augmentations and caption picks.

Every sample is decoded by :mod:`geodelta.data`; this module only reshapes what it returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from geodelta.errors import ModelError
from geodelta.pipelines.release.layout import MANIFEST, SHARDS_DIR, read_json

if TYPE_CHECKING:
    from geodelta.schemas import ReleaseManifest

__all__ = [
    "LoaderSettings",
    "ShardError",
    "ShardSet",
    "change_sample",
    "epoch_loader",
    "find_shards",
    "iter_change_samples",
    "iter_pair_samples",
    "pair_sample",
    "sample_seed",
    "split_urls",
]


class ShardError(ModelError):
    """Shards that cannot be used for training or evaluation; says what was looked for."""


# --------------------------------------------------------------------------------------------
# Which shards


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """The shards of one split of a release, and what the release says about itself."""

    urls: tuple[str, ...]
    split: str
    manifest: dict[str, Any] | None

    def describe(self) -> dict[str, Any]:
        """Data version for a model card: release name, version, config hash, shard sums."""
        m = self.manifest or {}
        sums = {s["path"]: s["sha256"] for s in m.get("shards", [])}
        samples = {s["path"]: s["samples"] for s in m.get("shards", [])}
        shards = []
        for url in self.urls:
            rel = f"{SHARDS_DIR}/{Path(url).name}"
            shards.append({"path": rel, "sha256": sums.get(rel), "samples": samples.get(rel)})
        return {
            "name": m.get("name"),
            "version": m.get("version"),
            "config_hash": m.get("config_hash"),
            "code_version": m.get("code_version"),
            "split": self.split,
            "samples": sum(s["samples"] or 0 for s in shards) if m else None,
            "shards": shards,
        }


def find_shards(path: str | Path, split: str) -> ShardSet:
    """The ``{split}-*.tar`` shards under a release folder, its ``shards/`` folder, or a folder.

    Args:
        path: a release folder (holds ``manifest.json`` and ``shards/``) or a folder of tars.
        split: ``train``, ``val`` or ``test``.

    Returns:
        The shards (sorted; possibly none) and the release manifest when there is one.

    Raises:
        ShardError: ``path`` is not a folder.
        ReleaseError: a ``manifest.json`` that is not JSON.
    """
    p = Path(path)
    if not p.is_dir():
        raise ShardError(f"{p} is not a folder; pass a release folder or its shards/ folder")
    folder = p / SHARDS_DIR if (p / SHARDS_DIR).is_dir() else p
    manifest = None
    for release in (p, folder.parent):
        if (release / MANIFEST).exists():
            manifest = read_json(release, MANIFEST)
            break
    urls = tuple(str(u) for u in sorted(folder.glob(f"{split}-*.tar")))
    return ShardSet(urls=urls, split=split, manifest=manifest)


def split_urls(root: Path, manifest: ReleaseManifest, split: str) -> list[str]:
    """Paths of the shards of ``split`` that hold samples, in manifest order."""
    return [str(root / s.path) for s in manifest.shards if s.split == split and s.samples > 0]


# --------------------------------------------------------------------------------------------
# Decoded samples (through geodelta.data)


def _change_view(s: dict[str, Any]) -> dict[str, Any]:
    """A sample decoded by geodelta.data (numpy) as the change model sees it."""
    return {
        "key": s["meta"]["__key__"],
        "bands": tuple(s["meta"]["bands"]),
        "before": s["image"][0],
        "after": s["image"][1],
        "target": (s["mask"] > 0).astype(np.uint8),
    }


def change_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw webdataset sample (member -> bytes) as the change model sees it.

    Decoded by :func:`geodelta.data.decode_sample` (``decode="numpy"``, NaN for no data).

    Returns:
        ``{"key", "bands", "before", "after", "target"}``: (C, H, W) float32 reflectance (NaN =
        no data), (H, W) uint8 target (1 = changed, from ``mask.png > 0``).
    """
    from geodelta.data import decode_sample

    return _change_view(decode_sample(raw, decode="numpy"))


def iter_change_samples(urls: Sequence[str]) -> Iterator[dict[str, Any]]:
    """:func:`change_sample` of every sample of some shards, in shard order, in this process.

    Read by :func:`geodelta.data.load` on one node (every shard, no shuffling).
    """
    if not urls:
        return
    from geodelta.data import load

    for s in load(list(urls), split=None, decode="numpy", rank=0, world_size=1):
        yield _change_view(s)


def _true_colour(raw: dict[str, Any], name: str) -> np.ndarray:
    """True-colour PNG member ``name`` as a (3, H, W) float32 array in [0, 1]."""
    from geodelta.data import decode_member

    rgb = np.asarray(decode_member(name, raw[name]), dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def pair_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw sample (member -> bytes, ``__key__``) as the pair encoder sees it.

    Members decoded by :func:`geodelta.data.decode_member`.

    Returns:
        ``{"key", "before", "after", "captions"}``: (3, H, W) float32 true colour in [0, 1] of
        both dates and the sample's captions.
    """
    from geodelta.data import decode_member

    return {
        "key": str(raw["__key__"]),
        "before": _true_colour(raw, "before.png"),
        "after": _true_colour(raw, "after.png"),
        "captions": [str(c) for c in decode_member("captions.json", raw["captions.json"])],
    }


def iter_pair_samples(urls: Sequence[str]) -> Iterator[dict[str, Any]]:
    """:func:`pair_sample` of every sample of some shards, in shard order, in this process.

    Read by :func:`geodelta.data.load` (``decode="raw"``) on one node.
    """
    if not urls:
        return
    from geodelta.data import load

    for s in load(list(urls), split=None, decode="raw", rank=0, world_size=1):
        yield pair_sample({**s, "__key__": s["meta"]["__key__"]})


# --------------------------------------------------------------------------------------------
# The epoch loader


def sample_seed(seed: int, epoch: int, key: str) -> int:
    """The seed of one sample in one epoch: the first 8 bytes of ``sha256("seed:epoch:key")``."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # one core per loader worker


class LoaderSettings(Protocol):
    """The loader settings every training config has (the change model's ``TrainConfig``,
    the reference's ``ReferenceConfig``)."""

    @property
    def seed(self) -> int:
        """Seed of the shard order and of the shuffle buffer."""
        ...

    @property
    def shuffle_buffer(self) -> int:
        """Samples held in the shuffle buffer."""
        ...

    @property
    def batch_size(self) -> int:
        """Samples per batch."""
        ...

    @property
    def workers(self) -> int:
        """DataLoader workers (at most one per shard)."""
        ...


def epoch_loader(
    urls: Sequence[str],
    cfg: LoaderSettings,
    epoch: int,
    to_example: Callable[[dict[str, Any]], Any],
) -> Any:
    """A torch DataLoader over shards for one epoch (shared by every geodelta training loop).

    A webdataset pipeline: the shard list shuffled with ``seed + epoch``, shards split by node
    (rank) and by worker, a seeded shuffle buffer of ``shuffle_buffer`` samples, ``to_example``
    (decoding, augmentation) in the workers. Deterministic for a given seed, epoch and number
    of workers.

    Args:
        urls: shard paths.
        cfg: ``seed`` (of the shard order and of the shuffle buffer), ``shuffle_buffer``
            (samples held), ``batch_size`` and ``workers`` (DataLoader workers, at most one
            per shard).
        epoch: the epoch (0-based); every epoch has its own order.
        to_example: raw sample (member -> bytes) -> one example (run in the workers).

    Returns:
        A ``torch.utils.data.DataLoader``.
    """
    import torch
    import webdataset as wds

    seed, workers = cfg.seed, cfg.workers
    order = list(urls)
    random.Random(seed * 100_003 + epoch).shuffle(order)
    dataset = (
        wds.WebDataset(
            order,
            shardshuffle=False,
            nodesplitter=wds.split_by_node,
            workersplitter=wds.split_by_worker,
            empty_check=False,
        )
        .shuffle(cfg.shuffle_buffer, rng=random.Random(seed * 7919 + epoch))
        .map(to_example)
    )
    n_workers = min(workers, len(order))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        num_workers=n_workers,
        worker_init_fn=_worker_init if n_workers else None,
    )
