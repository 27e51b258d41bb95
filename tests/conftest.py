"""Shared test set-up: the real datasets come from $OPTARENA_DATA_DIR (the Makefile points it at ../shared/data);
tests never download."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not os.environ.get("OPTARENA_DATA_DIR") and (SHARED_DATA / "README.md").exists():
    os.environ["OPTARENA_DATA_DIR"] = str(SHARED_DATA)
os.environ["OPTARENA_NO_DOWNLOAD"] = "1"
# The tests' networks are tiny: one thread is faster than two threads contending for a 2-core machine.
torch.set_num_threads(1)


def shared_data_dirs() -> list[Path]:
    """The $OPTARENA_DATA_DIR directories that exist; skips the test when there are none (fails it under CI)."""
    dirs = [Path(d) for d in os.environ.get("OPTARENA_DATA_DIR", "").split(os.pathsep) if d]
    dirs = [d for d in dirs if d.is_dir()]
    if not dirs:
        reason = "shared datasets absent: set OPTARENA_DATA_DIR to a directory holding them (e.g. ../shared/data)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return dirs
