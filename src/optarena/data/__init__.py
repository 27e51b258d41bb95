"""Dataset readers: locate and verify the canonical files, then parse them into arrays and tensors."""

from optarena.data.files import (
    FILES,
    DataFile,
    DatasetChecksumError,
    DatasetNotFoundError,
    locate,
    open_bytes,
    search_dirs,
)
from optarena.data.mnist import load_mnist
from optarena.data.sklearn_sets import load_sklearn
from optarena.data.stdlib_corpus import StdlibCorpus, load_stdlib_corpus
from optarena.data.text import CharVocab, load_tiny_shakespeare
from optarena.data.uci import load_adult, load_california_housing, load_letter

__all__ = [
    "FILES",
    "CharVocab",
    "DataFile",
    "DatasetChecksumError",
    "DatasetNotFoundError",
    "StdlibCorpus",
    "load_adult",
    "load_california_housing",
    "load_letter",
    "load_mnist",
    "load_sklearn",
    "load_stdlib_corpus",
    "load_tiny_shakespeare",
    "locate",
    "open_bytes",
    "search_dirs",
]
