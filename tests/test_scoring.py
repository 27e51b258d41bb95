"""AlgoPerf scoring against hand-computed examples."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optarena.arena.scoring import (
    INF,
    TrialOutcome,
    benchmark_score,
    cells,
    leaderboard,
    performance_profile,
    ratios,
)


def outcome(entrant, workload, study, time, steps=None):
    return TrialOutcome(
        entrant,
        workload,
        study,
        time,
        steps if steps is not None else (None if time is None else int(time * 10)),
    )


def test_time_is_median_over_studies_of_the_best_trial() -> None:
    # Study 0: best trial 4.0; study 1: best 6.0; study 2: nothing reached -> inf. Median of (4, 6, inf) = 6.
    table = cells(
        [
            outcome("a", "w", 0, 5.0),
            outcome("a", "w", 0, 4.0),
            outcome("a", "w", 0, None),
            outcome("a", "w", 1, 6.0),
            outcome("a", "w", 1, 9.0),
            outcome("a", "w", 2, None),
            outcome("a", "w", 2, None),
        ]
    )
    cell = table[("a", "w")]
    assert cell.study_times == (4.0, 6.0, INF)
    assert cell.time == 6.0
    assert cell.steps == 60
    assert cell.time_spread == (4.0, INF)
    assert cell.studies_reached == 2


def test_two_of_three_studies_missing_gives_infinity() -> None:
    table = cells([outcome("a", "w", 0, 1.0), outcome("a", "w", 1, None), outcome("a", "w", 2, None)])
    assert table[("a", "w")].time == INF


def test_ratios_to_the_fastest_entrant() -> None:
    r = ratios(
        {
            ("a", "w1"): 10.0,
            ("b", "w1"): 25.0,
            ("a", "w2"): INF,
            ("b", "w2"): 8.0,
            ("a", "w3"): INF,
            ("b", "w3"): INF,
        }
    )
    assert r[("a", "w1")] == 1.0 and r[("b", "w1")] == 2.5
    assert r[("a", "w2")] == INF and r[("b", "w2")] == 1.0
    assert r[("a", "w3")] == INF and r[("b", "w3")] == INF


def test_performance_profile_is_a_step_function() -> None:
    assert performance_profile([1.0, 2.0, INF, 5.0], [1.0, 1.99, 2.0, 4.0, 10.0]) == [
        0.25,
        0.25,
        0.5,
        0.5,
        0.75,
    ]


def test_benchmark_score_hand_computed() -> None:
    # rho(tau) for ratios (1, 2, inf): 1/3 on [1, 2), 2/3 on [2, 4]; area = 1/3 * 1 + 2/3 * 2 = 5/3; / (4-1).
    assert benchmark_score([1.0, 2.0, INF]) == pytest.approx(5 / 9)
    assert benchmark_score([1.0, 1.0]) == 1.0
    assert benchmark_score([INF, INF]) == 0.0
    # A ratio above r_max counts as infinite.
    assert benchmark_score([4.5]) == 0.0
    assert benchmark_score([4.0]) == 0.0


def test_benchmark_score_equals_numerical_integral_of_the_profile() -> None:
    r = [1.0, 1.3, 2.7, 3.9, 6.0, INF]
    n = 300_000
    taus = [1.0 + 3.0 * (i + 0.5) / n for i in range(n)]
    numeric = sum(performance_profile(r, taus)) / n
    assert benchmark_score(r) == pytest.approx(numeric, abs=1e-4)


def test_leaderboard_end_to_end_hand_computed() -> None:
    # a: w1 median 10 (studies 10, 12); w2 never reaches.  b: w1 median 20; w2 median 5.
    board = leaderboard(
        [
            outcome("a", "w1", 0, 10.0),
            outcome("a", "w1", 1, 12.0),
            outcome("a", "w2", 0, None),
            outcome("a", "w2", 1, None),
            outcome("b", "w1", 0, 20.0),
            outcome("b", "w1", 1, 30.0),
            outcome("b", "w1", 1, 20.0),
            outcome("b", "w2", 0, 5.0),
            outcome("b", "w2", 1, 5.0),
        ]
    )
    assert board.cells[("a", "w1")].time == 11.0
    assert board.cells[("b", "w1")].time == 20.0
    assert board.ratios[("b", "w1")] == pytest.approx(20 / 11)
    # a: ratios (1, inf) -> (4 - 1) / (2 * 3) = 0.5. b: ratios (20/11, 1) -> ((4 - 20/11) + 3) / 6.
    assert board.scores["a"] == pytest.approx(0.5)
    assert board.scores["b"] == pytest.approx(((4 - 20 / 11) + 3) / 6)
    assert board.ranked() == ["b", "a"]


def test_missing_entrant_workload_pair_counts_as_not_reached() -> None:
    board = leaderboard([outcome("a", "w1", 0, 1.0), outcome("b", "w2", 0, 1.0), outcome("a", "w2", 0, 2.0)])
    assert math.isinf(board.cells[("b", "w1")].time)
    assert board.scores["b"] == pytest.approx(0.5)


def test_empty_ratios_rejected() -> None:
    with pytest.raises(ValueError, match="entrant_ratios"):
        benchmark_score([])


ratio = st.one_of(st.floats(min_value=1.0, max_value=10.0), st.just(INF))


@given(st.lists(ratio, min_size=1, max_size=12))
def test_score_is_a_fraction_and_matches_the_profile_area(rs: list[float]) -> None:
    score = benchmark_score(rs)
    assert 0.0 <= score <= 1.0
    # exact area of the step function: integrate between its breakpoints
    points = sorted({1.0, 4.0, *(r for r in rs if r <= 4.0)})
    area = sum((b - a) * performance_profile(rs, [a])[0] for a, b in zip(points, points[1:], strict=False))
    assert score == pytest.approx(area / 3.0)


@given(st.lists(ratio, min_size=1, max_size=12), st.data())
def test_reaching_the_target_faster_never_lowers_the_score(rs: list[float], data) -> None:
    i = data.draw(st.integers(0, len(rs) - 1))
    faster = list(rs)
    faster[i] = 1.0 if math.isinf(rs[i]) else max(1.0, rs[i] / 2)
    assert benchmark_score(faster) >= benchmark_score(rs)
