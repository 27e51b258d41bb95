"""Suites from built-in names and from YAML/TOML files; bad input is named."""

from pathlib import Path

import pytest
import torch

from optarena.arena import entrants as entrant_lib
from optarena.arena import suite as suite_lib
from optarena.workloads.registry import get as get_workload


def test_builtin_suites_load() -> None:
    assert {"demo", "baselines", "baselines-full", "optimizers", "curvature", "memory"} <= set(
        suite_lib.builtin_names()
    )
    demo = suite_lib.load("demo")
    assert demo.size == "quick" and demo.entrants[-1].ruleset == "self"
    assert len(demo.plan()) == len(demo.workloads) * (3 * demo.studies * demo.trials + demo.studies)


def test_yaml_and_toml_files_give_the_same_suite(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "name: s\nworkloads: [quadratic_deep]\nstudies: 1\ntrials: 2\n"
        "entrants:\n  - adamw\n  - name: tuned-sgd\n    optimizer: sgd\n"
        "    search_space: {lr: {type: log_uniform, low: 0.01, high: 0.1}, warmup_fraction: [0.0, 0.1]}\n"
        "    fixed: {momentum: 0.9}\n"
    )
    (tmp_path / "s.toml").write_text(
        'name = "s"\nworkloads = ["quadratic_deep"]\nstudies = 1\ntrials = 2\n'
        'entrants = ["adamw", {name = "tuned-sgd", optimizer = "sgd", fixed = {momentum = 0.9}, '
        'search_space = {lr = {type = "log_uniform", low = 0.01, high = 0.1}, warmup_fraction = [0.0, 0.1]}}]\n'
    )
    from_yaml, from_toml = suite_lib.load(tmp_path / "s.yaml"), suite_lib.load(tmp_path / "s.toml")
    assert from_yaml.to_config() == from_toml.to_config()
    assert from_yaml.plan() == from_toml.plan()
    sgd = from_yaml.entrant("tuned-sgd")
    assert sgd.fixed == {"momentum": 0.9} and list(sgd.search_space) == ["lr", "warmup_fraction"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: s\nworkloads: [nope]\nentrants: [adamw]\n", "known workloads"),
        ("name: s\nworkloads: [quadratic_deep]\nentrants: [nope]\n", "known optimizers"),
        ("name: s\nworkloads: [quadratic_deep]\nentrants: [adamw]\nstudies: 0\n", "studies and trials"),
        ("name: s\nworkloads: [quadratic_deep]\nentrants: [adamw]\nsize: huge\n", "size must be one of"),
        ("name: s\nworkloads: [quadratic_deep]\nentrants: [adamw]\ncolour: red\n", "unknown suite keys"),
        ("name: s\nworkloads: [quadratic_deep]\nentrants: [adamw, adamw]\n", "unique"),
        (
            "name: s\nworkloads: [quadratic_deep]\nentrants: [{name: x, optimizer: sgd, search_space: "
            "{lr: {type: cubic, low: 1, high: 2}}}]\n",
            "search-space type",
        ),
        (
            "name: s\nworkloads: [quadratic_deep]\nentrants: [adamw]\nmeasure: {kinds: [hessian], every_steps: 5}\n",
            "kinds must be",
        ),
        ("name: s\nworkloads: [quadratic_deep]\nentrants: [adamw]\nmeasure: {kinds: [sharpness]}\n", "every_steps"),
        ("name: s\nworkloads: [quadratic_deep]\nentrants: [adamw]\ndevice: gpu0\n", "device must be a torch device"),
        ("name: s\nworkloads: [quadratic_deep]\nentrants: [{name: x, optimizer: sgd, colour: red}]\n", "entrant keys"),
        (
            "name: s\nworkloads: [quadratic_deep]\nentrants: [{name: x, optimizer: galore, embeddings: {colour: 1}}]\n",
            "unknown hyperparameters",
        ),
        (
            "name: s\nworkloads: [quadratic_deep]\nentrants: [{name: x, optimizer: adamw_8bit, embeddings: "
            "{min_8bit_size: -1}}]\n",
            "min_8bit_size",
        ),
        (
            "name: s\nworkloads: [quadratic_deep]\nentrants: [{name: x, optimizer: mkor, embeddings: {}}]\n",
            "built from",
        ),
    ],
)
def test_bad_suite_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        suite_lib.load(path)


def test_unknown_suite_name() -> None:
    with pytest.raises(ValueError, match="neither a suite file"):
        suite_lib.load("no-such-suite")
    with pytest.raises(FileNotFoundError):
        suite_lib.load("missing.yaml")


