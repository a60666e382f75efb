"""The build's progress display: a rich progress bar of finished cells, fed by the engine or by
a thread that watches the staging area's completion markers (Beam's workers report nothing
back while they run).

Part of the public API's floor: the build orchestration (:mod:`geodelta.pipelines.build`, behind
:func:`geodelta.pipelines.api.build`) is its only user.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geodelta.pipelines.release.staging import Staging

__all__ = ["POLL_LOCAL_S", "POLL_REMOTE_S", "Progress", "Watcher"]


class Progress:
    """A rich progress bar, or nothing when progress is off.

    Args:
        enabled: show the bar (False: every call is a no-op but the count is kept).
        label: the bar's description.
        total: units in all.
        completed: units already done (a resumed build's cells).
    """

    def __init__(self, enabled: bool, label: str, total: int, completed: int) -> None:
        self.enabled = enabled
        self.label = label
        self.total = total
        self.completed = completed
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._p = RichProgress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=False,
            )
            self._p.__enter__()
            self._task = self._p.add_task(self.label, total=self.total, completed=self.completed)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._p.__exit__(None, None, None)

    def advance(self, n: int) -> None:
        """Count ``n`` more units done."""
        with self._lock:
            self.completed += n
            if self.enabled:
                self._p.update(self._task, completed=self.completed)

    def set(self, completed: int) -> None:
        """Set the units done."""
        with self._lock:
            self.completed = completed
            if self.enabled:
                self._p.update(self._task, completed=completed)


#: Seconds between two polls of a local staging area's markers, and of an object store's (a
#: listing of every marker each time: requests cost there).
POLL_LOCAL_S = 0.5
POLL_REMOTE_S = 5.0


class Watcher:
    """Sets the progress bar from the staging area's completion markers every
    :data:`POLL_LOCAL_S` seconds (:data:`POLL_REMOTE_S` on an object store). A listing that
    fails (a network blip) is skipped: the next poll tries again.

    Args:
        staging: the staging area the engine commits to.
        bar: the bar to set.
    """

    def __init__(self, staging: Staging, bar: Progress) -> None:
        self._stop = threading.Event()
        self._every = POLL_LOCAL_S if staging.is_local else POLL_REMOTE_S
        self._thread = threading.Thread(target=self._run, args=(staging, bar), daemon=True)
        self._thread.start()

    def _run(self, staging: Staging, bar: Progress) -> None:
        while not self._stop.wait(self._every):
            try:
                done = len(staging.done_cells())
            except Exception:  # the engine's own errors are what the build reports
                continue
            bar.set(done)

    def stop(self) -> None:
        """Stop watching (waits for the thread)."""
        self._stop.set()
        self._thread.join()
