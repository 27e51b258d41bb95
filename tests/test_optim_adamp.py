"""SGDP and AdamP beyond the shared matrix: the projection itself, hand-computed steps, Algorithms 1 and 2 written
out independently, the effect the paper is about (slower weight-norm growth on scale-invariant weights), and the
one place the authors' package departs from Algorithm 1 (`project_buffer`)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from optarena import optim
from optarena.optim.adamp import SGDP, AdamP, project_radial

EPS = 1e-8


def _rows_tangent_to(weight: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """`raw` with each row's component along the matching row of `weight` removed (exactly orthogonal rows)."""
    w, r = weight.reshape(weight.shape[0], -1), raw.reshape(weight.shape[0], -1)
    unit = w / w.norm(dim=1, keepdim=True)
    return (r - (r * unit).sum(dim=1, keepdim=True) * unit).reshape(weight.shape)


def _reference_projection(w: torch.Tensor, g: torch.Tensor, u: torch.Tensor, delta: float, eps: float):
    """Sec. 3 of the paper, written row by row: (projected update, projected?)."""
    if w.dim() < 2:
        return u, False
    for rows in (w.shape[0], 1):
        w_rows, g_rows, u_rows = w.reshape(rows, -1), g.reshape(rows, -1), u.reshape(rows, -1).clone()
        dim = w_rows.shape[1]
        cosines = [
            abs(float(g_rows[i] @ w_rows[i])) / (max(float(g_rows[i].norm()), eps) * max(float(w_rows[i].norm()), eps))
            for i in range(rows)
        ]
        if max(cosines) < delta / math.sqrt(dim):
            for i in range(rows):
                unit = w_rows[i] / (w_rows[i].norm() + eps)
                u_rows[i] = u_rows[i] - (unit @ u_rows[i]) * unit
            return u_rows.reshape(w.shape), True
    return u, False


