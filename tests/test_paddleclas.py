"""SimAM in PaddleClas 2.6: the default placement in its backbones, checked against the paper's rule; the
SimAM architectures in PaddleClas's architecture lookup; plain pretrained weights loading unchanged;
export parity; and the command line that runs PaddleClas's own tools.

Two groups, each running where it can:
- the command line's mechanism, on a stand-in PaddleClas source tree written here: everywhere;
- everything on PaddleClas's real backbones: where ``paddleclas`` (the wheel) imports, else skipped,
  saying so (the main environment cannot hold it: it pins numpy 1.24.4). ``scripts/paddleclas_venv.sh``
  makes a venv with it and runs this module there; CI does that.
PaddleClas's engine, from its source tree, is tested in test_paddleclas_engine.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import paddle
import pytest
from helpers import REPO_ROOT, reference_simam, run_tool
from paddle import nn
from readme import blocks, run_block, section

from simam_paddle import SimAM, add_simam, paddleclas

NO_PADDLECLAS = (
    "PaddleClas not installed (it pins numpy==1.24.4): scripts/paddleclas_venv.sh runs this module in a venv that has it"
)


@pytest.fixture(scope="module")
def arch():
    """PaddleClas's architecture lookup (the wheel's ``paddleclas.ppcls.arch``) with the SimAM architectures registered."""
    try:
        import paddleclas.ppcls.arch as arch
    except ModuleNotFoundError as exc:
        if exc.name != "paddleclas":
            raise
        pytest.skip(NO_PADDLECLAS)
    paddleclas.register(arch)
    return arch


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two outputs differ by more than float rounding, relative to their size (untrained logits can be tiny)."""
    return np.abs(a - b).max() > 1e-3 * np.abs(b).max()


def simam_sites(model: nn.Layer) -> list[str]:
    """Names of the layers that a SimAM follows (SimAM is their child ``attn``)."""
    return [name.removesuffix(".attn") for name, layer in model.named_sublayers() if isinstance(layer, SimAM)]


# ---------------------------------------------------------------------------------------------------------------
# The default placement in PaddleClas's backbones

# Blocks per backbone, from the architectures' definitions (the paper's rule puts one SimAM in each).
SITES = {
    "ResNet18": 8, "ResNet18_vd": 8, "ResNet34": 16, "ResNet34_vd": 16, "ResNet50": 16, "ResNet50_vd": 16,
    "ResNet101_vd": 33, "MobileNetV1": 13, "MobileNetV3_small_x1_0": 11, "MobileNetV3_large_x1_0": 15,
    "PPLCNet_x1_0": 13, "PPLCNet_x0_25": 13,
}
# A few of them, small and of every family, for the slower checks.
FAMILIES = ["ResNet18", "ResNet50_vd", "MobileNetV1_x0_25", "MobileNetV3_small_x0_35", "PPLCNet_x0_25"]


@pytest.mark.paddleclas
@pytest.mark.parametrize("name, count", SITES.items())
def test_default_placement_counts_one_simam_per_block(arch, name, count):
    model = getattr(arch, name)(class_num=10)
    keys = list(model.state_dict())
    assert add_simam(model) == count == len(simam_sites(model))
    assert list(model.state_dict()) == keys


@pytest.mark.paddleclas
def test_other_backbones_have_no_default_placement_and_look_alike_blocks_are_named(arch):
    from paddleclas.ppcls.arch.backbone.legendary_models import resnet

    with pytest.raises(ValueError, match="PPLCNetV2 has no block of a paddle.vision.models ResNet"):
        add_simam(arch.PPLCNetV2_small(class_num=10))
    # a ResNet whose conv1 units are DiverseBranchBlocks: its BasicBlocks are not built like ResNet18's
    dbb = resnet.ResNet(config=resnet.NET_CONFIG["18"], stages_pattern=resnet.MODEL_STAGES_PATTERN["ResNet18"],
                        layer_type="DiverseBranchBlock", class_num=10)
    with pytest.raises(ValueError, match=r"BasicBlock blocks.0, blocks.1, blocks.2 and 5 more: named like a block"):
        add_simam(dbb)
    assert simam_sites(dbb) == []


