"""The shared rate limiter every HTTP request of the stage waits for (API pages, downloads, hops)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """At most `requests_per_second` request starts per second across every thread.

    A token bucket of depth one: a request may start once one interval (1%
    longer than 1/rate, a margin for network jitter) has passed since the
    previous start. The slot is claimed when the caller is actually about to
    send (after its sleep), so a thread that wakes late pushes the next slot
    back instead of sending two requests close together. `defer` holds every
    later request (for a 429's Retry-After). A rate of None or 0 lifts the
    limit.
    """

    SAFETY = 1.01

    def __init__(
        self,
        requests_per_second: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        rate = requests_per_second or 0.0
        self.interval = self.SAFETY / rate if rate > 0 and math.isfinite(rate) else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until this caller may send a request; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                if now >= self._next:
                    if self.interval > 0:
                        self._next = now + self.interval
                    return waited
                delay = self._next - now
            self._sleep(delay)
            waited += delay

    def defer(self, seconds: float) -> None:
        """Hold every request for `seconds` from now (the server asked us to wait)."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)
