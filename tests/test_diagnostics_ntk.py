"""Empirical NTK against exact answers: the closed form of a linear model, J J^T from torch.autograd.functional."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from optarena.diagnostics import NTKTracker, empirical_ntk, ntk_drift

DTYPE = torch.float64


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 3)).to(DTYPE)


def inputs(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def ntk_by_autograd_jacobian(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """J(x1) J(x2)^T with J = d(all outputs)/d(all parameters) from torch.autograd.functional.jacobian: [N, M, O, O]."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def outputs(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(theta, [s.numel() for s in shapes])
        params = {n: piece.view(s) for n, piece, s in zip(names, pieces, shapes, strict=True)}
        return functional_call(model, params, (x,))

    jac1 = torch.autograd.functional.jacobian(lambda t: outputs(t, x1), flat)  # [N, O, P]
    jac2 = torch.autograd.functional.jacobian(lambda t: outputs(t, x2), flat)
    n, o, p = jac1.shape
    m = jac2.shape[0]
    gram = jac1.reshape(n * o, p) @ jac2.reshape(m * o, p).T
    return gram.reshape(n, o, m, o).permute(0, 2, 1, 3)


def test_linear_model_ntk_is_inner_product_plus_one_times_identity() -> None:
    torch.manual_seed(1)
    model = nn.Linear(4, 3).to(DTYPE)
    x1, x2 = inputs(5, 1), inputs(6, 2)
    expected = (x1 @ x2.T + 1)[:, :, None, None] * torch.eye(3, dtype=DTYPE)
    torch.testing.assert_close(empirical_ntk(model, x1, x2), expected, rtol=0, atol=1e-12)


def test_frozen_parameters_are_left_out() -> None:
    """With the weight frozen, only the bias counts: Theta(x, x') = I for every pair."""
    torch.manual_seed(1)
    model = nn.Linear(4, 3).to(DTYPE)
    model.weight.requires_grad_(False)
    kernel = empirical_ntk(model, inputs(5, 1), inputs(2, 2))
    torch.testing.assert_close(kernel, torch.eye(3, dtype=DTYPE).expand(5, 2, 3, 3), rtol=0, atol=0)


def test_mlp_ntk_equals_autograd_jacobian_product() -> None:
    model = make_mlp()
    x1, x2 = inputs(5, 1), inputs(4, 2)
    expected = ntk_by_autograd_jacobian(model, x1, x2)
    torch.testing.assert_close(empirical_ntk(model, x1, x2), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(empirical_ntk(model, x1), ntk_by_autograd_jacobian(model, x1, x1), rtol=0, atol=1e-12)


def test_modes_agree_with_the_full_kernel() -> None:
    model = make_mlp()
    x1, x2 = inputs(5, 1), inputs(4, 2)
    full = empirical_ntk(model, x1, x2, mode="full")
    diagonal = empirical_ntk(model, x1, x2, mode="diagonal")
    trace = empirical_ntk(model, x1, x2, mode="trace")
    assert full.shape == (5, 4, 3, 3) and diagonal.shape == (5, 4, 3) and trace.shape == (5, 4)
    torch.testing.assert_close(diagonal, torch.diagonal(full, dim1=2, dim2=3), rtol=0, atol=1e-12)
    torch.testing.assert_close(trace, torch.einsum("nmaa->nm", full), rtol=0, atol=1e-12)


def test_kernel_is_symmetric_and_positive_semidefinite() -> None:
    model = make_mlp()
    x1, x2 = inputs(6, 1), inputs(4, 2)
    gram = empirical_ntk(model, x1).permute(0, 2, 1, 3).reshape(18, 18)
    torch.testing.assert_close(gram, gram.T, rtol=0, atol=1e-12)
    eigenvalues = torch.linalg.eigvalsh(gram)
    assert eigenvalues.min() >= -1e-10 * eigenvalues.max()
    swapped = empirical_ntk(model, x2, x1).permute(1, 0, 3, 2)
    torch.testing.assert_close(empirical_ntk(model, x1, x2), swapped, rtol=0, atol=1e-12)


def test_ntk_leaves_parameters_and_grads_alone() -> None:
    model = make_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    kernel = empirical_ntk(model, inputs(3, 1))
    assert not kernel.requires_grad
    for p, p0 in zip(model.parameters(), before, strict=True):
        assert p.grad is None and torch.equal(p, p0)


def test_drift_is_relative_frobenius_change() -> None:
    a = torch.randn(3, 3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    assert ntk_drift(a, a) == 0.0
    assert ntk_drift(a, 2 * a) == pytest.approx(1.0, abs=1e-15)
    b = a.clone()
    b[0, 0, 0, 0] += 3.0
    assert ntk_drift(a, b) == pytest.approx(3.0 / torch.linalg.vector_norm(a).item(), rel=1e-14)


def test_tracker_drift_zero_without_training_positive_after() -> None:
    model = make_mlp()
    tracker = NTKTracker(model, inputs(4, 1))
    tracker.record(0)
    tracker.record(1)  # no training in between
    x, y = inputs(16, 3), torch.randn(16, 3, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    tracker.record(21)
    steps, drifts = zip(*tracker.drift(), strict=True)
    assert steps == (0, 1, 21)
    assert drifts[0] == 0.0 and drifts[1] == 0.0
    assert drifts[2] > 1e-3
    assert drifts[2] == pytest.approx(ntk_drift(tracker.kernels[0], empirical_ntk(model, tracker.probe_inputs)))


def test_bad_arguments_raise_value_error() -> None:
    model = make_mlp()
    with pytest.raises(ValueError, match="mode must be one of full, trace, diagonal"):
        empirical_ntk(model, inputs(2, 1), mode="block")
    with pytest.raises(ValueError, match="mode"):
        NTKTracker(model, inputs(2, 1), mode="eigen")
    with pytest.raises(ValueError, match="same shape"):
        ntk_drift(torch.ones(2, 2), torch.ones(3, 3))
    with pytest.raises(ValueError, match="non-zero"):
        ntk_drift(torch.zeros(2, 2), torch.ones(2, 2))
    tracker = NTKTracker(model, inputs(2, 1))
    with pytest.raises(ValueError, match="record"):
        tracker.drift()
    tracker.record(5)
    with pytest.raises(ValueError, match="step must increase"):
        tracker.record(5)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters that require grad"):
        empirical_ntk(frozen, torch.ones(1, 2))
