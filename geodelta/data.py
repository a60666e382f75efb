"""Load a geodelta release for training: ``geodelta.data.load(...)`` -> a torch IterableDataset.

Every sample comes out shaped like a TorchGeo change-detection sample::

    {
        "image": float32 tensor [2, C, H, W]   # before/after, reflectance
        "mask": int64 tensor [H, W]            # 0 no change, k = transition class
        "regions": int64 tensor [H, W]         # 0 no change, k = region id (meta["regions"])
        "captions": list[str],
        "qa": list[dict],                      # {type, question, answer, evidence}
        "meta": dict,                          # the sample's ``json`` member + "__key__"/"__url__"
    }

Series releases (issue 15): ``load(..., mode="series")`` yields ``image`` [T, C, H, W],
``dates`` (T aware UTC datetimes), ``mask`` [T-1, H, W] (one transition mask per step) and
``first_change`` [H, W] (:mod:`geodelta._series`); the default ``mode="pair"`` reads a series
release as pairs (before = date 0, after = date T-1), exactly as before.

Reflectance is ``DN * dn_scale + dn_offset`` with ``dn_scale``/``dn_offset`` read from each
sample's ``json`` member. Pixels equal to the GeoTIFF's nodata value (0 in every geodelta
release; 0 too when a file has no nodata tag) become ``nodata`` (NaN by default) in ``image``;
pass ``nodata=0.0`` to get zeros instead.

Decoding: this module is the one decoder of released samples. Each member is decoded by its
codec in the members table (:mod:`geodelta.schemas.members`): :func:`decode_member` decodes one
member (GeoTIFF -> float32 reflectance, RGB PNG -> uint8 (H, W, 3), index PNG -> uint8 (H, W),
JSON -> Python values), :func:`decode_members` every member of a sample, :func:`decode_sample`
the TorchGeo-like sample above. A member name the table does not know is reported, never
dropped silently: :func:`load` warns (:class:`UnknownMemberWarning`, naming the shard, the
sample key and the member; ``decode="raw"`` keeps its bytes), :func:`decode_member` raises
:class:`LoaderError`.

The GeoTIFFs geodelta writes (little-endian strips, one band per plane, deflate with
the horizontal predictor) are decoded by :func:`tif_dn_fast` (tifffile parses the header, zlib
inflates only the requested bands' strips), about 1.5x faster than opening each member with
GDAL; any other layout goes through rasterio, with the same result. The tar shards are read
by webdataset's ``tar_file_iterator``, which passes over the members a decoded sample does not
use (RGB and land-cover PNGs).

Batching and plotting: :func:`collate` (:mod:`geodelta.collate`) batches samples of any size
(pads, see there) and :func:`plot` (:mod:`geodelta.plot`) draws one; the dataset :func:`load`
returns has ``len()`` (from the manifest) and ``plot``. Other tools:
:func:`webdataset_handler`, :func:`hf_features` and :func:`hf_transform`
(:mod:`geodelta.decoders`) decode the members in webdataset and Hugging Face ``datasets``.
:func:`to_xarray` (:mod:`geodelta.xarray_view`) gives a decoded sample as an
``xarray.DataArray`` (time, band, y, x) with its dates, band names, pixel-centre coordinates and
CRS (rioxarray's ``spatial_ref``), :func:`to_dataset` the same with the masks as variables;
xarray is imported only then. ``meta["__bands__"]`` names the bands of ``image``, in order.

Shards are split first by rank (``torch.distributed`` if initialised, else the ``RANK`` /
``WORLD_SIZE`` environment variables, else a single node) and then by DataLoader worker, so every
sample is seen exactly once per epoch when the shard count is a multiple of ``world_size``.

This module imports torch and webdataset lazily (inside the functions), so ``import geodelta``
and ``import geodelta.data`` stay light. It is on the ground floor and reads one module above
it, the members table ``geodelta.schemas.members`` (pure data, importing nothing from
geodelta): the one allowed upward edge of the ground floor.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import tarfile
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

from geodelta._codec import LoaderError, band_plan, reflectance_into, tif_dn, tif_dn_fast
from geodelta._series import (
    PAIR_RELEASE,
    SERIES_DECODED_MEMBERS,
    decode_geotiff_index,
    decode_series_geotiff,
    decode_series_sample,
    manifest_mode,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from geodelta._dataset import ReleaseDataset
    from geodelta.schemas.members import Codec, Member

__all__ = [
    "DECODED_MEMBERS",
    "Decode",
    "LoaderError",
    "Mode",
    "UnknownMemberWarning",
    "decode_member",
    "decode_members",
    "decode_sample",
    "load",
    "rank_info",
    "resolve_shards",
    "tif_dn",
    "tif_dn_fast",
]

#: Names this module also offers, from its light neighbours, imported on first use (they import
#: geodelta.data: a module-level import would be a cycle, hence not in ``__all__``):
#: ``geodelta.data.collate``, ``plot``, ``hf_features``, ``hf_transform``, ``webdataset_handler``,
#: ``to_xarray``, ``to_dataset`` (:mod:`geodelta.xarray_view`: a sample as an ``xarray.DataArray``
#: with its CRS, or a ``Dataset`` with its masks too).
_LAZY = {
    "collate": "geodelta.collate",
    "plot": "geodelta.plot",
    "hf_features": "geodelta.decoders",
    "hf_transform": "geodelta.decoders",
    "webdataset_handler": "geodelta.decoders",
    "to_xarray": "geodelta.xarray_view",  # xarray + pyproj imported on call, not here
    "to_dataset": "geodelta.xarray_view",
}


def __getattr__(name: str) -> Any:
    """``collate``, ``plot``, ``hf_features``, ``hf_transform``, ``webdataset_handler``,
    ``to_xarray``, ``to_dataset``."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Decode = Literal["torch", "numpy", "raw"]
