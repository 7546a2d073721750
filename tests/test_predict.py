"""predict: top-k on image files from a run and from its exports; errors name the file."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest
from helpers import REPO_ROOT, make_run_dir, needs_onnx

from simam_paddle.data import CLASS_NAMES, build_test_transform, load_image
from simam_paddle.export import export
from simam_paddle.predict import main, predict
from simam_paddle.run_dir import load_run_model


@pytest.fixture
def run_dir(tmp_path):
    return make_run_dir(tmp_path / "run", "model.name=alexnet_simam", "model.e_lambda=1e-5")


@pytest.fixture
def images(image_folder):
    return [image_folder / "test" / name / "0000.png" for name in ("cat", "ship", "frog")]


def expected_probabilities(run_dir, paths):
    model, _ = load_run_model(run_dir)
    transform = build_test_transform()
    batch = np.stack([transform(load_image(p)) for p in paths])
    with paddle.no_grad():
        return paddle.nn.functional.softmax(model(paddle.to_tensor(batch)), axis=1).numpy()


@pytest.mark.parametrize("top_k", [1, 3, 10, 50])
def test_top_k_from_a_run_directory(run_dir, images, top_k):
    results = predict(run_dir, images, top_k=top_k)
    probs = expected_probabilities(run_dir, images)
    assert len(results) == len(images)
    for top, p in zip(results, probs):
        assert len(top) == min(top_k, 10)
        values = [v for _, v in top]
        assert values == sorted(values, reverse=True)
        for name, v in top:
            assert v == pytest.approx(p[CLASS_NAMES.index(name)], abs=1e-6)
        assert top[0][0] == CLASS_NAMES[int(p.argmax())]
        if top_k >= 10:
            assert sum(values) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("fmt", ["paddle", pytest.param("onnx", marks=needs_onnx)])
def test_exported_model_predicts_as_the_run(run_dir, images, fmt):
    export(run_dir, fmt, num_images=2, log=lambda _: None)
    folder = run_dir / "export" / fmt
    from_run = predict(run_dir, images, top_k=10)
    for path in (folder, next(p for p in folder.iterdir() if p.name.startswith("model."))):
        from_export = predict(path, images, top_k=10)
        for a, b in zip(from_run, from_export):
            assert [name for name, _ in a] == [name for name, _ in b]
            assert np.allclose([v for _, v in a], [v for _, v in b], atol=1e-5)


def test_images_of_any_size(run_dir, tmp_path, images):
    odd = tmp_path / "odd.png"
    cv2.imwrite(str(odd), cv2.resize(cv2.imread(str(images[0])), (70, 45)))
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), cv2.imread(str(images[1]), cv2.IMREAD_GRAYSCALE))
    assert [len(top) for top in predict(run_dir, [odd, grey], top_k=2)] == [2, 2]


def test_command_line_output(run_dir, images, capsys):
    assert main([str(run_dir), *map(str, images), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for path, line in zip(images, lines):
        head, _, rest = line.partition(": ")
        assert head == str(path)
        assert len(rest.split(", ")) == 2 and rest.split(", ")[0].split(" ")[0] in CLASS_NAMES


def test_not_an_image_is_named(run_dir, tmp_path, images, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    assert main([str(run_dir), str(images[0]), str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a readable image" in err
    assert main([str(run_dir), str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}", "{image}"], "neither a run directory"),
        (["{run}", "{image}", "--top-k", "0"], "top-k must be >= 1"),
    ],
)
def test_errors(run_dir, tmp_path, images, args, message, capsys):
    assert main([a.format(tmp=tmp_path, run=run_dir, image=images[0]) for a in args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("content, says", [(b"\x89PNG broken", "not a readable image"), (b"", "an empty file")])
def test_command_line_exit_status_for_a_bad_image(run_dir, tmp_path, content, says):
    bad = tmp_path / "broken.png"
    bad.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "simam_paddle.predict", str(run_dir), str(bad)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and f"{bad}: {says}" in result.stderr and "Traceback" not in result.stderr


def test_real_cifar10_jpegs(run_dir, cifar10_jpeg):
    paths = [cifar10_jpeg / "test" / name / "0000.jpg" for name in ("cat", "ship", "frog")]
    probs = expected_probabilities(run_dir, paths)
    for top, p in zip(predict(run_dir, paths, top_k=1), probs):
        assert top[0] == (CLASS_NAMES[int(p.argmax())], pytest.approx(float(p.max()), abs=1e-6))


def test_an_export_runs_with_the_best_engine_settings_named_once(run_dir, images, capsys):
    from simam_paddle.native.threads import available_cores

    export(run_dir, "paddle", num_images=2, log=lambda _: None)
    folder = run_dir / "export" / "paddle"
    cores = available_cores()
    assert main([str(folder), *map(str, images)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"engine: paddle.inference, oneDNN on, {cores} thread{'s' * (cores > 1)}, "
                                         "model_simam_op.json (SimAM operator)"]
    assert len(captured.out.splitlines()) == 3  # stdout keeps one line per image
    assert main([str(folder), str(images[0]), "--threads", "1", "--no-onednn", "--program", "standard"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "engine: paddle.inference, oneDNN off, 1 thread, model.json (standard operators)"]


@needs_onnx
def test_an_onnx_export_names_its_threads(run_dir, images, capsys):
    export(run_dir, "onnx", num_images=2, log=lambda _: None)
    assert main([str(run_dir / "export" / "onnx"), str(images[0]), "--threads", "2"]) == 0
    assert capsys.readouterr().err.splitlines() == ["engine: onnxruntime, 2 intra-op threads"]


def test_engine_threads_must_be_positive(run_dir, images, capsys):
    export(run_dir, "paddle", num_images=2, log=lambda _: None)
    assert main([str(run_dir / "export" / "paddle"), str(images[0]), "--threads", "0"]) == 2
    assert "engine threads must be >= 1, got 0" in capsys.readouterr().err


def test_a_run_whose_classes_file_is_not_json_is_bad_input_naming_it(run_dir, images, capsys):
    (run_dir / "classes.json").write_text('["cat", "dog"')  # cut short
    assert main([str(run_dir), str(images[0])]) == 2
    assert "classes.json is not valid JSON" in capsys.readouterr().err
