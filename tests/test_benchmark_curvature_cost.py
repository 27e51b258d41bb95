"""benchmarks/curvature_cost.py on a small workload: the refresh steps are the ones the optimizers' periods say, and
the table is well formed. The timings themselves are never checked (they depend on the machine)."""

from __future__ import annotations

from pathlib import Path

from benchmark_scripts import benchmark_script


def test_refresh_steps_follow_each_optimizers_period(tmp_path: Path) -> None:
    with benchmark_script("curvature_cost") as bench:
        workload = bench.get("digits_logreg", "quick")
        for name, refreshes in (("adamw", 0), ("sophia_g", 2), ("sophia_h", 2), ("adahessian", 20), ("mkor", 2)):
            times = bench.time_steps(workload, name, steps=20, warmup=2, seed=0)
            assert len(times) == 20 and all(t > 0 for _, t in times)
            assert sum(refresh for refresh, _ in times) == refreshes, name
        results = bench.main(
            ["--workload", "digits_logreg", "--rounds", "1", "--periods", "1", "--json", str(tmp_path / "r.json")]
        )
    assert [row["optimizer"] for row in results["rows"]] == list(bench.OPTIMIZERS)
    assert results["rows"][0]["x_adamw"] == 1.0 and (tmp_path / "r.json").exists()