#: What :func:`load` yields per sample: a pair (before/after) or a series (every date).
Mode = Literal["pair", "series"]
MANIFEST = "manifest.json"
_HTTP_TIMEOUT_S = 60.0
#: Members decode_sample reads; the tar readers skip the others (RGB and land-cover PNGs).
DECODED_MEMBERS = (
    "json",
    "before.tif",
    "after.tif",
    "mask.png",
    "regions.png",
    "captions.json",
    "qa.json",
)


def _member(name: str) -> Member | None:
    """The members-table row of a member name, None for a name the table does not know.

    The one upward edge of the ground floor (``geodelta.schemas.members`` is pure data),
    imported here, not at module import: ``geodelta.schemas`` imports pydantic, and
    ``import geodelta.data`` stays light.
    """
    from geodelta.schemas.members import member

    return member(name)


def _hf_feature_list(mode: str = "pair") -> list[dict[str, str]]:
    """The Hugging Face features of a sample (:func:`geodelta.decoders.hf_features` reads them
    through here: the members table is reached from the ground floor by this module only)."""
    from geodelta.schemas.members import hf_feature_list

    return hf_feature_list(mode)


class UnknownMemberWarning(UserWarning):
    """A shard holds a member the members table (:mod:`geodelta.schemas.members`) does not know.

    :func:`load` warns once per shard and member name; the message names the shard, the first
    sample key and the member. Decoded samples leave the member out; ``decode="raw"`` keeps its
    bytes. (A newer release read by an older geodelta: upgrade geodelta to decode it.)
    """


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _fetch_manifest(source: str) -> dict[str, Any]:
    try:
        if _is_url(source):
            with urllib.request.urlopen(source, timeout=_HTTP_TIMEOUT_S) as resp:
                data: dict[str, Any] = json.loads(resp.read())
        else:
            data = json.loads(Path(source).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LoaderError(
            f"cannot read the release manifest: {exc}; pass a release folder/URL holding "
            f"{MANIFEST}, or explicit .tar shard paths/URLs",
            source=source,
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("shards"), list):
        raise LoaderError(f"{MANIFEST} has no 'shards' list", source=source)
    return data


def resolve_shards(url_or_dir: str | Path | Sequence[str | Path], split: str | None) -> list[str]:
    """Turn a release folder/URL or explicit shards into the list of shard paths/URLs to read.

    Args:
        url_or_dir: a local release folder, an http(s) release URL (its ``manifest.json`` is
            fetched), a path/URL of ``manifest.json`` itself, one ``.tar`` shard, or a list of
            ``.tar`` shard paths/URLs.
        split: keep only this split's shards (from the manifest); ``None`` keeps all. Explicit
            shards are taken as given (the split is then not checked).

    Returns:
        Shard paths or URLs, in manifest order.

    Raises:
        LoaderError: the manifest cannot be read, or the split is not in it.
    """
    return _resolve(url_or_dir, split)[0]


def _resolve(
    url_or_dir: str | Path | Sequence[str | Path], split: str | None
) -> tuple[list[str], list[int] | None, dict[str, Any] | None]:
    """:func:`resolve_shards`, each shard's sample count and the manifest (None without one)."""
    if not isinstance(url_or_dir, (str, Path)):
        shards = [str(s) for s in url_or_dir]
        if not shards:
            raise LoaderError("no shards given")
        return shards, None, None
    src = str(url_or_dir)
    if src.endswith(".tar"):
        return [src], None, None
    if _is_url(src):
        manifest_url = src if src.endswith(MANIFEST) else src.rstrip("/") + "/" + MANIFEST
        base = manifest_url[: -len(MANIFEST)]
    else:
        path = Path(src)
        manifest_url = str(path if path.name == MANIFEST else path / MANIFEST)
        base = str(Path(manifest_url).parent)
    manifest = _fetch_manifest(manifest_url)
    entries = manifest["shards"]
    if split is not None:
        splits = sorted({str(e.get("split")) for e in entries})
        entries = [e for e in entries if e.get("split") == split]
        if not entries:
            raise LoaderError(
                f"split {split!r} has no shards in this release (splits: {splits})",
                source=manifest_url,
            )
    counts = [int(e.get("samples", 0)) for e in entries]
    if _is_url(src):
        return [urljoin(base, str(e["path"])) for e in entries], counts, manifest
    return [str(Path(base) / str(e["path"])) for e in entries], counts, manifest


def rank_info() -> tuple[int, int]:
    """This process's (rank, world_size) for shard splitting.

    ``torch.distributed`` when it is initialised, else the ``RANK`` and ``WORLD_SIZE``
    environment variables, else ``(0, 1)``.

    Returns:
        ``(rank, world_size)``.
    """
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank()), int(dist.get_world_size())
    except ImportError:  # pragma: no cover - torch is a requirement of load()
        pass
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


