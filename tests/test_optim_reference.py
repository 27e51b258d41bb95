"""Differential tests: each optimizer against its published reference implementation, step by step in float64.

Every case (optarena.optim.references.CASES) trains two identical small networks (dense and convolutional; one or two
param groups with different hyperparameters; weight decay on and off) on the same batches for 200 steps, one with
optarena's optimizer and one with the reference, and requires the parameters to agree to 1e-10 relative after every
step (looser only where a case states why).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import nn

from optarena import optim
from optarena.curvature import gnb_diagonal, hutchinson_diagonal, hvp
from optarena.optim.references import CASES, ReferenceCase

STEPS = 200


def _dense() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def _conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))


NETWORKS = {"dense": (_dense, (16, 6)), "conv": (_conv, (16, 2, 6, 6))}


def _groups(model: nn.Module, hp: dict, two_groups: bool, translate: Callable[[dict], dict]) -> list[dict]:
    params = list(model.parameters())
    if not two_groups:
        return [{"params": params, **translate(hp)}]
    other = {**hp, "lr": hp["lr"] * 3, **({"weight_decay": hp["weight_decay"] / 2} if "weight_decay" in hp else {})}
    return [{"params": params[::2], **translate(hp)}, {"params": params[1::2], **translate(other)}]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("network", sorted(NETWORKS))
@pytest.mark.parametrize("two_groups", [False, True], ids=["one-group", "two-groups"])
def test_matches_reference_step_by_step(case: ReferenceCase, network: str, two_groups: bool) -> None:
    reference_cls = case.reference()
    build, input_shape = NETWORKS[network]
    for hp in case.configs:
        torch.manual_seed(0)
        ours_model = build().double()
        ref_model = copy.deepcopy(ours_model)
        ours = optim.create(case.name, _groups(ours_model, hp, two_groups, lambda h: h), **hp, **case.our_options)
        reference = reference_cls(_groups(ref_model, hp, two_groups, case.translate))
        generator = torch.Generator().manual_seed(1)
        for step in range(STEPS):
            inputs = torch.randn(input_shape, generator=generator, dtype=torch.float64)
            targets = torch.randn(input_shape[0], 3, generator=generator, dtype=torch.float64)
            hessian = None
            if case.hessian is not None and ours.curvature_due:
                hessian = _curvature_estimate(case.hessian, ours, ours_model, inputs, targets, generator)
            for model, optimizer in ((ours_model, ours), (ref_model, reference)):
                optimizer.zero_grad()
                nn.functional.mse_loss(model(inputs), targets).backward()
            if case.hessian is None:
                ours.step()
                reference.step()
            else:  # a closure too, which Hutchinson-kind optimizers require (the estimate given replaces theirs)
                ours.step(partial(nn.functional.mse_loss, ours_model(inputs), targets), hessian=hessian)
                case.reference_step(reference, hessian)
            for a, b in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
                scale = b.abs().max().clamp_min(1e-30)
                error = ((a - b).abs().max() / scale).item()
                assert error <= case.rtol, f"{case.name} {hp} step {step}: relative difference {error:.3g}"


def _curvature_estimate(kind, optimizer, model, inputs, targets, generator) -> list[torch.Tensor]:
    """The Hessian-diagonal estimate fed to both implementations, one tensor per parameter of every param group in
    order: Hutchinson's (signed) or Gauss-Newton-Bartlett's on Gaussian-sampled targets (non-negative)."""
    params = list(model.parameters())
    outputs = model(inputs)
    if kind == "hutchinson":
        loss = nn.functional.mse_loss(outputs, targets)
        estimate = hutchinson_diagonal(lambda v: hvp(loss, params, v), params, generator=generator)
    else:
        estimate = gnb_diagonal(outputs, params, likelihood="gaussian", generator=generator)
    by_param = dict(zip(params, estimate, strict=True))
    return [by_param[p] for group in optimizer.param_groups for p in group["params"]]
