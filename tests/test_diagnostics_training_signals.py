"""Training signals against exact answers: sharpness of models with a known or densely computed Hessian, stability
thresholds against the optimizers' own behaviour, B_simple against per-example gradients taken one by one, and
opposing signals on a hand-built pair of opposed examples."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian
from torch.nn import functional as F

from optarena.diagnostics.training_signals import (
    OpposingSignals,
    adam_preconditioner,
    gradient_cosine,
    loss_changes,
    noise_scale,
    per_example_losses,
    sharpness,
    stability_thresholds,
)


class Quadratic(nn.Module):
    """loss = w^T A w / 2 (the batch is ignored): the Hessian is A."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = matrix
        self.w = nn.Parameter(torch.linspace(-1.0, 1.0, matrix.shape[0], dtype=torch.float64))


def quadratic_loss(model: Quadratic, batch: object) -> torch.Tensor:
    return 0.5 * model.w @ model.matrix @ model.w


def matrix_with_spectrum(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(
            len(eigenvalues), len(eigenvalues), dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
        )
    )
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def classification_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def classification_batch(size: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, dtype=torch.float64, generator=generator), torch.randint(
        0, 3, (size,), generator=generator
    )


def test_sharpness_of_a_quadratic_is_its_largest_eigenvalue() -> None:
    spectrum = [-3.0, 0.5, 1.0, 2.0, 5.0, 7.25]
    model = Quadratic(matrix_with_spectrum(spectrum))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    values = sharpness(model, quadratic_loss, None, optimizer, iterations=6, generator=torch.Generator().manual_seed(0))
    assert values["sharpness"] == pytest.approx(7.25, rel=1e-12)
    assert values["rule"] == "heavy_ball" and values["exact"] and values["threshold"] == pytest.approx(38.0, rel=1e-12)
    assert values["preconditioned_sharpness"] is None and values["iterations"] == 6


def test_sharpness_of_a_network_matches_its_dense_hessian() -> None:
    model, batch = mlp(), classification_batch()
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of_flat(vector: torch.Tensor) -> torch.Tensor:
        pieces = vector.split([math.prod(s) for s in shapes])
        params = {n: piece.view(s) for n, piece, s in zip(names, pieces, shapes, strict=True)}
        return classification_loss(lambda x: functional_call(model, params, (x,)), batch)

    dense = hessian(loss_of_flat)(flat)
    expected = torch.linalg.eigvalsh(dense).max()
    values = sharpness(model, classification_loss, batch, iterations=flat.numel(), generator=torch.Generator())
    assert values["sharpness"] == pytest.approx(float(expected), rel=1e-10)
    assert all(p.grad is None for p in model.parameters())


def _distance_after(optimizer_factory, curvature: float, steps: int, start: float = 1.0) -> list[float]:
    x = torch.tensor([start], dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_factory([x])
    distances = []
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * curvature * x.square()).sum().backward()
        optimizer.step()
        distances.append(abs(x.item()))
    return distances


@pytest.mark.parametrize(
    "options, rule, expected",
    [
        ({"momentum": 0.0}, "gd", 2 / 0.1),
        ({"momentum": 0.9}, "heavy_ball", (2 + 1.8) / 0.1),
        ({"momentum": 0.9, "nesterov": True}, "nesterov", (2 + 1.8) / (2.8 * 0.1)),
        ({"momentum": 0.5, "dampening": 0.5}, "heavy_ball", 3.0 / (0.5 * 0.1)),
    ],
)
def test_sgd_thresholds_separate_convergence_from_divergence(options: dict, rule: str, expected: float) -> None:
    def factory(params):
        return torch.optim.SGD(params, lr=0.1, **options)

    thresholds = stability_thresholds(factory([torch.zeros(1, requires_grad=True)]))
    assert thresholds["rule"] == rule and thresholds["threshold"] == pytest.approx(expected, rel=1e-12)
    assert _distance_after(factory, 0.99 * expected, 2000)[-1] < 1e-10
    assert _distance_after(factory, 1.01 * expected, 2000)[-1] > 1e10


