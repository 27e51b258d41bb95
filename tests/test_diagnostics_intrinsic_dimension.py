"""Subspace training (Li et al., arXiv:1804.08838) against exact answers: direct SGD/Adam when P is orthogonal,
explicit projection matrices, unit-norm columns, and the paper's Section 2 toy problem solved by least squares."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from optarena.diagnostics import (
    PROJECTIONS,
    SubspaceModel,
    fast_walsh_hadamard,
    find_intrinsic_dimension,
    intrinsic_dimension,
)

DTYPE = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(DTYPE)  # D = 20 + 12 = 32


def regression_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 3, generator=gen(1), dtype=DTYPE), torch.randn(8, 2, generator=gen(2), dtype=DTYPE)


def test_fast_walsh_hadamard_matches_scipy_hadamard() -> None:
    x = torch.randn(3, 32, generator=gen(0), dtype=DTYPE)
    hadamard = torch.from_numpy(scipy.linalg.hadamard(32).astype(np.float64))
    torch.testing.assert_close(fast_walsh_hadamard(x), x @ hadamard, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="power of two"):
        fast_walsh_hadamard(torch.ones(12))


@pytest.mark.parametrize("basis", ["identity", "orthogonal"])
def test_full_orthogonal_subspace_reproduces_direct_sgd(basis: str) -> None:
    """d = D with P orthogonal: P P^T grad = grad, so subspace SGD (with momentum) follows direct SGD."""
    x, y = regression_batch()
    direct, wrapped = make_mlp(), make_mlp()
    big_d = sum(p.numel() for p in direct.parameters())
    q = torch.eye(big_d, dtype=DTYPE)
    if basis == "orthogonal":
        q = torch.linalg.qr(torch.randn(big_d, big_d, generator=gen(3), dtype=DTYPE)).Q
    subspace = SubspaceModel(wrapped, projection=q)
    assert [name for name, _ in subspace.named_parameters()] == ["theta_d"]
    direct_opt = torch.optim.SGD(direct.parameters(), lr=0.1, momentum=0.9)
    subspace_opt = torch.optim.SGD(subspace.parameters(), lr=0.1, momentum=0.9)
    for _ in range(10):
        for model, opt in ((direct, direct_opt), (subspace, subspace_opt)):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        torch.testing.assert_close(
            subspace.flat_parameters(), parameters_to_vector(direct.parameters()), rtol=0, atol=1e-12
        )
    assert not torch.equal(subspace.theta_d, torch.zeros_like(subspace.theta_d))
    torch.testing.assert_close(subspace(x), direct(x), rtol=0, atol=1e-12)


def test_identity_subspace_reproduces_direct_adam() -> None:
    """Adam is elementwise, so it is invariant to the identity basis (not to a rotation)."""
    x, y = regression_batch()
    direct, subspace = make_mlp(), SubspaceModel(make_mlp(), projection=torch.eye(32, dtype=DTYPE))
    opts = torch.optim.Adam(direct.parameters(), lr=0.01), torch.optim.Adam(subspace.parameters(), lr=0.01)
    for _ in range(10):
        for model, opt in zip((direct, subspace), opts, strict=True):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    torch.testing.assert_close(
        subspace.flat_parameters(), parameters_to_vector(direct.parameters()), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_projection_is_its_dense_matrix_and_theta_d_starts_at_zero(projection: str) -> None:
    model = make_mlp()
    subspace = SubspaceModel(model, 7, projection=projection, generator=gen(0))
    assert subspace.theta_d.shape == (7,) and torch.equal(subspace.theta_d, torch.zeros(7, dtype=DTYPE))
    torch.testing.assert_close(subspace.flat_parameters(), parameters_to_vector(model.parameters()), rtol=0, atol=0)
    matrix = subspace.projection.dense_matrix()
    assert matrix.shape == (32, 7)
    theta_d = torch.randn(7, generator=gen(5), dtype=DTYPE)
    torch.testing.assert_close(subspace.projection(theta_d), matrix @ theta_d, rtol=0, atol=1e-12)
    with torch.no_grad():
        subspace.theta_d.copy_(theta_d)
    x, _ = regression_batch()
    out = subspace(x)
    subspace.load_into_model()
    torch.testing.assert_close(model(x), out, rtol=0, atol=1e-12)
    torch.testing.assert_close(parameters_to_vector(model.parameters()), subspace.theta0 + matrix @ theta_d)


@pytest.mark.parametrize("projection", ["dense", "sparse"])
def test_dense_and_sparse_columns_have_unit_norm(projection: str) -> None:
    model = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 3)).to(DTYPE)
    matrix = SubspaceModel(model, 50, projection=projection, generator=gen(0)).projection.dense_matrix()
    norms = torch.linalg.vector_norm(matrix, dim=0)
    torch.testing.assert_close(norms, torch.ones(50, dtype=DTYPE), rtol=0, atol=1e-12)


def test_sparse_projection_density_per_tensor() -> None:
    """Each parameter tensor of n values gets density about 1/sqrt(n) (sklearn's "auto"), as in the authors' code."""
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)).to(DTYPE)
    d = 50
    matrix = SubspaceModel(model, d, projection="sparse", generator=gen(0)).projection.dense_matrix()
    start = 0
    for p in model.parameters():
        block = matrix[start : start + p.numel()]
        start += p.numel()
        expected = d * p.numel() / np.sqrt(p.numel())
        assert 0.75 * expected < int((block != 0).sum()) < 1.25 * expected
    weight_block = matrix[: 64 * 64]
    per_column = [weight_block[:, j][weight_block[:, j] != 0].abs() for j in range(d)]
    for values in per_column:  # one magnitude per block and column, before the column scaling
        torch.testing.assert_close(values, values[0].expand_as(values), rtol=1e-12, atol=0)


def test_fastfood_equals_its_explicit_formula_and_has_unit_columns_when_d_is_a_power_of_two() -> None:
    model = nn.Linear(7, 8).to(DTYPE)  # D = 64 = L
    projection = SubspaceModel(model, 10, projection="fastfood", generator=gen(0)).projection
    length = 64
    hadamard = torch.from_numpy(scipy.linalg.hadamard(length).astype(np.float64))
    permutation = torch.eye(length, dtype=DTYPE)[projection.permutation]  # (Pi x)_i = x_{perm_i}
    v = hadamard @ torch.diag(projection.gaussian) @ permutation @ hadamard @ torch.diag(projection.signs)
    scale = np.sqrt(length * float(projection.gaussian.square().sum()))
    expected = v[:, :10] / scale
    matrix = projection.dense_matrix()
    torch.testing.assert_close(matrix, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.vector_norm(matrix, dim=0), torch.ones(10, dtype=DTYPE), rtol=0, atol=1e-12)


def test_fastfood_columns_have_unit_norm_in_expectation_when_d_is_not_a_power_of_two() -> None:
    model = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 3)).to(DTYPE)  # D = 1363, L = 2048
    matrix = SubspaceModel(model, 200, projection="fastfood", generator=gen(0)).projection.dense_matrix()
    squared = torch.linalg.vector_norm(matrix, dim=0).square()
    assert abs(float(squared.mean()) - 1.0) < 0.05
    assert float((squared - 1).abs().max()) > 1e-6  # not exact: the truncation to D rows loses a random share


class GroupSums(nn.Module):
    """The paper's Section 2 toy: 1000 parameters in 10 groups of 100; the loss asks group k to sum to k."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(1000, generator=generator, dtype=DTYPE))

    def forward(self) -> torch.Tensor:
        return self.theta.view(10, 100).sum(dim=1)


TARGETS = torch.arange(1, 11, dtype=DTYPE)


def toy_loss(model: nn.Module) -> torch.Tensor:
    return (model() - TARGETS).square().sum()


def train_toy(d: int, projection: str) -> tuple[float, float, float]:
    """Subspace training with L-BFGS: (initial loss, trained loss, least-squares minimum over the subspace)."""
    subspace = SubspaceModel(GroupSums(gen(0)), d, projection=projection, generator=gen(d))
    group_sums = torch.kron(torch.eye(10, dtype=DTYPE), torch.ones(1, 100, dtype=DTYPE))  # A: theta -> sums
    system = group_sums @ subspace.projection.dense_matrix()
    residual = TARGETS - group_sums @ subspace.theta0
    solution = torch.linalg.lstsq(system, residual, driver="gelsd").solution
    minimum = float((system @ solution - residual).square().sum())
    with torch.no_grad():
        initial = float(toy_loss(subspace))
    optimizer = torch.optim.LBFGS(
        subspace.parameters(),
        lr=1,
        max_iter=200,
        history_size=20,
        tolerance_grad=0,
        tolerance_change=0,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = toy_loss(subspace)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return initial, float(toy_loss(subspace)), minimum


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_toy_problem_is_solved_at_d_10_and_not_below(projection: str) -> None:
    initial, trained, minimum = train_toy(10, projection)
    assert minimum < 1e-20 and trained < 1e-18 * initial
    initial, trained, minimum = train_toy(9, projection)
    assert minimum > 1e-3 * initial  # a 9-dimensional random subspace misses the 990-dimensional solution set
    assert trained == pytest.approx(minimum, rel=1e-9)


def test_intrinsic_dimension_of_the_toy_problem_is_10() -> None:
    def fraction_of_loss_removed(d: int) -> float:
        initial, trained, _ = train_toy(d, "dense")
        return 1.0 - trained / initial

    result = intrinsic_dimension(fraction_of_loss_removed, [12, 5, 9, 10, 11, 1], baseline=1.0, threshold=1 - 1e-12)
    assert result.dims == (1, 5, 9, 10, 11, 12)
    assert result.d_int == 10 and result.d_below == 9
    assert all(value < 1 - 1e-6 for value in result.performance[:3])


def test_find_intrinsic_dimension_brackets_and_interpolates() -> None:
    result = find_intrinsic_dimension([100, 10, 50, 80], [1.0, 0.1, 0.5, 0.8], baseline=1.0, threshold=0.9)
    assert result.dims == (10, 50, 80, 100) and result.performance == (0.1, 0.5, 0.8, 1.0)
    assert result.target == 0.9 and result.d_int == 100 and result.d_below == 80
    assert result.d_int_interpolated == pytest.approx(90.0, abs=1e-12)
    first = find_intrinsic_dimension([10, 20], [0.95, 0.97], baseline=1.0)
    assert first.d_int == 10 and first.d_below is None and first.d_int_interpolated is None
    never = find_intrinsic_dimension([10, 20], [0.5, 0.6], baseline=1.0)
    assert never.d_int is None and never.d_int_interpolated is None
    dip = find_intrinsic_dimension([10, 20, 30], [0.95, 0.5, 0.99], baseline=1.0)
    assert dip.d_int == 10  # the smallest d that reaches the target


def test_bad_arguments_raise_value_error() -> None:
    model = make_mlp()
    with pytest.raises(ValueError, match="projection must be one of dense, sparse, fastfood"):
        SubspaceModel(model, 4, projection="gaussian", generator=gen(0))
    with pytest.raises(ValueError, match="generator is required"):
        SubspaceModel(model, 4, projection="dense")
    for d in (0, 33, 2.5, True):
        with pytest.raises(ValueError, match=r"d must be an integer in \[1, D = 32\]"):
            SubspaceModel(model, d, projection="fastfood", generator=gen(0))
    with pytest.raises(ValueError, match=r"shape \(D, d\) = \(32, 4\)"):
        SubspaceModel(model, 4, projection=torch.eye(32, dtype=DTYPE))
    with pytest.raises(ValueError, match="threshold must be in"):
        find_intrinsic_dimension([1], [1.0], baseline=1.0, threshold=1.5)
    with pytest.raises(ValueError, match="baseline must be in"):
        intrinsic_dimension(lambda d: 1.0, [1], baseline=0.0)
    with pytest.raises(ValueError, match="distinct positive integers"):
        find_intrinsic_dimension([3, 3], [1.0, 1.0], baseline=1.0)
    with pytest.raises(ValueError, match="equally long"):
        find_intrinsic_dimension([3, 4], [1.0], baseline=1.0)
