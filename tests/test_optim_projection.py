"""The shared low-rank projector (optarena.optim.projection): which parameters are projected and from which side,
the subspace it finds (against eigendecompositions computed by numpy), the projection round trip, the refresh
schedule, Q-GaLore's lazy subspace update (counting SVD calls) and the randomized SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optarena.optim import projection
from optarena.optim.projection import LowRankProjector, projection_rank, projection_side, top_singular_subspace

DOUBLE = torch.float64


def random_matrix(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed), dtype=DOUBLE)


def top_eigenvector_projector(gram: np.ndarray, rank: int) -> np.ndarray:
    """The orthogonal projector onto the top-`rank` eigenvectors of a symmetric matrix, by numpy's eigh."""
    _, vectors = np.linalg.eigh(gram)
    top = vectors[:, ::-1][:, :rank]
    return top @ top.T


def projector_after_refresh(grad: torch.Tensor, **settings) -> tuple[LowRankProjector, dict]:
    projector = LowRankProjector(**{"rank": 3, "update_proj_gap": 10, "scale": 1.0, **settings})
    state: dict = {}
    projector.init_state(grad, state, projector.rank_for(grad))
    assert projector.refresh(grad, state, 0)
    return projector, state


@pytest.mark.parametrize(
    "shape, rank, fraction, expected",
    [
        ((6, 8), 3, None, 3),
        ((8, 6), 5, None, 5),
        ((6, 8), 6, None, 0),  # the rank reaches the smaller side: not projected
        ((6, 8), 128, None, 0),
        ((8, 40), 128, 0.25, 2),  # floor(0.25 * 8)
        ((9, 40), 128, 0.25, 2),  # floor(2.25)
        ((3, 40), 128, 0.1, 1),  # at least 1
        ((1, 40), 128, 0.5, 0),  # rank 1 = the smaller side
        ((0, 3), 1, None, 0),
        ((5,), 1, None, 0),  # not a matrix
        ((2, 3, 4), 1, None, 0),
    ],
)
def test_projection_rank(shape, rank, fraction, expected) -> None:
    assert projection_rank(shape, rank, fraction) == expected


def test_side_by_shape() -> None:
    assert projection_side((4, 8), "std") == "left"  # m < n: P = U[:, :r], R is r x n
    assert projection_side((8, 4), "std") == "right"  # m > n: Q = V[:, :r], R is m x r
    assert projection_side((6, 6), "std") == "left"  # the paper's m <= n
    assert projection_side((6, 6), "std", square_side="right") == "right"  # the references
    assert projection_side((4, 8), "right") == "right"
    assert projection_side((8, 4), "left") == "left"


@pytest.mark.parametrize("shape, side", [((7, 11), "left"), ((11, 7), "right"), ((7, 11), "right"), ((6, 6), "left")])
def test_state_shapes(shape, side) -> None:
    grad = random_matrix(*shape)
    proj_type = side if shape != (6, 6) else "std"
    projector, state = projector_after_refresh(grad, proj_type=proj_type)
    side_length = shape[0] if side == "left" else shape[1]
    assert state["projector"].shape == (side_length, 3)
    low_rank = projector.project(grad, state)
    assert low_rank.shape == ((3, shape[1]) if side == "left" else (shape[0], 3))


