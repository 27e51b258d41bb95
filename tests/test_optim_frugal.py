"""FRUGAL (optim.frugal) against a slow test-local implementation of the paper's Algorithm 1, written on the flat
parameter vector with an explicit orthonormal basis of the state-full subspace, step for step in float64; plus its
block schedule against the authors' cursor, its limits (density 1: AdamW; density 0: signSGD on the matrices), the
freeing of the state of state-free blocks, resumes, and its memory."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from optarena.optim.frugal import FRUGAL, active_blocks
from optarena.optim.memory import optimizer_state_bytes

F64 = torch.float64
SHAPES = [(6, 4), (3, 7), (4,), (5, 5), (2, 3, 2), (2, 9)]


class Adam:
    """Adam on a coordinate vector: m, v from zero; u = (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps)."""

    def __init__(self, size: int, beta1: float, beta2: float, eps: float) -> None:
        self.m, self.v, self.k = torch.zeros(size, dtype=F64), torch.zeros(size, dtype=F64), 0
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        self.k += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * g
        self.v = self.beta2 * self.v + (1 - self.beta2) * g * g
        return (self.m / (1 - self.beta1**self.k)) / ((self.v / (1 - self.beta2**self.k)).sqrt() + self.eps)


class AlgorithmOne:
    """FRUGAL, Algorithm 1, on x = the flattened matrices (row-major, concatenated; the other parameters keep their
    own AdamW, as the paper keeps them state-full). Every T steps a basis B (orthonormal columns) of the state-full
    subspace is chosen; Adam runs on c = B^T g, the state-free rule on g - B B^T g; x <- x (1 - lr wd) - lr B u -
    lr_free sign(g - B B^T g)."""

    def __init__(self, params: list[torch.Tensor], hp: dict) -> None:
        self.hp = hp
        self.matrices = [i for i, p in enumerate(params) if p.dim() == 2]
        self.others = [i for i, p in enumerate(params) if p.dim() != 2]
        self.shapes = [params[i].shape for i in self.matrices]
        self.sizes = [params[i].numel() for i in self.matrices]
        self.other_adams = {i: Adam(params[i].numel(), hp["beta1"], hp["beta2"], hp["eps"]) for i in self.others}
        self.cursor = None  # the authors' block cursor
        self.step_count = 0
        self.basis = None
        self.adam = None

    def _blocks(self) -> list[int]:
        """The authors' BlockOptimizer: a cursor moving by the number of active blocks, cyclically."""
        count, active = len(self.matrices), round(self.hp["density"] * len(self.matrices))
        order = self.hp["block_order"]
        if self.cursor is None:
            self.cursor = count - 1 if order == "descending" else 0
        sign = -1 if order == "descending" else 1
        chosen = [(self.cursor + sign * j) % count for j in range(active)]
        self.cursor = (self.cursor + sign * active) % count
        return chosen

    def _svd_columns(self, grad: torch.Tensor) -> torch.Tensor:
        """Columns vec(P e_i e_j^T) (left, m <= n) or vec(e_i e_j^T Q^T) (right), in the order of P^T G or G Q."""
        rows, cols = grad.shape
        left = rows <= cols
        side = rows if left else cols
        rank = round(self.hp["density"] * side)
        if rank == 0:
            return torch.zeros(rows * cols, 0, dtype=F64)
        if rank >= side:
            return torch.eye(rows * cols, dtype=F64)
        u, _, vh = torch.linalg.svd(grad)
        columns = []
        if left:
            for i in range(rank):
                for j in range(cols):
                    columns.append(torch.outer(u[:, i], torch.eye(cols, dtype=F64)[j]).reshape(-1))
        else:
            for i in range(rows):
                for j in range(rank):
                    columns.append(torch.outer(torch.eye(rows, dtype=F64)[i], vh[j]).reshape(-1))
        return torch.stack(columns, dim=1)

    def _choose_basis(self, grads: list[torch.Tensor]) -> None:
        blocks = []
        chosen = self._blocks() if self.hp["projection"] == "block" else None
        for b, (grad, size) in enumerate(zip(grads, self.sizes, strict=True)):
            if chosen is None:
                blocks.append(self._svd_columns(grad))
            else:
                blocks.append(torch.eye(size, dtype=F64) if b in chosen else torch.zeros(size, 0, dtype=F64))
        self.basis = torch.block_diag(*blocks)
        reset = self.hp["projection"] == "block" or self.hp["reset_state"]
        if self.adam is None or reset:
            self.adam = Adam(self.basis.shape[1], self.hp["beta1"], self.hp["beta2"], self.hp["eps"])

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        hp, lr = self.hp, self.hp["lr"]
        if self.step_count % hp["update_proj_gap"] == 0:
            self._choose_basis([grads[i] for i in self.matrices])
        self.step_count += 1
        for p in params:
            p.mul_(1 - lr * hp["weight_decay"])
        for i in self.others:
            params[i].sub_(lr * self.other_adams[i].direction(grads[i].reshape(-1)).view(params[i].shape))
        g = torch.cat([grads[i].reshape(-1) for i in self.matrices])
        coordinates = self.basis.T @ g
        free = g - self.basis @ coordinates
        update = lr * (self.basis @ self.adam.direction(coordinates))
        rate = lr * hp["state_free_lr_scale"]
        if hp["state_free"] == "sign_sgd":
            update = update + rate * free.sign()
        elif hp["state_free"] == "sgd":
            update = update + rate * free
        for i, piece in zip(self.matrices, update.split(self.sizes), strict=True):
            params[i].sub_(piece.view(params[i].shape))