def _trace(model: nn.Layer, x: paddle.Tensor) -> list[tuple[str, nn.Layer]]:
    """The convolutions and BatchNorms of ``model`` in the order a forward pass runs them."""
    order, handles = [], []
    for name, layer in model.named_sublayers():
        if isinstance(layer, (nn.Conv2D, nn.BatchNorm, nn.BatchNorm2D)):
            handles.append(layer.register_forward_post_hook(lambda lyr, i, o, name=name: order.append((name, lyr))))
    with paddle.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return order


def _papers_sites(name: str, order: list[tuple[str, nn.Layer]]) -> dict[str, str]:
    """The paper's rule, from the traced run alone: {conv: the BatchNorm right after it}.

    ResNets: the last 3x3 convolution that runs in each residual block (a child of ``blocks``); mobile
    networks: every depthwise convolution (groups == in == out channels > 1).
    """
    convs = [(i, n) for i, (n, layer) in enumerate(order) if isinstance(layer, nn.Conv2D)]
    if name.startswith("ResNet"):
        last_3x3 = {}
        for i, n in convs:
            conv = order[i][1]
            if n.startswith("blocks.") and list(conv._kernel_size) == [3, 3] and conv._groups == 1:
                last_3x3[".".join(n.split(".")[:2])] = i
        chosen = sorted(last_3x3.values())
    else:
        chosen = [i for i, n in convs if order[i][1]._groups == order[i][1]._in_channels == order[i][1]._out_channels > 1]
    sites = {}
    for i in chosen:
        following = order[i + 1][1]
        assert isinstance(following, (nn.BatchNorm, nn.BatchNorm2D)), f"{order[i][0]} is not followed by a BatchNorm"
        sites[order[i][0]] = order[i + 1][0]
    return sites


@pytest.mark.paddleclas
@pytest.mark.parametrize("name", FAMILIES)
def test_default_placement_is_the_papers_rule(arch, name):
    """Each SimAM takes the raw output of the convolution the paper's rule names, and its BatchNorm takes SimAM's output."""
    model = getattr(arch, name)(class_num=10)
    model.eval()
    x = paddle.randn([1, 3, 64, 64])
    expected = _papers_sites(name, _trace(model, x))
    add_simam(model, e_lambda=1e-4)
    assert sorted(simam_sites(model)) == sorted(expected)

    layers, seen = dict(model.named_sublayers()), {}

    def record(layer: nn.Layer, key: tuple[str, str]) -> None:
        layer.register_forward_pre_hook(lambda lyr, inputs: seen.__setitem__(key, inputs[0].numpy()))

    for conv_name, bn_name in expected.items():
        record(layers[conv_name], (conv_name, "conv_in"))
        record(layers[conv_name].attn, (conv_name, "attn_in"))
        record(layers[bn_name], (conv_name, "bn_in"))
    with paddle.no_grad():
        model(x)
    for conv_name in expected:
        conv = layers[conv_name]
        conv_out = nn.functional.conv2d(
            paddle.to_tensor(seen[conv_name, "conv_in"]), conv.weight, conv.bias, stride=conv._stride,
            padding=conv._padding, dilation=conv._dilation, groups=conv._groups,
        ).numpy()
        np.testing.assert_allclose(seen[conv_name, "attn_in"], conv_out, rtol=1e-4, atol=1e-4, err_msg=conv_name)
        np.testing.assert_allclose(seen[conv_name, "bn_in"], reference_simam(conv_out, 1e-4), rtol=1e-4, atol=1e-4,
                                   err_msg=conv_name)


@pytest.mark.paddleclas
@pytest.mark.parametrize("name", FAMILIES)
def test_forward_and_backward(arch, name):
    plain = getattr(arch, name)(class_num=5)
    model = getattr(arch, "SimAM_" + name)(class_num=5)
    model.set_state_dict(plain.state_dict())
    x, label = paddle.randn([2, 3, 64, 64]), paddle.to_tensor([[1], [3]])
    model.eval(), plain.eval()
    assert differs(model(x).numpy(), plain(x).numpy())  # the same weights, SimAM at work
    model.train()
    loss = nn.functional.cross_entropy(model(x), label)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if not p.stop_gradient}
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads.values())
    for site in simam_sites(model):  # the gradient reaches every convolution that a SimAM follows
        assert np.abs(grads[f"{site}.weight"].numpy()).sum() > 0, site