def _split_by_rank(src: Iterable[Any], rank: int, world_size: int) -> Iterator[Any]:
    for i, item in enumerate(src):
        if i % world_size == rank:
            yield item


def _split_name(fname: str) -> tuple[str, str]:
    """``(key, member)`` of a tar member name, as webdataset splits it (at the first dot)."""
    key, _, name = fname.rsplit("/", 1)[-1].partition(".")
    return key, name.lower()


def _is_decoded_member(fname: str) -> bool:
    """True for the tar members :func:`decode_sample` reads (webdataset's key/suffix split)."""
    return _split_name(fname)[1] in DECODED_MEMBERS


def _is_series_member(fname: str) -> bool:
    """True for the tar members a ``mode="series"`` :func:`decode_sample` reads."""
    return _split_name(fname)[1] in SERIES_DECODED_MEMBERS


def _reporting_unknown(url: str, select: Callable[[str], bool] | None) -> Callable[[str], bool]:
    """``select`` (None = every member) that also warns of members the table does not know."""
    reported: set[str] = set()

    def pick(fname: str) -> bool:
        key, name = _split_name(fname)
        if _member(name) is None and name not in reported:
            reported.add(name)
            warnings.warn(
                UnknownMemberWarning(
                    f"{url}: sample {key}: unknown member {name!r} (not in the members table "
                    "geodelta.schemas.members; a newer release? upgrade geodelta); decoded "
                    "samples leave it out, decode='raw' keeps its bytes"
                ),
                stacklevel=2,
            )
        return select is None or select(fname)

    return pick


def _open_shards(src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """webdataset stage: open each shard (local file or http(s) URL) as a byte stream."""
    for sample in src:
        url = str(sample["url"])
        if _is_url(url):
            stream: Any = urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S)
        else:
            stream = open(url, "rb")  # noqa: SIM115 - closed below, after the tar is consumed
        try:
            yield {**sample, "stream": stream}
        finally:
            stream.close()


def _expand_tars(
    src: Iterable[dict[str, Any]], select: Callable[[str], bool] | None = None
) -> Iterator[dict[str, Any]]:
    """webdataset stage: opened shards -> tar members, then ``{}`` at the end of each shard.

    Members ``select`` rejects are passed over by webdataset's ``tar_file_iterator`` without
    being handed on; a member the members table does not know is reported
    (:class:`UnknownMemberWarning`, once per shard and name); a shard that is not a readable tar
    (truncated download, not a tar) raises :class:`LoaderError` naming it.
    """
    from webdataset import tariterators

    for source in src:
        url = str(source["url"])
        pick = _reporting_unknown(url, select)
        try:
            for entry in tariterators.tar_file_iterator(source["stream"], select_files=pick):
                entry["__url__"] = url
                yield entry
        except (tarfile.TarError, EOFError) as exc:
            raise LoaderError(
                f"shard is not a readable tar (truncated?): {exc}", source=url
            ) from exc
        yield {}  # end of shard: group_by_keys never joins samples across shards


