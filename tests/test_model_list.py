"""The model list: every name build_model accepts, with its parameter count, from Python and the command line."""

from __future__ import annotations

import paddle
import pytest
from helpers import run_train

from simam_paddle import build_model, list_models
from simam_paddle.layers import SimAM
from simam_paddle.model_list import MODEL_LIST
from simam_paddle.models import MODELS, parameter_count


# Trainable parameters for 10 classes, from the published 1000-class counts of torchvision's models
# (ResNet-18 11,689,512; ResNet-34 21,797,672; ResNet-50 25,557,032; ResNet-101 44,549,160;
# ResNet-152 60,192,808; MobileNetV2 3,504,872) minus the 1000-class head plus a 10-class one, and
# AlexNet's hand count (tests/test_models.py). SimAM adds none.
def _ten_classes(published: int, features: int) -> int:
    return published - (features + 1) * 1000 + (features + 1) * 10


EXPECTED = {
    "alexnet": 7_524_042,
    "resnet18": _ten_classes(11_689_512, 512),
    "resnet34": _ten_classes(21_797_672, 512),
    "resnet50": _ten_classes(25_557_032, 2048),
    "resnet101": _ten_classes(44_549_160, 2048),
    "resnet152": _ten_classes(60_192_808, 2048),
    "mobilenet_v2": _ten_classes(3_504_872, 1280),
}
EXPECTED |= {f"{name}_simam": count for name, count in EXPECTED.items()}


def test_list_models_names_every_registered_model():
    assert list_models() == sorted(EXPECTED) == sorted(MODELS) == sorted(MODEL_LIST)


def test_list_models_on_the_command_line_gives_every_name_with_its_parameter_count():
    lines = run_train("--list-models").stdout.splitlines()
    assert lines[0].startswith("model.name") and "10 classes" in lines[0]
    printed = {name: int(count.replace(",", "")) for name, count, *_ in (line.split() for line in lines[1:])}
    assert printed == EXPECTED


@pytest.mark.parametrize("name", sorted(MODEL_LIST))
def test_the_static_model_list_is_what_each_model_builds(name):
    """--list-models answers from a table, without Paddle: each row must be what build_model builds."""
    row, model = MODEL_LIST[name], build_model(name)
    assert row.parameters == parameter_count(model)
    assert row.simam_layers == sum(isinstance(layer, SimAM) for layer in model.sublayers())
    assert row.input_size == MODELS[name].input_size
    assert (", SimAM" in row.description) == name.endswith("_simam")


def test_mobilenet_v2_simam_follows_each_depthwise_convolution():
    plain, model = build_model("mobilenet_v2"), build_model("mobilenet_v2_simam", e_lambda=0.1)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    hosts = [name for name, layer in model.named_sublayers() if isinstance(getattr(layer, "attn", None), SimAM)]
    depthwise = [name for name, layer in model.named_sublayers()
                 if isinstance(layer, paddle.nn.Conv2D) and layer._groups == layer._in_channels > 1]
    assert hosts == depthwise and len(hosts) == 17  # one per InvertedResidual
    assert all(layer.e_lambda == 0.1 for layer in model.sublayers() if isinstance(layer, SimAM))
    x = paddle.randn([2, 3, 64, 64])
    model.set_state_dict(plain.state_dict())
    plain.eval(), model.eval()
    out = model(x)
    assert list(out.shape) == [2, 10] and not paddle.allclose(out, plain(x))


@pytest.mark.parametrize("name", ["resnet18_simam", "mobilenet_v2_simam"])
def test_models_of_any_input_size(name):
    model = build_model(name, num_classes=3)
    model.eval()
    for size in (32, 96, 160):
        assert list(model(paddle.randn([1, 3, size, size])).shape) == [1, 3]


# The facts of each model's record, stated here independently: the classifier by its layer name, the SimAM
# layers by count (one per conv in AlexNet, one per block in a ResNet, one per depthwise conv in MobileNetV2).
RECORD_FACTS = {
    "alexnet": ("classifier.6", 2048, 0), "alexnet_simam": ("classifier.6", 2048, 5),
    "resnet18": ("fc", 512, 0), "resnet18_simam": ("fc", 512, 8), "resnet50_simam": ("fc", 2048, 16),
    "mobilenet_v2": ("classifier.1", 1280, 0), "mobilenet_v2_simam": ("classifier.1", 1280, 17),
}


@pytest.mark.parametrize("name", sorted(RECORD_FACTS))
def test_each_record_names_the_classifier_and_the_simam_sites_of_its_model(name):
    from fnmatch import fnmatchcase

    from simam_paddle.models import MODELS

    classifier, features, simams = RECORD_FACTS[name]
    record, model = MODELS[name], build_model(name, num_classes=7)
    assert record.classifier == classifier and record.head == (f"{classifier}.weight", f"{classifier}.bias")
    assert list(model.state_dict()[record.head[0]].shape) == [features, 7]  # a Linear of 7 classes
    sites = [n for n, layer in model.named_sublayers() if isinstance(layer, SimAM)]
    assert len(sites) == simams
    assert all(any(fnmatchcase(n, p) for p in record.attention_sites) for n in sites), (sites, record.attention_sites)
    assert (record.official_lambda == 0.1) == (name.endswith("_simam") and not name.startswith("alexnet"))
