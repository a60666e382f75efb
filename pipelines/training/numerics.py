"""CPU numerics that give the reference model the same floats on any x86-64 machine.

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
says whether this process has them; otherwise the training runs in a child process started
with them (:func:`pinned_env`). Cost: the demo's training takes ~1.6x as long as with the
per-CPU kernels. Other architectures (ARM) get the same floats among themselves, not the
x86-64 ones.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

from geodelta.errors import GeodeltaError, ModelError, ReleaseError

__all__ = [
    "PINNED",
    "child_error",
    "child_say",
    "child_spec",
    "numerics_record",
    "pinned_env",
    "pinned_here",
    "run_pinned",
]

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


# --------------------------------------------------------------------------------------------
# A child process with the pinned numerics: the parent's side and the child's

#: Line prefixes of the child's standard output (one message a line).
_PROGRESS, _ERROR = "progress\t", "error\t"


def run_pinned(code: str, spec: Mapping[str, Any], say: Callable[[str], None]) -> None:
    """Run ``python -c code`` in a child process with the :data:`PINNED` environment; ``spec``
    goes to it as JSON on standard input (:func:`child_spec`). Its progress lines
    (:func:`child_say`) go to ``say``; its error (:func:`child_error`) is raised here as the
    same geodelta error with the same message.

    Raises:
        GeodeltaError: the child's, rebuilt; a :class:`~geodelta.errors.ModelError` when the child
            ended otherwise than with 0 (its traceback went to standard error).
    """
    error: dict[str, Any] | None = None
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=pinned_env(),
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(dict(spec)))
            proc.stdin.close()
            for line in proc.stdout:
                text = line.rstrip("\n")
                if text.startswith(_PROGRESS):
                    say(text.removeprefix(_PROGRESS))
                elif text.startswith(_ERROR):
                    error = json.loads(text.removeprefix(_ERROR))
                else:  # a library's own print: not ours to drop
                    print(text, file=sys.stderr)
            status = proc.wait()
        except BaseException:  # Ctrl-C here: the child does not outlive it
            proc.kill()
            raise
    if error is not None:
        raise _rebuilt(error)
    if status != 0:
        raise ModelError(
            f"the training process (pinned CPU numerics) ended with exit status {status}; "
            "its messages are above"
        )


def child_spec() -> dict[str, Any]:
    """In the child: the ``spec`` :func:`run_pinned` sent; refused where the numerics are not
    pinned (the child would train with the per-CPU kernels the parent ran it to avoid)."""
    if not pinned_here():
        raise ModelError(f"the training child runs without the pinned numerics {dict(PINNED)}")
    spec: dict[str, Any] = json.loads(sys.stdin.read())
    return spec


def child_say(message: str) -> None:
    """In the child: one progress line for the parent's ``say``."""
    print(f"{_PROGRESS}{message}", flush=True)


def child_error(exc: GeodeltaError) -> None:
    """In the child: the error the parent raises again."""
    record = {
        "module": type(exc).__module__,
        "type": type(exc).__qualname__,
        "message": str(exc),
        "path": getattr(exc, "path", None),
    }
    print(f"{_ERROR}{json.dumps(record)}", flush=True)


def _rebuilt(record: Mapping[str, Any]) -> GeodeltaError:
    """The child's error as an instance of its class (a geodelta error; else ModelError)."""
    message, path = str(record.get("message", "")), record.get("path")
    try:
        cls = getattr(importlib.import_module(str(record["module"])), str(record["type"]))
    except (ImportError, AttributeError, KeyError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, GeodeltaError)):
        return ModelError(message)
    if issubclass(cls, ReleaseError):
        return cls(message, path=None if path is None else str(path))
    try:
        return cls(message)
    except TypeError:  # a constructor with other required arguments
        return ModelError(message)
