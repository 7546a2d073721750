"""Export a trained run for deployment, Paddle Inference or ONNX, checked against the run's own model.

    python -m simam_paddle.export RUN_DIR --format paddle|onnx [--weights best|final] [--output DIR] [--overwrite]
                                  [--num-images 16] [--tolerance 1e-4] [--no-simam-op]

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
where the library builds, unless ``--no-simam-op``; :func:`paddle_runner` runs it where it can and
``model.json`` elsewhere.

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

Engines: :func:`paddle_runner` and :func:`onnx_runner` are the one place where an export's engine is
built, for the check here and for ``predict``, ``evaluate`` and ``scripts/benchmark_deploy.py``. By
default they take the fastest correct CPU settings measured (BENCHMARKS.md, "Deployment"): Paddle
Inference with oneDNN on, and either engine on as many threads as the process has cores available;
each runner says which settings it runs with (``runner.engine``). The ONNX file is optimised by
onnxruntime's basic, runtime-independent graph optimisations (constant folding, redundant nodes)
instead of paddle2onnx's default Polygraphy step, which pip-installs packages at export time: export
needs no network and installs nothing.
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import paddle

from .config import ConfigError
from .data import sample_images
from .data.transforms import MEAN, STD
from .errors import ExportError
from .io import atomic_write_json, hold_lock, release_lock, remove_temp_files
from .layers import simam_deploy
from .layers.simam import SimAM, deploy_operator
from .layers.threads import available_cores
from .run_dir import EXPORT, WEIGHTS, load_run_model, run_classes

FORMATS = ("paddle", "onnx")
TOLERANCE = 1e-4  # largest allowed |logit difference| between the export and the dynamic-graph model
ONNX_OPSET = 13
INPUT_NAME = "image"
META_FILE = "export.json"


def preprocessing(size: int) -> str:
    """How an input image is prepared, in words, for export.json."""
    return (f"simam_paddle.data.build_test_transform: RGB uint8 HWC -> resize to {size}x{size}, scale to [0, 1], "
            f"normalise with mean {MEAN} and std {STD}, CHW float32")


# paddle2onnx's graph optimiser: "None" skips its default, Polygraphy, which sets
# POLYGRAPHY_AUTOINSTALL_DEPS=1 and pip-installs onnx_graphsurgeon and sympy on first use;
# onnxruntime's basic optimisations take its place (_optimize_onnx).
ONNX_OPTIMIZE_TOOL = "None"


class Runner:
    """An export's engine as a function, float32 [N, 3, S, S] -> logits; ``engine`` says which
    engine and settings it runs, as they took effect (e.g. "paddle.inference, oneDNN on, 2 threads")."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], engine: str):
        self._run = run
        self.engine = engine

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)


def engine_threads(threads: int | None = None) -> int:
    """Threads for an inference engine: ``threads`` when given (>= 1), else the cores available."""
    if threads is None:
        return available_cores()
    if threads < 1:
        raise ConfigError(f"engine threads must be >= 1, got {threads}")
    return int(threads)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _require_onnx():
    try:
        import onnxruntime
        import paddle2onnx
    except ImportError as exc:
        raise ConfigError(
            f"ONNX export needs paddle2onnx and onnxruntime ({exc.name} is not installed): pip install 'simam-paddle[export]'"
        ) from None
    return paddle2onnx, onnxruntime


PARAMS_FILE = "model.pdiparams"
SIMAM_OP_PREFIX = "model_simam_op"  # the program with the SimAM operator; its weights are model.pdiparams


def _jit_save(model: paddle.nn.Layer, prefix: Path, size: int) -> Path:
    spec = [paddle.static.InputSpec([None, 3, size, size], "float32", INPUT_NAME)]
    paddle.jit.save(model, str(prefix), input_spec=spec)
    return _program_file(prefix.parent, prefix.name)


def _program_file(folder: Path, prefix: str = "model") -> Path:
    """PREFIX.json (PIR, Paddle 3's default) or PREFIX.pdmodel (the old IR)."""
    for name in (f"{prefix}.json", f"{prefix}.pdmodel"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} holds no exported Paddle program ({prefix}.json or {prefix}.pdmodel)")


def simam_op_program(folder: Path) -> Path | None:
    """The program with the SimAM operator in a Paddle export folder, or None."""
    try:
        return _program_file(folder, SIMAM_OP_PREFIX)
    except FileNotFoundError:
        return None


def has_simam(model: paddle.nn.Layer) -> bool:
    return any(isinstance(layer, SimAM) for layer in model.sublayers(include_self=True))