def _decode_geotiff(
    data: bytes,
    *,
    meta: Mapping[str, Any] | None,
    bands: Sequence[str] | None,
    nodata: float,
    key: str,
) -> np.ndarray:
    """GeoTIFF -> float32 reflectance (band, y, x): ``DN * dn_scale + dn_offset``, nodata mapped."""
    import numpy as np

    if meta is None:
        raise LoaderError(
            "a GeoTIFF member decodes with its sample's json member (bands, dn_scale, "
            "dn_offset); pass meta=",
            source=key,
        )
    idx, scale, offset = band_plan(meta, bands, key)
    dn, dn_nodata = tif_dn(data, idx)
    out = np.empty(dn.shape, dtype=np.float32)
    reflectance_into(out, dn, dn_nodata, scale, offset, nodata)
    return out


def _decode_png_rgb(data: bytes, **_: Any) -> np.ndarray:
    """RGB PNG -> uint8 (y, x, 3)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def _decode_png_index(data: bytes, **_: Any) -> np.ndarray:
    """Single-band PNG of codes or class indexes -> its values (y, x), uint8 as geodelta writes."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


def _decode_json(data: bytes, **_: Any) -> Any:
    """JSON -> Python values."""
    return json.loads(data)


#: One decoder per codec of the members table.
_DECODERS: dict[Codec, Callable[..., Any]] = {
    "geotiff": _decode_geotiff,
    "png-rgb": _decode_png_rgb,
    "png-index": _decode_png_index,
    "png-instance": _decode_png_index,  # 16-bit PNG -> uint16 (y, x)
    "json": _decode_json,
    "geotiff-index": decode_geotiff_index,  # uint8 GeoTIFF -> (band, y, x) as stored
}


def decode_member(
    name: str,
    data: bytes,
    *,
    meta: Mapping[str, Any] | None = None,
    bands: Sequence[str] | None = None,
    nodata: float = math.nan,
    key: str | None = None,
) -> Any:
    """Decode one member of a released sample by its codec (:mod:`geodelta.schemas.members`).

    Args:
        name: the member name (``before.tif``, ``mask.png``, ``json`` ...).
        data: its bytes.
        meta: the sample's decoded ``json`` member; needed by the GeoTIFFs (bands, scale,
            offset), ignored by the others.
        bands: GeoTIFF bands to keep, in this order (``None`` = all).
        nodata: value put where a GeoTIFF's DN equals its nodata value.
        key: the sample key, for messages.

    Returns:
        The member's decoded form (the table's ``decoded``): float32 reflectance
        (band, y, x) for a GeoTIFF ((time, band, y, x) for ``series.tif``, ``bands`` kept per
        date), uint8 (y, x, 3) for an RGB PNG, uint8 (y, x) for an index PNG, uint8
        (band, y, x) for an index GeoTIFF, Python values for JSON.

    Raises:
        LoaderError: a member name the table does not know (named), a GeoTIFF without
            ``meta``, or a band that is not in the sample.
    """
    row = _member(name)
    if row is None:
        raise LoaderError(
            f"unknown member {name!r}: not in the members table geodelta.schemas.members "
            "(a newer release? upgrade geodelta)",
            source=key,
        )
    if name == "series.tif":  # date-major T*C bands
        return decode_series_geotiff(data, meta=meta, bands=bands, nodata=nodata, key=str(key))
    return _DECODERS[row.codec](data, meta=meta, bands=bands, nodata=nodata, key=str(key))


