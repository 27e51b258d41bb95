"""Param groups that set a model's embedding matrices apart, as the memory-efficient optimizers' papers do.

None of these papers gives the embeddings its compressed state:
- 8-bit optimizers (Dettmers et al., arXiv:2110.02861, Sec. 2.3, "Stable Embedding Layer"): training is much more
  stable with 32-bit optimizer states for the embedding layer, the one layer that keeps them (bitsandbytes'
  StableEmbedding registers its weight for 32-bit states).
- GaLore (arXiv:2403.03507) and Q-GaLore (arXiv:2407.08296) project the attention and MLP matrices only (the
  authors' training scripts); the embeddings take the base optimizer.
- Fira (arXiv:2410.01623) follows GaLore's choice of matrices.
- FRUGAL (arXiv:2412.07077): the authors' code keeps the embeddings and the output layer in its AdamW group.

`embedding_groups(model, **overrides)` puts the weights of the model's `nn.Embedding` modules (a tied output layer
shares one of them and so goes with it) in a group of their own with `overrides`, and every other parameter in a
second group with the optimizer's defaults. The overrides that give the papers' treatment:
- adam_8bit, adamw_8bit: `min_8bit_size` above the embedding's size (32-bit states);
- galore, fira: `rank_fraction=1.0` (not projected: the base optimizer's step);
- q_galore: both of the above (not projected, so also full-precision weights, and 32-bit states);
- frugal: `density=1.0, reset_state=False` (all state-full, never reset: AdamW).
"""

from __future__ import annotations

from typing import Any

from torch import nn


def embedding_groups(model: nn.Module, **overrides: Any) -> list[dict[str, Any]]:
    """[{"params": the embedding weights, **overrides}, {"params": the other parameters}] (the second group is left
    out when there are no other parameters). Raises ValueError when the model has no `nn.Embedding`."""
    embeddings = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Embedding)}
    if not embeddings:
        raise ValueError(f"the model ({type(model).__name__}) has no nn.Embedding to put in a group of its own")
    others = [p for p in model.parameters() if id(p) not in embeddings]
    groups: list[dict[str, Any]] = [{"params": list(embeddings.values()), **overrides}]
    return groups + ([{"params": others}] if others else [])
