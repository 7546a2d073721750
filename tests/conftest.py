"""Fixtures of every test; shared helpers are in helpers.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import pytest
from helpers import require_cifar10_jpeg, write_learnable_image_folder


@pytest.fixture
def cifar10_jpeg() -> Path:
    """The real CIFAR-10 image-folder copy (read-only); skips when it is not on this machine."""
    return require_cifar10_jpeg()


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A small generated CIFAR-10-shaped image folder (PNG, 2 train and 2 test images per class), for
    tests that need image files on any clone."""
    return write_learnable_image_folder(tmp_path_factory.mktemp("images"), train_per_class=2, test_per_class=2)


def pytest_collection_modifyitems(items):
    """Tests that read the real CIFAR-10 copy carry the ``real_data`` marker (``-m "not real_data"``)."""
    for item in items:
        if "cifar10_jpeg" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(autouse=True)
def _seed():
    paddle.seed(0)
    np.random.seed(0)
