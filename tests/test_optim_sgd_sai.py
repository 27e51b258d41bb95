"""SGD-SaI: the g-SNR rule, hand-computed steps, the g-SNR as saved state, and the reference_compat deviations."""

from __future__ import annotations

import copy

import pytest
import torch

from optarena import optim
from optarena.optim.sgd_sai import SGDSaI, gradient_snr

F64 = torch.float64


def _param(values) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=F64))


def _step(optimizer, param, grad) -> None:
    param.grad = torch.tensor(grad, dtype=F64)
    optimizer.step()


def test_registered_with_paper_defaults() -> None:
    assert optim.info("sgd_sai").defaults == {
        "lr": 1e-2,
        "momentum": 0.9,
        "weight_decay": 1e-2,
        "eps": 1e-8,
        "reference_compat": False,
    }


def test_gsnr_is_norm_over_unbiased_std() -> None:
    g = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]], dtype=F64)
    values = g.flatten()
    std = ((values - values.mean()) ** 2).sum().div(values.numel() - 1).sqrt()
    assert gradient_snr(g, 1e-8).item() == pytest.approx(values.norm().item() / (std.item() + 1e-8), rel=1e-14)
    assert gradient_snr(torch.tensor([5.0], dtype=F64), 1e-8).item() == 1.0  # one element: std undefined, scale 1
    assert gradient_snr(torch.zeros(0, dtype=F64), 1e-8).item() == 1.0


def test_first_two_steps_by_hand() -> None:
    w0 = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=F64)
    g1 = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=F64)
    g2 = torch.tensor([-1.0, 0.25, 1.0, 4.0], dtype=F64)
    lr, mu, wd, eps = 0.1, 0.9, 0.01, 1e-8
    p = torch.nn.Parameter(w0.clone())
    opt = SGDSaI([p], lr=lr, momentum=mu, weight_decay=wd, eps=eps)
    _step(opt, p, g1.tolist())
    gsnr = g1.norm() / (g1.std() + eps)
    w1 = w0 * (1 - lr * wd) - lr * gsnr * g1  # m_1 = g_1
    torch.testing.assert_close(p.detach(), w1, rtol=1e-14, atol=0)
    _step(opt, p, g2.tolist())
    m2 = mu * g1 + (1 - mu) * g2
    w2 = w1 * (1 - lr * wd) - lr * gsnr * m2  # the g-SNR is the first step's, not recomputed from g_2
    torch.testing.assert_close(p.detach(), w2, rtol=1e-14, atol=0)
    torch.testing.assert_close(opt.state[p]["gsnr"], gsnr, rtol=1e-15, atol=0)


def test_without_momentum_it_is_scaled_sgd() -> None:
    p = _param([1.0, 2.0, -1.0])
    opt = SGDSaI([p], lr=0.1, momentum=0.0, weight_decay=0.0)
    g = torch.tensor([3.0, -1.0, 1.0], dtype=F64)
    _step(opt, p, g.tolist())
    expected = torch.tensor([1.0, 2.0, -1.0], dtype=F64) - 0.1 * g.norm() / (g.std() + 1e-8) * g
    torch.testing.assert_close(p.detach(), expected, rtol=1e-14, atol=0)
    assert "momentum_buffer" not in opt.state[p]


def test_gsnr_round_trips_through_state_dict() -> None:
    p = _param([[1.0, 2.0], [3.0, 4.0]])
    opt = SGDSaI([p], lr=0.01)
    _step(opt, p, [[1.0, -1.0], [0.5, 2.0]])
    saved = copy.deepcopy(opt.state_dict())
    q = torch.nn.Parameter(p.detach().clone())
    resumed = SGDSaI([q], lr=0.01)
    resumed.load_state_dict(saved)
    # A very different gradient after the resume must not reset the scale: it was fixed at initialization.
    for optimizer, param in ((opt, p), (resumed, q)):
        _step(optimizer, param, [[100.0, 100.0], [100.0, 100.1]])
    assert resumed.state[q]["gsnr"].item() == opt.state[p]["gsnr"].item()
    torch.testing.assert_close(q.detach(), p.detach(), rtol=0, atol=0)


def test_reference_compat_starts_momentum_at_zero_and_uses_the_norm_for_vectors() -> None:
    g = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    p = _param([1.0, -2.0, 3.0])
    opt = SGDSaI([p], lr=0.1, momentum=0.9, weight_decay=0.0, reference_compat=True)
    _step(opt, p, g.tolist())
    assert opt.state[p]["gsnr"].item() == pytest.approx(g.norm().item(), rel=1e-15)
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], 0.1 * g, rtol=1e-15, atol=0)
    expected = torch.tensor([1.0, -2.0, 3.0], dtype=F64) - 0.1 * g.norm() * 0.1 * g
    torch.testing.assert_close(p.detach(), expected, rtol=1e-14, atol=0)


def test_paper_and_reference_agree_on_matrices_without_momentum() -> None:
    # For a block with two or more rows, both use ||g|| / (std + eps); with mu = 0 the momentum start does not matter.
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(3, 4, generator=generator, dtype=F64)
    params = {flag: torch.nn.Parameter(start.clone()) for flag in (False, True)}
    opts = {flag: SGDSaI([params[flag]], lr=0.01, momentum=0.0, reference_compat=flag) for flag in params}
    for _ in range(5):
        g = torch.randn(3, 4, generator=generator, dtype=F64).tolist()
        for flag in params:
            _step(opts[flag], params[flag], g)
    torch.testing.assert_close(params[False].detach(), params[True].detach(), rtol=1e-14, atol=0)
