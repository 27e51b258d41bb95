"""Hessian-vector products (double backward and torch.func) against dense Hessians and quadratics, in float64."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from optarena.curvature import functional_hvp, hvp, hvp_from_grads, model_loss_function

TOL = {"rtol": 1e-12, "atol": 1e-12}


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def split_like(vector: torch.Tensor, like) -> list[torch.Tensor]:
    return [chunk.view_as(t) for chunk, t in zip(vector.split([t.numel() for t in like]), like, strict=True)]


def quadratic(seed: int = 0):
    """f(x) = 0.5 x^T A x + b^T x over x = (x1 [3, 4], x2 [5]), A symmetric indefinite: H = A."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(17, 17, generator=generator, dtype=torch.float64)
    a = a + a.T
    b = torch.randn(17, generator=generator, dtype=torch.float64)
    x = [torch.randn(3, 4, generator=generator, dtype=torch.float64), torch.randn(5, generator=generator).double()]
    v = [torch.randn(3, 4, generator=generator, dtype=torch.float64), torch.randn(5, generator=generator).double()]

    def f(params) -> torch.Tensor:
        z = flat(params)
        return 0.5 * z @ a @ z + b @ z

    return f, a, x, v


def test_double_backward_hvp_of_a_quadratic_is_a_v() -> None:
    f, a, x, v = quadratic()
    params = [t.clone().requires_grad_(True) for t in x]
    product = hvp(f(params), params, v)
    torch.testing.assert_close(flat(product), a @ flat(v), **TOL)
    assert [p.shape for p in product] == [p.shape for p in params]


def test_functional_hvp_of_a_quadratic_is_a_v() -> None:
    f, a, x, v = quadratic()
    product = functional_hvp(lambda d: f([d["x1"], d["x2"]]), {"x1": x[0], "x2": x[1]}, {"x1": v[0], "x2": v[1]})
    torch.testing.assert_close(flat([product["x1"], product["x2"]]), a @ flat(v), **TOL)


