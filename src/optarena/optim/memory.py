"""Exact optimizer-state memory: the bytes of every tensor an optimizer holds, each storage counted once.

`optimizer_state_bytes(optimizer)` adds up the storages of the tensors reachable from `optimizer.state` (through
nested dicts, lists and tuples: moments, quantised codes and their per-block scales, step counters, projectors of
low-rank methods), of the tensors it declares through the optional `extra_state_tensors()` method (tensors held
outside `state`, such as the quantisation maps of optim.adam8bit), and of MKOR's inverse Kronecker factors (read
through its public `preconditioned_modules` / `factors`, since MKOR keeps them outside `state` and declares nothing).

A storage is counted once however many tensors view it (a state that is a view of another, two states sharing one
tensor), and in full even where the tensors reaching it view only a part of it: the whole storage is what stays
allocated. Parameters and gradients are not optimizer state and are not counted (unless a state tensor is one of
them); nor are Python scalars and other non-tensor objects (random generators, hyperparameters).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class HasExtraStateTensors(Protocol):
    """An optimizer that holds state tensors outside `optimizer.state` and lists them."""

    def extra_state_tensors(self) -> Iterable[Tensor]: ...


def _tensors_in(value: Any) -> Iterator[Tensor]:
    """Every tensor in a (nested) state value."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item)


def _mkor_factors(optimizer: torch.optim.Optimizer) -> Iterator[Tensor]:
    from optarena.optim.mkor import MKOR

    if isinstance(optimizer, MKOR):
        for module in optimizer.preconditioned_modules:
            yield from optimizer.factors(module)


def state_tensors(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The tensors of the optimizer's state: those reachable from `optimizer.state`, then its extra state tensors
    (`extra_state_tensors()`, MKOR's factors). A tensor may appear more than once."""
    tensors = list(_tensors_in(list(optimizer.state.values())))
    if isinstance(optimizer, HasExtraStateTensors):
        tensors += list(optimizer.extra_state_tensors())
    tensors += list(_mkor_factors(optimizer))
    return tensors


def storage_id(tensor: Tensor) -> tuple[str, int]:
    """What identifies the storage behind `tensor`: two tensors with equal ids share their memory."""
    if tensor.layout != torch.strided:
        raise ValueError(f"cannot count the storage of a tensor with layout {tensor.layout}; only strided tensors")
    storage = tensor.untyped_storage()
    return str(storage.device), storage.data_ptr()


def tensors_storage_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (each storage once, in full)."""
    storages: dict[tuple[str, int], int] = {}
    for tensor in tensors:
        identity, size = storage_id(tensor), tensor.untyped_storage().nbytes()
        if size:
            storages[identity] = size
    return sum(storages.values())


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """The exact bytes of the optimizer's state tensors, each storage counted once (see the module docstring)."""
    return tensors_storage_bytes(state_tensors(optimizer))