def write_paddle(model: paddle.nn.Layer, folder: Path, size: int, simam_op: bool = True) -> None:
    """model.json + model.pdiparams; with ``simam_op`` and SimAM in the model, also model_simam_op.json
    where the SimAM deployment operator is available (else a warning: standard operators only)."""
    _jit_save(model, folder / "model", size)
    if not (simam_op and has_simam(model) and simam_deploy.prepare()):
        return
    with deploy_operator():
        _jit_save(model, folder / SIMAM_OP_PREFIX, size)
    params = folder / f"{SIMAM_OP_PREFIX}.pdiparams"
    if params.read_bytes() != (folder / PARAMS_FILE).read_bytes():
        raise ExportError(f"the two programs of the export saved different weights ({params.name}, {PARAMS_FILE})")
    params.unlink()


def write_onnx(model: paddle.nn.Layer, folder: Path, size: int) -> None:
    paddle2onnx, _ = _require_onnx()
    with tempfile.TemporaryDirectory() as tmp:
        program = _jit_save(model, Path(tmp) / "model", size)
        converted = Path(tmp) / "converted.onnx"
        paddle2onnx.export(
            str(program), str(Path(tmp) / "model.pdiparams"), str(converted), opset_version=ONNX_OPSET,
            optimize_tool=ONNX_OPTIMIZE_TOOL,
        )
        if not converted.is_file():
            raise ExportError("paddle2onnx wrote no model.onnx (see its messages above)")
        _optimize_onnx(converted, folder / "model.onnx")


def _optimize_onnx(source: Path, target: Path) -> None:
    """onnxruntime's basic graph optimisations (constant folding, removal of redundant nodes; standard
    ONNX operators only, for any runtime) from ``source`` into ``target``: the step that replaces
    paddle2onnx's Polygraphy folding (see ONNX_OPTIMIZE_TOOL)."""
    _, onnxruntime = _require_onnx()
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


PROGRAMS = ("auto", "simam_op", "standard")


def choose_program(folder: Path, program: str = "auto") -> tuple[Path, str]:
    """(program file, "SimAM operator" | "standard operators") of a Paddle export folder.

    "auto": the program with the SimAM operator where the export has one and this process can load
    the operator's library, else model.json; "simam_op" insists on the former, "standard" takes model.json.
    """
    if program not in PROGRAMS:
        raise ConfigError(f"unknown program {program!r}; expected one of {', '.join(PROGRAMS)}")
    fused = simam_op_program(folder)
    if program == "simam_op" and fused is None:
        raise ConfigError(f"{folder} holds no {SIMAM_OP_PREFIX} program: export it again where the SimAM "
                          "deployment operator builds (see simam_paddle.layers.simam_deploy)")
    if fused is not None and program != "standard":
        if simam_deploy.prepare():
            return fused, "SimAM operator"
        if program == "simam_op":
            raise ConfigError(f"the SimAM deployment operator is unavailable: {simam_deploy.status()['error']}")
    return _program_file(folder), "standard operators"


def paddle_runner(folder: Path, onednn: bool | None = True, threads: int | None = None,
                  default_config: bool = False, program: str = "auto") -> Runner:
    """Run a Paddle export through paddle.inference on the CPU: float32 [N, 3, S, S] -> logits.

    ``onednn``: oneDNN on (the default, the faster: BENCHMARKS.md, "Deployment") or off; ``threads``: the
    CPU math threads (default: the cores available). ``default_config=True`` changes neither and runs
    ``paddle.inference.Config`` as it comes (oneDNN on, 1 thread in Paddle 3.3), for comparisons.
    ``program``: which of the export's programs runs (see :func:`choose_program`).
    """
    from paddle import inference

    program_file, operators = choose_program(folder, program)
    config = inference.Config(str(program_file), str(folder / PARAMS_FILE))
    config.disable_glog_info()
    if not default_config:
        if onednn:
            config.enable_mkldnn()
        else:
            config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(engine_threads(threads))
    predictor = inference.create_predictor(config)
    source = predictor.get_input_handle(predictor.get_input_names()[0])
    sink = predictor.get_output_handle(predictor.get_output_names()[0])

    def run(batch: np.ndarray) -> np.ndarray:
        source.reshape(list(batch.shape))
        source.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        predictor.run()
        return sink.copy_to_cpu()

    engine = (f"paddle.inference{', default Config' if default_config else ''}, "
              f"oneDNN {'on' if config.mkldnn_enabled() else 'off'}, "
              f"{_plural(config.cpu_math_library_num_threads(), 'thread')}, {program_file.name} ({operators})")
    return Runner(run, engine)


