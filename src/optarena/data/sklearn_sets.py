"""The small datasets bundled with scikit-learn (no download needed)."""

from __future__ import annotations

import numpy as np

SKLEARN_DATASETS = ("breast_cancer", "diabetes", "digits", "iris", "wine")


def load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and targets (int64 class labels, or float32 for the diabetes regression)."""
    if name not in SKLEARN_DATASETS:
        allowed = ", ".join(SKLEARN_DATASETS)
        raise ValueError(f"unknown scikit-learn dataset {name!r}; expected one of: {allowed}")
    import sklearn.datasets  # imported here: it is slow to import and only these loaders need it

    x, y = getattr(sklearn.datasets, f"load_{name}")(return_X_y=True)
    return x.astype(np.float32), y.astype(np.float32 if y.dtype.kind == "f" else np.int64)
