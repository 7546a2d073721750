"""Pictures of SimAM's attention: test images beside the weights that each SimAM layer gives them.

    python -m simam_paddle.visualize PATH [--output DIR] [--num-images 6] [--weights best|final] [-o data.KEY=VALUE]

The input x of every SimAM layer is collected with a forward pre-hook; its weight, sigmoid(e) with
e = (x - mu)^2 / (4 (var + lambda)) + 0.5 (docs/recipe.md; the library's ``simam_weight``), is averaged
over the channels, upsampled to the image (bilinear) and laid over it: bright = weighted up = attended. The weights are
at least sigmoid(0.5) ~= 0.62 everywhere and a channel average varies little, so each panel is
coloured over its own range, printed under it. The images are the run's test images (real ones from
an image-folder ``data.root``, else rendered; see ``data/samples.py``), each row titled with the model's
prediction (and the true class where known). Written as ``attention.png`` (matplotlib, Agg) into
``--output`` (default: the run directory PATH), of exactly ``figure_pixels(images, layers)`` pixels.
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import sys
from pathlib import Path

import cv2
import numpy as np
import paddle
from matplotlib.figure import Figure

from .config import apply_overrides
from .data import sample_images
from .data.transforms import SIZE
from .errors import ArgumentError
from .io import atomic_savefig
from .layers import SimAM
from .layers.simam import simam_weight
from .losses import softmax
from .run_dir import ATTENTION, load_run_model, run_classes

PANEL_INCHES = 1.6
HEADER_INCHES = 0.5  # room for the layer names above the first row
DPI = 100
OVERLAY_ALPHA = 0.55


def attention_maps(model: paddle.nn.Layer, batch: np.ndarray) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """Per SimAM layer (in call order) its name and channel-averaged weights [B, h, w]; and the logits."""
    layers = [(name, layer) for name, layer in model.named_sublayers() if isinstance(layer, SimAM)]
    if not layers:
        raise ArgumentError(f"{type(model).__name__} has no SimAM layer: there is no attention to show")
    names = {id(layer): name for name, layer in layers}
    seen: list[tuple[str, np.ndarray]] = []

    def record(layer, inputs):
        seen.append((names[id(layer)], simam_weight(inputs[0], layer.e_lambda).mean(axis=1).numpy()))

    hooks = [layer.register_forward_pre_hook(record) for _, layer in layers]
    try:
        with paddle.no_grad():
            logits = model(paddle.to_tensor(batch)).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return seen, logits


def figure_pixels(n_images: int, n_layers: int) -> tuple[int, int]:
    """(width, height) in pixels of the figure for ``n_images`` rows and ``n_layers`` SimAM layers."""
    return round((n_layers + 1) * PANEL_INCHES * DPI), round((n_images * PANEL_INCHES + HEADER_INCHES) * DPI)


def draw(images: list[np.ndarray], maps: list[tuple[str, np.ndarray]], titles: list[str]) -> Figure:
    """The figure: a row per image, the image first, then its weights of each layer over it."""
    rows, cols = len(images), len(maps) + 1
    width, height = figure_pixels(rows, len(maps))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=1 - HEADER_INCHES / (height / DPI), wspace=0.05, hspace=0.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, image in enumerate(images):
        shown = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        axes[r, 0].imshow(shown)
        axes[r, 0].set_title(titles[r], fontsize=7)
        for c, (name, weights) in enumerate(maps, start=1):
            w = cv2.resize(weights[r].astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
            lo, hi = float(weights[r].min()), float(weights[r].max())
            axes[r, c].imshow(shown)
            axes[r, c].imshow(w, cmap="jet", alpha=OVERLAY_ALPHA, vmin=lo, vmax=hi if hi > lo else lo + 1e-6)
            axes[r, c].set_title(f"{lo:.3f}-{hi:.3f}", fontsize=6, y=-0.13)
            if r == 0:
                h_, w_ = weights.shape[1:]
                fig.text(
                    axes[0, c].get_position().x0 + axes[0, c].get_position().width / 2,
                    axes[0, c].get_position().y1 + 0.2 * HEADER_INCHES / (height / DPI),
                    f"{name}\n{h_}x{w_}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def visualize(run_dir: str | Path, output: str | Path | None = None, num_images: int = 6, weights: str = "best",
              overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """Write the attention figure of a run as ``attention.png`` into the folder ``output`` (default: the
    run directory); return its path. ``overrides``: ``data.KEY=VALUE`` for the test images."""
    model, config = load_run_model(run_dir, weights)
    apply_overrides(config, overrides)
    samples = sample_images(config, num_images)
    maps, logits = attention_maps(model, samples.batch())
    names = run_classes(run_dir, config)
    probs = softmax(logits)
    titles = []
    for label, p in zip(samples.labels, probs):
        guess = f"pred: {names[int(p.argmax())]} {p.max():.2f}"
        titles.append(guess if label is None else f"true: {names[label]}\n{guess}")
    output = Path(output if output is not None else run_dir) / ATTENTION
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(draw(samples.images, maps, titles), output, dpi=DPI)
    print(f"wrote {output}: {len(samples.images)} images ({samples.source}) x {len(maps)} SimAM layers")
    return output


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("visualize", "Test images beside the attention weights of each SimAM layer, as a PNG.")
    cli.add_path(p)
    cli.add_output(p, f"{ATTENTION} (a PNG)", "PATH")
    p.add_argument("--num-images", type=int, default=6, help="number of test images, one per row (default: 6)")
    cli.add_weights(p)
    cli.add_overrides(p, "a data key of the run, for the test images")

    args = p.parse_args(argv)

    def work() -> None:
        overrides = cli.overrides(args.override, "visualize", ("data",), "the model is shown as it was trained")
        visualize(args.path, args.output, args.num_images, args.weights, overrides)

    return cli.run(work)


if __name__ == "__main__":
    sys.exit(main())
