"""Optimizers: torch.optim-compatible implementations and the registry that names them."""

from optarena.optim import adabelief, adamp, diffgrad, lamb, lion, sgd_sai, spam, torch_baselines  # noqa: F401  (importing registers each optimizer)
from optarena.optim.lion import Lion
from optarena.optim.registry import OptimizerInfo, create, info, names, register

__all__ = ["Lion", "OptimizerInfo", "create", "info", "names", "register"]
