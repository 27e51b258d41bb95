"""Training-landscape diagnostics: the empirical neural tangent kernel and the intrinsic dimension."""

from optarena.diagnostics.intrinsic_dimension import (
    PROJECTIONS,
    DenseProjection,
    FastfoodProjection,
    IntrinsicDimensionResult,
    SparseProjection,
    SubspaceModel,
    fast_walsh_hadamard,
    find_intrinsic_dimension,
    intrinsic_dimension,
)
from optarena.diagnostics.ntk import NTK_MODES, NTKTracker, empirical_ntk, ntk_drift

__all__ = [
    "NTK_MODES",
    "PROJECTIONS",
    "DenseProjection",
    "FastfoodProjection",
    "IntrinsicDimensionResult",
    "NTKTracker",
    "SparseProjection",
    "SubspaceModel",
    "empirical_ntk",
    "fast_walsh_hadamard",
    "find_intrinsic_dimension",
    "intrinsic_dimension",
    "ntk_drift",
]
