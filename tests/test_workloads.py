"""Every registered workload honours the contract: determinism, finite loss, its target metric, its sizes."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_data_dirs
from optarena.workloads import get, names, workload_class
from optarena.workloads.base import SIZES

NEEDS_SHARED_DATA = {"mnist_mlp", "mnist_cnn", "shakespeare_char"}


@pytest.fixture(params=names())
def workload(request):
    if request.param in NEEDS_SHARED_DATA:
        shared_data_dirs()
    return get(request.param, "quick")


def test_both_sizes_and_a_recorded_target(workload) -> None:
    cls = workload_class(workload.name)
    assert set(cls.configs) == set(SIZES)
    assert "optarena calibrate" in cls.configs["quick"].target.how_set
    for config in cls.configs.values():
        assert config.target.how_set and config.eval_every_steps <= config.step_hint
        assert config.time_budget_s > 0 and config.batch_size > 0


def test_deterministic_model_and_batches(workload) -> None:
    first, second = workload.init_model(0), workload.init_model(0)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    batches = [list(itertools.islice(workload.train_batches(1), 3)) for _ in range(2)]
    for a, b in zip(*batches, strict=True):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
            assert torch.equal(x, y)


def test_loss_backward_and_evaluate(workload) -> None:
    model = workload.init_model(0)
    loss = workload.loss(model, next(workload.train_batches(0)))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        metrics = workload.evaluate(model.eval())
    assert workload.target.metric in metrics and np.isfinite(metrics[workload.target.metric])
    # an untrained model does not already meet the target
    assert not workload.target.reached(metrics[workload.target.metric])


def test_every_target_is_calibrated_and_documented() -> None:
    """Every size's target was set by the AlgoPerf procedure (`optarena calibrate`), and its record appears verbatim
    in docs/targets.md."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "targets.md").read_text()
    for name in names():
        for size, config in workload_class(name).configs.items():
            record = config.target.how_set
            assert record.startswith("AlgoPerf procedure"), f"{name} ({size}) is not calibrated: {record[:60]!r}"
            assert record in doc, f"{name} ({size}): target record missing from docs/targets.md"


@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_size", 0),
        ("step_hint", 0),
        ("eval_every_steps", 0),
        ("time_budget_s", 0.0),
        ("eval_every_seconds", -1.0),
    ],
)
def test_invalid_workload_config_names_the_field(field: str, value: float) -> None:
    config = workload_class("quadratic_deep").configs["quick"]
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(config, **{field: value})


def test_unknown_names_and_sizes() -> None:
    with pytest.raises(ValueError, match="known workloads"):
        get("nope")
    with pytest.raises(ValueError, match="size must be one of"):
        get("quadratic_deep", "huge")


def test_quadratic_deep_spectrum_matches_deepobs() -> None:
    workload = get("quadratic_deep")
    model = workload.init_model(0)
    eigenvalues = torch.linalg.eigvalsh(model.hessian.double())
    assert int((eigenvalues < 1.0).sum()) == 90 and int((eigenvalues > 30.0).sum()) == 10
    rng = np.random.RandomState(42)
    expected = np.sort(np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10))))
    np.testing.assert_allclose(eigenvalues.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(model.theta.detach(), torch.ones(100))
