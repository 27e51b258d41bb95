"""Learning-rate schedules as pure functions of the step, and the adapter to torch's LR schedulers."""

from __future__ import annotations

from collections.abc import Callable

import torch

from optarena.schedules.warmup_cosine import warmup_cosine

Schedule = Callable[[int], float]


def constant(step: int) -> float:
    """The constant multiplier 1."""
    return 1.0


def as_torch_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """Drive every param group's learning rate as `base_lr * schedule(step)`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


__all__ = ["Schedule", "as_torch_scheduler", "constant", "warmup_cosine"]
