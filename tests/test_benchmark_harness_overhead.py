"""benchmarks/harness_overhead.py runs the bare loop, the trial and the trial with its store writes on one workload."""

from pathlib import Path

from benchmark_scripts import benchmark_script


def test_overhead_measures_the_same_steps_three_ways(tmp_path: Path) -> None:
    with benchmark_script("harness_overhead") as script:
        row = script.measure("quadratic_deep", "quick", 1, tmp_path)
        assert row["steps"] == script.get("quadratic_deep", "quick").config.step_hint
        assert all(row[f"{k}_s"] > 0 for k in ("bare", "trial", "trial_with_store", "submission_clock"))
        assert row["overhead_trial"] > -1 and row["overhead_trial_with_store"] > -1
        assert script.store_cost_ms(tmp_path, trials=2, points=3) > 0
