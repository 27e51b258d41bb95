"""Workloads: model + data + loss + evaluation + target, one file each, and their registry."""

from optarena.workloads import (  # noqa: F401  (importing registers each workload)
    digits_logreg,
    mnist_cnn,
    mnist_mlp,
    quadratic_deep,
    shakespeare_char,
    stdlib_bytes,
)
from optarena.workloads.base import Target, Workload, WorkloadConfig
from optarena.workloads.registry import get, names, register, workload_class

__all__ = ["Target", "Workload", "WorkloadConfig", "get", "names", "register", "workload_class"]
