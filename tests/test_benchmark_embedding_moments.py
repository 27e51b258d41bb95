"""benchmarks/embedding_moments.py reads an embedding's moments as the optimizer does, 8-bit or 32-bit."""

import torch
from torch import nn

from benchmark_scripts import benchmark_script
from optarena import optim
from optarena.optim.groups import embedding_groups


def test_the_moments_are_the_optimizers_whether_quantised_or_not() -> None:
    torch.manual_seed(0)
    with benchmark_script("embedding_moments") as script:
        for min_8bit_size, quantised in ((1, True), (10**12, False)):
            model = nn.Sequential(nn.Embedding(64, 64), nn.Linear(64, 1))
            optimizer = optim.create("adamw_8bit", embedding_groups(model, min_8bit_size=min_8bit_size))
            model(torch.randint(0, 64, (8,))).sum().backward()
            optimizer.step()
            m, v = script.moments(optimizer, model[0].weight)
            state = optimizer.state[model[0].weight]
            assert ("exp_avg_codes" in state) == quantised and m.shape == v.shape == (64, 64)
            assert (v >= 0).all() and m.abs().max() > 0
            rows = torch.unique(torch.nonzero(m)[:, 0])  # only the looked-up rows have moments
            assert 0 < len(rows) <= 8 and torch.equal(rows, torch.unique(torch.nonzero(v)[:, 0]))
