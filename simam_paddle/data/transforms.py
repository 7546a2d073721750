"""The notebook's image transforms (docs/recipe.md, "Data"), and a fast train pipeline with the same distributions.

Inputs are HWC RGB uint8 numpy images (Paddle's cv2 backend); outputs are float32 CHW [3, S, S],
normalised with the ImageNet mean and std of the recipe. S is ``data.image_size``, 128 in the recipe;
for another S every size of the recipe is scaled by S / 128: the train pipeline resizes to
``resize_size(S)`` (130 for 128, 228 for 224) before cropping S x S, and the test pipeline resizes to S.

``recipe`` is the notebook's train pipeline built from ``paddle.vision.transforms``, step for step:
Resize 130, ColorJitter(0.2, 0.2, 0.2), RandomResizedCrop(128, scale=(0.6, 1.0)), RandomHorizontalFlip,
RandomRotation(20), then ToTensor and Normalize (``NormalizeToCHW``: bit-identical to Paddle's two
steps, and cheaper). The notebook's PaddleX ``MixupImage`` step sat between the jitter and the crop and
returned its input unchanged (docs/recipe.md), so it is left out. The random steps draw from Python's
``random`` and NumPy's global RNG, as Paddle's transforms do.

Paddle 3.3's cv2 colour functions behave differently from their PIL twins, and the recipe keeps that:
contrast is stretched around the fixed grey level 74 (not the image mean); saturation draws a second
factor uniformly from [1 - s, 1 + s] where s is the jitter's own draw from [0.8, 1.2], so the blend
weight spreads over about [0, 2.2] instead of [0.8, 1.2]; and its grey level weighs the channels as if
they were BGR. Every step rounds down to uint8.

``fast`` (``FastTrainTransform``) draws the same random parameters from the same distributions and
applies them with far less work per image: the colour jitter runs on the 32x32 source instead of the
130x130 resize, vectorised over the batch (brightness, contrast and saturation act on each pixel alone,
so they commute with resizing up to rounding), and normalisation happens there too (a linear map, so it
commutes with resizing), so the geometry (the same bilinear resize to 130, crop, bilinear resize to
128, then flip and rotation fused into one nearest-neighbour warp with black corners, as in the recipe)
runs on float32 in preallocated buffers and writes the normalised output directly. Its random draws
come from a ``numpy.random.Generator`` passed in, not from global state. Left out: the rounding to uint8
after each resize.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import paddle.vision.transforms as T

from ..models import IMAGENET_MEAN as MEAN  # the normalisation in every model's record (simam_paddle.models)
from ..models import IMAGENET_STD as STD

RESIZE = 130  # the recipe resizes to 130x130 before cropping 128x128
SIZE = 128  # the recipe's image size; data.image_size chooses another
JITTER = 0.2  # brightness, contrast and saturation
CROP_SCALE = (0.6, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)  # Paddle's RandomResizedCrop default, used by the recipe
FLIP_PROB = 0.5
DEGREES = 20.0
CONTRAST_PIVOT = 74.0  # Paddle's cv2 adjust_contrast stretches around this grey level
GREY_WEIGHTS = np.array([0.114, 0.587, 0.299], dtype=np.float32)  # cv2 BGR2GRAY applied to RGB data


class NormalizeToCHW:
    """Paddle's ``ToTensor`` then ``Normalize(MEAN, STD)`` on a uint8 HWC image, as float32 CHW numpy.

    A 256-entry table per channel holds ``(v / 255 - mean) / std`` computed in float32 as Paddle does,
    so the result is bit-identical to Paddle's two steps at a fifth of their cost.
    """

    def __init__(self) -> None:
        levels = np.arange(256, dtype=np.float32)[:, None] / np.float32(255.0)
        self.table = ((levels - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)[None]  # [1, 256, 3]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HWC RGB uint8 image, got {image.dtype} {list(image.shape)}")
        return np.ascontiguousarray(cv2.LUT(image, self.table).transpose(2, 0, 1))


def resize_size(size: int = SIZE) -> int:
    """The size the train pipeline resizes to before cropping ``size``: the recipe's 130 for 128, scaled."""
    return int(math.floor(size * RESIZE / SIZE + 0.5))


