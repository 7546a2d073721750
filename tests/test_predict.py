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


def test_folders_and_glob_patterns_expand_to_their_images(image_folder, tmp_path, capsys):
    from simam_paddle.predict import expand_inputs

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, source in (("b.png", "cat"), ("sub/a.PNG", "dog"), ("c.jpg", "ship")):
        image = cv2.imread(str(image_folder / "test" / source / "0000.png"))
        cv2.imwrite(str(folder / name), image)
    (folder / "notes.txt").write_text("not an image")
    notes = []
    found = expand_inputs([folder, str(image_folder / "test" / "*" / "0001.png"), image_folder / "test/cat/0000.png"],
                          log=notes.append)
    assert found[:3] == [folder / "b.png", folder / "c.jpg", folder / "sub" / "a.PNG"]  # sorted by path
    assert found[3:13] == sorted((image_folder / "test").glob("*/0001.png"))
    assert found[13:] == [image_folder / "test" / "cat" / "0000.png"]
    assert notes == [f"{folder}: left out 1 files that are not .jpg/.jpeg/.png images"]
    recursive = expand_inputs([str(folder / "**" / "*.PNG")])
    assert recursive == [folder / "sub" / "a.PNG"]


@pytest.mark.parametrize("make, says", [
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "a folder with no .jpg/.jpeg/.png image files"),
    (lambda tmp: str(tmp / "*.jpg"), "the pattern matches no .jpg/.jpeg/.png image file"),
    (lambda tmp: tmp / "gone.png", "no such image file"),
])
def test_inputs_that_hold_no_image_are_named_before_the_model_loads(run_dir, tmp_path, make, says, capsys):
    given = make(tmp_path)
    assert main([str(run_dir), str(given)]) == 2
    assert f"{given}: {says}" in capsys.readouterr().err


def test_batches_give_the_same_probabilities(run_dir, image_folder):
    paths = sorted((image_folder / "test").glob("*/*.png"))[:5]
    probs = expected_probabilities(run_dir, paths)
    for batch_size in (1, 2, 64):
        for top, p in zip(predict(run_dir, paths, top_k=10, batch_size=batch_size), probs):
            assert {name: v for name, v in top} == pytest.approx(dict(zip(CLASS_NAMES, p.tolist())), abs=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_output_file_holds_every_images_top_k(run_dir, images, tmp_path, suffix, capsys):
    import csv
    import json

    out = tmp_path / "out" / f"results{suffix}"
    assert main([str(run_dir), *map(str, images), "--top-k", "2", "--batch-size", "2", "--output", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"written: {out} (3 images)"
    probs = expected_probabilities(run_dir, images)
    if suffix == ".csv":
        rows = list(csv.reader(out.open()))
        assert rows[0] == ["path", "class_1", "prob_1", "class_2", "prob_2"]
        table = [(row[0], [(row[1], float(row[2])), (row[3], float(row[4]))]) for row in rows[1:]]
    else:
        table = [(e["path"], [(t["class"], t["probability"]) for t in e["top_k"]]) for e in json.loads(out.read_text())]
    assert [path for path, _ in table] == [str(p) for p in images]
    for (_, top), p in zip(table, probs):
        order = np.argsort(-p, kind="stable")[:2]
        assert [name for name, _ in top] == [CLASS_NAMES[i] for i in order]
        assert [v for _, v in top] == pytest.approx(p[order].tolist(), abs=1e-6)


def test_an_output_of_another_suffix_is_refused_before_work(run_dir, images, tmp_path, capsys):
    assert main([str(run_dir), str(images[0]), "--output", str(tmp_path / "results.txt")]) == 2
    assert "predict writes a .csv or .json file, chosen by the suffix; got .txt" in capsys.readouterr().err
    assert not (tmp_path / "results.txt").exists()
