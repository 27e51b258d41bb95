"""GaLore and Fira: step-by-step agreement with numpy re-implementations of the papers' updates (float64, across
several projector changes), the AdamW fallback against torch.optim.AdamW, the shapes of the low-rank state, resuming
from a state_dict with the projector options on, and the edge cases of Fira's scaling and limiter."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from optarena import optim
from optarena.optim.fira import Fira
from optarena.optim.galore import GaLore

DOUBLE = torch.float64
ADAM = {"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6, "weight_decay": 0.1}


def gradients(shape, steps: int, seed: int = 0, growth: float = 1.0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [growth**t * torch.randn(shape, generator=generator, dtype=DOUBLE) for t in range(steps)]


def run(optimizer_cls, start: torch.Tensor, grads, **hparams) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Our optimizer on fixed gradients: the weights and the projector after every step."""
    param = torch.nn.Parameter(start.clone())
    optimizer = optimizer_cls([param], **hparams)
    weights, projectors = [], []
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
        weights.append(param.detach().numpy().copy())
        projectors.append(optimizer.state[param]["projector"].numpy().copy())
    return weights, projectors


def numpy_top_basis(g: np.ndarray, rank: int, side: str, like: np.ndarray) -> np.ndarray:
    """The top singular vectors by numpy, each column's sign matched to `like` (singular vectors are defined only
    up to sign; the moments carried across a projector change depend on the signs chosen)."""
    u, _, vh = np.linalg.svd(g, full_matrices=False)
    basis = u[:, :rank] if side == "left" else vh[:rank].T
    return basis * np.sign(np.sum(basis * like, axis=0))


