"""External tuning: T trials per study from scrambled Halton quasi-random points, S studies (AlgoPerf's protocol,
Dahl et al., arXiv:2306.07179, Sec. 4.3.1); self-tuning entrants run one trial per study."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from scipy.stats import qmc

from optarena.arena.entrants import Entrant


@dataclass(frozen=True)
class PlannedTrial:
    entrant: str
    workload: str
    study: int
    index: int
    seed: int
    hparams: dict[str, Any]


def derived_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (the same on every machine and Python version)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def halton_points(count: int, dims: int, seed: int) -> list[list[float]]:
    """`count` scrambled Halton points in the unit cube of `dims` dimensions."""
    if dims == 0:
        return [[] for _ in range(count)]
    return qmc.Halton(d=dims, scramble=True, seed=seed).random(count).tolist()


def plan_trials(entrant: Entrant, workload: str, studies: int, trials: int, base_seed: int) -> list[PlannedTrial]:
    """Every trial of one entrant on one workload; deterministic given the arguments."""
    if studies < 1 or trials < 1:
        raise ValueError(f"studies and trials must be >= 1, got studies={studies}, trials={trials}")
    per_study = trials if entrant.ruleset == "external" else 1
    planned = []
    for study in range(studies):
        points = halton_points(
            per_study, len(entrant.search_space), derived_seed(base_seed, entrant.name, workload, study)
        )
        for index, point in enumerate(points):
            planned.append(
                PlannedTrial(
                    entrant=entrant.name,
                    workload=workload,
                    study=study,
                    index=index,
                    seed=derived_seed(base_seed, workload, study, index),
                    hparams=entrant.search_space.sample(point),
                )
            )
    return planned
