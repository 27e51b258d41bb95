"""Tabular datasets from the UCI repository (adult, letter) and the California housing csv."""

from __future__ import annotations

import csv
import io

import numpy as np

from optarena.data.files import (
    ADULT_TEST,
    ADULT_TRAIN,
    CALIFORNIA_HOUSING,
    LETTER_RECOGNITION,
    DataFile,
    open_bytes,
)

_ADULT_COLUMNS = 15
# age, fnlwgt, education-num, capital-gain, capital-loss, hours-per-week
_ADULT_NUMERIC = (0, 2, 4, 10, 11, 12)
_ADULT_CATEGORICAL = tuple(c for c in range(_ADULT_COLUMNS - 1) if c not in _ADULT_NUMERIC)
_ADULT_LABELS = {"<=50K": 0, ">50K": 1}


def _csv_rows(datafile: DataFile) -> list[list[str]]:
    """Non-empty csv rows of a dataset file, with whitespace after each comma dropped."""
    text = open_bytes(datafile).decode("utf-8")
    return [row for row in csv.reader(io.StringIO(text), skipinitialspace=True) if row]


def _one_hot(values: list[str], categories: list[str]) -> np.ndarray:
    """[len(values), len(categories)] indicator matrix; a value outside `categories` gives an all-zero row."""
    return (np.asarray(values)[:, None] == np.asarray(categories)[None, :]).astype(np.float32)


def _read_adult(datafile: DataFile) -> tuple[list[list[str]], np.ndarray]:
    rows = [row for row in _csv_rows(datafile) if not row[0].startswith("|")]  # adult.test opens with "|..."
    for i, row in enumerate(rows):
        if len(row) != _ADULT_COLUMNS or row[-1].rstrip(".") not in _ADULT_LABELS:
            raise ValueError(f"{datafile.relpath}: malformed data row {i}: {row!r}")
    return rows, np.array([_ADULT_LABELS[row[-1].rstrip(".")] for row in rows], dtype=np.int64)


def load_adult() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """UCI adult census income (label 1: income >50K): X_train, y_train, X_test, y_test.

    Numeric columns are standardised with the train statistics; categorical columns are one-hot over the
    train categories ('?' is a category of its own; a test value unseen in train gives all zeros).
    """
    train_rows, y_train = _read_adult(ADULT_TRAIN)
    test_rows, y_test = _read_adult(ADULT_TEST)

    def numeric(rows: list[list[str]]) -> np.ndarray:
        return np.array([[float(row[c]) for c in _ADULT_NUMERIC] for row in rows], dtype=np.float64)

    train_numeric = numeric(train_rows)
    mean, std = train_numeric.mean(axis=0), train_numeric.std(axis=0)
    std[std == 0] = 1.0
    categories = [sorted({row[c] for row in train_rows}) for c in _ADULT_CATEGORICAL]

    def features(rows: list[list[str]], numeric_part: np.ndarray) -> np.ndarray:
        columns = zip(_ADULT_CATEGORICAL, categories, strict=True)
        one_hots = [_one_hot([row[c] for row in rows], cats) for c, cats in columns]
        return np.hstack([(numeric_part - mean) / std, *one_hots]).astype(np.float32)

    x_train = features(train_rows, train_numeric)
    x_test = features(test_rows, numeric(test_rows))
    return x_train, y_train, x_test, y_test


def load_letter() -> tuple[np.ndarray, np.ndarray]:
    """UCI letter recognition: 16 integer features as float32 [20000, 16], labels 0..25 for 'A'..'Z'."""
    rows = _csv_rows(LETTER_RECOGNITION)
    for i, row in enumerate(rows):
        if len(row) != 17 or not ("A" <= row[0] <= "Z" and len(row[0]) == 1):
            raise ValueError(f"{LETTER_RECOGNITION.relpath}: malformed row {i}: {row!r}")
    x = np.array([row[1:] for row in rows], dtype=np.float32)
    y = np.array([ord(row[0]) - ord("A") for row in rows], dtype=np.int64)
    return x, y


def load_california_housing() -> tuple[np.ndarray, np.ndarray]:
    """California housing (handson-ml2 csv): float32 features [20640, 13] and median_house_value [20640].

    Features are the raw numeric columns (missing values, i.e. the 207 empty total_bedrooms, filled with
    the column median) followed by a one-hot of ocean_proximity (sorted categories).
    """
    header, *rows = _csv_rows(CALIFORNIA_HOUSING)
    target, category = header.index("median_house_value"), header.index("ocean_proximity")
    numeric_cols = [c for c in range(len(header)) if c not in (target, category)]
    numeric = np.array([[float(row[c]) if row[c] else np.nan for c in numeric_cols] for row in rows])
    numeric = np.where(np.isnan(numeric), np.nanmedian(numeric, axis=0), numeric)
    kinds = [row[category] for row in rows]
    x = np.hstack([numeric, _one_hot(kinds, sorted(set(kinds)))]).astype(np.float32)
    y = np.array([float(row[target]) for row in rows], dtype=np.float32)
    return x, y
