"""Power iteration and Lanczos against known spectra (rotated diagonal quadratics) and numpy.linalg.eigvalsh of
the dense Hessian of a small network, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from optarena.curvature import lanczos, power_iteration, top_hessian_eigenvalues

SHAPES = [(3, 2), (6,)]  # 12 coordinates over two tensors
# |lambda_min| = 20 > lambda_max = 10: the largest-magnitude and the largest eigenvalues differ
SPECTRUM = [-20.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, -0.1, -0.2, -0.4, -0.8]


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def split_like(vector: torch.Tensor, like) -> list[torch.Tensor]:
    return [chunk.view_as(t) for chunk, t in zip(vector.split([t.numel() for t in like]), like, strict=True)]


def rotated(spectrum, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Q diag(spectrum) Q^T with Q a random orthogonal matrix, and Q."""
    n = len(spectrum)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T, q


def operator(matrix: torch.Tensor, like):
    return lambda v: split_like(matrix @ flat(v), like)


def like_for(shapes) -> list[torch.Tensor]:
    return [torch.zeros(shape, dtype=torch.float64) for shape in shapes]


def assert_eigenpairs(matrix: torch.Tensor, values: torch.Tensor, vectors, tol: float) -> None:
    for value, vector in zip(values, vectors, strict=True):
        v = flat(vector)
        assert float(torch.linalg.vector_norm(v)) == pytest.approx(1.0, abs=tol)
        assert float(torch.linalg.vector_norm(matrix @ v - value * v)) < tol * max(1.0, abs(float(value)))


