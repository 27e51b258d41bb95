"""Byte-level transformer language model on the Python standard library's own source code.

Present on every machine that runs Python, so it needs no download: the corpus is every `.py` file of the running
interpreter's standard library, sorted, split by file (see :mod:`optarena.data.stdlib_corpus`). The corpus differs
between Python versions; its sha256 and the Python version are part of the workload's identity (`corpus_id`).
"""

from __future__ import annotations

import torch

from optarena.data import load_stdlib_corpus
from optarena.workloads.base import Target, WorkloadConfig
from optarena.workloads.language_model import FULL_MODEL, QUICK_MODEL, LanguageModelWorkload
from optarena.workloads.registry import register


@register
class StdlibBytes(LanguageModelWorkload):
    name = "stdlib_bytes"
    description = "byte-level transformer LM on the Python standard library source"
    configs = {
        "quick": WorkloadConfig(
            batch_size=32,
            step_hint=200,
            time_budget_s=20.0,
            eval_every_steps=25,
            target=Target(
                metric="val_loss",
                value=2.45,
                higher_is_better=False,
                how_set=(
                    "AlgoPerf procedure on 2 CPU cores: 5 torch baselines x 5 Halton trials for val_loss; best "
                    "was adamw; median of its best val_loss over 3 reseeded reruns (2.463, 2.438, 2.449) = 2.45. "
                    "Reproduce: optarena calibrate stdlib_bytes --size quick --trials 5 --seeds 3. Time budget: 5x "
                    "the reruns' median submission time (3.7 s), at least 5 s."
                ),
            ),
            model={**QUICK_MODEL, "max_bytes": 2_000_000},
        ),
        "full": WorkloadConfig(
            batch_size=32,
            step_hint=1000,
            time_budget_s=3075.0,
            eval_every_steps=100,
            target=Target(
                metric="val_loss",
                value=1.535,
                higher_is_better=False,
                how_set=(
                    "AlgoPerf procedure on 2 CPU cores: 5 torch baselines x 5 Halton trials for val_loss; "
                    "best was adamw; median of its best val_loss over 3 reseeded reruns (1.523, 1.534, 1.666) "
                    "= 1.535. Reproduce: optarena calibrate stdlib_bytes --size full --trials 5 --seeds 3. "
                    "Time budget: 5x the reruns' median submission time (614.2 s), at least 5 s."
                ),
            ),
            model={**FULL_MODEL, "max_bytes": 20_000_000},
        ),
    }

    def load_tokens(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        corpus = load_stdlib_corpus(self.config.model["max_bytes"])
        self.corpus_id = f"python-{corpus.python_version}-sha256:{corpus.sha256[:16]}"
        return corpus.train.long(), corpus.val.long(), 256
