"""The byte-level corpus built from the running Python's standard-library sources."""

from __future__ import annotations

import hashlib

import pytest
import torch

from optarena.data import load_stdlib_corpus
from optarena.data.stdlib_corpus import is_validation, stdlib_files


@pytest.fixture(scope="module")
def files() -> list[tuple[str, bytes]]:
    return [(relpath, path.read_bytes()) for relpath, path in stdlib_files()]


def test_file_list(files: list[tuple[str, bytes]]) -> None:
    relpaths = [relpath for relpath, _ in files]
    assert relpaths == sorted(relpaths) and "os.py" in relpaths and "json/__init__.py" in relpaths
    assert not any(part in ("site-packages", "dist-packages") for r in relpaths for part in r.split("/"))


def test_split_rule_is_stable() -> None:
    for relpath in ("os.py", "json/decoder.py", "a/b.py"):
        assert is_validation(relpath) == (int(hashlib.sha1(relpath.encode()).hexdigest(), 16) % 10 == 0)
    assert 0.05 < sum(map(is_validation, (f"m{i}.py" for i in range(1000)))) / 1000 < 0.15


def test_corpus_is_the_files_split_by_file(files: list[tuple[str, bytes]]) -> None:
    corpus = load_stdlib_corpus()
    train, val = bytes(corpus.train.numpy()), bytes(corpus.val.numpy())
    assert corpus.train.dtype == corpus.val.dtype == torch.uint8
    assert train == b"".join(data + b"\n\n" for relpath, data in files if not is_validation(relpath))
    assert val == b"".join(data + b"\n\n" for relpath, data in files if is_validation(relpath))
    assert 0 < len(val) < len(train)
    assert corpus.num_files == len(files)
    assert corpus.sha256 == hashlib.sha256(train + val).hexdigest()
    # disjoint by file: large files (unique content) appear only in their own split
    for relpath, data in sorted(files, key=lambda f: -len(f[1]))[:20]:
        own, other = (val, train) if is_validation(relpath) else (train, val)
        assert data in own and data not in other


def test_deterministic_across_cache_clears() -> None:
    first = load_stdlib_corpus()
    assert load_stdlib_corpus() is first  # cached
    load_stdlib_corpus.cache_clear()
    second = load_stdlib_corpus()
    assert second is not first
    assert torch.equal(first.train, second.train) and torch.equal(first.val, second.val)
    assert (first.sha256, first.num_files, first.python_version) == (
        second.sha256,
        second.num_files,
        second.python_version,
    )


def test_max_bytes_caps_each_split() -> None:
    full = load_stdlib_corpus()
    small = load_stdlib_corpus(max_bytes=1000)
    assert len(small.train) == len(small.val) == 1000
    assert torch.equal(small.train, full.train[:1000]) and torch.equal(small.val, full.val[:1000])
    assert small.sha256 != full.sha256
    with pytest.raises(ValueError, match="max_bytes"):
        load_stdlib_corpus(max_bytes=0)