def test_power_iteration_finds_the_largest_magnitude_eigenvalues() -> None:
    matrix, _ = rotated(SPECTRUM)
    like = like_for(SHAPES)
    values, vectors = power_iteration(
        operator(matrix, like), like, k=3, max_iterations=200, tol=0.0, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(values, torch.tensor([-20.0, 10.0, 5.0], dtype=torch.float64), rtol=1e-10, atol=1e-10)
    assert [v.shape for v in vectors[0]] == [torch.Size(s) for s in SHAPES]
    assert_eigenpairs(matrix, values, vectors, 1e-8)


def test_power_iteration_stops_early_at_the_default_tolerance() -> None:
    matrix, _ = rotated(SPECTRUM)
    like = like_for(SHAPES)
    calls = []

    def counted(v):
        calls.append(1)
        return operator(matrix, like)(v)

    values, _ = power_iteration(counted, like, generator=torch.Generator().manual_seed(0))
    assert len(calls) < 100
    assert float(values[0]) == pytest.approx(-20.0, rel=1e-2)


@pytest.mark.parametrize(("which", "expected"), [("largest", [10.0, 5.0, 2.5]), ("magnitude", [-20.0, 10.0, 5.0])])
def test_lanczos_full_dimension_recovers_the_top_k(which: str, expected: list[float]) -> None:
    matrix, _ = rotated(SPECTRUM, seed=1)
    like = like_for(SHAPES)
    values, vectors = lanczos(
        operator(matrix, like), like, k=3, iterations=50, which=which, generator=torch.Generator().manual_seed(0)
    )  # iterations capped at the dimension, 12
    torch.testing.assert_close(values, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-10)
    assert_eigenpairs(matrix, values, vectors, 1e-8)


def test_lanczos_with_fewer_iterations_than_the_dimension() -> None:
    """n = 300, 40 iterations: well-separated top eigenvalues (100, 90, 80 above a bulk in [-1, 1]) converge."""
    bulk = torch.linspace(-1.0, 1.0, 297, dtype=torch.float64).tolist()
    matrix, _ = rotated([100.0, 90.0, 80.0, *bulk], seed=2)
    like = like_for([(300,)])
    values, vectors = lanczos(
        operator(matrix, like), like, k=3, iterations=40, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(values, torch.tensor([100.0, 90.0, 80.0], dtype=torch.float64), rtol=1e-10, atol=1e-8)
    assert_eigenpairs(matrix, values, vectors, 1e-6)


def test_lanczos_restarts_on_an_invariant_subspace() -> None:
    """Three distinct eigenvalues span a 3-d Krylov space from any start: beta vanishes at step 3, and the restart
    must still find all 8 eigenvalues, repeats included, after 8 iterations."""
    spectrum = [3.0, 3.0, 3.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    matrix, _ = rotated(spectrum, seed=3)
    like = like_for([(8,)])
    values, vectors = lanczos(
        operator(matrix, like), like, k=8, iterations=8, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(
        values, torch.tensor(sorted(spectrum, reverse=True), dtype=torch.float64), atol=1e-10, rtol=0
    )
    assert_eigenpairs(matrix, values, vectors, 1e-8)
    basis = torch.stack([flat(v) for v in vectors])
    torch.testing.assert_close(basis @ basis.T, torch.eye(8, dtype=torch.float64), atol=1e-10, rtol=0)


def test_lanczos_on_the_zero_operator() -> None:
    like = like_for([(5,)])
    values, _ = lanczos(lambda v: [torch.zeros_like(v[0])], like, k=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(values, torch.zeros(2, dtype=torch.float64), rtol=0, atol=0)


def small_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (10,), generator=generator)
    return model, inputs, labels


def dense_hessian_eigenvalues(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    names = [name for name, _ in model.named_parameters()]
    like = [p.detach() for p in model.parameters()]

    def loss_of_flat(theta: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, split_like(theta, like), strict=True))
        return F.cross_entropy(functional_call(model, params, (inputs,)), labels)

    hessian = torch.autograd.functional.hessian(loss_of_flat, flat(like))
    return np.linalg.eigvalsh(hessian.numpy())[::-1]  # descending


def test_top_hessian_eigenvalues_of_a_small_mlp_match_eigvalsh() -> None:
    model, inputs, labels = small_mlp()
    expected = dense_hessian_eigenvalues(model, inputs, labels)
    dimension = expected.size
    loss = F.cross_entropy(model(inputs), labels)
    values, _ = top_hessian_eigenvalues(
        loss, list(model.parameters()), k=3, iterations=dimension, generator=torch.Generator().manual_seed(0)
    )
    np.testing.assert_allclose(values.numpy(), expected[:3], rtol=1e-9, atol=1e-10)
    by_magnitude = expected[np.argsort(-np.abs(expected), kind="stable")]
    values, _ = top_hessian_eigenvalues(
        loss,
        list(model.parameters()),
        k=3,
        method="power_iteration",
        max_iterations=3000,
        tol=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    np.testing.assert_allclose(values.numpy(), by_magnitude[:3], rtol=1e-8, atol=1e-10)
    assert by_magnitude[2] < 0 < expected[2]  # this network's third eigenvalue by magnitude is negative
    assert all(p.grad is None for p in model.parameters())


def test_eigen_rejects_bad_arguments() -> None:
    like = like_for([(4,)])

    def identity(v):
        return v

    for bad in (0, 5, 1.5):
        with pytest.raises(ValueError, match="k must"):
            power_iteration(identity, like, k=bad)
        with pytest.raises(ValueError, match="k must"):
            lanczos(identity, like, k=bad)
    with pytest.raises(ValueError, match="k must be at most iterations"):
        lanczos(identity, like, k=3, iterations=2)
    with pytest.raises(ValueError, match="which"):
        lanczos(identity, like, which="smallest")
    with pytest.raises(ValueError, match="iterations"):
        lanczos(identity, like, iterations=0)
    with pytest.raises(ValueError, match="max_iterations"):
        power_iteration(identity, like, max_iterations=0)
    with pytest.raises(ValueError, match="tol"):
        power_iteration(identity, like, tol=-1.0)
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="method"):
        top_hessian_eigenvalues((x**3).sum(), [x], method="arnoldi")
