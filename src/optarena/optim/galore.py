"""GaLore: Adam with its state in a low-rank subspace of each weight matrix's gradient, to save optimizer memory.

Zhao et al., "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection", arXiv:2403.03507, Algorithm 2
(Adam with GaLore). For a matrix W (m x n, m <= n; the transposed case uses a right projector, see projection.py),
with t counted from 1 and the projector recomputed at the steps t - 1 = 0, T, 2T, ...:

    P_t  = U[:, :r] of SVD(G_t) on those steps, else P_{t-1}
    R_t  = P_t^T G_t                                              (r x n)
    M_t  = beta1 M_{t-1} + (1 - beta1) R_t,   V_t = beta2 V_{t-1} + (1 - beta2) R_t^2
    N_t  = (M_t / (1 - beta1^t)) / (sqrt(V_t / (1 - beta2^t)) + eps)
    W_t  = W_{t-1} - lr * (alpha * P_t N_t + lambda * W_{t-1})

The moments are not reset when the projector changes (as in the paper and galore-torch). The weight decay lambda
is decoupled as in AdamW (the paper's algorithm has none; its experiments use 0). Parameters that are not projected
(vectors, tensors of other orders, matrices whose smaller side is not larger than the rank; see projection.py) take
the same AdamW step with R_t = G_t, P = I and alpha = 1, as the reference trains every parameter outside its GaLore
param group. Defaults are the paper's LLaMA pre-training settings as run by the authors' scripts (lr 0.01, alpha
0.25, T 200, weight decay 0, and rank 128, that of the smallest model, LLaMA-60M; the scripts use 256 for 130M and
350M and 1024 for 1B, between 1/4 and 1/2 of the hidden size) and their AdamW's betas (0.9, 0.999) and eps 1e-6.
The arena's models are far narrower than 128, where rank 128 would project nothing, so its search space sets
`rank_fraction` (the rank as a fraction of each matrix's smaller side) instead. `lazy_update` and
`svd="randomized"` are the projector options of projection.py (Q-GaLore's lazy subspace update; a randomized SVD).

`reference_compat=True` reproduces galore-torch 1.0 (PyPI; `GaLoreAdamW` with the projected matrices in a group
carrying rank/update_proj_gap/scale/proj_type="std", the rest in a plain group), which departs from the paper in:
1. bias correction: it computes m / (sqrt(v) + eps) and folds the bias corrections into the step size,
   lr * sqrt(1 - beta2^t) / (1 - beta1^t), so eps is not bias-corrected (the transformers AdamW form);
2. weight decay: applied after the update, to the updated weights: W <- (W - lr * u)(1 - lr * lambda);
3. SVD precision: the gradient is cast to float32 for the SVD even when it is float64;
4. square matrices: projected from the right (the paper's m <= n takes the left projector).
galore-torch also projects matrices whose smaller side is at most the rank (a rotation of the full space); here they
always take AdamW, so differential tests use a rank below every matrix's smaller side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from optarena.hparams import Choice, LogUniform, SearchSpace
from optarena.optim.base import params_with_grad, run_closure
from optarena.optim.projection import LowRankProjector
from optarena.optim.registry import OptimizerInfo, register
from optarena.validation import checked_adam_hparams

# The projection settings a param group carries (projection.LowRankProjector's fields): the paper's rank, T and alpha,
# an exact SVD, and Q-GaLore's lazy-update settings (off).
PROJECTION_DEFAULTS: dict[str, Any] = {
    "rank": 128,
    "rank_fraction": None,
    "update_proj_gap": 200,
    "scale": 0.25,
    "proj_type": "std",
    "svd": "exact",
    "svd_oversampling": 8,
    "svd_power_iterations": 2,
    "seed": 0,
    "lazy_update": False,
    "lazy_threshold": 0.4,
    "lazy_window": 5,
    "lazy_growth": 2,
}


def galore_defaults(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A GaLore-family optimizer's param-group defaults, checked, from its constructor's `arguments` (its locals()):
    Adam's hyperparameters, the projection settings (PROJECTION_DEFAULTS' keys) and reference_compat."""
    adam = checked_adam_hparams(*(arguments[name] for name in ("lr", "beta1", "beta2", "eps", "weight_decay")))
    projection = {name: arguments[name] for name in PROJECTION_DEFAULTS}
    LowRankProjector(**projection)  # validates the projection settings
    return {**adam, **projection, "reference_compat": arguments["reference_compat"]}