def build_recipe_train_transform(size: int = SIZE) -> Callable[[np.ndarray], np.ndarray]:
    """The notebook's train pipeline (without its no-op MixupImage): HWC uint8 -> float32 [3, size, size]."""
    return T.Compose(
        [
            T.Resize((resize_size(size), resize_size(size))),
            T.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
            T.RandomResizedCrop(size, scale=CROP_SCALE),
            T.RandomHorizontalFlip(FLIP_PROB),
            T.RandomRotation(DEGREES),
            NormalizeToCHW(),
        ]
    )


def build_test_transform(size: int = SIZE) -> Callable[[np.ndarray], np.ndarray]:
    """The notebook's test pipeline: Resize to size x size, ToTensor, Normalize; HWC uint8 -> float32 [3, size, size]."""
    return T.Compose([T.Resize((size, size)), NormalizeToCHW()])


# Every order in which ColorJitter can apply its three operations (0 brightness, 1 contrast, 2 saturation).
JITTER_ORDERS = np.array([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]], dtype=np.int8)

PARAMS = np.dtype(
    [
        ("order", np.int8),  # row of JITTER_ORDERS
        ("brightness", np.float32),
        ("contrast", np.float32),
        ("saturation", np.float32),  # the blend weight after Paddle's second draw
        ("top", np.int32),
        ("left", np.int32),
        ("height", np.int32),
        ("width", np.int32),
        ("flip", np.bool_),
        ("angle", np.float64),  # degrees, counter-clockwise as cv2.getRotationMatrix2D
    ]
)


def _brightness(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(x * factor, 0, 255))


