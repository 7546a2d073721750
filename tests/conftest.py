"""Fixtures of every test; shared helpers are in helpers.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import pytest
from helpers import CIFAR10_JPEG


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
