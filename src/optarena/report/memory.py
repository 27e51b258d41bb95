"""Quality against optimizer-state memory: does an entrant keep a reference entrant's validation value (within a
tolerance) with less optimizer state? Read from a stored run; shown by `optarena results --memory` and the report.

Quality is each study's best validation value over its finished trials (the best a tuned entrant reached in the
step budget), median over studies. Trials stop at the target, so an entrant that reaches it scores about the
target whatever it could have reached later: the comparison says "as good as the reference, to the target", which
is the question the arena asks, and measures how far short the others fall.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from optarena.report.results import RunResults


@dataclass(frozen=True)
class MemoryRow:
    entrant: str
    workload: str
    bytes_per_param: float | None  # median over the entrant's trials; None if no trial recorded it
    memory_ratio: float | None  # bytes_per_param / the reference's
    quality: float | None  # median over studies of the study's best validation value; None if no trial has one
    quality_gap: float | None  # relative shortfall against the reference (positive: worse), e.g. 0.013 = 1.3% worse
    within: bool | None  # quality_gap <= tolerance
    time_to_target: float  # median over studies of the best trial's (inf: not reached in most studies)
    steps_to_target: float


def study_quality(results: RunResults, entrant: str, workload: str, higher_is_better: bool) -> float | None:
    """Median over studies of each study's best validation value (None when no finished trial recorded one)."""
    best_by_study: dict[int, float] = {}
    for t in results.finished:
        if t.entrant != entrant or t.workload != workload or t.best_metric is None or not math.isfinite(t.best_metric):
            continue
        current = best_by_study.get(t.study)
        better = current is None or (t.best_metric > current if higher_is_better else t.best_metric < current)
        if better:
            best_by_study[t.study] = t.best_metric
    return statistics.median(best_by_study.values()) if best_by_study else None


def relative_gap(value: float, reference: float, higher_is_better: bool) -> float:
    """How much worse `value` is than `reference`, relative to the reference's magnitude (negative: better)."""
    worse_by = reference - value if higher_is_better else value - reference
    return worse_by / abs(reference) if reference else math.copysign(math.inf, worse_by) if worse_by else 0.0


def memory_rows(results: RunResults, reference: str = "adamw", tolerance: float = 0.02) -> list[MemoryRow]:
    """One row per (workload, entrant), entrants by state memory (smallest first); the reference must be an entrant."""
    from optarena.workloads import registry

    entrants = [e["name"] for e in results.run.config["entrants"]]
    if reference not in entrants:
        raise ValueError(f"reference entrant {reference!r} is not in run {results.run.name!r}: {entrants}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    cells = {key: cell for board in results.rulesets.values() for key, cell in board.cells.items()}
    memory = results.state_bytes_per_param
    rows = []
    for workload in results.run.config["workloads"]:
        higher = registry.get(workload, results.run.config["size"]).target.higher_is_better
        reference_quality = study_quality(results, reference, workload, higher)
        for entrant in sorted(entrants, key=lambda e: (memory.get(e, math.inf), e)):
            quality = study_quality(results, entrant, workload, higher)
            gap = None
            if quality is not None and reference_quality is not None:
                gap = relative_gap(quality, reference_quality, higher)
            cell = cells.get((entrant, workload))
            own, base = memory.get(entrant), memory.get(reference)
            rows.append(
                MemoryRow(
                    entrant=entrant,
                    workload=workload,
                    bytes_per_param=own,
                    memory_ratio=own / base if own is not None and base else None,
                    quality=quality,
                    quality_gap=gap,
                    within=None if gap is None else gap <= tolerance,
                    time_to_target=cell.time if cell is not None else math.inf,
                    steps_to_target=cell.steps if cell is not None else math.inf,
                )
            )
    return rows


def memory_figures(results: RunResults, reference: str, tolerance: float, colors: dict[str, str]) -> dict[str, str]:
    """Each workload's quality-against-memory figure (SVG text) from the run's `memory_rows`, by workload."""
    from optarena.report import plots
    from optarena.workloads import registry

    rows = memory_rows(results, reference, tolerance)
    figures = {}
    for workload in results.run.config["workloads"]:
        target = registry.get(workload, results.run.config["size"]).target
        mine = [r for r in rows if r.workload == workload]
        figures[workload] = plots.quality_against_memory(
            workload, target.metric, target.higher_is_better, mine, reference, tolerance, colors
        )
    return figures


def smallest_within(rows: list[MemoryRow], workload: str) -> MemoryRow | None:
    """The entrant with the least state memory whose quality is within the tolerance of the reference's."""
    candidates = [r for r in rows if r.workload == workload and r.within and r.bytes_per_param is not None]
    return min(candidates, key=lambda r: r.bytes_per_param, default=None)


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, pattern)


def memory_table(rows: list[MemoryRow], reference: str, tolerance: float) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the memory comparison (for the CLI table and Markdown)."""
    header = [
        "workload",
        "entrant",
        "state B/param",
        f"x {reference}",
        "best val (median of studies)",
        f"vs {reference}",
        f"within {tolerance:.0%}",
        "time-to-target (steps)",
    ]
    table = []
    for r in rows:
        within = "-" if r.within is None else "yes" if r.within else "no"
        steps = f" ({r.steps_to_target:.0f})" if math.isfinite(r.steps_to_target) else ""
        table.append(
            [
                r.workload,
                r.entrant,
                _fmt(r.bytes_per_param, ".2f"),
                _fmt(r.memory_ratio, ".2f"),
                _fmt(r.quality, ".4f"),
                _fmt(r.quality_gap, "+.1%"),
                within,
                ("not reached" if not math.isfinite(r.time_to_target) else f"{r.time_to_target:.0f} s") + steps,
            ]
        )
    return header, table
