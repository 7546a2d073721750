"""Fine-tuning: model.pretrained initialises the model strictly, except a classifier of another
number of classes, which starts new and is reported by name."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from helpers import make_run_dir, run_train, write_learnable_image_folder

from simam_paddle import build_model
from simam_paddle.config import ConfigError, load_config
from simam_paddle.models import WeightsMismatch
from simam_paddle.models.from_config import build_from_config
from simam_paddle.models.weights import load_pretrained
from simam_paddle.run_dir import pretrained_path


def config_for(name: str, num_classes: int, pretrained) -> dict:
    return load_config(None, [f"model.name={name}", f"model.num_classes={num_classes}", f"model.pretrained={pretrained}"])


def pretrain(model, config: dict) -> str:
    """What training does with model.pretrained."""
    path = pretrained_path(config["model"]["pretrained"])
    return load_pretrained(model, path, config["model"]["name"], source=f"model.pretrained {path}")


def arrays(state: dict) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in state.items()}


@pytest.mark.parametrize("name, head", [("resnet18_simam", ("fc.weight", "fc.bias")),
                                        ("mobilenet_v2_simam", ("classifier.1.weight", "classifier.1.bias")),
                                        ("alexnet_simam", ("classifier.6.weight", "classifier.6.bias"))])
def test_another_number_of_classes_keeps_a_new_classifier_and_loads_everything_else(name, head, tmp_path):
    paddle.seed(1)
    source = arrays(build_model(name, num_classes=1000).state_dict())
    paddle.save({k: paddle.to_tensor(v) for k, v in source.items()}, str(tmp_path / "imagenet.pdparams"))
    config = config_for(name, 3, tmp_path / "imagenet.pdparams")
    paddle.seed(2)
    model = build_from_config(config)
    built = arrays(model.state_dict())
    said = pretrain(model, config)
    assert f"except the classifier {head[0]}, {head[1]}, which starts new: the weights have 1000 classes, the model 3" in said
    after = arrays(model.state_dict())
    for key, value in after.items():
        np.testing.assert_array_equal(value, built[key] if key in head else source[key], err_msg=key)
    body = next(k for k in after if k not in head)
    assert not np.array_equal(source[body], built[body])  # the two models started apart: the load did something


def test_the_same_number_of_classes_loads_every_parameter_from_a_run_directory(tmp_path):
    run = make_run_dir(tmp_path / "run", "model.name=resnet18_simam")  # CIFAR-10: 10 classes
    saved = arrays(paddle.load(str(run / "best_model.pdparams")))
    config = config_for("resnet18_simam", 10, run)
    model = build_from_config(config)
    assert "(every parameter)" in pretrain(model, config)
    for key, value in arrays(model.state_dict()).items():
        np.testing.assert_array_equal(value, saved[key], err_msg=key)


def test_weights_of_another_model_are_refused_by_name(tmp_path):
    paddle.save(build_model("resnet34", num_classes=10).state_dict(), str(tmp_path / "r34.pdparams"))
    config = config_for("resnet18_simam", 3, tmp_path / "r34.pdparams")
    with pytest.raises(WeightsMismatch, match=r"model.pretrained .*r34.pdparams does not fit the model resnet18_simam "
                                              r"\(unexpected: layer1.2"):
        pretrain(build_from_config(config), config)
    config = config_for("resnet18_simam", 3, tmp_path / "nothing.pdparams")
    with pytest.raises(ConfigError, match=r"model.pretrained .*nothing.pdparams: no such weights file"):
        pretrain(build_from_config(config), config)


@pytest.mark.integration
def test_a_run_fine_tunes_from_weights_of_another_number_of_classes_and_says_so(tmp_path):
    paddle.save(build_model("mobilenet_v2_simam", num_classes=10).state_dict(), str(tmp_path / "ten.pdparams"))
    root = write_learnable_image_folder(tmp_path / "data", 4, 2, classes=["a", "b", "c"])
    out = tmp_path / "run"
    run_train("-o", "model.name=mobilenet_v2_simam", "-o", f"model.pretrained={tmp_path / 'ten.pdparams'}",
              "-o", "data.image_size=32", "-o", f"data.root={root}", "-o", f"train.output_dir={out}",
              "-o", "data.batch_size=4", "-o", "data.num_workers=0", "-o", "train.epochs=1", "-o", "train.throughput_batches=1")
    log = (out / "train.log").read_text()
    assert ("except the classifier classifier.1.weight, classifier.1.bias, which starts new: the weights have 10 "
            "classes, the model 3") in log
