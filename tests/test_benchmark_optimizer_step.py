"""benchmarks/optimizer_step.py on a tiny parameter set: every registered optimizer gets a well-formed row. The
timings themselves are never checked (they depend on the machine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark_scripts import benchmark_script
from optarena import optim


@pytest.fixture(scope="module")
def bench():
    with benchmark_script("optimizer_step") as module:
        yield module


def _positive_times(samples, count):
    return len(samples) == count and all(s > 0 for s in samples)


def test_rows_cover_every_optimizer(bench, tmp_path: Path, capsys) -> None:
    out = tmp_path / "optimizer_step.json"
    argv = ["--params-scale", "0.001", "--repeats", "2", "--rounds", "2", "--warmup", "1", "--json", str(out)]
    results = bench.main(argv)
    assert json.loads(out.read_text())["n_params"] == results["n_params"]
    assert results["n_params"] == sum(p.numel() for p in bench.Bench(0.001).params) < 20_000
    assert results["n_tensors"] == len(bench.model_shapes())
    assert results["bandwidth"]["bytes_per_s"] > 0

    assert set(results["yardsticks"]) == set(bench.YARDSTICKS)
    foreach = results["yardsticks"]["torch AdamW foreach"]
    assert _positive_times(foreach["samples_s"], 2)  # one step in each of the two rounds
    assert len(foreach["median_ms_by_round"]) == 2 and len(results["bandwidth"]["runs"]) == 3
    assert results["adamw_foreach_ms"] == pytest.approx(foreach["median_ms"])

    cases, why_none = bench.reference_cases()
    assert cases, why_none
    rows = {row["optimizer"]: row for row in results["rows"]}
    elementwise = [name for name in optim.names() if not optim.info(name).needs_model]  # MKOR: curvature_cost.py
    assert sorted(rows) == elementwise == [row["optimizer"] for row in results["rows"]]
    for name, row in rows.items():
        reads, writes = bench.ELEMENT_ACCESSES[name]
        assert row["bytes_per_param"] == 4 * (reads + writes)
        assert _positive_times(row["foreach_samples_s"], 2)
        assert row["one_path"] == (not optim.info(name).has_foreach_option)
        assert row["one_path"] or _positive_times(row["single_tensor_samples_s"], 2)
        for key in (
            "foreach_ms",
            "x_adamw_foreach",
            "limit_ms",
            "x_limit",
            *([] if row["one_path"] else ["single_tensor_ms"]),
        ):
            assert row[key] > 0, (name, key)
        ref = row["reference"]
        if name in cases and not row["reference_note"].startswith(("reference not installed", "reference unavailable")):
            assert ref is not None, (name, row["reference_note"])
            assert _positive_times(ref["reference_samples_s"], 2) and _positive_times(ref["ours_foreach_samples_s"], 2)
            assert ref["x_reference"] > 0
        else:
            assert ref is None and row["reference_note"]

    table = capsys.readouterr().out
    header = "| optimizer | foreach step (ms) | single-tensor step (ms) | x AdamW foreach | reference step (ms) "
    assert header in table
    for name in [*bench.YARDSTICKS, *elementwise]:
        assert f"| {name} " in table


def test_an_optimizer_without_a_traffic_count_stops_the_script(bench, monkeypatch, tmp_path: Path) -> None:
    counts = dict(bench.ELEMENT_ACCESSES)
    del counts["lion"]
    monkeypatch.setattr(bench, "ELEMENT_ACCESSES", counts)
    with pytest.raises(SystemExit, match="lion"):
        bench.main(["--params-scale", "0.001", "--only", "lion", "--json", str(tmp_path / "x.json")])


def test_unknown_only_name_is_rejected(bench, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown optimizer"):
        bench.main(["--params-scale", "0.001", "--only", "no_such_optimizer", "--json", str(tmp_path / "x.json")])
