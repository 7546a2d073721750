"""Shared test fixtures.

Tests that need the real CIFAR-10 copy find it through one setting: the environment variable
SIMAM_DATA_DIR (default: ``../shared/data`` beside the repository). Where it is absent they skip,
saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import paddle
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SIMAM_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
CIFAR10_JPEG = SHARED_DATA / "cifar10-jpeg"


@pytest.fixture
def cifar10_jpeg() -> Path:
    """The real CIFAR-10 image-folder copy (read-only); skips when it is not on this machine."""
    if not (CIFAR10_JPEG / "train").is_dir():
        pytest.skip(f"real CIFAR-10 copy not found at {CIFAR10_JPEG} (set SIMAM_DATA_DIR to the folder holding cifar10-jpeg/)")
    return CIFAR10_JPEG


@pytest.fixture(autouse=True)
def _seed():
    paddle.seed(0)
    np.random.seed(0)
