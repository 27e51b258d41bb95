"""benchmarks/state_breakdown.py splits an optimizer's state bytes by key, each storage once, summing to the total."""

import torch

from benchmark_scripts import benchmark_script
from optarena import optim
from optarena.optim.memory import optimizer_state_bytes


def test_the_parts_add_up_to_the_optimizers_state_bytes() -> None:
    weight, bias = torch.nn.Parameter(torch.randn(64, 32)), torch.nn.Parameter(torch.randn(32))
    optimizer = optim.create("q_galore", [weight, bias], rank=4, min_8bit_size=1)
    (weight.sum() ** 2 + bias.sum()).backward()
    optimizer.step()
    with benchmark_script("state_breakdown") as script:
        parts = script.state_bytes_by_key(optimizer)
    assert sum(parts.values()) == optimizer_state_bytes(optimizer)
    assert parts["weight_int.codes"] == weight.numel()  # one INT8 code per weight
    assert parts["exp_avg_codes"] > 0 and "projector_int.codes" in parts


def test_a_shared_storage_is_counted_once() -> None:
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([param], lr=0.1)
    shared = torch.zeros(10)
    optimizer.state[param] = {"a": shared, "b": shared[:5]}
    with benchmark_script("state_breakdown") as script:
        assert script.state_bytes_by_key(optimizer) == {"a": 40}
