"""The command line, in-process: listings, and bad input that ends in one clear line and exit code 2."""

import dataclasses
from pathlib import Path

from typer.testing import CliRunner

from optarena.cli import app

runner = CliRunner()


def said(result) -> str:
    """The command's output with line wrapping undone."""
    return " ".join(result.stdout.split())


def test_list_shows_optimizers_schedules_workloads_and_suites() -> None:
    result = runner.invoke(app, ["list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for name in ("nadamw", "quadratic_deep", "stdlib_bytes", "demo", "baselines-full", "wsd", "decay_fraction=0.2"):
        assert name in result.stdout


def test_list_rejects_an_unknown_kind() -> None:
    result = runner.invoke(app, ["list", "gizmos"])
    assert result.exit_code == 2


def test_unknown_suite_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "no-such-suite", "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2
    assert "error:" in said(result) and "built-in suite" in said(result)


def test_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["results", "--db", str(tmp_path / "x.db"), "--run", "nope"])
    assert result.exit_code == 2 and "no run 'nope'" in said(result)


def test_bad_suite_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: s\nworkloads: [quadratic_deep]\nentrants: [adamw]\nstudies: 0\n")
    result = runner.invoke(app, ["run", str(tmp_path / "bad.yaml"), "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2 and "studies and trials" in said(result)


def test_rerun_marks_the_trials_of_a_time_window_or_an_entrant(tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    from arena_worker import SUITE, fake_trial_factory
    from optarena.arena.runner import run_suite
    from optarena.arena.storage import Store

    db = tmp_path / "x.db"
    run_suite(SUITE, Store(db), "r", trial_fn=fake_trial_factory(None))
    now = datetime.now()
    window = [(now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat()]
    result = runner.invoke(app, ["rerun", *window, "--db", str(db), "--run", "r"])
    assert result.exit_code == 0, result.output
    assert f"{len(SUITE.plan())} trials of run 'r' will be run again" in said(result)
    bad = runner.invoke(app, ["rerun", "yesterday", "today", "--db", str(db), "--run", "r"])
    assert bad.exit_code == 2 and "error:" in bad.output
    run_suite(SUITE, Store(db), "r", trial_fn=fake_trial_factory(None))
    adamw = sum(t.entrant == "adamw" for t in SUITE.plan())
    one = runner.invoke(app, ["rerun", "--entrant", "adamw", "--db", str(db), "--run", "r"])
    assert one.exit_code == 0 and f"{adamw} trials of run 'r' will be run again" in said(one)
    for args, message in (
        (["--entrant", "lion"], "entrant 'lion' is not in run 'r'"),
        ([], "say which trials"),
        ([window[0]], "both ends of the time window"),
    ):
        refused = runner.invoke(app, ["rerun", *args, "--db", str(db), "--run", "r"])
        assert refused.exit_code == 2 and message in said(refused), said(refused)


def test_profile_writes_one_svg_per_ruleset(tmp_path: Path) -> None:
    from arena_worker import SUITE, fake_trial_factory
    from optarena.arena.runner import run_suite
    from optarena.arena.storage import Store

    db = tmp_path / "x.db"
    run_suite(SUITE, Store(db), "r", trial_fn=fake_trial_factory(None))
    result = runner.invoke(app, ["profile", str(tmp_path / "p.svg"), "--db", str(db)])
    assert result.exit_code == 0, result.output
    written = sorted(tmp_path.glob("p-*.svg"))
    assert written and all(f.read_text().startswith("<svg") for f in written)
    assert "performance profiles" in written[0].read_text()
    result = runner.invoke(app, ["profile", str(tmp_path / "p.svg"), "--db", str(db), "--memory", "adamw"])
    assert result.exit_code == 0, result.output
    memory = sorted(tmp_path.glob("p-memory-*.svg"))
    assert [f.name for f in memory] == [f"p-memory-{w}.svg" for w in sorted(SUITE.workloads)]
    assert all("quality against optimizer-state memory" in f.read_text() for f in memory)
    refused = runner.invoke(app, ["profile", str(tmp_path / "p.svg"), "--db", str(db), "--memory", "lion"])
    assert refused.exit_code == 2 and "reference entrant 'lion' is not in run 'r'" in said(refused)


def test_measure_flags_set_or_override_the_suites_plan(tmp_path: Path) -> None:
    from optarena.arena import suite as suite_lib
    from optarena.cli import with_measurements

    spec = suite_lib.load("demo")
    assert with_measurements(spec, None, None) is spec
    plan = with_measurements(spec, "sharpness, noise_scale", 25).measure
    assert plan.kinds == ("sharpness", "noise_scale") and plan.every_steps == 25
    again = with_measurements(dataclasses.replace(spec, measure=plan), None, 10).measure
    assert again.kinds == ("sharpness", "noise_scale") and again.every_steps == 10
    result = runner.invoke(app, ["run", "demo", "--db", str(tmp_path / "x.db"), "--measure", "sharpness"])
    assert result.exit_code == 2 and "--measure-every" in said(result)
    bad = ["run", "demo", "--db", str(tmp_path / "x.db"), "--measure", "hessian", "--measure-every", "5"]
    result = runner.invoke(app, bad)
    assert result.exit_code == 2 and "kinds must be" in said(result)


def test_diagnostics_writes_the_figure_and_prints_the_tables(tmp_path: Path) -> None:
    from arena_worker import SUITE, fake_trial_factory
    from optarena.arena.measurements import Measurement
    from optarena.arena.runner import run_suite
    from optarena.arena.storage import Store

    def measured_trial(*args, **kwargs):
        result = fake_trial_factory(None)(*args, **kwargs)
        change = [{"index": 4, "delta": 0.75, "loss": 2.0, "text": "def f():"}]
        result.measurements = [
            Measurement(step, kind, values, 0.01)
            for step in (0, 10)
            for kind, values in (
                ("sharpness", {"sharpness": 3.0 + step, "threshold": 40.0, "preconditioned_sharpness": None}),
                ("noise_scale", {"b_simple": 50.0}),
                ("opposing_signals", {"rose": change if step else [], "fell": [], "gradient_cosine": -0.5}),
            )
        ]
        return result

    db = tmp_path / "x.db"
    run_suite(SUITE, Store(db), "plain", trial_fn=fake_trial_factory(None))
    result = runner.invoke(app, ["diagnostics", str(tmp_path / "d.svg"), "--db", str(db)], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "has no measurements" in said(result)
    run_suite(SUITE, Store(db), "measured", trial_fn=measured_trial)
    result = runner.invoke(app, ["diagnostics", str(tmp_path / "d.svg"), "--db", str(db)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.glob("d-*.svg"))
    assert written == ["d-digits_logreg.svg", "d-quadratic_deep.svg"]
    assert "stability threshold" in (tmp_path / "d-quadratic_deep.svg").read_text()
    assert "def f():" in said(result) and "measurement cost" in said(result) and "opposing_signals" in said(result)