def tanh_mlp(seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """A 3 -> 6 -> 3 tanh MLP (D = 24 + 21 = 45 parameters) and a fixed batch of 7 labelled examples."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (7,), generator=generator)
    return model, (inputs, labels)


def workload_loss(model: nn.Module, batch) -> torch.Tensor:
    inputs, labels = batch
    return F.cross_entropy(model(inputs), labels)


def dense_hessian(model: nn.Module, batch) -> torch.Tensor:
    """The [D, D] Hessian of the workload loss by torch.autograd.functional.hessian of the flat parameter vector."""
    names = [name for name, _ in model.named_parameters()]
    like = [p.detach() for p in model.parameters()]

    def loss_of_flat(theta: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, split_like(theta, like), strict=True))
        inputs, labels = batch
        return F.cross_entropy(functional_call(model, params, (inputs,)), labels)

    return torch.autograd.functional.hessian(loss_of_flat, flat(like))


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_all_hvp_routes_match_the_dense_hessian_of_a_tanh_mlp() -> None:
    model, batch = tanh_mlp()
    params = list(model.parameters())
    dimension = sum(p.numel() for p in params)
    assert 40 <= dimension <= 60
    hessian = dense_hessian(model, batch)
    generator = torch.Generator().manual_seed(1)
    v = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
    expected = hessian @ flat(v)

    torch.testing.assert_close(flat(hvp(workload_loss(model, batch), params, v)), expected, **TOL)

    f, primals = model_loss_function(model, workload_loss, batch)
    assert list(primals) == [name for name, _ in model.named_parameters()]
    tangents = dict(zip(primals, v, strict=True))
    torch.testing.assert_close(flat(functional_hvp(f, primals, tangents).values()), expected, **TOL)

    # AdaHessian's route: .grad left with a graph by backward(create_graph=True)
    workload_loss(model, batch).backward(create_graph=True)
    grads = [p.grad for p in params]
    torch.testing.assert_close(flat(hvp_from_grads(grads, params, v)), expected, **TOL)
    model.zero_grad(set_to_none=True)


def test_model_loss_function_evaluates_the_workload_loss_and_skips_frozen_parameters() -> None:
    model, batch = tanh_mlp()
    model[0].bias.requires_grad_(False)
    f, params = model_loss_function(model, workload_loss, batch)
    assert list(params) == ["0.weight", "2.weight", "2.bias"]
    assert all(not p.requires_grad for p in params.values())
    torch.testing.assert_close(f(params), workload_loss(model, batch), **TOL)
    shifted = {name: p + 0.1 for name, p in params.items()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in shifted:
                p.add_(0.1)
        expected = workload_loss(model, batch)
    torch.testing.assert_close(f(shifted), expected, **TOL)


def test_constant_gradients_and_unused_parameters_give_zero_rows() -> None:
    """loss = c . w + sum(u^3): grad_w = c has no graph (H rows of w are 0), unused gets zeros, H_uu = diag(6u)."""
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    u = torch.randn(3, dtype=torch.float64, requires_grad=True)
    unused = torch.randn(2, dtype=torch.float64, requires_grad=True)
    c = torch.randn(4, dtype=torch.float64)
    loss = c @ w + u.pow(3).sum()
    v = [torch.randn(4, dtype=torch.float64), torch.randn(3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)]
    hw, hu, hunused = hvp(loss, [w, u, unused], v)
    torch.testing.assert_close(hw, torch.zeros(4, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(hu, 6 * u.detach() * v[1], **TOL)
    torch.testing.assert_close(hunused, torch.zeros(2, dtype=torch.float64), rtol=0, atol=0)


def test_gradients_without_a_graph_raise_a_runtime_error_naming_create_graph() -> None:
    f, _, x, v = quadratic()
    params = [t.clone().requires_grad_(True) for t in x]
    grads = torch.autograd.grad(f(params), params)
    with pytest.raises(RuntimeError, match="create_graph=True"):
        hvp_from_grads(grads, params, v)


def test_the_loss_graph_survives_for_the_callers_backward() -> None:
    f, _, x, v = quadratic()
    params = [t.clone().requires_grad_(True) for t in x]
    loss = f(params)
    hvp(loss, params, v)
    hvp(loss, params, v)
    loss.backward()
    fresh = [t.clone().requires_grad_(True) for t in x]
    expected = torch.autograd.grad(f(fresh), fresh)
    torch.testing.assert_close(flat([p.grad for p in params]), flat(expected), **TOL)


def test_retain_graph_false_frees_the_gradient_graph() -> None:
    f, _, x, v = quadratic()
    params = [t.clone().requires_grad_(True) for t in x]
    grads = torch.autograd.grad(f(params), params, create_graph=True)
    hvp_from_grads(grads, params, v, retain_graph=False)
    with pytest.raises(RuntimeError, match="second time"):
        hvp_from_grads(grads, params, v)


def test_mismatched_vectors_raise_value_errors() -> None:
    f, _, x, v = quadratic()
    params = [t.clone().requires_grad_(True) for t in x]
    with pytest.raises(ValueError, match="vectors must hold one tensor per parameter"):
        hvp(f(params), params, v[:1])
    with pytest.raises(ValueError, match=r"vectors\[1\] has shape"):
        hvp(f(params), params, [v[0], torch.zeros(4, dtype=torch.float64)])
    with pytest.raises(ValueError, match="tangents must have the keys"):
        functional_hvp(lambda d: d["a"].sum(), {"a": torch.zeros(2)}, {"b": torch.zeros(2)})


def test_importing_curvature_does_not_import_optarena_optim() -> None:
    """optarena.optim's __init__ imports optimizers that import optarena.curvature: importing curvature first must
    not pull optarena.optim in, or that cycle breaks the import."""
    code = "import sys, optarena.curvature; assert 'optarena.optim' not in sys.modules, 'cycle'; import optarena.optim"
    subprocess.run([sys.executable, "-c", code], check=True)
