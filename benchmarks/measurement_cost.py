"""What one training-diagnostics measurement costs, against one training step, on a real workload.

Each kind is measured the way a trial measures it (`optarena.arena.measurements.Measurer`: eval mode, hooks
suspended, forked RNG, math attention backend) on the workload's fixed measurement batch (the workload's batch size)
and a probe of `--probe-size` training examples, after a training step of the optimizer, so that Adam's state
exists and the opposing-signals probe has a previous measurement to compare with. Sharpness is timed twice: with
SGD (one Lanczos run for lambda_max(H)) and with AdamW (a second one for lambda_max(P^-1 H)). The training step is
the arena's own (`make_train_step`). Reported: the median over `--repeats` of each, on `--threads` threads.

    OMP_NUM_THREADS=1 python benchmarks/measurement_cost.py [--workload stdlib_bytes] [--size quick] [--repeats 7]
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
from optarena.arena.measurements import KINDS, MeasurementPlan, Measurer
from optarena.arena.trial import make_train_step
from optarena.workloads import get

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "measurement_cost.json"
OPTIMIZERS = {"adamw": {"lr": 1e-3}, "sgd": {"lr": 0.1, "momentum": 0.9}}


def time_measurements(workload: Any, name: str, plan: MeasurementPlan, repeats: int, seed: int) -> dict[str, list]:
    """Seconds of `repeats` training steps and of the measurement of each kind of `plan` after each step."""
    model = workload.init_model(seed).to(workload.device)
    entry = optim.info(name)
    optimizer = optim.create(name, model.parameters(), **OPTIMIZERS[name])
    train_step = make_train_step(workload, model, optimizer, entry, seed)
    batches = workload.train_batches(seed)
    measurer = Measurer(plan, workload, seed)
    model.train()
    train_step(next(batches))
    measurer.measure(1, model, optimizer)  # warm-up, and the opposing-signals baseline
    seconds: dict[str, list[float]] = {"step": [], **{kind: [] for kind in plan.kinds}}
    for step in range(repeats):
        model.train()
        start = time.perf_counter()
        train_step(next(batches))
        seconds["step"].append(time.perf_counter() - start)
        for measurement in measurer.measure(step + 2, model, optimizer):
            if "error" in measurement.values:
                raise RuntimeError(f"{measurement.kind} failed: {measurement.values['error']}")
            seconds[measurement.kind].append(measurement.seconds)
    return seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    workload = get(args.workload, args.size)
    workload.prepare()
    plan = MeasurementPlan(KINDS, every_steps=1, probe_size=args.probe_size, lanczos_iterations=args.iterations)
    timed = {name: time_measurements(workload, name, plan, args.repeats, seed=0) for name in OPTIMIZERS}
    step_ms = 1000 * statistics.median(timed["adamw"]["step"])
    cases = [
        ("training step (AdamW)", "", timed["adamw"]["step"]),
        ("training step (SGD, momentum 0.9)", "", timed["sgd"]["step"]),
        ("sharpness with SGD", f"lambda_max(H): {args.iterations} Lanczos steps", timed["sgd"]["sharpness"]),
        (
            "sharpness with AdamW",
            f"lambda_max(H) and lambda_max(P^-1 H): 2 x {args.iterations} Lanczos steps",
            timed["adamw"]["sharpness"],
        ),
        (
            "noise_scale",
            f"per-example gradients of {workload.config.batch_size} examples",
            timed["adamw"]["noise_scale"],
        ),
        (
            "opposing_signals",
            f"per-example losses of {args.probe_size} examples, 2 group gradients",
            timed["adamw"]["opposing_signals"],
        ),
    ]
    rows = [
        {
            "case": case,
            "what": what,
            "median_ms": 1000 * statistics.median(s),
            "x_step": 1000 * statistics.median(s) / step_ms,
        }
        for case, what, s in cases
    ]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "OMP_NUM_THREADS=1 python benchmarks/measurement_cost.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "json"),
        "torch": torch.__version__,
        "threads": args.threads,
        "workload": f"{args.workload} ({args.size}), batch {workload.config.batch_size}",
        "repeats": args.repeats,
        "rows": rows,
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"workload {results['workload']}, medians of {results['repeats']}, {results['threads']} thread(s), "
        f"torch {results['torch']}, {results['date']}",
        "",
        "| measurement | what it computes | median (ms) | x AdamW training step |",
        "|---|---|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(f"| {row['case']} | {row['what']} | {row['median_ms']:.1f} | {row['x_step']:.1f}x |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="stdlib_bytes")
    parser.add_argument("--size", default="quick")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps and measurements per optimizer")
    parser.add_argument("--probe-size", type=int, default=MeasurementPlan.probe_size)
    parser.add_argument("--iterations", type=int, default=MeasurementPlan.lanczos_iterations, help="Lanczos steps")
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
