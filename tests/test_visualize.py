"""The attention figure: simam_weight is the layer's weight, one map per SimAM layer, a PNG of known size."""

from __future__ import annotations

import cv2
import numpy as np
import paddle
import pytest
from helpers import make_run_dir, reference_simam

from simam_paddle import SimAM, build_model
from simam_paddle.layers.simam import simam_weight
from simam_paddle.visualize import COLUMNS, DEFAULT_LAYERS, attention_maps, figure_pixels, layer_names, main, visualize


@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 4, 1, 1), (2, 2, 32, 32)])
@pytest.mark.parametrize("lam", [1e-5, 0.1])
def test_simam_weight_is_what_the_layer_applies(shape, lam):
    x = np.random.randn(*shape).astype(np.float32)
    weight = simam_weight(paddle.to_tensor(x), lam).numpy()
    assert weight.shape == shape and np.isfinite(weight).all()
    assert weight.min() >= 1 / (1 + np.exp(-0.5)) - 1e-6 and weight.max() < 1
    np.testing.assert_allclose(weight * x, reference_simam(x, lam), rtol=1e-5, atol=1e-6)  # the formula, plainly
    y = SimAM(e_lambda=lam)(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(y, weight * x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name, size, shapes",
    [
        ("alexnet_simam", 128, [(32, 32), (15, 15), (7, 7), (7, 7), (7, 7)]),
        ("resnet18_simam", 32, [(8, 8)] * 2 + [(4, 4)] * 2 + [(2, 2)] * 2 + [(1, 1)] * 2),
    ],
)
def test_one_map_per_simam_layer_in_call_order(name, size, shapes):
    model = build_model(name)
    model.eval()
    maps, logits = attention_maps(model, np.random.randn(3, 3, size, size).astype(np.float32))
    assert [m.shape for _, m in maps] == [(3, *s) for s in shapes]
    assert [n for n, _ in maps] == [n for n, layer in model.named_sublayers() if isinstance(layer, SimAM)]
    assert logits.shape == (3, 10)
    assert all(np.isfinite(m).all() and m.min() > 0.62 for _, m in maps)
    # hooks are removed afterwards
    assert all(not layer._forward_pre_hooks for layer in model.sublayers() if isinstance(layer, SimAM))


def test_png_of_real_images_has_the_expected_size(tmp_path, cifar10_jpeg):
    run = make_run_dir(tmp_path / "run", "model.name=alexnet_simam", f"data.root={cifar10_jpeg}")
    path = visualize(run, num_images=3)
    assert path == run / "attention.png"
    image = cv2.imread(str(path))
    width, height = figure_pixels(3, 5)
    assert image.shape == (height, width, 3)
    assert image.std() > 10  # not a blank canvas


def test_command_line_with_rendered_images(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", "model.name=resnet18_simam", weights=("final",))
    out = tmp_path / "figures" / "attention.png"  # --output is the folder
    assert main([str(run), "--output", str(out.parent), "--num-images", "2", "--weights", "final"]) == 0
    assert "2 images (2 rendered 32x32 images" in capsys.readouterr().out
    width, height = figure_pixels(2, DEFAULT_LAYERS)  # 6 of ResNet-18's 8 layers by default
    assert cv2.imread(str(out)).shape == (height, width, 3)


def test_model_without_simam_is_an_error(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", "model.name=alexnet")
    assert main([str(run), "--num-images", "1"]) == 2
    assert "AlexNet has no SimAM layer" in capsys.readouterr().err
    assert not (run / "attention.png").exists()


# The names a reader knows, written out by hand from each architecture's layout.
@pytest.mark.parametrize("name, expected", [
    ("alexnet_simam", ["conv1", "conv2", "conv3", "conv4", "conv5"]),
    ("resnet18_simam", [f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)]),
    ("mobilenet_v2_simam", [f"block{k}" for k in range(1, 18)]),
])
def test_layers_have_the_names_of_stage_and_block(name, expected):
    model = build_model(name)
    assert layer_names([n for n, layer in model.named_sublayers() if isinstance(layer, SimAM)]) == expected


def test_layers_chosen_by_name_all_or_a_default_subset(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", "model.name=mobilenet_v2_simam", "data.image_size=32")
    out = tmp_path / "out"
    assert main([str(run), "--output", str(out), "--num-images", "1"]) == 0
    assert "x 6 SimAM layers" in capsys.readouterr().out  # 17 sites: 6 by default, evenly spaced
    width, height = figure_pixels(1, DEFAULT_LAYERS)
    assert cv2.imread(str(out / "attention.png")).shape == (height, width, 3)
    assert main([str(run), "--output", str(out), "--num-images", "1", "--layers", "all"]) == 0
    assert "x 17 SimAM layers" in capsys.readouterr().out
    width, height = cv2.imread(str(out / "attention.png")).shape[1::-1]
    assert (width, height) == figure_pixels(1, 17) and width <= COLUMNS * 160  # 18 panels wrap into 2 rows
    assert height > 2 * 160
    assert main([str(run), "--output", str(out), "--num-images", "1", "--layers", "block17", "block1"]) == 0
    assert "x 2 SimAM layers" in capsys.readouterr().out
    assert main([str(run), "--output", str(out), "--layers", "block18"]) == 2
    err = capsys.readouterr().err
    assert "--layers block18: no such SimAM layer" in err and "block1 block2" in err


def test_own_images_as_input(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", "model.name=resnet18_simam", "data.image_size=32")
    files = []
    for k, colour in enumerate([(255, 0, 0), (0, 128, 255)]):
        image = np.zeros((40, 50, 3), np.uint8)
        image[10:30, 15:35] = colour
        files.append(tmp_path / f"mine{k}.png")
        cv2.imwrite(str(files[-1]), image)
    assert main([str(run), "--output", str(tmp_path), "--images", *map(str, files), "--layers", "all"]) == 0
    assert "2 images (2 given image(s)) x 8 SimAM layers" in capsys.readouterr().out
    assert cv2.imread(str(tmp_path / "attention.png")).shape[1::-1] == figure_pixels(2, 8)
    assert main([str(run), "--output", str(tmp_path), "--images", str(tmp_path / "none.png")]) == 2
    assert "none.png: no such image file" in capsys.readouterr().err
