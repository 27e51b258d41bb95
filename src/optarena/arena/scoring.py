"""AlgoPerf scoring (Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179, Sec. 4.4).

Per entrant s and workload w: t_{s,w} = median over studies of (min over the study's trials of time-to-target),
infinite when no trial of a study reaches the target. Ratios r_{s,w} = t_{s,w} / min_s t_{s,w}; the performance
profile rho_s(tau) = fraction of workloads with r_{s,w} <= tau; the benchmark score
B_s = 1/(r_max - 1) * integral_1^{r_max} rho_s(tau) dtau, with ratios above r_max counting as infinite.
Because rho_s is a step function, the integral is exact: each workload with r <= r_max contributes
(r_max - r) / (W (r_max - 1)).

Steps-to-target are aggregated the same way. Seed noise is shown by the spread of the per-study best times.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

R_MAX = 4.0
INF = math.inf


@dataclass(frozen=True)
class TrialOutcome:
    """The part of a finished trial that scoring needs."""

    entrant: str
    workload: str
    study: int
    time_to_target: float | None
    steps_to_target: int | None


@dataclass(frozen=True)
class Cell:
    """One entrant on one workload: the per-study best values and their medians."""

    study_times: tuple[float, ...]
    study_steps: tuple[float, ...]

    @property
    def time(self) -> float:
        return _median(self.study_times)

    @property
    def steps(self) -> float:
        return _median(self.study_steps)

    @property
    def time_spread(self) -> tuple[float, float]:
        """(min, max) over studies of the best time-to-target: how much the figure moves with the seed."""
        return min(self.study_times), max(self.study_times)

    @property
    def studies_reached(self) -> int:
        return sum(math.isfinite(t) for t in self.study_times)


def _median(values: Sequence[float]) -> float:
    # statistics.median of [x, inf] is inf + x over 2 = inf, as AlgoPerf's np.median gives.
    return statistics.median(values) if values else INF


def cells(outcomes: Iterable[TrialOutcome]) -> dict[tuple[str, str], Cell]:
    """Per (entrant, workload): best time and steps of each study (min over its trials), inf when not reached."""
    best_time: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    best_steps: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for o in outcomes:
        key = (o.entrant, o.workload)
        t = o.time_to_target if o.time_to_target is not None else INF
        s = o.steps_to_target if o.steps_to_target is not None else INF
        best_time[key][o.study] = min(best_time[key].get(o.study, INF), t)
        best_steps[key][o.study] = min(best_steps[key].get(o.study, INF), s)
    return {
        key: Cell(
            tuple(best_time[key][k] for k in sorted(best_time[key])),
            tuple(best_steps[key][k] for k in sorted(best_steps[key])),
        )
        for key in best_time
    }


def ratios(times: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """r_{s,w} = t_{s,w} / min_s t_{s,w}; inf where the entrant or every entrant missed the target."""
    fastest: dict[str, float] = defaultdict(lambda: INF)
    for (_, workload), t in times.items():
        fastest[workload] = min(fastest[workload], t)
    return {key: (t / fastest[key[1]] if math.isfinite(t) else INF) for key, t in times.items()}


def performance_profile(entrant_ratios: Sequence[float], taus: Sequence[float]) -> list[float]:
    """rho(tau) for each tau: the fraction of workloads solved within tau times the fastest entrant."""
    count = len(entrant_ratios)
    return [sum(r <= tau for r in entrant_ratios) / count for tau in taus]


def benchmark_score(entrant_ratios: Sequence[float], r_max: float = R_MAX) -> float:
    """The normalised area under the performance profile on [1, r_max], computed exactly."""
    if not entrant_ratios:
        raise ValueError("entrant_ratios must not be empty")
    area = sum(r_max - r for r in entrant_ratios if r <= r_max)
    return area / (len(entrant_ratios) * (r_max - 1.0))


@dataclass(frozen=True)
class Leaderboard:
    """Scores of a set of entrants over a set of workloads (one ruleset)."""

    entrants: list[str]
    workloads: list[str]
    cells: dict[tuple[str, str], Cell]
    ratios: dict[tuple[str, str], float]
    scores: dict[str, float]

    def ranked(self) -> list[str]:
        return sorted(self.entrants, key=lambda e: (-self.scores[e], e))


def leaderboard(outcomes: Iterable[TrialOutcome], r_max: float = R_MAX) -> Leaderboard:
    """Score every entrant over every workload present; a missing (entrant, workload) counts as not reached."""
    table = cells(outcomes)
    entrants = sorted({e for e, _ in table})
    workloads = sorted({w for _, w in table})
    for e in entrants:
        for w in workloads:
            table.setdefault((e, w), Cell((INF,), (INF,)))
    r = ratios({key: cell.time for key, cell in table.items()})
    scores = {e: benchmark_score([r[(e, w)] for w in workloads], r_max) for e in entrants}
    return Leaderboard(entrants, workloads, table, r, scores)
