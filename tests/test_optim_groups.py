"""embedding_groups: the embedding matrices (a tied output layer with them) in a group of their own."""

import pytest
import torch
from torch import nn

from optarena import optim
from optarena.optim.groups import embedding_groups
from optarena.workloads.transformer import TransformerLM


def test_the_tied_embedding_and_the_position_embedding_form_the_first_group() -> None:
    model = TransformerLM(vocab_size=16, context=8, width=8, depth=1, heads=2)
    assert model.head.weight is model.token_embedding.weight
    first, second = embedding_groups(model, rank_fraction=1.0)
    assert [p.shape for p in first["params"]] == [(16, 8), (8, 8)] and first["rank_fraction"] == 1.0
    ids = [id(p) for p in first["params"] + second["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter once, the tied one once
    assert set(second) == {"params"}


def test_a_model_without_other_parameters_gives_one_group_and_one_without_embeddings_is_refused() -> None:
    assert len(embedding_groups(nn.Embedding(4, 3))) == 1
    with pytest.raises(ValueError, match="has no nn.Embedding"):
        embedding_groups(nn.Linear(3, 3))


def test_the_group_gets_the_papers_treatment_in_the_optimizers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(300, 64), nn.Linear(64, 64, bias=False))
    q_galore = optim.create(
        "q_galore", embedding_groups(model, rank_fraction=1.0, min_8bit_size=10**12), rank=4, min_8bit_size=1
    )
    adamw_8bit = optim.create("adamw_8bit", embedding_groups(model, min_8bit_size=10**12), min_8bit_size=1)
    for optimizer in (q_galore, adamw_8bit):
        optimizer.zero_grad()
        model(torch.randint(0, 300, (5,))).square().sum().backward()
        optimizer.step()
        embedding, linear = optimizer.state[model[0].weight], optimizer.state[model[1].weight]
        assert "exp_avg" in embedding and "projector" not in embedding and "projector_int" not in embedding
        assert "exp_avg_codes" in linear  # the other matrix keeps its 8-bit states
    assert "projector_int" in q_galore.state[model[1].weight] and "weight_int" in q_galore.state[model[1].weight]
