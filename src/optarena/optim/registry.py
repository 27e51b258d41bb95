"""The optimizer registry: `create(name, params, **hparams)`, `names()`, and each optimizer's metadata.

Every entry takes flat hyperparameters (`lr`, `beta1`, `beta2`, `eps`, `momentum`, `weight_decay`, ...) so
arena configs, the CLI and search spaces speak one vocabulary.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from optarena.hparams import SearchSpace


@dataclass(frozen=True)
class OptimizerInfo:
    """What the registry knows of one optimizer."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    paper: str
    reference: str
    defaults: Mapping[str, Any]
    search_space: SearchSpace
    # Reads per-example gradients p.grad_sample ([B, *p.shape]); the arena's trial loop computes them with
    # optarena.optim.per_example.per_example_grads instead of loss.backward().
    needs_per_example_grads: bool = False
    # Where a diagonal-curvature optimizer's Hessian estimate comes from (optim/diagonal_curvature.py):
    # "hutchinson": its own, so step() needs a closure calling loss.backward(create_graph=optimizer.curvature_due);
    # "gnb": the caller's Gauss-Newton-Bartlett estimate, step(hessian=...) whenever optimizer.curvature_due.
    curvature: str | None = None
    # Built from the model rather than its parameters (it hooks layers: MKOR); `create(name, model, params=...)`.
    needs_model: bool = False

    @property
    def needs_closure(self) -> bool:
        return self.curvature == "hutchinson"

    @property
    def has_foreach_option(self) -> bool:
        """Does the factory take `foreach` (a multi-tensor path besides the single-tensor one)?"""
        parameters = inspect.signature(self.factory).parameters
        return "foreach" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


_REGISTRY: dict[str, OptimizerInfo] = {}


def register(info: OptimizerInfo) -> OptimizerInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"optimizer {info.name!r} is already registered")
    _REGISTRY[info.name] = info
    return info


def names() -> list[str]:
    """Registered optimizer names, sorted."""
    return sorted(_REGISTRY)


def info(name: str) -> OptimizerInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; known optimizers: {', '.join(names())}") from None


def create(name: str, params: Iterable[Any], /, **hparams: Any) -> torch.optim.Optimizer:
    """Build the named optimizer; hyperparameters not given take the registry's defaults. `params` is the model for
    optimizers built from one (`needs_model`), which then also take `params=` (parameters or groups; default: the
    model's). Every optimizer with a multi-tensor path also takes `foreach` (None: its default path; False: the
    single-tensor loop; True: the multi-tensor path)."""
    entry = info(name)
    unknown = set(hparams) - set(entry.defaults) - {"foreach"} - ({"params"} if entry.needs_model else set())
    if unknown:
        raise ValueError(f"unknown hyperparameters for {name!r}: {sorted(unknown)}; allowed: {sorted(entry.defaults)}")
    return entry.factory(params, **{**entry.defaults, **hparams})
