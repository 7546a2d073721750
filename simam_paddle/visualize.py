"""Pictures of SimAM's attention: images beside the weights that each SimAM layer gives them.

    python -m simam_paddle.visualize PATH [--output DIR] [--num-images 6] [--images FILE ...]
                                     [--layers NAME ... | all] [--weights best|final] [-o data.KEY=VALUE]

The input x of every SimAM layer is collected with a forward pre-hook; its weight, sigmoid(e) with
e = (x - mu)^2 / (4 (var + lambda)) + 0.5 (docs/recipe.md; the library's ``simam_weight``), is averaged
over the channels, upsampled to the image (bilinear) and laid over it: red = weighted up = attended. The
weights are at least sigmoid(0.5) ~= 0.62 everywhere and a channel average varies little, so each panel
is coloured over its own range (the colour bar: that range's low to high), printed under it.

Layers are named as a reader knows them (``layer_names``): AlexNet's ``conv1``..``conv5``, a ResNet's
``layer2.1`` (stage 2, block 1), MobileNetV2's ``block1``..``block17``. ``--layers`` picks some by name;
by default a model with more than ``DEFAULT_LAYERS`` SimAM layers (MobileNetV2's 17, a ResNet-50's 16)
shows that many, evenly spaced from the first to the last, and ``--layers all`` shows every one, an
image's layers wrapping onto rows of their own (at most ``COLUMNS - 1`` a row). The images are the run's test
images (real ones from an image-folder ``data.root``, else rendered; see ``data/samples.py``), or the
files given with ``--images``; each titled with the model's prediction (and the true class where
known). Written as
``attention.png`` (matplotlib, Agg) into ``--output`` (default: the run directory PATH), of exactly
``figure_pixels(images, layers, title lines)`` pixels.
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import argparse
import re
import sys
import textwrap
from pathlib import Path

DEFAULT_LAYERS = 6  # layers shown by default where a model has more
COLUMNS = 9  # panels per row at most: the image and 8 layers; more layers wrap onto the next row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("visualize", "Images beside the attention weights of each SimAM layer, as a PNG.")
    cli.add_path(p)
    cli.add_output(p, "attention.png", "PATH")
    p.add_argument("--num-images", type=int, default=6, help="number of test images, one per row (default: 6)")
    p.add_argument("--images", nargs="+", metavar="FILE", help="your own image files instead of the run's test images")
    p.add_argument("--layers", nargs="+", metavar="NAME",
                   help="the SimAM layers to show, by the names in the figure (conv3, layer2.1, block5), or all "
                        f"(default: all, or {DEFAULT_LAYERS} evenly spaced where there are more)")
    cli.add_weights(p)
    cli.add_overrides(p, "a data key of the run, for the test images")
    return p.parse_args(argv)


cli.answer_early(__name__, parse_args)  # --help, --version: answered before the imports below load Paddle

# isort: split

import cv2
import numpy as np
import paddle
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .config import apply_overrides
from .data import Samples, load_image, sample_images
from .data.transforms import SIZE
from .errors import ArgumentError
from .io import atomic_savefig
from .layers import SimAM
from .layers.simam import simam_weight
from .losses import softmax
from .run_dir import ATTENTION, load_run_model, run_classes

PANEL_INCHES = 1.6
HEADER_INCHES = 0.75  # room for a one-line title and the first row's titles
TITLE_LINE_INCHES = 0.2  # room for each further line of the title, which wraps to the figure's width
TITLE_CHAR_INCHES = 0.085  # the width of a character of the title (10 pt), on average
FOOTER_INCHES = 0.8  # room for the last row's ranges and the colour bar below it
DPI = 100
OVERLAY_ALPHA = 0.55
CMAP = "jet"


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


def layer_names(names: list[str]) -> list[str]:
    """The names a reader knows SimAM layers by, from their names in the model (in call order): a
    ResNet's ``layer2.1.conv2.attn`` is ``layer2.1``, MobileNetV2's ``features.3.conv.1.0.attn`` is
    ``block3``, AlexNet's k-th (``features.1``, ``features.5``, ...) is ``conv<k>``; any other keeps its name."""
    shown = []
    for k, name in enumerate(names, start=1):
        if m := re.match(r"(layer\d+\.\d+)\.", name):
            shown.append(m.group(1))
        elif m := re.match(r"features\.(\d+)\.conv\.", name):
            shown.append(f"block{m.group(1)}")
        elif re.fullmatch(r"features\.\d+", name):
            shown.append(f"conv{k}")
        else:
            shown.append(name)
    return shown


def choose_layers(available: list[str], wanted: list[str] | None) -> list[str]:
    """The layers to show: ``wanted`` (names of ``available``, or ``["all"]``), else every one, or
    DEFAULT_LAYERS evenly spaced from the first to the last where there are more."""
    if wanted == ["all"] or (wanted is None and len(available) <= DEFAULT_LAYERS):
        return list(available)
    if wanted is None:
        return [available[i] for i in np.linspace(0, len(available) - 1, DEFAULT_LAYERS).round().astype(int)]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ArgumentError(f"--layers {' '.join(unknown)}: no such SimAM layer in this model; its layers are "
                            f"{' '.join(available)} (or all)")
    return [name for name in available if name in wanted]


