"""optarena: faithful PyTorch training algorithms, and an AlgoPerf-style arena that benchmarks them."""

__version__ = "0.1.0"
