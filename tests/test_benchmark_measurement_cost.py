"""benchmarks/measurement_cost.py on a small workload: every kind is timed, nothing fails, the table is well formed.
The timings themselves are never checked (they depend on the machine)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_scripts import benchmark_script


def test_every_measurement_is_timed_against_a_training_step(tmp_path: Path) -> None:
    with benchmark_script("measurement_cost") as bench:
        out = tmp_path / "r.json"
        results = bench.main(
            ["--workload", "digits_logreg", "--repeats", "1", "--probe-size", "32", "--json", str(out)]
        )
    cases = [row["case"] for row in results["rows"]]
    assert cases[0] == "training step (AdamW)" and results["rows"][0]["x_step"] == 1.0
    assert {"sharpness with SGD", "sharpness with AdamW", "noise_scale", "opposing_signals"} <= set(cases)
    assert all(row["median_ms"] > 0 for row in results["rows"])
    assert json.loads(out.read_text())["rows"] == results["rows"]
    assert bench.markdown(results).count("\n| ") == len(results["rows"]) + 1
