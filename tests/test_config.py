"""Config loading: defaults, files, overrides, and errors that name the key."""

from __future__ import annotations

import pytest
from helpers import REPO_ROOT

from simam_paddle.config import SCHEMA, ConfigError, defaults, describe, load_config, parse_override

CONFIGS = REPO_ROOT / "configs"


def test_every_key_has_a_default_and_a_comment():
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            assert key.doc.strip(), f"{section}.{name} has no description"
    text = describe()
    assert "train:\n" in text and "  epochs: 50  # number of epochs" in text


@pytest.mark.parametrize("name", ["alexnet", "alexnet_simam"])
def test_reproduction_configs_hold_the_notebook_recipe(name):
    c = load_config(CONFIGS / f"{name}.yaml")
    assert c["model"] == {"name": name, "num_classes": 10, "e_lambda": 1e-5, "dropout": 0.5, "pretrained": None,
                          "pretrained_other_model": False, "fast_conv": True}
    assert c["data"]["image_size"] == 128
    assert c["data"]["train_transforms"] == "recipe"
    assert c["data"]["mixup_alpha"] == 0.0
    assert (c["data"]["batch_size"], c["data"]["num_workers"]) == (128, None)  # workers: auto
    assert (c["data"]["limit_train"], c["data"]["limit_val"]) == (None, None)
    assert c["loss"]["smoothing"] == 0.1
    t = c["train"]
    assert (t["epochs"], t["lr"], t["weight_decay"], t["seed"]) == (50, 5e-4, 1e-5, 42)


def test_the_two_reproduction_configs_differ_only_in_model_name_and_output():
    a, b = load_config(CONFIGS / "alexnet.yaml"), load_config(CONFIGS / "alexnet_simam.yaml")
    a["model"]["name"] = b["model"]["name"]
    a["train"]["output_dir"] = b["train"]["output_dir"]
    assert a == b


def test_mixup_config_turns_mixup_on():
    c = load_config(CONFIGS / "alexnet_simam_mixup.yaml")
    assert c["data"]["mixup_alpha"] == 0.2 and c["model"]["name"] == "alexnet_simam"


def test_overrides_take_precedence_and_are_read_as_yaml():
    c = load_config(CONFIGS / "alexnet.yaml", ["train.epochs=3", "data.root=/tmp/x", "train.lr=1e-3", "data.limit_val=null"])
    assert c["train"]["epochs"] == 3 and c["data"]["root"] == "/tmp/x" and c["train"]["lr"] == 1e-3
    assert c["data"]["limit_val"] is None


def test_defaults_without_a_file():
    assert load_config(None) == defaults()


def test_float_written_without_a_dot_is_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 5e-4\n")  # YAML 1.1 reads this as the string "5e-4"
    assert load_config(path)["train"]["lr"] == 5e-4


def test_bare_off_is_the_string_off(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  amp: off\n")
    assert load_config(path)["train"]["amp"] == "off"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", r"unknown key train\.epoch; valid keys of train: epochs"),
        ("trian.epochs=3", r"unknown section 'trian'; valid sections: model, data, loss, train"),
        ("train.epochs=three", r"train\.epochs: expected int, got 'three'"),
        ("train.epochs=0", r"train\.epochs: expected between 1 and 100,000, got 0"),
        ("train.seed=-1", r"train\.seed: expected between 0 and 4,294,967,295"),
        ("data.batch_size=0", r"data\.batch_size: expected >= 1, got 0"),
        ("data.batch_size=1.5", r"data\.batch_size: expected int"),
        ("loss.smoothing=1.0", r"loss\.smoothing: expected in \[0, 1\), got 1\.0"),
        ("loss.smoothing=-0.1", r"loss\.smoothing: expected in \[0, 1\)"),
        ("model.name=resnet_typo", r"model\.name: expected a name build_model knows: alexnet, alexnet_simam"),
        ("train.resume=yes please", r"train\.resume: expected bool"),
        ("train.lr=nan", r"train\.lr: expected float"),
        ("data.limit_train=0", r"data\.limit_train: expected >= 1 or null"),
        ("train.epochs", r"expected section\.key=value"),
        ("epochs=3", r"expected section\.key=value"),
    ],
)
def test_bad_values_name_the_key_and_what_was_expected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "alexnet.yaml", [override])


def test_bad_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*nope\.yaml not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(notmap)


def test_parse_override():
    assert parse_override("data.root=a=b") == {"data": {"root": "a=b"}}


def test_print_config_shows_resolved_values_with_comments():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "simam_paddle.train", "--config", str(CONFIGS / "alexnet.yaml"),
                           "-o", "train.epochs=7", "--print-config"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "  epochs: 7  # number of epochs" in proc.stdout
    assert "  name: alexnet  # model to train" in proc.stdout


@pytest.mark.parametrize("overrides, message", [
    (["model.name=resnet18", "model.dropout=0.3"], r"model.dropout applies to AlexNet models only; resnet18 has no dropout"),
    (["model.name=alexnet", "data.image_size=64"], r"data.image_size=64: alexnet takes 128x128 images only"),
])
def test_keys_that_contradict_each_other_are_refused_when_the_config_is_read(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    assert load_config(None, overrides[:1])["model"]["name"] == overrides[0].split("=")[1]  # each key alone is fine
