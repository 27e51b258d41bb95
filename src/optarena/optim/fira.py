"""Fira: GaLore plus the gradient outside the subspace, scaled as Adam would scale it, for full-rank training.

Chen et al., "Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank Constraint?", arXiv:2410.01623,
Algorithm 1 ("Fira with Adam", Appendix A.1): the column-wise norm-based scaling (Sec. 4.1, Eqn. 11; the matrix
form is Eqn. 10) and the norm-growth limiter (Sec. 4.2, gamma = 1.01 from Sec. 4.3). Numbers from a full text of the
paper's later (NeurIPS 2025) version; the formulas were also checked against the authors' code,
github.com/xichen-fy/Fira `optimizer_torch/fira_adamw.py`, and pytorch-optimizer's Fira.

On a projected matrix (left projection: R_t = P_t^T G_t is r x n; a right projection works on rows instead of
columns), with GaLore's subspace Adam (galore.py) giving N_t = psi_t(R_t) = m_hat_t / (sqrt(v_hat_t) + eps):

    norm-based scaling   phi_t,i = ||N_t[:, i]|| / ||R_t[:, i]||          (one factor per column i of R_t)
                         S_t     = phi_t (G_t - P_t R_t)                  (column i scaled by phi_t,i)
    norm-growth limiter  if ||S_t|| > gamma ||S_{t-1}||:  S_t <- S_t * gamma ||S_{t-1}|| / ||S_t||
    update               W_t = W_{t-1} - lr * (alpha P_t N_t + S_t + lambda W_{t-1})

so the part of the gradient that GaLore discards is applied too, with Adam's column-wise scaling of the subspace
part as a stand-in for the full-rank Adam scaling it has no state for; the limiter caps the growth of the
correction's norm at gamma per step (1.01 in the paper) to avoid loss spikes, e.g. when the subspace switches.
||S_{t-1}|| is the norm after limiting. Where the formulas are undefined they are completed as follows: a column
with ||R_t[:, i]|| = 0 gets phi = 0, and the limiter does nothing on a parameter's first step or when the previous
correction was 0 (otherwise a single zero correction, e.g. a gradient of rank <= r, would pin S to 0 for good).
Everything else (projection, fallback to AdamW for parameters that are not projected, defaults lr 0.01, alpha 0.25,
T 200, rank 128, eps 1e-6) is GaLore's, as in the paper's and the authors' setup.

`reference_compat=True` reproduces pytorch-optimizer 4.1.0's Fira (and the authors' code, which it follows), which
differs from the above in:
1. the residual is G_t - alpha P_t R_t (their back-projection carries the scale), not G_t - P_t R_t;
2. phi and the limiter use the moments without bias correction, N' = m / (sqrt(v) + eps) and
   phi' = ||N'[:, i]|| / (||R[:, i]|| + 1e-8); the update is lr * sqrt(1 - beta2^t) / (1 - beta1^t) (alpha P N' + S');
   the limiter divides by max(||S'_t|| / (||S'_{t-1}|| + 1e-8), gamma) / gamma;
3. weight decay after the update, W <- (W - lr u)(1 - lr lambda);
4. the SVD in float32 (also for float64 gradients), and square matrices projected from the right;
5. the projector recomputed at 1-based steps 1, T, 2T, ... (0-based 0, T-1, 2T-1, ...) rather than 0, T, 2T.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from optarena.optim.galore import GALORE_DEFAULTS, GALORE_SEARCH_SPACE, GaLore, galore_defaults
from optarena.optim.projection import LowRankProjector
from optarena.optim.registry import OptimizerInfo, register
from optarena.validation import check_range

_REFERENCE_EPS = 1e-8  # pytorch-optimizer's and the authors' guard in phi and in the limiter


class Fira(GaLore):
    """Fira with Adam (arXiv:2410.01623); see the module docstring."""

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
        norm_growth_limit: float = 1.01,
        reference_compat: bool = False,
    ) -> None:
        # gamma < 1 would shrink the correction geometrically whatever the gradients; inf turns the limiter off
        check_range("norm_growth_limit", norm_growth_limit, 1.0, high_open=False)
        defaults = galore_defaults(locals())
        torch.optim.Optimizer.__init__(self, params, {**defaults, "norm_growth_limit": norm_growth_limit})

    def _projector(self, group: dict[str, Any]) -> LowRankProjector:
        if group["reference_compat"]:
            return LowRankProjector.from_group(group, svd_in_float32=True, square_side="right", schedule_offset=1)
        return super()._projector(group)

    def _init_state(self, param: Tensor, state: dict[str, Any], rank: int, projector: LowRankProjector) -> None:
        super()._init_state(param, state, rank, projector)
        if rank:
            state["residual_norm"] = param.new_zeros(())

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
        """alpha * P N_t + S_t: GaLore's direction plus the scaled, limited residual."""
        compat = group["reference_compat"]
        side = projector.side_for(grad)
        residual = grad - projector.project_back(low_rank, state, side, scaled=compat)
        dim = projector.subspace_dim(grad)
        normalized_norms = torch.linalg.vector_norm(normalized, dim=dim, keepdim=True)
        low_rank_norms = torch.linalg.vector_norm(low_rank, dim=dim, keepdim=True)
        if compat:
            scaling = normalized_norms / (low_rank_norms + _REFERENCE_EPS)
        else:
            scaling = torch.where(low_rank_norms > 0, normalized_norms / low_rank_norms, 0.0)
        correction = residual.mul_(scaling)
        self._limit_growth(group, correction, state["residual_norm"], t)
        return projector.project_back(normalized, state, side).add_(correction)

    @staticmethod
    def _limit_growth(group: dict[str, Any], correction: Tensor, previous_norm: Tensor, t: int) -> None:
        """The norm-growth limiter, in place on `correction`; `previous_norm` becomes the limited norm."""
        gamma = group["norm_growth_limit"]
        norm = torch.linalg.vector_norm(correction)
        if group["reference_compat"]:
            if t > 1:
                limiter = torch.clamp(norm / (previous_norm + _REFERENCE_EPS), min=gamma) / gamma
                correction.div_(limiter)
                norm = norm / limiter
        elif t > 1:
            ceiling = previous_norm * gamma
            factor = torch.where((previous_norm > 0) & (norm > ceiling), ceiling / norm, 1.0)
            correction.mul_(factor)
            norm = norm * factor
        previous_norm.copy_(norm)


register(
    OptimizerInfo(
        name="fira",
        factory=Fira,
        paper=(
            "Chen et al., Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank Constraint?, "
            "arXiv:2410.01623, Algorithm 1 (norm-based scaling, Eqn. 11; norm-growth limiter, Sec. 4.2)"
        ),
        reference="pytorch-optimizer 4.1.0 Fira; authors' code github.com/xichen-fy/Fira",
        defaults={**GALORE_DEFAULTS, "norm_growth_limit": 1.01},
        # Fira's pre-training runs use GaLore's settings (lr 0.01, alpha 0.25, T 200, the same ranks).
        search_space=GALORE_SEARCH_SPACE,
    )
)
