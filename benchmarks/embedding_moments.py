"""Why the 8-bit optimizers keep 32-bit states for the embeddings: one memory-suite entrant's first steps on the LM,
watched on the token embedding, with and without the suite's `embeddings` group.

Every `--every` steps it prints the training loss, how many entries of the embedding's 8-bit second moment are zero
while its first moment is not (the step m / (sqrt(v) + eps) of such an entry is m / eps), the largest m / (sqrt(v) +
eps), and the largest change of an embedding weight in that step. Defaults: the memory suite's Q-GaLore trial that
diverged without the group (study 0, trial 0 of `optarena run memory`).

    python benchmarks/embedding_moments.py [--entrant q_galore-r0.25] [--steps 70] [--without-group]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from optarena import optim
from optarena.arena.suite import load
from optarena.arena.trial import build_training, make_train_step
from optarena.optim.quantization import BlockwiseQuantized, dequantize_blockwise, dynamic_map
from optarena.workloads import get

TRIAL = {"lr": 0.0018398011645523562, "update_proj_gap": 50, "warmup_fraction": 0.02}


def moments(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The parameter's first and second moments as the optimizer reads them (dequantised when 8-bit)."""
    state = optimizer.state[param]
    if "exp_avg" in state:
        return state["exp_avg"], state["exp_avg_sq"]
    group = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
    block = group.get("moment_block_size", group.get("block_size"))
    return tuple(
        dequantize_blockwise(BlockwiseQuantized(state[f"{name}_codes"], state[f"{name}_absmax"], block), dynamic_map(s))
        for name, s in (("exp_avg", True), ("exp_avg_sq", False))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entrant", default="q_galore-r0.25")
    parser.add_argument("--hparams", default=json.dumps(TRIAL), help="the trial's point of the search space (JSON)")
    parser.add_argument("--seed", type=int, default=623694898)
    parser.add_argument("--steps", type=int, default=70)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--without-group", action="store_true", help="the embeddings take the compressed states")
    args = parser.parse_args()
    torch.set_num_threads(1)
    entrant = load("memory").entrant(args.entrant)
    if args.without_group:
        entrant = dataclasses.replace(entrant, embeddings=None)
    workload = get("stdlib_bytes", "full")
    hparams = {**entrant.fixed, **json.loads(args.hparams)}
    model, optimizer, scheduler = build_training(workload, entrant, hparams, args.seed, workload.config.step_budget)
    train_step = make_train_step(workload, model, optimizer, optim.info(entrant.optimizer), args.seed)
    batches = workload.train_batches(args.seed)
    embedding = model.token_embedding.weight.detach()  # the same storage, read only
    eps = optimizer.param_groups[0]["eps"]
    for step in range(1, args.steps + 1):
        before = embedding.detach().clone()
        loss = train_step(next(batches)).item()
        scheduler.step()
        if step % args.every:
            continue
        m, v = moments(optimizer, embedding)
        zero_v = int(((v == 0) & (m != 0)).sum())
        ratio = float((m.abs() / (v.sqrt() + eps)).max())
        change = float((embedding - before).abs().max())
        print(
            f"step {step}: loss {loss:.3f}, v = 0 with m != 0: {zero_v}, max m/(sqrt v + eps) {ratio:.3g}, "
            f"max |weight change| {change:.3g}",
            flush=True,
        )


if __name__ == "__main__":
    main()