def _bn_net() -> nn.Module:
    """Conv and linear weights followed by BatchNorm: scale invariant, so the projection fires."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5, bias=False),
        nn.BatchNorm1d(5),
        nn.Tanh(),
        nn.Linear(5, 3),
    ).double()


def _batches(steps: int):
    generator = torch.Generator().manual_seed(3)
    for _ in range(steps):
        yield (
            torch.randn(16, 2, 6, 6, generator=generator, dtype=torch.float64),
            torch.randn(16, 3, generator=generator, dtype=torch.float64),
        )


def _gradients(model: nn.Module, inputs, targets) -> None:
    model.zero_grad()
    nn.functional.mse_loss(model(inputs), targets).backward()


# --- the projection ---------------------------------------------------------------------------------------------


def test_channel_wise_projection_removes_each_rows_radial_part() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, 2, generator=generator, dtype=torch.float64)
    grad = _rows_tangent_to(weight, torch.randn(4, 3, 2, generator=generator, dtype=torch.float64))
    update = torch.randn(4, 3, 2, generator=generator, dtype=torch.float64)
    expected, fired = _reference_projection(weight, grad, update, 0.1, EPS)
    assert fired
    assert project_radial(weight, grad, update, 0.1, EPS)
    torch.testing.assert_close(update, expected, rtol=1e-14, atol=1e-15)
    radial = (update.reshape(4, -1) * weight.reshape(4, -1)).sum(dim=1)
    assert radial.abs().max() < 1e-7  # orthogonal row by row, up to eps in w / (||w|| + eps)


def test_layer_wise_projection_when_only_the_whole_layer_is_orthogonal() -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    # Row 0 of the gradient is parallel to row 0 of the weight, so the channel test fails; the whole gradient is
    # made orthogonal to the whole weight, so the layer test passes.
    grad = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    grad[0] = weight[0]
    flat_w, flat_g = weight.flatten(), grad.flatten()
    grad = (flat_g - (flat_g @ flat_w) / (flat_w @ flat_w) * flat_w).reshape(3, 4)
    update = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    original = update.clone()
    assert project_radial(weight, grad, update, 0.1, EPS)
    unit = weight.flatten() / (weight.norm() + EPS)
    torch.testing.assert_close(update.flatten(), original.flatten() - (unit @ original.flatten()) * unit)
    assert abs(float(update.flatten() @ weight.flatten())) < 1e-7


def test_no_projection_for_aligned_gradients_or_vectors() -> None:
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    update = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    before = update.clone()
    assert not project_radial(weight, weight.clone(), update, 0.1, EPS)  # cos = 1
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    assert not project_radial(bias, torch.zeros(5, dtype=torch.float64), update, 0.1, EPS)  # 1-D: never
    assert torch.equal(update, before)
    assert not project_radial(torch.empty(0, 3), torch.empty(0, 3), torch.empty(0, 3), 0.1, EPS)


# --- hand-computed steps -----------------------------------------------------------------------------------------


def test_sgdp_weight_decay_uses_wd_ratio_on_projected_weights() -> None:
    # A zero gradient is orthogonal to everything: the matrix is projected (decay * wd_ratio), the vector is not.
    matrix = nn.Parameter(torch.full((2, 3), 2.0, dtype=torch.float64))
    vector = nn.Parameter(torch.full((3,), 2.0, dtype=torch.float64))
    optimizer = SGDP([matrix, vector], lr=0.1, momentum=0.5, weight_decay=0.2, wd_ratio=0.25)
    matrix.grad, vector.grad = torch.zeros_like(matrix), torch.zeros_like(vector)
    optimizer.step()
    torch.testing.assert_close(matrix, torch.full((2, 3), 2.0 * (1 - 0.1 * 0.2 * 0.25 / 0.5), dtype=torch.float64))
    torch.testing.assert_close(vector, torch.full((3,), 2.0 * (1 - 0.1 * 0.2 / 0.5), dtype=torch.float64))


def test_adamp_weight_decay_uses_wd_ratio_on_projected_weights() -> None:
    matrix = nn.Parameter(torch.full((2, 3), 2.0, dtype=torch.float64))
    vector = nn.Parameter(torch.full((3,), 2.0, dtype=torch.float64))
    optimizer = AdamP([matrix, vector], lr=0.1, weight_decay=0.2, wd_ratio=0.25)
    matrix.grad, vector.grad = torch.zeros_like(matrix), torch.zeros_like(vector)
    optimizer.step()
    torch.testing.assert_close(matrix, torch.full((2, 3), 2.0 * (1 - 0.1 * 0.2 * 0.25), dtype=torch.float64))
    torch.testing.assert_close(vector, torch.full((3,), 2.0 * (1 - 0.1 * 0.2), dtype=torch.float64))


@pytest.mark.parametrize("bias_correction", [True, False])
def test_adamp_first_step_by_hand(bias_correction: bool) -> None:
    # Gradient parallel to the weight (cos = 1): no projection, a plain Adam step.
    start = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    param = nn.Parameter(start.clone())
    optimizer = AdamP([param], lr=0.1, beta1=0.9, beta2=0.999, bias_correction=bias_correction)
    param.grad = 0.5 * start
    optimizer.step()
    g = 0.5 * start
    if bias_correction:  # m_hat = g, v_hat = g^2
        expected = start - 0.1 * g / (g.abs() + EPS)
    else:  # m = 0.1 g, v = 0.001 g^2 (Algorithm 2's box)
        expected = start - 0.1 * (0.1 * g) / (math.sqrt(0.001) * g.abs() + EPS)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-14, atol=0)


def test_sgdp_nesterov_first_step_by_hand() -> None:
    start = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    param = nn.Parameter(start.clone())
    optimizer = SGDP([param], lr=0.1, momentum=0.9, nesterov=True)
    param.grad = 0.5 * start
    optimizer.step()
    torch.testing.assert_close(param.detach(), start - 0.1 * (1 + 0.9) * 0.5 * start, rtol=1e-15, atol=0)


# --- Algorithms 1 and 2, written out ---------------------------------------------------------------------------


def _algorithm_1(model: nn.Module, lr: float, momentum: float, weight_decay: float, nesterov: bool, steps: int):
    buffers = {p: torch.zeros_like(p) for p in model.parameters()}
    for inputs, targets in _batches(steps):
        _gradients(model, inputs, targets)
        with torch.no_grad():
            for p in model.parameters():
                buffers[p] = momentum * buffers[p] + p.grad
                direction = p.grad + momentum * buffers[p] if nesterov else buffers[p]
                direction, fired = _reference_projection(p, p.grad, direction, 0.1, EPS)
                p.mul_(1 - lr * weight_decay * (0.1 if fired else 1.0) / (1 - momentum))
                p.sub_(lr * direction)


def _algorithm_2(model: nn.Module, lr: float, beta1: float, beta2: float, weight_decay: float, steps: int):
    m = {p: torch.zeros_like(p) for p in model.parameters()}
    v = {p: torch.zeros_like(p) for p in model.parameters()}
    for t, (inputs, targets) in enumerate(_batches(steps), start=1):
        _gradients(model, inputs, targets)
        with torch.no_grad():
            for p in model.parameters():
                m[p] = beta1 * m[p] + (1 - beta1) * p.grad
                v[p] = beta2 * v[p] + (1 - beta2) * p.grad**2
                direction = (m[p] / (1 - beta1**t)) / ((v[p] / (1 - beta2**t)).sqrt() + EPS)
                direction, fired = _reference_projection(p, p.grad, direction, 0.1, EPS)
                p.mul_(1 - lr * weight_decay * (0.1 if fired else 1.0))
                p.sub_(lr * direction)


def _train(model: nn.Module, optimizer, steps: int) -> None:
    for inputs, targets in _batches(steps):
        _gradients(model, inputs, targets)
        optimizer.step()


def _assert_models_close(a: nn.Module, b: nn.Module, rtol: float) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert ((p - q).abs().max() / q.abs().max()).item() <= rtol


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("foreach", [False, True])
def test_sgdp_is_algorithm_1(nesterov: bool, foreach: bool) -> None:
    torch.manual_seed(0)
    ours = _bn_net()
    written = copy.deepcopy(ours)
    _train(ours, SGDP(ours.parameters(), lr=0.05, weight_decay=1e-3, nesterov=nesterov, foreach=foreach), 40)
    _algorithm_1(written, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=nesterov, steps=40)
    _assert_models_close(ours, written, 1e-10)


@pytest.mark.parametrize("foreach", [False, True])
def test_adamp_is_algorithm_2_with_bias_correction(foreach: bool) -> None:
    torch.manual_seed(0)
    ours = _bn_net()
    written = copy.deepcopy(ours)
    _train(ours, AdamP(ours.parameters(), lr=1e-2, weight_decay=1e-2, foreach=foreach), 40)
    _algorithm_2(written, lr=1e-2, beta1=0.9, beta2=0.999, weight_decay=1e-2, steps=40)
    _assert_models_close(ours, written, 1e-10)


def test_projection_fires_on_the_batchnorm_net() -> None:
    torch.manual_seed(0)
    model = _bn_net()
    inputs, targets = next(iter(_batches(1)))
    _gradients(model, inputs, targets)
    conv, linear = model[0].weight, model[4].weight
    for weight in (conv, linear):
        assert project_radial(weight, weight.grad, weight.grad.clone(), 0.1, EPS)


# --- what the paper is about ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, hparams",
    [("sgdp", {"lr": 0.1, "momentum": 0.9}), ("adamp", {"lr": 1e-2})],
)
def test_projection_slows_the_weight_norm_growth(name: str, hparams: dict) -> None:
    """Sec. 2 of the paper: momentum inflates the norm of scale-invariant weights; the projection curbs it.
    delta = 0 switches the projection off (cos < 0 never holds), leaving SGD / Adam."""

    def norm_growth(delta: float) -> float:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, bias=False),
            nn.BatchNorm2d(8, affine=False),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 6 * 6, 4),
        ).double()
        initial = model[0].weight.norm().item()
        optimizer = optim.create(name, model.parameters(), delta=delta, **hparams)
        generator = torch.Generator().manual_seed(1)
        for _ in range(50):
            inputs = torch.randn(16, 3, 8, 8, generator=generator, dtype=torch.float64)
            labels = torch.randint(0, 4, (16,), generator=generator)
            model.zero_grad()
            nn.functional.cross_entropy(model(inputs), labels).backward()
            optimizer.step()
        return model[0].weight.norm().item() - initial

    assert norm_growth(0.1) < 0.5 * norm_growth(0.0)


# --- the authors' package ---------------------------------------------------------------------------------------


def test_sgdp_project_buffer_reproduces_the_package_and_the_default_does_not() -> None:
    """adamp.SGDP without Nesterov projects its momentum buffer in place (`d_p = buf` is aliased); Algorithm 1
    keeps p_t unprojected. Both agree until the first projection and then part."""
    adamp = pytest.importorskip("adamp")
    torch.manual_seed(0)
    reference_model = _bn_net()
    paper_model, compat_model = copy.deepcopy(reference_model), copy.deepcopy(reference_model)
    reference = adamp.SGDP(reference_model.parameters(), lr=0.05, momentum=0.9)
    paper = SGDP(paper_model.parameters(), lr=0.05, momentum=0.9)
    compat = SGDP(compat_model.parameters(), lr=0.05, momentum=0.9, project_buffer=True)
    for model, optimizer in ((reference_model, reference), (paper_model, paper), (compat_model, compat)):
        _train(model, optimizer, 20)
    _assert_models_close(compat_model, reference_model, 1e-12)
    pairs = zip(paper_model.parameters(), reference_model.parameters(), strict=True)
    difference = max((p - q).abs().max().item() for p, q in pairs)
    assert difference > 1e-6


def test_invalid_projection_hyperparameters() -> None:
    param = [nn.Parameter(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match="wd_ratio"):
        AdamP(param, wd_ratio=1.5)
    with pytest.raises(ValueError, match="dampening"):
        SGDP(param, dampening=1.5)
    with pytest.raises(ValueError, match="momentum"):
        SGDP(param, momentum=1.0)
