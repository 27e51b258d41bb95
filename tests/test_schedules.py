"""Warmup + cosine against its formula on hand-computed points."""

import math

import pytest
import torch

from optarena.schedules import as_torch_scheduler, warmup_cosine


def test_hand_computed_points() -> None:
    # 10 warmup steps of 100: step 0 -> 1/10, step 9 -> 1, then cosine over 90 steps.
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(40, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 3)))
    assert warmup_cosine(100, 100, 10) == 0.0
    assert warmup_cosine(500, 100, 10, final_factor=0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, 100, 0) == pytest.approx(1.0)


def test_monotone_after_warmup() -> None:
    values = [warmup_cosine(s, 200, 20) for s in range(20, 201)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize("args", [(0, 0, 0), (0, 10, 11), (0, 10, -1)])
def test_invalid_arguments(args) -> None:
    with pytest.raises(ValueError):
        warmup_cosine(*args)


def test_torch_adapter_sets_learning_rates() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduler = as_torch_scheduler(optimizer, lambda step: 1.0 / (step + 1))
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([2.0, 1.0, 2.0 / 3])