class GaLore(torch.optim.Optimizer):
    """GaLore-AdamW (arXiv:2403.03507, Algorithm 2); see the module docstring."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-6,
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
        lazy_update: bool = False,
        lazy_threshold: float = 0.4,
        lazy_window: int = 5,
        lazy_growth: int = 2,
        reference_compat: bool = False,
    ) -> None:
        defaults = galore_defaults(locals())
        super().__init__(params, defaults)

    def _projector(self, group: dict[str, Any]) -> LowRankProjector:
        compat = {"svd_in_float32": True, "square_side": "right"} if group["reference_compat"] else {}
        return LowRankProjector.from_group(group, **compat)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = run_closure(closure)
        for group in self.param_groups:
            projector = self._projector(group)
            for param in params_with_grad(self, group):
                state = self.state[param]
                rank = projector.rank_for(param)
                if not state:
                    self._init_state(param, state, rank, projector)
                self._update(group, param, param.grad, state, rank, projector)
        return loss

    def _init_state(self, param: Tensor, state: dict[str, Any], rank: int, projector: LowRankProjector) -> None:
        state["step"] = torch.tensor(0.0)
        if rank == 0:
            moment_shape = param.shape
        else:
            projector.init_state(param, state, rank)
            moment_shape = (rank, param.shape[1]) if projector.side_for(param) == "left" else (param.shape[0], rank)
        state["exp_avg"] = param.new_zeros(moment_shape)
        state["exp_avg_sq"] = param.new_zeros(moment_shape)

    def _update(
        self,
        group: dict[str, Any],
        param: Tensor,
        grad: Tensor,
        state: dict[str, Any],
        rank: int,
        projector: LowRankProjector,
    ) -> None:
        lr, weight_decay, compat = group["lr"], group["weight_decay"], group["reference_compat"]
        t = int(state["step"].add_(1).item())
        if weight_decay != 0 and not compat:
            param.mul_(1 - lr * weight_decay)
        if rank == 0:
            direction, step_size = self._adam(group, state, grad, t)
        else:
            projector.refresh(grad, state, t - 1)
            low_rank = projector.project(grad, state)
            normalized, step_size = self._adam(group, state, low_rank, t)
            direction = self._full_rank_direction(group, grad, low_rank, normalized, state, projector, t)
        param.add_(direction, alpha=-step_size)
        if weight_decay != 0 and compat:
            param.mul_(1 - lr * weight_decay)

    @staticmethod
    def _adam(group: dict[str, Any], state: dict[str, Any], grad: Tensor, t: int) -> tuple[Tensor, float]:
        """Update the moments with `grad`; return Adam's normalized direction and the step size it is taken with:
        the paper's m_hat / (sqrt(v_hat) + eps) with lr, or (reference_compat) m / (sqrt(v) + eps) with
        lr * sqrt(1 - beta2^t) / (1 - beta1^t)."""
        beta1, beta2, eps, lr = group["beta1"], group["beta2"], group["eps"], group["lr"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1, bias_correction2 = 1 - beta1**t, 1 - beta2**t
        if group["reference_compat"]:
            return exp_avg / exp_avg_sq.sqrt().add_(eps), lr * math.sqrt(bias_correction2) / bias_correction1
        denominator = exp_avg_sq.sqrt().div_(math.sqrt(bias_correction2)).add_(eps)
        return exp_avg.div(bias_correction1).div_(denominator), lr

    def _full_rank_direction(
        self,
        group: dict[str, Any],
        grad: Tensor,
        low_rank: Tensor,
        normalized: Tensor,
        state: dict[str, Any],
        projector: LowRankProjector,
        t: int,
    ) -> Tensor:
        """GaLore's update direction: alpha * P N_t, back in the parameter's space."""
        return projector.project_back(normalized, state, projector.side_for(grad))


GALORE_DEFAULTS: dict[str, Any] = {
    "lr": 1e-2,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-6,
    "weight_decay": 0.0,
    **PROJECTION_DEFAULTS,
    "reference_compat": False,
}

# The authors run every model size with lr 0.01, alpha 0.25 and T 200, and ranks of 1/4 to 1/2 of the hidden size;
# the arena searches lr around 0.01, the rank as a fraction of each matrix's smaller side (its models are much
# narrower than 128), and T around 200.
GALORE_SEARCH_SPACE = SearchSpace(
    {
        "lr": LogUniform(1e-3, 3e-2),
        "rank_fraction": Choice((0.125, 0.25, 0.5)),
        "update_proj_gap": Choice((50, 200, 500)),
        "warmup_fraction": Choice((0.02, 0.05, 0.1)),
    }
)

register(
    OptimizerInfo(
        name="galore",
        factory=GaLore,
        paper=(
            "Zhao et al., GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection, arXiv:2403.03507, "
            "Algorithm 2 (Adam with GaLore)"
        ),
        reference="galore-torch 1.0 (PyPI) GaLoreAdamW",
        defaults=GALORE_DEFAULTS,
        search_space=GALORE_SEARCH_SPACE,
    )
)
