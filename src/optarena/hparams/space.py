"""Hyperparameter search spaces: each dimension maps a point of the unit interval to a value.

Quasi-random search (Halton, as in AlgoPerf's external-tuning baselines) draws points in the unit cube; a
:class:`SearchSpace` turns one such point into a hyperparameter dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class Dimension:
    """One searched hyperparameter."""

    def from_unit(self, u: float) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _check_range(low: float, high: float, positive: bool) -> None:
    if positive and low <= 0:
        raise ValueError(f"low must be > 0 for a log-scale dimension, got {low}")
    if not low <= high:
        raise ValueError(f"low must be <= high, got low={low}, high={high}")


@dataclass(frozen=True)
class Uniform(Dimension):
    low: float
    high: float

    def __post_init__(self) -> None:
        _check_range(self.low, self.high, positive=False)

    def from_unit(self, u: float) -> float:
        return self.low + u * (self.high - self.low)

    def describe(self) -> str:
        return f"uniform[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class LogUniform(Dimension):
    low: float
    high: float

    def __post_init__(self) -> None:
        _check_range(self.low, self.high, positive=True)

    def from_unit(self, u: float) -> float:
        return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))

    def describe(self) -> str:
        return f"log-uniform[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class OneMinusLogUniform(Dimension):
    """A value near 1 (a momentum or beta) searched as 1 - v with v log-uniform in [low, high]."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_range(self.low, self.high, positive=True)

    def from_unit(self, u: float) -> float:
        return 1.0 - LogUniform(self.low, self.high).from_unit(u)

    def describe(self) -> str:
        return f"1 - log-uniform[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Choice(Dimension):
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("values must be a non-empty sequence")

    def from_unit(self, u: float) -> Any:
        return self.values[min(int(u * len(self.values)), len(self.values) - 1)]

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.values))


class SearchSpace(Mapping[str, Dimension]):
    """An ordered mapping of hyperparameter names to dimensions; `sample(point)` maps a unit-cube point."""

    def __init__(self, dimensions: Mapping[str, Dimension] | None = None) -> None:
        self._dimensions = dict(dimensions or {})

    def __getitem__(self, key: str) -> Dimension:
        return self._dimensions[key]

    def __iter__(self):
        return iter(self._dimensions)

    def __len__(self) -> int:
        return len(self._dimensions)

    def sample(self, point: Sequence[float]) -> dict[str, Any]:
        if len(point) != len(self):
            raise ValueError(f"point must have {len(self)} coordinates, got {len(point)}")
        return {name: dim.from_unit(u) for (name, dim), u in zip(self._dimensions.items(), point, strict=True)}

    def describe(self) -> dict[str, str]:
        return {name: dim.describe() for name, dim in self._dimensions.items()}
