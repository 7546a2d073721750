"""Where the images come from: the official CIFAR-10 archive, an image-folder tree of any classes,
PaddleClas-style image lists, or Paddle's CIFAR-10 cache.

``resolve_source(data.root)`` is the one reading of ``data.root``; ``load_split`` reads a split of it.

Every source is read into memory as uint8 RGB images [N, H, W, 3] (HWC, the cv2 backend's layout) and
int64 labels [N] in the order of its class list. Reading everything up front costs a few seconds for
CIFAR-10's 60,000 images and means a broken file stops the run at start, by name, instead of an epoch
later.

- Archive: ``cifar-10-python.tar.gz`` as published: ``cifar-10-batches-py/data_batch_1..5`` (train) and
  ``test_batch`` (test), pickled dicts with ``b"data"`` uint8 [10000, 3072] (rows in CHW order) and
  ``b"labels"``. It is read here rather than through ``paddle.vision.datasets.Cifar10``, which matches
  any member whose name contains ``data_batch`` and checks nothing, so that a wrong archive fails with
  its name. Its classes are CIFAR-10's, in CIFAR-10's label order (airplane=0 ... truck=9).
- Image folder: ``ROOT/train/<class>/*.jpg|*.jpeg|*.png`` and, for validation, ``ROOT/val/<class>/...``
  (or ``ROOT/test/<class>/...`` where there is no ``val/``). The classes are the folder names of
  ``train/``, sorted, which for CIFAR-10's ten names is CIFAR-10's label order; the validation split
  must hold the same class folders. ``classes_of`` is the one place that decides this.
  Images of one size are kept as they are; a split whose images differ in size (or are larger than
  the size its transforms first resize to) is stored resized to that size, which is the transforms'
  own first step (the same bilinear resize), so nothing changes but the memory it takes.
- Image lists, as PaddleClas's: ``data.root`` is a training list file (``*.txt``, e.g. ``train_list.txt``),
  or a folder holding ``train_list.txt`` and no ``train/`` folder. One ``relative/path.jpg LABEL`` line per
  image (blank lines skipped), the path relative to the list's folder (or absolute), the label an integer
  0 <= LABEL < classes. The validation list is the file beside it whose name has ``val`` in place of the
  last ``train`` (``train_list.txt`` -> ``val_list.txt``). The classes are named by ``label_list.txt``
  beside the lists where there is one (PaddleClas's ``class_id_map_file`` format: ``ID NAME`` per line,
  IDs 0..N-1 each once; what ``simam_paddle.paddleclas --image-lists`` writes), else "0".."N-1" with N
  one more than the largest label of the training list. A missing image file, a label out of range and
  a line that is not ``PATH LABEL`` stop the run naming the list file and line number.
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

from ..errors import DataError
from ..layers.messages import listed

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPLITS = ("train", "test")  # "test" is the validation split: an image folder's val/ (or test/)
EVAL_FOLDERS = ("val", "test")  # an image folder's validation split: the first of these that exists
ARCHIVE_MEMBERS = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

TRAIN_LIST, LABEL_LIST = "train_list.txt", "label_list.txt"  # PaddleClas's names, beside the image lists
LAYOUTS = (
    "Expected either the official CIFAR-10 python archive (cifar-10-python.tar.gz, from "
    f"{ARCHIVE_URL}) or an image-folder root laid out as ROOT/train/<class>/*.jpg|png and "
    "ROOT/val/<class>/*.jpg|png (or ROOT/test/...), one folder per class, the same class folders in both; "
    f"or a PaddleClas image list ({TRAIN_LIST}, with val_list.txt beside it: 'relative/path.jpg LABEL' lines), "
    "or a folder holding them"
)
HOW_TO_GET = f"{LAYOUTS}; or set data.root to null (with data.download true) to let Paddle download the archive into its cache."


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as HWC RGB uint8 (cv2; grey images are given three equal channels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise DataError(f"{path}: an empty file (0 bytes), not an image; remove it or replace it with the image")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV rejects some broken files with an exception rather than None
        raise DataError(f"{path}: not a readable image (OpenCV: {str(exc).strip().splitlines()[-1]})") from None
    if image is None:
        raise DataError(f"{path}: not a readable image (expected a JPEG or PNG file)")
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
        raise DataError(f"{path}: not a readable tar archive ({err}). {HOW_TO_GET}") from None
    with archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
        missing = [name for name in wanted if name not in members]
        if missing:
            raise DataError(
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
        raise DataError(f"{where} is not a pickled CIFAR-10 batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{where} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels', got {keys}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: b'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: b'labels' must be {len(data)} integers, got {labels.dtype} {list(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise DataError(f"{where}: labels must lie in [0, 10), got {labels.min()}..{labels.max()}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are CHW; the cv2 backend wants HWC
    return np.ascontiguousarray(images), labels.astype(np.int64)


def split_folder(root: str | os.PathLike, split: str) -> Path:
    """The folder of ``split`` in an image-folder root: ``train/``, or for "test" ``val/`` (else ``test/``)."""
    _check_split(split)
    root = Path(root)
    names = ("train",) if split == "train" else EVAL_FOLDERS
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{' or '.join(str(root / name) for name in names)}: no such folder. {HOW_TO_GET}")


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_classes(root: str | os.PathLike) -> list[str]:
    """The classes of an image folder in label order: the folder names of ``ROOT/train/``, sorted (as
    Python sorts strings). CIFAR-10's ten names sort into CIFAR-10's own label order (airplane=0 ...
    truck=9), so a CIFAR-10 folder keeps the archive's labels."""
    train = split_folder(root, "train")
    names = _class_folders(train)
    if not names:
        raise DataError(f"{train}: no class folders; expected one folder of images per class (ROOT/train/<class>/*.jpg)")
    return names


