"""A small decoder-only transformer (GPT-2 shape, pre-LayerNorm, tied embeddings) shared by the LM workloads.

Follows nanoGPT's model: learned positional embeddings, causal self-attention through
`scaled_dot_product_attention`, a 4x GELU MLP, and GPT-2's scaled initialisation of residual projections.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_attn = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.ln_mlp = nn.LayerNorm(width)
        self.mlp_in = nn.Linear(width, 4 * width)
        self.mlp_out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.ln_attn(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_out(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp_out(F.gelu(self.mlp_in(self.ln_mlp(x))))


class TransformerLM(nn.Module):
    """Next-token language model over a vocabulary of `vocab_size` tokens and contexts of `context` tokens."""

    def __init__(self, vocab_size: int, context: int, width: int, depth: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.context = context
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.ln_final = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight
        self.apply(self._init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith(("attn_out.weight", "mlp_out.weight")):
                nn.init.normal_(parameter, std=0.02 / math.sqrt(2 * depth))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_final(x))


def next_token_loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting windows[:, 1:] from windows[:, :-1]."""
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


def random_windows(tokens: torch.Tensor, context: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless batches of `context + 1`-token windows at uniformly random offsets (nanoGPT's sampler)."""
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.arange(context + 1)
    while True:
        starts = torch.randint(len(tokens) - context - 1, (batch_size,), generator=generator)
        yield tokens[starts[:, None] + offsets]


def evaluation_windows(tokens: torch.Tensor, context: int, count: int) -> torch.Tensor:
    """`count` fixed, evenly spaced `context + 1`-token windows: the same validation set for every trial."""
    starts = torch.linspace(0, len(tokens) - context - 2, count).long()
    return tokens[starts[:, None] + torch.arange(context + 1)]


@torch.no_grad()
def mean_window_loss(model: nn.Module, windows: torch.Tensor, batch_size: int = 64) -> float:
    """Validation loss averaged over fixed windows."""
    losses = [
        next_token_loss(model, windows[i : i + batch_size]) * len(windows[i : i + batch_size])
        for i in range(0, len(windows), batch_size)
    ]
    return (torch.stack(losses).sum() / len(windows)).item()
