"""The SimAM deployment operator: the formula (+ ReLU, + max-pool) in every memory format Paddle
Inference hands it, exports that hold it, and the fallback to standard operators."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import paddle
import pytest
from helpers import make_run_dir, paddle_inference, reference_simam, unbuildable

from simam_paddle import export as export_module
from simam_paddle import runner
from simam_paddle.errors import ArgumentError, PathError
from simam_paddle.layers import simam_deploy
from simam_paddle.layers.simam import SimAM, deploy_operator

LAMBDA = 1e-4


@pytest.fixture(autouse=True, scope="module")
def operator_available():
    if not simam_deploy.prepare():
        pytest.skip(f"the SimAM deployment operator is unavailable here: {simam_deploy.status()['error']}")


def max_pool(y: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Max over each size x size window, stride apart, no padding, floor mode: written plainly."""
    b, c, h, w = y.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    out = np.empty((b, c, oh, ow), dtype=y.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = y[:, :, i * stride : i * stride + size, j * stride : j * stride + size].max(axis=(2, 3))
    return out


def expected(x: np.ndarray, relu: bool, pool: int, stride: int) -> np.ndarray:
    y = reference_simam(x, LAMBDA)
    y = np.maximum(y, 0) if relu else y
    return max_pool(y, pool, stride) if pool else y


VARIANTS = [(False, 0, 1), (True, 0, 1), (True, 3, 2), (False, 2, 2), (True, 3, 1)]


@pytest.mark.parametrize("relu, pool, stride", VARIANTS)
@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (3, 48, 32, 32), (1, 70, 3, 3)])
@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-6), ("float64", 1e-12)])
def test_the_formula_on_nchw_tensors(shape, relu, pool, stride, dtype, rtol):
    x = (np.random.default_rng(sum(shape)).standard_normal(shape) * 3 + 1).astype(dtype)
    got = simam_deploy.simam_deploy(paddle.to_tensor(x), LAMBDA, relu, pool, stride).numpy()
    want = expected(x, relu, pool, stride)
    assert got.shape == want.shape and got.dtype == x.dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_a_channel_with_an_inf_is_nan_and_the_others_are_not():
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype("float32")
    x[0, 1, 2, 2] = np.inf
    y = simam_deploy.simam_deploy(paddle.to_tensor(x), LAMBDA, True, 2, 2).numpy()
    assert np.isnan(y[0, 1]).all() and np.isfinite(y[0, [0, 2]]).all()


class ConvThen(paddle.nn.Layer):
    """A convolution (its output in the memory format oneDNN picks), an optional layout change, then the operator."""

    def __init__(self, channels: int, relu: bool, pool: int, stride: int, change: str = "", inputs: int = 3):
        super().__init__()
        self.conv = paddle.nn.Conv2D(inputs, channels, 3, padding=1)
        self.relu, self.pool, self.stride, self.change = relu, pool, stride, change

    def features(self, x):
        y = self.conv(x)
        if self.change == "transpose":  # oneDNN's transpose hands on an NCHW buffer
            y = paddle.transpose(y, [0, 1, 3, 2])
        return y

    def forward(self, x):
        return simam_deploy.simam_deploy(self.features(x), LAMBDA, self.relu, self.pool, self.stride)


def run_inference(model: paddle.nn.Layer, x: np.ndarray, folder, onednn: bool, threads: int = 2) -> np.ndarray:
    spec = [paddle.static.InputSpec([None, *x.shape[1:]], "float32", "image")]
    paddle.jit.save(model, str(folder / "model"), input_spec=spec)
    return paddle_inference(folder / "model", x, onednn, threads)


class ConvPath(ConvThen):
    """The same features, and the path simam_deploy would take for them (simam_deploy.PATHS)."""

    def forward(self, x):
        return simam_deploy.simam_deploy_path(self.features(x))


def check_through_inference(tmp_path, channels, relu, pool, stride, onednn, change, inputs=3) -> int:
    """The operator through Paddle Inference against the formula on the same features, the output of a
    convolution of ``inputs`` channels; returns the index in simam_deploy.PATHS of the memory format
    the engine handed it."""
    paddle.seed(channels)
    model = ConvThen(channels, relu, pool, stride, change, inputs)
    model.eval()
    x = np.random.default_rng(channels).standard_normal((5, inputs, 11, 13)).astype("float32")
    with paddle.no_grad():
        features = model.features(paddle.to_tensor(x)).numpy()
    (tmp_path / "op").mkdir()
    got = run_inference(model, x, tmp_path / "op", onednn)
    want = expected(features, relu, pool, stride)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    path = ConvPath(channels, relu, pool, stride, change, inputs)
    path.set_state_dict(model.state_dict())
    path.eval()
    (tmp_path / "path").mkdir()
    return int(run_inference(path, x, tmp_path / "path", onednn)[0])


@pytest.mark.parametrize("relu, pool, stride", VARIANTS[1:4])
@pytest.mark.parametrize("onednn, change, paths", [(True, "", (2, 3)), (True, "transpose", (1,)), (False, "", (0,))])
@pytest.mark.parametrize("channels", [8, 48, 130])
def test_the_formula_through_paddle_inference(tmp_path, channels, relu, pool, stride, onednn, change, paths):
    """oneDNN on: the convolution's output comes in the format oneDNN picks for it on this CPU
    (channels-last or a blocked one), NCHW after a transpose; oneDNN off: Paddle's NCHW. The result
    goes on to the engine's output in the format the operator declares."""
    assert check_through_inference(tmp_path, channels, relu, pool, stride, onednn, change) in paths


