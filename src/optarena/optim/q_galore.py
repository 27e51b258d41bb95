"""Q-GaLore: GaLore with an INT4 projector, INT8 weights updated by stochastic rounding, 8-bit Adam moments and the
lazy layer-adaptive subspace update, to train with low-precision weights and little optimizer memory.

Zhang et al., "Q-GaLore: Quantized GaLore with INT4 Projection and Layer-Adaptive Low-Rank Gradients",
arXiv:2407.08296 (v1). The paper numbers no equations and has no algorithm box (its pipeline is Figure 4, Sec. 3.5),
so sections are cited: INT8 block-wise weights (Sec. 3.1), the lazy layer-adaptive subspace update (Sec. 3.2), the
INT4 projector (Sec. 3.3) and stochastic rounding (Sec. 3.4). On a projected matrix W (m x n; a right projector
Q = V[:, :r] for m > n, see projection.py), with t counted from 1 and s = t - 1:

    P_t     = deq(Q4(U[:, :r] of SVD(G_t)))  when s mod T_l = 0, else P_{t-1}          (INT4 projector)
    R_t     = P_t^T G_t
    M_t     = beta1 M_{t-1} + (1 - beta1) R_t,   V_t = beta2 V_{t-1} + (1 - beta2) R_t^2   (8-bit moments)
    N_t     = (M_t / (1 - beta1^t)) / (sqrt(V_t / (1 - beta2^t)) + eps)
    W_t     = deq(Q8_SR(W_{t-1} (1 - lr lambda) - lr alpha P_t N_t))                         (INT8 weights)

Quantisation (Q_b, b bits; the authors' q-galore-torch): the tensor, flattened (the projector as GaLore stores it,
P = U[:, :r] (m x r) or Q^T = Vh[:r] (r x n)), is cut into groups of `group_size` consecutive elements (the last
may be shorter) and each group is quantised asymmetrically by its minimum and maximum,

    s = max(max - min, 1e-5) / (2^b - 1),   z = clamp(-round(min / s), 0, 2^b - 1),
    q = clamp(round(x / s) + z, 0, 2^b - 1),   deq(q) = (q - z) s,

(the floor 1e-5 on the range is the authors' guard for a constant group; the clamped zero point means that a
group lying far on one side of 0 is clipped, as in the authors' quantiser). Stochastic rounding F_SR replaces
round(x / s) by ceil(x / s) with probability x / s - floor(x / s) and floor(x / s) otherwise, so that updates
smaller than a quantisation step survive in expectation. The uniforms come from a torch.Generator seeded by
`rounding_seed(stream, t)` -- a per-parameter stream (from `seed` and the parameter's position in the optimizer)
and the step -- so runs are reproducible, the global RNG is never touched, and a state_dict resume continues bit for
bit (the stream and the step are in the state). INT4 codes are packed two to a byte.

The simulation runs on any device: the parameter holds the dequantised INT8 weight deq(q) (so a model reads the
exact INT8 weight), and the state holds what a real INT8 training keeps -- `weight_int` {codes (uint8), scales,
zeros} -- from which the parameter is written after every step. `projector_int` {codes (packed uint8), scales,
zeros} is the INT4 projector; only its dequantised value is used, as in the reference. The quantisers compute in
float64 for float64 parameters and in float32 otherwise; scales and zeros are stored in the parameter's dtype.

Which parameters: as in the authors' training script, the matrices GaLore projects (smaller side above the rank)
get the projector and INT8 weights; every other parameter takes the plain AdamW step with full-precision weights.
Moments of at least `min_8bit_size` elements are stored block-wise quantised to 8 bits (optim.quantization, as in
optim.adam8bit); the authors' optimizer is bitsandbytes' 8-bit AdamW. The lazy layer-adaptive subspace update
(the projector recomputed less often once its leading singular vector stops moving) is the shared projector's
`lazy_update` (projection.py), on by default here; its similarity uses the unquantised leading vector, kept as
`leading_vector`.

Defaults are the authors' LLaMA-60M pre-training settings (scripts/pretrain_c4/llama_60m.sh and run_pretrain.py of
github.com/VITA-Group/Q-GaLore): lr 0.015, rank 128, alpha 0.25, T 200, weight decay 0, betas (0.9, 0.95), eps 1e-8
(bitsandbytes' default), projector INT4 in groups of 256, weights INT8 in groups of 256 with stochastic rounding, lazy
update threshold 0.4, window 5, growth 2. Weight decay is decoupled and applied before the update (as GaLore here).

`reference_compat=True` reproduces q-galore-torch 1.0's simulated optimizer (`QGaLoreAdamW8bit_simulate`) run by
bitsandbytes 0.50's CPU kernels, which depart from the above in:
1. Adam arithmetic: bitsandbytes' 32-bit kernel (moments below min_8bit_size) works in float32 whatever the
   parameter dtype: float32 moments of the float32-cast gradient, u = m / (sqrt(v) + eps sqrt(1 - beta2^t)) taken
   with step lr sqrt(1 - beta2^t) / (1 - beta1^t) (the same step as above in exact arithmetic); the low-rank step is
   rounded to float32, and a parameter that is not projected is rounded to float32 at every step;
2. weight decay on projected matrices is applied after the update, W <- (W - lr alpha P N) (1 - lr lambda), before
   the rounding to INT8;
3. the SVD runs in float32 (also for float64 gradients) and square matrices are projected from the right.
Moments of min_8bit_size elements or more are quantised by optim.quantization in both modes (bitsandbytes' 8-bit
kernel is not reproduced), and the reference's global-RNG stochastic rounding is replaced by the generator above.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from optarena.optim.base import params_with_grad, restore_saved_states, run_closure
from optarena.optim.galore import GALORE_SEARCH_SPACE, galore_defaults
from optarena.optim.projection import LowRankProjector
from optarena.optim.quantization import BlockwiseQuantized, dequantize_blockwise, dynamic_map, quantize_blockwise
from optarena.optim.registry import OptimizerInfo, register
from optarena.validation import check_int

RANGE_FLOOR = 1e-5  # the authors' guard against a constant group (max == min)
_STRIDE = 1_000_003
_LAZY_KEYS = ("proj_interval", "similarities", "similarity_count")
MOMENTS = {"exp_avg": True, "exp_avg_sq": False}  # moment -> signed map (as optim.adam8bit)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def rounding_seed(stream: int, step: int) -> int:
    """The seed of the generator that draws a parameter's stochastic-rounding uniforms at step `step` (from 1)."""
    return (stream * _STRIDE + step) % 2**63


