"""The `optarena` command line: list what exists, run suites, show results, write reports, set targets."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optarena import optim
from optarena.arena import suite as suite_lib
from optarena.arena.runner import run_parallel, run_suite
from optarena.arena.storage import Store, TrialRow
from optarena.arena.trial import TrialResult
from optarena.workloads import registry as workload_registry

app = typer.Typer(
    help="optarena: training algorithms and an AlgoPerf-style arena.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
DEFAULT_DB = os.environ.get("OPTARENA_DB", "optarena-results/optarena.db")
DbOption = Annotated[str, typer.Option("--db", help="SQLite file path or SQLAlchemy URL (env OPTARENA_DB).")]
RunOption = Annotated[str | None, typer.Option("--run", help="Run name (default: the latest run).")]


class RichProgress:
    """Progress bars: one for the run's trials, one for the steps of the trial in progress."""

    def __init__(self, progress: Progress) -> None:
        self.bars = progress
        self.total_task = None
        self.trial_task = None

    def start(self, total: int, done: int) -> None:
        self.total_task = self.bars.add_task("trials", total=total, completed=done)

    def trial_started(self, trial: TrialRow, max_steps: int) -> None:
        label = f"{trial.entrant} on {trial.workload} (study {trial.study}, trial {trial.index})"
        if self.trial_task is None:
            self.trial_task = self.bars.add_task(label, total=max_steps)
        self.bars.reset(self.trial_task, total=max_steps, description=label)

    def trial_step(self, step: int) -> None:
        self.bars.update(self.trial_task, completed=step)

    def trial_finished(self, trial: TrialRow, result: TrialResult, finished: int) -> None:
        self.bars.update(self.total_task, completed=finished)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Bad input (an unknown suite, a changed run, a missing dataset) ends with one clear line and exit code 2."""
    try:
        yield
    except (ValueError, LookupError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def print_table(title: str, header: list[str], rows: list[list[str]], markdown: bool) -> None:
    """A table on the terminal (rich) or as Markdown; columns after the second are right-aligned."""
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        text = "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"
        console.print(text, soft_wrap=True, markup=False)
        return
    table = Table(title=escape(title))
    for i, column in enumerate(header):
        table.add_column(escape(column.replace(" (", "\n(")), justify="right" if i >= 2 else "left")
    for row in rows:
        table.add_row(*(escape(cell.replace(" [", "\n[")) for cell in row))
    console.print(table)


def print_leaderboard(
    store: Store,
    run_name: str | None,
    markdown: bool = False,
    memory_reference: str | None = None,
    tolerance: float = 0.02,
) -> None:
    from optarena.report.results import leaderboard_rows, load_results

    results = load_results(store, run_name)
    for ruleset, board in results.rulesets.items():
        title = f"run {results.run.name!r}: {ruleset} tuning — median time-to-target (steps) [min..max over studies]"
        print_table(title, *leaderboard_rows(results, board), markdown)
    if memory_reference is not None:
        from optarena.report.memory import memory_rows, memory_table, smallest_within

        rows = memory_rows(results, memory_reference, tolerance)
        title = f"run {results.run.name!r}: quality against optimizer-state memory, relative to {memory_reference}"
        print_table(title, *memory_table(rows, memory_reference, tolerance), markdown)
        for workload in results.run.config["workloads"]:
            best = smallest_within(rows, workload)
            verdict = "none" if best is None else f"{best.entrant} ({best.bytes_per_param:.2f} B/param)"
            console.print(
                f"{workload}: smallest state within {tolerance:.0%} of {memory_reference}'s quality: {verdict}",
                markup=False,
                soft_wrap=True,
            )
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(results.outcomes.items()))
    console.print(f"trials: {counts}" + ("" if results.complete else "  (run incomplete: rerun to resume)"))


def _write_report(store: Store, run_name: str | None, out: Path | None) -> Path:
    from optarena.report.html import write_report

    return write_report(store, run_name, out)


@app.command("list")
def list_things(
    what: Annotated[str, typer.Argument(help="optimizers, schedules, workloads or suites")] = "all",
) -> None:
    """List registered optimizers, schedules, workloads and built-in suites."""
    if what not in ("all", "optimizers", "schedules", "workloads", "suites"):
        raise typer.BadParameter("must be one of: all, optimizers, schedules, workloads, suites")
    if what in ("all", "optimizers"):
        table = Table(title="optimizers")
        for column in ("name", "paper", "search space"):
            table.add_column(column)
        for name in optim.names():
            entry = optim.info(name)
            space = "; ".join(f"{k}: {v}" for k, v in entry.search_space.describe().items())
            table.add_row(name, entry.paper, space)
        console.print(table)
    if what in ("all", "schedules"):
        from optarena import schedules

        table = Table(title="schedules (an entrant OPTIMIZER+SCHEDULE uses one)")
        for column in ("name", "what", "parameters (defaults)"):
            table.add_column(column)
        for name in schedules.names():
            entry = schedules.info(name)
            table.add_row(name, entry.summary, ", ".join(f"{k}={v!r}" for k, v in entry.defaults.items()))
        console.print(table)
    if what in ("all", "workloads"):
        table = Table(title="workloads")
        for column in ("name", "description", "size", "target", "step hint", "step budget", "time budget"):
            table.add_column(column)
        for name in workload_registry.names():
            cls = workload_registry.workload_class(name)
            for size, config in cls.configs.items():
                t = config.target
                table.add_row(
                    name,
                    cls.description,
                    size,
                    f"{t.metric} {'>=' if t.higher_is_better else '<='} {t.value:g}",
                    str(config.step_hint),
                    str(config.step_budget),
                    f"{config.time_budget_s:g}s",
                )
        console.print(table)
    if what in ("all", "suites"):
        table = Table(title="suites")
        for column in ("name", "size", "workloads", "entrants", "S x T"):
            table.add_column(column)
        for name in suite_lib.builtin_names():
            s = suite_lib.load(name)
            table.add_row(
                name,
                s.size,
                ", ".join(s.workloads),
                ", ".join(e.name for e in s.entrants),
                f"{s.studies} x {s.trials}",
            )
        console.print(table)


@app.command()
def run(
    suite: Annotated[str, typer.Argument(help="Built-in suite name or a .yaml/.toml suite file.")],
    db: DbOption = DEFAULT_DB,
    name: Annotated[str | None, typer.Option(help="Run name (default: the suite's name); reuse to resume.")] = None,
    studies: Annotated[int | None, typer.Option(help="Override the suite's number of studies S.")] = None,
    trials: Annotated[int | None, typer.Option(help="Override the suite's trials per study T.")] = None,
    size: Annotated[str | None, typer.Option(help="Override the workload size: quick or full.")] = None,
    device: Annotated[
        str | None, typer.Option(help="Override the device the trials run on (cpu, cuda, cuda:1, ...); default cpu.")
    ] = None,
    report: Annotated[bool, typer.Option(help="Write the HTML report at the end.")] = True,
    out: Annotated[Path | None, typer.Option(help="Report path (default: next to the database).")] = None,
    workers: Annotated[
        int, typer.Option(help="Processes claiming trials in parallel (each gets its share of CPU threads).")
    ] = 1,
    measure: Annotated[
        str | None,
        typer.Option(
            help="Training diagnostics to measure in every trial, comma-separated: sharpness, noise_scale, "
            "opposing_signals (off unless given here or in the suite). Measured off the submission clock."
        ),
    ] = None,
    measure_every: Annotated[
        int | None, typer.Option(help="Steps between measurements (needed with --measure unless the suite sets it).")
    ] = None,
) -> None:
    """Run (or resume) a suite, then print the leaderboard and write the HTML report."""
    with user_errors():
        spec = suite_lib.load(suite)
        overrides = {"studies": studies, "trials": trials, "size": size, "device": device}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        spec = with_measurements(dataclasses.replace(spec, **overrides), measure, measure_every)
        _run(spec, db, name, report, out, workers)


def with_measurements(spec: suite_lib.Suite, kinds: str | None, every: int | None) -> suite_lib.Suite:
    """The suite with its measurement plan's kinds and/or period replaced by --measure / --measure-every."""
    from optarena.arena.measurements import MeasurementPlan

    if kinds is None and every is None:
        return spec
    if spec.measure is None and (kinds is None or every is None):
        raise ValueError(
            "--measure and --measure-every go together (the suite has no measure: section to take the other from)"
        )
    names = tuple(k.strip() for k in kinds.split(",") if k.strip()) if kinds is not None else spec.measure.kinds
    every = every if every is not None else spec.measure.every_steps
    plan = MeasurementPlan(names, every) if spec.measure is None else spec.measure
    return dataclasses.replace(spec, measure=dataclasses.replace(plan, kinds=names, every_steps=every))


