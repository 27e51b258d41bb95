"""Intrinsic dimension of MNIST classification with a fully connected 784-200-200-10 ReLU network.

Reproduces the order of magnitude of Li, Farkhoor, Liu, Yosinski, "Measuring the Intrinsic Dimension of Objective
Landscapes" (arXiv:1804.08838), whose MNIST result for this network (D = 199,210 parameters) is d_int90 ~ 750: the
smallest subspace dimension d whose validation accuracy reaches 90% of the accuracy of training all D parameters.

Set-up, and how it differs from the paper's (README of uber-research/intrinsic-dimension: Adam, lr 1e-3, L2 1e-5,
minibatch 128, 100 epochs, training on all 60,000 images and validating on the 10,000 test images):
- data: optarena's MNIST split (optarena.workloads.mnist_mlp.mnist_split: the first 50,000 training images for
  training, the last 10,000 for validation, normalised with MNIST's mean and std; the test set is not used);
- network: 784-200-200-10 ReLU, weights He-normal (truncated normal, std sqrt(2 / fan_in), as Keras' he_normal)
  and zero biases, as the authors' code; theta_0 is the same initialisation for every d;
- subspace: SubspaceModel(net, d, projection="sparse") (the paper's sparse projection: per-tensor density
  1/sqrt(size), unit-norm columns; on one CPU thread it is the fastest of the three here), plus a cross-check of
  the same training with the Fastfood projection at d = 750 (`--cross-check fastfood:750`);
- training: Adam, lr 1e-3, minibatch 128, no L2, `--epochs` epochs for every d and `--baseline-epochs` for the
  full-space baseline (defaults 30 and 30, i.e. 30 x 391 = 11,730 steps; the paper trains 100 epochs, 46,900
  steps), validation accuracy after the last epoch.
Fewer epochs than the paper can only lower the subspace accuracies (at d = 750 the accuracy still rises by about
0.1 percentage point per epoch at epoch 30), so the d_int90 measured here is if anything an overestimate of what
100 epochs would give.

    OMP_NUM_THREADS=1 OPTARENA_DATA_DIR=/work/shared/data python benchmarks/intrinsic_dimension_mnist.py \
        [--dims 100,200,...] [--epochs 30] [--baseline-epochs 30] [--projection sparse]
        [--cross-check fastfood:750 ...] [--seed 0] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optarena.diagnostics import PROJECTIONS, SubspaceModel, find_intrinsic_dimension
from optarena.workloads.mnist_mlp import mnist_split

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "intrinsic_dimension_mnist.json"
DEFAULT_DIMS = (100, 200, 300, 400, 500, 600, 700, 750, 800, 900, 1000, 1250, 1500)
PAPER_D_INT90 = 750
WIDTH, DEPTH = 200, 2


def build_mlp(generator: torch.Generator) -> nn.Module:
    """784-200-200-10 ReLU MLP, He-normal weights (truncated at 2 std) and zero biases."""
    layers: list[nn.Module] = []
    sizes = [28 * 28] + [WIDTH] * DEPTH + [10]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        linear = nn.Linear(fan_in, fan_out)
        std = math.sqrt(2.0 / fan_in)
        nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std, generator=generator)
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train(
    model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], epochs: int, batch_size: int, lr: float, seed: int
) -> None:
    """Adam on the cross-entropy for `epochs` passes over shuffled minibatches (the shuffle from `seed`)."""
    x, y = data
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(x.shape[0], generator=generator).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    x, y = data
    return float((model(x).argmax(dim=1) == y).float().mean())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default=",".join(map(str, DEFAULT_DIMS)), help="comma-separated subspace sizes d")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs for every subspace size")
    parser.add_argument("--baseline-epochs", type=int, default=30, help="training epochs in the full space")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--projection", choices=PROJECTIONS, default="sparse")
    parser.add_argument(
        "--cross-check",
        action="append",
        metavar="PROJECTION:D",
        help="also train with another projection at one d (default: fastfood:750; 'none' for none)",
    )
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args()


def parse_cross_checks(values: list[str] | None) -> list[tuple[str, int]]:
    checks = []
    for value in values if values is not None else ["fastfood:750"]:
        if value == "none":
            continue
        projection, _, d = value.partition(":")
        if projection not in PROJECTIONS or not d.isdigit():
            raise SystemExit(f"--cross-check takes PROJECTION:D with PROJECTION in {PROJECTIONS}; got {value!r}")
        checks.append((projection, int(d)))
    return checks


def markdown_table(baseline: float, rows: list[dict[str, Any]], target: float) -> str:
    lines = [
        "| projection | d | validation accuracy | % of baseline | reaches 90% | train time (s) |",
        "|:---|---:|---:|---:|:---:|---:|",
    ]
    for row in rows:
        reached = "yes" if row["val_accuracy"] >= target else "no"
        share = 100 * row["val_accuracy"] / baseline
        lines.append(
            f"| {row['projection']} | {row['d']} | {row['val_accuracy']:.4f} | {share:.1f} | {reached} "
            f"| {row['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    dims = sorted(int(d) for d in args.dims.split(","))
    cross_checks = parse_cross_checks(args.cross_check)
    started = time.perf_counter()
    train_x, train_y, val_x, val_y = mnist_split(args.train_limit, flatten=True)
    train_data, val_data = (train_x, train_y), (val_x, val_y)

    def init_model() -> nn.Module:
        return build_mlp(torch.Generator().manual_seed(args.seed))  # the same theta_0 for the baseline and every d

    tic = time.perf_counter()
    baseline_model = init_model()
    big_d = sum(p.numel() for p in baseline_model.parameters())
    train(baseline_model, train_data, args.baseline_epochs, args.batch_size, args.lr, args.seed)
    baseline = accuracy(baseline_model, val_data)
    baseline_seconds = time.perf_counter() - tic
    print(f"full space: D = {big_d}, validation accuracy {baseline:.4f} ({baseline_seconds:.0f} s)", flush=True)

    def run(projection: str, d: int) -> dict[str, Any]:
        tic = time.perf_counter()
        projection_generator = torch.Generator().manual_seed(args.seed + 1)
        subspace = SubspaceModel(init_model(), d, projection=projection, generator=projection_generator)
        train(subspace, train_data, args.epochs, args.batch_size, args.lr, args.seed)
        row = {
            "projection": projection,
            "d": d,
            "val_accuracy": accuracy(subspace, val_data),
            "train_accuracy": accuracy(subspace, train_data),
            "train_seconds": time.perf_counter() - tic,
        }
        print(f"{projection} d = {d}: validation accuracy {row['val_accuracy']:.4f} ({row['train_seconds']:.0f} s)")
        return row

    rows = [run(args.projection, d) for d in dims]
    checks = [run(projection, d) for projection, d in cross_checks]
    result = find_intrinsic_dimension(
        [row["d"] for row in rows], [row["val_accuracy"] for row in rows], baseline=baseline, threshold=args.threshold
    )
    runtime = time.perf_counter() - started
    report = {
        "benchmark": "intrinsic_dimension_mnist",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "command": "python " + " ".join(sys.argv),
        "config": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "data_dir": os.environ.get("OPTARENA_DATA_DIR"),
        "network": f"784-{WIDTH}-{WIDTH}-10 ReLU",
        "D": big_d,
        "baseline": {"val_accuracy": baseline, "epochs": args.baseline_epochs, "seconds": baseline_seconds},
        "sweep": rows,
        "cross_checks": checks,
        "threshold": result.threshold,
        "target_accuracy": result.target,
        "d_int90": result.d_int,
        "d_below": result.d_below,
        "d_int90_interpolated": result.d_int_interpolated,
        "paper_d_int90": PAPER_D_INT90,
        "runtime_seconds": runtime,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(f"Full-space baseline (D = {big_d}): validation accuracy {baseline:.4f}; 90% target {result.target:.4f}")
    print()
    print(markdown_table(baseline, rows + checks, result.target))
    print()
    interpolated = "n/a" if result.d_int_interpolated is None else f"{result.d_int_interpolated:.0f}"
    print(
        f"d_int90 = {result.d_int} ({args.projection}; the largest swept d below it is {result.d_below}; linear "
        f"interpolation {interpolated}); paper: ~{PAPER_D_INT90}. Runtime {runtime / 60:.1f} min. JSON: {args.json}"
    )


if __name__ == "__main__":
    main()
