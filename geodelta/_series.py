"""Series samples (issue 15) for :mod:`geodelta.data`: ``load(..., mode="series")``.

A series sample is a pair sample plus the series members (:data:`geodelta.schemas.members.
SERIES_MEMBERS`): ``series.tif`` (T*C bands, date-major), ``dates.json``, ``first_change.png``
and ``step_masks.tif``. Decoded with ``mode="series"`` it is::

    {
        "image": float32 [T, C, H, W]          # every date, reflectance, co-registered on date 0
        "dates": list[datetime]                # T aware UTC datetimes, in order (dates.json)
        "mask": int64 [T-1, H, W]              # step k-1 -> k transition codes, 0 no change
        "first_change": int64 [H, W]           # first step k that changed, 0 never / unknown
        "captions": list[str], "qa": list[dict],
        "meta": dict,                          # json + __key__/__url__/__bands__/__dates__
    }

``meta["__dates__"]`` holds ``dates.json`` as stored (SeriesDateMeta dicts: item ids, clear
fractions, co-registration shifts). The pair members stay readable with ``mode="pair"``
(before = date 0, after = date T-1) or ``decode="raw"``.

Imported by :mod:`geodelta.data` inside its functions; it imports :mod:`geodelta._codec` only
(never ``geodelta.data``: no import circle).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from geodelta._codec import LoaderError, band_plan, reflectance_into, tif_band_count, tif_dn

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "PAIR_RELEASE",
    "SERIES_DECODED_MEMBERS",
    "decode_geotiff_index",
    "decode_series_geotiff",
    "decode_series_sample",
    "manifest_mode",
    "parse_dates",
]

#: Members a ``mode="series"`` decoded sample reads; the tar reader passes over the others.
SERIES_DECODED_MEMBERS = (
    "json",
    "captions.json",
    "qa.json",
    "series.tif",
    "dates.json",
    "first_change.png",
    "step_masks.tif",
)

#: The one-line refusal of ``mode="series"`` on a pair release.
PAIR_RELEASE = "this release holds pairs; use mode='pair'"


def decode_series_geotiff(
    data: bytes,
    *,
    meta: Mapping[str, Any] | None,
    bands: Sequence[str] | None,
    nodata: float,
    key: str,
) -> np.ndarray:
    """``series.tif`` -> float32 reflectance (time, band, y, x), ``bands`` kept per date.

    The file's T*C bands are date-major (date 0 band 0, date 0 band 1, ..., date 1 band 0, ...)
    with C = ``len(meta["bands"])``; only the bands asked are read, for every date.
    """
    import numpy as np

    if meta is None:
        raise LoaderError(
            "series.tif decodes with its sample's json member (bands, dn_scale, dn_offset); "
            "pass meta=",
            source=key,
        )
    idx, scale, offset = band_plan(meta, bands, key)
    per_date = len(meta["bands"])
    total = tif_band_count(data)
    if per_date < 1 or total % per_date:
        raise LoaderError(
            f"series.tif has {total} bands, not a multiple of the sample's {per_date} bands "
            f"{list(meta['bands'])}",
            source=key,
        )
    times = total // per_date
    dn, dn_nodata = tif_dn(data, [t * per_date + i for t in range(times) for i in idx])
    out = np.empty(dn.shape, dtype=np.float32)
    reflectance_into(out, dn, dn_nodata, scale, offset, nodata)
    return out.reshape(times, len(idx), *out.shape[1:])


def decode_geotiff_index(data: bytes, **_: Any) -> np.ndarray:
    """A GeoTIFF of class or transition codes -> its values (band, y, x), uint8 as stored."""
    return tif_dn(data, list(range(tif_band_count(data))))[0]


def parse_dates(value: Any, key: str) -> list[datetime]:
    """The aware UTC acquisition times of a decoded ``dates.json`` (a list of SeriesDateMeta)."""
    if not isinstance(value, list):
        raise LoaderError(f"dates.json is not a list (got {type(value).__name__})", source=key)
    out: list[datetime] = []
    for i, entry in enumerate(value):
        raw = entry.get("datetime") if isinstance(entry, Mapping) else None
        try:
            dt = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError:
            raise LoaderError(
                f"dates.json[{i}] has no ISO 'datetime' (got {raw!r})", source=key
            ) from None
        out.append(dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC))
    return out


def decode_series_sample(
    raw: Mapping[str, Any],
    meta: dict[str, Any],
    *,
    bands: Sequence[str] | None,
    decode: str,
    decode_member: Callable[[str], Any],
) -> dict[str, Any]:
    """The ``mode="series"`` sample of a raw sample whose ``json`` is decoded into ``meta``.

    ``decode_member(name)`` decodes one member of ``raw`` by its codec
    (:func:`geodelta.data.decode_member` with the sample's meta, bands and nodata).

    Raises:
        LoaderError: the sample holds no ``series.tif`` (a pair release: use ``mode="pair"``),
            a band that is not in the sample, or series members that disagree in T or shape.
    """
    import numpy as np

    key = str(meta["__key__"])
    if "series.tif" not in raw:
        raise LoaderError(f"{PAIR_RELEASE} (sample {key} has no series.tif)", source=key)
    if decode == "raw":
        return {k: v for k, v in raw.items() if not k.startswith("__")} | {"meta": meta}

    def member_of(name: str) -> Any:
        if name not in raw:
            raise LoaderError(f"series sample {key} has no {name}", source=key)
        return decode_member(name)

    band_plan(meta, bands, key)  # a missing band fails before any GeoTIFF is read
    meta["__bands__"] = list(bands) if bands is not None else list(meta["bands"])
    stored = member_of("dates.json")
    dates = parse_dates(stored, key)
    meta["__dates__"] = stored
    image = member_of("series.tif")
    mask = np.asarray(member_of("step_masks.tif"), dtype=np.int64)
    first = np.asarray(member_of("first_change.png"), dtype=np.int64)
    t, hw = int(image.shape[0]), tuple(image.shape[2:])
    if len(dates) != t or mask.shape != (t - 1, *hw) or first.shape != hw:
        raise LoaderError(
            f"series members of sample {key} disagree: series.tif {t} dates of {hw}, "
            f"dates.json {len(dates)} dates, step_masks.tif {tuple(mask.shape)}, "
            f"first_change.png {tuple(first.shape)}",
            source=key,
        )
    out: dict[str, Any] = {
        "image": image,
        "dates": dates,
        "mask": mask,
        "first_change": first,
        "captions": [str(c) for c in member_of("captions.json")],
        "qa": list(member_of("qa.json")),
        "meta": meta,
    }
    if decode == "torch":
        import torch

        for name in ("image", "mask", "first_change"):
            out[name] = torch.from_numpy(out[name])
    return out


def manifest_mode(manifest: Mapping[str, Any]) -> str:
    """The release mode a manifest declares (``"mode"``; absent = ``"pair"``)."""
    return str(manifest.get("mode") or "pair")