def onnx_runner(folder: Path, threads: int | None = None) -> Runner:
    """Run an ONNX export through onnxruntime (CPU): float32 [N, 3, S, S] -> logits, on ``threads``
    intra-op threads (default: the cores available), all graph optimisations on (onnxruntime's default)."""
    _, onnxruntime = _require_onnx()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = engine_threads(threads)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return Runner(run, f"onnxruntime, {_plural(options.intra_op_num_threads, 'intra-op thread')}")


def runner(fmt: str, folder: Path, onednn: bool = True, threads: int | None = None, program: str = "auto") -> Runner:
    """The runner of an export folder of format ``fmt`` with the given settings (see the two above)."""
    if fmt == "paddle":
        return RUNNERS["paddle"](folder, onednn=onednn, threads=threads, program=program)
    return RUNNERS["onnx"](folder, threads=threads)


RUNNERS = {"paddle": paddle_runner, "onnx": onnx_runner}


def read_export_meta(path: str | Path) -> tuple[Path, dict]:
    """The export folder of ``path`` (the folder or a file in it) and its export.json."""
    folder = Path(path)
    folder = folder if folder.is_dir() else folder.parent
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not an export of simam_paddle.export: {meta_path} is missing")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") not in RUNNERS:
        raise ConfigError(f"{meta_path}: unknown format {meta.get('format')!r}; expected one of {', '.join(FORMATS)}")
    return folder, meta


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return (path if path.is_dir() else path.parent).joinpath(META_FILE).is_file()


def load_exported(path: str | Path, onednn: bool = True, threads: int | None = None,
                  program: str = "auto") -> tuple[Runner, dict]:
    """The runner of an export folder (or of a file in it), with the given engine settings, and its export.json."""
    folder, meta = read_export_meta(path)
    return runner(meta["format"], folder, onednn, threads, program), meta


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
    simam_op: bool = True,
) -> dict:
    """Export a run's model in ``fmt`` (paddle | onnx), check it, and return what export.json holds.

    ``simam_op``: also write the program with the SimAM operator (Paddle format; see the module docstring)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not tolerance >= 0:
        raise ConfigError(f"the tolerance must be >= 0, got {tolerance}")
    if fmt == "onnx":
        _require_onnx()  # before any work
    output = Path(output) if output is not None else Path(run_dir) / EXPORT / fmt
    if output.exists() and not overwrite and not (output.is_dir() and not any(output.iterdir())):
        raise ConfigError(f"{output} already exists; pass --overwrite to replace it, or choose another --output")
    model, config = load_run_model(run_dir, weights)
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
                write_paddle(model, staging, size, simam_op)
            else:
                write_onnx(model, staging, size)
            # the program each runner takes by default first (its check is export.json's "check")
            programs = ["auto", "standard"] if fmt == "paddle" and simam_op_program(staging) else ["auto"]
            checks = []
            for program in programs:
                run = runner(fmt, staging, program=program)
                checks.append(check_export(run, batch, reference, tolerance))
                checks[-1]["engine"] = getattr(run, "engine", "paddle.inference" if fmt == "paddle" else "onnxruntime")
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
            paddle2onnx, onnxruntime = _require_onnx()
            meta["opset"] = ONNX_OPSET
            meta["versions"].update(paddle2onnx=paddle2onnx.__version__, onnxruntime=onnxruntime.__version__)
        atomic_write_json(staging / META_FILE, meta)
        _put_in_place(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
        if not output.exists():
            release_lock(lock)  # a failed first export leaves nothing, its lock file included
            lock.unlink(missing_ok=True)
            for folder in created:  # innermost first: the folders this export made, if left empty
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    log(f"wrote {fmt} export of {Path(run_dir) / WEIGHTS[weights]} to {output}/ ({', '.join(meta['files'])})")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("export", "Export a trained run for Paddle Inference or ONNX, checked against the run's model on test images.")
    p.add_argument("run_dir", help="run directory (config.yaml + best_model.pdparams / final_model.pdparams)")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="paddle: paddle.jit.save for paddle.inference; onnx: via paddle2onnx")
    cli.add_weights(p)
    p.add_argument("--output", default=None, help="folder to write (default: RUN_DIR/export/<format>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export at --output")
    p.add_argument("--num-images", type=int, default=16, help="test images for the check (default: 16)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"largest allowed |logit difference| (default: {TOLERANCE:g})")
    p.add_argument("--no-simam-op", dest="simam_op", action="store_false",
                   help=f"paddle format: write only model.json, without {SIMAM_OP_PREFIX}.json (SimAM as one operator)")
    args = p.parse_args(argv)
    return cli.run(lambda: export(args.run_dir, args.format, args.weights, args.output, args.overwrite,
                                  args.num_images, args.tolerance, simam_op=args.simam_op) and None)


if __name__ == "__main__":
    sys.exit(main())
