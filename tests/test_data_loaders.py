"""Dataset parsers on small synthetic inputs, and the bundled scikit-learn sets (no shared data needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optarena.data import CharVocab, load_adult, load_mnist, load_sklearn, mnist, uci
from optarena.data.files import ADULT_TEST, ADULT_TRAIN, DataFile
from optarena.data.mnist import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, parse_idx


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_round_trip() -> None:
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(IDX_IMAGES_MAGIC, images), IDX_IMAGES_MAGIC, "x"), images)
    labels = np.array([3, 1, 4])
    np.testing.assert_array_equal(parse_idx(idx_bytes(IDX_LABELS_MAGIC, labels), IDX_LABELS_MAGIC, "y"), labels)


def test_parse_idx_rejects_bad_files() -> None:
    labels = idx_bytes(IDX_LABELS_MAGIC, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="lbl.*magic number 2051"):
        parse_idx(labels, IDX_IMAGES_MAGIC, "lbl")
    with pytest.raises(ValueError, match="dims \\[3\\]"):
        parse_idx(labels[:-1], IDX_LABELS_MAGIC, "lbl")
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x00\x00", IDX_LABELS_MAGIC, "lbl")


def test_load_mnist_checks_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {
        "mnist/train-images-idx3-ubyte.gz": idx_bytes(IDX_IMAGES_MAGIC, np.zeros((2, 28, 28))),
        "mnist/train-labels-idx1-ubyte.gz": idx_bytes(IDX_LABELS_MAGIC, np.array([7, 0])),
        "mnist/t10k-images-idx3-ubyte.gz": idx_bytes(IDX_IMAGES_MAGIC, np.zeros((2, 28, 27))),
        "mnist/t10k-labels-idx1-ubyte.gz": idx_bytes(IDX_LABELS_MAGIC, np.array([7, 0])),
    }
    monkeypatch.setattr(mnist, "open_bytes", lambda datafile: fake[datafile.relpath])
    images, labels = load_mnist("train")
    assert images.dtype == torch.uint8 and images.shape == (2, 28, 28)
    assert labels.dtype == torch.int64 and labels.tolist() == [7, 0]
    with pytest.raises(ValueError, match="28 x 28"):
        load_mnist("test")


def test_load_mnist_rejects_unknown_split() -> None:
    with pytest.raises(ValueError, match="'valid'.*train, test"):
        load_mnist("valid")


def test_char_vocab() -> None:
    vocab = CharVocab("hello, world")
    assert vocab.size == 9 and vocab.chars == sorted(set("hello, world"))
    encoded = vocab.encode("low")
    assert encoded.dtype == torch.int64
    assert encoded.tolist() == [vocab.chars.index(c) for c in "low"]
    assert vocab.decode(encoded) == "low"
    assert vocab.encode("").tolist() == []
    with pytest.raises(ValueError, match="'z'"):
        vocab.encode("zero")
    with pytest.raises(ValueError):
        CharVocab("")


ADULT_TRAIN_TEXT = """\
30, Private, 100, Bachelors, 13, Never-married, Sales, Own-child, White, Male, 0, 0, 40, United-States, <=50K
50, ?, 300, HS-grad, 9, Divorced, ?, Unmarried, Black, Female, 5000, 0, 60, ?, >50K

"""
ADULT_TEST_TEXT = """\
|1x3 Cross validator
40, Private, 200, Masters, 14, Never-married, Sales, Own-child, White, Male, 0, 0, 50, Canada, >50K.
"""


def test_load_adult_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = {ADULT_TRAIN.relpath: ADULT_TRAIN_TEXT, ADULT_TEST.relpath: ADULT_TEST_TEXT}
    monkeypatch.setattr(uci, "open_bytes", lambda datafile: texts[datafile.relpath].encode())
    x_train, y_train, x_test, y_test = load_adult()
    # 6 numeric columns + 2 categories in each of 8 categorical columns ('?' counted as a category)
    assert x_train.shape == (2, 22) and x_test.shape == (1, 22)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert y_train.tolist() == [0, 1] and y_test.tolist() == [1]
    np.testing.assert_allclose(x_train[:, 0], [-1, 1])  # age standardised with train mean 40, std 10
    np.testing.assert_allclose(x_test[0, :6], [0, 0, 1.5, -1, 0, 0])  # capital-loss has std 0: divided by 1
    # workclass one-hot ['?', 'Private']; native-country 'Canada' unseen in train -> all zeros
    np.testing.assert_array_equal(x_train[:, 6:8], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(x_test[0, 6:8], [0, 1])
    np.testing.assert_array_equal(x_test[0, -2:], [0, 0])


def test_load_adult_rejects_malformed_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(datafile: DataFile) -> bytes:
        return b"1, 2, 3\n" if datafile == ADULT_TRAIN else ADULT_TEST_TEXT.encode()

    monkeypatch.setattr(uci, "open_bytes", fake)
    with pytest.raises(ValueError, match="adult.data: malformed data row 0"):
        load_adult()


@pytest.mark.parametrize(
    ("name", "shape", "num_classes"),
    [
        ("digits", (1797, 64), 10),
        ("iris", (150, 4), 3),
        ("wine", (178, 13), 3),
        ("breast_cancer", (569, 30), 2),
        ("diabetes", (442, 10), None),
    ],
)
def test_load_sklearn(name: str, shape: tuple[int, int], num_classes: int | None) -> None:
    x, y = load_sklearn(name)
    assert x.shape == shape and x.dtype == np.float32 and y.shape == (shape[0],)
    if num_classes is None:
        assert y.dtype == np.float32
    else:
        assert y.dtype == np.int64 and set(y.tolist()) == set(range(num_classes))


def test_load_sklearn_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="'mnist'.*breast_cancer, diabetes, digits, iris, wine"):
        load_sklearn("mnist")
