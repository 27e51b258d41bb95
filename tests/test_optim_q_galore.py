"""Q-GaLore (optim.q_galore): its quantisers against hand-computed values and against q-galore-torch's, stochastic
rounding end to end against the reference fed the same uniforms, the reduction to GaLore without quantisation, the
8-bit moments, the INT8 weight and INT4 projector held in the state, its exact memory, and a resume in float32."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from optarena.optim.galore import GaLore
from optarena.optim.memory import optimizer_state_bytes
from optarena.optim.q_galore import (
    QGaLore,
    dequantize_groups,
    pack_codes,
    quantize_groups,
    rounding_seed,
    unpack_codes,
)
from optarena.optim.quantization import dequantize_blockwise, dynamic_map, quantize_blockwise

F64 = torch.float64


def test_quantize_groups_by_hand() -> None:
    values = torch.tensor([0.0, 0.3, -0.6, 0.9], dtype=F64)
    codes, scales, zeros = quantize_groups(values, bits=4, group_size=4)
    # range 1.5 over 15 steps: s = 0.1, z = -round(-0.6 / 0.1) = 6, q = round(x / 0.1) + 6
    assert codes.tolist() == [6, 9, 0, 15] and codes.dtype == torch.uint8
    torch.testing.assert_close(scales, torch.tensor([0.1], dtype=F64), rtol=1e-15, atol=0)
    assert zeros.tolist() == [6.0]
    torch.testing.assert_close(dequantize_groups(codes, scales, zeros, 4, values.shape), values, rtol=0, atol=1e-15)


def test_a_short_last_group_is_quantized_on_its_own() -> None:
    # every group holds values of both signs, so its zero point lies inside the code range
    values = torch.tensor([-1.0, 0.5, 0.2, 0.9, -0.3, 0.4, 0.7, -0.8, -0.5, 0.25, 0.6], dtype=F64)
    codes, scales, zeros = quantize_groups(values, bits=8, group_size=4)
    pieces = [quantize_groups(values[i : i + 4], bits=8, group_size=4) for i in range(0, 11, 4)]
    assert torch.equal(codes, torch.cat([p[0] for p in pieces]))
    assert torch.equal(scales, torch.cat([p[1] for p in pieces])) and torch.equal(
        zeros, torch.cat([p[2] for p in pieces])
    )
    error = (dequantize_groups(codes, scales, zeros, 4, values.shape) - values).abs()
    assert (error <= scales.repeat_interleave(4)[:11] / 2 + 1e-15).all()  # nearest rounding: half a step


def test_stochastic_rounding_rounds_up_exactly_when_the_uniform_is_below_the_fraction() -> None:
    values = torch.tensor([0.0, 0.237, 0.5, 1.0, 2.55], dtype=F64)  # one group: s = 0.01, z = 0
    codes, scales, zeros = quantize_groups(values, 8, 8, torch.Generator().manual_seed(7))
    uniforms = torch.rand((1, 8), generator=torch.Generator().manual_seed(7), dtype=F64).view(-1)[:5]
    scaled = values / scales
    expected = torch.where(uniforms < scaled - scaled.floor(), scaled.ceil(), scaled.floor())
    assert zeros.tolist() == [0.0] and codes.tolist() == expected.tolist()


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack_round_trip(bits: int) -> None:
    codes = torch.randint(0, 2**bits, (37,), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.numel() == math.ceil(37 / (8 // bits))
    assert torch.equal(unpack_codes(packed, bits, 37), codes)


def test_quantizers_match_q_galore_torch() -> None:
    pytest.importorskip("q_galore_torch")  # imports bitsandbytes
    from q_galore_torch.q_galore_adamw8bit_simulate import AdamW8bit
    from q_galore_torch.q_galore_projector_simulate import GaLoreProjector

    weight = torch.randn(6, 8, generator=torch.Generator().manual_seed(3), dtype=F64)
    weight[3:] = weight[3:].abs() + 2  # groups far from 0: the zero point is clamped and the values clipped
    codes, scales, zeros, _ = GaLoreProjector(rank=2)._quantize(weight, q_group_size=16, n_bit=4)
    ours = quantize_groups(weight, 4, 16)
    assert torch.equal(ours[0].view(6, 8).to(F64), codes.view(6, 8))
    assert torch.equal(ours[1], scales.view(-1)) and torch.equal(ours[2], zeros.view(-1))
    expected = AdamW8bit._quantize(None, weight, q_group_size=8)
    assert torch.equal(dequantize_groups(*quantize_groups(weight, 8, 8), 8, weight.shape), expected)
    with torch.random.fork_rng():  # the reference draws its uniforms from the global generator
        torch.manual_seed(11)
        expected = AdamW8bit._quantize_stochastic_round(None, weight, q_group_size=8)
    rounded = quantize_groups(weight, 8, 8, torch.Generator().manual_seed(11))
    assert torch.equal(dequantize_groups(*rounded, 8, weight.shape), expected)


def test_stochastic_rounding_end_to_end_matches_the_reference_fed_the_same_uniforms() -> None:
    """One projected weight (the only draws of either optimizer), the reference's global generator seeded before
    each step with the seed ours uses at that step; 60 float64 steps agree to 1e-10."""
    pytest.importorskip("q_galore_torch")  # imports bitsandbytes
    from unittest import mock

    from q_galore_torch import QGaLoreAdamW8bit_simulate

    torch.manual_seed(0)
    ours_model = nn.Linear(6, 8, bias=False).double()
    ref_model = copy.deepcopy(ours_model)
    hp = {"lr": 3e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}
    ours = QGaLore(ours_model.parameters(), **hp, rank=2, update_proj_gap=7, scale=0.5, proj_group_size=4,
                   weight_group_size=8, lazy_window=2, reference_compat=True)  # fmt: skip
    ref_model.weight.group_size, ref_model.weight.stochastic_round = 8, True
    group = {"params": [ref_model.weight], "rank": 2, "update_proj_gap": 7, "scale": 0.5, "proj_type": "std",
             "quant": True, "quant_n_bit": 4, "quant_group_size": 4, "cos_threshold": 0.4, "gamma_proj": 2,
             "queue_size": 2}  # fmt: skip
    reference = QGaLoreAdamW8bit_simulate(
        [group], lr=hp["lr"], betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, percentile_clipping=0, block_wise=False
    )
    generator = torch.Generator().manual_seed(1)
    for step in range(1, 61):
        inputs = torch.randn(16, 6, generator=generator, dtype=F64)
        targets = torch.randn(16, 8, generator=generator, dtype=F64)
        for model, optimizer in ((ours_model, ours), (ref_model, reference)):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(inputs), targets).backward()
        ours.step()
        stream = int(ours.state[ours_model.weight]["sr_stream"])
        with torch.random.fork_rng(), mock.patch("torch.cuda.synchronize"):
            torch.manual_seed(rounding_seed(stream, step))
            reference.step()
        a, b = ours_model.weight, ref_model.weight
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-10, f"step {step}"


def test_without_quantization_it_is_galore() -> None:
    """No INT4 projector, no INT8 weights, no 8-bit moments: the same arithmetic as GaLore, bit for bit (with the
    lazy update and weight decay on)."""
    settings = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "rank": 2,
                "update_proj_gap": 3, "scale": 0.5, "lazy_update": True, "lazy_window": 2}  # fmt: skip
    shapes = [(6, 4), (3, 7), (5,)]
    runs = []
    for build in (
        lambda ps: QGaLore(ps, **settings, proj_quant=False, weight_quant=False, min_8bit_size=10**9),
        lambda ps: GaLore(ps, **settings),
    ):
        generator = torch.Generator().manual_seed(0)
        params = [nn.Parameter(torch.randn(s, generator=generator, dtype=F64)) for s in shapes]
        optimizer = build(params)
        for _ in range(10):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator, dtype=F64)
            optimizer.step()
        runs.append(params)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def _trained(steps: int = 5, dtype: torch.dtype = F64, **options) -> tuple[QGaLore, list[nn.Parameter]]:
    generator = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(s, generator=generator, dtype=F64).to(dtype)) for s in [(6, 4), (3, 7), (5,)]]
    optimizer = QGaLore(params, **{"lr": 1e-2, "rank": 2, "update_proj_gap": 3, "weight_group_size": 8, **options})
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=F64).to(dtype)
        optimizer.step()
    return optimizer, params


def test_the_parameter_is_its_dequantized_int8_weight() -> None:
    optimizer, params = _trained()
    for p in params[:2]:
        weight = optimizer.state[p]["weight_int"]
        assert weight["codes"].dtype == torch.uint8 and weight["codes"].shape == p.shape
        assert torch.equal(
            p, dequantize_groups(weight["codes"].reshape(-1), weight["scales"], weight["zeros"], 8, p.shape)
        )
    assert "weight_int" not in optimizer.state[params[2]]  # a vector keeps full-precision weights


def test_the_projector_is_the_svd_basis_quantized_to_int4() -> None:
    """Right after a recomputation the stored INT4 projector dequantises to the top singular vectors of that step's
    gradient, within half a quantisation step per element (GaLore's layout: P = U[:, :r], Q^T = Vh[:r])."""
    optimizer, params = _trained(steps=4, weight_decay=0.0, lazy_update=False)  # recomputed at step 4 (s = 3)
    for p, left in ((params[0], False), (params[1], True)):
        u, _, vh = torch.linalg.svd(p.grad)
        stored = u[:, :2] if left else vh[:2]
        quantized = optimizer.state[p]["projector_int"]
        codes = unpack_codes(quantized["codes"], 4, stored.numel())
        restored = dequantize_groups(codes, quantized["scales"], quantized["zeros"], 256, stored.shape)
        assert (restored - stored).abs().max() <= quantized["scales"].max() / 2 + 1e-12


def test_moments_above_min_8bit_size_are_8_bit() -> None:
    """A vector takes AdamW: step 1 uses the exact moments (then stored 8-bit), step 2 the dequantised ones."""
    generator = torch.Generator().manual_seed(0)
    param = nn.Parameter(torch.randn(300, generator=generator, dtype=F64))
    start = param.detach().clone()
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.95, 1e-8
    optimizer = QGaLore([param], lr=lr, beta1=beta1, beta2=beta2, eps=eps, min_8bit_size=0, moment_block_size=64)
    grads = [torch.randn(300, generator=generator, dtype=F64) for _ in range(2)]
    param.grad = grads[0]
    optimizer.step()
    torch.testing.assert_close(param.detach(), start - lr * grads[0] / (grads[0].abs() + eps), rtol=0, atol=1e-15)
    state = optimizer.state[param]
    assert state["exp_avg_codes"].dtype == torch.uint8 and "exp_avg" not in state

    def round_trip(value: torch.Tensor, signed: bool) -> torch.Tensor:
        return dequantize_blockwise(quantize_blockwise(value, dynamic_map(signed), 64), dynamic_map(signed), F64)

    exp_avg = beta1 * round_trip((1 - beta1) * grads[0], True) + (1 - beta1) * grads[1]
    exp_avg_sq = beta2 * round_trip((1 - beta2) * grads[0] ** 2, False) + (1 - beta2) * grads[1] ** 2
    expected = param.detach() - lr * (exp_avg / (1 - beta1**2)) / ((exp_avg_sq / (1 - beta2**2)).sqrt() + eps)
    param.grad = grads[1]
    optimizer.step()
    torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-14)