@pytest.mark.paddleclas
def test_a_simam_backbone_trains(arch):
    """A few Momentum steps on one batch lower its loss: SimAM's gradient is usable."""
    model = arch.SimAM_ResNet18(class_num=4)
    optimizer = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, parameters=model.parameters())
    x, label = paddle.randn([8, 3, 32, 32]), paddle.to_tensor([[i % 4] for i in range(8)])
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(x), label)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses


@pytest.mark.paddleclas
@pytest.mark.parametrize("name", ["ResNet50_vd", "PPLCNet_x0_25"])
def test_jit_save_and_paddle_inference_match_the_dynamic_graph(arch, name, tmp_path):
    from simam_paddle.runner import paddle_runner

    model = getattr(arch, "SimAM_" + name)(class_num=10)
    model.eval()
    paddle.jit.save(model, str(tmp_path / "model"), input_spec=[paddle.static.InputSpec([None, 3, 64, 64], "float32", "x")])
    run = paddle_runner(tmp_path)
    x = np.random.default_rng(0).standard_normal([3, 3, 64, 64]).astype(np.float32)
    expected = model(paddle.to_tensor(x)).numpy()
    for batch in (x, x[:1]):
        got = run(batch)
        assert np.abs(got - expected[: len(batch)]).max() <= 1e-4 * max(1.0, np.abs(expected).max())


# ---------------------------------------------------------------------------------------------------------------
# The SimAM architectures in PaddleClas's architecture lookup


@pytest.mark.paddleclas
def test_register_adds_a_simam_twin_of_every_known_backbone(arch):
    names = paddleclas.register(arch)
    assert len(names) == 33 and names == sorted(names)
    for expected in ("SimAM_ResNet50_vd", "SimAM_ResNet18", "SimAM_MobileNetV3_large_x1_0", "SimAM_PPLCNet_x1_0",
                     "SimAM_MobileNetV1"):
        assert expected in names and callable(getattr(arch, expected))
    assert not any(n.startswith(("SimAM_PPLCNetV2", "SimAM_ResNet50_vc", "SimAM_SE_")) for n in names)


@pytest.mark.paddleclas
def test_a_paddleclas_config_builds_the_simam_backbone(arch, tmp_path):
    """PaddleClas's own config loader and build_model, as its engine calls them, given Arch.name: SimAM_ResNet50_vd."""
    from paddleclas.ppcls.utils.config import get_config

    path = tmp_path / "SimAM_ResNet50_vd.yaml"
    path.write_text("Arch:\n  name: ResNet50_vd\n  class_num: 10\n")
    config = get_config(str(path), overrides=["Arch.name=SimAM_ResNet50_vd", "Arch.e_lambda=0.001"], show=False)
    model = arch.build_model(config)
    assert type(model).__name__ == "ResNet" and len(simam_sites(model)) == 16
    assert all(layer.e_lambda == 0.001 for layer in model.sublayers() if isinstance(layer, SimAM))
    assert model(paddle.randn([1, 3, 64, 64])).shape == [1, 10]


@pytest.mark.paddleclas
def test_plain_pretrained_weights_load_into_the_simam_backbone_unchanged(arch, tmp_path):
    """A plain ResNet50_vd's .pdparams (as PaddleClas publishes them) loads through PaddleClas's own loader."""
    plain = arch.ResNet50_vd(class_num=10)
    paddle.save(plain.state_dict(), str(tmp_path / "ResNet50_vd_pretrained.pdparams"))
    model = arch.build_model({"Arch": {"name": "SimAM_ResNet50_vd", "class_num": 10,
                                       "pretrained": str(tmp_path / "ResNet50_vd_pretrained")}})
    loaded, saved = model.state_dict(), plain.state_dict()
    assert list(loaded) == list(saved)
    assert all(np.array_equal(loaded[k].numpy(), saved[k].numpy()) for k in saved)
    # the same as the plain network with SimAM inserted by hand, and not the plain network
    reference = arch.ResNet50_vd(class_num=10)
    reference.set_state_dict(saved)
    add_simam(reference)
    model.eval(), plain.eval(), reference.eval()
    x = paddle.randn([2, 3, 64, 64])
    np.testing.assert_allclose(model(x).numpy(), reference(x).numpy(), rtol=1e-5, atol=1e-5)
    assert differs(model(x).numpy(), plain(x).numpy())


