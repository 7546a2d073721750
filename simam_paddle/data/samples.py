"""A few test images for checks and figures: real ones where the run's data is an image folder or image lists.

Export checks and the attention figure need images that look like the run's inputs. When the run's
``data.root`` is an image folder (``ROOT/val/<class>/*.jpg`` or ``ROOT/test/...``) or image lists, the
images are its first validation files, taken class by class in turn (classes without validation images
left out). Otherwise (the CIFAR-10 archive, Paddle's cache) there is no file to
point at, and the images are rendered here: coloured discs and bars on smooth backgrounds, 32x32 like
CIFAR-10, the same for every call. ``Samples.source`` says which, so every printed check can say it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ArgumentError, DataError
from .sources import CLASS_NAMES, FILE_SOURCES, Source, classes_of, list_files, load_image, resolve_source, split_location
from .transforms import SIZE, build_test_transform

RENDER_SIZE = 32


@dataclass
class Samples:
    images: list[np.ndarray]  # HWC RGB uint8
    labels: list[int | None]  # true class where known
    names: list[str]  # file names, or "rendered-<k>"
    source: str  # what the images are, for messages
    size: int = SIZE  # the run's data.image_size

    def batch(self) -> np.ndarray:
        """The images through the test transforms: float32 [N, 3, S, S]."""
        return preprocess(self.images, self.size)


def preprocess(images: list[np.ndarray], size: int = SIZE) -> np.ndarray:
    """HWC RGB uint8 images of any size through the test transforms: float32 [N, 3, size, size]."""
    transform = build_test_transform(size)
    return np.stack([transform(image) for image in images]).astype(np.float32)


def _test_source(root: str | Path | None) -> tuple[Source | None, str]:
    """The source of image files that ``data.root`` names when it has a validation split, else None and why not."""
    try:
        source = resolve_source(root)
    except FileNotFoundError:
        return None, f"data.root {root!r} does not exist here"
    if source.kind in FILE_SOURCES:
        try:
            split_location(source, "test").stat()
            return source, ""
        except (FileNotFoundError, DataError):
            pass
    return None, f"data.root {root!r} is not an image folder with a validation split (val/ or test/) or image lists"


def render_images(count: int, size: int = RENDER_SIZE, seed: int = 0) -> list[np.ndarray]:
    """``count`` synthetic RGB uint8 pictures: a colour gradient, a disc and a bar, placed at random."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    images = []
    for _ in range(count):
        top, bottom = rng.uniform(0, 255, (2, 3))
        image = (top[None, None] * (1 - ramp)[:, None, None] + bottom[None, None] * ramp[:, None, None])
        image = np.ascontiguousarray(np.broadcast_to(image, (size, size, 3)).astype(np.uint8))
        cx, cy = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
        cv2.circle(image, (cx, cy), int(rng.integers(size // 8, size // 3)), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        cv2.rectangle(image, (x0, y0), (x0 + size // 2, y0 + size // 8), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
        images.append(image)
    return images


def sample_images(config: dict, count: int) -> Samples:
    """``count`` test images of the run described by ``config``: real where possible, else rendered."""
    if count < 1:
        raise ArgumentError(f"the number of images must be >= 1, got {count}")
    size = config["data"]["image_size"]
    source, why_not = _test_source(config["data"]["root"])
    if source is None:
        return Samples(
            render_images(count),
            [None] * count,
            [f"rendered-{k}" for k in range(count)],
            f"{count} rendered {RENDER_SIZE}x{RENDER_SIZE} images ({why_not})",
            size,
        )
    folder = split_location(source, "test")
    files, labels = list_files(source, "test")
    by_class = [members for members in (np.flatnonzero(labels == c) for c in range(len(classes_of(source.path))))
                if len(members)]
    available = len(by_class) * min(len(members) for members in by_class)
    if count > available:
        raise DataError(f"{count} images asked for, but {folder} offers {available} taken class by class")
    chosen = [by_class[k % len(by_class)][k // len(by_class)] for k in range(count)]  # class by class in turn
    return Samples(
        [load_image(files[k]) for k in chosen],
        [int(labels[k]) for k in chosen],
        [str(files[k]) for k in chosen],
        f"{count} real test images from {folder}",
        size,
    )


def class_names(num_classes: int) -> list[str]:
    """The class names of a run that saved none (runs written before runs saved them): CIFAR-10's names
    for a 10-class model, ``class_<k>`` otherwise. A run's own names: ``simam_paddle.run_dir.run_classes``."""
    return list(CLASS_NAMES) if num_classes == len(CLASS_NAMES) else [f"class_{k}" for k in range(num_classes)]
