"""8-bit Adam and AdamW: Adam's two moments stored block-wise quantised to 8 bits.

For training where optimizer memory matters: the moments cost 2 bytes per parameter (plus 4 bytes per block of
`block_size` elements) instead of 8. Dettmers, Lewis, Shleifer, Zettlemoyer, "8-bit Optimizers via Block-wise
Quantization", arXiv:2110.02861 (ICLR 2022), Sec. 2 ("8-bit Optimizers": block-wise quantisation, dynamic
quantisation); the maps and the quantiser are in optarena.optim.quantization. The paper's equation numbers could not
be checked while this was written, so sections are cited by name. Each step, for each parameter tensor:

    m, v     = dequantise(m codes, signed dynamic map),  dequantise(v codes, unsigned dynamic map)
    (theta, m, v) <- one step of torch.optim.AdamW (adam_8bit: torch.optim.Adam) on theta, g, m, v
                     m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2,
                     theta <- theta (1 - lr lambda) - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    m codes, v codes = quantise(m), quantise(v)              (block-wise, nearest map value, per-block absmax)

The update is torch's own (its functional `adam` / `adamw`, single-tensor path) applied to the dequantised moments,
computed in float64 for float64 parameters and in float32 otherwise (as bitsandbytes does), the parameter keeping its
dtype. Tensors with fewer than `min_8bit_size` elements keep unquantised moments in the parameter's dtype, as
torch.optim.AdamW does, so with `min_8bit_size` above every tensor's size the optimizer is torch.optim.AdamW (Adam)
step for step, bit for bit. The threshold 4096 is bitsandbytes' `min_8bit_size` (the paper sets none); the block size
2048 is the paper's (bitsandbytes' block-wise kernels use 256). Weight decay: `adamw_8bit` decouples it (AdamW,
Loshchilov & Hutter, arXiv:1711.05101); `adam_8bit` adds it to the gradient as torch.optim.Adam does. (bitsandbytes'
Adam8bit decouples it too; the two only differ when weight_decay > 0.) The paper's stable embedding layer (Sec.
2.3) is a model change (Xavier initialisation, a layer norm) plus 32-bit optimizer states for the embedding; the
model change is not included, the 32-bit states are a param group with a large `min_8bit_size`
(optarena.optim.groups.embedding_groups).

State per quantised parameter: `step`, `exp_avg_codes` / `exp_avg_sq_codes` (uint8, the parameter's shape) and
`exp_avg_absmax` / `exp_avg_sq_absmax` (float32, one per block); per unquantised one: `step`, `exp_avg`,
`exp_avg_sq`. There is one path: each tensor is dequantised, updated and requantised on its own (`foreach` is
accepted, as by every registered elementwise optimizer, and runs the same loop).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam as torch_adam
from torch.optim.adamw import adamw as torch_adamw

from optarena.optim.base import ElementwiseOptimizer, Tensors, restore_saved_states
from optarena.optim.quantization import BlockwiseQuantized, dequantize_blockwise, dynamic_map, quantize_blockwise
from optarena.optim.registry import OptimizerInfo, register
from optarena.optim.torch_baselines import ADAM_SPACE
from optarena.validation import adam_defaults, check_int

# moment -> whether its map is signed (the first moment) or unsigned (the strictly non-negative second moment)
MOMENTS = {"exp_avg": True, "exp_avg_sq": False}
QUANTIZED_KEYS = tuple(f"{moment}_{part}" for moment in MOMENTS for part in ("codes", "absmax"))


class Adam8bit(ElementwiseOptimizer):
    """Adam / AdamW with block-wise 8-bit moments; see the module docstring."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        block_size: int = 2048,
        min_8bit_size: int = 4096,
        decoupled_weight_decay: bool = True,
        foreach: bool | None = None,
    ) -> None:
        check_int("block_size", block_size, 1)
        check_int("min_8bit_size", min_8bit_size, 0)
        defaults = adam_defaults(
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            foreach,
            block_size=block_size,
            min_8bit_size=min_8bit_size,
            decoupled_weight_decay=bool(decoupled_weight_decay),
        )
        super().__init__(params, defaults)
        self._maps: dict[tuple[torch.device, bool], Tensor] = {}

    def quantization_map(self, signed: bool, device: torch.device) -> Tensor:
        """The float32 dynamic map of the first (signed) or second (unsigned) moment, on `device`."""
        key = (device, signed)
        if key not in self._maps:
            self._maps[key] = dynamic_map(signed, device=device)
        return self._maps[key]

    def extra_state_tensors(self) -> Iterator[Tensor]:
        """Tensors the optimizer holds outside `state` (the quantisation maps), for optim.memory."""
        return iter(self._maps.values())

    @staticmethod
    def is_quantized(state: dict[str, Any]) -> bool:
        return "exp_avg_codes" in state

    def _init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if param.is_complex():
            raise ValueError(f"{type(self).__name__} does not support complex parameters")
        state["step"] = torch.tensor(0.0)
        if param.numel() < group["min_8bit_size"]:
            for moment in MOMENTS:
                state[moment] = torch.zeros_like(param, memory_format=torch.preserve_format)
            return
        zeros = torch.zeros(param.shape, dtype=torch.float32, device=param.device)
        for moment, signed in MOMENTS.items():
            self._store(
                state,
                moment,
                quantize_blockwise(zeros, self.quantization_map(signed, param.device), group["block_size"]),
            )

    @staticmethod
    def _store(state: dict[str, Any], moment: str, quantized: BlockwiseQuantized) -> None:
        state[f"{moment}_codes"], state[f"{moment}_absmax"] = quantized.codes, quantized.absmax

    def _dequantized(self, state: dict[str, Any], moment: str, block_size: int, dtype: torch.dtype) -> Tensor:
        codes, absmax = state[f"{moment}_codes"], state[f"{moment}_absmax"]
        qmap = self.quantization_map(MOMENTS[moment], codes.device)
        return dequantize_blockwise(BlockwiseQuantized(codes, absmax, block_size), qmap, dtype)

    def _adam_step(
        self, group: dict[str, Any], params: Tensors, grads: Tensors, moments: list[Tensors], steps: Tensors
    ) -> None:
        """torch's single-tensor Adam / AdamW on the given tensors (it increments the steps)."""
        update = torch_adamw if group["decoupled_weight_decay"] else torch_adam
        update(
            params,
            grads,
            moments[0],
            moments[1],
            [],
            steps,
            foreach=False,
            capturable=False,
            differentiable=False,
            fused=False,
            amsgrad=False,
            beta1=group["beta1"],
            beta2=group["beta2"],
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )

    def _single_tensor_step(
        self, group: dict[str, Any], params: Tensors, grads: Tensors, states: list[dict[str, Any]]
    ) -> None:
        block_size = group["block_size"]
        plain = [i for i, state in enumerate(states) if not self.is_quantized(state)]
        if plain:
            self._adam_step(
                group,
                [params[i] for i in plain],
                [grads[i] for i in plain],
                [[states[i][moment] for i in plain] for moment in MOMENTS],
                [states[i]["step"] for i in plain],
            )
        for param, grad, state in zip(params, grads, states, strict=True):
            if not self.is_quantized(state):
                continue
            dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
            work = param if param.dtype == dtype else param.detach().to(dtype)
            moments = [self._dequantized(state, moment, block_size, dtype) for moment in MOMENTS]
            self._adam_step(group, [work], [grad.to(dtype)], [[m] for m in moments], [state["step"]])
            if work is not param:
                param.copy_(work)
            for (moment, signed), value in zip(MOMENTS.items(), moments, strict=True):
                qmap = self.quantization_map(signed, param.device)
                self._store(state, moment, quantize_blockwise(value, qmap, block_size))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load_state_dict casts every floating-point state to the parameter's dtype (and would cast the
        uint8 codes too); the quantised moments are restored here in their own dtypes."""
        super().load_state_dict(state_dict)
        restore_saved_states(self, state_dict, QUANTIZED_KEYS)


def _factory(decoupled_weight_decay: bool):
    def factory(params, lr, beta1, beta2, eps, weight_decay, block_size, min_8bit_size, foreach=None):
        return Adam8bit(
            params,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            block_size=block_size,
            min_8bit_size=min_8bit_size,
            decoupled_weight_decay=decoupled_weight_decay,
            foreach=foreach,
        )

    return factory


PAPER = (
    "Dettmers et al., 8-bit Optimizers via Block-wise Quantization, arXiv:2110.02861, Sec. 2 (block-wise dynamic "
    "quantisation of Adam's moments)"
)
# The paper reuses the 32-bit optimizer's hyperparameters unchanged ("without changes to the original optimizer
# hyperparameters"), so the search space is torch_baselines' Adam / AdamW space; the block size and the threshold
# trade memory for precision and stay at their defaults.
ADAM8BIT_DEFAULTS = {
    "lr": 1e-3,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "block_size": 2048,
    "min_8bit_size": 4096,
}


for _name, _decoupled, _weight_decay, _base in [
    ("adam_8bit", False, 0.0, "Kingma & Ba, arXiv:1412.6980, Algorithm 1"),
    ("adamw_8bit", True, 1e-2, "Loshchilov & Hutter, arXiv:1711.05101, Algorithm 2"),
]:
    register(
        OptimizerInfo(
            name=_name,
            factory=_factory(_decoupled),
            paper=f"{PAPER}; the update is {_base}",
            reference="bitsandbytes (PyPI) Adam8bit / AdamW8bit, block-wise path; torch.optim.Adam / AdamW unquantised",
            defaults={**ADAM8BIT_DEFAULTS, "weight_decay": _weight_decay},
            search_space=ADAM_SPACE,
        )
    )
