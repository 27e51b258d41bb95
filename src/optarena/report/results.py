"""A stored run, read back and scored: the one place the CLI table and the HTML report get their numbers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from optarena.arena.scoring import Leaderboard, TrialOutcome, leaderboard
from optarena.arena.storage import RunRow, Store, TrialRow


@dataclass
class RunResults:
    run: RunRow
    trials: list[TrialRow]
    rulesets: dict[str, Leaderboard]
    outcomes: Counter

    @property
    def finished(self) -> list[TrialRow]:
        return [t for t in self.trials if t.status == "finished"]

    @property
    def complete(self) -> bool:
        return all(t.status == "finished" for t in self.trials)

    def workload_targets(self) -> dict[str, str]:
        """Workload name -> its target as text, as recorded in the run's trials' final metrics."""
        from optarena.workloads import registry

        size = self.run.config["size"]
        out = {}
        for name in self.run.config["workloads"]:
            target = registry.get(name, size).target
            out[name] = f"{target.metric} {'>=' if target.higher_is_better else '<='} {target.value:g}"
        return out


def load_results(store: Store, run_name: str | None = None) -> RunResults:
    """Read a run (the latest when no name is given) and score its finished trials, one board per ruleset."""
    run = store.run_by_name(run_name)
    trials = store.trials(run.id)
    ruleset_of = {e["name"]: e["ruleset"] for e in run.config["entrants"]}
    boards = {}
    for ruleset in sorted(set(ruleset_of.values())):
        outcomes = [
            TrialOutcome(t.entrant, t.workload, t.study, t.time_to_target, t.steps_to_target)
            for t in trials
            if t.status == "finished" and ruleset_of.get(t.entrant) == ruleset
        ]
        if outcomes:
            boards[ruleset] = leaderboard(outcomes)
    return RunResults(run, trials, boards, Counter(t.outcome or t.status for t in trials))
