"""Export round trips: Paddle Inference and ONNX against the dynamic-graph model; refusals and errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest
from helpers import REPO_ROOT, make_run_dir, needs_onnx, run_tool

from simam_paddle import export as export_module
from simam_paddle.data import sample_images
from simam_paddle.export import TOLERANCE, main
from simam_paddle.run_dir import load_run_model
from simam_paddle.runner import Runner, open_model


@pytest.fixture
def run_dir(tmp_path, image_folder):
    return make_run_dir(tmp_path / "run", "model.name=alexnet_simam", "model.e_lambda=1e-5", f"data.root={image_folder}")


def independent_check(run_dir, folder, count=5, programs=("auto",)):
    """Logits of the export (each of ``programs``) and of the dynamic-graph model on ``count`` real images,
    batch sizes 1 and count."""
    model, config = load_run_model(run_dir)
    batch = sample_images(config, count).batch()
    with paddle.no_grad():
        expected = model(paddle.to_tensor(batch)).numpy()
    for program in programs:
        run = open_model(folder, program=program)
        meta = run.meta
        for got, want in ((run(batch), expected), (run(batch[2:3]), expected[2:3])):
            assert got.shape == want.shape
            diff = np.abs(got - want).max()
            assert diff <= TOLERANCE, f"{program}: max abs diff {diff:.3g}"
    return meta


@pytest.mark.parametrize(
    "fmt, files, programs",
    [("paddle", {"model.json", "model_simam_op.json", "model.pdiparams"}, ("simam_op", "standard")),
     pytest.param("onnx", {"model.onnx"}, ("auto",), marks=needs_onnx)],
)
def test_round_trip_on_real_images(run_dir, fmt, files, programs, capsys):
    assert main([str(run_dir), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert out.count("16 real test images from") == len(programs) and out.count("tolerance 1e-04: OK") == len(programs)
    folder = run_dir / "export" / fmt
    assert {p.name for p in folder.iterdir()} == files | {"export.json"}
    meta = independent_check(run_dir, folder, programs=programs)
    assert meta["format"] == fmt and meta["input"]["shape"] == [None, 3, 128, 128]
    assert meta["check"]["max_abs_diff"] <= TOLERANCE and meta["check"]["images"] == 16
    assert meta["class_names"][3] == "cat" and meta["model"]["name"] == "alexnet_simam"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"


@needs_onnx
def test_onnx_batch_dimension_is_dynamic(run_dir):
    import onnxruntime

    assert main([str(run_dir), "--format", "onnx", "--num-images", "4", "--output", str(run_dir / "onnx")]) == 0
    session = onnxruntime.InferenceSession(str(run_dir / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "image" and not isinstance(inp.shape[0], int) and inp.shape[1:] == [3, 128, 128]
    import onnx

    model = onnx.load(str(run_dir / "onnx" / "model.onnx"))  # optimised by onnxruntime, still plain ONNX 13
    assert {node.domain for node in model.graph.node} == {""}
    assert [(opset.domain, opset.version) for opset in model.opset_import] == [("", 13)]


def test_rendered_images_when_data_root_is_no_image_folder(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", "model.name=alexnet_simam", weights=("final",))
    assert main([str(run), "--format", "paddle", "--weights", "final", "--num-images", "3"]) == 0
    assert ("3 rendered 32x32 images (data.root None is not an image folder with a validation split (val/ or test/) "
            "or image lists)" in capsys.readouterr().out)
    meta = json.loads((run / "export" / "paddle" / "export.json").read_text())
    assert meta["weights"] == "final" and meta["check"]["source"].startswith("3 rendered")


def test_existing_export_is_not_overwritten_silently(run_dir, capsys):
    assert main([str(run_dir), "--format", "paddle", "--num-images", "2"]) == 0
    params = run_dir / "export" / "paddle" / "model.pdiparams"
    before = params.stat().st_mtime_ns
    assert main([str(run_dir), "--format", "paddle", "--num-images", "2"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert params.stat().st_mtime_ns == before
    assert main([str(run_dir), "--format", "paddle", "--num-images", "2", "--overwrite"]) == 0
    assert params.stat().st_mtime_ns != before


def shifted(offset: float):
    """export's runner, with ``offset`` added to every logit: an export that differs from its model."""
    real = export_module.export_runner

    def make(fmt, folder, **kw):
        run = real(fmt, folder, **kw)
        return Runner(lambda batch: run(batch) + offset, run.engine)

    return make


