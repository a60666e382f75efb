"""Batch samples of any size: ``DataLoader(geodelta.data.load(...), batch_size=8, collate_fn=collate)``.

Samples of a release differ in height and width (cells at the AOI's edge, different CRS). The
default collate of PyTorch stacks tensors of one shape only, so :func:`collate` pads:

- every tensor/array of a key is stacked along a new first dimension; when their shapes differ
  only in the last two (spatial) dimensions, each is padded at the bottom and right to the
  largest height and width of the batch: floating values with NaN (the loader's nodata value:
  a padded pixel reads as no data), integer values with :data:`PAD_INDEX` (-100, PyTorch's
  default ``ignore_index``, so ``nn.CrossEntropyLoss()`` skips padding), booleans with False;
- ``"valid_hw"``: an int64 tensor [B, 2] of each sample's own (height, width) is added whenever
  an image-like key (``image``) is batched, so a model can crop its output back;
- everything else (``captions``, ``qa``, ``meta``, strings, a series' ``dates``) is collected
  into a list.

Series samples (``load(..., mode="series")``, recognised by their ``dates``) may also differ in
their number of dates T: ``image`` [T, C, H, W] and ``mask`` [T-1, H, W] are then padded at the
end of their first (time / step) dimension too, to the batch's largest T, with the same values
(NaN for ``image``: a padded date reads as no data; -100 for ``mask``: an ignored step), and
``"valid_t"``, an int64 tensor [B] of each sample's own T, is added to every series batch.
``first_change`` [H, W] is padded like any integer raster (-100).

Samples of one size give exactly what ``torch.stack`` gives. torch is imported inside the
function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from geodelta.errors import GeodeltaError

__all__ = ["PAD_INDEX", "TIME_KEYS", "CollateError", "collate"]

#: Pad value of integer tensors (masks, region ids): PyTorch's default ``ignore_index``.
PAD_INDEX = -100

#: Keys of a series sample whose first dimension is time (dates or steps): padded to the
#: batch's largest T when samples differ in length.
TIME_KEYS = ("image", "mask")


class CollateError(GeodeltaError, ValueError):
    """Samples that cannot be batched (different keys, or shapes that differ beyond H and W)."""


def _pad_value(dtype: Any) -> float | int | bool:
    import torch

    if dtype == torch.bool:
        return False
    if dtype.is_floating_point:
        return math.nan
    return PAD_INDEX


def _stack(key: str, values: list[Any], *, time: bool = False) -> Any:
    """Stack, padding the last two dimensions (and the first one too when ``time``)."""
    import numpy as np
    import torch

    tensors = [torch.as_tensor(v) if isinstance(v, np.ndarray) else v for v in values]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) == 1:
        return torch.stack(tensors)
    ndims = {t.ndim for t in tensors}
    free = 1 if time else 0  # leading dimensions allowed to differ
    leading = {tuple(t.shape[free:-2]) for t in tensors}
    if len(ndims) != 1 or next(iter(ndims)) < 2 + free or len(leading) != 1:
        beyond = "the time and the last two" if time else "the last two (spatial)"
        raise CollateError(
            f"{key!r}: shapes {sorted(shapes)} differ beyond {beyond} dimensions; "
            "pass collate_fn=list to keep samples apart"
        )
    size = [max(int(t.shape[d]) for t in tensors) for d in range(tensors[0].ndim)]
    out = []
    for t in tensors:
        if tuple(t.shape) == tuple(size):
            out.append(t)
            continue
        big = torch.full(size, _pad_value(t.dtype), dtype=t.dtype)
        big[tuple(slice(0, int(n)) for n in t.shape)] = t
        out.append(big)
    return torch.stack(out)


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch decoded samples (see the module docstring for the padding rules).

    Args:
        samples: samples of :func:`geodelta.data.load` (``decode="torch"`` or ``"numpy"``), each
            with the same keys.

    Returns:
        key -> a tensor [B, ...] (padded to the batch's largest H and W, and T for a series) or
        a list of B values; plus ``"valid_hw"`` [B, 2] when the samples have an ``image``, and
        ``"valid_t"`` [B] for series samples (those with ``dates``).

    Raises:
        CollateError: an empty batch, samples with different keys, or tensors whose shapes
            differ in more than the last two dimensions.
    """
    import numpy as np
    import torch

    if not samples:
        raise CollateError("an empty batch cannot be collated")
    keys = list(samples[0])
    for s in samples[1:]:
        if set(s) != set(keys):
            raise CollateError(
                f"samples have different keys ({sorted(keys)} vs {sorted(s)}); batch samples "
                "loaded alike"
            )
    series = "dates" in keys
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        if all(isinstance(v, torch.Tensor | np.ndarray) for v in values):
            batch[key] = _stack(key, values, time=series and key in TIME_KEYS)
        else:
            batch[key] = values
    if "image" in batch and isinstance(batch["image"], torch.Tensor):
        batch["valid_hw"] = torch.tensor(
            [[int(s["image"].shape[-2]), int(s["image"].shape[-1])] for s in samples],
            dtype=torch.int64,
        )
    if series:
        batch["valid_t"] = torch.tensor([len(s["dates"]) for s in samples], dtype=torch.int64)
    return batch