def numpy_galore_fira(start, grads, ours_projectors, side, rank, gap, scale, fira, gamma=1.01, **adam):
    """GaLore's Algorithm 2 (and, with `fira`, Fira's norm-based scaling and norm-growth limiter) in numpy."""
    lr, beta1, beta2, eps, wd = adam["lr"], adam["beta1"], adam["beta2"], adam["eps"], adam["weight_decay"]
    w = start.numpy().copy()
    m = v = 0.0
    previous_norm, limited = None, 0
    weights = []
    for t, grad in enumerate(grads, start=1):
        g = grad.numpy()
        if (t - 1) % gap == 0:
            p = numpy_top_basis(g, rank, side, ours_projectors[t - 1])
        w = w * (1 - lr * wd)
        r = p.T @ g if side == "left" else g @ p
        m = beta1 * m + (1 - beta1) * r
        v = beta2 * v + (1 - beta2) * r * r
        n = (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
        back = p @ n if side == "left" else n @ p.T
        update = scale * back
        if fira:
            axis = 0 if side == "left" else 1
            phi = np.linalg.norm(n, axis=axis, keepdims=True) / np.linalg.norm(r, axis=axis, keepdims=True)
            correction = phi * (g - (p @ r if side == "left" else r @ p.T))
            norm = np.linalg.norm(correction)
            if previous_norm is not None and norm > gamma * previous_norm:
                correction *= gamma * previous_norm / norm
                norm, limited = gamma * previous_norm, limited + 1
            previous_norm = norm
            update = update + correction
        w = w - lr * update
        weights.append(w)
    return weights, limited


@pytest.mark.parametrize("optimizer_cls", [GaLore, Fira])
@pytest.mark.parametrize(
    "shape, proj_type, side",
    [((5, 9), "std", "left"), ((9, 5), "std", "right"), ((5, 9), "right", "right"), ((6, 6), "std", "left")],
)
def test_matches_numpy_reimplementation_across_projector_changes(optimizer_cls, shape, proj_type, side) -> None:
    steps, rank, gap, scale = 11, 2, 4, 0.25  # projectors at steps 0, 4 and 8 (counted from 0)
    start = torch.randn(shape, generator=torch.Generator().manual_seed(9), dtype=DOUBLE)
    grads = gradients(shape, steps, growth=1.3)  # growing gradients make Fira's limiter act
    hp = {**ADAM, "rank": rank, "update_proj_gap": gap, "scale": scale, "proj_type": proj_type}
    ours, projectors = run(optimizer_cls, start, grads, **hp)
    expected, limited = numpy_galore_fira(
        start, grads, projectors, side, rank, gap, scale, fira=optimizer_cls is Fira, **ADAM
    )
    for t in (0, 4, 8):  # our projector spans numpy's top singular subspace
        basis = numpy_top_basis(grads[t].numpy(), rank, side, projectors[t])
        np.testing.assert_allclose(projectors[t], basis, rtol=0, atol=1e-12)
    for a, b in zip(ours, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    if optimizer_cls is Fira:
        assert 0 < limited < steps - 1  # the limiter both acted and let steps through


def test_parameters_that_are_not_projected_take_torch_adamw() -> None:
    shapes = [(5,), (2, 3, 2), (3, 8), (1, 7)]  # a vector, a 3-d tensor, matrices whose smaller side is <= the rank
    params = [
        torch.nn.Parameter(torch.randn(s, generator=torch.Generator().manual_seed(i), dtype=DOUBLE))
        for i, s in enumerate(shapes)
    ]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = GaLore(params, **ADAM, rank=3)
    theirs = torch.optim.AdamW(
        twins, lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]), eps=ADAM["eps"], weight_decay=ADAM["weight_decay"]
    )
    for step in range(20):
        for i, (p, q) in enumerate(zip(params, twins, strict=True)):
            grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(100 * step + i), dtype=DOUBLE)
            p.grad, q.grad = grad, grad.clone()
        ours.step()
        theirs.step()
        for p, q in zip(params, twins, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    assert all("projector" not in ours.state[p] for p in params)


@pytest.mark.parametrize("optimizer_cls", [GaLore, Fira])
@pytest.mark.parametrize(
    "shape, settings, projector_shape, moment_shape",
    [
        ((6, 20), {"rank": 2}, (6, 2), (2, 20)),  # left: P is m x r, moments r x n
        ((20, 6), {"rank": 2}, (6, 2), (20, 2)),  # right: Q is n x r, moments m x r
        ((6, 20), {"rank": 2, "proj_type": "right"}, (20, 2), (6, 2)),
        ((8, 40), {"rank_fraction": 0.25}, (8, 2), (2, 40)),
    ],
)
def test_low_rank_state_shapes(optimizer_cls, shape, settings, projector_shape, moment_shape) -> None:
    param = torch.nn.Parameter(torch.zeros(shape))
    bias = torch.nn.Parameter(torch.zeros(shape[0]))
    optimizer = optimizer_cls([param, bias], **settings)
    param.grad, bias.grad = torch.randn(shape), torch.randn(shape[0])
    optimizer.step()
    state = optimizer.state[param]
    expected = {"step": (), "projector": projector_shape, "exp_avg": moment_shape, "exp_avg_sq": moment_shape}
    if optimizer_cls is Fira:
        expected["residual_norm"] = ()
    assert {key: tuple(value.shape) for key, value in state.items()} == expected
    assert {key: tuple(value.shape) for key, value in optimizer.state[bias].items()} == {
        "step": (),
        "exp_avg": (shape[0],),
        "exp_avg_sq": (shape[0],),
    }


def test_state_is_smaller_than_adams_on_a_wide_matrix() -> None:
    param = torch.nn.Parameter(torch.zeros(64, 256))
    optimizer = GaLore([param], rank=8)
    param.grad = torch.randn(64, 256)
    optimizer.step()
    elements = sum(value.numel() for value in optimizer.state[param].values())
    assert elements == 1 + 64 * 8 + 2 * 8 * 256  # step, projector, two r x n moments
    assert elements < 2 * 64 * 256 / 7


@pytest.mark.parametrize("name", ["galore", "fira"])
@pytest.mark.parametrize(
    "options",
    [{}, {"svd": "randomized"}, {"lazy_update": True, "lazy_threshold": 0.0, "lazy_window": 1}],
    ids=["exact", "randomized", "lazy"],
)
def test_state_dict_round_trip_with_projection(name, options) -> None:
    def make(params):
        return optim.create(name, params, lr=1e-2, weight_decay=0.1, rank=2, update_proj_gap=3, **options)

    def train(optimizer, params, steps, start):
        for step in range(start, start + steps):
            generator = torch.Generator().manual_seed(step)
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator, dtype=DOUBLE)
            optimizer.step()

    shapes = [(5, 9), (9, 5), (4,)]
    params = [
        torch.nn.Parameter(torch.randn(s, generator=torch.Generator().manual_seed(1), dtype=DOUBLE)) for s in shapes
    ]
    optimizer = make(params)
    train(optimizer, params, 7, 0)
    saved = copy.deepcopy(optimizer.state_dict())
    assert all(torch.is_tensor(v) for state in saved["state"].values() for v in state.values())
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    train(optimizer, params, 8, 7)
    resumed = make(resumed_params)
    resumed.load_state_dict(saved)
    train(resumed, resumed_params, 8, 7)
    for a, b in zip(params, resumed_params, strict=True):
        assert torch.equal(a, b)
    if options.get("lazy_update"):
        assert int(optimizer.state[params[0]]["proj_interval"]) > 3  # the interval grew and was restored