def test_failed_check_writes_nothing(run_dir, monkeypatch, capsys):
    monkeypatch.setattr(export_module, "export_runner", shifted(2e-4))
    assert main([str(run_dir), "--format", "paddle", "--num-images", "2"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out
    assert re.search(r"differs from the model by 0\.000[23]\d* > 1e-04 \(the logits reach [\d.]+: relative", captured.err)
    assert "nothing was written" in captured.err
    assert not (run_dir / "export").exists(), "a failed export leaves no folder behind"
    # a looser bound, asked for, passes and is recorded
    assert main([str(run_dir), "--format", "paddle", "--num-images", "2", "--tolerance", "1e-3"]) == 0
    meta = json.loads((run_dir / "export" / "paddle" / "export.json").read_text())
    assert meta["check"]["tolerance"] == 1e-3 and meta["check"]["passed"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/missing", "--format", "paddle"], "is not a run directory"),
        (["{run}", "--format", "paddle", "--weights", "final"], "has no final weights"),
        (["{run}", "--format", "paddle", "--num-images", "0"], "number of images must be >= 1"),
        (["{run}", "--format", "paddle", "--num-images", "20000"], "offers 20 taken class by class"),
        (["{run}", "--format", "paddle", "--tolerance", "-1"], "tolerance must be >= 0"),
    ],
)
def test_errors_exit_non_zero_with_a_message(run_dir, tmp_path, args, message, capsys):
    args = [a.format(tmp=tmp_path, run=run_dir) for a in args]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_command_line_exit_status(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "simam_paddle.export", str(tmp_path), "--format", "paddle"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 2 and "is not a run directory" in result.stderr


@pytest.mark.parametrize("fmt", ["paddle", pytest.param("onnx", marks=needs_onnx)])
def test_resnet18_simam_export(tmp_path, image_folder, fmt):
    run = make_run_dir(tmp_path / "run", "model.name=resnet18_simam", f"data.root={image_folder}")
    assert main([str(run), "--format", fmt, "--num-images", "4"]) == 0
    independent_check(run, run / "export" / fmt, count=3)


@pytest.mark.parametrize("fmt", ["paddle", pytest.param("onnx", marks=needs_onnx)])
def test_round_trip_on_real_cifar10_images(tmp_path, cifar10_jpeg, fmt, capsys):
    run = make_run_dir(tmp_path / "run", "model.name=alexnet_simam", "model.e_lambda=1e-5", f"data.root={cifar10_jpeg}")
    assert main([str(run), "--format", fmt]) == 0
    assert f"16 real test images from {cifar10_jpeg / 'test'}" in capsys.readouterr().out
    programs = ("simam_op", "standard") if fmt == "paddle" else ("auto",)
    independent_check(run, run / "export" / fmt, count=4, programs=programs)


def test_a_failed_overwrite_keeps_the_old_export_and_stale_temp_folders_go(run_dir, monkeypatch, capsys):
    assert main([str(run_dir), "--format", "paddle", "--num-images", "2"]) == 0
    folder = run_dir / "export" / "paddle"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    stale = run_dir / "export" / ".paddle.k1ll3d.tmp"  # what a SIGKILL during an export leaves
    stale.mkdir()
    (stale / "model.json").write_text("half")
    monkeypatch.setattr(export_module, "export_runner", shifted(1.0))
    assert main([str(run_dir), "--format", "paddle", "--num-images", "2", "--overwrite"]) == 1
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, "the old export must survive"
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["paddle"], "no temp folder left behind"


# Run as sitecustomize in the export's process: onnx_graphsurgeon and sympy behave as on a machine where
# `pip install simam-paddle[export]` did not bring them (polygraphy, paddle2onnx's default optimiser, needs them).
HIDE_MODULES = """
import importlib.abc, sys

class _Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnx_graphsurgeon", "sympy"):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the offline-export test)", name=name)
        return None

sys.meta_path.insert(0, _Hidden())
"""

NO_DOWNLOADS = {
    "PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/", "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "",
    "PIP_CONFIG_FILE": "/dev/null", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": "",
}


def pip_freeze() -> list[str]:
    return subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True,
                          timeout=300).stdout.splitlines()


@pytest.mark.slow
@needs_onnx
@pytest.mark.integration
def test_export_works_offline_and_installs_nothing(tmp_path):
    """Both formats export with package downloads made impossible and the optional graph-optimiser
    dependencies absent: no installation is tried (polygraphy's auto-install prints "pip install ...")
    and the installed packages are the same afterwards."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(HIDE_MODULES)
    env = {**os.environ, **NO_DOWNLOADS, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO_ROOT)])}
    env.pop("POLYGRAPHY_AUTOINSTALL_DEPS", None)
    run = make_run_dir(tmp_path / "run", "model.name=alexnet_simam")
    before = pip_freeze()
    for fmt in ("onnx", "paddle"):
        proc = run_tool("export", run, "--format", fmt, "--num-images", "2", env=env, check=False)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-3000:]
        assert "tolerance 1e-04: OK" in output
        for attempt in ("pip install", "Installing", "Collecting", "Attempting to install", "polygraphy"):
            assert attempt.lower() not in output.lower(), f"{fmt} export: {attempt!r} in its output:\n{output[-3000:]}"
        # quiet: paddle2onnx's progress lines (with its temporary file's path) are captured
        assert "Paddle2ONNX" not in output and "converted.onnx" not in output, output[-3000:]
        assert [line for line in proc.stderr.splitlines() if "(first use, up to a minute)" not in line] == []
    assert pip_freeze() == before
