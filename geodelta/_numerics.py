"""CPU numerics that give torch the same floats on any x86-64 machine (the reference model's
training, the baseline change model's inference in builds).

The reference model's metrics gate a release, so two machines training it on the same release
must get the same weights and metrics. With torch's defaults they do not: its kernels are
chosen per CPU at run time. Measured on the demo release (one torch thread, the same seed):
masks F1 0.653 on an Intel Xeon, 0.482 on an AMD EPYC; on the EPYC alone, oneDNN limited to
AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``) gave F1 0.591 and ATen's kernels limited to AVX2
(``ATEN_CPU_CAPABILITY=avx2``) moved retrieval R@1 and caption CIDEr. What is pinned, and
why each:

- ``ATEN_CPU_CAPABILITY=default``: ATen's vectorised kernels (reductions, activations) run the
  one build compiled for every x86-64 CPU, not the AVX2 / AVX-512 builds picked per machine.
- ``MKL_CBWR=COMPATIBLE``: MKL's conditional numerical reproducibility mode (matrix products
  take the same code path on Intel and other x86-64 CPUs).
- oneDNN off for the training (``torch.backends.mkldnn``): its JIT kernels and their blocking
  depend on the CPU's instruction set and caches; convolutions then run as ATen's
  im2col + MKL products, which the two settings above cover.
- one intra-op thread (``reference.threads: 1``, the default): the reduction order of a
  product split over threads depends on their count.

The two environment variables are read once, when torch first runs a kernel (ATen) or MKL
first runs: they cannot be changed in a process where torch has run. :func:`pinned_here`
says whether this process has them; :func:`pin_before_torch` sets them where torch has not
been imported yet (a build's worker, before the baseline model loads); otherwise the reference
training runs in a child process started with them
(:mod:`geodelta.pipelines.training.numerics`). Cost: the demo's training takes ~1.6-1.9x as
long as with the per-CPU kernels. Other architectures (ARM) get the same floats among
themselves, not the x86-64 ones.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["PINNED", "numerics_record", "pin_before_torch", "pinned_env", "pinned_here"]

log = logging.getLogger(__name__)

#: The environment of a process whose torch numerics are pinned.
PINNED: Mapping[str, str] = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def pinned_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the :data:`PINNED` variables."""
    return {**(os.environ if base is None else base), **PINNED}


def pinned_here() -> bool:
    """Whether torch in this process runs the pinned kernels: the :data:`PINNED` variables are
    set and ATen took them (it reads its own once, when torch first runs)."""
    if any(os.environ.get(k) != v for k, v in PINNED.items()):
        return False
    import torch

    return str(torch.backends.cpu.get_cpu_capability()).upper() == "DEFAULT"


def numerics_record(threads: int) -> dict[str, Any]:
    """What ``metrics.training.numerics`` records of the run (this process's settings)."""
    import torch

    return {
        "aten_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
        "mkldnn": bool(torch.backends.mkldnn.enabled),
        "threads": threads,
    }


def pin_before_torch() -> bool:
    """Set the :data:`PINNED` variables in this process when torch is not imported yet (they
    then hold for every torch use after, in this process and the processes it starts); True
    when torch here will run (or runs) the pinned kernels."""
    if "torch" not in sys.modules:
        for name, value in PINNED.items():
            if os.environ.get(name) != value:
                log.debug("torch numerics: %s=%s (was %r)", name, value, os.environ.get(name))
                os.environ[name] = value
    return pinned_here()
