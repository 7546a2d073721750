"""CIFAR-10 for the experiment: sources, the recipe's transforms and a fast twin, batch Mixup, loaders.

See RECIPE.md ("Data") for the facts these encode; each module's docstring says how.
"""

from .loaders import DATA_DEFAULTS, CifarDataset, build_dataset, build_loaders, sample_images, set_loader_epoch
from .mixup import Mixup
from .sources import CLASS_NAMES, load_image, load_split
from .transforms import FastTrainTransform, build_recipe_train_transform, build_test_transform, build_train_transform

__all__ = [
    "CLASS_NAMES",
    "DATA_DEFAULTS",
    "CifarDataset",
    "FastTrainTransform",
    "Mixup",
    "build_dataset",
    "build_loaders",
    "build_recipe_train_transform",
    "build_test_transform",
    "build_train_transform",
    "load_image",
    "load_split",
    "sample_images",
    "set_loader_epoch",
]
