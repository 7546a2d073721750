"""The attention figure: simam_weight is the layer's weight, one map per SimAM layer, a PNG of known size."""

from __future__ import annotations

import cv2
import numpy as np
import paddle
import pytest
from helpers import make_run_dir, reference_simam

from simam_paddle import SimAM, build_model
from simam_paddle.layers.simam import simam_weight
from simam_paddle.visualize import attention_maps, figure_pixels, main, visualize


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
    width, height = figure_pixels(2, 8)
    assert cv2.imread(str(out)).shape == (height, width, 3)


def test_model_without_simam_is_an_error(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", "model.name=alexnet")
    assert main([str(run), "--num-images", "1"]) == 2
    assert "AlexNet has no SimAM layer" in capsys.readouterr().err
    assert not (run / "attention.png").exists()
