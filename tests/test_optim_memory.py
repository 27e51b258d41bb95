"""Exact optimizer-state bytes (optim.memory): closed-form counts for AdamW, the 8-bit optimizers and MKOR, storages
shared between tensors counted once."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from optarena import optim
from optarena.optim.adam8bit import Adam8bit
from optarena.optim.memory import optimizer_state_bytes, state_tensors, tensors_storage_bytes
from optarena.optim.mkor import MKOR

SHAPES = [(40, 30), (7,), (0, 3), (5000,)]


def _params(dtype=torch.float32) -> list[nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(shape, generator=generator).to(dtype)) for shape in SHAPES]


def _step(optimizer, params) -> None:
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()


@pytest.mark.parametrize("dtype, itemsize", [(torch.float32, 4), (torch.float64, 8), (torch.bfloat16, 2)])
def test_adamw_is_two_moments_plus_one_float32_step_per_tensor(dtype, itemsize) -> None:
    params = _params(dtype)
    optimizer = torch.optim.AdamW(params)
    assert optimizer_state_bytes(optimizer) == 0  # lazy state
    _step(optimizer, params)
    elements = sum(math.prod(shape) for shape in SHAPES)
    assert optimizer_state_bytes(optimizer) == 2 * itemsize * elements + 4 * len(SHAPES)


def test_8bit_adamw_counts_codes_absmax_steps_and_maps() -> None:
    """Quantised tensors (>= min_8bit_size elements): 1 + 1 bytes per element, 4 + 4 per block; the others two
    float32 moments; a float32 step each; and the two 256-value float32 maps, held once."""
    params = _params()
    optimizer = optim.create("adamw_8bit", params, min_8bit_size=1000, block_size=256)
    _step(optimizer, params)
    quantized = [1200, 5000]
    plain = [7, 0]
    expected = sum(2 * n + 2 * 4 * math.ceil(n / 256) for n in quantized) + sum(2 * 4 * n for n in plain)
    expected += 4 * len(SHAPES) + 2 * 256 * 4
    assert optimizer_state_bytes(optimizer) == expected
    # a second optimizer's state is its own; the paper's block size 2048 needs fewer scales
    paper = optim.create("adamw_8bit", params, min_8bit_size=1000)
    _step(paper, params)
    assert optimizer_state_bytes(paper) == expected - 2 * 4 * (5 + 20 - 1 - 3)


class _Holder(torch.optim.Optimizer):
    """An optimizer whose state is set by hand (to check the counting of shared storages)."""

    def __init__(self, params, extra=()) -> None:
        super().__init__(params, {})
        self.extra = list(extra)

    def extra_state_tensors(self):
        return self.extra

    def step(self, closure=None):  # pragma: no cover - never stepped
        raise NotImplementedError


def test_views_and_shared_storages_are_counted_once_and_in_full() -> None:
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))
    buffer = torch.zeros(10, 10)  # 400 bytes
    other = torch.zeros(6, dtype=torch.float64)  # 48 bytes
    holder = _Holder([a, b], extra=[other[2:], buffer.t()])
    holder.state[a] = {"whole": buffer, "row": buffer[3], "nested": [buffer[:, 1], {"deep": (other,)}], "lr": 0.1}
    holder.state[b] = {"view": buffer.view(100)[5:7], "scalar": torch.tensor(1, dtype=torch.int16)}
    assert optimizer_state_bytes(holder) == 400 + 48 + 2
    assert len(state_tensors(holder)) == 8
    # a view of part of a storage counts the whole storage: it is what stays allocated
    assert tensors_storage_bytes([buffer[0, :2]]) == 400
    assert tensors_storage_bytes([torch.zeros(0), torch.empty(0, 5)]) == 0


def test_non_strided_state_is_rejected_clearly() -> None:
    holder = _Holder([nn.Parameter(torch.zeros(2))])
    holder.state[holder.param_groups[0]["params"][0]] = {"sparse": torch.eye(3).to_sparse()}
    with pytest.raises(ValueError, match="layout"):
        optimizer_state_bytes(holder)


def test_mkor_counts_momentum_buffers_and_its_inverse_factors() -> None:
    """MKOR keeps L^-1 (out x out) and R^-1 ((in + 1) x (in + 1) with a bias) per Linear layer outside `state`."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3, bias=False))
    optimizer = MKOR(model, lr=1e-2, momentum=0.9)
    factors = 4 * (4 * 4 + 6 * 6) + 4 * (3 * 3 + 4 * 4)
    assert optimizer_state_bytes(optimizer) == factors  # the identity factors exist before the first step
    model(torch.randn(8, 5)).pow(2).mean().backward()
    optimizer.step()
    momentum = 4 * sum(p.numel() for p in model.parameters())
    assert optimizer_state_bytes(optimizer) == factors + momentum
    double = MKOR(nn.Linear(3, 2).double())
    assert optimizer_state_bytes(double) == 8 * (2 * 2 + 4 * 4)


def test_every_registered_elementwise_optimizer_is_counted() -> None:
    """Each optimizer's count is the storages of its state tensors, at least one per parameter tensor."""
    for name in optim.names():
        if optim.info(name).needs_model or optim.info(name).needs_per_example_grads or optim.info(name).curvature:
            continue
        params = _params()
        optimizer = optim.create(name, params)
        _step(optimizer, params)
        count = optimizer_state_bytes(optimizer)
        distinct = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in state_tensors(optimizer)}
        assert count == sum(distinct.values()) and count >= 4 * len(SHAPES), name


def test_8bit_state_is_about_a_quarter_of_adamw() -> None:
    params = [nn.Parameter(torch.zeros(256, 256)) for _ in range(4)]
    adamw, eight_bit = torch.optim.AdamW(params), Adam8bit(params, weight_decay=0.0)
    _step(adamw, params)
    _step(eight_bit, params)
    n = 4 * 256 * 256
    assert optimizer_state_bytes(adamw) == 8 * n + 16
    assert optimizer_state_bytes(eight_bit) == 2 * n + 2 * 4 * 4 * 32 + 16 + 2048
