"""Sophia and AdaHessian on hand-computed cases: the clipped update, the refresh schedule, spatial averaging, and
the errors that say what a curvature optimizer needs from its caller."""

from __future__ import annotations

import pytest
import torch

from optarena import optim
from optarena.optim.adahessian import spatially_averaged


def _param(values) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))


def test_sophia_clips_where_the_curvature_is_small_negative_or_zero() -> None:
    # beta1 = 0: m = g. h = (1 - beta2) * estimate after the first refresh.
    p = _param([0.0, 0.0, 0.0, 0.0])
    opt = optim.create("sophia_g", [p], lr=0.1, beta1=0.0, beta2=0.5, rho=1.0, eps=1e-12, weight_decay=0.0)
    p.grad = torch.tensor([0.01, 1.0, -0.5, 0.3], dtype=torch.float64)
    estimate = torch.tensor([2.0, 2.0, -4.0, 0.0], dtype=torch.float64)  # h = [1, 1, -2, 0]
    opt.step(hessian=[estimate])
    # m / max(h, eps): 0.01 (unclipped), 1 (at the clip), -0.5 / eps -> -1, 0.3 / eps -> 1
    torch.testing.assert_close(p.detach(), torch.tensor([-0.001, -0.1, 0.1, -0.1], dtype=torch.float64))


def test_sophia_refreshes_at_steps_1_k_plus_1_and_keeps_h_in_between() -> None:
    p = _param([1.0])
    opt = optim.create("sophia_g", [p], lr=0.1, beta2=0.5, update_period=3, weight_decay=0.0)
    due = []
    for step in range(7):
        due.append(opt.curvature_due)
        p.grad = torch.tensor([0.1], dtype=torch.float64)
        opt.step(hessian=[torch.tensor([float(step + 1)], dtype=torch.float64)] if opt.curvature_due else None)
    assert due == [True, False, False, True, False, False, True]
    # refreshed with estimates 1, 4, 7: h = 0.5 * (0.5 * (0.5 * 1) + 0.5 * 4) ... exactly
    h = 0.0
    for estimate in (1.0, 4.0, 7.0):
        h = 0.5 * h + 0.5 * estimate
    assert opt.state[p]["hessian"].item() == pytest.approx(h, rel=1e-15)


def test_sophia_without_curvature_is_sign_momentum_with_decoupled_decay() -> None:
    p = _param([1.0, -2.0])
    opt = optim.create("sophia_g", [p], lr=0.01, beta1=0.5, weight_decay=0.1, update_period=1000)
    p.grad = torch.tensor([0.3, -0.2], dtype=torch.float64)
    opt.step(hessian=[torch.zeros(2, dtype=torch.float64)])  # h = 0: every coordinate clipped
    expected = torch.tensor([1.0, -2.0], dtype=torch.float64) * (1 - 0.01 * 0.1) - 0.01 * torch.tensor([1.0, -1.0])
    torch.testing.assert_close(p.detach(), expected.double())


def test_adahessian_with_a_constant_estimate_follows_the_closed_form() -> None:
    # For a constant D and gradient g, v_t / (1 - beta2^t) = D^2 and m_t / (1 - beta1^t) = g at every t, so
    # theta_t = theta_0 - t * lr * g / (|D|^k + eps).
    p = _param([1.0, 2.0])
    g = torch.tensor([0.5, -1.0], dtype=torch.float64)
    d = torch.tensor([2.0, -4.0], dtype=torch.float64)
    opt = optim.create("adahessian", [p], lr=0.1, eps=1e-4, hessian_power=0.5)
    for _ in range(5):
        p.grad = g.clone()
        opt.step(lambda: None, hessian=[d])
    expected = torch.tensor([1.0, 2.0], dtype=torch.float64) - 5 * 0.1 * g / (d.abs() ** 0.5 + 1e-4)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=0)


def test_spatial_averaging_averages_each_kernel_and_leaves_matrices_alone() -> None:
    kernel = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2)
    averaged = spatially_averaged(kernel)
    assert averaged.shape == kernel.shape
    torch.testing.assert_close(averaged[1, 2], torch.full((2, 2), kernel[1, 2].mean().item(), dtype=torch.float64))
    matrix = torch.randn(3, 4, dtype=torch.float64)
    assert spatially_averaged(matrix) is matrix


def test_adahessian_averages_the_signed_estimate_over_a_kernel() -> None:
    p = torch.nn.Parameter(torch.zeros(1, 1, 1, 2, dtype=torch.float64))
    opt = optim.create("adahessian", [p], lr=1.0, beta1=0.0, beta2=0.0, eps=0.0)
    p.grad = torch.ones_like(p)
    opt.step(lambda: None, hessian=[torch.tensor([[[[2.0, -6.0]]]], dtype=torch.float64)])
    # averaged D = -2 on both entries: v = 4, step = g / |D| = 0.5 (|D| averaged would give 4 and 0.25)
    torch.testing.assert_close(p.detach(), torch.full_like(p, -0.5))


def test_hutchinson_kind_requires_a_closure_and_says_how() -> None:
    p = _param([1.0])
    opt = optim.create("sophia_h", [p])
    p.grad = torch.tensor([1.0], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="requires a closure.*create_graph"):
        opt.step()


def test_a_closure_without_create_graph_is_named() -> None:
    p = _param([1.0, 2.0])
    opt = optim.create("adahessian", [p])

    def closure():
        opt.zero_grad()
        loss = (p**4).sum()
        loss.backward()  # no create_graph: nothing to differentiate again
        return loss

    with pytest.raises(RuntimeError, match="create_graph"):
        opt.step(closure)


def test_external_estimator_needs_the_estimate_on_refresh_steps() -> None:
    p = _param([1.0])
    opt = optim.create("sophia_g", [p])
    p.grad = torch.tensor([1.0], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="gnb_diagonal"):
        opt.step()
    with pytest.raises(ValueError, match="one tensor per parameter"):
        opt.step(hessian=[])
    opt.step(hessian=[torch.ones(1, dtype=torch.float64)])
    with pytest.raises(ValueError, match="does not refresh"):
        opt.step(hessian=[torch.ones(1, dtype=torch.float64)])


def test_own_hutchinson_estimate_is_exact_for_a_separable_quadratic() -> None:
    # f = sum(a * p^2) / 2: H = diag(a), and z * (H z) = a for any Rademacher z; with beta2 = 0, v = a^2.
    a = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    p = _param([1.0, 1.0, 1.0])
    opt = optim.create("adahessian", [p], beta2=0.0)

    def closure():
        opt.zero_grad()
        loss = 0.5 * (a * p * p).sum()
        loss.backward(create_graph=opt.curvature_due)
        return loss

    opt.step(closure)
    torch.testing.assert_close(opt.state[p]["exp_hessian_diag_sq"], a * a)
    assert p.grad.grad_fn is None  # the gradient's graph is released after the step
