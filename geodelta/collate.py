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
- everything else (``captions``, ``qa``, ``meta``, strings) is collected into a list.

Samples of one size give exactly what ``torch.stack`` gives. torch is imported inside the
function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from geodelta.errors import GeodeltaError

__all__ = ["PAD_INDEX", "CollateError", "collate"]

#: Pad value of integer tensors (masks, region ids): PyTorch's default ``ignore_index``.
PAD_INDEX = -100


class CollateError(GeodeltaError, ValueError):
    """Samples that cannot be batched (different keys, or shapes that differ beyond H and W)."""


def _pad_value(dtype: Any) -> float | int | bool:
    import torch

    if dtype == torch.bool:
        return False
    if dtype.is_floating_point:
        return math.nan
    return PAD_INDEX


def _stack(key: str, values: list[Any]) -> Any:
    import numpy as np
    import torch
    import torch.nn.functional as F

    tensors = [torch.as_tensor(v) if isinstance(v, np.ndarray) else v for v in values]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) == 1:
        return torch.stack(tensors)
    ndims = {t.ndim for t in tensors}
    leading = {tuple(t.shape[:-2]) for t in tensors}
    if len(ndims) != 1 or next(iter(ndims)) < 2 or len(leading) != 1:
        raise CollateError(
            f"{key!r}: shapes {sorted(shapes)} differ beyond the last two (spatial) dimensions; "
            "pass collate_fn=list to keep samples apart"
        )
    h = max(int(t.shape[-2]) for t in tensors)
    w = max(int(t.shape[-1]) for t in tensors)
    out = []
    for t in tensors:
        pad = (0, w - int(t.shape[-1]), 0, h - int(t.shape[-2]))
        if t.dtype == torch.bool or not t.dtype.is_floating_point:
            big = torch.full((*t.shape[:-2], h, w), _pad_value(t.dtype), dtype=t.dtype)
            big[..., : t.shape[-2], : t.shape[-1]] = t
            out.append(big)
        else:
            out.append(F.pad(t, pad, value=math.nan))
    return torch.stack(out)


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch decoded samples (see the module docstring for the padding rules).

    Args:
        samples: samples of :func:`geodelta.data.load` (``decode="torch"`` or ``"numpy"``), each
            with the same keys.

    Returns:
        key -> a tensor [B, ...] (padded to the batch's largest H and W) or a list of B values;
        plus ``"valid_hw"`` [B, 2] when the samples have an ``image``.

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
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        if all(isinstance(v, torch.Tensor | np.ndarray) for v in values):
            batch[key] = _stack(key, values)
        else:
            batch[key] = values
    if "image" in batch and isinstance(batch["image"], torch.Tensor):
        batch["valid_hw"] = torch.tensor(
            [[int(s["image"].shape[-2]), int(s["image"].shape[-1])] for s in samples],
            dtype=torch.int64,
        )
    return batch