def classes_of(root: str | os.PathLike | None) -> list[str]:
    """The class names of the source that ``data.root`` names, in label order (see the module docstring):
    CIFAR-10's for the archive and Paddle's cache, the class folders for an image folder, the label list
    (or "0".."N-1") for image lists."""
    source = resolve_source(root)
    if source.kind == "image_folder":
        return folder_classes(source.path)
    if source.kind == "image_list":
        return list_classes(source.path)
    return list(CLASS_NAMES)


def val_list(train_list: Path) -> Path:
    """The validation list beside ``train_list``: its name with ``val`` for the last ``train``."""
    name = train_list.name
    at = name.rfind("train")
    if at < 0:
        raise DataError(f"data.root {train_list}: an image list's name must contain 'train' (train_list.txt), so "
                        "that its validation list (val_list.txt) can be found beside it")
    return train_list.with_name(name[:at] + "val" + name[at + len("train"):])


def _list_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of a text file with their numbers (from 1)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image list (the validation list sits beside the training "
                                f"list, its name with val for train). {HOW_TO_GET}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text file ({exc})") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _parse_list(path: Path) -> tuple[list[Path], list[int], list[int]]:
    """Image paths (relative to the list's folder), integer labels and line numbers of an image list, each
    line's form checked."""
    files, labels, numbers = [], [], []
    for number, line in _list_lines(path):
        fields = line.split()
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise DataError(f"{path}, line {number}: {line!r} is not 'PATH LABEL' (an image path relative to "
                            f"{path.parent}, a space, an integer label)")
        files.append(path.parent / fields[0])
        labels.append(int(fields[1]))
        numbers.append(number)
    if not files:
        raise DataError(f"{path}: an empty image list (expected 'relative/path.jpg LABEL' lines)")
    return files, labels, numbers


def list_classes(train_list: Path) -> list[str]:
    """The class names of image lists in label order: ``label_list.txt`` beside them, else "0".."N-1"
    (N: one more than the training list's largest label)."""
    names_file = train_list.with_name(LABEL_LIST)
    if not names_file.is_file():
        _, labels, _ = _parse_list(train_list)
        return [str(k) for k in range(max(max(labels), 0) + 1)]
    names: dict[int, str] = {}
    for number, line in _list_lines(names_file):
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not fields[0].isdigit() or int(fields[0]) in names:
            raise DataError(f"{names_file}, line {number}: {line!r} is not 'ID NAME' with a new integer ID")
        names[int(fields[0])] = fields[1].strip()
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(max(names) + 1)) - set(names))
        raise DataError(f"{names_file}: the IDs must be 0..{len(names) - 1}, each once; missing {listed(missing, 8)}")
    return [names[k] for k in range(len(names))]


