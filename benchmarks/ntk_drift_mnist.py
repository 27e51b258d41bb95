"""How far the empirical NTK moves during training, for MLPs of growing width on MNIST.

Each width trains a one-hidden-layer ReLU network with SGD on 2,000 MNIST training images (5 epochs of batch 100)
and records the empirical NTK (trace mode) on 16 held-out images before training and after every epoch, with
`optarena.diagnostics.NTKTracker`. The drift is ||Theta_t - Theta_0||_F / ||Theta_0||_F: the kernel regime of
Jacot et al. (arXiv:1806.07572) predicts it shrinks as the width grows.

    OMP_NUM_THREADS=1 OPTARENA_DATA_DIR=... python benchmarks/ntk_drift_mnist.py [--widths 64 256 1024]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from optarena.diagnostics import NTKTracker
from optarena.workloads.mnist_mlp import mnist_split

DEFAULT_JSON = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "ntk_drift_mnist.json"


def drift_by_width(widths: list[int], examples: int, epochs: int, lr: float) -> dict[int, list[tuple[int, float]]]:
    train_x, train_y, val_x, _ = mnist_split(examples, flatten=True)
    probe = val_x[:16]
    result = {}
    for width in widths:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        tracker = NTKTracker(model, probe, mode="trace")
        tracker.record(0)
        batches = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0)).split(100)
        step = 0
        for _ in range(epochs):
            for batch in batches:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(train_x[batch]), train_y[batch]).backward()
                optimizer.step()
                step += 1
            tracker.record(step)
        result[width] = tracker.drift()
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    drifts = drift_by_width(args.widths, args.examples, args.epochs, args.lr)
    steps = [step for step, _ in next(iter(drifts.values()))]
    print("| width | " + " | ".join(f"drift after {s} steps" for s in steps) + " |")
    print("|---:|" + "---:|" * len(steps))
    for width, values in drifts.items():
        print(f"| {width} | " + " | ".join(f"{d:.3f}" for _, d in values) + " |")
    results = {
        "command": "python benchmarks/ntk_drift_mnist.py " + " ".join(argv or []),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "torch": torch.__version__,
        "drift": {str(w): values for w, values in drifts.items()},
        "seconds": time.perf_counter() - start,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
