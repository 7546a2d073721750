"""Classification figures of an evaluation: top-1, top-5, per-class accuracy, the confusion matrix and
its picture ``confusion.png``, and the file ``evaluation.json`` that holds them all.

- The confusion matrix counts images by (true class, predicted class): row = true label, column =
  the arg-max of the logits (the first of equal maxima, as ``argmax`` takes it). Top-1 is its trace
  over its sum; the accuracy of class c is its diagonal entry over its row sum (no images: None).
- Top-5: the share of images whose true class is among the 5 largest logits (of equal logits, the
  lower class index ranks first). Reported only with more than ``TOP_K`` classes: with 5 or fewer,
  every class is in the top 5 and the figure is 1.0 whatever the model does.
- The picture: each row normalised by its class's images (the colour is the share of class c's
  images predicted as each class, on a square-root scale; a colour bar says so), counts written in the cells up to
  ``ANNOTATE_MAX`` classes; beyond that the cells are too small for text, and the figure grows with
  the number of classes so that every class keeps its label (a longer name than ``LABEL_CHARS`` shown by its start and end), up to
  ``NAMED_MAX`` classes; beyond, the matrix keeps a fixed size and its axes give class indices.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .io import atomic_savefig, atomic_write_json
from .layers.messages import listed

TOP_K = 5
ANNOTATE_MAX = 20  # classes up to which the picture writes each cell's count
NAMED_MAX = 150  # classes up to which the picture labels every class by name (beyond: indices, a fixed size)
LABEL_CHARS = 24  # a longer class name is cut to this many characters in the picture
LARGE_SIDE = 22.0  # inches of the matrix beyond NAMED_MAX classes
PRINT_ALL_MAX = 20  # classes up to which the report prints every class's accuracy (else the lowest PRINT_LOWEST)
PRINT_LOWEST = 10
CONFUSION_FILE = "confusion.png"
EVALUATION_FILE = "evaluation.json"


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts int64 [num_classes, num_classes]: entry (t, p) = images of true class t predicted as p."""
    labels, predicted = np.asarray(labels, np.int64).ravel(), np.asarray(predicted, np.int64).ravel()
    return np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def top_k_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows of ``logits`` [N, C] have their label among their ``k`` largest values: fewer than ``k``
    classes rank ahead of it, a larger logit, or an equal one of a lower class index."""
    logits, labels = np.asarray(logits), np.asarray(labels, np.int64).ravel()
    own = logits[np.arange(len(labels)), labels][:, None]
    lower = np.arange(logits.shape[1])[None, :] < labels[:, None]
    ahead = (logits > own).sum(axis=1) + ((logits == own) & lower).sum(axis=1)
    return int((ahead < k).sum())


class Tally:
    """Running confusion matrix and top-5 hits over batches of (logits [N, C], labels [N])."""

    def __init__(self):
        self.confusion: np.ndarray | None = None
        self.top_k_hits = 0

    def add(self, logits: np.ndarray, labels: np.ndarray) -> None:
        logits = np.asarray(logits)
        counts = confusion_matrix(labels, logits.argmax(axis=1), logits.shape[1])
        self.confusion = counts if self.confusion is None else self.confusion + counts
        self.top_k_hits += top_k_hits(logits, labels, TOP_K)


def evaluation_figures(confusion: np.ndarray, top_k_correct: int, class_names: list[str]) -> dict:
    """The figures of an evaluation from its confusion matrix and top-5 hits (see the module docstring)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    if len(class_names) != len(confusion):
        raise ValueError(f"{len(class_names)} class names for a {len(confusion)}-class confusion matrix")
    total = int(confusion.sum())
    rows = confusion.sum(axis=1)
    per_class = {name: {"images": int(rows[c]), "correct": int(confusion[c, c]),
                        "acc": float(confusion[c, c] / rows[c]) if rows[c] else None}
                 for c, name in enumerate(class_names)}
    top5 = top_k_correct / total if len(class_names) > TOP_K else None
    return {
        "images": total,
        "top1": float(np.trace(confusion) / total),
        "top5": top5,
        "top5_note": None if top5 is not None else
        f"top-5 is not reported: with {len(class_names)} classes (5 or fewer) every class is in the top 5",
        "class_names": list(class_names),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def report(figures: dict) -> str:
    """The figures as lines for a person: top-1, top-5 (or why not), and the per-class accuracies (all
    up to PRINT_ALL_MAX classes, else the PRINT_LOWEST lowest)."""
    lines = [f"  top-1 {figures['top1']:.4f}" + (f"  top-5 {figures['top5']:.4f}" if figures["top5"] is not None
                                                  else f"  ({figures['top5_note']})")]
    per_class = list(figures["per_class"].items())
    shown = per_class
    if len(per_class) > PRINT_ALL_MAX:
        shown = sorted((item for item in per_class if item[1]["acc"] is not None), key=lambda item: item[1]["acc"])
        shown = shown[:PRINT_LOWEST]
        lines.append(f"  per-class accuracy, the {len(shown)} lowest of {len(per_class)} classes "
                     f"(all in {EVALUATION_FILE}):")
    else:
        lines.append("  per-class accuracy:")
    width = max(len(name) for name, _ in shown) if shown else 0
    for name, row in shown:
        acc = f"{row['acc']:.4f}" if row["acc"] is not None else "  -   "
        lines.append(f"    {name:<{width}}  {acc}  ({row['correct']}/{row['images']})")
    empty = [name for name, row in per_class if not row["images"]]
    if empty:
        lines.append(f"  no test images of {len(empty)} class(es): {listed(empty, 8)}")
    return "\n".join(lines)


def plot_confusion(figures: dict, path: str | Path, title: str) -> None:
    """``confusion.png``: the row-normalised confusion matrix (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    confusion = np.asarray(figures["confusion"], dtype=np.float64)
    names = figures["class_names"]
    n = len(names)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    named = n <= NAMED_MAX
    head = LABEL_CHARS * 2 // 3  # a long name keeps its start and its end, which tell numbered names apart
    labels = [name if len(name) <= LABEL_CHARS else name[:head] + "…" + name[head + 1 - LABEL_CHARS:] for name in names]
    cell = 0.5 if n <= ANNOTATE_MAX else 0.16  # inches per class: room for a count, or for a label
    side = max(5.0, n * cell) if named else LARGE_SIDE
    label_size = 9 if n <= ANNOTATE_MAX else 6.5
    longest = max(len(label) for label in labels) if named else len(str(n))
    margin = 0.8 + longest * label_size / 72 * 0.6  # the class names beside and under the matrix
    fig, ax = plt.subplots(figsize=(side + margin + 1.4, side + margin + 0.8))
    # a square-root colour scale, so that the few-percent confusions off the diagonal show
    image = ax.imshow(share, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
    if named:
        ticks, tick_labels = range(n), labels
    else:  # too many classes for a label each: their indices, every `step`
        step = 10 * math.ceil(n / 200)  # about 20 labelled indices
        ticks = range(0, n, step)
        tick_labels = [str(k) for k in ticks]
    ax.set_xticks(ticks, tick_labels, rotation=90 if longest > 4 else 0, fontsize=label_size)
    ax.set_yticks(ticks, tick_labels, fontsize=label_size)
    which = "" if named else f" (class index; the names are in {EVALUATION_FILE})"
    ax.set_xlabel("predicted class" + which)
    ax.set_ylabel("true class" + which)
    if n <= ANNOTATE_MAX:
        for t in range(n):
            for p in range(n):
                if confusion[t, p]:
                    ax.text(p, t, f"{int(confusion[t, p])}", ha="center", va="center", fontsize=10 if n <= 10 else 8,
                            color="white" if share[t, p] > 0.4 else "black")
    else:  # a faint grid every 10 classes (or every labelled index), to follow rows and columns
        for k in range(10, n, 10) if named else ticks[1:]:
            ax.axhline(k - 0.5, color="grey", lw=0.4, alpha=0.6)
            ax.axvline(k - 0.5, color="grey", lw=0.4, alpha=0.6)
    counts = "counts in the cells; " if n <= ANNOTATE_MAX else ""
    top5 = f", top-5 {figures['top5']:.4f}" if figures["top5"] is not None else ""
    ax.set_title(f"{title}\n{figures['images']} test images, top-1 {figures['top1']:.4f}{top5}; "
                 f"{counts}colour: share of the true class", fontsize=10 if n <= ANNOTATE_MAX else 13)
    bar = fig.colorbar(image, ax=ax, fraction=0.046 if n <= ANNOTATE_MAX else 0.02, pad=0.02)
    bar.set_ticks([0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1])
    bar.set_label("share of the true class's images (square-root scale)")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def save_evaluation(figures: dict, folder: str | Path, title: str, about: dict) -> list[Path]:
    """Write ``evaluation.json`` (``about``: what was evaluated, on which data, then the figures) and
    ``confusion.png`` into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / EVALUATION_FILE, {**about, **figures})
    plot_confusion(figures, folder / CONFUSION_FILE, title)
    return [folder / EVALUATION_FILE, folder / CONFUSION_FILE]
