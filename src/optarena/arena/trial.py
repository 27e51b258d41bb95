"""One trial: train a workload with an entrant's optimizer on the submission clock until target or budget.

The loop evaluates every `eval_every_steps` steps with the clock paused, stops as soon as the validation target is
met (time- and steps-to-target are those of that evaluation), when the step or time budget is spent, or when the
training loss stops being finite (outcome 'diverged'). Any exception in the submission is recorded as outcome
'error' with its message instead of crashing the run. A trial given a `MeasurementPlan` also takes training
diagnostics between steps, off the clock and without changing the trajectory (`optarena.arena.measurements`).
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from optarena import optim
from optarena.arena.clock import SubmissionClock
from optarena.arena.entrants import Entrant
from optarena.arena.lr_control import AutoLRSDriver
from optarena.arena.measurements import Measurement, MeasurementPlan, Measurer
from optarena.curvature import gnb_diagonal
from optarena.optim.groups import embedding_groups
from optarena.optim.memory import optimizer_state_bytes
from optarena.optim.per_example import per_example_grads
from optarena.schedules import AdaptiveBatchSize
from optarena.workloads.base import Workload

OUTCOMES = ("reached", "budget", "diverged", "error")


@dataclass
class EvalPoint:
    step: int
    submission_time: float
    wall_time: float
    train_loss: float
    metrics: dict[str, float]


@dataclass
class TrialResult:
    outcome: str
    steps: int = 0
    submission_time: float = 0.0
    wall_time: float = 0.0
    time_to_target: float | None = None
    steps_to_target: int | None = None
    best_metric: float | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    eval_points: list[EvalPoint] = field(default_factory=list)
    error: str | None = None
    measurements: list[Measurement] = field(default_factory=list)
    # the optimizer's state at the end of training (optarena.optim.memory.optimizer_state_bytes) and the model's size
    state_bytes: int | None = None
    parameters: int | None = None


def is_better(value: float, best: float | None, higher_is_better: bool) -> bool:
    return best is None or (value > best if higher_is_better else value < best)


def make_train_step(
    workload: Workload,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    entry: optim.OptimizerInfo,
    seed: int,
    batch_controller: AdaptiveBatchSize | None = None,
) -> Callable[[Any], torch.Tensor]:
    """One optimizer step on a batch, returning the training loss, in the way the optimizer needs its gradients;
    with a `batch_controller`, the step's per-example gradients also decide the next batch size."""
    if batch_controller is not None and (entry.needs_closure or entry.curvature is not None):
        raise ValueError(
            f"adaptive batch sizes are not supported with {entry.name!r} (it needs a closure or curvature)"
        )
    if entry.needs_per_example_grads or batch_controller is not None:  # DP clipping, batch-size tests

        def per_example_step(batch: Any) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = per_example_grads(model, workload.loss, batch)
            if batch_controller is not None:
                samples = [p.grad_sample for p in model.parameters() if getattr(p, "grad_sample", None) is not None]
                batch_controller.update(samples)
            optimizer.step()
            return loss

        return per_example_step
    if entry.needs_closure:  # its own Hutchinson estimate differentiates the gradients

        def closure_step(batch: Any) -> torch.Tensor:
            def closure() -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                due = optimizer.curvature_due
                # fused attention kernels have no double backward; the composite (math) one has
                with sdpa_kernel(SDPBackend.MATH) if due else contextlib.nullcontext():
                    loss = workload.loss(model, batch)
                    loss.backward(create_graph=due)
                return loss

            return optimizer.step(closure)

        return closure_step
    generator = torch.Generator().manual_seed(seed)
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def plain_step(batch: Any) -> torch.Tensor:
        hessian = None
        if entry.curvature == "gnb" and optimizer.curvature_due:  # on labels sampled from the model
            hessian = gnb_diagonal(workload.logits(model, batch), params, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss = workload.loss(model, batch)
        loss.backward()
        if hessian is None:
            optimizer.step()
        else:
            optimizer.step(hessian=hessian)
        return loss

    return plain_step


def build_training(
    workload: Workload, entrant: Entrant, hparams: Mapping[str, Any], seed: int, horizon: int
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The seed's freshly initialised model, on the workload's device, and the entrant's optimizer and schedule for it.

    Optimizers that need the model (or muP shapes, when the workload gives them) get the model; the others get its
    parameters, in two groups when the entrant sets its `embeddings` apart. The schedule spans `horizon` steps.
    """
    model = workload.init_model(seed).to(workload.device)
    shapes = workload.mup_shapes(model)
    if entrant.embeddings is not None:
        if shapes is not None:
            raise ValueError(f"entrant {entrant.name!r}: an embeddings group cannot be combined with muP's groups")
        subject = embedding_groups(model, **entrant.embeddings)
    elif optim.info(entrant.optimizer).needs_model or shapes is not None:
        subject = model
    else:
        subject = model.parameters()
    config = workload.config
    optimizer, scheduler = entrant.build(subject, hparams, horizon, config.batch_size, workload.tokens_per_step, shapes)
    return model, optimizer, scheduler


def run_trial(
    workload: Workload,
    entrant: Entrant,
    hparams: Mapping[str, Any],
    seed: int,
    budget_scale: float = 1.0,
    on_eval: Callable[[EvalPoint], None] | None = None,
    timer: Callable[[], float] = time.perf_counter,
    target_setting: bool = False,
    measure: MeasurementPlan | None = None,
) -> TrialResult:
    """Run one trial; budgets (steps and seconds) are the workload's times `budget_scale`.

    The entrant's schedule spans the step budget (AlgoPerf's `step_hint` is the steps that fit in the budget).
    A `target_setting` run (calibration) is instead exactly `step_hint` steps long, schedule included, and stops
    neither at the target nor at the time budget. `measure` (default: none) adds the plan's diagnostics at step 0
    and every `measure.every_steps` steps, with the clock paused, to `TrialResult.measurements`.
    """
    config, target = workload.config, workload.target
    horizon = config.step_hint if target_setting else config.step_budget
    max_steps = config.step_hint if target_setting else math.ceil(config.step_budget * budget_scale)
    # a target-setting run is defined by its steps: no time budget cuts it short on a busy machine
    time_budget = math.inf if target_setting else config.time_budget_s * budget_scale
    wall_start = timer()
    clock = SubmissionClock(timer)
    result = TrialResult(outcome="budget")
    try:
        model, optimizer, scheduler = build_training(workload, entrant, hparams, seed, horizon)
        entry = optim.info(entrant.optimizer)
        lr_control = entrant.lr_controller(seed)
        loss_switch = entrant.loss_switch(optimizer)
        lr_driver = AutoLRSDriver(lr_control, model, optimizer) if lr_control is not None else None
        controller = entrant.batch_controller(config.batch_size)
        train_step = make_train_step(workload, model, optimizer, entry, seed, controller)
        batches = workload.train_batches(seed) if controller is None else workload.train_batches(seed, controller)
        batch_size = config.batch_size
        measurer = Measurer(measure, workload, seed, timer) if measure is not None else None
        if measurer is not None:
            result.measurements += measurer.measure(0, model, optimizer)
        loss_sum, loss_count, last_eval_time = 0.0, 0, 0.0
        while result.steps < max_steps and clock.elapsed < time_budget:
            exploring = lr_driver is not None and lr_driver.exploring
            with clock.running():
                model.train()
                if lr_driver is not None:
                    lr_driver.before_step()
                loss = train_step(next(batches))
                if lr_driver is None:
                    scheduler.step()
                loss_value = loss.item()
                stage = lr_driver.after_step(loss_value) if lr_driver is not None else None
                switching = loss_switch is not None and loss_switch.switched_at is None and loss_switch.step(loss_value)
            result.steps += 1
            if stage is not None:
                result.measurements.append(Measurement(result.steps, "autolrs", stage, 0.0))
            if switching:  # MKOR-H fell back to SGD after this step: record when
                result.measurements.append(Measurement(result.steps, "mkor_switch", loss_switch.state_dict(), 0.0))
            if not math.isfinite(loss_value):
                if exploring:  # a candidate learning rate that diverged: AutoLRS restores before the next step
                    continue
                result.outcome = "diverged"
                break
            loss_sum, loss_count = loss_sum + loss_value, loss_count + 1
            if controller is not None and controller.batch_size != batch_size:  # the batch grew: record when
                batch_size = controller.batch_size
                result.measurements.append(Measurement(result.steps, "batch_size", {"batch_size": batch_size}, 0.0))
            if measurer is not None and measurer.due(result.steps):
                result.measurements += measurer.measure(result.steps, model, optimizer)
            last_step = result.steps >= max_steps or clock.elapsed >= time_budget
            time_due = config.eval_every_seconds is not None and (
                clock.elapsed - last_eval_time >= config.eval_every_seconds
            )
            if result.steps % config.eval_every_steps and not last_step and not time_due:
                continue
            last_eval_time = clock.elapsed
            model.eval()
            with torch.no_grad():
                metrics = workload.evaluate(model)
            point = EvalPoint(result.steps, clock.elapsed, timer() - wall_start, loss_sum / loss_count, metrics)
            loss_sum, loss_count = 0.0, 0
            result.eval_points.append(point)
            result.final_metrics = metrics
            if on_eval is not None:
                on_eval(point)
            value = metrics[target.metric]
            if not math.isfinite(value):
                result.outcome = "diverged"
                break
            if is_better(value, result.best_metric, target.higher_is_better):
                result.best_metric = value
            if result.time_to_target is None and target.reached(value):
                result.time_to_target, result.steps_to_target = point.submission_time, point.step
                if not target_setting:
                    break
        if result.time_to_target is not None:
            result.outcome = "reached"
        result.state_bytes = optimizer_state_bytes(optimizer)
        result.parameters = sum(p.numel() for p in model.parameters())
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - a failing submission is a recorded outcome, not a crash
        result.outcome = "error"
        result.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    result.submission_time = clock.elapsed
    result.wall_time = timer() - wall_start
    return result
