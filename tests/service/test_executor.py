"""service.executor: the LIFO thread pool the gRPC server runs its handlers on."""

from __future__ import annotations

import threading
from concurrent import futures

import pytest

from densitywatch.service.executor import LifoThreadPoolExecutor


def _blocked(pool: LifoThreadPoolExecutor, n: int, gate: threading.Event) -> list[futures.Future]:
    started = threading.Semaphore(0)

    def task(i: int) -> tuple[int, int]:
        started.release()
        gate.wait(30)
        return i, threading.get_ident()

    submitted = [pool.submit(task, i) for i in range(n)]
    for _ in range(min(n, pool._max_workers)):
        assert started.acquire(timeout=30)
    return submitted


def test_results_exceptions_and_the_initializer_reach_their_callers() -> None:
    inits: list[int] = []
    pool = LifoThreadPoolExecutor(4, initializer=lambda tag: inits.append(tag), initargs=(7,))
    assert pool.submit(pow, 2, 10).result(timeout=30) == 1024
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(timeout=30)
    done: list[futures.Future] = []
    future = pool.submit(lambda: "x")
    future.add_done_callback(done.append)  # what grpc's server relies on
    assert future.result(timeout=30) == "x" and done == [future]
    pool.shutdown()
    assert inits == [7] * pool.threads_started


def test_a_failing_initializer_is_logged_and_the_call_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = LifoThreadPoolExecutor(1, initializer=lambda: 1 / 0)
    assert pool.submit(lambda: "ran").result(timeout=30) == "ran"
    pool.shutdown()
    assert "initializer failed" in caplog.text


def test_the_most_recently_idle_thread_takes_the_next_call() -> None:
    """After a burst of 8 concurrent calls, sequential calls all run on one thread instead
    of rotating through the 8 (ThreadPoolExecutor wakes the one idle longest)."""
    pool = LifoThreadPoolExecutor(16)
    gate = threading.Event()
    burst = _blocked(pool, 8, gate)
    gate.set()
    assert len({f.result(timeout=30)[1] for f in burst}) == 8 == pool.threads_started
    ran_on = {pool.submit(threading.get_ident).result(timeout=30) for _ in range(50)}
    assert len(ran_on) == 1 and pool.threads_started == 8
    pool.shutdown()


def test_calls_beyond_max_workers_wait_in_order() -> None:
    pool = LifoThreadPoolExecutor(3)
    gate = threading.Event()
    order: list[int] = []
    first = _blocked(pool, 3, gate)
    queued = [pool.submit(order.append, i) for i in range(5)]
    assert pool.threads_started == 3 and not any(f.done() for f in queued)
    gate.set()
    futures.wait([*first, *queued], timeout=30)
    assert order == [0, 1, 2, 3, 4] and pool.threads_started == 3
    pool.shutdown()


def test_shutdown_refuses_new_calls_cancels_the_backlog_and_joins() -> None:
    pool = LifoThreadPoolExecutor(1)
    gate = threading.Event()
    (running,) = _blocked(pool, 1, gate)
    waiting = pool.submit(lambda: "never")
    threading.Timer(0.05, gate.set).start()
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=0)[0] == 0 and waiting.cancelled()
    assert not any(t.is_alive() for t in pool._threads)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(print)
    with pytest.raises(ValueError):
        LifoThreadPoolExecutor(0)
