"""Setting a workload's target the AlgoPerf way (Dahl et al., arXiv:2306.07179, Sec. 5.1), on this machine class.

1. Tune every torch baseline with T quasi-random trials, each run for the full step budget (no early stop).
2. Take the baseline and hyperparameters with the best validation value.
3. Rerun that configuration with `seeds` new seeds; the target is the median of their best validation values.

The report records every number so the target can be written down next to how it was set.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from optarena.arena.entrants import baseline
from optarena.arena.trial import TrialResult, run_trial
from optarena.arena.tuning import derived_seed, plan_trials
from optarena.workloads import registry as workload_registry

BASELINES = ("sgd", "nesterov", "adam", "adamw", "nadamw")


@dataclass
class Calibration:
    workload: str
    size: str
    metric: str
    higher_is_better: bool
    trials: int
    per_baseline: dict[str, tuple[float, dict[str, Any]]]
    chosen: str
    chosen_hparams: dict[str, Any]
    rerun_values: list[float]
    rerun_submission_times: list[float]
    target: float

    @property
    def time_budget_s(self) -> float:
        """5x the reruns' median submission time, at least 5 s, rounded up to 5 s: a guard against slow steps
        that leaves the step budget binding for optimizers as fast per step as the baselines."""
        return float(max(5, 5 * math.ceil(statistics.median(self.rerun_submission_times))))

    def how_set(self) -> str:
        """The sentence written next to the target."""
        values = ", ".join(f"{v:.4g}" for v in self.rerun_values)
        return (
            f"AlgoPerf procedure on 2 CPU cores: {len(self.per_baseline)} torch baselines x {self.trials} "
            f"Halton trials for {self.metric}; best was {self.chosen}; median of its best {self.metric} over "
            f"{len(self.rerun_values)} reseeded reruns ({values}) = {self.target:.4g}. "
            f"Reproduce: optarena calibrate {self.workload} --size {self.size} --trials {self.trials} "
            f"--seeds {len(self.rerun_values)}. Time budget: 5x the reruns' median submission time "
            f"({statistics.median(self.rerun_submission_times):.1f} s), at least 5 s."
        )

    def markdown(self) -> str:
        lines = [
            f"### {self.workload} ({self.size})",
            "",
            f"Target {self.metric} {'>=' if self.higher_is_better else '<='} {self.target:.4g}.",
            "",
            "| baseline | best " + self.metric + " | hyperparameters |",
            "|---|---|---|",
        ]
        for name, (value, hparams) in self.per_baseline.items():
            shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in hparams.items())
            lines.append(f"| {name} | {value:.4g} | {shown} |")
        times = ", ".join(f"{t:.1f}" for t in self.rerun_submission_times)
        lines += [
            "",
            self.how_set(),
            "",
            f"Submission-clock seconds of the reruns for the full step budget: {times}.",
            "",
        ]
        return "\n".join(lines)


def round_toward_easier(value: float, higher_is_better: bool) -> float:
    """Four significant digits, rounded in the direction that keeps the median rerun meeting the target."""
    if value == 0 or not math.isfinite(value):
        return value
    unit = 10.0 ** (math.floor(math.log10(abs(value))) - 3)
    rounded = (math.floor if higher_is_better else math.ceil)(value / unit) * unit
    return float(f"{rounded:.4g}")


def calibrate(
    workload_name: str,
    size: str,
    trials: int = 5,
    seeds: int = 3,
    base_seed: int = 0,
    baselines: Sequence[str] = BASELINES,
    on_trial: Callable[[str, TrialResult], None] | None = None,
) -> Calibration:
    workload = workload_registry.get(workload_name, size)
    workload.prepare()
    target = workload.target
    better = max if target.higher_is_better else min
    per_baseline: dict[str, tuple[float, dict[str, Any]]] = {}
    for name in baselines:
        entrant = baseline(name)
        results = []
        for planned in plan_trials(entrant, workload_name, 1, trials, base_seed):
            result = run_trial(workload, entrant, planned.hparams, planned.seed, stop_at_target=False)
            if on_trial:
                on_trial(name, result)
            if result.best_metric is not None and result.outcome != "diverged":
                results.append((result.best_metric, planned.hparams))
        if results:
            per_baseline[name] = better(results, key=lambda r: r[0])
    if not per_baseline:
        raise RuntimeError(f"no baseline produced a finite {target.metric} on {workload_name}")
    chosen = better(per_baseline, key=lambda n: per_baseline[n][0])
    hparams = per_baseline[chosen][1]
    reruns = [
        run_trial(workload, baseline(chosen), hparams, derived_seed("calibrate", base_seed, i), stop_at_target=False)
        for i in range(seeds)
    ]
    for result in reruns:
        if on_trial:
            on_trial(f"{chosen} rerun", result)
    values = [r.best_metric for r in reruns if r.best_metric is not None]
    return Calibration(
        workload=workload_name,
        size=size,
        metric=target.metric,
        higher_is_better=target.higher_is_better,
        trials=trials,
        per_baseline=per_baseline,
        chosen=chosen,
        chosen_hparams=hparams,
        rerun_values=values,
        rerun_submission_times=[r.submission_time for r in reruns],
        target=round_toward_easier(statistics.median(values), target.higher_is_better),
    )
