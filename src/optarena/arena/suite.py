"""Suites: which workloads, at which size, against which entrants, with how much tuning.

A suite is read from a YAML or TOML file (or a built-in one by name, from `optarena/arena/suites/`):

    name: demo
    size: quick
    workloads: [quadratic_deep, digits_logreg]
    entrants: [adamw, nesterov, adamw@defaults]     # or mappings: {name, optimizer, search_space, fixed, ...}
    studies: 2          # S
    trials: 3           # T, per study, for external-tuning entrants
    seed: 0
    self_tuning_budget_scale: 3.0
    measure: {kinds: [sharpness, noise_scale, opposing_signals], every_steps: 50}   # optional diagnostics
    device: cuda        # optional: where models, data and optimizer states live (default: cpu)

`measure` (off when absent) takes the fields of `optarena.arena.measurements.MeasurementPlan`. It and `device` are
part of the run's configuration only when given (a device other than the CPU), so runs stored before they existed
resume unchanged, and results from another device are another run: times on different hardware do not compare.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from optarena.arena import entrants as entrant_lib
from optarena.arena.entrants import Entrant
from optarena.arena.measurements import MeasurementPlan
from optarena.arena.tuning import PlannedTrial, plan_trials
from optarena.hparams import Choice, LogUniform, OneMinusLogUniform, SearchSpace, Uniform
from optarena.workloads import registry as workload_registry
from optarena.workloads.base import SIZES

_DIMENSIONS = {"log_uniform": LogUniform, "uniform": Uniform, "one_minus_log_uniform": OneMinusLogUniform}
_KEYS = {
    "name",
    "size",
    "workloads",
    "entrants",
    "studies",
    "trials",
    "seed",
    "self_tuning_budget_scale",
    "description",
    "measure",
    "device",
}


@dataclass(frozen=True)
class Suite:
    name: str
    workloads: list[str]
    entrants: list[Entrant]
    size: str = "quick"
    studies: int = 3
    trials: int = 5
    seed: int = 0
    self_tuning_budget_scale: float = 3.0
    description: str = ""
    measure: MeasurementPlan | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        try:
            torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {self.device!r}") from None
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size!r}")
        for name in self.workloads:
            workload_registry.workload_class(name)  # raises on an unknown workload
        if not self.workloads or not self.entrants:
            raise ValueError(f"suite {self.name!r} needs at least one workload and one entrant")
        if self.studies < 1 or self.trials < 1:
            raise ValueError(f"studies and trials must be >= 1, got {self.studies} and {self.trials}")
        names = [e.name for e in self.entrants]
        if len(set(names)) != len(names):
            raise ValueError(f"entrant names must be unique, got {names}")

    def check_device(self) -> None:
        """Raise before any trial runs if this machine lacks the suite's device (rather than every trial failing)."""
        device = torch.device(self.device)
        if device.type == "cpu":
            return
        accelerator = torch.accelerator.current_accelerator()  # None on a machine without one
        if (
            accelerator is None
            or accelerator.type != device.type
            or (device.index or 0) >= torch.accelerator.device_count()
        ):
            have = "none" if accelerator is None else f"{accelerator.type} x {torch.accelerator.device_count()}"
            raise ValueError(
                f"the suite runs on {self.device!r}, which this machine does not have (accelerators: {have})"
            )

    def entrant(self, name: str) -> Entrant:
        return next(e for e in self.entrants if e.name == name)

    def budget_scale(self, entrant: Entrant) -> float:
        return self.self_tuning_budget_scale if entrant.ruleset == "self" else 1.0

    def plan(self) -> list[PlannedTrial]:
        """Every trial of the suite, study-major so that partial results cover all entrants early."""
        planned = [
            t
            for w in self.workloads
            for e in self.entrants
            for t in plan_trials(e, w, self.studies, self.trials, self.seed)
        ]
        return sorted(planned, key=lambda t: (t.study, t.index, t.workload))

    def to_config(self) -> dict[str, Any]:
        """A JSON-able description; a stored run resumes only with an equal one. `measure` and `device` appear only
        when set."""
        config = {
            "name": self.name,
            "size": self.size,
            "workloads": list(self.workloads),
            "entrants": [e.to_config() for e in self.entrants],
            "studies": self.studies,
            "trials": self.trials,
            "seed": self.seed,
            "self_tuning_budget_scale": self.self_tuning_budget_scale,
        }
        if self.measure is not None:
            config["measure"] = self.measure.to_config()
        if self.device != "cpu":
            config["device"] = self.device
        return config


def _dimension(spec: Any) -> Any:
    if isinstance(spec, list):
        return Choice(tuple(spec))
    kind = spec.get("type")
    if kind not in _DIMENSIONS:
        raise ValueError(f"search-space type must be one of {sorted(_DIMENSIONS)} or a list of choices, got {spec}")
    return _DIMENSIONS[kind](spec["low"], spec["high"])


_ENTRANT_KEYS = frozenset(f.name for f in dataclasses.fields(Entrant))  # a suite file's entrant keys


def _entrant(spec: Any) -> Entrant:
    if isinstance(spec, str):
        return entrant_lib.resolve(spec)
    unknown = set(spec) - _ENTRANT_KEYS
    if unknown:
        raise ValueError(
            f"unknown entrant keys {sorted(unknown)} in {spec.get('name')!r}; allowed: {sorted(_ENTRANT_KEYS)}"
        )
    space = SearchSpace({k: _dimension(v) for k, v in (spec.get("search_space") or {}).items()})
    return Entrant(
        name=spec["name"],
        optimizer=spec.get("optimizer", spec["name"]),
        search_space=space,
        fixed=spec.get("fixed") or {},
        schedule=spec.get("schedule", "warmup_cosine"),
        ruleset=spec.get("ruleset", "external"),
        adaptive_batch=spec.get("adaptive_batch"),
        autolrs=spec.get("autolrs"),
        mkor_switch=spec.get("mkor_switch"),
        embeddings=spec.get("embeddings"),
    )


def from_mapping(data: dict[str, Any]) -> Suite:
    unknown = set(data) - _KEYS
    if unknown:
        raise ValueError(f"unknown suite keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    return Suite(
        name=data["name"],
        workloads=list(data["workloads"]),
        entrants=[_entrant(e) for e in data["entrants"]],
        size=data.get("size", "quick"),
        studies=int(data.get("studies", 3)),
        trials=int(data.get("trials", 5)),
        seed=int(data.get("seed", 0)),
        self_tuning_budget_scale=float(data.get("self_tuning_budget_scale", 3.0)),
        description=data.get("description", ""),
        measure=MeasurementPlan.from_config(data["measure"]) if data.get("measure") is not None else None,
        device=str(data.get("device", "cpu")),
    )


def builtin_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files("optarena.arena.suites").iterdir()
        if p.name.endswith(".yaml")
    )


def load(name_or_path: str | Path) -> Suite:
    """A built-in suite by name, or a suite file (.yaml, .yml or .toml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".toml"):
        if not path.exists():
            raise FileNotFoundError(f"suite file {path} does not exist")
        text = path.read_text()
    elif str(name_or_path) in builtin_names():
        text = resources.files("optarena.arena.suites").joinpath(f"{name_or_path}.yaml").read_text()
    else:
        raise ValueError(
            f"{name_or_path!r} is neither a suite file (.yaml/.toml) nor a built-in suite "
            f"({', '.join(builtin_names())})"
        )
    data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    return from_mapping(data)