def read_image_list(train_list: Path, split: str) -> tuple[list[Path], np.ndarray]:
    """Files and labels of ``split`` of image lists (the training list, or the validation list beside it), in
    the list's order; every label in range and every file present, or a DataError naming the line."""
    _check_split(split)
    path = train_list if split == "train" else val_list(train_list)
    files, labels, numbers = _parse_list(path)
    classes = list_classes(train_list)
    for file, label, number in zip(files, labels, numbers):
        if not 0 <= label < len(classes):
            origin = (f"the {len(classes)} classes of {train_list.with_name(LABEL_LIST)}"
                      if train_list.with_name(LABEL_LIST).is_file() else
                      f"labels 0..{len(classes) - 1}, from the largest label of {train_list} (a {LABEL_LIST} beside "
                      "it names the classes)")
            raise DataError(f"{path}, line {number}: label {label} is out of range: expected {origin}")
        if not file.is_file():
            raise DataError(f"{path}, line {number}: {file}: no such image file (paths are relative to {path.parent})")
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{path}, line {number}: {file} is not a {'/'.join(IMAGE_SUFFIXES)} image file")
    return files, np.asarray(labels, dtype=np.int64)


def list_files(source: Source, split: str) -> tuple[list[Path], np.ndarray]:
    """Files and labels of ``split`` of a source of image files (an image folder or image lists)."""
    if source.kind == "image_folder":
        return list_image_folder(source.path, split)
    if source.kind == "image_list":
        return read_image_list(source.path, split)
    raise ValueError(f"{source.kind} is not a source of image files")


def split_location(source: Source, split: str) -> Path:
    """Where ``split`` of a source of image files is, for messages: its folder, or its list file."""
    return split_folder(source.path, split) if source.kind == "image_folder" else (
        source.path if split == "train" else val_list(source.path))


def list_image_folder(root: str | os.PathLike, split: str) -> tuple[list[Path], np.ndarray]:
    """Files and labels of ``split`` (see ``split_folder``), sorted by label (``folder_classes``), then file name."""
    classes = folder_classes(root)
    split_dir = split_folder(root, split)
    unknown = sorted(set(_class_folders(split_dir)) - set(classes))
    if unknown:
        folders = ", ".join(str(split_dir / name) for name in unknown)
        raise DataError(f"{folders}: unexpected folder(s); the classes are the folders of {Path(root) / 'train'}: "
                         f"{', '.join(classes)}")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise FileNotFoundError(f"{class_dir}: missing class folder ({Path(root) / 'train'} has a folder {name}). "
                                    f"{HOW_TO_GET}")
        class_files = sorted(p for p in class_dir.iterdir() if not p.name.startswith("."))
        for p in class_files:
            if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{p}: not an image file; a class folder may hold only {'/'.join(IMAGE_SUFFIXES)} files")
        if not class_files:
            raise DataError(f"{class_dir}: empty class folder (expected {'/'.join(IMAGE_SUFFIXES)} images)")
        files += class_files
        labels += [label] * len(class_files)
    return files, np.asarray(labels, dtype=np.int64)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized to ``size`` x ``size`` as Paddle's cv2 ``Resize`` does it (bilinear)."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def read_images(files: list[Path], size: int | None = None) -> np.ndarray:
    """Decode image files into one uint8 array [N, H, W, 3].

    ``size`` None: all images must have the size of the first. Otherwise images of one size no larger
    than ``size`` x ``size`` are kept as they are, and any others make every image resized to ``size``
    x ``size`` (each larger one as soon as it is read, so that memory stays bounded).
    """
    images: list[np.ndarray] = []
    shapes = set()
    for path in files:
        image = load_image(path)
        shapes.add(image.shape)
        if size is None and images and image.shape != images[0].shape:
            raise DataError(f"{path}: image of size {image.shape[1]}x{image.shape[0]}, but {files[0]} is "
                             f"{images[0].shape[1]}x{images[0].shape[0]}; all images must have one size")
        if size is not None and max(image.shape[:2]) > size:
            image = resize(image, size)
        images.append(image)
    if not images:
        raise DataError("no image files to read")
    if size is not None and (len(shapes) > 1 or max(next(iter(shapes))[:2]) > size):
        images = [image if image.shape[:2] == (size, size) else resize(image, size) for image in images]
    return np.stack(images)


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
            f"(needs internet) or point data.root at a copy. {LAYOUTS}."
        )
    try:
        return Path(common.download(cifar.CIFAR10_URL, "cifar", cifar.CIFAR10_MD5))
    except Exception as err:  # no network, a proxy page, a wrong checksum: all end here
        raise FileNotFoundError(
            f"{cached}: CIFAR-10 is not in Paddle's cache and downloading {cifar.CIFAR10_URL} failed "
            f"({type(err).__name__}: {err}). Put the archive there by hand or point data.root at a copy. {LAYOUTS}."
        ) from err


