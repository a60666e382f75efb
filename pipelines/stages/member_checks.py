"""The checks of one sample's members by their codec: what verify runs on every sample.

A PNG member must decode, in the mode its codec says and at the shape its ``json`` says; a
GeoTIFF member must open with GDAL, carry a CRS, the band count, shape and dtype its codec and
``json`` say, and its data must decode; a JSON member must parse (captions, QA, dates: by their
schema). :func:`~geodelta.pipelines.release.verify.verify_release` runs them on every sample
of a release. The workers run the decode checks (PNG, GeoTIFF: :func:`decode_problems`) on the
members they have just encoded (:mod:`.finalize`) and record the sample's
:func:`decode_digest`, so the build's report does not decode those bytes again: they sit here,
below both the stages and the release, so that each imports them downwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Mapping

from PIL import Image
from pydantic import TypeAdapter, ValidationError
from rasterio.io import MemoryFile

from geodelta.schemas import QAItem, SampleMeta
from geodelta.schemas.members import Codec, members_for
from geodelta.schemas.series import SeriesDateMeta

__all__ = [
    "DECODED_CODECS",
    "DECODE_CHECKS",
    "MEMBER_CHECKS",
    "decode_digest",
    "decode_problems",
]

#: The version of the member decode checks (:data:`MEMBER_CHECKS` on PNG and GeoTIFF members): part
#: of every :func:`decode_digest`, so a digest recorded by other checks is never trusted. Bump
#: it whenever a decode check changes what it accepts.
DECODE_CHECKS = 1

_QA_LIST = TypeAdapter(list[QAItem])
#: An object's repr with its address (``<_io.BytesIO object at 0x7f...>``).
_ADDRESS = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>")
_DATES_LIST = TypeAdapter(list[SeriesDateMeta])
#: The random name of a MemoryFile, which GDAL puts in its messages (a quarantine record
#: written from one must be the same bytes on every run).
_MEMFILE = re.compile(r"(/vsimem/)?[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.tif")
#: PNG mode each PNG codec must have.
_PNG_MODES: dict[Codec, str] = {"png-rgb": "RGB", "png-index": "L", "png-instance": "I;16"}


def _check_png(
    where: str, name: str, data: bytes, codec: Codec, meta: SampleMeta | None
) -> list[str]:
    mode = _PNG_MODES[codec]
    problems: list[str] = []
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.format != "PNG" or img.mode != mode:
                problems.append(
                    f"{where}: {name} is {img.format} mode {img.mode}, expected PNG mode {mode}"
                )
            if meta is not None and img.size != (meta.shape[1], meta.shape[0]):
                problems.append(
                    f"{where}: {name} size {img.size} != (width, height) "
                    f"{(meta.shape[1], meta.shape[0])}"
                )
    except (OSError, ValueError, SyntaxError) as exc:
        # PIL names the stream it could not identify by its address: not in the message
        why = _ADDRESS.sub("the member", str(exc))
        problems.append(f"{where}: {name} does not decode as PNG ({why})")
    return problems


def _check_geotiff(
    where: str, name: str, data: bytes, codec: Codec, meta: SampleMeta | None
) -> list[str]:
    problems: list[str] = []
    try:
        with MemoryFile(data) as mem, mem.open() as ds:
            if ds.crs is None:
                problems.append(f"{where}: {name} has no CRS")
            if meta is not None:
                want = _band_count(name, codec, meta)
                if ds.count != want:
                    problems.append(f"{where}: {name} has {ds.count} bands, the json says {want}")
                if (ds.height, ds.width) != tuple(meta.shape):
                    problems.append(
                        f"{where}: {name} shape {(ds.height, ds.width)} != json shape "
                        f"{tuple(meta.shape)}"
                    )
            dtype = "uint8" if codec == "geotiff-index" else "uint16"
            if any(dt != dtype for dt in ds.dtypes):
                problems.append(f"{where}: {name} dtype {ds.dtypes[0]}, expected {dtype}")
            ds.read(1, window=((0, 1), (0, 1)))  # the data decodes
    except Exception as exc:  # rasterio raises several unrelated types on corrupt input
        why = _MEMFILE.sub("the member", str(exc))
        problems.append(f"{where}: {name} does not decode as GeoTIFF ({why})")
    return problems


def _band_count(name: str, codec: Codec, meta: SampleMeta) -> int:
    """Bands a GeoTIFF member must have: the json's bands; for a sequence, times its dates
    (``series.tif``) or its steps (``step_masks.tif``)."""
    dates = 0 if meta.series is None else len(meta.series.dates)
    if codec == "geotiff-index":
        return max(dates - 1, 0)
    return len(meta.bands) * (dates if name == "series.tif" else 1)


def _check_json(
    where: str, name: str, data: bytes, codec: Codec, meta: SampleMeta | None
) -> list[str]:
    """The JSON members other than ``json`` (checked first, as the sample's metadata)."""
    if name == "captions.json":
        try:
            caps = json.loads(data)
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                return [f"{where}: captions.json is not a list of strings"]
        except ValueError as exc:
            return [f"{where}: captions.json is not JSON ({exc})"]
    elif name == "qa.json":
        try:
            _QA_LIST.validate_json(data)
        except ValidationError as exc:
            return [f"{where}: qa.json is not a list of QA items ({exc.error_count()} errors)"]
    elif name == "dates.json":
        try:
            _DATES_LIST.validate_json(data)
        except ValidationError as exc:
            return [f"{where}: dates.json is not a list of dates ({exc.error_count()} errors)"]
    elif name != "json":
        try:
            json.loads(data)
        except ValueError as exc:
            return [f"{where}: {name} is not JSON ({exc})"]
    return []


_Check = Callable[[str, str, bytes, Codec, SampleMeta | None], list[str]]
#: One check per codec of the members table.
MEMBER_CHECKS: dict[Codec, _Check] = {
    "geotiff": _check_geotiff,
    "png-rgb": _check_png,
    "png-index": _check_png,
    "png-instance": _check_png,
    "json": _check_json,
    "geotiff-index": _check_geotiff,
}


#: Codecs whose check decodes the member (what a trusted digest spares).
DECODED_CODECS: frozenset[Codec] = frozenset(c for c in MEMBER_CHECKS if c != "json")


def decode_digest(members: Mapping[str, bytes], meta: SampleMeta, mode: str) -> str:
    """sha256 of everything the decode checks of one sample read: :data:`DECODE_CHECKS`, the
    metadata they compare against (shape, bands, dates) and each decoded member's name, codec
    and bytes. Two samples with the same digest pass or fail those checks alike."""
    head = {
        "checks": DECODE_CHECKS,
        "shape": list(meta.shape),
        "bands": len(meta.bands),
        "dates": 0 if meta.series is None else len(meta.series.dates),
    }
    digest = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    for m in members_for(mode):
        if m.codec in DECODED_CODECS and m.name in members:
            data = members[m.name]
            digest.update(f"\0{m.name}\0{m.codec}\0{len(data)}\0".encode())
            digest.update(data)
    return digest.hexdigest()


def decode_problems(
    members: Mapping[str, bytes], meta: SampleMeta, mode: str, *, where: str
) -> list[str]:
    """The decode checks of one sample (its PNG and GeoTIFF members against ``meta``), as
    :func:`verify_release` runs them: the problems, each prefixed with ``where``.

    The workers run them on the members they just encoded (:mod:`.finalize`) and record the
    :func:`decode_digest` of a sample that passes, so that the build's report does not decode
    those bytes again. No GDAL environment is set up around one sample's two GeoTIFFs: it cost
    more (0.7 ms) than the one each open makes for itself (verify sets one up around a whole
    release instead)."""
    problems: list[str] = []
    for m in members_for(mode):
        if m.codec in DECODED_CODECS and m.name in members:
            problems.extend(MEMBER_CHECKS[m.codec](where, m.name, members[m.name], m.codec, meta))
    return problems
