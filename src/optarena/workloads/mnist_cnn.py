"""MNIST with a two-convolution, two-dense network (DeepOBS `mnist_2c2d`: Schneider et al., arXiv:1903.05499).

Full size is DeepOBS' 2c2d (5x5 convolutions with 32 and 64 channels, each followed by 2x2 max-pooling, then dense
layers of 1024 and 10 units); the quick size narrows it for the demo. Same split and normalisation as
:mod:`optarena.workloads.mnist_mlp`.
"""

from __future__ import annotations

import torch
from torch import nn

from optarena.workloads.base import Target, WorkloadConfig
from optarena.workloads.classification import ClassificationWorkload
from optarena.workloads.mnist_mlp import mnist_split
from optarena.workloads.registry import register


@register
class MnistCNN(ClassificationWorkload):
    name = "mnist_cnn"
    description = "MNIST, 2 conv + 2 dense layers (DeepOBS 2c2d)"
    configs = {
        "quick": WorkloadConfig(
            batch_size=64,
            step_hint=200,
            time_budget_s=20.0,
            eval_every_steps=50,
            target=Target(
                metric="val_accuracy",
                value=0.9722,
                higher_is_better=True,
                how_set=(
                    "AlgoPerf procedure on 2 CPU cores: 5 torch baselines x 5 Halton trials for val_accuracy; "
                    "best was adam; median of its best val_accuracy over 3 reseeded reruns (0.9694, 0.9723, "
                    "0.9756) = 0.9722. Reproduce: optarena calibrate mnist_cnn --size quick --trials 5 --seeds 3. "
                    "Time budget: 5x the reruns' median submission time (3.2 s), at least 5 s."
                ),
            ),
            model={"channels": (8, 16), "dense": 64, "train_limit": 20_000},
        ),
        "full": WorkloadConfig(
            batch_size=128,
            step_hint=1000,
            time_budget_s=920.0,
            eval_every_steps=200,
            target=Target(
                metric="val_accuracy",
                value=0.9923,
                higher_is_better=True,
                how_set=(
                    "AlgoPerf procedure on 2 CPU cores: 5 torch baselines x 5 Halton trials for val_accuracy; "
                    "best was nadamw; median of its best val_accuracy over 3 reseeded reruns (0.9931, 0.9924, "
                    "0.992) = 0.9923. Reproduce: optarena calibrate mnist_cnn --size full --trials 5 --seeds 3. "
                    "Time budget: 5x the reruns' median submission time (183.3 s), at least 5 s."
                ),
            ),
            model={"channels": (32, 64), "dense": 1024, "train_limit": None},
        ),
    }

    def load_arrays(self) -> tuple[torch.Tensor, ...]:
        return mnist_split(self.config.model["train_limit"], flatten=False)

    def build_model(self) -> nn.Module:
        first, second = self.config.model["channels"]
        return nn.Sequential(
            nn.Conv2d(1, first, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(second * 7 * 7, self.config.model["dense"]),
            nn.ReLU(),
            nn.Linear(self.config.model["dense"], 10),
        )