@pytest.mark.parametrize("shape, side", [((7, 11), "left"), ((11, 7), "right"), ((7, 11), "right"), ((11, 7), "left")])
def test_exact_svd_finds_the_top_singular_subspace_with_orthonormal_columns(shape, side) -> None:
    grad = random_matrix(*shape)
    basis = top_singular_subspace(grad, 3, side)
    torch.testing.assert_close(basis.mT @ basis, torch.eye(3, dtype=DOUBLE), rtol=0, atol=1e-13)
    g = grad.numpy()
    gram = g @ g.T if side == "left" else g.T @ g
    expected = top_eigenvector_projector(gram, 3)
    np.testing.assert_allclose((basis @ basis.mT).numpy(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape, proj_type", [((7, 11), "std"), ((11, 7), "std"), ((7, 11), "right")])
def test_project_and_back_project_round_trip(shape, proj_type) -> None:
    grad = random_matrix(*shape)
    projector, state = projector_after_refresh(grad, proj_type=proj_type, scale=0.25)
    side = projector.side_for(grad)
    basis = state["projector"]
    # a matrix inside the subspace comes back exactly
    inside = basis @ random_matrix(3, shape[1], seed=1) if side == "left" else random_matrix(shape[0], 3, 1) @ basis.mT
    back = projector.project_back(projector.project(inside, state), state, side, scaled=False)
    torch.testing.assert_close(back, inside, rtol=0, atol=1e-12)
    # a general matrix comes back as its orthogonal projection onto the subspace: what is lost is orthogonal to it
    other = random_matrix(*shape, seed=2)
    kept = projector.project_back(projector.project(other, state), state, side, scaled=False)
    lost = other - kept
    torch.testing.assert_close(
        projector.project(lost, state), torch.zeros_like(projector.project(other, state)), rtol=0, atol=1e-12
    )
    expected = basis @ basis.mT @ other if side == "left" else other @ basis @ basis.mT
    torch.testing.assert_close(kept, expected, rtol=0, atol=1e-12)
    # the scale multiplies the back-projection
    low_rank = projector.project(other, state)
    torch.testing.assert_close(projector.project_back(low_rank, state, side), 0.25 * kept, rtol=0, atol=1e-13)


def count_svds(monkeypatch) -> list[int]:
    """Patch the SVD the projector calls so that every call is recorded; returns the (growing) list of calls."""
    calls: list[int] = []
    original = projection.top_singular_subspace

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(projection, "top_singular_subspace", counting)
    return calls


def run_schedule(monkeypatch, projector: LowRankProjector, grads, steps: int) -> tuple[dict, list[int]]:
    """Refresh the projector on grads(t) for t = 0 .. steps - 1; returns its state and the steps that took an SVD."""
    calls = count_svds(monkeypatch)
    state: dict = {}
    first = grads(0)
    projector.init_state(first, state, projector.rank_for(first))
    svd_steps = []
    for t in range(steps):
        before = len(calls)
        took_svd = projector.refresh(grads(t), state, t)
        assert took_svd == (len(calls) == before + 1) and len(calls) <= before + 1
        if took_svd:
            svd_steps.append(t)
    return state, svd_steps


@pytest.mark.parametrize("offset, expected", [(0, [0, 3, 6, 9]), (1, [0, 2, 5, 8])])
def test_refresh_schedule(monkeypatch, offset, expected) -> None:
    projector = LowRankProjector(rank=2, update_proj_gap=3, scale=1.0, schedule_offset=offset)
    _, svd_steps = run_schedule(monkeypatch, projector, lambda t: random_matrix(5, 8, seed=t), 11)
    assert svd_steps == expected


def diagonal(leading: int, rows: int = 5, columns: int = 7) -> torch.Tensor:
    """A matrix whose leading singular vectors are the unit vectors e_leading (singular values 3, 2, 1)."""
    matrix = torch.zeros(rows, columns, dtype=DOUBLE)
    order = [leading] + [i for i in range(3) if i != leading]
    for value, i in zip((3.0, 2.0, 1.0), order, strict=True):
        matrix[i, i] = value
    return matrix


def lazy_projector(threshold: float, window: int = 2) -> LowRankProjector:
    return LowRankProjector(
        rank=2, update_proj_gap=2, scale=1.0, lazy_update=True, lazy_threshold=threshold, lazy_window=window
    )


def test_lazy_update_doubles_the_interval_of_a_converged_subspace(monkeypatch) -> None:
    state, svd_steps = run_schedule(monkeypatch, lazy_projector(0.9), lambda t: diagonal(0), 40)
    # similarities 1 from the second SVD on; the queue of 2 is full at t = 4, and each SVD after doubles T_l
    assert svd_steps == [0, 2, 4, 8, 16, 32]
    assert int(state["proj_interval"]) == 32  # doubled at t = 4, 8, 16 and 32
    assert state["similarities"].tolist() == [1.0, 1.0]


def test_lazy_update_keeps_the_interval_of_a_moving_subspace(monkeypatch) -> None:
    state, svd_steps = run_schedule(monkeypatch, lazy_projector(0.4), lambda t: diagonal((t // 2) % 2), 40)
    assert svd_steps == list(range(0, 40, 2))  # successive leading vectors are orthogonal: similarity 0
    assert int(state["proj_interval"]) == 2


@pytest.mark.parametrize("threshold, expected", [(0.5, [0, 2, 4, 8]), (0.51, [0, 2, 4, 6, 8])])
def test_lazy_update_skips_exactly_when_the_mean_similarity_reaches_the_threshold(monkeypatch, threshold, expected):
    # leading vector e0 at the SVDs of steps 0 and 2, e1 from step 4 on: similarities 1, 0 (mean 0.5 at t = 4), 1, ...
    _, svd_steps = run_schedule(monkeypatch, lazy_projector(threshold), lambda t: diagonal(0 if t < 4 else 1), 9)
    assert svd_steps == expected


def test_lazy_schedule_follows_the_rule_on_random_gradients(monkeypatch) -> None:
    """An independent simulation of the rule (queue of the last `window` cosines of successive leading vectors; the
    interval grows when their mean reaches the threshold) predicts the SVD steps on slowly drifting gradients."""
    base, drift = random_matrix(6, 9, seed=0), random_matrix(6, 9, seed=1)

    def grads(t):
        return base + 0.08 * t * drift

    threshold, window, growth, gap, steps = 0.97, 3, 2, 3, 60
    expected, interval, queue, previous = [], gap, [], None
    for t in range(steps):
        if t == 0 or t % interval == 0:
            expected.append(t)
            leading = top_singular_subspace(grads(t), 2, "left")[:, 0]
            if previous is not None:
                queue = (queue + [torch.nn.functional.cosine_similarity(previous, leading, dim=0).item()])[-window:]
                if len(queue) == window and sum(queue) / window >= threshold:
                    interval *= growth
            previous = leading
    projector = LowRankProjector(
        rank=2,
        update_proj_gap=gap,
        scale=1.0,
        lazy_update=True,
        lazy_threshold=threshold,
        lazy_window=window,
        lazy_growth=growth,
    )
    state, svd_steps = run_schedule(monkeypatch, projector, grads, steps)
    assert svd_steps == expected
    assert int(state["proj_interval"]) == interval
    assert interval > gap and len(expected) > 5  # the run exercises both recomputation and growth


def spectral_gap_matrix(rows: int, columns: int, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A = U diag(s) V^T with s = 100, 50, 20 for the top `rank` and 1e-3 below: returns A, U_r, V_r."""
    u, _ = torch.linalg.qr(random_matrix(rows, rows, seed=3))
    v, _ = torch.linalg.qr(random_matrix(columns, columns, seed=4))
    values = torch.full((min(rows, columns),), 1e-3, dtype=DOUBLE)
    values[:rank] = torch.tensor([100.0, 50.0, 20.0], dtype=DOUBLE)[:rank]
    matrix = u[:, : values.numel()] @ torch.diag(values) @ v[:, : values.numel()].mT
    return matrix, u[:, :rank], v[:, :rank]


@pytest.mark.parametrize("side", ["left", "right"])
def test_randomized_svd_recovers_the_top_subspace_of_a_matrix_with_a_spectral_gap(side) -> None:
    matrix, u, v = spectral_gap_matrix(80, 60, 3)
    basis = top_singular_subspace(matrix, 3, side, method="randomized", oversampling=4, power_iterations=2, seed=7)
    expected = u if side == "left" else v
    torch.testing.assert_close(basis.mT @ basis, torch.eye(3, dtype=DOUBLE), rtol=0, atol=1e-12)
    torch.testing.assert_close(basis @ basis.mT, expected @ expected.mT, rtol=0, atol=1e-10)


def test_randomized_svd_is_seeded_and_leaves_the_global_rng_alone() -> None:
    matrix = random_matrix(40, 30, seed=5)  # a flat spectrum: the result depends on the sketch
    before = torch.get_rng_state()
    first = top_singular_subspace(matrix, 3, "left", method="randomized", oversampling=2, power_iterations=0, seed=1)
    again = top_singular_subspace(matrix, 3, "left", method="randomized", oversampling=2, power_iterations=0, seed=1)
    other = top_singular_subspace(matrix, 3, "left", method="randomized", oversampling=2, power_iterations=0, seed=2)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, again)
    assert not torch.allclose(first @ first.mT, other @ other.mT)


@pytest.mark.parametrize(
    "dtype, float32_always, expected",
    [
        (torch.float64, False, torch.float64),
        (torch.float64, True, torch.float32),
        (torch.float32, False, torch.float32),
        (torch.bfloat16, False, torch.float32),
        (torch.float16, False, torch.float32),
    ],
)
def test_svd_dtype(dtype, float32_always, expected) -> None:
    assert projection.svd_dtype(dtype, float32_always) == expected


def test_bfloat16_projector_is_stored_in_the_parameter_dtype() -> None:
    grad = random_matrix(6, 9).to(torch.bfloat16)
    projector, state = projector_after_refresh(grad)
    assert state["projector"].dtype == torch.bfloat16
    assert projector.project(grad, state).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "settings, name",
    [
        ({"rank": 0}, "rank"),
        ({"rank": 2.5}, "rank"),
        ({"rank_fraction": 0.0}, "rank_fraction"),
        ({"rank_fraction": 1.5}, "rank_fraction"),
        ({"update_proj_gap": 0}, "update_proj_gap"),
        ({"scale": 0.0}, "scale"),
        ({"proj_type": "reverse_std"}, "proj_type"),
        ({"svd": "fast"}, "svd"),
        ({"svd_oversampling": -1}, "svd_oversampling"),
        ({"svd_power_iterations": float("nan")}, "svd_power_iterations"),
        ({"seed": -1}, "seed"),
        ({"lazy_threshold": -0.5}, "lazy_threshold"),
        ({"lazy_threshold": 1.5}, "lazy_threshold"),
        ({"lazy_window": 0}, "lazy_window"),
        ({"lazy_growth": 0}, "lazy_growth"),
        ({"square_side": "top"}, "square_side"),
    ],
)
def test_invalid_settings_name_themselves(settings, name) -> None:
    with pytest.raises(ValueError, match=name):
        LowRankProjector(**{"rank": 2, "update_proj_gap": 10, "scale": 1.0, **settings})
