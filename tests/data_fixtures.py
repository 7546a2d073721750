"""Small CIFAR-10 sources with known content, written by the tests themselves.

``write_cifar_archive`` writes an archive in the official format (pickled ``data_batch_1..5`` and
``test_batch`` inside ``cifar-10-batches-py/`` in a .tar.gz); ``write_image_folder`` a PNG tree. The
pixels follow ``known_image``, a pattern that differs per image, channel, row and column, so that a
transposed, flipped or channel-swapped read cannot pass. ``write_learnable_image_folder`` writes
images whose classes differ in colour, for short training runs that must learn something.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def known_image(n: int, size: int = 32) -> np.ndarray:
    """HWC RGB uint8 image number n: value (7n + 50c + 3y + x) mod 256 at row y, column x, channel c."""
    y, x, c = np.meshgrid(np.arange(size), np.arange(size), np.arange(3), indexing="ij")
    return ((7 * n + 50 * c + 3 * y + x) % 256).astype(np.uint8)


def known_label(n: int) -> int:
    return (3 * n) % 10  # every class once in any 10 consecutive images


def _add_pickle(tar: tarfile.TarFile, name: str, obj) -> None:
    payload = pickle.dumps(obj)
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def cifar_batch(first: int, count: int) -> dict:
    """A batch dict as in the official archive: b'data' uint8 [count, 3072] in CHW order, b'labels'."""
    images = np.stack([known_image(n) for n in range(first, first + count)])
    return {
        b"batch_label": b"tiny batch",
        b"labels": [known_label(n) for n in range(first, first + count)],
        b"data": images.transpose(0, 3, 1, 2).reshape(count, -1),
        b"filenames": [f"img_{n}.png".encode() for n in range(first, first + count)],
    }


def write_cifar_archive(path: Path, per_batch: int = 10, test_count: int = 20, members: dict | None = None) -> dict:
    """Write a tiny cifar-10-python.tar.gz; return the expected {"train"|"test": (images HWC, labels)}.

    Train images are numbers 0 .. 5 * per_batch - 1 (batch k holds the k-th run), test images follow.
    ``members`` replaces or adds members by name (a bytes value is written as is), for broken archives.
    """
    contents = {f"data_batch_{k + 1}": cifar_batch(k * per_batch, per_batch) for k in range(5)}
    contents["test_batch"] = cifar_batch(5 * per_batch, test_count)
    contents["batches.meta"] = {b"label_names": [name.encode() for name in CLASS_NAMES]}
    contents.update(members or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in contents.items():
            if isinstance(obj, bytes):
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(obj)
                tar.addfile(info, io.BytesIO(obj))
            else:
                _add_pickle(tar, f"cifar-10-batches-py/{name}", obj)
    train = range(5 * per_batch)
    test = range(5 * per_batch, 5 * per_batch + test_count)
    return {
        split: (np.stack([known_image(n) for n in ns]), np.array([known_label(n) for n in ns]))
        for split, ns in (("train", train), ("test", test))
    }


def write_image_folder(root: Path, counts: dict[str, int], first: int = 0) -> dict:
    """Write ROOT/<split>/<class>/NNNN.png with known images; return {split: (images, labels)} in the
    order CIFAR label, then file name. Classes are written in reverse order, so that nothing can rely
    on creation order."""
    expected = {}
    n = first
    for split, per_class in counts.items():
        images = {label: [] for label in range(10)}
        for label in reversed(range(10)):
            folder = root / split / CLASS_NAMES[label]
            folder.mkdir(parents=True)
            for k in range(per_class):
                image = known_image(n)
                n += 1
                cv2.imwrite(str(folder / f"{k:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                images[label].append(image)
        expected[split] = (
            np.stack([im for label in range(10) for im in images[label]]),
            np.repeat(np.arange(10), per_class),
        )
    return expected


def write_learnable_image_folder(root: Path, train_per_class: int, test_per_class: int) -> Path:
    """A CIFAR-10-shaped image folder whose classes differ in colour, so a few steps already learn."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for k, name in enumerate(CLASS_NAMES):
            folder = root / split / name
            folder.mkdir(parents=True)
            colour = np.array([k * 25, 255 - k * 25, (k * 70) % 256], dtype=np.float64)
            for i in range(count):
                image = np.clip(colour + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    return root