def balanced_subset(labels: np.ndarray, limit: int | None, seed: int, class_names: list[str] | None = None) -> np.ndarray:
    """Sorted indices of ``limit`` samples, as equal per class as possible, the same for the same seed.

    ``limit // classes`` samples of every class, and one more of ``limit % classes`` classes drawn at
    random. None means all samples. ``class_names`` name the classes in messages.
    """
    if limit is None:
        return np.arange(len(labels))
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    classes = np.unique(labels)
    if limit > len(labels):
        raise DataError(f"limit {limit} is larger than the {len(labels)} samples available")
    rng = np.random.default_rng([seed, limit])
    counts = np.full(len(classes), limit // len(classes))
    counts[rng.permutation(len(classes))[: limit % len(classes)]] += 1
    chosen = []
    for cls, count in zip(classes, counts):
        members = np.flatnonzero(labels == cls)
        if count > len(members):
            name = class_names[cls] if class_names is not None else f"number {cls}"
            raise DataError(f"limit {limit} needs {count} samples of class {name}, only {len(members)} available")
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class Source:
    """What ``data.root`` names: ``kind`` is "archive", "image_folder", "image_list" (``path``: the training
    list) or "paddle_cache" (``path`` None)."""

    kind: str
    path: Path | None


FILE_SOURCES = ("image_folder", "image_list")  # the sources of image files (``list_files``)


def resolve_source(root: str | os.PathLike | None) -> Source:
    """The one reading of ``data.root``: None is Paddle's cache; a folder an image-folder root, or image
    lists where it holds train_list.txt and no train/ folder; a .txt file a training image list; any other
    file the official archive (checked when read). A path that does not exist is a FileNotFoundError."""
    if root is None:
        return Source("paddle_cache", None)
    path = Path(os.path.expanduser(str(root)))
    if path.is_dir():
        if not (path / "train").is_dir() and (path / TRAIN_LIST).is_file():
            return Source("image_list", path / TRAIN_LIST)
        return Source("image_folder", path)
    if path.is_file():
        return Source("image_list" if path.suffix.lower() == ".txt" else "archive", path)
    raise FileNotFoundError(f"data.root {path}: no such file or folder. {HOW_TO_GET}")


def load_split(
    root: str | os.PathLike | None, split: str, limit: int | None = None, seed: int = 0, download: bool = True,
    size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, H, W, 3] RGB and labels int64 [N] of one split from the source that ``root`` names.

    ``root``: see ``resolve_source``. ``limit``: a class-balanced subset of that many samples (see
    ``balanced_subset``); for an image folder only the chosen files are decoded, with ``size`` as in
    ``read_images`` (the size the split's transforms first resize to; None: all images of one size).
    """
    _check_split(split)
    source = resolve_source(root)
    if source.kind in FILE_SOURCES:
        files, labels = list_files(source, split)
        keep = balanced_subset(labels, limit, seed, classes_of(root))
        return read_images([files[k] for k in keep], size), labels[keep]
    path = source.path if source.kind == "archive" else paddle_cache_archive(download)
    images, labels = read_archive(path, split)
    keep = balanced_subset(labels, limit, seed, CLASS_NAMES)
    return images[keep], labels[keep]
