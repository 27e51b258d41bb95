"""Harness overhead: one arena trial against a bare PyTorch loop doing the same steps on the same workload.

The bare loop is what a researcher would write: init, then `steps` x (batch, forward, backward, step, scheduler)
with the same evaluations at the same steps. Both run the workload's step hint, as a target-setting trial does (it
stops neither at the target nor at the time budget), so both do exactly the same work. The arena trial is
`run_trial` (submission clock, divergence check, evaluation bookkeeping) plus what the runner adds per trial in a
SQLite store: the claim, heartbeats (at most one every 30 s, so one for trials this short) and the final
transaction. Runs are interleaved and repeated; medians are reported.

    python benchmarks/harness_overhead.py [--workloads mnist_mlp stdlib_bytes] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from optarena.arena.entrants import baseline
from optarena.arena.storage import Store, TrialRow
from optarena.arena.suite import load as load_suite
from optarena.arena.trial import EvalPoint, TrialResult, run_trial
from optarena.workloads import get

HPARAMS = {"lr": 1e-3, "beta1": 0.9, "weight_decay": 1e-4, "warmup_fraction": 0.05}


def bare_loop(workload, seed: int) -> float:
    start = time.perf_counter()
    config = workload.config
    model = workload.init_model(seed)
    optimizer, scheduler = baseline("adamw").build(model.parameters(), HPARAMS, config.step_hint)
    batches = workload.train_batches(seed)
    for step in range(1, config.step_hint + 1):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = workload.loss(model, next(batches))
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % config.eval_every_steps == 0 or step == config.step_hint:
            model.eval()
            with torch.no_grad():
                workload.evaluate(model)
    return time.perf_counter() - start


def arena_trial(workload, seed: int, store: Store | None) -> tuple[float, float]:
    """(wall seconds, submission-clock seconds) of one trial, with the runner's storage writes if a store."""
    start = time.perf_counter()
    trial_id = owner = None
    if store is not None:
        owner = "bench:0:x"
        with store.session() as s:
            row = TrialRow(
                run_id=1,
                entrant="adamw",
                workload=workload.name,
                study=0,
                index=int(start * 1e6),
                seed=seed,
                hparams=HPARAMS,
                status="running",
                owner=owner,
                attempts=1,
            )
            s.add(row)
            s.commit()
            trial_id = row.id
    result = run_trial(workload, baseline("adamw"), HPARAMS, seed, target_setting=True)
    if store is not None:
        store.heartbeat(trial_id, owner)  # the runner beats at most every HEARTBEAT_EVERY_S; short trials once
        store.finish(trial_id, owner, result)
    return time.perf_counter() - start, result.submission_time


def measure(name: str, size: str, repeats: int, folder: Path) -> dict:
    workload = get(name, size)
    workload.prepare()
    store = Store(folder / f"{name}.db")
    store.open_run("bench", {"bench": name}, {})
    bare_loop(workload, 0)  # warm-up
    bare, trial, stored, clock = [], [], [], []
    for _ in range(repeats):
        bare.append(bare_loop(workload, 0))
        wall, sub = arena_trial(workload, 0, None)
        trial.append(wall)
        wall, sub = arena_trial(workload, 0, store)
        stored.append(wall)
        clock.append(sub)
    med = {
        k: statistics.median(v)
        for k, v in {
            "bare": bare,
            "trial": trial,
            "trial_with_store": stored,
            "submission_clock": clock,
        }.items()
    }
    return {
        "workload": name,
        "size": size,
        "steps": workload.config.step_hint,
        "repeats": repeats,
        **{f"{k}_s": v for k, v in med.items()},
        "overhead_trial": med["trial"] / med["bare"] - 1.0,
        "overhead_trial_with_store": med["trial_with_store"] / med["bare"] - 1.0,
        "all_runs_s": {"bare": bare, "trial": trial, "trial_with_store": stored},
    }


def store_cost_ms(folder: Path, trials: int = 40, points: int = 20) -> float:
    """Median milliseconds of the runner's per-trial database work: claim, one heartbeat, finish with points."""
    store = Store(folder / "cost.db")
    suite = load_suite("demo")
    run_id = store.open_run("cost", suite.to_config(), {})
    store.add_planned(run_id, suite.plan())
    metrics = {"val_loss": 1.0, "val_accuracy": 0.5}
    result = TrialResult(
        "budget", steps=points, eval_points=[EvalPoint(k, 0.1, 0.1, 1.0, metrics) for k in range(points)]
    )
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        trial = store.claim(run_id, "bench:0:y")
        store.heartbeat(trial.id, "bench:0:y")
        store.finish(trial.id, "bench:0:y", result)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["mnist_mlp", "digits_logreg", "stdlib_bytes"])
    parser.add_argument("--size", default="quick")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/harness_overhead.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(name, args.size, args.repeats, Path(folder)) for name in args.workloads]
        store_ms = store_cost_ms(Path(folder))
    print(
        f"{'workload':16s} {'steps':>6s} {'bare s':>8s} {'trial s':>8s} {'+store s':>9s} "
        f"{'overhead':>9s} {'+store':>8s}"
    )
    for r in rows:
        print(
            f"{r['workload']:16s} {r['steps']:6d} {r['bare_s']:8.3f} {r['trial_s']:8.3f} "
            f"{r['trial_with_store_s']:9.3f} {100 * r['overhead_trial']:8.1f}% "
            f"{100 * r['overhead_trial_with_store']:7.1f}%"
        )
    print(f"per-trial database work (claim, heartbeat, finish with 20 points): {store_ms:.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"torch": torch.__version__, "threads": torch.get_num_threads(), "store_ms_per_trial": store_ms}
    args.out.write_text(json.dumps({**summary, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
