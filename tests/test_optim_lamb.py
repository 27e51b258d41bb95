"""LAMB beyond the shared matrix: the trust ratio on its own, a hand-computed step, Algorithm 2 written out, the
layer-wise step length it guarantees, and how pytorch-optimizer's default departs from the paper."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from optarena.optim.lamb import Lamb, trust_ratio


def test_trust_ratio_values_clamps_and_zero_norms() -> None:
    weight = torch.tensor([2.0, 0.0, 3.0, 50.0, 0.01])
    update = torch.tensor([4.0, 1.0, 0.0, 5.0, 1.0])
    torch.testing.assert_close(trust_ratio(weight, update), torch.tensor([0.5, 1.0, 1.0, 10.0, 0.01]))
    clamped = trust_ratio(weight, update, phi_min=0.1, phi_max=10.0)
    torch.testing.assert_close(clamped, torch.tensor([0.5, 1.0, 1.0, 2.0, 0.1]))
    with_eps = trust_ratio(torch.tensor(2.0), torch.tensor(4.0), eps=1.0)
    torch.testing.assert_close(with_eps, torch.tensor(0.4))


def test_first_step_by_hand() -> None:
    # Step 1 with bias correction: r = g / (|g| + eps); u = r + lambda x; x -= lr ||x|| / ||u|| u.
    x0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    g = torch.tensor([[0.3, 0.1], [-0.2, 0.4]], dtype=torch.float64)
    param = nn.Parameter(x0.clone())
    optimizer = Lamb([param], lr=0.1, eps=1e-6, weight_decay=0.01)
    param.grad = g.clone()
    optimizer.step()
    u = g / (g.abs() + 1e-6) + 0.01 * x0
    expected = x0 - 0.1 * x0.norm() / u.norm() * u
    torch.testing.assert_close(param.detach(), expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_each_layer_moves_by_lr_times_its_norm(foreach: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(shape, generator=generator, dtype=torch.float64)) for shape in [(4, 3), (7,)]]
    optimizer = Lamb(params, lr=0.05, foreach=foreach)
    for _ in range(5):
        before = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        optimizer.step()
        for p, b in zip(params, before, strict=True):
            assert math.isclose((p - b).norm().item(), 0.05 * b.norm().item(), rel_tol=1e-12)


def test_zero_parameter_takes_a_plain_step() -> None:
    # ||x|| = 0: the trust ratio is 1 and the step is lr * r (r = sign(g) at step 1, up to eps).
    param = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    optimizer = Lamb([param], lr=0.1, eps=0.0)
    param.grad = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    optimizer.step()
    torch.testing.assert_close(param.detach(), torch.tensor([-0.1, 0.1, -0.1], dtype=torch.float64))


def _algorithm_2(model: nn.Module, batches, lr, beta1, beta2, eps, weight_decay, phi_max) -> None:
    m = {p: torch.zeros_like(p) for p in model.parameters()}
    v = {p: torch.zeros_like(p) for p in model.parameters()}
    for t, (inputs, targets) in enumerate(batches, start=1):
        model.zero_grad()
        nn.functional.mse_loss(model(inputs), targets).backward()
        with torch.no_grad():
            for x in model.parameters():
                m[x] = beta1 * m[x] + (1 - beta1) * x.grad
                v[x] = beta2 * v[x] + (1 - beta2) * x.grad**2
                m_hat, v_hat = m[x] / (1 - beta1**t), v[x] / (1 - beta2**t)
                u = m_hat / (v_hat.sqrt() + eps) + weight_decay * x
                ratio = min(x.norm().item(), phi_max) / u.norm().item()
                x.sub_(lr * ratio * u)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("phi_max", [math.inf, 1.0])
def test_matches_algorithm_2_written_out(foreach: bool, phi_max: float) -> None:
    torch.manual_seed(0)
    ours_model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    written_model = copy.deepcopy(ours_model)
    generator = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(16, 6, generator=generator, dtype=torch.float64),
            torch.randn(16, 3, generator=generator, dtype=torch.float64),
        )
        for _ in range(50)
    ]
    optimizer = Lamb(
        ours_model.parameters(), lr=0.01, beta1=0.9, beta2=0.99, weight_decay=0.1, phi_max=phi_max, foreach=foreach
    )
    for inputs, targets in batches:
        optimizer.zero_grad()
        nn.functional.mse_loss(ours_model(inputs), targets).backward()
        optimizer.step()
    _algorithm_2(written_model, batches, 0.01, 0.9, 0.99, 1e-6, 0.1, phi_max)
    for a, b in zip(ours_model.parameters(), written_model.parameters(), strict=True):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-10


def test_pytorch_optimizer_default_is_not_algorithm_2() -> None:
    """pytorch-optimizer's default Lamb decays x outside the trust ratio and corrects only m, after the ratio;
    the reference harness therefore runs it with weight_decouple=False, adam_debias=True against our
    bias_correction=False, eps_in_trust_ratio=True, phi_max=10 (the paper's v3 update)."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    x0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    g = torch.tensor([[0.3, 0.1], [-0.2, 0.4]], dtype=torch.float64)
    results = {}
    for key, build in {
        "ours": lambda p: Lamb([p], lr=0.1, weight_decay=0.1),
        "reference default": lambda p: pytorch_optimizer.Lamb([p], lr=0.1, weight_decay=0.1),
        "ours v3": lambda p: Lamb([p], lr=0.1, weight_decay=0.1, bias_correction=False, eps_in_trust_ratio=True),
        "reference v3": lambda p: pytorch_optimizer.Lamb(
            [p], lr=0.1, weight_decay=0.1, weight_decouple=False, adam_debias=True
        ),
    }.items():
        param = nn.Parameter(x0.clone())
        optimizer = build(param)
        for _ in range(3):
            param.grad = g.clone()
            optimizer.step()
        results[key] = param.detach()
    torch.testing.assert_close(results["ours v3"], results["reference v3"], rtol=1e-13, atol=0)
    assert (results["ours"] - results["reference default"]).abs().max() > 1e-3


def test_invalid_phi_bounds() -> None:
    param = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="phi_min"):
        Lamb(param, phi_min=2.0, phi_max=1.0)
    with pytest.raises(ValueError, match="phi_max"):
        Lamb(param, phi_max=0.0)