def test_measure_is_read_from_yaml_and_toml_and_only_then_part_of_the_config(tmp_path: Path) -> None:
    from optarena.arena.measurements import MeasurementPlan

    base = "name: s\nworkloads: [quadratic_deep]\nentrants: [adamw]\n"
    (tmp_path / "plain.yaml").write_text(base)
    (tmp_path / "m.yaml").write_text(
        base + "measure: {kinds: [sharpness, opposing_signals], every_steps: 50, top_k: 3}\n"
    )
    (tmp_path / "m.toml").write_text(
        'name = "s"\nworkloads = ["quadratic_deep"]\nentrants = ["adamw"]\n'
        '[measure]\nkinds = ["sharpness", "opposing_signals"]\nevery_steps = 50\ntop_k = 3\n'
    )
    plain = suite_lib.load(tmp_path / "plain.yaml")
    assert plain.measure is None and "measure" not in plain.to_config()  # stored runs without it still resume
    measured = suite_lib.load(tmp_path / "m.yaml")
    assert measured.measure == MeasurementPlan(("sharpness", "opposing_signals"), every_steps=50, top_k=3)
    assert measured.to_config() == suite_lib.load(tmp_path / "m.toml").to_config()
    assert measured.to_config()["measure"]["every_steps"] == 50
    assert {k: v for k, v in measured.to_config().items() if k != "measure"} == plain.to_config()


def test_an_mkor_h_entrant_is_read_from_a_suite_file(tmp_path: Path) -> None:
    (tmp_path / "h.yaml").write_text(
        "name: h\nworkloads: [digits_logreg]\n"
        "entrants: [mkor, {name: mkor-h, optimizer: mkor, mkor_switch: {beta: 0.01, min_steps: 20}}]\n"
    )
    suite = suite_lib.load(tmp_path / "h.yaml")
    assert suite.entrant("mkor-h").mkor_switch == {"beta": 0.01, "min_steps": 20}
    assert "mkor_switch" not in suite.entrant("mkor").to_config()  # stored runs without it resume unchanged


def test_the_memory_suite_gives_the_embeddings_the_papers_states() -> None:
    memory = suite_lib.load("memory")
    assert memory.entrant("adamw").embeddings is None and "embeddings" not in memory.entrant("adamw").to_config()
    assert memory.entrant("q_galore-r0.25").to_config()["embeddings"] == {"rank_fraction": 1.0, "min_8bit_size": 10**12}
    # the same search space as the registry's 8-bit AdamW, only the embeddings' states differ
    eight_bit = memory.entrant("adamw_8bit")
    assert eight_bit.search_space.describe() == entrant_lib.resolve("adamw_8bit").search_space.describe()


def test_the_device_is_part_of_the_config_only_off_the_cpu_and_must_exist_to_run(tmp_path: Path) -> None:
    base = "name: s\nworkloads: [digits_logreg]\nentrants: [adamw]\nstudies: 1\ntrials: 1\n"
    (tmp_path / "cpu.yaml").write_text(base + "device: cpu\n")
    (tmp_path / "meta.yaml").write_text(base + "device: meta\n")
    on_cpu, elsewhere = suite_lib.load(tmp_path / "cpu.yaml"), suite_lib.load(tmp_path / "meta.yaml")
    assert "device" not in on_cpu.to_config()  # runs stored before devices existed still resume
    assert elsewhere.to_config() == {**on_cpu.to_config(), "device": "meta"}  # another device, another run
    on_cpu.check_device()
    with pytest.raises(ValueError, match="this machine does not have"):
        elsewhere.check_device()
    workload = get_workload("digits_logreg", "quick", "meta")
    assert workload.device == torch.device("meta")


def test_an_entrant_names_its_schedule_and_takes_its_parameters() -> None:
    entrant = entrant_lib.resolve("adamw+warmup_linear")
    assert entrant.name == "adamw+warmup_linear" and entrant.schedule == "warmup_linear"
    assert "warmup_fraction" in entrant.search_space
    constant = entrant_lib.resolve("sgd+constant")
    assert "warmup_fraction" not in constant.search_space  # a schedule without warmup is not tuned for one
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer, scheduler = entrant.build([parameter], {"lr": 0.1, "warmup_fraction": 0.1, "final_factor": 0.5}, 100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1) and lrs[-1] > 0.05
    with pytest.raises(ValueError, match="unknown schedule"):
        entrant_lib.resolve("adamw+nope")