def test_state_bytes_of_a_256_by_1024_matrix_at_rank_64() -> None:
    """Every stored piece, counted by hand: 8-bit moments (64 x 1024, 2048-element blocks), the INT4 projector
    (256 x 64, packed two to a byte, a float32 scale and zero per 256), the INT8 weight (1 byte per element, a scale
    and zero per 256), the lazy update's leading vector and queue, the counters."""
    param = nn.Parameter(torch.zeros(256, 1024))
    param.grad = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0))
    optimizer = QGaLore([param], rank=64)
    optimizer.step()
    moments = 2 * (64 * 1024 + 4 * (64 * 1024 // 2048))
    projector = 256 * 64 // 2 + 2 * 4 * (256 * 64 // 256)
    weight = 256 * 1024 + 2 * 4 * (256 * 1024 // 256)
    lazy = 4 * 256 + 4 * 5 + 8 + 8  # leading vector, similarities, interval, count
    counters = 4 + 8  # step (float32), stochastic-rounding stream (int64)
    assert optimizer_state_bytes(optimizer) == moments + projector + weight + lazy + counters


def test_resume_restores_codes_and_streams_exactly_in_float32() -> None:
    """torch's load_state_dict would cast the uint8 codes and the int64 stream to float32 (the stream of seed 10^7
    is not a float32 integer); the resumed run must continue bit for bit."""
    optimizer, params = _trained(steps=4, dtype=torch.float32, seed=10**7)
    saved = copy.deepcopy(optimizer.state_dict())
    resumed_params = [nn.Parameter(p.detach().clone()) for p in params]
    resumed = QGaLore(resumed_params, lr=1e-2, rank=2, update_proj_gap=3, weight_group_size=8, seed=10**7)
    resumed.load_state_dict(saved)
    assert resumed.state[resumed_params[0]]["sr_stream"].dtype == torch.int64
    assert resumed.state[resumed_params[0]]["projector_int"]["codes"].dtype == torch.uint8
    generator = torch.Generator().manual_seed(5)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=generator) for p in params]
        for run in ((optimizer, params), (resumed, resumed_params)):
            for p, g in zip(run[1], grads, strict=True):
                p.grad = g.clone()
            run[0].step()
    for a, b in zip(params, resumed_params, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name, value", [("proj_bits", 9), ("weight_bits", 0), ("proj_group_size", 0)])
def test_invalid_quantization_settings_name_themselves(name: str, value: int) -> None:
    with pytest.raises(ValueError, match=name):
        QGaLore([nn.Parameter(torch.zeros(3))], **{name: value})