def grid(n_images: int, n_layers: int) -> tuple[int, int]:
    """(rows per image, columns) of the figure: the image in the first column, its layers beside it, on
    as few rows as hold COLUMNS - 1 each, spread evenly over them (17 layers: 6, 6, 5); the first column
    of the further rows stays empty."""
    rows = -(-n_layers // (COLUMNS - 1))
    return rows, -(-n_layers // rows) + 1


def figure_pixels(n_images: int, n_layers: int, title_lines: int = 1) -> tuple[int, int]:
    """(width, height) in pixels of the figure for ``n_images`` images, ``n_layers`` SimAM layers and a
    title of ``title_lines`` lines."""
    rows, cols = grid(n_images, n_layers)
    header = HEADER_INCHES + (title_lines - 1) * TITLE_LINE_INCHES
    return round(cols * PANEL_INCHES * DPI), round((n_images * rows * PANEL_INCHES + header + FOOTER_INCHES) * DPI)


def title_lines(title: str, n_layers: int) -> list[str]:
    """``title`` wrapped to the width of the figure of ``n_layers`` layers."""
    return textwrap.wrap(title, width=int(grid(1, n_layers)[1] * PANEL_INCHES / TITLE_CHAR_INCHES))


def draw(images: list[np.ndarray], maps: list[tuple[str, np.ndarray]], titles: list[str], title: str) -> Figure:
    """The figure: per image its picture, then its weights of each layer over it, with ``title`` above and
    the colour bar below."""
    per_image, cols = grid(len(images), len(maps))
    lines = title_lines(title, len(maps))
    width, height = figure_pixels(len(images), len(maps), len(lines))
    header = HEADER_INCHES + (len(lines) - 1) * TITLE_LINE_INCHES
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=FOOTER_INCHES * DPI / height,
                        top=1 - header * DPI / height, wspace=0.06, hspace=0.5)
    axes = fig.subplots(len(images) * per_image, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        first = i * per_image
        shown = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        axes[first, 0].imshow(shown)
        axes[first, 0].set_title(titles[i], fontsize=8)
        panels = [axes[first + k // (cols - 1), 1 + k % (cols - 1)] for k in range(len(maps))]
        for ax, (name, weights) in zip(panels, maps):
            w = cv2.resize(weights[i].astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
            lo, hi = float(weights[i].min()), float(weights[i].max())
            ax.imshow(shown)
            ax.imshow(w, cmap=CMAP, alpha=OVERLAY_ALPHA, vmin=lo, vmax=hi if hi > lo else lo + 1e-6)
            h_, w_ = weights.shape[1:]
            ax.set_title(f"{name} ({h_}x{w_})", fontsize=8)
            ax.text(0.5, -0.04, f"{lo:.3f} - {hi:.3f}", transform=ax.transAxes, ha="center", va="top", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    inch = DPI / height  # one inch, as a fraction of the figure's height
    fig.suptitle("\n".join(lines), fontsize=10, y=1 - 0.08 * inch, va="top")
    bar = fig.add_axes((0.35, 0.42 * inch, 0.3, 0.12 * inch))
    scale = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=CMAP), cax=bar, orientation="horizontal")
    scale.set_ticks([0, 1], labels=["low", "high"], fontsize=7)
    fig.text(0.5, 0.06 * inch, "SimAM weight (channel mean), over each panel's range",
             ha="center", va="bottom", fontsize=7)
    return fig


def own_images(files: list[str], size: int) -> Samples:
    """The image files a user gives (``--images``), for the model's input ``size``."""
    return Samples([load_image(f) for f in files], [None] * len(files), [Path(f).name for f in files],
                   f"{len(files)} given image(s)", size)


def visualize(run_dir: str | Path, output: str | Path | None = None, num_images: int = 6, weights: str = "best",
              overrides: list[str] | tuple[str, ...] = (), images: list[str] | None = None,
              layers: list[str] | None = None) -> Path:
    """Write the attention figure of a run as ``attention.png`` into the folder ``output`` (default: the
    run directory); return its path. ``overrides``: ``data.KEY=VALUE`` for the test images; ``images``:
    image files to show instead; ``layers``: the layers to show by name, or ``["all"]`` (``choose_layers``)."""
    model, config = load_run_model(run_dir, weights)
    apply_overrides(config, overrides)
    samples = own_images(images, config["data"]["image_size"]) if images else sample_images(config, num_images)
    maps, logits = attention_maps(model, samples.batch())
    maps = list(zip(layer_names([name for name, _ in maps]), (m for _, m in maps)))
    chosen = choose_layers([name for name, _ in maps], layers)
    shown = f"all {len(maps)}" if len(chosen) == len(maps) else f"{len(chosen)} of its {len(maps)}"
    maps = [(name, m) for name, m in maps if name in chosen]
    names = run_classes(run_dir, config)
    probs = softmax(logits)
    titles = []
    for label, file, p in zip(samples.labels, samples.names, probs):
        guess = f"pred: {names[int(p.argmax())]} {p.max():.2f}"
        titles.append(f"{file}\n{guess}" if images else guess if label is None else f"true: {names[label]}\n{guess}")
    title = (f"SimAM attention of {config['model']['name']} ({weights} weights of the run {Path(run_dir).name}), "
             f"{shown} SimAM layers")
    output = Path(output if output is not None else run_dir) / ATTENTION
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(draw(samples.images, maps, titles, title), output, dpi=DPI)
    print(f"wrote {output}: {len(samples.images)} images ({samples.source}) x {len(maps)} SimAM layers")
    return output


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> None:
        overrides = cli.overrides(args.override, "visualize", ("data",), "the model is shown as it was trained")
        visualize(args.path, args.output, args.num_images, args.weights, overrides, args.images, args.layers)

    return cli.run(work)


if __name__ == "__main__":
    sys.exit(main())
