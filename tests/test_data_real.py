"""The loaders on the real shared data files, found through $OPTARENA_DATA_DIR (never downloaded)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_data_dirs
from optarena.data import (
    FILES,
    CharVocab,
    load_adult,
    load_california_housing,
    load_letter,
    load_mnist,
    load_tiny_shakespeare,
    locate,
)


@pytest.fixture(scope="module", autouse=True)
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """Only the $OPTARENA_DATA_DIR directories: an empty cache and downloads disabled."""
    dirs = shared_data_dirs()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTARENA_CACHE_DIR", str(tmp_path_factory.mktemp("empty-cache")))
        mp.setenv("OPTARENA_NO_DOWNLOAD", "1")
        yield dirs


def test_every_file_verifies() -> None:
    for datafile in FILES.values():
        assert locate(datafile).is_file()


def test_table_matches_shared_readme(shared_data: list[Path]) -> None:
    readmes = [d / "README.md" for d in shared_data if (d / "README.md").is_file()]
    if not readmes:
        pytest.skip("no README.md in the shared data directory")
    text = readmes[0].read_text()
    for relpath, datafile in FILES.items():
        row = re.search(rf"^\| {re.escape(relpath)} \| ([0-9a-f]{{64}}) \|.*?(https://\S+)", text, re.MULTILINE)
        assert row is not None, relpath
        assert (datafile.sha256, datafile.url) == row.groups()


@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_mnist(split: str, n: int) -> None:
    images, labels = load_mnist(split)
    assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert labels.min() == 0 and labels.max() == 9 and len(labels.unique()) == 10
    assert images.max() == 255


def test_tiny_shakespeare() -> None:
    text = load_tiny_shakespeare()
    assert len(text) == 1115394 and text.startswith("First Citizen:")
    vocab = CharVocab(text)
    assert vocab.size == 65
    assert vocab.decode(vocab.encode(text[:1000])) == text[:1000]


def test_adult() -> None:
    x_train, y_train, x_test, y_test = load_adult()
    assert x_train.shape[0] == y_train.shape[0] == 32561
    assert x_test.shape[0] == y_test.shape[0] == 16281
    assert x_train.shape[1] == x_test.shape[1] == 108 and x_train.dtype == np.float32
    assert 0.22 < y_train.mean() < 0.26 and 0.22 < y_test.mean() < 0.26
    np.testing.assert_allclose(x_train[:, :6].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(x_train[:, :6].std(axis=0), 1, atol=1e-3)
    np.testing.assert_array_equal(x_train[:, 6:].sum(axis=1), 8)  # one category per categorical column


def test_letter() -> None:
    x, y = load_letter()
    assert x.shape == (20000, 16) and x.dtype == np.float32 and y.dtype == np.int64
    assert set(y.tolist()) == set(range(26))
    assert x.min() == 0 and x.max() == 15


def test_california_housing() -> None:
    x, y = load_california_housing()
    assert x.shape == (20640, 13) and y.shape == (20640,) and x.dtype == y.dtype == np.float32
    assert not np.isnan(x).any() and not np.isnan(y).any()
    np.testing.assert_array_equal(x[:, -5:].sum(axis=1), 1)
    assert 14999 <= y.min() and y.max() <= 500001