def _run(spec: suite_lib.Suite, db: str, name: str | None, report: bool, out: Path | None, workers: int) -> None:
    store = Store(db)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bars:
        if workers > 1:
            summary = run_parallel(spec, store, name, workers, RichProgress(bars))
        else:
            summary = run_suite(spec, store, name, RichProgress(bars))
    console.print(f"ran {summary.ran} trial(s) of {summary.total} in run {summary.run_name!r} ({store.url})")
    print_leaderboard(store, summary.run_name)
    if report:
        console.print(f"report: {_write_report(store, summary.run_name, out)}")


@app.command()
def demo(
    db: DbOption = "optarena-results/demo.db",
    out: Annotated[Path | None, typer.Option(help="Report path.")] = None,
) -> None:
    """Run the demo suite (no download needed, a few minutes on a laptop CPU)."""
    with user_errors():
        _run(suite_lib.load("demo"), db, None, True, out, workers=1)


@app.command()
def results(
    db: DbOption = DEFAULT_DB,
    run_name: RunOption = None,
    markdown: Annotated[
        bool, typer.Option(help="Print Markdown tables (for docs) instead of a terminal table.")
    ] = False,
    memory: Annotated[
        str | None,
        typer.Option(
            help="Also compare quality against optimizer-state memory, relative to this entrant (e.g. adamw)."
        ),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="With --memory: the relative quality shortfall that still counts as as good.")
    ] = 0.02,
) -> None:
    """Show a run's leaderboard."""
    with user_errors():
        print_leaderboard(Store(db), run_name, markdown, memory, tolerance)


