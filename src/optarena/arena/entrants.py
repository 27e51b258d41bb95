"""Entrants: an optimizer from the registry, a learning-rate schedule and a hyperparameter search space.

An external-tuning entrant is tuned by quasi-random search over its space; a self-tuning entrant has an empty space
(its hyperparameters are fixed or it tunes itself) and gets a larger budget (AlgoPerf's self-tuning ruleset).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from optarena import optim
from optarena.hparams import SearchSpace
from optarena.schedules import as_torch_scheduler, constant, warmup_cosine

RULESETS = ("external", "self")
SCHEDULES = ("warmup_cosine", "constant")
DEFAULT_WARMUP_FRACTION = 0.05


@dataclass(frozen=True)
class Entrant:
    name: str
    optimizer: str
    search_space: SearchSpace = field(default_factory=SearchSpace)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    schedule: str = "warmup_cosine"
    ruleset: str = "external"

    def __post_init__(self) -> None:
        optim.info(self.optimizer)  # raises on an unknown optimizer
        if self.ruleset not in RULESETS:
            raise ValueError(f"ruleset must be one of {RULESETS}, got {self.ruleset!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.ruleset == "self" and len(self.search_space):
            raise ValueError(f"self-tuning entrant {self.name!r} must have an empty search space")

    def build(
        self, params: Iterable[Any], hparams: Mapping[str, Any], step_hint: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """The optimizer and its scheduler for one trial; `hparams` are a point of the search space."""
        merged = {**self.fixed, **hparams}
        warmup_fraction = merged.pop("warmup_fraction", DEFAULT_WARMUP_FRACTION)
        optimizer = optim.create(self.optimizer, params, **merged)
        if self.schedule == "constant":
            schedule = constant
        else:
            schedule = functools.partial(
                warmup_cosine, total_steps=step_hint, warmup_steps=int(warmup_fraction * step_hint)
            )
        return optimizer, as_torch_scheduler(optimizer, schedule)

    def to_config(self) -> dict[str, Any]:
        """A JSON-able description: what identifies this entrant in a stored run."""
        return {
            "name": self.name,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "ruleset": self.ruleset,
            "fixed": dict(self.fixed),
            "search_space": self.search_space.describe(),
        }


def baseline(optimizer_name: str) -> Entrant:
    """The external-tuning entrant of a registered optimizer: its registry search space, warmup + cosine."""
    return Entrant(name=optimizer_name, optimizer=optimizer_name, search_space=optim.info(optimizer_name).search_space)


def self_tuning(optimizer_name: str) -> Entrant:
    """The self-tuning entrant of a registered optimizer: its paper defaults, warmup + cosine."""
    return Entrant(name=f"{optimizer_name}@defaults", optimizer=optimizer_name, ruleset="self")


def resolve(name: str) -> Entrant:
    """`'adamw'` is the tuned baseline, `'adamw@defaults'` the self-tuning entrant with paper defaults."""
    if name.endswith("@defaults"):
        return self_tuning(name.removesuffix("@defaults"))
    return baseline(name)
