"""Observe how many workers run at once: a test double calls :meth:`Overlap.visit` where a real
call would block, and the test reads ``max`` and ``calls`` afterwards."""

from __future__ import annotations

import threading
import time


class Overlap:
    def __init__(self, meet: int) -> None:
        self._lock = threading.Lock()
        self.now = self.max = self.calls = 0
        self._meet = meet
        #: The first ``meet`` visitors wait for each other: a pool bounded below ``meet`` deadlocks
        #: (the barrier's timeout fails the test), one bounded at ``meet`` passes.
        self._barrier = threading.Barrier(meet, timeout=10)

    def visit(self) -> None:
        with self._lock:
            self.now += 1
            self.calls += 1
            first = self.calls <= self._meet
            self.max = max(self.max, self.now)
        if first:
            self._barrier.wait()
        time.sleep(0.01)
        with self._lock:
            self.now -= 1
