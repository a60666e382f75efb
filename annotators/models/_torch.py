"""torch for the models' modules: the one guard that names the ``model`` extra when it is missing.

:mod:`~geodelta.annotators.models.change_model` and :mod:`~geodelta.annotators.models.pair_encoder`
import ``torch``, ``nn`` and ``F`` from here; importing this module imports torch, so only those
modules (never the package) import it.
"""

from __future__ import annotations

from geodelta._optional import optional_import

optional_import("torch", "model", purpose="the change model and the pair encoder")

import torch  # noqa: E402  (after the guard)
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

__all__ = ["F", "nn", "torch"]