def _groups(values: Tensor, group_size: int) -> Tensor:
    """The flattened tensor as [groups, group_size]; a short last group is padded with its own last element, which
    leaves its minimum and maximum unchanged."""
    flat = values.reshape(-1)
    padding = -flat.numel() % group_size
    return torch.cat([flat, flat[-1:].expand(padding)]).view(-1, group_size)


def quantize_groups(
    values: Tensor, bits: int, group_size: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Group-wise asymmetric min-max quantisation (module docstring): (codes, scales, zeros), the codes as uint8 in
    the tensor's flattened order, one scale and zero point per group in the tensor's dtype. With a generator the
    codes are stochastically rounded, with uniforms drawn from it; otherwise rounded to nearest (ties to even)."""
    top = 2**bits - 1
    grouped = _groups(values, group_size)
    low = grouped.amin(dim=1, keepdim=True)
    scales = (grouped.amax(dim=1, keepdim=True) - low).clamp(min=RANGE_FLOOR) / top
    zeros = (-torch.round(low / scales)).clamp_(0, top)
    scaled = grouped / scales
    if generator is None:
        rounded = torch.round(scaled)
    else:
        down = torch.floor(scaled)
        uniforms = torch.rand(scaled.shape, generator=generator, dtype=scaled.dtype, device=scaled.device)
        rounded = torch.where(uniforms < scaled - down, torch.ceil(scaled), down)
    codes = torch.clamp(rounded + zeros, 0, top).reshape(-1)[: values.numel()]
    return codes.to(torch.uint8), scales.view(-1), zeros.view(-1)


def dequantize_groups(codes: Tensor, scales: Tensor, zeros: Tensor, group_size: int, shape: torch.Size) -> Tensor:
    """(q - z) s per group, in the dtype of `scales`, as a tensor of `shape`."""
    numel = math.prod(shape)
    grouped = _groups(codes[:numel].to(scales.dtype), group_size)
    return ((grouped - zeros.unsqueeze(1)) * scales.unsqueeze(1)).reshape(-1)[:numel].view(shape)


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Pack b-bit codes (uint8, flat) 8 // b to a byte, the first code in the lowest bits."""
    per_byte = 8 // bits
    padded = torch.cat([codes, codes.new_zeros(-codes.numel() % per_byte)]).view(-1, per_byte)
    packed = torch.zeros(padded.shape[0], dtype=torch.uint8, device=codes.device)
    for i in range(per_byte):
        packed |= padded[:, i] << (i * bits)
    return packed


def unpack_codes(packed: Tensor, bits: int, numel: int) -> Tensor:
    """The inverse of pack_codes: `numel` codes as flat uint8."""
    per_byte, mask = 8 // bits, 2**bits - 1
    return torch.stack([(packed >> (i * bits)) & mask for i in range(per_byte)], dim=1).reshape(-1)[:numel]


class QGaLore(torch.optim.Optimizer):
    """Q-GaLore with 8-bit AdamW (arXiv:2407.08296); see the module docstring."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.015,
        beta1: float = 0.9,
        beta2: float = 0.95,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        rank: int = 128,
        rank_fraction: float | None = None,
        update_proj_gap: int = 200,
        scale: float = 0.25,
        proj_type: str = "std",
        svd: str = "exact",
        svd_oversampling: int = 8,
        svd_power_iterations: int = 2,
        seed: int = 0,
        lazy_update: bool = True,
        lazy_threshold: float = 0.4,
        lazy_window: int = 5,
        lazy_growth: int = 2,
        proj_quant: bool = True,
        proj_bits: int = 4,
        proj_group_size: int = 256,
        weight_quant: bool = True,
        weight_bits: int = 8,
        weight_group_size: int = 256,
        stochastic_round: bool = True,
        min_8bit_size: int = 4096,
        moment_block_size: int = 2048,
        reference_compat: bool = False,
    ) -> None:
        for name, value in (("proj_bits", proj_bits), ("weight_bits", weight_bits)):
            check_int(name, value, 1)
            if value > 8:
                raise ValueError(f"{name} must be an integer in [1, 8] (codes are stored in bytes), got {value!r}")
        check_int("proj_group_size", proj_group_size, 1)
        check_int("weight_group_size", weight_group_size, 1)
        check_int("min_8bit_size", min_8bit_size, 0)
        check_int("moment_block_size", moment_block_size, 1)
        defaults = galore_defaults(locals())
        quantization = {
            "proj_quant": bool(proj_quant),
            "proj_bits": proj_bits,
            "proj_group_size": proj_group_size,
            "weight_quant": bool(weight_quant),
            "weight_bits": weight_bits,
            "weight_group_size": weight_group_size,
            "stochastic_round": bool(stochastic_round),
            "min_8bit_size": min_8bit_size,
            "moment_block_size": moment_block_size,
        }
        super().__init__(params, {**defaults, **quantization})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load_state_dict casts every state tensor of a floating-point parameter to its dtype, the uint8
        codes and the integer counters included; the states are restored here exactly as saved."""
        super().load_state_dict(state_dict)
        restore_saved_states(self, state_dict)

    def _projector(self, group: dict[str, Any]) -> LowRankProjector:
        compat = {"svd_in_float32": True, "square_side": "right"} if group["reference_compat"] else {}
        return LowRankProjector.from_group(group, **compat)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = run_closure(closure)
        positions = {id(p): i for i, p in enumerate(p for group in self.param_groups for p in group["params"])}
        for group in self.param_groups:
            projector = self._projector(group)
            for param in params_with_grad(self, group):
                state = self.state[param]
                rank = projector.rank_for(param)
                if not state:
                    self._init_state(group, param, state, rank, projector, positions[id(param)])
                if rank:
                    self._projected_step(group, param, state, rank, projector)
                else:
                    self._adamw_step(group, param, state)
        return loss

    def _init_state(
        self,
        group: dict[str, Any],
        param: Tensor,
        state: dict[str, Any],
        rank: int,
        projector: LowRankProjector,
        position: int,
    ) -> None:
        state["step"] = torch.tensor(0.0)
        moment_shape = param.shape
        if rank:
            projection: dict[str, Any] = {}
            projector.init_state(param, projection, rank)
            if group["proj_quant"]:
                side_length = projection.pop("projector").shape[0]
                if projector.lazy_update:
                    state["leading_vector"] = param.new_zeros(side_length)
            state.update(projection)
            moment_shape = (rank, param.shape[1]) if projector.side_for(param) == "left" else (param.shape[0], rank)
            if group["weight_quant"]:
                state["sr_stream"] = torch.tensor(group["seed"] * _STRIDE + position, dtype=torch.int64)
        moment_dtype = torch.float32 if group["reference_compat"] else param.dtype
        for moment, signed in MOMENTS.items():
            zeros = torch.zeros(moment_shape, dtype=moment_dtype, device=param.device)
            if zeros.numel() < group["min_8bit_size"]:
                state[moment] = zeros
            else:
                quantized = quantize_blockwise(zeros, dynamic_map(signed), group["moment_block_size"])
                state[f"{moment}_codes"], state[f"{moment}_absmax"] = quantized.codes, quantized.absmax

    # ---- moments ----

    def _adam(self, group: dict[str, Any], state: dict[str, Any], grad: Tensor, t: int) -> tuple[Tensor, float]:
        """Update the moments with `grad`; return Adam's direction d and the factor a of the step a * d: the paper's
        (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) with -lr, or (reference_compat) bitsandbytes' float32
        m / (sqrt(v) + eps sqrt(1 - beta2^t)) with -lr sqrt(1 - beta2^t) / (1 - beta1^t)."""
        compat = group["reference_compat"]
        exp_avg, exp_avg_sq = moments = self._load_moments(group, state, grad)
        grad = grad.to(exp_avg.dtype)
        beta1, beta2, eps, lr = group["beta1"], group["beta2"], group["eps"], group["lr"]
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if compat:
            correction1, correction2 = 1.0 - beta1**t, math.sqrt(1.0 - beta2**t)
            direction, alpha = exp_avg / (exp_avg_sq.sqrt() + eps * correction2), -lr * correction2 / correction1
        else:
            denominator = exp_avg_sq.sqrt().div_(math.sqrt(1 - beta2**t)).add_(eps)
            direction, alpha = exp_avg.div(1 - beta1**t).div_(denominator), -lr
        self._store_moments(group, state, moments)
        return direction, alpha

    @staticmethod
    def _load_moments(group: dict[str, Any], state: dict[str, Any], grad: Tensor) -> tuple[Tensor, Tensor]:
        """The moments to update in place: the stored tensors, or dequantised copies of 8-bit ones (in float64 for
        float64 gradients, float32 otherwise; float32 under reference_compat)."""
        compat = group["reference_compat"]
        if "exp_avg" in state:
            if compat:  # float32, as bitsandbytes keeps them (a state_dict load casts them to the parameter dtype)
                for moment in MOMENTS:
                    state[moment] = state[moment].float()
            return state["exp_avg"], state["exp_avg_sq"]
        dtype = torch.float32 if compat else _work_dtype(grad.dtype)
        exp_avg, exp_avg_sq = (
            dequantize_blockwise(
                BlockwiseQuantized(state[f"{moment}_codes"], state[f"{moment}_absmax"], group["moment_block_size"]),
                dynamic_map(signed),
                dtype=dtype,
            )
            for moment, signed in MOMENTS.items()
        )
        return exp_avg, exp_avg_sq

    @staticmethod
    def _store_moments(group: dict[str, Any], state: dict[str, Any], moments: tuple[Tensor, Tensor]) -> None:
        """Requantise 8-bit moments after their update (the others were updated in place)."""
        if "exp_avg" in state:
            return
        for (moment, signed), value in zip(MOMENTS.items(), moments, strict=True):
            quantized = quantize_blockwise(value, dynamic_map(signed), group["moment_block_size"])
            state[f"{moment}_codes"], state[f"{moment}_absmax"] = quantized.codes, quantized.absmax

    # ---- steps ----

    def _adamw_step(self, group: dict[str, Any], param: Tensor, state: dict[str, Any]) -> None:
        """The plain AdamW step of a parameter that is not projected (full-precision weights)."""
        t = int(state["step"].add_(1).item())
        lr, weight_decay = group["lr"], group["weight_decay"]
        if group["reference_compat"]:  # bitsandbytes updates a float32 copy and writes it back
            work = param.float()
            if weight_decay > 0:
                work.mul_(1.0 - lr * weight_decay)
            direction, alpha = self._adam(group, state, param.grad, t)
            param.copy_(work.add_(direction, alpha=alpha))
            return
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)
        direction, alpha = self._adam(group, state, param.grad, t)
        param.add_(direction.to(param.dtype), alpha=alpha)

    def _projected_step(
        self, group: dict[str, Any], param: Tensor, state: dict[str, Any], rank: int, projector: LowRankProjector
    ) -> None:
        """Projected Adam step on a full-precision copy of the weight, then (weight_quant) its rounding to INT8."""
        t = int(state["step"].add_(1).item())
        lr, weight_decay, compat = group["lr"], group["weight_decay"], group["reference_compat"]
        grad = param.grad
        work = {"projector": self._current_basis(group, grad, state, rank, projector, t - 1)}
        direction, alpha = self._adam(group, state, projector.project(grad, work), t)
        if compat:  # bitsandbytes writes the step into the zeroed low-rank "parameter", in float32
            direction, alpha = torch.zeros_like(direction).add_(direction, alpha=alpha), 1.0
        weight = param.to(_work_dtype(param.dtype), copy=True)
        if weight_decay != 0 and not compat:
            weight.mul_(1 - lr * weight_decay)
        weight.add_(projector.project_back(direction.to(param.dtype), work, projector.side_for(param)), alpha=alpha)
        if weight_decay > 0 and compat:
            weight.add_(weight, alpha=-lr * weight_decay)
        if not group["weight_quant"]:
            param.copy_(weight)
            return
        generator = None
        if group["stochastic_round"]:
            generator = torch.Generator(device=param.device).manual_seed(rounding_seed(int(state["sr_stream"]), t))
        group_size = group["weight_group_size"]
        codes, scales, zeros = quantize_groups(weight, group["weight_bits"], group_size, generator)
        scales, zeros = scales.to(param.dtype), zeros.to(param.dtype)
        state["weight_int"] = {"codes": codes.view(param.shape), "scales": scales, "zeros": zeros}
        param.copy_(dequantize_groups(codes, scales, zeros, group_size, param.shape))

    def _current_basis(
        self,
        group: dict[str, Any],
        grad: Tensor,
        state: dict[str, Any],
        rank: int,
        projector: LowRankProjector,
        s: int,
    ) -> Tensor:
        """The projector used at 0-based step s (side x rank): recomputed (and requantised) when due, dequantised."""
        if not group["proj_quant"]:
            projector.refresh(grad, state, s)
            return state["projector"]
        left = projector.side_for(grad) == "left"
        side_length = grad.shape[0] if left else grad.shape[1]
        if projector.is_due(state, s):
            # the shared projector's refresh records the similarity of the previous leading vector (kept
            # unquantised) and the new one; the rest of its scratch projector is overwritten
            scratch = {key: state[key] for key in _LAZY_KEYS if key in state}
            scratch["projector"] = grad.new_zeros(side_length, rank)
            if projector.lazy_update:
                scratch["projector"][:, 0] = state["leading_vector"]
            projector.refresh(grad, scratch, s)
            basis = scratch["projector"]
            if projector.lazy_update:
                state["leading_vector"].copy_(basis[:, 0])
            stored = basis if left else basis.mT  # GaLore's layout: P (m x r) or Q^T (r x n)
            codes, scales, zeros = quantize_groups(
                stored.to(_work_dtype(grad.dtype)), group["proj_bits"], group["proj_group_size"]
            )
            state["projector_int"] = {
                "codes": pack_codes(codes, group["proj_bits"]),
                "scales": scales.to(grad.dtype),
                "zeros": zeros.to(grad.dtype),
            }
        quantized = state["projector_int"]
        shape = torch.Size((side_length, rank) if left else (rank, side_length))
        codes = unpack_codes(quantized["codes"], group["proj_bits"], rank * side_length)
        stored = dequantize_groups(codes, quantized["scales"], quantized["zeros"], group["proj_group_size"], shape)
        return stored if left else stored.mT


