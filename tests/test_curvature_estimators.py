"""Hutchinson's diagonal / trace estimators and the Gauss-Newton-Bartlett estimator against exact expectations:
enumeration of every Rademacher probe, and of every sampled label vector weighted by its probability."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.func import jacrev

from optarena.curvature import (
    gaussian_like,
    gnb_diagonal,
    hutchinson_diagonal,
    hutchinson_trace,
    hvp,
    rademacher_like,
)

TOL = {"rtol": 1e-12, "atol": 1e-12}
SHAPES = [(2, 3), (4,)]  # n = 10 coordinates over two tensors


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def split_like(vector: torch.Tensor, like) -> list[torch.Tensor]:
    return [chunk.view_as(t) for chunk, t in zip(vector.split([t.numel() for t in like]), like, strict=True)]


def symmetric_matrix(n: int, seed: int = 0) -> torch.Tensor:
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a + a.T


def matrix_hvp(a: torch.Tensor, like):
    return lambda z: split_like(a @ flat(z), like)


# --- Hutchinson ---------------------------------------------------------------------------------------------------


def test_all_rademacher_probes_give_the_exact_diagonal_and_trace() -> None:
    like = [torch.zeros(shape, dtype=torch.float64) for shape in SHAPES]
    a = symmetric_matrix(10)
    probes = [
        split_like(torch.tensor(signs, dtype=torch.float64), like) for signs in itertools.product((-1, 1), repeat=10)
    ]
    assert len(probes) == 2**10
    diagonal = hutchinson_diagonal(matrix_hvp(a, like), like, probes=probes)
    torch.testing.assert_close(flat(diagonal), torch.diagonal(a), **TOL)
    assert [d.shape for d in diagonal] == [torch.Size(s) for s in SHAPES]
    trace = hutchinson_trace(matrix_hvp(a, like), like, probes=probes, samples=len(probes))
    assert trace == pytest.approx(float(torch.trace(a)), rel=1e-12, abs=1e-12)


def test_one_rademacher_probe_is_exact_for_a_diagonal_hessian() -> None:
    """loss = sum_i d_i x_i^2 / 2 has H = diag(d): z ⊙ (H z) = z^2 d = d for z = ±1; z^T H z = tr(H)."""
    generator = torch.Generator().manual_seed(3)
    params = [torch.randn(s, generator=generator, dtype=torch.float64).requires_grad_(True) for s in SHAPES]
    curvatures = [torch.rand(s, generator=generator, dtype=torch.float64) * 4 - 1 for s in SHAPES]
    loss = sum((0.5 * d * p * p).sum() for d, p in zip(curvatures, params, strict=True))
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def hvp_fn(z):
        return torch.autograd.grad(grads, params, grad_outputs=z, retain_graph=True)

    diagonal = hutchinson_diagonal(hvp_fn, params, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flat(diagonal), flat(curvatures), **TOL)
    trace = hutchinson_trace(hvp_fn, params, generator=torch.Generator().manual_seed(0))
    assert trace == pytest.approx(float(flat(curvatures).sum()), rel=1e-12)
    assert all(not d.requires_grad for d in diagonal)


def test_mean_over_samples_matches_the_given_probes() -> None:
    like = [torch.zeros(shape, dtype=torch.float64) for shape in SHAPES]
    a = symmetric_matrix(10, seed=1)
    generator = torch.Generator().manual_seed(5)
    probes = [gaussian_like(like, generator) for _ in range(3)]
    expected = sum(flat(z) * (a @ flat(z)) for z in probes) / 3
    diagonal = hutchinson_diagonal(matrix_hvp(a, like), like, samples=3, probes=probes)
    torch.testing.assert_close(flat(diagonal), expected, **TOL)


def test_the_generator_draws_probes_in_tensor_order() -> None:
    like = [torch.zeros(shape, dtype=torch.float32) for shape in SHAPES]
    a = symmetric_matrix(10, seed=2).float()
    drawn = hutchinson_diagonal(
        matrix_hvp(a, like), like, samples=2, distribution="gaussian", generator=torch.Generator().manual_seed(9)
    )
    generator = torch.Generator().manual_seed(9)
    probes = [[torch.randn(s, generator=generator) for s in SHAPES] for _ in range(2)]
    torch.testing.assert_close(flat(drawn), flat(hutchinson_diagonal(matrix_hvp(a, like), like, probes=probes)))

    generator = torch.Generator().manual_seed(9)
    signs = rademacher_like(like, generator)
    generator = torch.Generator().manual_seed(9)
    bits = [torch.randint(0, 2, s, generator=generator) for s in SHAPES]
    for sign, bit, tensor in zip(signs, bits, like, strict=True):
        assert sign.dtype == tensor.dtype and sign.shape == tensor.shape
        torch.testing.assert_close(sign, (2 * bit - 1).float(), rtol=0, atol=0)


def test_probe_distributions() -> None:
    """Rademacher entries are ±1 with frequency 1/2; Gaussian entries have mean 0 and variance 1 (5 sigma)."""
    like = [torch.zeros(100_000, dtype=torch.float64)]
    signs = rademacher_like(like, torch.Generator().manual_seed(0))[0]
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(signs.mean())) < 5 / math.sqrt(1e5)
    normal = gaussian_like(like, torch.Generator().manual_seed(0))[0]
    assert abs(float(normal.mean())) < 5 / math.sqrt(1e5)
    assert abs(float(normal.var()) - 1) < 5 * math.sqrt(2 / 1e5)


def test_gaussian_probes_estimate_a_diagonal_hessian_without_bias() -> None:
    """For diagonal H, u ⊙ (H u) = u^2 d: mean d, standard deviation sqrt(2) |d| per probe (Sophia-H's probes)."""
    d = torch.tensor([3.0, -2.0, 0.5, 1.0], dtype=torch.float64)
    samples = 4000
    estimate = hutchinson_diagonal(
        lambda z: [d * z[0]], [d], samples=samples, distribution="gaussian", generator=torch.Generator().manual_seed(1)
    )[0]
    assert torch.all((estimate - d).abs() < 5 * math.sqrt(2 / samples) * d.abs())
    one = hutchinson_diagonal(lambda z: [d * z[0]], [d], distribution="gaussian", generator=torch.Generator())[0]
    assert not torch.allclose(one, d)  # one Gaussian probe is not exact, unlike a Rademacher one


def test_hutchinson_on_autograd_hvp_of_a_quadratic() -> None:
    """All 2^n probes through the real double-backward HVP of 0.5 x^T A x (n = 10) give diag(A)."""
    a = symmetric_matrix(10, seed=4)
    params = [torch.randn(s, dtype=torch.float64).requires_grad_(True) for s in SHAPES]
    x = flat(params)
    loss = 0.5 * x @ a @ x
    probes = [split_like(torch.tensor(s, dtype=torch.float64), params) for s in itertools.product((-1, 1), repeat=10)]
    diagonal = hutchinson_diagonal(lambda z: hvp(loss, params, z), params, probes=probes)
    torch.testing.assert_close(flat(diagonal), torch.diagonal(a), **TOL)


def test_hutchinson_rejects_bad_arguments() -> None:
    like = [torch.zeros(3, dtype=torch.float64)]

    def identity(z):
        return z

    with pytest.raises(ValueError, match="distribution"):
        hutchinson_diagonal(identity, like, distribution="uniform")
    with pytest.raises(ValueError, match="samples"):
        hutchinson_diagonal(identity, like, samples=0)
    with pytest.raises(ValueError, match="samples"):
        hutchinson_trace(identity, like, samples=2.5)
    with pytest.raises(ValueError, match="probes"):
        hutchinson_diagonal(identity, like, samples=3, probes=[[torch.ones(3)]] * 2)
    with pytest.raises(ValueError, match="probe list"):
        hutchinson_diagonal(identity, like, probes=[[torch.ones(4)]])
    with pytest.raises(ValueError, match="hvp_fn"):
        hutchinson_diagonal(lambda z: [torch.ones(2)], like)


# --- Gauss-Newton-Bartlett ----------------------------------------------------------------------------------------


def tiny_model(out_features: int, seed: int = 0):
    """A 2 -> 3 -> out tanh network with its parameters as leaf tensors, and its outputs on 3 fixed inputs."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(3, 2), (3,), (out_features, 3)]
    params = [torch.randn(s, generator=generator, dtype=torch.float64).requires_grad_(True) for s in shapes]
    inputs = torch.randn(3, 2, generator=generator, dtype=torch.float64)

    def forward(w1, b1, w2):
        return torch.tanh(inputs @ w1.T + b1) @ w2.T

    jacobians = jacrev(lambda theta: forward(*split_like(theta, params)))(flat(params).detach())  # [B, C, D]
    return params, forward, jacobians


def test_gnb_expectation_over_all_label_vectors_is_the_gauss_newton_diagonal() -> None:
    """B = 3 rows, C = 4 classes: sum over the 4^3 label vectors, weighted by prod_b p_b(y_b), of the estimate
    equals diag((1/B) sum_b J_b^T (diag(p_b) - p_b p_b^T) J_b)."""
    params, forward, jacobians = tiny_model(4)
    logits = forward(*params)
    probs = torch.softmax(logits.detach(), dim=-1)
    batch, classes = probs.shape
    expectation = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    total_weight = 0.0
    for labels in itertools.product(range(classes), repeat=batch):
        weight = float(torch.prod(probs[torch.arange(batch), torch.tensor(labels)]))
        total_weight += weight
        expectation += weight * flat(gnb_diagonal(logits, params, targets=torch.tensor(labels)))
    gauss_newton = (
        sum(j.T @ (torch.diag(p) - torch.outer(p, p)) @ j for j, p in zip(jacobians, probs, strict=True)) / batch
    )
    assert total_weight == pytest.approx(1.0, abs=1e-14)
    torch.testing.assert_close(expectation, torch.diagonal(gauss_newton), **TOL)
    assert all(p.grad is None for p in params)  # .grad untouched


def test_gnb_gaussian_expectation_in_closed_form() -> None:
    """g_hat is linear in the noise n ~ N(0, I_{B x D}), so E[g_hat_i^2] = sum over the unit noise vectors e of
    g_hat(e)_i^2: the sum of the estimates at targets f + sqrt(variance) e equals diag((1/B) sum_b J_b^T J_b) / var."""
    params, forward, jacobians = tiny_model(2, seed=1)
    outputs = forward(*params)
    variance = 0.3
    expectation = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    for index in range(outputs.numel()):
        unit = torch.zeros(outputs.numel(), dtype=torch.float64)
        unit[index] = 1.0
        targets = outputs.detach() + math.sqrt(variance) * unit.view_as(outputs)
        expectation += flat(gnb_diagonal(outputs, params, likelihood="gaussian", variance=variance, targets=targets))
    gauss_newton = sum(j.T @ j for j in jacobians) / (outputs.shape[0] * variance)
    torch.testing.assert_close(expectation, torch.diagonal(gauss_newton), **TOL)


def test_gnb_samples_labels_from_the_softmax_with_the_generator() -> None:
    params, forward, _ = tiny_model(4)
    logits = forward(*params)
    drawn = gnb_diagonal(logits, params, generator=torch.Generator().manual_seed(11))
    labels = torch.multinomial(torch.softmax(logits.detach(), -1), 1, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(flat(drawn), flat(gnb_diagonal(logits, params, targets=labels.squeeze(1))), **TOL)

    params, forward, _ = tiny_model(2)
    outputs = forward(*params)
    noise = torch.randn(outputs.shape, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    drawn = gnb_diagonal(
        outputs, params, likelihood="gaussian", variance=2.0, generator=torch.Generator().manual_seed(12)
    )
    targets = outputs.detach() + math.sqrt(2.0) * noise
    given = gnb_diagonal(outputs, params, likelihood="gaussian", variance=2.0, targets=targets)
    torch.testing.assert_close(flat(drawn), flat(given), **TOL)


def test_gnb_is_b_times_the_squared_gradient_and_flattens_leading_dims() -> None:
    """Logits [2, 3, C]: B = 6 rows; the estimate is 6 g ⊙ g with g the gradient of the mean sampled-label loss.
    The caller's graph survives and `.grad` stays None."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 4, generator=generator, dtype=torch.float64).requires_grad_(True)
    unused = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    inputs = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    logits = inputs @ weight.T
    labels = torch.randint(0, 5, (2, 3), generator=generator)
    estimate, zeros = gnb_diagonal(logits, [weight, unused], targets=labels)
    loss = torch.nn.functional.cross_entropy(logits.reshape(6, 5), labels.reshape(6))
    (gradient,) = torch.autograd.grad(loss, weight, retain_graph=True)
    torch.testing.assert_close(estimate, 6 * gradient * gradient, **TOL)
    torch.testing.assert_close(zeros, torch.zeros(2, dtype=torch.float64), rtol=0, atol=0)
    assert weight.grad is None
    logits.sum().backward()  # graph still alive
    torch.testing.assert_close(weight.grad, inputs.reshape(6, 4).sum(0).expand(5, 4), **TOL)


def test_gnb_rejects_bad_arguments() -> None:
    params, forward, _ = tiny_model(3)
    logits = forward(*params)
    with pytest.raises(ValueError, match="likelihood"):
        gnb_diagonal(logits, params, likelihood="poisson")
    with pytest.raises(ValueError, match="variance"):
        gnb_diagonal(logits, params, likelihood="gaussian", variance=0.0)
    with pytest.raises(ValueError, match="targets"):
        gnb_diagonal(logits, params, targets=torch.zeros(4, dtype=torch.long))
    with pytest.raises(RuntimeError, match="graph"):
        gnb_diagonal(logits.detach(), params)