@pytest.mark.paddleclas
def test_the_readme_examples_print_what_they_say(arch):
    examples = blocks("py", section("SimAM in PaddleClas"))
    assert examples, "README.md's PaddleClas section has no ```py example"
    for block in examples:
        run_block(block)


# ---------------------------------------------------------------------------------------------------------------
# The command line, on a stand-in PaddleClas source tree: a ppcls.arch whose build_model looks Arch.name up in
# itself, as PaddleClas's does, and a tools/train.py that builds the config's model and reports it.

STAND_IN_ARCH = '''
import importlib
from paddle.vision.models import resnet18

def ResNet18(class_num=1000, **kwargs):
    return resnet18(num_classes=class_num)

def build_model(config):
    arch = dict(config["Arch"])
    return getattr(importlib.import_module(__name__), arch.pop("name"))(**arch)
'''
STAND_IN_TRAIN = '''
import json, sys
from ppcls.arch import build_model
from simam_paddle import SimAM

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
if args["-o"] == "fail":
    raise RuntimeError("the stand-in tool failed")
model = build_model({"Arch": {"name": args["-o"].split("=")[1], "class_num": 3}})
with open(args["--report"], "w") as f:
    json.dump({"argv": sys.argv, "simams": sum(isinstance(m, SimAM) for m in model.sublayers())}, f)
'''


@pytest.fixture
def stand_in_tree(tmp_path) -> Path:
    root = tmp_path / "PaddleClas"
    for folder, files in {"ppcls": {"__init__.py": ""}, "ppcls/engine": {"__init__.py": ""},
                          "ppcls/arch": {"__init__.py": STAND_IN_ARCH}, "tools": {"train.py": STAND_IN_TRAIN}}.items():
        (root / folder).mkdir(parents=True)
        for name, text in files.items():
            (root / folder / name).write_text(text)
    return root


def without_source_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != paddleclas.SOURCE_ENV}


def test_the_command_line_runs_a_paddleclas_tool_with_the_simam_architectures(stand_in_tree, tmp_path):
    report, config = tmp_path / "report.json", tmp_path / "my.yaml"
    config.write_text("Arch: {}\n")
    tool = stand_in_tree / "tools" / "train.py"
    proc = run_tool("paddleclas", tool, "-c", config, "-o", "Arch.name=SimAM_ResNet18", "--report", report,
                    env=without_source_env())
    assert "SimAM architectures registered in PaddleClas" in proc.stderr
    assert "simam-paddle: built SimAM_ResNet18 with 8 SimAMs (e_lambda 0.0001)" in proc.stderr
    result = json.loads(report.read_text())
    assert result["simams"] == 8  # a SimAM in each of ResNet-18's 8 blocks
    assert result["argv"] == [str(tool), "-c", str(config), "-o", "Arch.name=SimAM_ResNet18", "--report", str(report)]


@pytest.mark.parametrize("how", ["env", "--source"])
def test_a_tool_by_name_runs_from_the_source_tree_with_a_shipped_config_by_name(stand_in_tree, tmp_path, how):
    report = tmp_path / "report.json"
    env, source = without_source_env(), []
    if how == "env":
        env[paddleclas.SOURCE_ENV] = str(stand_in_tree)
    else:
        source = ["--source", stand_in_tree]
    proc = run_tool("paddleclas", *source, "train", "-c", "SimAM_ResNet18_cifar10", "-o", "Arch.name=SimAM_ResNet18",
                    "--report", report, env=env)
    argv = json.loads(report.read_text())["argv"]
    assert argv[0] == str(stand_in_tree.resolve() / "tools" / "train.py")
    assert argv[1:3] == ["-c", str(REPO_ROOT / "simam_paddle" / "configs" / "paddleclas" / "SimAM_ResNet18_cifar10.yaml")]
    assert "built SimAM_ResNet18 with 8 SimAMs" in proc.stderr


