"""Optimizers: torch.optim-compatible implementations and the registry that names them."""

from optarena.optim import torch_baselines  # noqa: F401  (importing registers the torch baselines)
from optarena.optim.registry import OptimizerInfo, create, info, names, register

__all__ = ["OptimizerInfo", "create", "info", "names", "register"]
