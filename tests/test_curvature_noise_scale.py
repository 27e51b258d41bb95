"""The gradient noise scale (arXiv:1812.06162, Appendix A): the two-batch estimators are unbiased, shown by
enumerating every with-replacement batch of a finite population of per-example gradients, in float64."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optarena.curvature import (
    GradientNoiseScale,
    noise_scale_from_per_example,
    per_example_grads,
    squared_grad_norm,
    unbiased_noise_estimates,
)


def population(n: int = 4, dim: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def true_moments(grads: torch.Tensor) -> tuple[float, float]:
    """|G|^2 and tr(Sigma) of the uniform distribution over the rows (population covariance, divisor N)."""
    mean = grads.mean(dim=0)
    return float(mean @ mean), float((grads - mean).square().sum(dim=1).mean())


@pytest.mark.parametrize(("b_small", "b_big"), [(1, 2), (2, 3)])
def test_estimates_average_to_the_true_moments_over_all_batches(b_small: int, b_big: int) -> None:
    """N = 4 examples; every ordered with-replacement small batch paired with every big batch (4 x 16 pairs for
    (1, 2), 16 x 64 for (2, 3)), each equally likely: the mean estimate is exactly |G|^2 and tr(Sigma)."""
    grads = population()
    g_squared, trace_sigma = true_moments(grads)

    def sq_norms(size: int) -> list[float]:
        return [
            squared_grad_norm([grads[list(batch)].mean(dim=0)]) for batch in itertools.product(range(4), repeat=size)
        ]

    small, big = sq_norms(b_small), sq_norms(b_big)
    assert (len(small), len(big)) == (4**b_small, 4**b_big)
    estimates = [unbiased_noise_estimates(s, b, b_small, b_big) for s, b in itertools.product(small, big)]
    assert sum(e[0] for e in estimates) / len(estimates) == pytest.approx(g_squared, rel=1e-12, abs=1e-12)
    assert sum(e[1] for e in estimates) / len(estimates) == pytest.approx(trace_sigma, rel=1e-12, abs=1e-12)
    assert trace_sigma > 0 and g_squared > 0


def test_unbiased_estimates_on_hand_values() -> None:
    # |G_1|^2 = 5, |G_4|^2 = 2: |G|^2 = (4*2 - 5) / 3 = 1, tr(Sigma) = (5 - 2) / (1 - 1/4) = 4
    assert unbiased_noise_estimates(5.0, 2.0, 1, 4) == pytest.approx((1.0, 4.0), rel=1e-15)


def test_gradient_noise_scale_keeps_two_bias_corrected_averages() -> None:
    scale = GradientNoiseScale(beta=0.9)
    assert math.isnan(scale.simple) and math.isnan(scale.g_squared)
    inputs = [(5.0, 2.0, 1, 4), (3.0, 2.5, 2, 8), (7.0, 1.0, 1, 2)]
    estimates = [unbiased_noise_estimates(*x) for x in inputs]
    g_avg = s_avg = 0.0
    for t, ((g, s), x) in enumerate(zip(estimates, inputs, strict=True), start=1):
        scale.update(*x)
        g_avg, s_avg = 0.9 * g_avg + 0.1 * g, 0.9 * s_avg + 0.1 * s
        assert scale.g_squared == pytest.approx(g_avg / (1 - 0.9**t), rel=1e-14)
        assert scale.trace_sigma == pytest.approx(s_avg / (1 - 0.9**t), rel=1e-14)
        assert scale.simple == pytest.approx(s_avg / g_avg, rel=1e-14)  # not the mean of the ratios
    assert scale.simple != pytest.approx(sum(s / g for g, s in estimates) / 3, rel=1e-3)


def test_constant_inputs_give_the_exact_ratio_from_the_first_update() -> None:
    scale = GradientNoiseScale()
    for _ in range(3):
        scale.update(5.0, 2.0, 1, 4)
        assert scale.simple == pytest.approx(4.0, rel=1e-12)  # tr(Sigma) 4 / |G|^2 1


def per_example_direct(samples: list[torch.Tensor]) -> float:
    """tr(Sigma) with Bessel's correction over |G|^2 = |mean|^2 - tr(Sigma) / B, written out directly."""
    flat = torch.cat([s.reshape(s.shape[0], -1) for s in samples], dim=1)
    batch = flat.shape[0]
    mean = flat.mean(dim=0)
    trace_sigma = float((flat - mean).square().sum()) / (batch - 1)
    return trace_sigma / (float(mean @ mean) - trace_sigma / batch)


def test_noise_scale_from_per_example_matches_the_direct_formula() -> None:
    generator = torch.Generator().manual_seed(1)
    samples = [torch.randn(6, 2, 3, generator=generator, dtype=torch.float64) + 0.5, torch.randn(6, 4).double()]
    assert noise_scale_from_per_example(samples) == pytest.approx(per_example_direct(samples), rel=1e-12)


def test_noise_scale_from_per_example_gradients_of_a_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    generator = torch.Generator().manual_seed(0)
    batch = (
        torch.randn(8, 3, generator=generator, dtype=torch.float64),
        torch.randint(0, 2, (8,), generator=generator),
    )

    def loss_fn(m: nn.Module, b) -> torch.Tensor:
        return F.cross_entropy(m(b[0]), b[1])

    per_example_grads(model, loss_fn, batch)
    samples = [p.grad_sample for p in model.parameters()]
    assert noise_scale_from_per_example(samples) == pytest.approx(per_example_direct(samples), rel=1e-12)
    # the per-example mean is the batch gradient: |G_big|^2 is the squared norm of .grad
    flat = torch.cat([s.reshape(8, -1) for s in samples], dim=1)
    assert squared_grad_norm([p.grad for p in model.parameters()]) == pytest.approx(
        float(flat.mean(0).square().sum()), rel=1e-12
    )


def test_squared_grad_norm() -> None:
    tensors = [torch.tensor([3.0, 4.0]), None, torch.tensor([[1.0], [2.0]], dtype=torch.float64)]
    assert squared_grad_norm(tensors) == 30.0
    assert squared_grad_norm([]) == 0.0


def test_noise_scale_rejects_bad_arguments() -> None:
    for beta in (1.0, -0.1, float("nan"), 1.5):
        with pytest.raises(ValueError, match="beta"):
            GradientNoiseScale(beta=beta)
    with pytest.raises(ValueError, match="b_big"):
        unbiased_noise_estimates(1.0, 1.0, 4, 4)
    with pytest.raises(ValueError, match="b_small"):
        unbiased_noise_estimates(1.0, 1.0, 0, 4)
    with pytest.raises(ValueError, match="b_small"):
        GradientNoiseScale().update(1.0, 1.0, 1.5, 4)
    with pytest.raises(ValueError, match="grad_samples"):
        noise_scale_from_per_example([torch.zeros(1, 3)])
    with pytest.raises(ValueError, match="grad_samples"):
        noise_scale_from_per_example([torch.zeros(3, 3), torch.zeros(4, 2)])