BLOCKED_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import test_simam_deploy as t
print("path", t.check_through_inference(Path(sys.argv[2]), int(sys.argv[3]), True, 3, 2, True, "", inputs=16))
"""


@pytest.mark.parametrize("channels", [16, 130])
def test_a_blocked_format_is_reordered_first(tmp_path, channels):
    """oneDNN limited to AVX (ONEDNN_MAX_CPU_ISA, read when oneDNN starts: a process of its own) picks a
    channel-blocked format (nChw8c) for the output of a convolution of 16 channels: the operator's
    reorder path."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX"}
    tests = Path(__file__).resolve().parent
    result = subprocess.run([sys.executable, "-c", BLOCKED_SCRIPT, str(tests), str(tmp_path), str(channels)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["path", "3"], result.stdout


def test_one_thread_and_two_give_the_same_numbers(tmp_path):
    paddle.seed(1)
    model = ConvThen(64, True, 3, 2)
    model.eval()
    x = np.random.default_rng(1).standard_normal((16, 3, 32, 32)).astype("float32")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.testing.assert_array_equal(run_inference(model, x, tmp_path / "a", True, threads=1),
                                  run_inference(model, x, tmp_path / "b", True, threads=2))


def ops_of(program_file) -> list[str]:
    import re

    return re.findall(r'"#":"\d\.([a-z_0-9]+)"', program_file.read_text())


def test_an_alexnet_simam_export_holds_one_operator_per_block_and_no_pool(tmp_path):
    run = make_run_dir(tmp_path / "run", "model.name=alexnet_simam")
    meta = export_module.export(run, "paddle", num_images=4, log=lambda _: None)
    folder = run / "export" / "paddle"
    assert set(meta["files"]) == {"export.json", "model.json", "model.pdiparams", "model_simam_op.json"}
    fused, standard = ops_of(folder / "model_simam_op.json"), ops_of(folder / "model.json")
    # five SimAM -> ReLU (-> max-pool) blocks, the three pools inside the operator
    assert fused.count("simam_deploy") == 5 and "pool2d" not in fused and "sigmoid" not in fused
    assert standard.count("sigmoid") == 5 and standard.count("pool2d") > 3 and "simam_deploy" not in standard
    assert meta["check"]["passed"] and meta["check"]["standard_program"]["passed"]
    assert "model_simam_op.json (SimAM operator)" in meta["check"]["engine"]
    assert "model.json (standard operators)" in meta["check"]["standard_program"]["engine"]


def test_a_plain_model_gets_no_second_program(tmp_path):
    run = make_run_dir(tmp_path / "run", "model.name=alexnet")
    meta = export_module.export(run, "paddle", num_images=2, log=lambda _: None)
    assert "model_simam_op.json" not in meta["files"] and "standard_program" not in meta["check"]


def test_export_program_standard_writes_only_standard_operators(tmp_path):
    run = make_run_dir(tmp_path / "run", "model.name=resnet18_simam")
    assert export_module.main([str(run), "--format", "paddle", "--num-images", "2", "--program", "standard"]) == 0
    assert not (run / "export" / "paddle" / "model_simam_op.json").exists()
    with pytest.raises(PathError, match="holds no model_simam_op program"):
        runner.paddle_runner(run / "export" / "paddle", program="simam_op")


def test_resnet18_simam_blocks_become_the_operator(tmp_path):
    run = make_run_dir(tmp_path / "run", "model.name=resnet18_simam")
    export_module.export(run, "paddle", num_images=2, log=lambda _: None)
    assert ops_of(run / "export" / "paddle" / "model_simam_op.json").count("simam_deploy") == 8


def test_without_the_library_exports_hold_standard_operators_and_run(tmp_path, caplog, monkeypatch):
    unbuildable(monkeypatch, simam_deploy)
    run = make_run_dir(tmp_path / "run", "model.name=alexnet_simam")
    with caplog.at_level(logging.WARNING):
        meta = export_module.export(run, "paddle", num_images=2, log=lambda _: None)
    assert "the SimAM deployment operator is unavailable, exports hold SimAM in standard operators only" in caplog.text
    assert "model_simam_op.json" not in meta["files"]
    assert "model.json (standard operators)" in runner.paddle_runner(run / "export" / "paddle").engine
    with pytest.raises(RuntimeError, match="deployment operator is unavailable.*simulated"):
        with deploy_operator():
            pass


def test_an_export_with_the_operator_falls_back_where_the_library_is_missing(tmp_path, monkeypatch):
    run = make_run_dir(tmp_path / "run", "model.name=alexnet_simam")
    export_module.export(run, "paddle", num_images=2, log=lambda _: None)
    folder = run / "export" / "paddle"
    unbuildable(monkeypatch, simam_deploy, "gone")
    assert "model.json (standard operators)" in runner.paddle_runner(folder).engine
    with pytest.raises(ArgumentError, match="deployment operator is unavailable: gone"):
        runner.paddle_runner(folder, program="simam_op")


def test_only_static_graphs_inside_the_context_record_the_operator(tmp_path):
    spec = [paddle.static.InputSpec([None, 4, 5, 5], "float32")]
    paddle.jit.save(SimAM(), str(tmp_path / "standard"), input_spec=spec)
    with deploy_operator():
        paddle.jit.save(SimAM(), str(tmp_path / "fused"), input_spec=spec)
    standard, fused = ops_of(tmp_path / "standard.json"), ops_of(tmp_path / "fused.json")
    assert "simam_deploy" not in standard and "sigmoid" in standard
    assert fused.count("simam_deploy") == 1 and "sigmoid" not in fused
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype("float32")
    for name in ("standard", "fused"):
        np.testing.assert_allclose(paddle_inference(tmp_path / name, x), reference_simam(x, 1e-4), rtol=1e-5,
                                   err_msg=name)