@app.command("report")
def report_command(
    db: DbOption = DEFAULT_DB,
    run_name: RunOption = None,
    out: Annotated[Path | None, typer.Option(help="Report path.")] = None,
) -> None:
    """Write the self-contained HTML report of a run."""
    with user_errors():
        console.print(f"report: {_write_report(Store(db), run_name, out)}")


@app.command()
def profile(
    out: Annotated[Path, typer.Argument(help="SVG file to write (one figure per tuning ruleset: -RULESET added).")],
    db: DbOption = DEFAULT_DB,
    run_name: RunOption = None,
    memory: Annotated[
        str | None,
        typer.Option(
            help="Also write each workload's quality against optimizer-state memory, relative to this entrant "
            "(-memory-WORKLOAD added)."
        ),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="With --memory: the relative quality shortfall that still counts as as good.")
    ] = 0.02,
) -> None:
    """Write a run's performance profiles (and, with --memory, its quality against optimizer-state memory) as SVG
    files, for documents that cannot embed the HTML report."""
    from optarena.report import plots
    from optarena.report.memory import memory_figures
    from optarena.report.results import load_results

    def write(path: Path, svg: str, what: str) -> None:
        path.write_text(svg)
        console.print(f"{what}: {path}")

    suffix = out.suffix or ".svg"
    with user_errors():
        results = load_results(Store(db), run_name)
        for ruleset, board in results.rulesets.items():
            colors = plots.entrant_colors(board.ranked())
            title = f"{results.run.name}: performance profiles ({ruleset} tuning)"
            write(
                out.with_name(f"{out.stem}-{ruleset}{suffix}"),
                plots.performance_profiles(board, title, colors),
                "profile",
            )
        if memory is not None:
            colors = plots.entrant_colors([e["name"] for e in results.run.config["entrants"]])
            for workload, svg in memory_figures(results, memory, tolerance, colors).items():
                write(out.with_name(f"{out.stem}-memory-{workload}{suffix}"), svg, "memory")


