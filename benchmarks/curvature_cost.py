"""What curvature estimation costs per training step, on a real workload, for each curvature optimizer.

Each optimizer trains the workload's model through the arena's own step function (`make_train_step`: the closure
with create_graph=True on refresh steps for Hutchinson-kind optimizers, the sampled-label backward pass for
Sophia-G, MKOR's hooks on the Linear layers), at its registry defaults, and every step is timed on its own.
Reported per optimizer: the mean step (the amortised cost over a whole number of refresh periods), the mean
refresh step and the mean of the others, each against AdamW's mean step on the same batches. Optimizers run
interleaved, in rounds, on one thread.

    python benchmarks/curvature_cost.py [--workload stdlib_bytes] [--size quick] [--rounds 3] [--periods 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from optarena import optim
from optarena.arena.trial import make_train_step
from optarena.workloads import get

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "curvature_cost.json"
OPTIMIZERS = ("adamw", "sophia_g", "sophia_h", "adahessian", "mkor")
PERIOD = 10  # steps per timed block: a whole number of refresh periods for every optimizer above (k = 10 and 1)


def refresh_due(optimizer: Any) -> bool:
    """Does the next step refresh the curvature (a diagonal estimate, or MKOR's Kronecker factors)?"""
    if hasattr(optimizer, "curvature_due"):
        return optimizer.curvature_due
    return optimizer.is_factor_step() if hasattr(optimizer, "is_factor_step") else False


def time_steps(workload: Any, name: str, steps: int, warmup: int, seed: int) -> list[tuple[bool, float]]:
    """(was it a refresh step, seconds) for `steps` consecutive training steps after `warmup` untimed ones."""
    model = workload.init_model(seed)
    model.train()
    info = optim.info(name)
    optimizer = optim.create(name, model if info.needs_model else model.parameters(), lr=1e-4)
    train_step = make_train_step(workload, model, optimizer, info, seed)
    batches = workload.train_batches(seed)
    times = []
    for index in range(warmup + steps):
        refresh = refresh_due(optimizer)
        start = time.perf_counter()
        train_step(next(batches))
        if index >= warmup:
            times.append((refresh, time.perf_counter() - start))
    return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    workload = get(args.workload, args.size)
    workload.prepare()
    samples: dict[str, list[tuple[bool, float]]] = {name: [] for name in OPTIMIZERS}
    for round_index in range(args.rounds):
        for name in OPTIMIZERS:
            samples[name] += time_steps(workload, name, args.periods * PERIOD, args.warmup, seed=round_index)
    adamw_ms = 1000 * statistics.mean(t for _, t in samples["adamw"])
    rows = []
    for name in OPTIMIZERS:
        refresh = [t for r, t in samples[name] if r]
        other = [t for r, t in samples[name] if not r]
        mean_ms = 1000 * statistics.mean(t for _, t in samples[name])
        rows.append(
            {
                "optimizer": name,
                "update_period": optim.info(name).defaults.get(
                    "update_period", optim.info(name).defaults.get("inv_freq")
                ),
                "mean_step_ms": mean_ms,
                "refresh_step_ms": 1000 * statistics.mean(refresh) if refresh else None,
                "other_step_ms": 1000 * statistics.mean(other) if other else None,
                "x_adamw": mean_ms / adamw_ms,
            }
        )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/curvature_cost.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "json"),
        "torch": torch.__version__,
        "threads": args.threads,
        "workload": f"{args.workload} ({args.size})",
        "steps_per_round": args.periods * PERIOD,
        "rounds": args.rounds,
        "rows": rows,
    }


def markdown(results: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    lines = [
        f"workload {results['workload']}, {results['steps_per_round']} steps x {results['rounds']} rounds, "
        f"{results['threads']} thread(s), torch {results['torch']}, {results['date']}",
        "",
        "| optimizer | refresh every | mean step (ms) | refresh step (ms) | other steps (ms) | mean step x AdamW |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['optimizer']} | {row['update_period'] or '—'} | {ms(row['mean_step_ms'])} | "
            f"{ms(row['refresh_step_ms'])} | {ms(row['other_step_ms'])} | {row['x_adamw']:.2f}x |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="stdlib_bytes")
    parser.add_argument("--size", default="quick")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (one model seed each)")
    parser.add_argument("--periods", type=int, default=2, help=f"timed blocks of {PERIOD} steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
