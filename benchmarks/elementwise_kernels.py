"""The cost of torch's elementwise CPU kernels on one cache-sized chunk, and of optimizer steps built from them.

An elementwise optimizer's multi-tensor step on the CPU runs its kernels chunk by chunk (optim/base.py), so its time
is about the sum of its kernels' times on a chunk that stays in cache. This script times each kernel on a chunk of
2**18 float32 elements (the default chunk), in ns per element, and sums the kernel sequences of torch's AdamW
multi-tensor step and of optarena's diffGrad step (both written out below, as their code runs them), to show where
a step's time goes; e.g. whether a transcendental such as diffGrad's sigmoid, rather than memory traffic, bounds it.

    OMP_NUM_THREADS=1 python benchmarks/elementwise_kernels.py [--repeats 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

CHUNK = 2**18

# name -> kernel on operands a, b, c (in place on a where the optimizers do it in place)
KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], object]] = {
    "copy_": lambda a, b, c: a.copy_(b),
    "add_ (scalar)": lambda a, b, c: a.add_(1e-30),
    "mul_ (scalar)": lambda a, b, c: a.mul_(1.0),
    "mul_ (tensor)": lambda a, b, c: a.mul_(b),
    "sub (new tensor)": lambda a, b, c: torch.sub(a, b),
    "abs_": lambda a, b, c: a.abs_(),
    "lerp_": lambda a, b, c: a.lerp_(b, 0.1),
    "addcmul_": lambda a, b, c: a.addcmul_(b, b, value=1e-30),
    "addcdiv_": lambda a, b, c: a.addcdiv_(b, c, value=-1e-30),
    "div (new tensor)": lambda a, b, c: torch.div(a, c),
    "sqrt (new tensor)": lambda a, b, c: torch.sqrt(c),
    "sigmoid_": lambda a, b, c: a.sigmoid_(),
    "normal_ (Gaussian draws)": lambda a, b, c: a.normal_(),
}

# The kernels of one step, per chunk, as the code runs them (weight decay on; eps and bias corrections as scalars).
STEPS = {
    "torch AdamW (foreach)": [
        "mul_ (scalar)",  # decoupled weight decay
        "lerp_",  # m
        "mul_ (scalar)",  # v *= beta2
        "addcmul_",  # v += (1 - beta2) g^2
        "sqrt (new tensor)",  # sqrt(v)
        "div (new tensor)",  # / sqrt(bias correction 2)
        "add_ (scalar)",  # + eps
        "addcdiv_",  # p -= step * m / denom
    ],
    "optarena diffGrad (foreach)": [
        "lerp_",  # m
        "mul_ (scalar)",  # v *= beta2
        "addcmul_",  # v += (1 - beta2) g^2
        "sub (new tensor)",  # g_prev - g
        "abs_",
        "sigmoid_",  # friction
        "copy_",  # g_prev = g
        "sqrt (new tensor)",
        "add_ (scalar)",  # + eps
        "mul_ (tensor)",  # friction * m
        "addcdiv_",
    ],
}


def time_kernel(kernel: Callable, repeats: int) -> float:
    """Median seconds of one call on fresh, cache-warm operands (positive where a root or division needs it)."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(CHUNK, generator=generator), torch.randn(CHUNK, generator=generator)
    c = torch.rand(CHUNK, generator=generator) + 0.5
    for _ in range(10):
        kernel(a, b, c)
    times = []
    for _ in range(repeats):
        a.copy_(b)  # keep values in range (sigmoid_ and friends would drift)
        start = time.perf_counter()
        kernel(a, b, c)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="kernels interleaved; median over rounds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    samples: dict[str, list[float]] = {name: [] for name in KERNELS}
    for _ in range(args.rounds):
        for name, kernel in KERNELS.items():
            samples[name].append(time_kernel(kernel, args.repeats))
    ns = {name: 1e9 * statistics.median(values) / CHUNK for name, values in samples.items()}
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, {args.threads} thread(s), chunk {CHUNK} float32, CPU capability {capability}")
    print("\n| kernel | ns / element | x add_ |\n|---|---:|---:|")
    for name, value in ns.items():
        print(f"| {name} | {value:.3f} | {value / ns['add_ (scalar)']:.1f}x |")
    print("\n| step | kernels | sum (ns / element) | x torch AdamW |\n|---|---:|---:|---:|")
    adamw = sum(ns[k] for k in STEPS["torch AdamW (foreach)"])
    for name, kernels in STEPS.items():
        total = sum(ns[k] for k in kernels)
        print(f"| {name} | {len(kernels)} | {total:.3f} | {total / adamw:.2f}x |")
    return ns


if __name__ == "__main__":
    main()
