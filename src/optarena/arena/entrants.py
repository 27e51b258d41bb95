"""Entrants: an optimizer from the registry, a learning-rate schedule and a hyperparameter search space.

An external-tuning entrant is tuned by quasi-random search over its space; a self-tuning entrant has an empty space
(its hyperparameters are fixed or it tunes itself) and gets a larger budget (AlgoPerf's self-tuning ruleset).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from optarena import optim, schedules
from optarena.hparams import SearchSpace, mup, rule_for
from optarena.optim.mkor_switch import LossRateSwitch
from optarena.schedules import as_torch_scheduler

RULESETS = ("external", "self")
# the registry's search spaces tune the warmup; a schedule without one (constant, Power) leaves it out
WARMUP = "warmup_fraction"


@dataclass(frozen=True)
class Entrant:
    name: str
    optimizer: str
    search_space: SearchSpace = field(default_factory=SearchSpace)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    schedule: str = "warmup_cosine"
    ruleset: str = "external"
    # AdAdaGrad's adaptive batch size: keyword arguments of optarena.schedules.AdaptiveBatchSize (test, eta, theta,
    # nu, max_batch_size); None: the workload's fixed batch size
    adaptive_batch: Mapping[str, Any] | None = None
    # AutoLRS sets the learning rate on the fly: keyword arguments of optarena.schedules.AutoLRS (min_lr, max_lr,
    # tau_prime, tau, candidates, ...); it replaces the schedule, and its exploration steps run on the clock
    autolrs: Mapping[str, Any] | None = None
    # MKOR-H: keyword arguments of optarena.optim.mkor_switch.LossRateSwitch (beta, smoothing, min_steps), which
    # falls MKOR back to SGD at the knee of the training loss; only for the `mkor` optimizer
    mkor_switch: Mapping[str, Any] | None = None
    # hyperparameters of a param group of the model's embedding matrices (optarena.optim.groups.embedding_groups),
    # e.g. the 32-bit states or no projection the memory-efficient papers give them; None: one group for all
    embeddings: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        optim.info(self.optimizer)  # raises on an unknown optimizer
        if self.ruleset not in RULESETS:
            raise ValueError(f"ruleset must be one of {RULESETS}, got {self.ruleset!r}")
        schedules.info(self.schedule)  # raises on an unknown schedule
        if self.adaptive_batch is not None:
            self.batch_controller(2)  # raises on a bad setting
        if self.autolrs is not None:
            self.lr_controller(0)
        if self.mkor_switch is not None:
            if self.optimizer != "mkor":
                raise ValueError(f"mkor_switch switches MKOR to SGD; entrant {self.name!r} uses {self.optimizer!r}")
            self.loss_switch(optim.create("mkor", torch.nn.Linear(1, 1)))  # raises on a bad setting
        if self.embeddings is not None:
            self._check_embeddings()
        if self.ruleset == "self" and len(self.search_space):
            raise ValueError(f"self-tuning entrant {self.name!r} must have an empty search space")

    def _check_embeddings(self) -> None:
        entry = optim.info(self.optimizer)
        if entry.needs_model:
            raise ValueError(f"embeddings: {self.optimizer!r} is built from the model, not from param groups")
        unknown = set(self.embeddings) - set(entry.defaults)
        if unknown:
            raise ValueError(
                f"embeddings of entrant {self.name!r}: unknown hyperparameters {sorted(unknown)} for "
                f"{self.optimizer!r}; allowed: {sorted(entry.defaults)}"
            )
        # the constructor checks the group's values as it checks optimizer-wide ones
        optim.create(self.optimizer, [torch.nn.Parameter(torch.zeros(2, 2))], **{**self.fixed, **self.embeddings})

    def build(
        self,
        params: Iterable[Any],
        hparams: Mapping[str, Any],
        step_hint: int,
        batch_size: int = 1,
        tokens_per_step: int = 1,
        mup_shapes: Mapping[str, mup.InfShape] | None = None,
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """The optimizer and its scheduler for one trial; `hparams` are a point of the search space.

        The schedule spans `step_hint` steps of `batch_size` examples holding `tokens_per_step` tokens, and takes
        the hyperparameters named like its parameters (`schedules.info(name).defaults`); the optimizer takes the rest.
        With `mup_shapes`, `params` is the model and its parameters get muP's learning rates and weight decays
        (`optarena.hparams.mup`; Adam-type or SGD-type by `hparams.rule_for`, weight decay by the hyperparameter
        `weight_decay_rule`, default "mup").
        """
        merged = {**self.fixed, **hparams}
        schedule_params = {k: merged.pop(k) for k in schedules.info(self.schedule).defaults if k in merged}
        merged.pop(WARMUP, None)
        if mup_shapes is not None:
            defaults = {**optim.info(self.optimizer).defaults, **merged}
            kind = "sgd" if rule_for(self.optimizer) == "linear" else "adam"
            rule = merged.pop("weight_decay_rule", "mup")
            params = mup.param_groups(
                params, dict(mup_shapes), defaults["lr"], kind, defaults.get("weight_decay", 0.0), rule
            )
        optimizer = optim.create(self.optimizer, params, **merged)
        run = schedules.Run(step_hint, optimizer.defaults["lr"], batch_size, tokens_per_step)
        return optimizer, as_torch_scheduler(optimizer, schedules.create(self.schedule, run, **schedule_params))

    def batch_controller(self, batch_size: int) -> schedules.AdaptiveBatchSize | None:
        """A fresh adaptive batch size starting at `batch_size`, or None for a fixed batch."""
        if self.adaptive_batch is None:
            return None
        return schedules.AdaptiveBatchSize(batch_size, **self.adaptive_batch)

    def lr_controller(self, seed: int) -> schedules.AutoLRS | None:
        """A fresh AutoLRS for one trial, or None when the schedule sets the learning rate."""
        return None if self.autolrs is None else schedules.AutoLRS(**{"seed": seed, **self.autolrs})

    def loss_switch(self, optimizer: torch.optim.Optimizer) -> LossRateSwitch | None:
        """A fresh MKOR-H switch watching this trial's optimizer, or None."""
        return None if self.mkor_switch is None else LossRateSwitch(optimizer, **self.mkor_switch)

    def to_config(self) -> dict[str, Any]:
        """A JSON-able description: what identifies this entrant in a stored run."""
        config = {
            "name": self.name,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "ruleset": self.ruleset,
            "fixed": dict(self.fixed),
            "search_space": self.search_space.describe(),
        }
        # absent when unset, so runs stored before they existed resume unchanged
        for key in ("adaptive_batch", "autolrs", "mkor_switch", "embeddings"):
            if getattr(self, key) is not None:
                config[key] = dict(getattr(self, key))
        return config


