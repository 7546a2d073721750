"""What the tests share: where the repository and the real data are, small data of known content,
run directories, the SimAM formula written plainly, running a tool in a subprocess, running a saved
program through Paddle Inference, and an operator library that cannot be built.

Data of known content: ``write_cifar_archive`` writes an archive in the official format (pickled
``data_batch_1..5`` and ``test_batch`` inside ``cifar-10-batches-py/`` in a .tar.gz);
``write_image_folder`` a PNG tree. The pixels follow ``known_image``, a pattern that differs per
image, channel, row and column, so that a transposed, flipped or channel-swapped read cannot pass.
``write_learnable_image_folder`` writes images whose classes differ in colour, for short training
runs that must learn something; ``write_learnable_image_list`` lists the same as PaddleClas image lists.

The real CIFAR-10 copy is found through one setting, ``$SIMAM_DATA_DIR`` (default ``../shared/data``
beside the repository, holding ``cifar10-jpeg/``); the ``cifar10_jpeg`` fixture skips, saying so,
where it is absent.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import paddle
import pytest

from simam_paddle.config import load_config, save_config
from simam_paddle.models.from_config import build_from_config
from simam_paddle.run_dir import resolve_classes, save_classes

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SIMAM_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
CIFAR10_JPEG = SHARED_DATA / "cifar10-jpeg"


def require_cifar10_jpeg() -> Path:
    """The real CIFAR-10 image-folder copy (read-only); skips the test, saying so, when it is not on this machine."""
    if not (CIFAR10_JPEG / "train").is_dir():
        pytest.skip(f"real CIFAR-10 copy not found at {CIFAR10_JPEG} (set SIMAM_DATA_DIR to the folder holding cifar10-jpeg/)")
    return CIFAR10_JPEG


def reference_simam(x: np.ndarray, lam: float) -> np.ndarray:
    """The formula as docs/recipe.md states it, in float64 loop-free numpy; H*W == 1 gives e = 0.5."""
    x = x.astype(np.float64)
    hw = x.shape[2] * x.shape[3]
    mu = x.mean(axis=(2, 3), keepdims=True)
    d2 = (x - mu) ** 2
    var = d2.sum(axis=(2, 3), keepdims=True) / (hw - 1) if hw > 1 else np.zeros_like(mu)
    e = d2 / (4 * (var + lam)) + 0.5
    return x / (1 + np.exp(-e))


def paddle_inference(prefix: str | Path, x: np.ndarray, onednn: bool = True, threads: int | None = None) -> np.ndarray:
    """The output of the program ``paddle.jit.save`` wrote at ``prefix`` (PIR: PREFIX.json) for input x."""
    from paddle import inference

    config = inference.Config(f"{prefix}.json", f"{prefix}.pdiparams")
    config.disable_glog_info()
    config.enable_mkldnn() if onednn else config.disable_mkldnn()
    if threads is not None:
        config.set_cpu_math_library_num_threads(threads)
    predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def unbuildable(monkeypatch, module, message: str = "no C++ compiler found (simulated)") -> None:
    """``module.LIBRARY`` (an ``OperatorLibrary``) as a fresh process on a machine where its build fails
    with ``message`` sees it; ``$SIMAM_PADDLE_REQUIRE_KERNEL`` unset."""
    from simam_paddle.native import REQUIRE_ENV

    def fail():
        raise RuntimeError(message)

    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    monkeypatch.setattr(module, "LIBRARY", module.LIBRARY.fresh())
    monkeypatch.setattr(module.LIBRARY, "build_and_load", fail)


def run_tool(tool: str, *args, check: bool = True, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m simam_paddle.<tool> ARGS`` from the repository root, as a user runs it."""
    cmd = [sys.executable, "-m", f"simam_paddle.{tool}", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_train(*args, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_tool("train", *args, check=check, timeout=timeout)


def call_tool(tool: str, *args) -> subprocess.CompletedProcess:
    """``simam_paddle.<tool>.main(ARGS)`` in this process, with its exit code and what it printed: for
    input that a tool refuses before any work, where a process of its own would cost Paddle's import.
    The tool's SIGTERM handler (``cli.run``) is put back afterwards."""
    import contextlib
    import importlib
    import signal

    main = importlib.import_module(f"simam_paddle.{tool}").main
    out, err, handler = io.StringIO(), io.StringIO(), signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        signal.signal(signal.SIGTERM, handler)
    return subprocess.CompletedProcess([tool, *map(str, args)], code, out.getvalue(), err.getvalue())


CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def known_image(n: int, size: int = 32) -> np.ndarray:
    """HWC RGB uint8 image number n: value (7n + 50c + 3y + x) mod 256 at row y, column x, channel c."""
    y, x, c = np.meshgrid(np.arange(size), np.arange(size), np.arange(3), indexing="ij")
    return ((7 * n + 50 * c + 3 * y + x) % 256).astype(np.uint8)


def known_label(n: int) -> int:
    return (3 * n) % 10  # every class once in any 10 consecutive images


def _add_pickle(tar: tarfile.TarFile, name: str, obj) -> None:
    payload = pickle.dumps(obj)
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def cifar_batch(first: int, count: int) -> dict:
    """A batch dict as in the official archive: b'data' uint8 [count, 3072] in CHW order, b'labels'."""
    images = np.stack([known_image(n) for n in range(first, first + count)])
    return {
        b"batch_label": b"tiny batch",
        b"labels": [known_label(n) for n in range(first, first + count)],
        b"data": images.transpose(0, 3, 1, 2).reshape(count, -1),
        b"filenames": [f"img_{n}.png".encode() for n in range(first, first + count)],
    }


def write_cifar_archive(path: Path, per_batch: int = 10, test_count: int = 20, members: dict | None = None) -> dict:
    """Write a tiny cifar-10-python.tar.gz; return the expected {"train"|"test": (images HWC, labels)}.

    Train images are numbers 0 .. 5 * per_batch - 1 (batch k holds the k-th run), test images follow.
    ``members`` replaces or adds members by name (a bytes value is written as is), for broken archives.
    """
    contents = {f"data_batch_{k + 1}": cifar_batch(k * per_batch, per_batch) for k in range(5)}
    contents["test_batch"] = cifar_batch(5 * per_batch, test_count)
    contents["batches.meta"] = {b"label_names": [name.encode() for name in CLASS_NAMES]}
    contents.update(members or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in contents.items():
            if isinstance(obj, bytes):
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(obj)
                tar.addfile(info, io.BytesIO(obj))
            else:
                _add_pickle(tar, f"cifar-10-batches-py/{name}", obj)
    train = range(5 * per_batch)
    test = range(5 * per_batch, 5 * per_batch + test_count)
    return {
        split: (np.stack([known_image(n) for n in ns]), np.array([known_label(n) for n in ns]))
        for split, ns in (("train", train), ("test", test))
    }


def write_image_folder(root: Path, counts: dict[str, int], first: int = 0) -> dict:
    """Write ROOT/<split>/<class>/NNNN.png with known images; return {split: (images, labels)} in the
    order CIFAR label, then file name. Classes are written in reverse order, so that nothing can rely
    on creation order."""
    expected = {}
    n = first
    for split, per_class in counts.items():
        images = {label: [] for label in range(10)}
        for label in reversed(range(10)):
            folder = root / split / CLASS_NAMES[label]
            folder.mkdir(parents=True)
            for k in range(per_class):
                image = known_image(n)
                n += 1
                cv2.imwrite(str(folder / f"{k:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                images[label].append(image)
        expected[split] = (
            np.stack([im for label in range(10) for im in images[label]]),
            np.repeat(np.arange(10), per_class),
        )
    return expected


def write_learnable_image_folder(
    root: Path, train_per_class: int, test_per_class: int, classes: list[str] | None = None, val_folder: str = "test",
    sizes: tuple[int, ...] = (32,),
) -> Path:
    """An image folder (CIFAR-10's classes unless ``classes`` are given; validation in ``val_folder``)
    whose classes differ in colour, so a few steps already learn. Image k of a class is
    ``sizes[k % len(sizes)]`` pixels square (wide by 1.5 times that for odd k when several sizes are given)."""
    rng = np.random.default_rng(0)
    classes = CLASS_NAMES if classes is None else classes
    for split, count in (("train", train_per_class), (val_folder, test_per_class)):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            colour = np.array([k * 25, 255 - k * 25, (k * 70) % 256], dtype=np.float64)
            for i in range(count):
                side = sizes[i % len(sizes)]
                width = side * 3 // 2 if len(sizes) > 1 and i % 2 else side
                image = np.clip(colour + rng.normal(0, 30, (side, width, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    return root


def write_learnable_image_list(root: Path, train_per_class: int, val_per_class: int, classes: list[str]) -> Path:
    """PaddleClas image lists over the images of ``write_learnable_image_folder`` (in ROOT/images/):
    ``train_list.txt`` and ``val_list.txt`` with ``images/<split>/<class>/NNNN.png LABEL`` lines, labels
    in the order of ``classes``, and ``label_list.txt`` naming them (``LABEL NAME`` lines)."""
    write_learnable_image_folder(root / "images", train_per_class, val_per_class, classes=classes, val_folder="val")
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        lines = [f"images/{split}/{name}/{i:04d}.png {label}\n" for label, name in enumerate(classes) for i in range(count)]
        (root / f"{split}_list.txt").write_text("".join(lines))
    (root / "label_list.txt").write_text("".join(f"{label} {name}\n" for label, name in enumerate(classes)))
    return root


def make_run_dir(path: Path, *overrides: str, seed: int = 0, weights: tuple[str, ...] = ("best",)) -> Path:
    """A run directory at ``path`` with random weights of the model that ``overrides`` configure, its
    classes those of its ``data.root`` (CIFAR-10's when it is null), as a training run saves them."""
    config = load_config(None, list(overrides))
    classes = resolve_classes(config)
    path.mkdir(parents=True, exist_ok=True)
    save_config(config, path / "config.yaml")
    save_classes(path, classes)
    paddle.seed(seed)
    model = build_from_config(config)
    for name in weights:
        paddle.save(model.state_dict(), str(path / f"{name}_model.pdparams"))
    return path


ONNX_MISSING = [name for name in ("paddle2onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(
    bool(ONNX_MISSING), reason=f"{' and '.join(ONNX_MISSING)} not installed (pip install -e '.[export]'; CI installs .[dev])"
)