@app.command()
def diagnostics(
    out: Annotated[Path, typer.Argument(help="SVG file to write (one figure per measured workload: -WORKLOAD added).")],
    db: DbOption = DEFAULT_DB,
    run_name: RunOption = None,
) -> None:
    """Write a run's training-diagnostics figures (sharpness against its stability threshold, gradient noise scale)
    as SVG files, and print the opposing-signals examples and what the measurements cost."""
    from optarena.report import plots
    from optarena.report.diagnostics import diagnostics_sections
    from optarena.report.results import load_results

    with user_errors():
        store = Store(db)
        results = load_results(store, run_name)
        entrants = [e["name"] for e in results.run.config["entrants"]]
        sections = diagnostics_sections(store, results, plots.entrant_colors(entrants))
        if not sections:
            raise LookupError(
                f"run {results.run.name!r} has no measurements: run its suite with --measure KINDS --measure-every N "
                "(or a measure: section)"
            )
    for section in sections:
        if section.svg:
            path = out.with_name(f"{out.stem}-{section.workload}{out.suffix or '.svg'}")
            path.write_text(section.svg)
            console.print(f"diagnostics: {path}")
        table = Table(title=escape(f"{section.workload}: largest per-example loss changes (opposing signals)"))
        for column in ("entrant", "study", "step", "change", "example", "delta", "loss now", "text", "cosine"):
            table.add_column(column)
        for r in section.opposing:
            cells = (r["entrant"], r["study"], r["step"], r["direction"], r["index"], r["delta"], r["loss"])
            cosine = "-" if r["cosine"] is None else f"{r['cosine']:.3f}"
            texts = (f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells)
            table.add_row(*map(escape, texts), escape(f"'{r['text']}'" if r["text"] else ""), cosine)
        if section.opposing:
            console.print(table)
        costs = Table(title=escape(f"{section.workload}: measurement cost (wall seconds, off the submission clock)"))
        for column in ("measurement", "count", "median (s)", "total (s)", "median / training step"):
            costs.add_column(column)
        for c in section.costs:
            ratio = "-" if c["x_step"] is None else f"{c['x_step']:.1f}x"
            costs.add_row(c["kind"], str(c["count"]), f"{c['median_s']:.3f}", f"{c['total_s']:.2f}", ratio)
        console.print(costs)
        for error in section.errors:
            console.print(f"[red]measurement error:[/red] {escape(error)}")


@app.command("grad-norms")
def grad_norms(
    out: Annotated[Path, typer.Argument(help="JSON file to write: the list of per-step gradient norms.")],
    workload: Annotated[str, typer.Option(help="The workload whose trials to read.")],
    entrant: Annotated[str, typer.Option(help="The entrant whose best trial to read.")],
    norm: Annotated[str, typer.Option(help="l2 (for SGD-type optimizers) or l1 (for Adam-type).")] = "l2",
    db: DbOption = DEFAULT_DB,
    run_name: RunOption = None,
) -> None:
    """Write the gradient norm of every step of an entrant's best trial on a workload, from a run measured with
    `--measure grad_norm --measure-every 1`: the input of the refined schedule (an entrant with `schedule: refined`
    and `fixed: {grad_norms_file: OUT}`; Defazio et al., arXiv:2310.07831)."""
    import json

    from optarena.report.results import best_trial, load_results

    with user_errors():
        if norm not in ("l2", "l1"):
            raise ValueError(f"norm must be l2 or l1, got {norm!r}")
        store = Store(db)
        results = load_results(store, run_name)
        trials = [t for t in results.finished if t.workload == workload and t.entrant == entrant]
        rows = store.measurements((t.id for t in trials), kind="grad_norm")
        trials = [t for t in trials if rows[t.id]]
        if not trials:
            raise LookupError(
                f"run {results.run.name!r} has no gradient norms of {entrant!r} on {workload!r}: run it with "
                "--measure grad_norm --measure-every 1"
            )
        higher_is_better = workload_registry.get(workload, results.run.config["size"]).target.higher_is_better
        best = best_trial(trials, higher_is_better)
        norms = [r.values[norm] for r in rows[best.id] if "error" not in r.values]
        out.write_text(json.dumps(norms))
    console.print(f"{len(norms)} {norm} gradient norms of trial {best.id} (study {best.study}, {best.hparams}): {out}")


