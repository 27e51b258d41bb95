"""Where each entrant's optimizer-state bytes go: bytes per model parameter by state tensor, after one step.

Each entrant of a suite (default: the memory suite) is built as the arena builds it (its `embeddings` group
included) at its first Halton point, takes one training step on the suite's first workload, and its state is
summed by key (nested states such as Q-GaLore's `weight_int` give `weight_int.codes`, ...), each storage once.
The total equals `optimizer_state_bytes`, which the arena records per trial.

    python benchmarks/state_breakdown.py [--suite memory] [--entrant fira-r0.25]
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from optarena import optim
from optarena.arena.suite import load
from optarena.arena.trial import build_training, make_train_step
from optarena.optim.memory import optimizer_state_bytes, storage_id
from optarena.workloads import get


def _named_tensors(prefix: str, value: Any) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _named_tensors(f"{prefix}.{key}" if prefix else str(key), item)


def state_bytes_by_key(optimizer: torch.optim.Optimizer) -> Counter[str]:
    """Bytes of the optimizer's state by (dotted) state key, each storage counted once, under its first key."""
    seen: set[tuple[str, int]] = set()
    totals: Counter[str] = Counter()
    for state in optimizer.state.values():
        for key, tensor in _named_tensors("", state):
            identity, size = storage_id(tensor), tensor.untyped_storage().nbytes()
            if size and identity not in seen:
                seen.add(identity)
                totals[key] += size
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="memory")
    parser.add_argument("--entrant", action="append", help="only these entrants (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    suite = load(args.suite)
    workload = get(suite.workloads[0], suite.size)
    first_points = {t.entrant: t for t in suite.plan() if t.workload == workload.name and t.study == 0 and t.index == 0}
    for entrant in suite.entrants:
        if args.entrant and entrant.name not in args.entrant:
            continue
        trial = first_points[entrant.name]
        model, optimizer, _ = build_training(workload, entrant, trial.hparams, trial.seed, workload.config.step_budget)
        make_train_step(workload, model, optimizer, optim.info(entrant.optimizer), trial.seed)(
            next(workload.train_batches(trial.seed))
        )
        parameters = sum(p.numel() for p in model.parameters())
        by_key = state_bytes_by_key(optimizer)
        total = optimizer_state_bytes(optimizer)
        parts = ", ".join(f"{key} {size / parameters:.3f}" for key, size in by_key.most_common())
        print(f"{entrant.name}: {total / parameters:.3f} bytes per parameter ({parts})", flush=True)


if __name__ == "__main__":
    main()
