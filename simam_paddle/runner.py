"""Running a model: ``open_model(path)`` opens a run directory or an export folder as one thing that
turns a float32 batch [N, 3, S, S] into logits [N, num_classes], for predict, evaluate and
``scripts/benchmark_deploy.py``.

A run directory runs in the dynamic graph, with its ``best`` or ``final`` weights. An export folder of
``simam_paddle.export`` (its layout is defined here: ``export.json`` and the program files) runs
through its engine, built in one place each: :func:`paddle_runner` (Paddle Inference) and
:func:`onnx_runner` (onnxruntime). By default they take the fastest correct CPU settings measured
(BENCHMARKS.md, "Deployment"): Paddle Inference with oneDNN on, either engine on as many threads as
the process has cores available, and a Paddle export's program with the SimAM operator where this
process can load the operator's library (``model.json``, standard operators, elsewhere). Each runner
says which settings it runs with, as they took effect (``runner.engine``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle

from .config import apply_overrides, load_config
from .errors import ArgumentError, MissingDependency, PathError
from .layers import simam_deploy
from .native.threads import available_cores
from .run_dir import is_run_dir, load_run_model, read_config, read_json, run_classes

# -- the export folder's layout (written by simam_paddle.export) -----------------------------------------
FORMATS = ("paddle", "onnx")
META_FILE = "export.json"
PARAMS_FILE = "model.pdiparams"
SIMAM_OP_PREFIX = "model_simam_op"  # the program with the SimAM operator; its weights are model.pdiparams
ONNX_FILE = "model.onnx"
PROGRAMS = ("auto", "simam_op", "standard")


def program_file(folder: Path, prefix: str = "model") -> Path:
    """PREFIX.json (PIR, Paddle 3's default) or PREFIX.pdmodel (the old IR)."""
    for name in (f"{prefix}.json", f"{prefix}.pdmodel"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} holds no exported Paddle program ({prefix}.json or {prefix}.pdmodel)")


def simam_op_program(folder: Path) -> Path | None:
    """The program with the SimAM operator in a Paddle export folder, or None."""
    try:
        return program_file(folder, SIMAM_OP_PREFIX)
    except FileNotFoundError:
        return None


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return (path if path.is_dir() else path.parent).joinpath(META_FILE).is_file()


def read_export_meta(path: str | Path) -> tuple[Path, dict]:
    """The export folder of ``path`` (the folder or a file in it) and its export.json."""
    folder = Path(path)
    folder = folder if folder.is_dir() else folder.parent
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise PathError(f"{path} is not an export of simam_paddle.export: {meta_path} is missing")
    meta = read_json(meta_path)
    if meta.get("format") not in FORMATS:
        raise PathError(f"{meta_path}: unknown format {meta.get('format')!r}; expected one of {', '.join(FORMATS)}")
    return folder, meta


def require_onnx():
    """paddle2onnx and onnxruntime, or an error saying how to install them."""
    try:
        import onnxruntime
        import paddle2onnx
    except ImportError as exc:
        raise MissingDependency(
            f"ONNX export needs paddle2onnx and onnxruntime ({exc.name} is not installed): pip install 'simam-paddle[export]'"
        ) from None
    return paddle2onnx, onnxruntime


# -- engines ---------------------------------------------------------------------------------------------
class Runner:
    """An engine as a function, float32 [N, 3, S, S] -> logits; ``engine`` says which engine and
    settings it runs, as they took effect (e.g. "paddle.inference, oneDNN on, 2 threads")."""

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
        raise ArgumentError(f"engine threads must be >= 1, got {threads}")
    return int(threads)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def choose_program(folder: Path, program: str = "auto") -> tuple[Path, str]:
    """(program file, "SimAM operator" | "standard operators") of a Paddle export folder.

    "auto": the program with the SimAM operator where the export has one and this process can load
    the operator's library, else model.json; "simam_op" insists on the former, "standard" takes model.json.
    """
    if program not in PROGRAMS:
        raise ArgumentError(f"unknown program {program!r}; expected one of {', '.join(PROGRAMS)}")
    fused = simam_op_program(folder)
    if program == "simam_op" and fused is None:
        raise PathError(f"{folder} holds no {SIMAM_OP_PREFIX} program: export it again where the SimAM "
                          "deployment operator builds (see simam_paddle.layers.simam_deploy)")
    if fused is not None and program != "standard":
        if simam_deploy.prepare():
            return fused, "SimAM operator"
        if program == "simam_op":
            raise ArgumentError(f"the SimAM deployment operator is unavailable: {simam_deploy.status()['error']}")
    return program_file(folder), "standard operators"


def paddle_runner(folder: Path, onednn: bool | None = True, threads: int | None = None,
                  default_config: bool = False, program: str = "auto") -> Runner:
    """Run a Paddle export through paddle.inference on the CPU: float32 [N, 3, S, S] -> logits.

    ``onednn``: oneDNN on (the default, the faster: BENCHMARKS.md, "Deployment") or off; ``threads``: the
    CPU math threads (default: the cores available). ``default_config=True`` changes neither and runs
    ``paddle.inference.Config`` as it comes (oneDNN on, 1 thread in Paddle 3.3), for comparisons.
    ``program``: which of the export's programs runs (see :func:`choose_program`).
    """
    from paddle import inference

    program_path, operators = choose_program(folder, program)
    config = inference.Config(str(program_path), str(folder / PARAMS_FILE))
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
              f"{_plural(config.cpu_math_library_num_threads(), 'thread')}, {program_path.name} ({operators})")
    return Runner(run, engine)


