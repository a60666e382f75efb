"""The stages run BLAS on one thread unless the user chose a thread count (pipelines/stages/threads.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from geodelta.pipelines.stages.threads import USER_THREAD_ENV, blas_threads, one_blas_thread
from geodelta.pipelines.stages.worker import guarded
from geodelta.schemas import QuarantineRecord


@pytest.fixture
def three_threads(monkeypatch: pytest.MonkeyPatch):
    """The process's BLAS on 3 threads (whatever the machine's cores), no user variable set."""
    for name in USER_THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    np.ones((2, 2)) @ np.ones((2, 2))  # numpy's BLAS is loaded
    with threadpool_limits(limits=3, user_api="blas"):
        if blas_threads() != 3:
            pytest.skip("no BLAS library whose thread count can be set")
        yield


def test_one_thread_inside_restored_after(three_threads: None) -> None:
    with one_blas_thread():
        assert blas_threads() == 1
    assert blas_threads() == 3


def test_a_user_choice_is_kept(three_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    with one_blas_thread():
        assert blas_threads() == 3


def test_stages_in_two_threads_at_once(three_threads: None) -> None:
    """Two stages at once (a Dask worker's threads): each runs on one thread; the thread
    counts are back when both are done."""
    first_in, second_done = threading.Event(), threading.Event()
    seen: list[int] = []

    def second() -> None:
        first_in.wait()
        with one_blas_thread():
            seen.append(blas_threads())
        seen.append(blas_threads())
        second_done.set()

    t = threading.Thread(target=second)
    t.start()
    with one_blas_thread():
        first_in.set()
        second_done.wait()
        seen.append(blas_threads())
    t.join()
    assert seen[0] == 1 and seen[2] == 1  # inside, in each thread
    assert blas_threads() == 3


def test_restored_after_a_stage_that_raises(three_threads: None) -> None:
    def broken(record: object) -> object:
        assert blas_threads() == 1
        raise ValueError("bad band")

    out = guarded("load", broken, None)
    assert isinstance(out, QuarantineRecord) and out.reason == "error:ValueError"
    assert blas_threads() == 3


def test_guarded_stages_run_on_one_thread(three_threads: None) -> None:
    assert guarded("coregister", lambda record: blas_threads(), None) == 1
