"""Character-level transformer language model on tiny shakespeare (Karpathy's char-rnn corpus, 1.1 MB).

The nanoGPT `shakespeare_char` setting, sized for a CPU: the first 90% of the text trains, the last 10% validates;
the vocabulary is the 65 characters of the text. Full size is a 0.8M-parameter model (width 128, 4 layers, 4
heads, context 128, batch 32), the size DESIGN.md quotes for this machine class.
"""

from __future__ import annotations

import torch

from optarena.data import CharVocab, load_tiny_shakespeare
from optarena.workloads.base import Target, WorkloadConfig
from optarena.workloads.language_model import FULL_MODEL, QUICK_MODEL, LanguageModelWorkload
from optarena.workloads.registry import register


@register
class ShakespeareChar(LanguageModelWorkload):
    name = "shakespeare_char"
    description = "char-level transformer LM on tiny shakespeare"
    configs = {
        "quick": WorkloadConfig(
            batch_size=32,
            step_hint=200,
            time_budget_s=20.0,
            eval_every_steps=25,
            target=Target(
                metric="val_loss",
                value=2.473,
                higher_is_better=False,
                how_set=(
                    "AlgoPerf procedure on 2 CPU cores: 5 torch baselines x 5 Halton trials for val_loss; best "
                    "was adam; median of its best val_loss over 3 reseeded reruns (2.47, 2.513, 2.473) = 2.473. "
                    "Reproduce: optarena calibrate shakespeare_char --size quick --trials 5 --seeds 3. Time "
                    "budget: 5x the reruns' median submission time (3.9 s), at least 5 s."
                ),
            ),
            model=QUICK_MODEL,
        ),
        "full": WorkloadConfig(
            batch_size=32,
            step_hint=1000,
            time_budget_s=2575.0,
            eval_every_steps=100,
            target=Target(
                metric="val_loss",
                value=1.869,
                higher_is_better=False,
                how_set=(
                    "AlgoPerf procedure on 2 CPU cores: 5 torch baselines x 5 Halton trials for val_loss; "
                    "best was adamw; median of its best val_loss over 3 reseeded reruns (1.872, 1.867, 1.868) "
                    "= 1.869. Reproduce: optarena calibrate shakespeare_char --size full --trials 5 --seeds 3. "
                    "Time budget: 5x the reruns' median submission time (514.6 s), at least 5 s."
                ),
            ),
            model=FULL_MODEL,
        ),
    }

    def load_tokens(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        text = load_tiny_shakespeare()
        vocab = CharVocab(text)
        tokens = vocab.encode(text)
        split = int(0.9 * len(tokens))
        return tokens[:split], tokens[split:], vocab.size