def onnx_runner(folder: Path, threads: int | None = None) -> Runner:
    """Run an ONNX export through onnxruntime (CPU): float32 [N, 3, S, S] -> logits, on ``threads``
    intra-op threads (default: the cores available), all graph optimisations on (onnxruntime's default)."""
    _, onnxruntime = require_onnx()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = engine_threads(threads)
    session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return Runner(run, f"onnxruntime, {_plural(options.intra_op_num_threads, 'intra-op thread')}")


def export_runner(fmt: str, folder: Path, onednn: bool = True, threads: int | None = None, program: str = "auto",
                  default_config: bool = False) -> Runner:
    """The runner of an export folder of format ``fmt`` with the given settings (see the two above;
    onnxruntime has no oneDNN, program or default-Config setting)."""
    if fmt == "paddle":
        return paddle_runner(folder, onednn=onednn, threads=threads, default_config=default_config, program=program)
    return onnx_runner(folder, threads=threads)


def _dynamic_runner(model: paddle.nn.Layer) -> Runner:
    def run(batch: np.ndarray) -> np.ndarray:
        with paddle.no_grad():
            return model(paddle.to_tensor(batch)).numpy()

    return Runner(run, "dynamic graph")


# -- one way to open a model -----------------------------------------------------------------------------
@dataclass
class OpenModel:
    """A model ready to run batches: ``model(batch)`` -> logits, float32 [N, 3, S, S] -> [N, num_classes].

    ``class_names`` in label order, ``input_size`` S, ``description`` (which model and weights, and for
    an export which engine), ``engine`` (``runner.engine``), ``config`` (a run's config; for an export
    its run's config while the run is still there, else the defaults with the export's model section),
    ``meta`` (an export's export.json, None for a run directory).
    """

    runner: Runner
    class_names: list[str]
    input_size: int
    description: str
    config: dict
    meta: dict | None = None

    @property
    def engine(self) -> str:
        return self.runner.engine

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.runner(batch)


def _export_config(meta: dict) -> dict:
    run_dir = meta.get("run_dir")
    config = read_config(run_dir) if run_dir and is_run_dir(run_dir) else load_config(None, [])
    config["model"].update(meta["model"])
    return config


def open_model(path: str | Path, weights: str = "best", onednn: bool = True, threads: int | None = None,
               program: str = "auto", default_config: bool = False, overrides: list[str] | tuple[str, ...] = (),
               log: Callable[[str], None] | None = None) -> OpenModel:
    """Open a run directory (its ``weights``, in the dynamic graph) or an export folder or a file in it
    (its engine with ``onednn``, ``threads``, ``program``, ``default_config``: see :func:`paddle_runner`;
    ``log`` is told the engine once). ``overrides`` (``section.key=value``) apply to the returned config."""
    path = Path(path)
    if is_run_dir(path):
        model, config = load_run_model(path, weights)
        opened = OpenModel(_dynamic_runner(model), run_classes(path, config), config["data"]["image_size"],
                           f"{config['model']['name']} ({weights} weights)", config)
    elif is_export(path):
        folder, meta = read_export_meta(path)
        runner = export_runner(meta["format"], folder, onednn, threads, program, default_config)
        if log is not None:
            log(f"engine: {runner.engine}")
        config = _export_config(meta)
        description = (f"{config['model']['name']} ({meta['format']} export of the {meta['weights']} weights; "
                       f"engine: {runner.engine})")
        opened = OpenModel(runner, meta["class_names"], int(meta["input"]["shape"][2]), description, config, meta)
    else:
        raise PathError(
            f"{path} is neither a run directory (no config.yaml) nor an export of simam_paddle.export (no export.json)"
        )
    apply_overrides(opened.config, overrides)
    return opened
