"""The experiment's data: sources (CIFAR-10, or an image folder of any classes), the recipe's transforms
and a fast twin, batch Mixup, loaders, and a few test images for checks and figures.

The facts these encode are in docs/recipe.md ("Data"); each module's docstring says how. The data
settings are validated by the config schema (``simam_paddle.config``) only: the functions here take a
validated config.
"""

from .loaders import CifarDataset, build_dataset, build_loader, evenly_spaced_images, set_loader_epoch, worker_count
from .mixup import Mixup
from .samples import Samples, class_names, preprocess, sample_images
from .sources import CLASS_NAMES, Source, classes_of, load_image, load_split, resolve_source
from .transforms import FastTrainTransform, build_recipe_train_transform, build_test_transform, build_train_transform

__all__ = [
    "CLASS_NAMES",
    "CifarDataset",
    "FastTrainTransform",
    "Mixup",
    "Samples",
    "Source",
    "build_dataset",
    "build_loader",
    "build_recipe_train_transform",
    "build_test_transform",
    "build_train_transform",
    "class_names",
    "classes_of",
    "evenly_spaced_images",
    "load_image",
    "worker_count",
    "load_split",
    "preprocess",
    "resolve_source",
    "sample_images",
    "set_loader_epoch",
]