Q_GALORE_DEFAULTS: dict[str, Any] = {
    "lr": 0.015,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "rank": 128,
    "rank_fraction": None,
    "update_proj_gap": 200,
    "scale": 0.25,
    "proj_type": "std",
    "svd": "exact",
    "svd_oversampling": 8,
    "svd_power_iterations": 2,
    "seed": 0,
    "lazy_update": True,
    "lazy_threshold": 0.4,
    "lazy_window": 5,
    "lazy_growth": 2,
    "proj_quant": True,
    "proj_bits": 4,
    "proj_group_size": 256,
    "weight_quant": True,
    "weight_bits": 8,
    "weight_group_size": 256,
    "stochastic_round": True,
    "min_8bit_size": 4096,
    "moment_block_size": 2048,
    "reference_compat": False,
}

register(
    OptimizerInfo(
        name="q_galore",
        factory=QGaLore,
        paper=(
            "Zhang et al., Q-GaLore: Quantized GaLore with INT4 Projection and Layer-Adaptive Low-Rank Gradients, "
            "arXiv:2407.08296, Secs. 3.1-3.4"
        ),
        reference="q-galore-torch 1.0 (PyPI) QGaLoreAdamW8bit_simulate; github.com/VITA-Group/Q-GaLore",
        defaults=Q_GALORE_DEFAULTS,
        # The authors run lr 0.015 (60M, 130M), 0.01 (1B), 0.004 (7B), alpha 0.25, T 200 (500 at 7B), ranks of 1/4
        # to 1/2 of the hidden size: GaLore's ranges.
        search_space=GALORE_SEARCH_SPACE,
    )
)
