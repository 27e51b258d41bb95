"""Population Based Training of an arena entrant on an arena workload, on Ray Tune.

"Population Based Training of Neural Networks" (Jaderberg et al., arXiv:1711.09846): a population trains in parallel;
every `interval_steps` steps a member in the bottom quantile copies the weights and optimizer state of one in the top
quantile (exploit) and perturbs its hyperparameters by 0.8 or 1.2, or resamples them (explore). The engine is Ray
Tune's `PopulationBasedTraining` scheduler (its defaults: quantile 0.25, resample probability 0.25, factors 1.2 and
0.8; the paper's truncation selection uses 20%); this module only supplies the trainable and reads the results.

A member (`Member`) is one arena trial cut into intervals: the entrant's optimizer and schedule over the workload's
step budget, its own training steps on the submission clock, a validation evaluation at the end of each interval
with the clock paused. Its checkpoint holds the model, the optimizer state, the step and the clock; after an exploit
the new hyperparameters replace the copied optimizer's, and the data stream resumes exactly where the copied member
was (the batches are the workload's stream for the seed, skipped to the step). The schedule keeps running over the
whole budget underneath (PBT tunes the base learning rate and the optimizer's other searched hyperparameters; the
warmup fraction stays at its default). Continuous hyperparameters are kept inside their search range after a
perturbation, so a beta never crosses 1.

The population's time-to-target is the submission-clock time of the first member to reach the target, counted along
its lineage (a member that copied another inherits its clock), and the run stops then (`FirstToTarget`); its total
compute is the training time of every interval that ran, which is what to compare with a tuned baseline's trials.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from optarena import optim
from optarena.arena.entrants import WARMUP, resolve
from optarena.arena.trial import build_training, is_better, make_train_step
from optarena.hparams import Choice, Dimension, LogUniform, OneMinusLogUniform, Uniform
from optarena.validation import check_int, check_range
from optarena.workloads import registry

STATE_FILE = "member.pt"


@dataclass(frozen=True)
class PBTSetup:
    """What every member shares: the workload and entrant, the population, the interval and the stop."""

    workload: str
    entrant: str
    size: str = "quick"
    population: int = 4
    interval_steps: int = 100
    max_steps: int | None = None  # default: the workload's step budget
    seed: int = 0
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25

    def __post_init__(self) -> None:
        registry.workload_class(self.workload)
        if resolve(self.entrant).adaptive_batch is not None:
            raise ValueError(f"entrant {self.entrant!r} has an adaptive batch size, which PBT members do not support")
        check_int("population", self.population, 2)
        check_int("interval_steps", self.interval_steps, 1)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, 1)
        check_range("quantile_fraction", self.quantile_fraction, 0.0, 0.5, low_open=True, high_open=False)
        check_range("resample_probability", self.resample_probability, 0.0, 1.0, high_open=False)

    @property
    def steps(self) -> int:
        return self.max_steps or registry.get(self.workload, self.size).config.step_budget

    def mutable(self) -> dict[str, Dimension]:
        """The hyperparameters PBT explores: the entrant's search space less the schedule's warmup."""
        return {k: v for k, v in resolve(self.entrant).search_space.items() if k != WARMUP}


def bounds(dimension: Dimension) -> tuple[float, float] | None:
    """The closed range a continuous dimension's values lie in (None for a choice)."""
    if isinstance(dimension, (Uniform, LogUniform)):
        return dimension.low, dimension.high
    if isinstance(dimension, OneMinusLogUniform):
        return 1.0 - dimension.high, 1.0 - dimension.low
    return None


def keep_in_range(config: dict[str, Any], space: Mapping[str, Dimension]) -> dict[str, Any]:
    """Clamp every continuous hyperparameter of `config` into its dimension's range (after a perturbation)."""
    for name, dimension in space.items():
        limits = bounds(dimension)
        if limits is not None and name in config:
            config[name] = min(max(config[name], limits[0]), limits[1])
    return config


