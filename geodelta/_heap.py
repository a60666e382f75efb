"""The garbage collector's full passes kept off the objects alive before a build.

This is the ground floor: it imports nothing from the rest of geodelta.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["frozen_heap", "refreeze"]


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """The objects alive now (modules imported, the caller's own) left out of the garbage
    collector's full passes until the build ends (:func:`gc.freeze`; :func:`refreeze` adds
    those alive later, e.g. after the heavy imports the process stage made beside the cells).

    A full pass walks every object tracked: with Great Expectations, pandas and matplotlib
    imported, ~0.2 s each, several a build (0.5-0.7 s of a 12 s ``--from`` build at demo scale
    4). Objects of the build are collected as before; what was alive at the start is freed by
    reference counts as before, and its cycles are collected after the build (the heap is
    unfrozen on exit). A process that froze its heap itself (a pre-fork server) is left as it is.
    """
    import gc

    global _frozen
    if _frozen or gc.get_freeze_count():  # a build in a build, or someone else's freeze
        yield
        return
    gc.freeze()
    _frozen = True
    try:
        yield
    finally:
        _frozen = False
        gc.unfreeze()


#: Whether :func:`frozen_heap` froze the heap (and unfreezes it at its end).
_frozen = False


def refreeze() -> None:
    """Leave the objects alive now out of full collections too, inside :func:`frozen_heap`
    (no-op outside it)."""
    import gc

    if _frozen:
        gc.freeze()
