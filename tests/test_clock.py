"""The submission clock counts only what runs inside `running()`."""

import pytest

from optarena.arena.clock import SubmissionClock


class FakeTimer:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_counts_only_running_blocks() -> None:
    timer = FakeTimer()
    clock = SubmissionClock(timer)
    with clock.running():
        timer.now += 2.0
    timer.now += 50.0  # evaluation, logging: excluded
    with clock.running():
        timer.now += 3.0
    assert clock.elapsed == pytest.approx(5.0)


def test_elapsed_includes_the_block_in_progress() -> None:
    timer = FakeTimer()
    clock = SubmissionClock(timer)
    with clock.running():
        timer.now += 1.5
        assert clock.elapsed == pytest.approx(1.5)
    assert clock.elapsed == pytest.approx(1.5)


def test_time_is_counted_when_the_block_raises() -> None:
    timer = FakeTimer()
    clock = SubmissionClock(timer)
    with pytest.raises(ZeroDivisionError), clock.running():
        timer.now += 4.0
        1 / 0  # noqa: B018
    assert clock.elapsed == pytest.approx(4.0)


def test_nested_running_is_an_error() -> None:
    clock = SubmissionClock(FakeTimer())
    with clock.running(), pytest.raises(RuntimeError, match="already running"), clock.running():
        pass