BASE = {
    **{"lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.1, "update_proj_gap": 3},
    **{"block_order": "descending", "state_free": "sign_sgd", "state_free_lr_scale": 1.0, "reset_state": True},
}
CONFIGS = {
    "block-descending": {"projection": "block", "density": 0.5},
    "block-ascending-sgd": {
        "projection": "block",
        "density": 0.25,
        "block_order": "ascending",
        "state_free": "sgd",
        "state_free_lr_scale": 0.3,
    },  # fmt: skip
    "svd-reset-sign": {"projection": "svd", "density": 0.5},
    "svd-carry-none": {"projection": "svd", "density": 0.4, "reset_state": False, "state_free": "none"},
    "svd-sgd-low-density": {"projection": "svd", "density": 0.2, "state_free": "sgd", "state_free_lr_scale": 0.1},
}


def _gradients(params: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A gradient that depends on the parameters (so differences would compound) plus noise."""
    return [0.5 * p.detach() + torch.randn(p.shape, generator=generator, dtype=F64) for p in params]


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_matches_algorithm_one_step_by_step(config: str) -> None:
    hp = {**BASE, **CONFIGS[config]}
    generator = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(s, generator=generator, dtype=F64)) for s in SHAPES]
    reference_params = [p.detach().clone() for p in params]
    optimizer = FRUGAL(params, **hp)
    reference = AlgorithmOne(reference_params, hp)
    for step in range(20):
        grads = _gradients(params, generator)
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        with torch.no_grad():
            reference.step(reference_params, grads)
        for a, b in zip(params, reference_params, strict=True):
            error = ((a - b).abs().max() / b.abs().max()).item()
            assert error <= 1e-12, f"{config} step {step}: relative difference {error:.3g}"


@pytest.mark.parametrize("blocks, active", [(4, 1), (5, 2), (7, 3), (6, 6), (3, 0)])
@pytest.mark.parametrize("order", ["descending", "ascending"])
def test_block_schedule_is_the_authors_cursor(blocks: int, active: int, order: str) -> None:
    cursor, sign = (blocks - 1, -1) if order == "descending" else (0, 1)
    for refresh in range(12):
        expected = {(cursor + sign * j) % blocks for j in range(active)}
        assert active_blocks(refresh, blocks, active, order) == expected
        cursor = (cursor + sign * active) % blocks


def test_random_block_order_is_reproducible_and_of_the_right_size() -> None:
    chosen = [active_blocks(r, 8, 3, "random", seed=4) for r in range(6)]
    assert chosen == [active_blocks(r, 8, 3, "random", seed=4) for r in range(6)]
    assert all(len(c) == 3 and c <= set(range(8)) for c in chosen) and len({frozenset(c) for c in chosen}) > 1


def _run(optimizer_factory, steps: int = 8, seed: int = 0) -> list[nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(s, generator=generator, dtype=F64)) for s in SHAPES]
    optimizer = optimizer_factory(params)
    for _ in range(steps):
        for p, g in zip(params, _gradients(params, generator), strict=True):
            p.grad = g
        optimizer.step()
    return params


@pytest.mark.parametrize(
    "options",
    [
        {"projection": "block", "update_proj_gap": 1000},  # no refresh within the run: no restart
        {"projection": "svd", "update_proj_gap": 3, "reset_state": False},  # full rank, never restarted
    ],
)
def test_density_one_is_adamw(options: dict) -> None:
    hp = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.1}
    ours = _run(lambda ps: FRUGAL(ps, **hp, density=1.0, **options))
    adamw = _run(lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1))
    for a, b in zip(ours, adamw, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("projection", ["block", "svd"])
def test_density_zero_is_sign_sgd_on_every_matrix(projection: str) -> None:
    generator = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(s, generator=generator, dtype=F64)) for s in SHAPES]
    optimizer = FRUGAL(params, lr=1e-2, density=0.0, projection=projection, state_free_lr_scale=0.5)
    for _ in range(3):
        before = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=F64)
        optimizer.step()
        for p, b in zip(params, before, strict=True):
            if p.dim() == 2:
                assert torch.equal(p.detach(), b - 0.5e-2 * p.grad.sign())
                assert set(optimizer.state[p]) == {"step"}


def test_only_state_full_blocks_hold_adam_state() -> None:
    generator = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(8, 8, generator=generator, dtype=F64)) for _ in range(4)]
    optimizer = FRUGAL(params, density=0.25, update_proj_gap=2)  # one block at a time: 3, 2, 1, 0, 3, ...
    for step in range(8):
        for p in params:
            p.grad = torch.randn(8, 8, generator=generator, dtype=F64)
        optimizer.step()
        holding = [i for i, p in enumerate(params) if "exp_avg" in optimizer.state[p]]
        assert holding == [3 - step // 2 % 4]
        assert optimizer_state_bytes(optimizer) == 2 * 8 * 8 * 8 + 4 * 4  # one block's moments, four step counters


@pytest.mark.parametrize("options", [{"projection": "svd", "density": 0.5}, {"projection": "block", "density": 0.5}])
def test_state_dict_resume_is_exact(options: dict) -> None:
    generator = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(s, generator=generator, dtype=F64)) for s in SHAPES]
    optimizer = FRUGAL(params, update_proj_gap=3, **options)
    grads = [_gradients(params, generator) for _ in range(10)]

    def train(opt, ps, steps):
        for step_grads in steps:
            for p, g in zip(ps, step_grads, strict=True):
                p.grad = g.clone()
            opt.step()

    train(optimizer, params, grads[:4])
    saved = copy.deepcopy(optimizer.state_dict())
    resumed_params = [nn.Parameter(p.detach().clone()) for p in params]
    resumed = FRUGAL(resumed_params, update_proj_gap=3, **options)
    resumed.load_state_dict(saved)
    train(optimizer, params, grads[4:])
    train(resumed, resumed_params, grads[4:])
    for a, b in zip(params, resumed_params, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "name, value", [("projection", "columns"), ("block_order", "mirror"), ("state_free", "adam"), ("density", 1.5)]
)
def test_invalid_choices_name_themselves(name: str, value) -> None:
    with pytest.raises(ValueError, match=name):
        FRUGAL([nn.Parameter(torch.zeros(3))], **{name: value})
