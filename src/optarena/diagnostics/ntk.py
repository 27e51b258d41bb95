"""Empirical neural tangent kernel (NTK) of a network, and how far it moves during training.

Jacot, Gabriel, Hongler, "Neural Tangent Kernel: Convergence and Generalization in Neural Networks",
arXiv:1806.07572, Section 4 (the NTK of a network with parameters theta is
Theta(x, x') = sum_p d f(x) / d theta_p (d f(x') / d theta_p)^T, i.e. J(x) J(x')^T with J the Jacobian of the
outputs with respect to all trainable parameters). The "empirical" NTK is that sum at the network's current, finite
parameters; in the infinite-width limit it stays constant during training, at finite width it drifts.

The computation follows the torch.func recipe (pytorch.org/tutorials/intermediate/neural_tangent_kernels.html,
"Jacobian contraction"): per-example Jacobians from vmap(jacrev(functional_call)), contracted over the parameters.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

NTKMode = Literal["full", "trace", "diagonal"]
NTK_MODES: tuple[str, ...] = ("full", "trace", "diagonal")

# einsum contractions of two per-example Jacobians [N, O, P] and [M, O, P] (one per parameter tensor, summed):
_CONTRACTIONS = {
    "full": "naf,mbf->nmab",  # Theta[n, m, a, b] = <d f_a(x_n), d f_b(x'_m)>
    "trace": "naf,maf->nm",  # sum_a Theta[n, m, a, a]
    "diagonal": "naf,maf->nma",  # Theta[n, m, a, a]
}


def _check_mode(mode: str) -> None:
    if mode not in _CONTRACTIONS:
        raise ValueError(f"mode must be one of {', '.join(NTK_MODES)}; got {mode!r}")


def _jacobians(model: nn.Module, params: dict[str, torch.Tensor], inputs: torch.Tensor) -> list[torch.Tensor]:
    """Per-example Jacobians of the flattened output, one [N, O, P_i] tensor per parameter tensor."""

    def output_of_one_example(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, params, (x.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(output_of_one_example), in_dims=(None, 0))(params, inputs)
    return [j.flatten(2) for j in jac.values()]


def empirical_ntk(
    model: nn.Module, inputs: torch.Tensor, inputs2: torch.Tensor | None = None, *, mode: NTKMode = "full"
) -> torch.Tensor:
    """The empirical NTK Theta(x_n, x'_m) = J(x_n) J(x'_m)^T over all parameters that require grad.

    `inputs` [N, ...] and `inputs2` [M, ...] (default: `inputs`) are batches; each example's output is flattened to
    O values. Returns, by `mode`:
    - "full": [N, M, O, O], the whole kernel;
    - "trace": [N, M], the trace over the outputs, sum_a Theta[n, m, a, a];
    - "diagonal": [N, M, O], the output-diagonal Theta[n, m, a, a].
    The model is evaluated as it is (its train/eval mode is left alone): put BatchNorm or dropout models in eval mode,
    since the Jacobians are taken one example at a time. The parameters are not modified and no .grad is written.
    Memory: the Jacobians hold (N + M) * O * P values for P parameters.
    """
    _check_mode(mode)
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no parameters that require grad, so its NTK is empty")
    jac1 = _jacobians(model, params, inputs)
    jac2 = jac1 if inputs2 is None else _jacobians(model, params, inputs2)
    contraction = _CONTRACTIONS[mode]
    return sum(torch.einsum(contraction, j1, j2) for j1, j2 in zip(jac1, jac2, strict=True))


def ntk_drift(ntk_a: torch.Tensor, ntk_b: torch.Tensor) -> float:
    """Relative Frobenius change of the NTK: ||Theta_b - Theta_a||_F / ||Theta_a||_F.

    Normalised by the reference (earlier) kernel `ntk_a`, so that the value is the fraction by which the kernel has
    moved away from where it started; this is the quantity that the NTK theory predicts to vanish as the width grows
    (Jacot et al., Section 4: the kernel stays constant during training in the infinite-width limit) and is
    invariant to rescaling both kernels. Both kernels must be computed on the same inputs with the same mode.
    """
    if ntk_a.shape != ntk_b.shape:
        raise ValueError(f"ntk_a and ntk_b must have the same shape; got {tuple(ntk_a.shape)} and {tuple(ntk_b.shape)}")
    reference = torch.linalg.vector_norm(ntk_a)
    if reference == 0:
        raise ValueError("ntk_a must be non-zero: the drift is relative to its Frobenius norm")
    return float(torch.linalg.vector_norm(ntk_b - ntk_a) / reference)


class NTKTracker:
    """Records the empirical NTK of `model` on a fixed probe batch at chosen steps of any training loop.

    tracker = NTKTracker(model, probe_x)
    tracker.record(0)
    for step in range(1, steps + 1):
        ...  # one optimizer step
        if step % 100 == 0:
            tracker.record(step)
    tracker.drift()  # [(step, ||Theta_step - Theta_first||_F / ||Theta_first||_F), ...]
    """

    def __init__(self, model: nn.Module, probe_inputs: torch.Tensor, *, mode: NTKMode = "full") -> None:
        _check_mode(mode)
        self.model = model
        self.probe_inputs = probe_inputs.detach()
        self.mode = mode
        self.steps: list[int] = []
        self.kernels: list[torch.Tensor] = []

    def record(self, step: int) -> torch.Tensor:
        """Compute the NTK on the probe batch at the model's current parameters, store it under `step`, return it."""
        if self.steps and step <= self.steps[-1]:
            raise ValueError(f"step must increase from one record to the next; got {step} after {self.steps[-1]}")
        kernel = empirical_ntk(self.model, self.probe_inputs, mode=self.mode)
        self.steps.append(step)
        self.kernels.append(kernel)
        return kernel

    def drift(self) -> list[tuple[int, float]]:
        """(step, drift from the first recorded kernel) for every record (see ntk_drift)."""
        if not self.kernels:
            raise ValueError("no NTK recorded yet: call record(step) first")
        first = self.kernels[0]
        return [(step, ntk_drift(first, kernel)) for step, kernel in zip(self.steps, self.kernels, strict=True)]