def _contrast(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    return np.floor(np.clip((x - CONTRAST_PIVOT) * factor + CONTRAST_PIVOT, 0, 255))


def _saturation(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    grey = (x @ GREY_WEIGHTS)[..., None]
    return np.floor(np.clip(x * weight + grey * (1 - weight), 0, 255))


class FastTrainTransform:
    """The recipe's train augmentation with less work per image, vectorised over a batch.

    ``draw(rng, n)`` draws the random parameters of n images (a structured array of ``PARAMS``) from
    the recipe's distributions; ``apply(images, params)`` turns uint8 [B, H, W, 3] into float32
    [B, 3, size, size]. Calling it on one image draws from NumPy's global RNG.
    """

    def __init__(self, size: int = SIZE) -> None:
        self.size, self.resize = size, resize_size(size)
        self.table = NormalizeToCHW().table  # the recipe's normalisation of each uint8 level
        self.fill = tuple(float(v) for v in self.table[0, 0])  # a black pixel, normalised

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        params = np.zeros(n, dtype=PARAMS)
        params["order"] = rng.integers(0, len(JITTER_ORDERS), n)
        params["brightness"] = rng.uniform(1 - JITTER, 1 + JITTER, n)
        params["contrast"] = rng.uniform(1 - JITTER, 1 + JITTER, n)
        factor = rng.uniform(1 - JITTER, 1 + JITTER, n)
        params["saturation"] = rng.uniform(np.maximum(0.0, 1 - factor), 1 + factor)
        params["top"], params["left"], params["height"], params["width"] = self._draw_crops(rng, n)
        params["flip"] = rng.random(n) < FLIP_PROB
        params["angle"] = rng.uniform(-DEGREES, DEGREES, n)
        return params

    def _draw_crops(self, rng: np.random.Generator, n: int, attempts: int = 10):
        """Paddle's RandomResizedCrop: up to 10 tries for a box inside the image, else the whole image."""
        full = self.resize  # the size resized to before cropping
        area = rng.uniform(*CROP_SCALE, (n, attempts)) * full * full
        aspect = np.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), (n, attempts)))
        w = np.round(np.sqrt(area * aspect)).astype(np.int64)
        h = np.round(np.sqrt(area / aspect)).astype(np.int64)
        ok = (w > 0) & (w <= full) & (h > 0) & (h <= full)
        first = ok.argmax(axis=1)
        found = ok.any(axis=1)
        rows = np.arange(n)
        h = np.where(found, h[rows, first], full)
        w = np.where(found, w[rows, first], full)
        top = rng.integers(0, full - h + 1)
        left = rng.integers(0, full - w + 1)
        return top, left, h, w

    def _rotations(self, params: np.ndarray) -> np.ndarray:
        """Affine maps [B, 2, 3] of the S x S crop: horizontal flip, then rotation about (S / 2, S / 2).

        Paddle's rotate uses cv2.getRotationMatrix2D about (w / 2, h / 2); a flip is x -> S - 1 - x.
        """
        size = self.size
        n = len(params)
        flip = np.tile(np.eye(3), (n, 1, 1))
        flip[params["flip"], 0, 0] = -1
        flip[params["flip"], 0, 2] = size - 1
        theta = np.radians(params["angle"])
        cos, sin, centre = np.cos(theta), np.sin(theta), size / 2
        rotate = np.zeros((n, 3, 3))
        rotate[:, 0, 0], rotate[:, 0, 1], rotate[:, 0, 2] = cos, sin, (1 - cos) * centre - sin * centre
        rotate[:, 1, 0], rotate[:, 1, 1], rotate[:, 1, 2] = -sin, cos, sin * centre + (1 - cos) * centre
        rotate[:, 2, 2] = 1
        return (rotate @ flip)[:, :2]

    def jitter(self, images: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Brightness, contrast and saturation, each image in its own order: whole levels 0..255 as float32."""
        x = images.astype(np.float32)
        factors = [params[k].astype(np.float32)[:, None, None, None] for k in ("brightness", "contrast", "saturation")]
        orders = JITTER_ORDERS[params["order"]]
        for step in range(orders.shape[1]):
            for op, fn in enumerate((_brightness, _contrast, _saturation)):
                chosen = np.flatnonzero(orders[:, step] == op)
                if chosen.size:
                    x[chosen] = fn(x[chosen], factors[op][chosen])
        return x

    def apply(self, images: np.ndarray, params: np.ndarray) -> np.ndarray:
        size, full = self.size, self.resize
        levels = self.jitter(images, params).astype(np.uint8)
        x = cv2.LUT(levels.reshape(-1, *levels.shape[2:]), self.table).reshape(levels.shape)  # normalised
        rotations = self._rotations(params)
        out = np.empty((len(x), 3, size, size), dtype=np.float32)
        big = np.empty((full, full, 3), dtype=np.float32)
        crop = np.empty((size, size, 3), dtype=np.float32)
        turned = np.empty((size, size, 3), dtype=np.float32)
        for b, p in enumerate(params):
            top, left = p["top"], p["left"]
            cv2.resize(x[b], (full, full), dst=big, interpolation=cv2.INTER_LINEAR)
            region = big[top : top + p["height"], left : left + p["width"]]
            cv2.resize(region, (size, size), dst=crop, interpolation=cv2.INTER_LINEAR)
            cv2.warpAffine(
                crop, rotations[b], (size, size), dst=turned,
                flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=self.fill,
            )
            out[b] = turned.transpose(2, 0, 1)
        return out

    def __call__(self, image: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(np.random.randint(0, 2**32, size=4))
        return self.apply(image[None], self.draw(rng, 1))[0]


TRAIN_TRANSFORMS: dict[str, Callable[[int], Callable[[np.ndarray], np.ndarray]]] = {
    "recipe": build_recipe_train_transform,
    "fast": FastTrainTransform,
    "none": build_test_transform,  # no augmentation (for exact comparisons, e.g. tests/test_distributed.py)
}


def build_train_transform(name: str, size: int = SIZE) -> Callable[[np.ndarray], np.ndarray]:
    """The train pipeline called ``name`` in the config: "recipe", "fast" or "none" (the test pipeline),
    for ``size`` x ``size`` outputs."""
    if name not in TRAIN_TRANSFORMS:
        raise ValueError(f"unknown train_transforms {name!r}; choose one of {', '.join(TRAIN_TRANSFORMS)}")
    return TRAIN_TRANSFORMS[name](size)


def first_resize(name: str | None, size: int = SIZE) -> int:
    """The size the train pipeline ``name`` (None: the test pipeline) resizes its input to, first."""
    return size if name in (None, "none") else resize_size(size)