@app.command()
def pbt(
    workload: Annotated[str, typer.Argument(help="The workload to train.")],
    entrant: Annotated[str, typer.Option(help="The entrant whose optimizer, schedule and search space PBT uses.")],
    population: Annotated[int, typer.Option(help="Members trained in parallel.")] = 4,
    interval: Annotated[int, typer.Option(help="Steps between exploit-and-explore decisions.")] = 100,
    steps: Annotated[int | None, typer.Option(help="Steps per member (default: the workload's step budget).")] = None,
    size: Annotated[str, typer.Option(help="Workload size: quick or full.")] = "quick",
    seed: Annotated[int, typer.Option(help="Seed of the model, the data and PBT's choices.")] = 0,
    cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray instance (default: all).")] = None,
    out: Annotated[Path, typer.Option(help="Directory for Ray Tune's results and checkpoints.")] = Path("pbt-results"),
) -> None:
    """Population Based Training (Jaderberg et al., arXiv:1711.09846) of an entrant on a workload, on Ray Tune:
    prints each member's last hyperparameters and result, the population's time-to-target and its total compute."""
    from optarena.arena.pbt import PBTSetup, run_pbt

    with user_errors():
        setup = PBTSetup(workload, entrant, size, population, interval, steps, seed)
        result = run_pbt(setup, out, cpus)
    table = Table(title=escape(f"PBT: {entrant} on {workload} ({size}), population {population}"))
    hparams = sorted({k for m in result.members for k in m if k.startswith("hp/")})
    for column in ("member", "step", "metric", "time to target (s)", *(h.removeprefix("hp/") for h in hparams)):
        table.add_column(column)
    for i, m in enumerate(result.members):
        if "error" in m:
            table.add_row(str(i), "error", escape(m["error"][:60]))
            continue
        ttt = "-" if m.get("time_to_target") is None else f"{m['time_to_target']:.1f}"
        table.add_row(str(i), str(m["step"]), f"{m['metric']:.4g}", ttt, *(f"{m[h]:.3g}" for h in hparams))
    console.print(table)
    ttt = "not reached" if result.time_to_target is None else f"{result.time_to_target:.1f} s"
    console.print(
        f"time to target: {ttt}; best metric {result.best_metric}; total compute {result.total_seconds:.1f} s over "
        f"{result.total_intervals} intervals; {result.exploits} exploits; Ray Tune results under {out}"
    )


@app.command()
def transfer(
    out: Annotated[Path, typer.Argument(help="SVG file to write: metric against learning rate per width.")],
    workload: Annotated[str, typer.Option(help="A workload whose model has a width (the language models).")],
    widths: Annotated[str, typer.Option(help="Comma-separated widths; the narrowest is muP's base.")] = "64,128,256",
    lrs: Annotated[str, typer.Option(help="Comma-separated learning rates.")] = "1e-3,3e-3,1e-2,3e-2",
    steps: Annotated[int, typer.Option(help="Steps per run.")] = 300,
    entrant: Annotated[str, typer.Option(help="Entrant (optimizer and schedule); other hyperparameters default.")] = (
        "adamw"
    ),
    seed: Annotated[int, typer.Option(help="Seed of every run.")] = 0,
) -> None:
    """Sweep width x learning rate under the standard and the muP parametrisation and plot the validation metric
    against the learning rate per width (Tensor Programs V, Fig. 1); also writes the points as JSON next to OUT."""
    import json

    from optarena.arena.transfer import best_lrs, width_lr_sweep
    from optarena.report import plots

    with user_errors():
        width_list = [int(w) for w in widths.split(",")]
        lr_list = [float(v) for v in lrs.split(",")]
        target = workload_registry.get(workload).target
        total = 2 * len(width_list) * len(lr_list)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
            task = bar.add_task("transfer sweep", total=total)
            points = width_lr_sweep(
                workload, width_list, lr_list, steps, entrant, seed=seed, on_point=lambda _: bar.advance(task)
            )
    title = f"{workload}: {entrant}, {steps} steps, seed {seed}"
    out.write_text(plots.width_transfer(title, target.metric, points, target.higher_is_better))
    out.with_suffix(".json").write_text(json.dumps([dataclasses.asdict(p) for p in points], indent=1))
    table = Table(title=escape(f"best learning rate per width ({target.metric})"))
    for column in ("parametrisation", *map(str, sorted(width_list))):
        table.add_column(column)
    best = best_lrs(points, target.higher_is_better)
    for parametrisation in ("standard", "mup"):
        cells = [f"{best[(parametrisation, w)]:g}" if (parametrisation, w) in best else "-" for w in sorted(width_list)]
        table.add_row(parametrisation, *cells)
    console.print(table)
    console.print(f"figure: {out}; points: {out.with_suffix('.json')}")