def decode_members(
    raw: Mapping[str, Any], *, bands: Sequence[str] | None = None, nodata: float = math.nan
) -> dict[str, Any]:
    """Decode every member of a raw sample (member name -> bytes) by its codec.

    Args:
        raw: the sample as webdataset yields it (``__key__``, ``__url__``, member bytes).
        bands: GeoTIFF bands to keep, in this order (``None`` = all).
        nodata: value put where a GeoTIFF's DN equals its nodata value.

    Returns:
        Member name -> decoded form (see :func:`decode_member`), with ``__key__`` and
        ``__url__`` passed through. A member the table does not know is reported with an
        :class:`UnknownMemberWarning` naming it and kept as bytes.
    """
    key = str(raw.get("__key__"))
    meta = json.loads(raw["json"]) if "json" in raw else None
    out: dict[str, Any] = {k: v for k, v in raw.items() if k.startswith("__")}
    for name, data in raw.items():
        if name.startswith("__"):
            continue
        if _member(name) is None:
            warnings.warn(
                UnknownMemberWarning(
                    f"{raw.get('__url__')}: sample {key}: unknown member {name!r} (not in the "
                    "members table geodelta.schemas.members); kept as bytes"
                ),
                stacklevel=2,
            )
            out[name] = data
        elif name == "json":
            out[name] = meta
        else:
            out[name] = decode_member(name, data, meta=meta, bands=bands, nodata=nodata, key=key)
    return out


def decode_sample(
    raw: dict[str, Any],
    *,
    bands: Sequence[str] | None = None,
    decode: Decode = "torch",
    nodata: float = math.nan,
    mode: Mode = "pair",
) -> dict[str, Any]:
    """Decode one raw webdataset sample (member name -> bytes) into the TorchGeo-like dict.

    Each member it reads (:data:`DECODED_MEMBERS`; with ``mode="series"``
    :data:`geodelta._series.SERIES_DECODED_MEMBERS`) is decoded by :func:`decode_member`.

    Args:
        raw: the sample as webdataset yields it (``__key__``, ``__url__``, member bytes).
        bands: band names to keep, in this order (``None`` = all, in the file's order).
        decode: ``"torch"`` (tensors), ``"numpy"`` (arrays) or ``"raw"`` (the member bytes,
            untouched, plus ``meta``).
        nodata: value put where DN equals the tif's nodata value (0 in geodelta releases).
        mode: ``"pair"`` (before/after) or ``"series"`` (every date, :mod:`geodelta._series`).

    Returns:
        ``{"image", "mask", "regions", "captions", "qa", "meta"}`` (see the module docstring;
        ``regions`` only for releases with ``regions.png``); with ``mode="series"``
        ``{"image", "dates", "mask", "first_change", "captions", "qa", "meta"}``.

    Raises:
        LoaderError: a requested band is not in the sample; ``mode="series"`` on a pair sample.
    """
    import numpy as np

    key = str(raw.get("__key__"))
    meta: dict[str, Any] = decode_member("json", raw["json"], key=key)
    meta["__key__"] = key
    meta["__url__"] = raw.get("__url__")
    if mode == "series":

        def member(name: str) -> Any:
            return decode_member(name, raw[name], meta=meta, bands=bands, nodata=nodata, key=key)

        return decode_series_sample(raw, meta, bands=bands, decode=decode, decode_member=member)
    if decode == "raw":
        return {k: v for k, v in raw.items() if not k.startswith("__")} | {"meta": meta}

    def member_of(name: str) -> Any:
        return decode_member(name, raw[name], meta=meta, bands=bands, nodata=nodata, key=key)

    band_plan(meta, bands, key)  # a missing band fails before any GeoTIFF is read
    meta["__bands__"] = list(bands) if bands is not None else list(meta["bands"])
    before, after = member_of("before.tif"), member_of("after.tif")
    if before.shape != after.shape:
        raise LoaderError(
            f"before.tif {before.shape} and after.tif {after.shape} of sample {key} differ in "
            "shape",
            source=key,
        )
    image = np.stack((before, after))
    mask = np.asarray(member_of("mask.png"), dtype=np.int64)
    out: dict[str, Any] = {
        "image": image,
        "mask": mask,
        "captions": [str(c) for c in member_of("captions.json")],
        "qa": list(member_of("qa.json")),
        "meta": meta,
    }
    if "regions.png" in raw:  # region ids (uint16 in the PNG); releases before 'regions' lack it
        out["regions"] = np.asarray(member_of("regions.png"), dtype=np.int64)
    if decode == "torch":
        import torch

        out["image"] = torch.from_numpy(image)
        out["mask"] = torch.from_numpy(mask)
        if "regions" in out:
            out["regions"] = torch.from_numpy(out["regions"])
    return out


