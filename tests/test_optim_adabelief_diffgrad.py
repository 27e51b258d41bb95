"""AdaBelief and diffGrad specifics: hand-computed steps, their options, and foreach == single-tensor under every
option (the registry-wide matrix runs only the defaults)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from optarena import optim
from optarena.optim.adabelief import AdaBelief
from optarena.optim.diffgrad import DiffGrad


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _scalar_param(value: float) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor([value], dtype=torch.float64))


def _run(optimizer, param, grads):
    for g in grads:
        param.grad = torch.tensor([g], dtype=torch.float64)
        optimizer.step()
    return param.item()


# ---------------------------------------------------------------------------------------------------- AdaBelief


def _adabelief_by_hand(theta, grads, lr, beta1, beta2, eps):
    """Algorithm 2 of arXiv:2010.07468, one coordinate, in plain floats."""
    m = s = 0.0
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        s = beta2 * s + (1 - beta2) * (g - m) ** 2 + eps
        m_hat, s_hat = m / (1 - beta1**t), s / (1 - beta2**t)
        theta = theta - lr * m_hat / (math.sqrt(s_hat) + eps)
    return theta, s


def test_adabelief_matches_algorithm_2_by_hand() -> None:
    grads = [0.7, -0.2, 1.3, 0.4]
    hp = {"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3}
    param = _scalar_param(1.5)
    optimizer = AdaBelief([param], **hp)
    expected, expected_s = _adabelief_by_hand(1.5, grads, **hp)
    assert _run(optimizer, param, grads) == pytest.approx(expected, rel=1e-14)
    # The eps inside the s_t recursion stays in the state.
    assert optimizer.state[param]["exp_avg_var"].item() == pytest.approx(expected_s, rel=1e-14)


def test_adabelief_eps_accumulates_in_the_belief() -> None:
    param = _scalar_param(1.0)
    optimizer = AdaBelief([param], eps=1e-3, beta2=0.9)
    _run(optimizer, param, [0.0, 0.0, 0.0])
    # s_t = beta2 s_{t-1} + eps with zero gradients: eps (1 + 0.9 + 0.81).
    assert optimizer.state[param]["exp_avg_var"].item() == pytest.approx(1e-3 * 2.71, rel=1e-14)
    assert param.item() == 1.0  # m_t = 0: no step


def test_adabelief_weight_decay_modes() -> None:
    lr, weight_decay = 0.1, 0.5
    decoupled = _scalar_param(2.0)
    _run(AdaBelief([decoupled], lr=lr, weight_decay=weight_decay), decoupled, [0.0])
    assert decoupled.item() == 2.0 * (1 - lr * weight_decay)  # AdamW-style shrink, no gradient step

    coupled = _scalar_param(2.0)
    hp = {"lr": lr, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    _run(AdaBelief([coupled], weight_decay=weight_decay, decoupled_weight_decay=False, **hp), coupled, [0.0])
    expected, _ = _adabelief_by_hand(2.0, [weight_decay * 2.0], **hp)  # L2: the gradient is weight_decay * theta
    assert coupled.item() == pytest.approx(expected, rel=1e-14)


def _rho(t: int, beta2: float) -> float:
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * t * beta2**t / (1 - beta2**t)


@pytest.mark.parametrize("degenerated_to_sgd", [True, False])
def test_adabelief_rectify_by_hand(degenerated_to_sgd: bool) -> None:
    lr, beta1, beta2, eps = 0.01, 0.9, 0.999, 1e-8
    grads = [0.5 + 0.1 * math.sin(t) for t in range(1, 9)]
    param = _scalar_param(1.0)
    optimizer = AdaBelief(
        [param], lr=lr, beta1=beta1, beta2=beta2, eps=eps, rectify=True, degenerated_to_sgd=degenerated_to_sgd
    )
    theta, m, s, rectified_steps = 1.0, 0.0, 0.0, 0
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        s = beta2 * s + (1 - beta2) * (g - m) ** 2 + eps
        rho, rho_inf = _rho(t, beta2), 2 / (1 - beta2) - 1
        if rho >= 5:
            rectified_steps += 1
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            theta -= lr * r * math.sqrt(1 - beta2**t) / (1 - beta1**t) * m / (math.sqrt(s) + eps)
        elif degenerated_to_sgd:
            theta -= lr * m / (1 - beta1**t)  # SGD with bias-corrected momentum
        assert _run(optimizer, param, [g]) == pytest.approx(theta, rel=1e-14), f"step {t}"
    assert 0 < rectified_steps < len(grads)  # both regimes were exercised


def test_adabelief_rectify_off_is_unaffected_by_degenerated_to_sgd() -> None:
    results = []
    for degenerated_to_sgd in (True, False):
        param = _scalar_param(1.0)
        results.append(_run(AdaBelief([param], degenerated_to_sgd=degenerated_to_sgd), param, [0.3, -0.1, 0.2]))
    assert results[0] == results[1]


# ----------------------------------------------------------------------------------------------------- diffGrad


def _diffgrad_by_hand(theta, grads, lr, beta1, beta2, eps, reference_compat=False):
    m = v = previous = 0.0
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        xi = _sigmoid(abs(previous - g))
        previous = g
        if reference_compat:  # eps on the uncorrected root, bias corrections in the step size
            step = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
            theta -= step * xi * m / (math.sqrt(v + 1e-15) + eps)
        else:
            theta -= lr * xi * (m / (1 - beta1**t)) / (math.sqrt(v / (1 - beta2**t)) + eps)
    return theta


@pytest.mark.parametrize("reference_compat", [False, True])
def test_diffgrad_matches_the_update_rule_by_hand(reference_compat: bool) -> None:
    grads = [0.7, -0.2, 1.3, 1.3, 0.4]
    hp = {"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-2}
    param = _scalar_param(1.5)
    optimizer = DiffGrad([param], reference_compat=reference_compat, **hp)
    expected = _diffgrad_by_hand(1.5, grads, reference_compat=reference_compat, **hp)
    assert _run(optimizer, param, grads) == pytest.approx(expected, rel=1e-14)
    assert optimizer.state[param]["previous_grad"].item() == grads[-1]


def test_diffgrad_first_step_and_constant_gradient_friction() -> None:
    lr, g = 0.1, 0.8
    param = _scalar_param(0.0)
    optimizer = DiffGrad([param], lr=lr, eps=0.0)
    # Step 1: g_0 = 0, so xi_1 = sigmoid(|g_1|), and m_hat / sqrt(v_hat) = sign(g).
    assert _run(optimizer, param, [g]) == pytest.approx(-lr * _sigmoid(g), rel=1e-14)
    # A constant gradient afterwards: xi = sigmoid(0) = 1/2 exactly, half of Adam's step.
    before = param.item()
    assert _run(optimizer, param, [g]) == pytest.approx(before - lr * 0.5, rel=1e-14)


def test_diffgrad_eps_placement_is_the_only_difference_from_the_reference_arithmetic() -> None:
    grads = [0.3, -0.6, 0.9, 0.1]
    paper, compat = _scalar_param(1.0), _scalar_param(1.0)
    _run(DiffGrad([paper], eps=0.0), paper, grads)
    _run(DiffGrad([compat], eps=0.0, reference_compat=True), compat, grads)
    assert paper.item() == pytest.approx(compat.item(), rel=1e-12)  # only the 1e-15 under the root remains
    paper, compat = _scalar_param(1.0), _scalar_param(1.0)
    _run(DiffGrad([paper], eps=0.1), paper, grads[:1])
    _run(DiffGrad([compat], eps=0.1, reference_compat=True), compat, grads[:1])
    # Step 1: the paper adds eps to |g|; the reference adds it before dividing by sqrt(1 - beta2) ~ 0.0316.
    assert 1 - paper.item() == pytest.approx(1e-3 * _sigmoid(0.3) * 0.3 / (0.3 + 0.1), rel=1e-12)
    assert 1 - compat.item() == pytest.approx(1e-3 * _sigmoid(0.3) * 0.3 / (0.3 + 0.1 / math.sqrt(1e-3)), rel=1e-9)


def test_diffgrad_weight_decay_modes() -> None:
    lr, weight_decay = 0.1, 0.5
    decoupled = _scalar_param(2.0)
    _run(DiffGrad([decoupled], lr=lr, weight_decay=weight_decay, decoupled_weight_decay=True), decoupled, [0.0])
    assert decoupled.item() == 2.0 * (1 - lr * weight_decay)
    coupled = _scalar_param(2.0)
    hp = {"lr": lr, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    _run(DiffGrad([coupled], weight_decay=weight_decay, **hp), coupled, [0.0])
    # L2 (the authors' code): the decayed gradient also drives the friction coefficient.
    assert coupled.item() == pytest.approx(_diffgrad_by_hand(2.0, [weight_decay * 2.0], **hp), rel=1e-14)


# ------------------------------------------------------------------------------------------- both optimizers


OPTION_GRID = {
    "adabelief": [
        dict(zip(("decoupled_weight_decay", "rectify", "degenerated_to_sgd"), combo, strict=True))
        for combo in itertools.product([True, False], repeat=3)
    ],
    "diffgrad": [
        dict(zip(("decoupled_weight_decay", "reference_compat"), combo, strict=True))
        for combo in itertools.product([True, False], repeat=2)
    ],
}


@pytest.mark.parametrize(
    "name, options", [(name, options) for name, grid in OPTION_GRID.items() for options in grid], ids=str
)
def test_foreach_matches_single_tensor_under_every_option(name: str, options: dict) -> None:
    """Bit-identical, including parameters whose step counts drift apart (gradients missing on some steps), so
    that one foreach call mixes adaptive, rectified and SGD-like steps."""
    runs = []
    for foreach in (False, True):
        generator = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in [(4, 3), (5,), (2, 2)]]
        optimizer = optim.create(name, params, lr=1e-2, weight_decay=0.1, beta2=0.99, foreach=foreach, **options)
        for step in range(14):
            for i, p in enumerate(params):
                p.grad = torch.randn(p.shape, generator=generator)
                if i == 1 and step % 3 == 0:
                    p.grad = None
            optimizer.step()
        runs.append((params, optimizer))
    (single_params, single), (multi_params, multi) = runs
    assert {state["step"].item() for state in single.state.values()} == {14.0, 9.0}
    for a, b in zip(single_params, multi_params, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(single_params, multi_params, strict=True):
        for key, value in single.state[a].items():
            torch.testing.assert_close(value, multi.state[b][key], rtol=0, atol=0)


@pytest.mark.parametrize("factory", [AdaBelief, DiffGrad])
@pytest.mark.parametrize("hparam", ["beta1", "beta2"])
def test_beta_of_one_is_rejected(factory, hparam: str) -> None:
    with pytest.raises(ValueError, match=hparam):
        factory([_scalar_param(0.0)], **{hparam: 1.0})


def test_registry_defaults_are_the_papers() -> None:
    assert optim.info("adabelief").defaults == {
        "lr": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "decoupled_weight_decay": True,
        "rectify": False,
        "degenerated_to_sgd": True,
    }
    assert optim.info("diffgrad").defaults == {
        "lr": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "decoupled_weight_decay": False,
        "reference_compat": False,
    }
