"""Linear warmup then cosine decay: AlgoPerf's baseline schedule (Dahl et al., arXiv:2306.07179, Sec. 6;
cosine decay from Loshchilov & Hutter, SGDR, arXiv:1608.03983, Eq. 5 without restarts)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, final_factor: float = 0.0) -> float:
    """Learning-rate multiplier at `step` (0-based): linear from 1/(warmup_steps) to 1 over the warmup, then
    cosine from 1 to `final_factor` at `total_steps`, and `final_factor` after it."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return final_factor
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
