"""Search spaces, Halton quasi-random search and the trial plan."""

import math

import pytest

from optarena.arena.entrants import baseline, self_tuning
from optarena.arena.tuning import derived_seed, halton_points, plan_trials
from optarena.hparams import Choice, LogUniform, OneMinusLogUniform, SearchSpace, Uniform


def test_dimensions_map_the_unit_interval() -> None:
    assert LogUniform(1e-4, 1e-2).from_unit(0.0) == pytest.approx(1e-4)
    assert LogUniform(1e-4, 1e-2).from_unit(0.5) == pytest.approx(1e-3)
    assert LogUniform(1e-4, 1e-2).from_unit(1.0) == pytest.approx(1e-2)
    assert Uniform(-1.0, 3.0).from_unit(0.25) == pytest.approx(0.0)
    assert OneMinusLogUniform(0.01, 0.1).from_unit(0.0) == pytest.approx(0.99)
    assert [Choice((1, 2, 3)).from_unit(u) for u in (0.0, 0.34, 0.67, 1.0)] == [1, 2, 3, 3]


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogUniform(0.0, 1.0),
        lambda: LogUniform(2.0, 1.0),
        lambda: Uniform(1.0, 0.0),
        lambda: Choice(()),
    ],
)
def test_invalid_dimensions(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_halton_points_are_deterministic_in_the_cube_and_well_spread() -> None:
    points = halton_points(64, 3, seed=7)
    assert points == halton_points(64, 3, seed=7)
    assert points != halton_points(64, 3, seed=8)
    assert all(0.0 <= u < 1.0 for p in points for u in p)
    for d in range(3):  # low discrepancy: every eighth of each axis gets 8 points
        counts = [sum(int(p[d] * 8) == k for p in points) for k in range(8)]
        assert max(counts) - min(counts) <= 2


def test_plan_for_external_tuning() -> None:
    entrant = baseline("adamw")
    plan = plan_trials(entrant, "quadratic_deep", studies=3, trials=5, base_seed=0)
    assert len(plan) == 15
    assert plan == plan_trials(entrant, "quadratic_deep", studies=3, trials=5, base_seed=0)
    assert {(p.study, p.index) for p in plan} == {(s, i) for s in range(3) for i in range(5)}
    for p in plan:
        assert set(p.hparams) == set(entrant.search_space)
        assert 1e-4 <= p.hparams["lr"] <= 3e-2 and 0.7 <= p.hparams["beta1"] <= 0.97
    # studies draw different points; the seeds are shared by entrants (common random numbers)
    assert plan[0].hparams != plan[5].hparams
    other = plan_trials(baseline("nesterov"), "quadratic_deep", studies=3, trials=5, base_seed=0)
    assert [p.seed for p in plan] == [p.seed for p in other]


def test_self_tuning_runs_one_trial_per_study() -> None:
    plan = plan_trials(self_tuning("adamw"), "w", studies=3, trials=5, base_seed=0)
    assert [(p.study, p.index, p.hparams) for p in plan] == [(0, 0, {}), (1, 0, {}), (2, 0, {})]


def test_search_space_sample_checks_dimension() -> None:
    space = SearchSpace({"lr": LogUniform(1e-3, 1e-1)})
    with pytest.raises(ValueError, match="coordinates"):
        space.sample([0.1, 0.2])
    assert math.isclose(space.sample([0.5])["lr"], 1e-2)


def test_derived_seed_is_stable() -> None:
    assert derived_seed(0, "w", 1, 2) == derived_seed(0, "w", 1, 2)
    assert derived_seed(0, "w", 1, 2) != derived_seed(0, "w", 2, 1)
    assert derived_seed("a") == 3904355907 & 0x7FFFFFFF
