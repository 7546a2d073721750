"""Where CIFAR-10 comes from: the official python archive, an image-folder tree, or Paddle's cache.

``resolve_source(data.root)`` is the one reading of ``data.root``; ``load_split`` reads a split of it.

Every source is read into memory as uint8 RGB images [N, H, W, 3] (HWC, the cv2 backend's layout) and
int64 labels [N] in CIFAR-10's label order (airplane=0 ... truck=9). Reading everything up front costs a
few seconds for the 60,000 images and means a broken file stops the run at start, by name, instead of
an epoch later.

- Archive: ``cifar-10-python.tar.gz`` as published: ``cifar-10-batches-py/data_batch_1..5`` (train) and
  ``test_batch`` (test), pickled dicts with ``b"data"`` uint8 [10000, 3072] (rows in CHW order) and
  ``b"labels"``. It is read here rather than through ``paddle.vision.datasets.Cifar10``, which matches
  any member whose name contains ``data_batch`` and checks nothing, so that a wrong archive fails with
  its name.
- Image folder: ``ROOT/train/<class>/*.jpg|*.jpeg|*.png`` and ``ROOT/test/<class>/...`` with the ten
  CIFAR-10 class folders; the folder names, not the listing order, give the labels.
- Paddle's cache: ``~/.cache/paddle/dataset/cifar/cifar-10-python.tar.gz``, downloaded by Paddle when
  allowed (the default for a new user with internet).
"""

from __future__ import annotations

import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPLITS = ("train", "test")
ARCHIVE_MEMBERS = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

