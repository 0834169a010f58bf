"""When to try again: per-run retry backoff and the server probe schedule (tenacity waits).

A run's own backoff grows with its attempts; it applies when the server is known to work
(other runs succeed) and this run keeps failing. While the server is away, everything waits
for one probe at a time, whose backoff grows with the consecutive failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tenacity import RetryCallState, wait_exponential, wait_random_exponential

# Recovery must be noticed soon after the server comes back, whatever max_backoff_s says.
PROBE_MAX_S = 60.0


def _state(attempt: int) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return state


class Backoff:
    """Capped exponential backoff with jitter: a delay in [e, 2e], e = min(2^(n-1), cap/2)."""

    def __init__(self, max_s: float, multiplier_s: float = 1.0) -> None:
        self.max_s = max_s
        half = max_s / 2
        # "Equal jitter": a fixed half that grows, plus a random half (never zero, never
        # synchronised across nodes that lost the server at the same moment).
        self._wait = (wait_exponential(multiplier=multiplier_s, max=half)
                      + wait_random_exponential(multiplier=multiplier_s, max=half))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``; never less than Retry-After."""
        wait = float(self._wait(_state(attempt)))
        if retry_after is not None and retry_after > wait:
            # The server said when; honour it (capped, so a bogus header cannot park us).
            wait = min(float(retry_after), max(self.max_s, 3600.0))
        return wait


class ServerHealth:
    """Whether the server answers, and when to probe it next while it does not.

    ``unknown`` at start, ``up`` after any success, ``down`` after a transient failure.
    Only transitions are returned as True, so the caller logs one line per state change.
    """

    def __init__(self, max_backoff_s: float, clock: Callable[[], float] = time.time) -> None:
        self.state = "unknown"
        self.failures = 0
        self.down_since: float | None = None
        self.probe_at = 0.0
        self.last_error: str | None = None
        self._backoff = Backoff(min(max_backoff_s, PROBE_MAX_S))
        self._clock = clock

    def succeeded(self) -> bool:
        changed = self.state != "up"
        self.state, self.failures, self.probe_at = "up", 0, 0.0
        self.down_since = None
        self.last_error = None
        return changed

    def failed(self, error: str, retry_after: float | None = None) -> bool:
        now = self._clock()
        changed = self.state != "down"
        if changed:
            self.down_since = now
        self.state = "down"
        self.failures += 1
        self.last_error = error
        self.probe_at = now + self._backoff.delay(self.failures, retry_after)
        return changed

    def may_dispatch(self, now: float) -> bool:
        return self.state != "down" or now >= self.probe_at
