"""The trial loop: target, budgets, divergence, errors, and what the clock counts."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from optarena.arena.entrants import Entrant, baseline
from optarena.arena.trial import build_training, run_trial
from optarena.hparams import SearchSpace
from optarena.workloads.base import Target, Workload, WorkloadConfig
from optarena.workloads.registry import get as get_workload


class FakeTimer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ToyRegression(Workload):
    """Least squares y = 3x; each training step costs 1 fake second and each evaluation 10."""

    name = "toy"
    description = "toy"
    configs = {
        "quick": WorkloadConfig(
            batch_size=8,
            step_hint=100,
            time_budget_s=1000.0,
            eval_every_steps=5,
            target=Target("val_loss", 1e-3, False, "test"),
        )
    }

    def __init__(self, timer: FakeTimer, target: float = 1e-3, time_budget: float = 1000.0) -> None:
        super().__init__("quick")
        self.timer = timer
        self.config = WorkloadConfig(
            batch_size=8,
            step_hint=100,
            time_budget_s=time_budget,
            eval_every_steps=5,
            target=Target("val_loss", target, False, "test"),
        )
        self.x = torch.linspace(-1, 1, 64)[:, None]

    def init_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Linear(1, 1, bias=False)

    def train_batches(self, seed: int):
        while True:
            self.timer.now += 1.0
            yield self.x[:8]

    def loss(self, model, batch):
        return ((model(batch) - 3 * batch) ** 2).mean()

    def evaluate(self, model):
        self.timer.now += 10.0
        return {"val_loss": ((model(self.x) - 3 * self.x) ** 2).mean().item()}


SGD = Entrant("sgd", "sgd", SearchSpace(), schedule="constant")


def test_stops_at_target_and_excludes_evaluation_from_the_clock() -> None:
    timer = FakeTimer()
    result = run_trial(ToyRegression(timer), SGD, {"lr": 0.3, "momentum": 0.0}, seed=0, timer=timer)
    assert result.outcome == "reached"
    assert result.steps_to_target == result.steps and result.steps % 5 == 0
    # one fake second per step on the clock; evaluations (10 s each) only on the wall clock
    assert result.time_to_target == pytest.approx(result.steps)
    assert result.wall_time == pytest.approx(result.steps + 10 * len(result.eval_points))
    assert result.eval_points[-1].metrics["val_loss"] <= 1e-3
    assert result.best_metric == result.eval_points[-1].metrics["val_loss"]


def test_runs_to_the_step_budget_when_the_target_is_out_of_reach() -> None:
    timer = FakeTimer()
    result = run_trial(ToyRegression(timer, target=-1.0), SGD, {"lr": 0.1, "momentum": 0.0}, seed=0, timer=timer)
    # the step budget is 4/3 of the step hint (100), as AlgoPerf's runtime budget is 4/3 of its target setting's
    assert result.outcome == "budget" and result.steps == 134
    assert result.time_to_target is None and result.steps_to_target is None
    assert [p.step for p in result.eval_points] == [*range(5, 134, 5), 134]


class HorizonRecorder(Entrant):
    """An entrant that remembers the schedule horizon each trial gave it."""

    def build(self, params, hparams, step_hint, *args):
        self.horizons.append(step_hint)
        return super().build(params, hparams, step_hint, *args)


def test_schedule_spans_the_budget_and_target_setting_runs_span_the_step_hint() -> None:
    entrant = HorizonRecorder("sgd", "sgd", SearchSpace())
    entrant.horizons = []
    hparams = {"lr": 0.3, "momentum": 0.0}
    normal = run_trial(ToyRegression(FakeTimer()), entrant, hparams, seed=0, timer=FakeTimer())
    setting = run_trial(ToyRegression(FakeTimer()), entrant, hparams, seed=0, timer=FakeTimer(), target_setting=True)
    assert entrant.horizons == [134, 100]
    assert normal.outcome == "reached" and normal.steps < 100  # stops at the target
    assert setting.outcome == "reached" and setting.steps == 100  # runs on: the target is what it measures
    assert setting.steps_to_target is not None and setting.best_metric <= normal.best_metric


def test_time_budget_and_budget_scale() -> None:
    timer = FakeTimer()
    result = run_trial(
        ToyRegression(timer, target=-1.0, time_budget=12.0),
        SGD,
        {"lr": 0.1, "momentum": 0.0},
        seed=0,
        timer=timer,
    )
    assert result.steps == 12 and result.eval_points[-1].step == 12  # the last step is always evaluated
    timer = FakeTimer()
    result = run_trial(
        ToyRegression(timer, target=-1.0, time_budget=12.0),
        SGD,
        {"lr": 0.1, "momentum": 0.0},
        seed=0,
        timer=timer,
        budget_scale=2.0,
    )
    assert result.steps == 24


def test_evaluation_on_a_submission_time_period() -> None:
    timer = FakeTimer()
    workload = ToyRegression(timer, target=-1.0)
    workload.config = dataclasses.replace(workload.config, eval_every_steps=1000, eval_every_seconds=7.0)
    result = run_trial(workload, SGD, {"lr": 0.1, "momentum": 0.0}, seed=0, timer=timer)
    # one fake second per step: every 7 steps on the clock, evaluation time (10 s each) not counted, and the last
    assert [p.step for p in result.eval_points] == [*range(7, 134, 7), 134]


def test_divergence_is_an_outcome() -> None:
    timer = FakeTimer()
    result = run_trial(ToyRegression(timer), SGD, {"lr": 1e6, "momentum": 0.0}, seed=0, timer=timer)
    assert result.outcome == "diverged"
    assert result.time_to_target is None and result.steps < 134


def test_submission_errors_are_recorded_not_raised() -> None:
    timer = FakeTimer()
    result = run_trial(ToyRegression(timer), baseline("adamw"), {"lr": -1.0}, seed=0, timer=timer)
    assert result.outcome == "error"
    assert "lr must be in" in result.error


def test_on_eval_sees_every_point() -> None:
    timer = FakeTimer()
    seen = []
    result = run_trial(
        ToyRegression(timer, target=-1.0),
        SGD,
        {"lr": 0.1, "momentum": 0.0},
        seed=0,
        timer=timer,
        on_eval=seen.append,
    )
    assert seen == result.eval_points and all(math.isfinite(p.train_loss) for p in seen)


def test_same_seed_same_trajectory() -> None:
    runs = [
        run_trial(ToyRegression(FakeTimer(), target=-1.0), baseline("adamw"), {"lr": 0.01}, seed=3) for _ in range(2)
    ]
    assert [p.metrics for p in runs[0].eval_points] == [p.metrics for p in runs[1].eval_points]


def test_optimizers_that_clip_per_example_get_per_example_gradients() -> None:
    dice = Entrant("dice_sgd", "dice_sgd", SearchSpace(), schedule="constant")
    hparams = {"lr": 0.3, "clip1": 100.0, "clip2": 100.0, "noise_multiplier": 0.0}
    # clipping thresholds far above every gradient and no noise: DiceSGD is plain SGD, so it follows SGD's steps
    dice_result = run_trial(ToyRegression(FakeTimer()), dice, hparams, seed=0, timer=FakeTimer())
    sgd_result = run_trial(ToyRegression(FakeTimer()), SGD, {"lr": 0.3, "momentum": 0.0}, seed=0, timer=FakeTimer())
    assert dice_result.outcome == "reached", dice_result.error
    assert dice_result.steps_to_target == sgd_result.steps_to_target
    assert dice_result.best_metric == pytest.approx(sgd_result.best_metric, rel=1e-5)


@pytest.mark.parametrize("name", ["adahessian", "sophia_h"])
def test_hutchinson_optimizers_get_gradients_with_a_graph(name: str) -> None:
    # One weight, so one Rademacher (or Gaussian) probe times H z is (up to z^2) the exact Hessian: Newton-like steps.
    entrant = Entrant(name, name, SearchSpace(), schedule="constant")
    hparams = {"lr": 0.5, "weight_decay": 0.0} | ({"rho": 1.0} if name == "sophia_h" else {})
    result = run_trial(ToyRegression(FakeTimer()), entrant, hparams, seed=0, timer=FakeTimer())
    assert result.outcome == "reached", result.error


def test_gauss_newton_bartlett_needs_a_workload_with_logits() -> None:
    sophia_g = Entrant("sophia_g", "sophia_g", SearchSpace(), schedule="constant")
    result = run_trial(ToyRegression(FakeTimer()), sophia_g, {"lr": 0.1}, seed=0, timer=FakeTimer())
    assert result.outcome == "error" and "Gauss-Newton-Bartlett" in result.error


def test_sophia_g_trains_a_classifier_on_sampled_label_curvature() -> None:
    from optarena.workloads.registry import get

    workload = get("digits_logreg", "quick")
    sophia_g = Entrant("sophia_g", "sophia_g", SearchSpace(), schedule="constant")
    result = run_trial(workload, sophia_g, {"lr": 0.01, "weight_decay": 0.0}, seed=0, budget_scale=0.3)
    assert result.outcome in ("reached", "budget"), result.error
    first, last = result.eval_points[0], result.eval_points[-1]
    assert last.metrics["val_loss"] < first.metrics["val_loss"]


def test_target_setting_runs_are_not_cut_by_the_time_budget() -> None:
    timer = FakeTimer()
    result = run_trial(
        ToyRegression(timer, time_budget=20.0), SGD, {"lr": 0.01}, seed=0, timer=timer, target_setting=True
    )
    assert result.steps == 100 and result.submission_time > 20.0


def test_optimizers_built_from_the_model_get_the_model() -> None:
    mkor = Entrant("mkor", "mkor", SearchSpace(), schedule="constant")
    result = run_trial(ToyRegression(FakeTimer()), mkor, {"lr": 0.1, "momentum": 0.0}, seed=0, timer=FakeTimer())
    assert result.outcome == "reached", result.error


def test_mkor_h_switches_to_sgd_in_a_trial_and_records_when() -> None:
    # unsmoothed with beta = 1, the knee rule holds at the first loss change (rate = gain): the switch comes at step 2
    switch = {"beta": 1.0, "smoothing": 0.0, "min_steps": 1}
    mkor_h = Entrant("mkor-h", "mkor", SearchSpace(), schedule="constant", mkor_switch=switch)
    timer = FakeTimer()
    result = run_trial(ToyRegression(timer, target=-1.0), mkor_h, {"lr": 0.1, "momentum": 0.0}, seed=0, timer=timer)
    switches = [m for m in result.measurements if m.kind == "mkor_switch"]
    assert result.error is None and [m.step for m in switches] == [2] and switches[0].values["switched_at"] == 2
    assert mkor_h.to_config()["mkor_switch"] == switch
    with pytest.raises(ValueError, match="mkor_switch switches MKOR to SGD"):
        Entrant("x", "adamw", SearchSpace(), mkor_switch=switch)
    with pytest.raises(ValueError, match="beta"):
        Entrant("x", "mkor", SearchSpace(), mkor_switch={"beta": -1.0})


def test_an_entrants_embeddings_group_reaches_the_optimizer_and_its_state_size() -> None:
    workload = get_workload("stdlib_bytes", "quick")
    hparams = {"lr": 1e-3, "warmup_fraction": 0.1}
    sizes = {}
    for embeddings in (None, {"min_8bit_size": 10**12}):
        entrant = Entrant("e", "adamw_8bit", SearchSpace(), embeddings=embeddings)
        model, optimizer, _ = build_training(workload, entrant, hparams, seed=0, horizon=10)
        assert len(optimizer.param_groups) == (1 if embeddings is None else 2)
        result = run_trial(workload, entrant, hparams, seed=0, budget_scale=0.05)
        assert result.error is None
        sizes[embeddings is None] = result.state_bytes
    # 32-bit moments (8 bytes an element) instead of 8-bit codes (2) and a float32 absmax per block of 2048 and moment
    # on the embeddings large enough to be quantised (adamw_8bit's min_8bit_size 4096)
    quantised = [p.numel() for p in optimizer.param_groups[0]["params"] if p.numel() >= 4096]
    assert quantised and sizes[False] - sizes[True] == sum(6 * n - 8 * math.ceil(n / 2048) for n in quantised)


def test_the_result_keeps_the_optimizers_state_size() -> None:
    adamw = Entrant("adamw", "adamw", SearchSpace(), schedule="constant")
    result = run_trial(ToyRegression(FakeTimer()), adamw, {"lr": 0.1}, seed=0, timer=FakeTimer())
    # one float32 weight: exp_avg and exp_avg_sq (4 bytes each) and AdamW's float32 step tensor (4 bytes)
    assert (result.state_bytes, result.parameters) == (12, 1)
