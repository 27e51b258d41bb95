"""MNIST reader: parses the IDX files located and verified by `optarena.data.files`."""

from __future__ import annotations

import numpy as np
import torch

from optarena.data.files import (
    MNIST_TEST_IMAGES,
    MNIST_TEST_LABELS,
    MNIST_TRAIN_IMAGES,
    MNIST_TRAIN_LABELS,
    open_bytes,
)

IDX_IMAGES_MAGIC = 2051  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # unsigned bytes, 1 dimension

_SPLITS = {
    "train": (MNIST_TRAIN_IMAGES, MNIST_TRAIN_LABELS),
    "test": (MNIST_TEST_IMAGES, MNIST_TEST_LABELS),
}


def parse_idx(data: bytes, magic: int, name: str) -> np.ndarray:
    """Parse an unsigned-byte IDX file (big-endian header: magic, then one uint32 per dimension)."""
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise ValueError(f"{name}: not an IDX file with magic number {magic} (got {data[:4].hex()})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise ValueError(f"{name}: IDX header gives dims {dims} ({expected} bytes), the file has {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST `split` ("train" or "test"): uint8 images [N, 28, 28] and int64 labels [N]."""
    if split not in _SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of: {', '.join(_SPLITS)}")
    image_file, label_file = _SPLITS[split]
    images = parse_idx(open_bytes(image_file), IDX_IMAGES_MAGIC, image_file.relpath)
    labels = parse_idx(open_bytes(label_file), IDX_LABELS_MAGIC, label_file.relpath)
    if images.shape[1:] != (28, 28) or images.shape[0] != labels.shape[0] or labels.max(initial=0) > 9:
        raise ValueError(
            f"MNIST {split}: images {images.shape} and labels {labels.shape} (max {labels.max(initial=0)}) "
            "are not N x 28 x 28 images with N labels in 0..9"
        )
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