def test_adam_threshold_separates_convergence_from_divergence_with_a_frozen_preconditioner() -> None:
    # eps far above sqrt(v): P = (1 - beta1^t) eps, frozen once the bias correction is spent, so Adam is EMA-momentum
    # GD at lr / eps; a start near 0 keeps the first steps' large moves far from where sqrt(v) would matter.
    def factory(params):
        return torch.optim.Adam(params, lr=0.5, eps=1e6)

    probe = torch.zeros(1, requires_grad=True)
    optimizer = factory([probe])
    probe.grad = torch.zeros(1)
    optimizer.step()
    thresholds = stability_thresholds(optimizer)
    assert thresholds["rule"] == "adam" and thresholds["threshold"] is None
    assert thresholds["preconditioned_threshold"] == pytest.approx(38 / 0.5, rel=1e-12)  # 38 / lr at beta1 = 0.9
    limit = thresholds["preconditioned_threshold"] * 1e6
    below, above = (_distance_after(factory, f * limit, 2000, start=1e-100) for f in (0.98, 1.02))
    assert below[-1] < 1e-10 * below[199] and above[-1] > 1e10 * above[199]


def test_adam_preconditioner_reproduces_adams_step_and_the_preconditioned_sharpness() -> None:
    model = Quadratic(matrix_with_spectrum([0.5, 1.0, 3.0, 4.0, 9.0]))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-3)
    for _ in range(4):
        optimizer.zero_grad()
        quadratic_loss(model, None).backward()
        optimizer.step()
    optimizer.zero_grad()
    quadratic_loss(model, None).backward()
    before = model.w.detach().clone()
    optimizer.step()
    (diagonal,) = adam_preconditioner(optimizer, [model.w])
    step = model.w.detach() - before
    torch.testing.assert_close(step, -0.01 * optimizer.state[model.w]["exp_avg"] / diagonal, rtol=1e-12, atol=0)

    values = sharpness(model, quadratic_loss, None, optimizer, iterations=5, generator=torch.Generator())
    scale = diagonal.rsqrt()
    expected = torch.linalg.eigvalsh(scale[:, None] * model.matrix * scale[None, :]).max()
    assert values["preconditioned_sharpness"] == pytest.approx(float(expected), rel=1e-10)
    assert values["preconditioned_sharpness"] == pytest.approx(
        float(torch.linalg.eigvals(model.matrix / diagonal[:, None]).real.max()), rel=1e-10
    )
    assert values["preconditioned_threshold"] == pytest.approx((2 + 1.6) / (0.2 * 0.01), rel=1e-12)
    assert values["sharpness"] == pytest.approx(9.0, rel=1e-10)


def test_thresholds_are_none_without_a_learning_rate_or_with_disagreeing_groups() -> None:
    a, b = (torch.zeros(1, requires_grad=True) for _ in range(2))
    assert stability_thresholds(torch.optim.SGD([a], lr=0.0))["threshold"] is None
    mixed = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.2}], lr=0.1)
    assert stability_thresholds(mixed)["rule"] == "mixed" and stability_thresholds(mixed)["threshold"] is None
    assert adam_preconditioner(torch.optim.Adam([a]), [a]) is None  # no state before the first step


def test_rules_say_which_thresholds_are_exact() -> None:
    from optarena import optim

    param = torch.zeros(3, requires_grad=True)
    assert stability_thresholds(torch.optim.SGD([param], lr=0.1))["exact"] is True
    fresh_adam = stability_thresholds(torch.optim.AdamW([param], lr=0.1, betas=(0.5, 0.9)))
    assert fresh_adam["rule"] == "adam" and fresh_adam["exact"] is True  # known before the first step too
    assert fresh_adam["preconditioned_threshold"] == pytest.approx(3.0 / (0.5 * 0.1), rel=1e-12)
    lamb = optim.create("lamb", [param], lr=0.1)
    assert stability_thresholds(lamb)["rule"] == "gd" and stability_thresholds(lamb)["exact"] is False  # no state
    param.grad = torch.ones(3)
    lamb.step()
    assert stability_thresholds(lamb)["rule"] == "adam_like" and stability_thresholds(lamb)["exact"] is False


