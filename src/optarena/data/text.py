"""Character-level text data: the tiny-shakespeare corpus and a character vocabulary."""

from __future__ import annotations

import numpy as np
import torch

from optarena.data.files import TINY_SHAKESPEARE, open_bytes


def load_tiny_shakespeare() -> str:
    """The tiny-shakespeare corpus (1,115,394 characters)."""
    return open_bytes(TINY_SHAKESPEARE).decode("utf-8")


class CharVocab:
    """Maps each distinct character of a text (sorted by code point) to an index 0..size-1."""

    def __init__(self, text: str) -> None:
        if not text:
            raise ValueError("cannot build a character vocabulary from an empty text")
        self.chars = sorted(set(text))
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Indices of the characters of `text` as a LongTensor [len(text)]."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        idx = np.searchsorted(self._codes, codes).clip(max=self.size - 1)
        unknown = self._codes[idx] != codes
        if unknown.any():
            missing = sorted({chr(c) for c in codes[unknown]})
            raise ValueError(f"characters not in the vocabulary: {missing!r}")
        return torch.from_numpy(idx.astype(np.int64))

    def decode(self, indices: torch.Tensor) -> str:
        """The text whose character indices are `indices`."""
        return "".join(self.chars[i] for i in indices.tolist())
