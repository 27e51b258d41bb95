"""The self-contained HTML report of a run: leaderboards, performance profiles, time-to-target and learning
curves, and the training diagnostics when the run measured any, every figure inlined as SVG so the file can be
mailed or archived on its own."""

from __future__ import annotations

import html
import math
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from optarena.arena.storage import Store
from optarena.report import plots
from optarena.report.diagnostics import diagnostics_sections
from optarena.report.memory import memory_figures
from optarena.report.results import best_per_study, load_results

MEMORY_TOLERANCE = 0.02  # the memory figure shades the values within 2% of the reference's (issue 5's goal)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def render_report(store: Store, run_name: str | None = None) -> str:
    """The report's HTML text."""
    from optarena.workloads import registry

    results = load_results(store, run_name)
    run = results.run
    size = run.config["size"]
    finished = results.finished
    entrants = [e["name"] for e in run.config["entrants"]]
    colors = plots.entrant_colors(entrants)
    reference = "adamw" if "adamw" in entrants else entrants[0]  # the memory figure's yardstick
    memory_svgs = memory_figures(results, reference, MEMORY_TOLERANCE, colors)
    sections = []
    for workload in run.config["workloads"]:
        target = registry.get(workload, size).target
        curves = {}
        for entrant in entrants:
            mine = [t for t in finished if t.workload == workload and t.entrant == entrant]
            best = best_per_study(mine, target.higher_is_better)
            points = store.eval_points(t.id for t in best)
            curves[entrant] = [points[t.id] for t in best]
        sections.append(
            {
                "workload": workload,
                "target": target,
                "svg": plots.learning_curves(workload, target.metric, target.value, curves, colors),
                "memory_svg": memory_svgs[workload],
            }
        )
    boards = []
    for ruleset, board in results.rulesets.items():
        rows = []
        for rank, entrant in enumerate(board.ranked(), 1):
            cells = []
            for w in board.workloads:
                cell = board.cells[(entrant, w)]
                low, high = cell.time_spread
                cells.append(
                    {
                        "time": _fmt(cell.time),
                        "steps": _fmt(cell.steps, 6),
                        "spread": f"{_fmt(low)}..{_fmt(high)}",
                        "ratio": _fmt(board.ratios[(entrant, w)]),
                        "reached": f"{cell.studies_reached}/{len(cell.study_times)}",
                    }
                )
            memory = results.state_bytes_per_param.get(entrant)
            rows.append(
                {
                    "rank": rank,
                    "entrant": entrant,
                    "score": f"{board.scores[entrant]:.3f}",
                    "memory": "-" if memory is None else f"{memory:.2f}",
                    "cells": cells,
                }
            )
        boards.append(
            {
                "ruleset": ruleset,
                "workloads": board.workloads,
                "rows": rows,
                "profile_svg": plots.performance_profiles(board, f"performance profiles ({ruleset} tuning)", colors),
                "ttt_svg": plots.time_to_target(board, f"time-to-target ({ruleset} tuning)", colors),
            }
        )
    trial_rows = [
        {
            "entrant": t.entrant,
            "workload": t.workload,
            "study": t.study,
            "index": t.index,
            "outcome": t.outcome or t.status,
            "steps": t.steps,
            "ttt": _fmt(t.time_to_target),
            "stt": t.steps_to_target if t.steps_to_target is not None else "-",
            "best": _fmt(t.best_metric, 4),
            "hparams": ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in t.hparams.items()),
            "error": t.error or "",
        }
        for t in results.trials
    ]
    diagnostics = [
        {
            "workload": d.workload,
            "svg": d.svg,
            "errors": d.errors,
            "opposing": [
                {**row, "delta": _fmt(row["delta"]), "loss": _fmt(row["loss"]), "cosine": _fmt(row["cosine"])}
                for row in d.opposing
            ],
            "costs": [
                {**c, "median_s": _fmt(c["median_s"]), "total_s": _fmt(c["total_s"]), "x_step": _fmt(c["x_step"])}
                for c in d.costs
            ],
        }
        for d in diagnostics_sections(store, results, colors)
    ]
    env = Environment(
        loader=PackageLoader("optarena.report", "templates"), autoescape=select_autoescape(["html", "j2"])
    )
    return env.get_template("report.html.j2").render(
        run=run,
        boards=boards,
        sections=sections,
        diagnostics=diagnostics,
        trials=trial_rows,
        outcomes=dict(results.outcomes),
        complete=results.complete,
        targets=results.workload_targets(),
        escape=html.escape,
    )


def write_report(store: Store, run_name: str | None = None, out: Path | None = None) -> Path:
    """Write the report; default path: `<database dir>/<run name>.html` (or the working directory)."""
    text = render_report(store, run_name)
    if out is None:
        name = store.run_by_name(run_name).name
        folder = Path(store.url.removeprefix("sqlite:///")).parent if store.url.startswith("sqlite:///") else Path.cwd()
        out = folder / f"{name}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out.resolve()
