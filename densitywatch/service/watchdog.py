"""Cancels calls whose request message does not arrive in time.

The sync gRPC server gives every call a handler thread as soon as its headers arrive, and
that thread then waits for the request message without a limit of its own: a caller that
sends headers and never a message holds a thread for as long as it likes. Each wait for a
first message is armed here (`arm`); a call still waiting when its time is up is
cancelled, which wakes its thread.

Every wait has the same timeout, so waits expire in the order they were armed: a deque
is the whole schedule, and arming one costs an append (the single-point hot path arms one
per call). One daemon thread checks the head of the deque a few times per timeout.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Watch:
    """One armed wait: `disarm()` when it ends; `expired` once the watchdog cancelled its call."""

    __slots__ = ("call", "deadline", "done", "expired")

    def __init__(self, call: Cancellable, deadline: float) -> None:
        self.call: Cancellable | None = call
        self.deadline = deadline
        self.done = False
        self.expired = False

    def disarm(self) -> None:
        self.done = True
        # The call is let go now, not at the deadline: a reference held to a finished call
        # keeps grpc from releasing its HTTP/2 stream, which counts against the connection.
        self.call = None


class MessageWatchdog:
    """Cancels each watched call whose wait lasts longer than `timeout_s`."""

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.timeout_s = timeout_s
        # A call is cancelled between timeout_s and 1.25 timeout_s after its wait began.
        self._tick = min(max(timeout_s / 4, 0.01), 1.0)
        self._pending: deque[Watch] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="message-watchdog", daemon=True)
        self._thread.start()

    def arm(self, call: Cancellable) -> Watch:
        """Cancel `call` unless the returned watch is disarmed within the timeout."""
        armed = Watch(call, time.monotonic() + self.timeout_s)
        self._pending.append(armed)  # atomic: no lock on the hot path
        return armed

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            while self._pending and self._pending[0].deadline <= now:
                armed = self._pending.popleft()
                call = armed.call
                if not armed.done and call is not None:
                    armed.expired = True
                    call.cancel()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