def mutations(space: Mapping[str, Dimension]) -> dict[str, Any]:
    """Ray Tune `hyperparam_mutations` for a search space: a list for a choice, a sampler for the rest."""
    return {
        name: list(d.values) if isinstance(d, Choice) else (lambda d=d: d.from_unit(random.random()))
        for name, d in space.items()
    }


@dataclass
class Member:
    """One member's training state, advanced one interval at a time (usable without Ray)."""

    setup: PBTSetup
    hparams: dict[str, Any]
    step: int = 0
    clock: float = 0.0  # submission seconds along the lineage
    time_to_target: float | None = None
    steps_to_target: int | None = None
    best_metric: float | None = None
    diverged: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workload = registry.get(self.setup.workload, self.setup.size)
        self.entrant = resolve(self.setup.entrant)
        self.info = optim.info(self.entrant.optimizer)
        self.model, self.optimizer, self.scheduler = build_training(
            self.workload, self.entrant, self.hparams, self.setup.seed, self.setup.steps
        )
        self._train_step = make_train_step(self.workload, self.model, self.optimizer, self.info, self.setup.seed)
        self._batches = None

    def save(self, directory: Path) -> None:
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "lineage": {k: getattr(self, k) for k in _LINEAGE},
            },
            Path(directory) / STATE_FILE,
        )

    def load(self, directory: Path) -> None:
        """Continue from a (possibly another member's) checkpoint with this member's hyperparameters."""
        saved = torch.load(Path(directory) / STATE_FILE, weights_only=False)
        self.model.load_state_dict(saved["model"])
        ours = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(saved["optimizer"])
        for group, values in zip(self.optimizer.param_groups, ours, strict=True):
            group.update(values)  # the copied state, with the explored hyperparameters
        for key, value in saved["lineage"].items():
            setattr(self, key, value)
        self.scheduler.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
        self.scheduler.last_epoch = self.step
        for group, base, factor in zip(
            self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas, strict=True
        ):
            group["lr"] = base * factor(self.step)  # the schedule's learning rate at this step
        self._batches = None

    def train(self, steps: int) -> dict[str, Any]:
        """Up to `steps` more steps (not past the budget), then one evaluation off the clock; the report."""
        if self._batches is None:  # the workload's stream for the seed, resumed at this step
            self._batches = itertools.islice(self.workload.train_batches(self.setup.seed), self.step, None)
        target = self.workload.target
        start_seconds, loss_sum, count = self.clock, 0.0, 0
        for _ in range(min(steps, self.setup.steps - self.step)):
            begin = time.perf_counter()
            self.model.train()
            loss = self._train_step(next(self._batches))
            self.scheduler.step()
            value = loss.item()
            self.clock += time.perf_counter() - begin
            self.step += 1
            if not math.isfinite(value):
                self.diverged = True
                break
            loss_sum, count = loss_sum + value, count + 1
        metric = math.nan
        if not self.diverged:
            self.model.eval()
            with torch.no_grad():
                metric = self.workload.evaluate(self.model)[target.metric]
            self.diverged = not math.isfinite(metric)
        if not self.diverged:
            if is_better(metric, self.best_metric, target.higher_is_better):
                self.best_metric = metric
            if self.time_to_target is None and target.reached(metric):
                self.time_to_target, self.steps_to_target = self.clock, self.step
        worst = -math.inf if target.higher_is_better else math.inf
        report = {
            "metric": metric if not self.diverged else worst,
            "step": self.step,
            "clock": self.clock,
            "interval_seconds": self.clock - start_seconds,
            "train_loss": loss_sum / count if count else math.nan,
            "reached": self.time_to_target is not None,
            "time_to_target": self.time_to_target,
            "steps_to_target": self.steps_to_target,
            "diverged": self.diverged,
            "done": self.diverged or self.time_to_target is not None or self.step >= self.setup.steps,
            **{f"hp/{k}": v for k, v in self.hparams.items()},
        }
        self.history.append(report)
        return report


_LINEAGE = ("step", "clock", "time_to_target", "steps_to_target", "best_metric")