HOW_TO_GET = (
    "Expected either the official CIFAR-10 python archive (cifar-10-python.tar.gz, from "
    f"{ARCHIVE_URL}) or an image-folder root laid out as ROOT/train/<class>/*.jpg|png and "
    f"ROOT/test/<class>/*.jpg|png with the class folders {', '.join(CLASS_NAMES)}; "
    "or set data.root to null (with data.download true) to let Paddle download the archive into its cache."
)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as HWC RGB uint8 (cv2; grey images are given three equal channels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image (expected a JPEG or PNG file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def read_archive(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 32, 32, 3] and labels int64 [N] of one split of ``cifar-10-python.tar.gz``."""
    _check_split(split)
    path = Path(path)
    wanted = ARCHIVE_MEMBERS[split]
    try:
        archive = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"{path}: not a readable tar archive ({err}). {HOW_TO_GET}") from None
    with archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
        missing = [name for name in wanted if name not in members]
        if missing:
            raise ValueError(
                f"{path}: not the CIFAR-10 python archive: it has no member(s) {', '.join(missing)} "
                f"(expected cifar-10-batches-py/data_batch_1..5 and test_batch). {HOW_TO_GET}"
            )
        images, labels = [], []
        for name in wanted:
            x, y = _read_batch(archive, members[name], path)
            images.append(x)
            labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _read_batch(archive: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> tuple[np.ndarray, np.ndarray]:
    where = f"{path}: member {member.name}"
    try:
        batch = pickle.load(archive.extractfile(member), encoding="bytes")
    except Exception as err:  # a truncated or foreign file can raise almost anything from pickle
        raise ValueError(f"{where} is not a pickled CIFAR-10 batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{where} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels', got {keys}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{where}: b'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: b'labels' must be {len(data)} integers, got {labels.dtype} {list(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise ValueError(f"{where}: labels must lie in [0, 10), got {labels.min()}..{labels.max()}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are CHW; the cv2 backend wants HWC
    return np.ascontiguousarray(images), labels.astype(np.int64)


def list_image_folder(root: str | os.PathLike, split: str) -> tuple[list[Path], np.ndarray]:
    """Files and labels of ``ROOT/<split>/<class>/*``, sorted by class (CIFAR-10 order), then file name."""
    _check_split(split)
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: no such folder. {HOW_TO_GET}")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = sorted(set(found) - set(CLASS_NAMES))
    if unknown:
        folders = ", ".join(str(split_dir / name) for name in unknown)
        raise ValueError(f"{folders}: unexpected folder(s); expected only the class folders {', '.join(CLASS_NAMES)}")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(CLASS_NAMES):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise FileNotFoundError(f"{class_dir}: missing class folder. {HOW_TO_GET}")
        class_files = sorted(p for p in class_dir.iterdir() if not p.name.startswith("."))
        for p in class_files:
            if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{p}: not an image file; a class folder may hold only {'/'.join(IMAGE_SUFFIXES)} files")
        if not class_files:
            raise ValueError(f"{class_dir}: empty class folder (expected {'/'.join(IMAGE_SUFFIXES)} images)")
        files += class_files
        labels += [label] * len(class_files)
    return files, np.asarray(labels, dtype=np.int64)


def read_images(files: list[Path]) -> np.ndarray:
    """Decode image files into one uint8 array [N, H, W, 3]; all must have the size of the first."""
    images = None
    for k, path in enumerate(files):
        image = load_image(path)
        if images is None:
            images = np.empty((len(files), *image.shape), dtype=np.uint8)
        elif image.shape != images.shape[1:]:
            raise ValueError(f"{path}: image of size {image.shape[1]}x{image.shape[0]}, but {files[0]} is "
                             f"{images.shape[2]}x{images.shape[1]}; all images must have one size")
        images[k] = image
    if images is None:
        raise ValueError("no image files to read")
    return images


def paddle_cache_archive(download: bool) -> Path:
    """Path of the CIFAR-10 archive in Paddle's dataset cache, downloaded by Paddle if absent and allowed."""
    import paddle.dataset.common as common
    from paddle.vision.datasets import cifar

    cached = Path(common.DATA_HOME) / "cifar" / Path(cifar.CIFAR10_URL).name
    if cached.is_file():
        return cached
    if not download:
        raise FileNotFoundError(
            f"{cached}: CIFAR-10 is not in Paddle's cache and data.download is false. Set data.download true "
            f"(needs internet) or point data.root at a copy. {HOW_TO_GET}"
        )
    try:
        return Path(common.download(cifar.CIFAR10_URL, "cifar", cifar.CIFAR10_MD5))
    except Exception as err:  # no network, a proxy page, a wrong checksum: all end here
        raise FileNotFoundError(
            f"{cached}: CIFAR-10 is not in Paddle's cache and downloading {cifar.CIFAR10_URL} failed "
            f"({type(err).__name__}: {err}). Put the archive there by hand or point data.root at a copy. {HOW_TO_GET}"
        ) from err


def balanced_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``limit`` samples, as equal per class as possible, the same for the same seed.

    ``limit // classes`` samples of every class, and one more of ``limit % classes`` classes drawn at
    random. None means all samples.
    """
    if limit is None:
        return np.arange(len(labels))
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    classes = np.unique(labels)
    if limit > len(labels):
        raise ValueError(f"limit {limit} is larger than the {len(labels)} samples available")
    rng = np.random.default_rng([seed, limit])
    counts = np.full(len(classes), limit // len(classes))
    counts[rng.permutation(len(classes))[: limit % len(classes)]] += 1
    chosen = []
    for cls, count in zip(classes, counts):
        members = np.flatnonzero(labels == cls)
        if count > len(members):
            raise ValueError(f"limit {limit} needs {count} samples of class {CLASS_NAMES[cls]}, only {len(members)} available")
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class Source:
    """What ``data.root`` names: ``kind`` is "archive", "image_folder" or "paddle_cache" (``path`` None)."""

    kind: str
    path: Path | None


def resolve_source(root: str | os.PathLike | None) -> Source:
    """The one reading of ``data.root``: None is Paddle's cache, a folder an image-folder root, a file
    the official archive (checked when read). A path that does not exist is a FileNotFoundError."""
    if root is None:
        return Source("paddle_cache", None)
    path = Path(os.path.expanduser(str(root)))
    if path.is_dir():
        return Source("image_folder", path)
    if path.is_file():
        return Source("archive", path)
    raise FileNotFoundError(f"data.root {path}: no such file or folder. {HOW_TO_GET}")


def load_split(
    root: str | os.PathLike | None, split: str, limit: int | None = None, seed: int = 0, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, H, W, 3] RGB and labels int64 [N] of one split from the source that ``root`` names.

    ``root``: see ``resolve_source``. ``limit``: a class-balanced subset of that many samples (see
    ``balanced_subset``); for an image folder only the chosen files are decoded.
    """
    _check_split(split)
    source = resolve_source(root)
    if source.kind == "image_folder":
        files, labels = list_image_folder(source.path, split)
        keep = balanced_subset(labels, limit, seed)
        return read_images([files[k] for k in keep]), labels[keep]
    path = source.path if source.kind == "archive" else paddle_cache_archive(download)
    images, labels = read_archive(path, split)
    keep = balanced_subset(labels, limit, seed)
    return images[keep], labels[keep]