def load(
    url_or_dir: str | Path | Sequence[str | Path],
    split: str | None = "train",
    bands: Sequence[str] | None = None,
    decode: Decode = "torch",
    *,
    nodata: float = math.nan,
    shuffle: int = 0,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    mode: Mode = "pair",
) -> ReleaseDataset:
    """A torch IterableDataset over a release's shards, one decoded sample at a time.

    Use it straight in a ``torch.utils.data.DataLoader`` (any ``num_workers``) with
    ``collate_fn=geodelta.data.collate``: samples differ in size and in caption count, so it
    pads the tensors to the batch's largest height and width (NaN for images, -100 for masks)
    and keeps ``captions``/``qa``/``meta`` as lists (:mod:`geodelta.collate`). ``len(ds)`` is
    this rank's sample count from the manifest; ``ds.plot(sample)`` draws a sample
    (:func:`geodelta.plot.plot`), as TorchGeo datasets do.

    Args:
        url_or_dir: a local release folder, an http(s) release URL (``manifest.json`` is fetched
            and the split's shards are read relative to it), ``manifest.json`` itself, one
            ``.tar`` shard, or a list of shard paths/URLs.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for every shard.
        bands: band names to keep, in this order; ``None`` keeps all bands.
        decode: ``"torch"`` (default), ``"numpy"`` or ``"raw"`` (member bytes).
        nodata: value for nodata pixels (the tifs' nodata DN, 0) in ``image``; NaN by default.
        shuffle: sample shuffle buffer size; 0 keeps shard order (deterministic).
        seed: seed of the shard and sample shuffles (used when ``shuffle > 0``).
        rank: this node's rank; ``None`` = :func:`rank_info`.
        world_size: number of nodes; ``None`` = :func:`rank_info`.
        transforms: applied to each decoded sample (``sample -> sample``), as TorchGeo's
            ``transforms=`` (with ``decode="raw"`` it gets the raw sample).
        mode: ``"pair"`` (default; a series release reads as date 0 / date T-1) or
            ``"series"``: ``image`` [T, C, H, W], ``dates``, ``mask`` [T-1, H, W],
            ``first_change`` [H, W] (:mod:`geodelta._series`). A pair release refuses
            ``"series"`` (by ``manifest["mode"]``; without a manifest, at its first sample).

    Returns:
        A :class:`geodelta._dataset.ReleaseDataset` (a ``webdataset.DataPipeline``, a torch
        ``IterableDataset``) with ``len()`` and ``plot``.

    Raises:
        LoaderError: unknown split, decode or mode, bad rank, unreadable manifest,
            ``mode="series"`` on a pair release.
    """
    import webdataset as wds
    from webdataset import tariterators

    from geodelta._dataset import ReleaseDataset

    if decode not in ("torch", "numpy", "raw"):
        raise LoaderError(f"decode must be 'torch', 'numpy' or 'raw' (got {decode!r})")
    if mode not in ("pair", "series"):
        raise LoaderError(f"mode must be 'pair' or 'series' (got {mode!r})")
    shards, counts, found = _resolve(url_or_dir, split)
    if mode == "series" and found is not None and manifest_mode(found) != "series":
        raise LoaderError(f"{PAIR_RELEASE} (manifest mode {manifest_mode(found)!r})",
                          source=str(url_or_dir))  # fmt: skip
    env_rank, env_world = rank_info()
    r = env_rank if rank is None else rank
    w = env_world if world_size is None else world_size
    if w < 1 or not 0 <= r < w:
        raise LoaderError(f"rank must be in [0, world_size) (rank={r}, world_size={w})")
    stages: list[Any] = [wds.SimpleShardList(shards)]
    if shuffle > 0:
        stages.append(wds.shuffle(len(shards), seed=seed))
    stages += [
        functools.partial(_split_by_rank, rank=r, world_size=w),
        wds.split_by_worker,
        _open_shards,
        # decoded samples skip the members decode_sample never reads (the RGB and land-cover
        # PNGs) without copying them; "raw" keeps every member
        functools.partial(
            _expand_tars,
            select=None
            if decode == "raw"
            else (_is_series_member if mode == "series" else _is_decoded_member),
        ),
        tariterators.group_by_keys,
    ]
    if shuffle > 0:
        stages.append(wds.shuffle(shuffle, seed=seed))
    stages.append(
        wds.map(
            functools.partial(decode_sample, bands=bands, decode=decode, nodata=nodata, mode=mode)
        )
    )
    if transforms is not None:
        stages.append(wds.map(transforms))
    length: int | None = None
    if counts is not None:  # this rank's shards; with shuffled shards, its share of the total
        mine = sum(c for i, c in enumerate(counts) if i % w == r)
        length = mine if shuffle <= 0 or w == 1 else -(-sum(counts) // w)
    return ReleaseDataset(*stages, length=length)