def trainable(config: dict[str, Any]) -> None:
    """The Ray Tune function trainable: one member, reporting with a checkpoint after every interval."""
    import tempfile

    from ray import tune

    setup = PBTSetup(**config["setup"])
    hparams = {k: config[k] for k in setup.mutable()}
    member = Member(setup, {**resolve(setup.entrant).fixed, **hparams})
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            member.load(Path(directory))
    while True:
        report = member.train(setup.interval_steps)
        with open(config["ledger"], "a") as ledger:  # every interval that ran, whatever happens to its trial later
            ledger.write(json.dumps({"step": report["step"], "seconds": report["interval_seconds"]}) + "\n")
        with tempfile.TemporaryDirectory() as directory:
            member.save(Path(directory))
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(directory))
        if report["done"]:
            return


@dataclass
class PBTResult:
    """What a PBT run found: each member's last report, and the population's time-to-target and compute."""

    setup: PBTSetup
    members: list[dict[str, Any]]
    time_to_target: float | None
    steps_to_target: int | None
    best_metric: float | None
    total_seconds: float
    total_intervals: int
    exploits: int


def _first_to_target():
    from ray.tune.stopper import Stopper

    class FirstToTarget(Stopper):
        """Stop a member when it is done; stop the population when any member reaches the target."""

        def __init__(self) -> None:
            self.reached = False

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            self.reached = self.reached or bool(result.get("reached"))
            return bool(result.get("done"))

        def stop_all(self) -> bool:
            return self.reached

    return FirstToTarget()


def run_pbt(setup: PBTSetup, storage: Path, num_cpus: int | None = None) -> PBTResult:
    """Train the population on a local Ray instance (started here when none is running) and summarise it."""
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    space = setup.mutable()
    random.seed(setup.seed)  # PBT's exploit and explore draw from the driver's `random`
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=1,  # every report is an interval of interval_steps steps
        hyperparam_mutations=mutations(space),
        quantile_fraction=setup.quantile_fraction,
        resample_probability=setup.resample_probability,
        custom_explore_fn=lambda config: keep_in_range(config, space),
        synch=True,  # every member reports each interval before anyone exploits: decisions repeat given the seed
    )
    started = not ray.is_initialized()
    if started:  # logical CPUs: one per member by default, so no member waits paused for a slot
        ray.init(
            num_cpus=num_cpus or setup.population, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    try:
        setup_dict = {k: getattr(setup, k) for k in setup.__dataclass_fields__}
        name = f"pbt-{setup.workload}-{setup.entrant}"
        ledger = Path(storage).resolve() / f"{name}-compute.jsonl"
        ledger.parent.mkdir(parents=True, exist_ok=True)
        ledger.write_text("")
        tuner = tune.Tuner(
            trainable,
            param_space={"setup": setup_dict, "ledger": str(ledger)},
            tune_config=tune.TuneConfig(
                scheduler=scheduler,
                metric="metric",
                mode="max" if _higher(setup) else "min",
                num_samples=setup.population,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(Path(storage).resolve()),
                stop=_first_to_target(),
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # an exploit may restore an older one
            ),
        )
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    members = [{"error": str(r.error)} if r.error is not None else dict(r.metrics) for r in grid]
    ran = [json.loads(line) for line in ledger.read_text().splitlines()]
    seconds, intervals = sum(r["seconds"] for r in ran), len(ran)
    reached = [m for m in members if m.get("time_to_target") is not None]
    first = min(reached, key=lambda m: m["time_to_target"]) if reached else None
    finite = [m["metric"] for m in members if "metric" in m and math.isfinite(m["metric"])]
    best = (max(finite) if _higher(setup) else min(finite)) if finite else None
    log = Path(grid.experiment_path) / "pbt_global.txt"
    exploits = len(log.read_text().splitlines()) if log.exists() else 0
    return PBTResult(
        setup=setup,
        members=members,
        time_to_target=first["time_to_target"] if first else None,
        steps_to_target=first["steps_to_target"] if first else None,
        best_metric=best,
        total_seconds=seconds,
        total_intervals=intervals,
        exploits=exploits,
    )


def _higher(setup: PBTSetup) -> bool:
    return registry.get(setup.workload, setup.size).target.higher_is_better
