"""Export a trained run for deployment, Paddle Inference or ONNX, checked against the run's own model.

    python -m simam_paddle.export PATH --format paddle|onnx [--weights best|final] [--output DIR] [--overwrite]
                                  [--num-images 16] [--tolerance 1e-4] [--program auto|simam_op|standard]
                                  [-o data.KEY=VALUE]

PATH is a run directory; ``-o`` sets the data keys of its config that the check's test images come
from (``data.root``, when the run's data has moved).

Writes (default ``RUN_DIR/export/<format>/``):

    paddle   model.json + model.pdiparams    paddle.jit.save (for paddle.inference), input "image"
             model_simam_op.json             the same model with SimAM as one operator (SimAM models)
    onnx     model.onnx                      paddle2onnx (opset 13), for onnxruntime and others
    both     export.json                     model, weights, class names, input and preprocessing, the check

A Paddle export of a model with SimAM holds two programs with the same weights (model.pdiparams):
``model.json`` in standard Paddle operators, which any Paddle Inference runs (CPU, GPU, TensorRT, C++),
and ``model_simam_op.json``, where each SimAM (with the ReLU and max-pool after it) is the
``simam_deploy`` operator of this package (``simam_paddle.layers.simam_deploy``): CPU only, in a process
that has loaded its library, and the fast one there (BENCHMARKS.md, "Deployment"). It is written
where the library builds (``--program auto``, the default), always (``simam_op``: an error where it
does not build) or never (``standard``); ``simam_paddle.runner.paddle_runner`` runs it where it
can and ``model.json`` elsewhere.

The input is a float32 batch [N, 3, S, S] with any N (S = the run's ``data.image_size``, 128 in the
recipe), images prepared as by ``simam_paddle.data.build_test_transform``; the output is the logits
[N, num_classes], in the order of the run's class names (export.json).

Every export is checked before it is put in place: test images (real ones from ``data.root`` when it
is an image folder, else rendered ones; the message says which) go through the dynamic-graph model
and through the export (paddle.inference, or onnxruntime), as one batch and as a batch of one; the
largest absolute difference of the logits must be <= 1e-4 (``--tolerance``), for each program of a
Paddle export. The result is printed and stored in export.json. The bound is absolute, made for
trained models, whose logits stay small: a model with logits in the hundreds (an untrained
ResNet-50) differs from itself in float64 by more than that through float32 rounding alone, and
needs a looser ``--tolerance``. A failed export or check
leaves nothing behind and exits non-zero; an existing export is replaced only with ``--overwrite``,
and stays in place until the new one is complete.

The export's engines, and ``open_model`` that predict, evaluate and the benchmarks run exports with,
are ``simam_paddle.runner``. The ONNX file is optimised by onnxruntime's basic, runtime-independent
graph optimisations (constant folding, redundant nodes) instead of paddle2onnx's default Polygraphy
step, which pip-installs packages at export time: export needs no network and installs nothing.
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

TOLERANCE = 1e-4  # largest allowed |logit difference| between the export and the dynamic-graph model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("export", "Export a trained run for Paddle Inference or ONNX, checked against the run's model on test images.")
    cli.add_path(p)
    p.add_argument("--format", required=True, choices=("paddle", "onnx"),  # runner.FORMATS
                   help="paddle: paddle.jit.save for paddle.inference; onnx: via paddle2onnx")
    cli.add_weights(p)
    cli.add_output(p, "the export", "PATH/export/<format>")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export at --output")
    p.add_argument("--num-images", type=int, default=16, help="test images for the check (default: 16)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"largest allowed |logit difference| (default: {TOLERANCE:g})")
    p.add_argument("--program", choices=("auto", "simam_op", "standard"), default="auto",  # runner.PROGRAMS
                   help="paddle format: also write model_simam_op.json (SimAM as one operator) where it builds (auto, "
                        "the default), always (simam_op), or only model.json (standard)")
    cli.add_overrides(p, "a data key of the run, for the check's test images")
    return p.parse_args(argv)


cli.answer_early(__name__, parse_args)  # --help, --version: answered before the imports below load Paddle

# isort: split

import numpy as np
import paddle

from .config import apply_overrides
from .data import sample_images
from .data.transforms import MEAN, STD
from .errors import ArgumentError, ExportError
from .io import atomic_write_json, hold_lock, release_lock, remove_temp_files
from .layers import simam_deploy
from .layers.simam import SimAM, deploy_operator
from .native.library import captured_output
from .run_dir import EXPORT, WEIGHTS, load_run_model, run_classes
from .runner import (
    FORMATS,
    META_FILE,
    ONNX_FILE,
    PARAMS_FILE,
    PROGRAMS,
    SIMAM_OP_PREFIX,
    Runner,
    export_runner,
    program_file,
    require_onnx,
    simam_op_program,
)

ONNX_OPSET = 13
INPUT_NAME = "image"


def preprocessing(size: int) -> str:
    """How an input image is prepared, in words, for export.json."""
    return (f"simam_paddle.data.build_test_transform: RGB uint8 HWC -> resize to {size}x{size}, scale to [0, 1], "
            f"normalise with mean {MEAN} and std {STD}, CHW float32")


# paddle2onnx's graph optimiser: "None" skips its default, Polygraphy, which sets
# POLYGRAPHY_AUTOINSTALL_DEPS=1 and pip-installs onnx_graphsurgeon and sympy on first use;
# onnxruntime's basic optimisations take its place (_optimize_onnx).
ONNX_OPTIMIZE_TOOL = "None"


def _jit_save(model: paddle.nn.Layer, prefix: Path, size: int) -> Path:
    spec = [paddle.static.InputSpec([None, 3, size, size], "float32", INPUT_NAME)]
    paddle.jit.save(model, str(prefix), input_spec=spec)
    return program_file(prefix.parent, prefix.name)


def has_simam(model: paddle.nn.Layer) -> bool:
    return any(isinstance(layer, SimAM) for layer in model.sublayers(include_self=True))


def write_paddle(model: paddle.nn.Layer, folder: Path, size: int, program: str = "auto") -> None:
    """model.json + model.pdiparams, and with SimAM in the model model_simam_op.json: for ``program``
    "auto" where the SimAM deployment operator is available, for "simam_op" always (an ArgumentError
    where it is not), for "standard" never."""
    if program not in PROGRAMS:
        raise ArgumentError(f"unknown program {program!r}; expected one of {', '.join(PROGRAMS)}")
    if program == "simam_op" and not has_simam(model):
        raise ArgumentError("--program simam_op: the model has no SimAM layer to write as the SimAM operator")
    if program == "simam_op" and not simam_deploy.prepare():
        raise ArgumentError(f"--program simam_op: the SimAM deployment operator is unavailable: {simam_deploy.status()['error']}")
    _jit_save(model, folder / "model", size)
    if program == "standard" or not (has_simam(model) and simam_deploy.prepare()):
        return
    with deploy_operator():
        _jit_save(model, folder / SIMAM_OP_PREFIX, size)
    params = folder / f"{SIMAM_OP_PREFIX}.pdiparams"
    if params.read_bytes() != (folder / PARAMS_FILE).read_bytes():
        raise ExportError(f"the two programs of the export saved different weights ({params.name}, {PARAMS_FILE})")
    params.unlink()


def write_onnx(model: paddle.nn.Layer, folder: Path, size: int) -> None:
    paddle2onnx, _ = require_onnx()
    with tempfile.TemporaryDirectory() as tmp:
        program = _jit_save(model, Path(tmp) / "model", size)
        converted = Path(tmp) / "converted.onnx"
        output: list[str] = []  # paddle2onnx's progress lines, the temporary file's path among them
        with captured_output(output):
            paddle2onnx.export(
                str(program), str(Path(tmp) / "model.pdiparams"), str(converted), opset_version=ONNX_OPSET,
                optimize_tool=ONNX_OPTIMIZE_TOOL,
            )
        if not converted.is_file():
            raise ExportError(f"paddle2onnx wrote no model.onnx; its output:\n{''.join(output)}")
        _optimize_onnx(converted, folder / ONNX_FILE)


def _optimize_onnx(source: Path, target: Path) -> None:
    """onnxruntime's basic graph optimisations (constant folding, removal of redundant nodes; standard
    ONNX operators only, for any runtime) from ``source`` into ``target``: the step that replaces
    paddle2onnx's Polygraphy folding (see ONNX_OPTIMIZE_TOOL)."""
    _, onnxruntime = require_onnx()
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3  # its notices about the constants it removes
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    import onnx

    model = onnx.load(str(target))  # onnxruntime declares its own operator sets too: keep those in use
    used = {node.domain for node in model.graph.node}
    kept = [opset for opset in model.opset_import if opset.domain in used | {""}]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def check_export(run: Runner, batch: np.ndarray, reference: np.ndarray, tolerance: float = TOLERANCE) -> dict:
    """Largest |logit difference| of the export against the reference logits, batched and one by one."""
    diff_batch = float(np.abs(run(batch) - reference).max())
    diff_single = float(np.abs(run(batch[:1]) - reference[:1]).max())
    return {
        "images": len(batch),
        "max_abs_diff": max(diff_batch, diff_single),
        "max_abs_diff_batch": diff_batch,
        "max_abs_diff_batch_of_1": diff_single,
        "max_abs_logit": float(np.abs(reference).max()),
        "tolerance": tolerance,
        "passed": max(diff_batch, diff_single) <= tolerance,
    }


