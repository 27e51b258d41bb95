"""Hyperparameter search spaces and rules."""

from optarena.hparams.space import Choice, Dimension, LogUniform, OneMinusLogUniform, SearchSpace, Uniform

__all__ = ["Choice", "Dimension", "LogUniform", "OneMinusLogUniform", "SearchSpace", "Uniform"]
