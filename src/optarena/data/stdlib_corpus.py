"""A deterministic byte-level code corpus: the running Python's standard-library source files."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

_EXCLUDED_DIRS = {"site-packages", "dist-packages"}
_SEPARATOR = b"\n\n"


@dataclass(frozen=True)
class StdlibCorpus:
    """Train/val byte tensors (uint8) of the corpus, and what identifies it.

    The tensors are shared by every caller of `load_stdlib_corpus`: do not modify them in place.
    """

    train: torch.Tensor
    val: torch.Tensor
    python_version: str
    num_files: int
    sha256: str  # of the train bytes followed by the val bytes


def stdlib_files() -> list[tuple[str, Path]]:
    """(POSIX path relative to the stdlib root, path) of every stdlib *.py file, sorted by relative path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _EXCLUDED_DIRS]
        for name in names:
            if name.endswith(".py"):
                path = Path(directory, name)
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def is_validation(relpath: str) -> bool:
    """Whether a file belongs to the validation split (about 1 file in 10, stable across Python versions)."""
    return int(hashlib.sha1(relpath.encode()).hexdigest(), 16) % 10 == 0


@functools.lru_cache(maxsize=8)
def load_stdlib_corpus(max_bytes: int | None = None) -> StdlibCorpus:
    """The stdlib corpus: files concatenated in sorted order, each followed by a blank line, split by file.

    `max_bytes` truncates each split to at most that many bytes.
    """
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"max_bytes must be positive or None, got {max_bytes}")
    files = stdlib_files()
    splits: dict[bool, list[bytes]] = {False: [], True: []}
    for relpath, path in files:
        splits[is_validation(relpath)] += [path.read_bytes(), _SEPARATOR]
    train, val = (b"".join(splits[is_val])[:max_bytes] for is_val in (False, True))
    return StdlibCorpus(
        train=torch.frombuffer(bytearray(train), dtype=torch.uint8),
        val=torch.frombuffer(bytearray(val), dtype=torch.uint8),
        python_version=platform.python_version(),
        num_files=len(files),
        sha256=hashlib.sha256(train + val).hexdigest(),
    )