def _put_in_place(staging: Path, output: Path) -> None:
    """Move the complete export ``staging`` to ``output``; an old export there stays until the new one
    is in place (renamed aside, then removed), so a crash leaves one of the two, plus a temp folder."""
    if not output.exists():
        os.replace(staging, output)
        return
    old = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.old.", suffix=".tmp"))
    os.replace(output, old / output.name)
    os.replace(staging, output)
    shutil.rmtree(old)


def export(
    run_dir: str | Path,
    fmt: str,
    weights: str = "best",
    output: str | Path | None = None,
    overwrite: bool = False,
    num_images: int = 16,
    tolerance: float = TOLERANCE,
    log: Callable[[str], None] = print,
    program: str = "auto",
    overrides: list[str] | tuple[str, ...] = (),
) -> dict:
    """Export a run's model in ``fmt`` (paddle | onnx), check it, and return what export.json holds.

    ``program``: whether to write the program with the SimAM operator too (Paddle format: ``write_paddle``);
    ``overrides``: ``data.KEY=VALUE`` for the run's config, whose data gives the check's test images."""
    if fmt not in FORMATS:
        raise ArgumentError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not tolerance >= 0:
        raise ArgumentError(f"the tolerance must be >= 0, got {tolerance}")
    if fmt == "onnx":
        require_onnx()  # before any work
    output = Path(output) if output is not None else Path(run_dir) / EXPORT / fmt
    if output.exists() and not overwrite and not (output.is_dir() and not any(output.iterdir())):
        raise ArgumentError(f"{output} already exists; pass --overwrite to replace it, or choose another --output")
    model, config = load_run_model(run_dir, weights)
    apply_overrides(config, overrides)
    names, size = run_classes(run_dir, config), config["data"]["image_size"]
    samples = sample_images(config, num_images)
    batch = samples.batch()
    with paddle.no_grad():
        reference = model(paddle.to_tensor(batch)).numpy()

    created = [p for p in (output.parent, *output.parent.parents) if not p.exists()]  # removed again on failure
    output.parent.mkdir(parents=True, exist_ok=True)
    lock = output.parent / f".{output.name}.lock"
    hold_lock(lock, f"the export folder {output}")
    remove_temp_files(output.parent, output.name)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    staging.chmod(0o755)  # mkdtemp's 0700 would make the export private to this user
    try:
        try:
            if fmt == "paddle":
                write_paddle(model, staging, size, program)
            else:
                write_onnx(model, staging, size)
            # the program each runner takes by default first (its check is export.json's "check")
            programs = ["auto", "standard"] if fmt == "paddle" and simam_op_program(staging) else ["auto"]
            checks = []
            for program in programs:
                run = export_runner(fmt, staging, program=program)
                checks.append(check_export(run, batch, reference, tolerance))
                checks[-1]["engine"] = run.engine
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"{fmt} export of {run_dir} failed: {type(exc).__name__}: {exc}") from exc
        for check in checks:
            check["source"] = samples.source
            log(
                f"check ({check['engine']} vs dynamic graph, {samples.source}): max abs logit diff "
                f"{check['max_abs_diff_batch']:.2e} (batch of {len(batch)}), {check['max_abs_diff_batch_of_1']:.2e} "
                f"(batch of 1); tolerance {tolerance:.0e}: {'OK' if check['passed'] else 'FAILED'}"
            )
            if not check["passed"]:
                raise ExportError(
                    f"the {fmt} export ({check['engine']}) differs from the model by {check['max_abs_diff']:.3g} > "
                    f"{tolerance:.0e} (the logits reach {check['max_abs_logit']:.3g}: relative difference "
                    f"{check['max_abs_diff'] / max(check['max_abs_logit'], 1e-30):.1e}); nothing was written"
                )
        check = checks[0]
        if len(checks) > 1:
            check["standard_program"] = checks[1]
        meta = {
            "format": fmt,
            "files": sorted(p.name for p in staging.iterdir()) + [META_FILE],
            "run_dir": str(Path(run_dir).resolve()),
            "weights": weights,
            "model": dict(config["model"]),
            "class_names": names,
            "input": {"name": INPUT_NAME, "shape": [None, 3, size, size], "dtype": "float32",
                      "preprocessing": preprocessing(size)},
            "output": "logits [N, num_classes]",
            "check": check,
            "versions": {"paddlepaddle": paddle.__version__},
        }
        if fmt == "onnx":
            paddle2onnx, onnxruntime = require_onnx()
            meta["opset"] = ONNX_OPSET
            meta["versions"].update(paddle2onnx=paddle2onnx.__version__, onnxruntime=onnxruntime.__version__)
        atomic_write_json(staging / META_FILE, meta)
        _put_in_place(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
        release_lock(lock)  # the folder is held while it is written, and leaves no lock file behind
        lock.unlink(missing_ok=True)
        if not output.exists():
            for folder in created:  # innermost first: the folders this export made, if left empty
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    log(f"wrote {fmt} export of {Path(run_dir) / WEIGHTS[weights]} to {output}/ ({', '.join(meta['files'])})")
    return meta


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> None:
        overrides = cli.overrides(args.override, "export", ("data",), "the model is exported as it was trained")
        export(args.path, args.format, args.weights, args.output, args.overwrite, args.num_images, args.tolerance,
               program=args.program, overrides=overrides)

    return cli.run(work)


if __name__ == "__main__":
    sys.exit(main())
