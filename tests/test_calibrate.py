"""Target calibration: the AlgoPerf procedure on a small budget, and its rounding."""

import statistics

import pytest

from optarena.arena.calibrate import calibrate, round_toward_easier


def test_rounding_keeps_the_median_rerun_meeting_the_target() -> None:
    assert round_toward_easier(0.96567, higher_is_better=True) == 0.9656
    assert round_toward_easier(2.47966, higher_is_better=False) == 2.48
    assert round_toward_easier(86.4249, higher_is_better=False) == 86.43
    assert round_toward_easier(1234567.0, higher_is_better=True) == 1234000.0
    assert round_toward_easier(0.0, higher_is_better=True) == 0.0


def test_calibration_takes_the_best_baseline_and_the_median_of_its_reruns() -> None:
    record = calibrate("quadratic_deep", "quick", trials=2, seeds=3, baselines=("sgd", "adam"))
    assert set(record.per_baseline) == {"sgd", "adam"}
    best = min(record.per_baseline, key=lambda n: record.per_baseline[n][0])
    assert record.chosen == best
    assert len(record.rerun_values) == 3
    assert record.target == pytest.approx(statistics.median(record.rerun_values), rel=1e-3)
    assert record.target >= statistics.median(record.rerun_values)
    assert record.time_budget_s >= 5.0
    assert "optarena calibrate quadratic_deep --size quick --trials 2 --seeds 3" in record.how_set()
    assert "| sgd |" in record.markdown()
