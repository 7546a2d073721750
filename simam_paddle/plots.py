"""The run's figures: learning curves (as the notebook plotted them) and a grid of predictions."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .data.transforms import MEAN, STD  # noqa: E402
from .io import atomic_savefig  # noqa: E402


def plot_curves(history: dict, path, title: str = "") -> None:
    """Loss (training every N iterations, validation per epoch) and accuracy (train and validation)."""
    it, ep = history["iter_loss"], history["epoch"]
    steps = history["steps_per_epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(it["iter"], it["loss"], lw=0.8, alpha=0.8, label="train (per iteration)")
    ax_loss.plot([e * steps for e in ep["epoch"]], ep["val_loss"], "o-", label="validation (per epoch)")
    ax_loss.set(xlabel="iteration", ylabel="label-smoothing CE loss", title="loss")
    ax_acc.plot(ep["epoch"], ep["train_acc"], "o-", label="train (running, augmented)")
    ax_acc.plot(ep["epoch"], ep["val_acc"], "o-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and iterations are whole: no 0.5 ticks
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def denormalize(image: np.ndarray) -> np.ndarray:
    """CHW normalised float image -> HWC float in [0, 1] for display."""
    return np.clip(image.transpose(1, 2, 0) * np.array(STD) + np.array(MEAN), 0, 1)


def plot_predictions(images: np.ndarray, predicted, truth, class_names, path, cols: int = 6) -> None:
    """A grid of test images titled "pred / true", wrong predictions in red."""
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, rows * 2.0))
    for ax, image, p, t in zip(np.ravel(axes), images, predicted, truth):
        ax.imshow(denormalize(image))
        ax.set_title(f"{class_names[p]}\n({class_names[t]})", fontsize=8, color="black" if p == t else "red")
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle(f"predicted (true) on {len(images)} test images; wrong ones in red")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