@pytest.mark.parametrize("name", ["galore", "fira"])
def test_randomized_svd_is_reproducible_and_leaves_the_global_rng_alone(name) -> None:
    def final_weights():
        param = torch.nn.Parameter(torch.zeros(12, 30, dtype=DOUBLE))
        optimizer = optim.create(name, [param], rank=3, update_proj_gap=2, svd="randomized", seed=4)
        for grad in gradients((12, 30), 6):
            param.grad = grad
            optimizer.step()
        return param.detach()

    before = torch.get_rng_state()
    first = final_weights()
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, final_weights())


@pytest.mark.parametrize("optimizer_cls", [GaLore, Fira])
def test_bfloat16_projected_matrix(optimizer_cls) -> None:
    param = torch.nn.Parameter(torch.randn(6, 10).to(torch.bfloat16))
    before = param.detach().clone()
    optimizer = optimizer_cls([param], rank=2, update_proj_gap=2, weight_decay=0.1)
    for grad in gradients((6, 10), 5):
        param.grad = grad.to(torch.bfloat16)
        optimizer.step()
    assert torch.isfinite(param).all() and not torch.equal(param.detach(), before)
    assert all(value.dtype == torch.bfloat16 for key, value in optimizer.state[param].items() if key != "step")


def test_fira_zero_columns_and_a_zero_first_correction() -> None:
    """A zero projected column gets phi = 0 (not 0/0); a zero correction on the first step does not pin later ones
    to zero (the limiter acts only against a positive previous norm)."""
    param = torch.nn.Parameter(torch.zeros(5, 9, dtype=DOUBLE))
    optimizer = Fira([param], rank=2, update_proj_gap=100)
    param.grad = torch.zeros(5, 9, dtype=DOUBLE)
    optimizer.step()
    assert torch.equal(param.detach(), torch.zeros(5, 9, dtype=DOUBLE))
    assert float(optimizer.state[param]["residual_norm"]) == 0.0
    param.grad = gradients((5, 9), 1)[0]
    optimizer.step()
    assert float(optimizer.state[param]["residual_norm"]) > 0.1
    assert torch.isfinite(param).all()


def test_fira_limiter_off_with_an_infinite_limit_and_residual_is_applied() -> None:
    """With gamma = inf Fira is GaLore plus phi (G - P R); with a full-rank-free residual (a gradient inside the
    subspace) it is exactly GaLore."""
    start = torch.randn(5, 9, generator=torch.Generator().manual_seed(2), dtype=DOUBLE)
    grads = gradients((5, 9), 6, growth=2.0)
    hp = {**ADAM, "rank": 2, "update_proj_gap": 3, "scale": 0.25}
    fira, projectors = run(Fira, start, grads, **hp, norm_growth_limit=float("inf"))
    expected, limited = numpy_galore_fira(start, grads, projectors, "left", 2, 3, 0.25, fira=True, gamma=np.inf, **ADAM)
    assert limited == 0
    for a, b in zip(fira, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    basis = torch.linalg.svd(grads[0])[0][:, :2]
    inside = [basis @ basis.mT @ g for g in gradients((5, 9), 3, seed=3)]  # rank <= 2, in one fixed subspace
    galore_weights, _ = run(GaLore, start, inside, **hp)
    fira_weights, _ = run(Fira, start, inside, **hp)
    for a, b in zip(galore_weights, fira_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    "optimizer_cls, settings, name",
    [
        (Fira, {"norm_growth_limit": 0.5}, "norm_growth_limit"),
        (GaLore, {"proj_type": "full"}, "proj_type"),
        (GaLore, {"rank_fraction": 2.0}, "rank_fraction"),
        (Fira, {"svd": "power"}, "svd"),
        (GaLore, {"beta1": 1.0}, "beta1"),
    ],
)
def test_invalid_hyperparameters(optimizer_cls, settings, name) -> None:
    with pytest.raises(ValueError, match=name):
        optimizer_cls([torch.nn.Parameter(torch.zeros(3, 4))], **settings)


@pytest.mark.parametrize("name", ["galore", "fira"])
def test_sparse_gradients_are_rejected(name) -> None:
    embedding = torch.nn.Embedding(6, 3, sparse=True)
    embedding(torch.tensor([0, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        optim.create(name, embedding.parameters()).step()