def test_noise_scale_matches_per_example_gradients_taken_one_by_one() -> None:
    model, batch = mlp(), classification_batch(size=7)
    params = list(model.parameters())
    sentinel = [torch.full_like(p, 3.0) for p in params]
    for p, s in zip(params, sentinel, strict=True):
        p.grad = s
    values = noise_scale(model, classification_loss, batch)
    assert all(p.grad is s for p, s in zip(params, sentinel, strict=True))
    assert not any(hasattr(p, "grad_sample") for p in params)

    grads = torch.stack(
        [
            torch.cat(
                [g.reshape(-1) for g in torch.autograd.grad(classification_loss(model, (x[None], y[None])), params)]
            )
            for x, y in zip(*batch, strict=True)
        ]
    )
    mean = grads.mean(dim=0)
    trace_sigma = (grads - mean).square().sum() / (len(grads) - 1)
    g_squared = mean.square().sum() - trace_sigma / len(grads)
    assert values["batch_size"] == 7
    assert values["trace_sigma"] == pytest.approx(float(trace_sigma), rel=1e-10)
    assert values["g_squared"] == pytest.approx(float(g_squared), rel=1e-10)
    assert values["b_simple"] == pytest.approx(float(trace_sigma / g_squared), rel=1e-10)


def test_per_example_losses_match_a_loop() -> None:
    model, batch = mlp(), classification_batch(size=5)
    expected = torch.stack([classification_loss(model, (x[None], y[None])) for x, y in zip(*batch, strict=True)])
    torch.testing.assert_close(per_example_losses(model, classification_loss, batch), expected.detach())


def test_loss_changes_picks_the_largest_strict_rises_and_falls() -> None:
    previous = torch.ones(6, dtype=torch.float64)
    current = torch.tensor([1.5, 0.2, 1.0, 2.0, 0.9, 1.5], dtype=torch.float64)
    two = loss_changes(previous, current, 2)
    assert [(e["index"], e["delta"]) for e in two["rose"]] == [(3, 1.0), (0, 0.5)]  # tie 0 / 5: lower index first
    assert [e["index"] for e in two["fell"]] == [1, 4]
    assert two["fell"][0]["delta"] == pytest.approx(-0.8) and two["fell"][0]["loss"] == pytest.approx(0.2)
    five = loss_changes(previous, current, 5)
    assert [e["index"] for e in five["rose"]] == [3, 0, 5] and [e["index"] for e in five["fell"]] == [1, 4]
    with pytest.raises(ValueError, match="k must be"):
        loss_changes(previous, current, 0)


class Linear2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def squared_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return (model(batch[0]) - batch[1]).square().mean()


def test_opposing_signals_find_a_hand_built_opposed_pair() -> None:
    # examples 0 and 1 share one feature with opposite targets (opposing signals); example 2 is neutral
    probe = (
        torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
        torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64),
    )
    model = Linear2()
    tracker = OpposingSignals(probe, k=2)
    first = tracker.measure(model, squared_loss)  # losses 1, 1, 0
    assert first["rose"] == first["fell"] == [] and first["gradient_cosine"] is None
    assert first["probe_mean_loss"] == pytest.approx(2 / 3)
    with torch.no_grad():
        model.w.copy_(torch.tensor([0.5, 0.0]))  # losses 0.25, 2.25, 0
    second = tracker.measure(model, squared_loss)
    assert second["rose"] == [{"index": 1, "delta": pytest.approx(1.25), "loss": pytest.approx(2.25)}]
    assert second["fell"] == [{"index": 0, "delta": pytest.approx(-0.75), "loss": pytest.approx(0.25)}]
    # gradients at w = (0.5, 0): example 0: 2 (0.5 - 1) e1 = -e1, example 1: 2 (0.5 + 1) e1 = 3 e1: opposed
    assert second["gradient_cosine"] == pytest.approx(-1.0, abs=1e-12)
    assert second["probe_size"] == 3


def test_gradient_cosine_matches_a_direct_computation() -> None:
    model = mlp()
    first, second = classification_batch(4, seed=2), classification_batch(3, seed=3)
    params = list(model.parameters())
    a, b = (
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(classification_loss(model, batch), params)])
        for batch in (first, second)
    )
    expected = torch.dot(a, b) / (a.norm() * b.norm())
    assert gradient_cosine(model, classification_loss, first, second) == pytest.approx(float(expected), rel=1e-12)