def test_a_failing_paddleclas_tool_exits_1_with_its_traceback(stand_in_tree, tmp_path):
    proc = run_tool("paddleclas", stand_in_tree / "tools" / "train.py", "-o", "fail", "--report", tmp_path / "r.json",
                    check=False)
    assert proc.returncode == 1 and "RuntimeError: the stand-in tool failed" in proc.stderr


@pytest.mark.parametrize("where, message", [
    ("missing", "does not exist: give a PaddleClas tool by name (train, eval, export_model, infer) or path"),
    ("not_a_tool", "is not one of PaddleClas's tools"),
    ("no_engine", "is not a PaddleClas source tree: {root}/ppcls/engine missing"),
    ("no_source", "no PaddleClas source tree to run tools/train.py from: give its folder with --source PATH or in "
                  "$PADDLECLAS_SOURCE"),
    ("env_no_engine", "$PADDLECLAS_SOURCE {root} is not a PaddleClas source tree: {root}/ppcls/engine missing"),
    ("unknown_config", "config 'SimAM_ResNet19' not found: give a YAML file's path or the name of a shipped config "
                       "(SimAM_ResNet18_cifar10, SimAM_ResNet50_vd)"),
])
def test_a_missing_or_wrong_paddleclas_source_is_bad_input(stand_in_tree, where, message):
    env, config = without_source_env(), "x.yaml"
    tool = stand_in_tree / "tools" / "train.py"
    if where in ("no_engine", "env_no_engine"):  # the wheel's layout: ppcls without its engine
        (stand_in_tree / "ppcls" / "engine" / "__init__.py").unlink()
        (stand_in_tree / "ppcls" / "engine").rmdir()
    if where == "missing":
        tool = stand_in_tree / "tools" / "nope.py"
    elif where == "not_a_tool":
        tool = stand_in_tree / "ppcls" / "__init__.py"
    elif where in ("no_source", "env_no_engine", "unknown_config"):
        tool = "train"
    if where in ("env_no_engine", "unknown_config"):
        env[paddleclas.SOURCE_ENV] = str(stand_in_tree)
        config = "SimAM_ResNet19" if where == "unknown_config" else config
    proc = run_tool("paddleclas", tool, "-c", config, check=False, env=env)
    assert proc.returncode == 2, proc.stderr
    assert message.format(root=stand_in_tree) in proc.stderr
    if where != "unknown_config":
        assert "git clone -b release/2.6" in proc.stderr


def test_image_lists_of_an_image_folder(image_folder, tmp_path):
    """Lines ``PATH LABEL`` relative to the folder, labels by sorted class folder, as written here from the tree."""
    run_tool("paddleclas", "--image-lists", image_folder, "--output", tmp_path)
    classes = sorted(p.name for p in (image_folder / "train").iterdir())
    for split, name in (("train", "train_list.txt"), ("test", "val_list.txt")):
        expected = [f"{split}/{c}/{f.name} {label}" for label, c in enumerate(classes)
                    for f in sorted((image_folder / split / c).iterdir())]
        assert (tmp_path / name).read_text().splitlines() == expected
    assert (tmp_path / "label_list.txt").read_text().splitlines() == [f"{i} {c}" for i, c in enumerate(classes)]
    run_tool("paddleclas", "--image-lists", image_folder, "--output", tmp_path / "few", "--limit-train", 10)
    labels = [int(line.split()[1]) for line in (tmp_path / "few" / "train_list.txt").read_text().splitlines()]
    assert sorted(labels) == list(range(10))  # one image of each of the 10 classes


def test_the_shipped_paddleclas_configs_are_listed_with_their_paths():
    out = run_tool("paddleclas", "--list-configs").stdout.splitlines()
    folder = REPO_ROOT / "simam_paddle" / "configs" / "paddleclas"
    assert out == [f"{name}  {folder / name}.yaml" for name in ("SimAM_ResNet18_cifar10", "SimAM_ResNet50_vd")]


def test_the_command_line_has_a_version_and_a_console_script(capsys):
    import simam_paddle

    with pytest.raises(SystemExit) as exit_:
        paddleclas.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith(f"simam-paddle {simam_paddle.__version__} (")
    scripts = (REPO_ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
    assert '\nsimam-paddleclas = "simam_paddle.console:paddleclas"\n' in scripts
