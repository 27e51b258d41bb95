"""ElementwiseOptimizer's step(): which path foreach=None takes, and the chunked multi-tensor path on the CPU, which
must give the same bits as the whole-list multi-tensor path and the single-tensor loop."""

from __future__ import annotations

import pytest
import torch

from optarena import optim
from optarena.optim.base import ElementwiseOptimizer, _chunks
from optim_steps import step_with

# 97 elements in 10 tensors, chunked at 16: [12] [5] [12, 1] [30] [3, 4, 0] [24] [6] -- runs of several tensors, a
# tensor larger than the limit on its own, and an empty tensor.
SHAPES = [(4, 3), (5,), (2, 3, 2), (1,), (6, 5), (3,), (2, 2), (0, 3), (2, 3, 4), (6,)]
SMALL_CHUNK = 16
# Options that make a dozen steps reach every branch: SPAM's clipping, reset and warmup; Stable-SPAM's reset;
# AdaBelief's rectified and SGD-like steps (mixed in one call, since the step counts differ); L2 weight decay.
OPTIONS = {
    "spam": [{"clip_delay": 2, "reset_interval": 5, "warmup_steps": 2}],
    "stable_spam": [{"reset_interval": 5}],
    "adabelief": [{}, {"rectify": True, "beta2": 0.9}, {"decoupled_weight_decay": False}],
    "diffgrad": [{}, {"reference_compat": True}],
    "sgd_sai": [{}, {"reference_compat": True}],
    "sgdp": [{}, {"nesterov": True}, {"project_buffer": True}],
    "adamp": [{}, {"nesterov": True}],
    "lamb": [{}, {"bias_correction": False, "eps_in_trust_ratio": True, "phi_max": 1.0}],
    "sophia_g": [{"update_period": 3}, {"reference_compat": True}],
    "sophia_h": [{"update_period": 3}],
    "adahessian": [{"update_period": 2}, {"hessian_power": 0.5}],
}


def _elementwise_names() -> list[str]:
    """Registered optimizers built on ElementwiseOptimizer with a multi-tensor path of their own."""
    found = []
    for name in optim.names():
        factory = optim.info(name).factory
        if isinstance(factory, type) and issubclass(factory, ElementwiseOptimizer):
            if factory._foreach_step is not ElementwiseOptimizer._foreach_step:
                found.append(name)
    return found


CASES = [(name, options) for name in _elementwise_names() for options in OPTIONS.get(name, [{}])]
CASE_IDS = [",".join([name, *(f"{k}={v}" for k, v in options.items())]) for name, options in CASES]


def _hparams(name: str, options: dict) -> dict:
    defaults = optim.info(name).defaults
    return {k: v for k, v in {"lr": 1e-2, "weight_decay": 0.1, **options}.items() if k in defaults}


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=torch.float64)) for shape in SHAPES]


def _train(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], steps: int) -> None:
    generator = torch.Generator().manual_seed(1)
    for step in range(steps):
        for i, p in enumerate(params):
            if (step + i) % 7 == 3:  # now and then a parameter without a gradient: step counts drift apart
                p.grad = None
            else:
                p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        step_with(optimizer, params)


def test_chunks_split_consecutive_runs_under_the_limit() -> None:
    tensors = [torch.empty(shape) for shape in SHAPES]
    runs = [[t.numel() for t in tensors[chunk]] for chunk in _chunks(tensors, SMALL_CHUNK)]
    assert runs == [[12], [5], [12, 1], [30], [3, 4, 0], [24], [6]]
    assert [[t.numel() for t in tensors[c]] for c in _chunks(tensors, 1000)] == [[t.numel() for t in tensors]]
    assert list(_chunks([], SMALL_CHUNK)) == []


def test_the_chunk_cases_cover_every_elementwise_optimizer() -> None:
    assert {"lion", "adabelief", "diffgrad", "lamb", "adamp", "sgdp", "sgd_sai", "spam", "stable_spam"} <= set(
        _elementwise_names()
    )


# sgd_sai's reference_compat g-SNR takes the std of the empty (0, 3) gradient (NaN, zeroed as in pytorch-optimizer)
@pytest.mark.filterwarnings("ignore:std\\(\\). degrees of freedom is <= 0:UserWarning")
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_chunked_foreach_equals_unchunked_and_single_tensor(
    name: str, options: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = optim.info(name).factory
    calls = []
    original = cls._foreach_step

    def counting(self, group, params, grads, states):
        calls.append((len(params), sum(p.numel() for p in params)))
        return original(self, group, params, grads, states)

    monkeypatch.setattr(cls, "_foreach_step", counting)
    runs = {}
    for label, foreach, chunk in (("single", False, None), ("whole", True, 2**62), ("chunked", True, SMALL_CHUNK)):
        if chunk is not None:
            monkeypatch.setattr(cls, "foreach_chunk_elements", chunk)
        calls.clear()
        params = _params()
        optimizer = optim.create(name, params, foreach=foreach, **_hparams(name, options))
        _train(optimizer, params, 12)
        runs[label] = (params, optimizer, list(calls))
    assert runs["single"][2] == []
    assert len(runs["whole"][2]) == 12  # one call per step, with every parameter that has a gradient
    chunks = runs["chunked"][2]
    assert len(chunks) > 2 * len(runs["whole"][2]) and all(n == 1 or e <= SMALL_CHUNK for n, e in chunks)
    assert any(n > 1 for n, _ in chunks) and any(e > SMALL_CHUNK for _, e in chunks)
    for label in ("whole", "chunked"):
        for a, b in zip(runs["single"][0], runs[label][0], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        single, other = runs["single"][1].state, runs[label][1].state
        for p, q in zip(runs["single"][0], runs[label][0], strict=True):
            assert sorted(single[p]) == sorted(other[q])
            for key, value in single[p].items():
                if torch.is_tensor(value):
                    torch.testing.assert_close(value, other[q][key], rtol=0, atol=0, msg=f"{name} state {key}")
                else:
                    assert value == other[q][key]


def test_foreach_none_and_true_take_the_multi_tensor_path_and_false_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = optim.info("lion").factory
    taken = []
    monkeypatch.setattr(cls, "_foreach_step", lambda self, *args: taken.append("foreach"))
    monkeypatch.setattr(cls, "_single_tensor_step", lambda self, *args: taken.append("single"))
    for foreach, expected in ((None, "foreach"), (True, "foreach"), (False, "single")):
        taken.clear()
        params = _params()
        optimizer = optim.create("lion", params[:3], foreach=foreach)
        _train(optimizer, params[:3], 1)
        assert taken == [expected], foreach


def test_no_multi_tensor_path_of_its_own_means_the_single_tensor_loop() -> None:
    class Plain(ElementwiseOptimizer):
        def __init__(self, params, foreach=None):
            super().__init__(params, {"foreach": foreach})

        def _single_tensor_step(self, group, params, grads, states):
            for param, grad in zip(params, grads, strict=True):
                param.sub_(grad)

    optimizer = Plain([torch.nn.Parameter(torch.zeros(3))], foreach=True)
    assert not optimizer._use_foreach(optimizer.param_groups[0])
