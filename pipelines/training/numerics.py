"""The reference training in a child process with the pinned CPU numerics of
:mod:`geodelta._numerics` (read there why): :func:`run_pinned` starts it and relays what it
says; :func:`child_spec`, :func:`child_say` and :func:`child_error` are the child's side.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

from geodelta._numerics import PINNED, pinned_env, pinned_here
from geodelta.errors import GeodeltaError, ModelError, ReleaseError

__all__ = ["child_error", "child_say", "child_spec", "run_pinned"]


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
