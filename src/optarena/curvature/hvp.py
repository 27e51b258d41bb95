"""Hessian-vector products, the building block of every curvature estimate in this package.

Two routes to H v, with H the Hessian of a scalar loss in the parameters:

- reverse-over-reverse (double backward): H v = d(g . v)/d(theta) with g = d loss / d theta computed with
  `create_graph=True`; this is what AdaHessian and PyHessian do (`hvp_from_grads`, `hvp`).
- forward-over-reverse (`torch.func`): H v = jvp(grad(f), theta, v), the directional derivative of the gradient
  (`functional_hvp`); torch 2.13 has no `torch.func.hvp`, so it is written as jvp of grad.

Both need every operation in the loss to support double backward (respectively forward-mode AD); fused attention
kernels may not, so select the math SDPA backend for curvature passes. A model in training mode with dropout or
BatchNorm is a different function at every forward pass: evaluate curvature in eval mode, or with a fixed mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp


def _check_same_shapes(name: str, tensors: Sequence[Tensor], params: Sequence[Tensor]) -> None:
    if len(tensors) != len(params):
        raise ValueError(f"{name} must hold one tensor per parameter ({len(params)}), got {len(tensors)}")
    for index, (tensor, param) in enumerate(zip(tensors, params, strict=True)):
        if tensor.shape != param.shape:
            raise ValueError(f"{name}[{index}] has shape {tuple(tensor.shape)}, its parameter {tuple(param.shape)}")


def hvp_from_grads(
    grads: Sequence[Tensor], params: Sequence[Tensor], vectors: Sequence[Tensor], *, retain_graph: bool = True
) -> list[Tensor]:
    """H v by double backward, from gradients that still carry their graph.

    `grads` come from `torch.autograd.grad(loss, params, create_graph=True)`, or are the `p.grad` left by
    `loss.backward(create_graph=True)`. Returns sum_i d(grads[i] . vectors[i]) / d params[j] for each j, detached.
    A gradient without a graph does not depend on any parameter, so its rows of H are zero and it is skipped; a
    parameter that no gradient depends on gets zeros. `retain_graph=True` (the default) keeps the graph for further
    products (Hutchinson samples, Lanczos iterations) and for the caller's own backward pass.
    """
    grads, params, vectors = list(grads), list(params), list(vectors)
    _check_same_shapes("grads", grads, params)
    _check_same_shapes("vectors", vectors, params)
    connected = [index for index, g in enumerate(grads) if g.requires_grad]
    if not connected:
        raise RuntimeError(
            "hvp_from_grads: no gradient carries a graph, so H v cannot be formed by double backward; compute the "
            "gradients with torch.autograd.grad(loss, params, create_graph=True) or loss.backward(create_graph=True)"
            " (a loss whose gradient is constant, i.e. linear in the parameters, has H = 0)"
        )
    products = torch.autograd.grad(
        [grads[index] for index in connected],
        params,
        grad_outputs=[vectors[index] for index in connected],
        retain_graph=retain_graph,
        allow_unused=True,
    )
    return [torch.zeros_like(p) if hv is None else hv.detach() for hv, p in zip(products, params, strict=True)]


def hvp(loss: Tensor, params: Sequence[Tensor], vectors: Sequence[Tensor]) -> list[Tensor]:
    """H v of a scalar `loss` at `params` by double backward; the loss's graph is kept for the caller.
    Each call differentiates the loss again: for many products, take the gradients once and use `hvp_from_grads`."""
    params = list(params)
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    return hvp_from_grads(grads, params, vectors, retain_graph=True)


def functional_hvp(
    func: Callable[[dict[str, Tensor]], Tensor], primals: dict[str, Tensor], tangents: dict[str, Tensor]
) -> dict[str, Tensor]:
    """H v of `func` (a scalar function of a dict of tensors) at `primals`, by forward-over-reverse AD:
    the jvp of `torch.func.grad(func)` in the direction `tangents` (same keys and shapes as `primals`)."""
    if primals.keys() != tangents.keys():
        raise ValueError(f"tangents must have the keys of primals {sorted(primals)}, got {sorted(tangents)}")
    for key, primal in primals.items():
        if tangents[key].shape != primal.shape:
            raise ValueError(f"tangents[{key!r}] has shape {tuple(tangents[key].shape)}, primal {tuple(primal.shape)}")
    _, product = jvp(grad(func), (primals,), (tangents,))
    return product


def model_loss_function(
    model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor], batch: Any
) -> tuple[Callable[[dict[str, Tensor]], Tensor], dict[str, Tensor]]:
    """The workload loss `loss_fn(model, batch)` as a pure function of the model's trainable parameters.

    Returns `(f, params)`: `params` maps each trainable parameter's name to `p.detach()` (no copy: it shares the
    parameter's storage, so it follows in-place optimizer updates), and
    `f(p) = loss_fn(model with p swapped in, batch)` through `torch.func.functional_call`, so `f` can go to
    `functional_hvp` or any other `torch.func` transform. Parameters left out of `p` keep their current values.
    """
    # imported here: optarena.optim's package __init__ imports optimizers that import this package
    from optarena.optim.per_example import _LossOfModel

    wrapper = _LossOfModel(model, loss_fn)
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no parameter with requires_grad=True")

    def loss_of_params(values: dict[str, Tensor]) -> Tensor:
        swapped = {f"model.{name}": value for name, value in values.items()}
        return functional_call(wrapper, swapped, (batch,), strict=False)

    return loss_of_params, params
