"""The submission clock: counts only time spent in the submission's training steps.

As in AlgoPerf, model initialisation, evaluation and logging are excluded; data loading of training batches is
part of the step and is counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class SubmissionClock:
    """Accumulates the durations of `running()` blocks; `elapsed` includes a block still in progress."""

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        self._timer = timer
        self._accumulated = 0.0
        self._started_at: float | None = None

    @contextmanager
    def running(self) -> Iterator[None]:
        if self._started_at is not None:
            raise RuntimeError("the submission clock is already running")
        self._started_at = self._timer()
        try:
            yield
        finally:
            self._accumulated += self._timer() - self._started_at
            self._started_at = None

    @property
    def elapsed(self) -> float:
        """Seconds on the submission clock so far."""
        running = self._timer() - self._started_at if self._started_at is not None else 0.0
        return self._accumulated + running