def baseline(optimizer_name: str, schedule: str = "warmup_cosine") -> Entrant:
    """The external-tuning entrant of a registered optimizer: its registry search space (less the warmup when the
    schedule has none), under `schedule` with the schedule's paper defaults."""
    space = optim.info(optimizer_name).search_space
    name = optimizer_name
    if schedule != "warmup_cosine":
        name = f"{optimizer_name}+{schedule}"
        if WARMUP not in schedules.info(schedule).defaults:
            space = SearchSpace({k: v for k, v in space.items() if k != WARMUP})
    return Entrant(name=name, optimizer=optimizer_name, search_space=space, schedule=schedule)


def self_tuning(optimizer_name: str) -> Entrant:
    """The self-tuning entrant of a registered optimizer: its paper defaults, warmup + cosine."""
    return Entrant(name=f"{optimizer_name}@defaults", optimizer=optimizer_name, ruleset="self")


def resolve(name: str) -> Entrant:
    """`'adamw'` is the tuned baseline under warmup + cosine, `'adamw+wsd'` the same under another registered
    schedule, and `'adamw@defaults'` the self-tuning entrant with paper defaults."""
    if name.endswith("@defaults"):
        return self_tuning(name.removesuffix("@defaults"))
    optimizer_name, _, schedule = name.partition("+")
    return baseline(optimizer_name, schedule or "warmup_cosine")