@app.command()
def rerun(
    finished_from: Annotated[
        str | None, typer.Argument(help="Start of the window, ISO time (e.g. 2026-11-23T02:38:00).")
    ] = None,
    finished_until: Annotated[str | None, typer.Argument(help="End of the window, ISO time.")] = None,
    db: DbOption = DEFAULT_DB,
    run_name: RunOption = None,
    entrant: Annotated[str | None, typer.Option(help="Only this entrant's trials (e.g. after a fix to it).")] = None,
) -> None:
    """Mark finished trials to be run again: those that finished in a time window (their clock was disturbed),
    and/or one entrant's; `optarena run` with the same suite then redoes them."""
    from datetime import datetime

    with user_errors():
        if (finished_from is None) != (finished_until is None):
            raise ValueError("give both ends of the time window, or neither (then --entrant is needed)")
        if finished_from is None and entrant is None:
            raise ValueError("say which trials: a time window FROM UNTIL, --entrant NAME, or both")
        store = Store(db)
        row = store.run_by_name(run_name)
        entrants = [e["name"] for e in row.config["entrants"]]
        if entrant is not None and entrant not in entrants:
            raise ValueError(f"entrant {entrant!r} is not in run {row.name!r}: {entrants}")
        window = {}
        if finished_from is not None:
            start, end = (datetime.fromisoformat(t).timestamp() for t in (finished_from, finished_until))
            window = {"finished_from": start, "finished_until": end}
        count = store.reset_finished(row.id, entrant=entrant, **window)
    console.print(f"{count} trials of run {row.name!r} will be run again")


@app.command()
def runs(db: DbOption = DEFAULT_DB) -> None:
    """List the runs stored in a database."""
    store = Store(db)
    table = Table(title=f"runs in {store.url}")
    for column in ("name", "suite", "size", "finished", "environment"):
        table.add_column(column)
    for row in store.runs():
        trials = store.trials(row.id)
        done = sum(t.status == "finished" for t in trials)
        env = row.environment
        table.add_row(
            row.name,
            row.config["name"],
            row.config["size"],
            f"{done}/{len(trials)}",
            f"torch {env.get('torch')}, {env.get('cpu_count')} cpus",
        )
    console.print(table)


@app.command()
def calibrate(
    workload: Annotated[str, typer.Argument(help="Workload name.")],
    size: Annotated[str, typer.Option(help="quick or full.")] = "quick",
    trials: Annotated[int, typer.Option(help="Halton trials per baseline.")] = 5,
    seeds: Annotated[int, typer.Option(help="Reruns of the best configuration.")] = 3,
    append_to: Annotated[Path | None, typer.Option(help="Append the markdown record to this file.")] = None,
    journal: Annotated[
        Path | None,
        typer.Option(
            help="Keeps finished runs, so an interrupted calibration resumes "
            "(default: optarena-results/calibration/WORKLOAD-SIZE.jsonl)."
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's own choice).")] = None,
) -> None:
    """Set a workload's target the AlgoPerf way: tune the baselines, median best of reseeded reruns."""
    from optarena.arena.calibrate import calibrate as run_calibration

    journal = journal or Path("optarena-results") / "calibration" / f"{workload}-{size}.jsonl"
    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    def on_trial(name: str, result: TrialResult) -> None:
        best = f"{result.best_metric:.4g}" if result.best_metric is not None else "-"
        console.print(f"  {name}: {result.outcome}, best {best}, {result.submission_time:.1f}s")

    with user_errors():
        record = run_calibration(workload, size, trials=trials, seeds=seeds, on_trial=on_trial, journal=journal)
    console.print(record.markdown())
    if append_to is not None:
        with append_to.open("a") as handle:
            handle.write(record.markdown() + "\n")


if __name__ == "__main__":
    app()
