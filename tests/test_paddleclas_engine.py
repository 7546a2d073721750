"""SimAM models trained by PaddleClas's own engine: ``tools/train.py``, ``eval.py``, ``export_model.py`` and
``infer.py`` of a PaddleClas 2.6 source tree, run through ``python -m simam_paddle.paddleclas`` with the
shipped configs, then Paddle Inference on the export; and a plain ResNet50_vd checkpoint starting a
SimAM_ResNet50_vd training.

The run: SimAM_ResNet18 (``SimAM_ResNet18_cifar10`` with its stem's max-pool at stride 2, to keep it short)
for one epoch of 40 iterations of 8 images, on a list of 20 CIFAR-10 training images (2 per class) repeated 16
times, so that the loss must fall; evaluation on 40 test images, inference on 8 of them.

Runs where ``$PADDLECLAS_SOURCE`` names a PaddleClas 2.6 source tree (the engine is not in the paddleclas
wheel) and the real CIFAR-10 copy is found through ``$SIMAM_DATA_DIR``; skipped, saying so, elsewhere.
``scripts/paddleclas_venv.sh`` unpacks PaddleClas's source, runs this module in a venv with PaddleClas and
fails when any of it is skipped.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import paddle
import pytest
import yaml
from helpers import CLASS_NAMES, REPO_ROOT, paddle_inference, require_cifar10_jpeg, run_tool

from simam_paddle import SimAM, cli, paddleclas

pytestmark = [pytest.mark.paddleclas_source, pytest.mark.integration]

CIFAR_CONFIG = "SimAM_ResNet18_cifar10"
BATCH, DISTINCT, REPEATS = 8, 20, 16  # 20 images x 16 = 320 lines: 40 iterations of 8
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]  # CIFAR-10's, as the shipped config states them


@pytest.fixture(scope="module")
def source() -> Path:
    """The PaddleClas source tree that ``$PADDLECLAS_SOURCE`` names (a wrong one is an error, not a skip)."""
    if not os.environ.get(paddleclas.SOURCE_ENV):
        pytest.skip("PaddleClas's engine is only in its source tree, not in the paddleclas wheel: set PADDLECLAS_SOURCE "
                    "to a PaddleClas 2.6 source tree (scripts/paddleclas_venv.sh does)")
    return paddleclas.source_tree(os.environ[paddleclas.SOURCE_ENV], f"${paddleclas.SOURCE_ENV}")


@pytest.fixture(scope="module")
def arch(source):
    """``ppcls.arch`` of the source tree, with the SimAM architectures registered."""
    arch = paddleclas.arch_of(source)
    from ppcls.utils import logger

    logger.init_logger()  # PaddleClas's backbones log through it, as its engine sets it up
    paddleclas.register(arch)
    return arch


def config_of(name: str, overrides: list[str]) -> dict:
    """A shipped config with ``-o`` overrides, read by PaddleClas's own config loader."""
    from ppcls.utils.config import get_config

    return get_config(str(cli.find_config(name, paddleclas.CONFIGS)), overrides=overrides, show=False)


def options(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("-o", override)]


def data_overrides(images: Path, lists: Path, batch: int) -> list[str]:
    return [f"DataLoader.{split}.{key}" for split, key in [
        ("Train", f"dataset.image_root={images}"), ("Train", f"dataset.cls_label_path={lists / 'train_list.txt'}"),
        ("Eval", f"dataset.image_root={images}"), ("Eval", f"dataset.cls_label_path={lists / 'val_list.txt'}"),
        ("Train", f"sampler.batch_size={batch}"), ("Train", "sampler.drop_last=True"),
        ("Train", "loader.num_workers=0"), ("Eval", "loader.num_workers=0"),
        ("Train", "loader.use_shared_memory=False"), ("Eval", "loader.use_shared_memory=False"),
    ]]


def tiny_lists(folder: Path, train: int, val: int, repeats: int = 1) -> Path:
    """Image lists of ``train`` CIFAR-10 training images (each line ``repeats`` times) and ``val`` test images."""
    written = paddleclas.write_image_lists(require_cifar10_jpeg(), folder, limit_train=train, limit_val=val)
    lines = written["train_list.txt"].read_text().splitlines()
    written["train_list.txt"].write_text("\n".join(lines * repeats) + "\n")
    return folder


@pytest.fixture(scope="module")
def run(source, tmp_path_factory) -> dict:
    """train, eval and export_model of the shipped CIFAR-10 config, by name, with the tree from $PADDLECLAS_SOURCE."""
    root = tmp_path_factory.mktemp("paddleclas_run")
    output = root / "output"
    lists = tiny_lists(root / "lists", DISTINCT, 40, REPEATS)
    overrides = [*data_overrides(require_cifar10_jpeg(), lists, BATCH), "Arch.stride_list=[1,2,2,2,2]",
                 "Optimizer.lr.learning_rate=0.0125", "Global.epochs=1", "Global.print_batch_step=1",
                 f"Global.output_dir={output}", f"Global.save_inference_dir={output / 'inference'}"]
    trained = [*overrides, f"Global.pretrained_model={output / 'latest'}"]
    infer_images = root / "infer_images"  # the first 8 validation images, for tools/infer.py
    infer_images.mkdir()
    for line in (lists / "val_list.txt").read_text().splitlines()[:8]:
        path = line.split(" ")[0]
        (infer_images / path.replace("/", "_")).write_bytes((require_cifar10_jpeg() / path).read_bytes())
    procs = {
        "train": run_tool("paddleclas", "train", "-c", CIFAR_CONFIG, *options(overrides), timeout=900),
        "eval": run_tool("paddleclas", "eval", "-c", CIFAR_CONFIG, *options(trained), timeout=600),
        "export_model": run_tool("paddleclas", "export_model", "-c", CIFAR_CONFIG,
                                 *options([*trained, "Arch.infer_add_softmax=False"]), timeout=600),
        "infer": run_tool("paddleclas", "infer", "-c", CIFAR_CONFIG, *options([
            *trained, f"Infer.infer_imgs={infer_images}", f"Infer.save_dir={root / 'infer.json'}",
            f"Infer.PostProcess.class_id_map_file={lists / 'label_list.txt'}"]), timeout=600),
    }
    return {"output": output, "lists": lists, "overrides": overrides, "procs": procs, "infer": root / "infer.json"}


@pytest.fixture(scope="module")
def trained_model(run, arch):
    """The run's SimAM_ResNet18, built from its config by PaddleClas's build_model, with the run's last weights."""
    model = arch.build_model(config_of(CIFAR_CONFIG, run["overrides"]))
    model.set_state_dict(paddle.load(str(run["output"] / "latest.pdparams")))
    model.eval()
    return model


def model_input(path: Path) -> np.ndarray:
    """An image as the config's eval and infer transforms make it, written out with cv2 and numpy: RGB, scaled
    to [0, 1], less CIFAR-10's mean over its std, CHW."""
    rgb = cv2.imread(str(path))[:, :, ::-1].astype(np.float32)
    return ((rgb / 255.0 - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1).astype(np.float32)


def val_images(lists: Path) -> tuple[np.ndarray, np.ndarray]:
    """The validation list's images (``model_input``) and labels."""
    lines = [line.split(" ") for line in (lists / "val_list.txt").read_text().splitlines()]
    images = np.stack([model_input(require_cifar10_jpeg() / path) for path, _ in lines])
    return images, np.asarray([int(label) for _, label in lines])


def readme_simams(backbone: str) -> int:
    """The number of SimAMs that README's PaddleClas placement table gives for ``backbone``."""
    text = (REPO_ROOT / "README.md").read_text()
    for names, counts in re.findall(r"^\| (`[^|]*) \| [^|]* \| ([\d /]+) \|$", text, flags=re.M):
        for group, count in zip(names.split(" / "), counts.split(" / ")):
            if f"`{backbone}`" in group:
                return int(count)
    raise AssertionError(f"README's PaddleClas placement table names no {backbone}")


def train_losses(log: str) -> list[float]:
    """Each training iteration's loss, from the log's running averages over equal batches (print_batch_step 1)."""
    averages = [float(a) for a in re.findall(r"\[Train\]\[Epoch \d+/\d+\]\[Iter: \d+/\d+\].*? loss: ([-\d.naif]+)", log)]
    return [(i + 1) * avg - i * (averages[i - 1] if i else 0.0) for i, avg in enumerate(averages)]


@pytest.mark.real_data
def test_the_loss_is_finite_and_falls(run):
    losses = train_losses((run["output"] / "train.log").read_text())
    assert len(losses) == DISTINCT * REPEATS // BATCH
    assert np.isfinite(losses).all(), losses
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.6 * first, f"mean loss of the first 10 iterations {first:.3f}, of the last 10 {last:.3f}"


@pytest.mark.real_data
def test_the_trained_model_has_the_placement_tables_simams(run, trained_model):
    expected = readme_simams("ResNet18")
    for tool, proc in run["procs"].items():  # what each tool's own process built
        assert f"simam-paddle: built SimAM_ResNet18 with {expected} SimAMs (e_lambda 0.0001)" in proc.stderr, tool
    assert sum(isinstance(layer, SimAM) for layer in trained_model.sublayers()) == expected
    # the exported program: one sigmoid per SimAM, none elsewhere in a ResNet18
    program = json.loads((run["output"] / "inference" / "inference.json").read_text())
    ops = [op["#"] for op in program["program"]["regions"][0]["blocks"][0]["ops"]]
    assert ops.count("1.sigmoid") == expected


@pytest.mark.real_data
def test_the_checkpoint_loads_back_with_identical_keys(run, arch):
    saved = paddle.load(str(run["output"] / "latest.pdparams"))
    model = arch.build_model(config_of(CIFAR_CONFIG, run["overrides"]))
    assert list(model.state_dict()) == list(saved)
    plain = arch.ResNet18(class_num=10, stride_list=[1, 2, 2, 2, 2])  # SimAM adds no key
    assert list(plain.state_dict()) == list(saved)
    model.set_state_dict(saved)
    loaded = model.state_dict()
    assert all(np.array_equal(loaded[k].numpy(), saved[k].numpy()) for k in saved)


@pytest.mark.real_data
def test_eval_reports_the_trained_models_loss_and_accuracy(run, trained_model):
    log = (run["output"] / "eval.log").read_text()
    reported = re.search(r"\[Eval\]\[Epoch 0\]\[Avg\]CELoss: ([\d.]+), loss: [\d.]+, top1: ([\d.]+)", log)
    assert reported, log[-2000:]
    x, labels = val_images(run["lists"])
    logits = trained_model(paddle.to_tensor(x)).numpy().astype(np.float64)
    log_softmax = logits - logits.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    loss, top1 = -log_softmax[np.arange(len(labels)), labels].mean(), (logits.argmax(1) == labels).mean()
    assert abs(float(reported[1]) - loss) <= 1e-4 * max(1.0, loss), (reported[0], loss)
    assert abs(float(reported[2]) - top1) <= 1e-5, (reported[0], top1)


@pytest.mark.real_data
def test_infer_predicts_the_trained_models_classes(run, trained_model):
    results = json.loads(run["infer"].read_text())
    assert len(results) == 8
    for result in results:
        logits = trained_model(paddle.to_tensor(model_input(Path(result["file_name"]))[None])).numpy()[0]
        probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert result["class_ids"] == [int(logits.argmax())], result
        assert result["label_names"] == [CLASS_NAMES[logits.argmax()]], result
        assert abs(result["scores"][0] - probabilities.max()) <= 1e-4, (result, probabilities.max())


@pytest.mark.real_data
def test_the_exported_program_gives_the_trained_models_logits(run, trained_model):
    x, _ = val_images(run["lists"])
    expected = trained_model(paddle.to_tensor(x)).numpy()
    got = paddle_inference(run["output"] / "inference" / "inference", x)
    assert got.shape == expected.shape == (len(x), 10)
    assert np.abs(got - expected).max() <= 1e-4, np.abs(got - expected).max()


def test_the_shipped_imagenet_config_is_paddleclas_recipe_with_the_architecture_swapped(source):
    recipe = yaml.safe_load((source / "ppcls/configs/ImageNet/ResNet/ResNet50_vd.yaml").read_text())
    shipped = yaml.safe_load(cli.find_config("SimAM_ResNet50_vd", paddleclas.CONFIGS).read_text())
    assert shipped.pop("Arch") == {**recipe.pop("Arch"), "name": "SimAM_ResNet50_vd", "e_lambda": 0.0001}
    assert shipped == recipe


@pytest.mark.real_data
def test_a_plain_resnet50_vd_checkpoint_starts_a_simam_resnet50_vd_training(source, arch, tmp_path):
    """Global.pretrained_model of a plain ResNet50_vd (random weights standing for PaddleClas's published ones)
    into the shipped SimAM_ResNet50_vd config; the learning rate 0 keeps the loaded weights, so the checkpoint
    after training must hold them, key for key."""
    plain = arch.ResNet50_vd(class_num=1000)
    paddle.save(plain.state_dict(), str(tmp_path / "ResNet50_vd_pretrained.pdparams"))
    output = tmp_path / "output"
    lists = tiny_lists(tmp_path / "lists", 16, 10)
    overrides = [*data_overrides(require_cifar10_jpeg(), lists, 8),
                 "DataLoader.Train.dataset.transform_ops.1.RandCropImage.size=32", "Global.device=cpu", "Global.epochs=1",
                 "Global.eval_during_train=False", "Global.print_batch_step=1",
                 f"Global.output_dir={output}", f"Global.pretrained_model={tmp_path / 'ResNet50_vd_pretrained'}",
                 "Optimizer.lr.learning_rate=0.0"]
    proc = run_tool("paddleclas", "train", "-c", "SimAM_ResNet50_vd", *options(overrides), timeout=600)
    assert f"built SimAM_ResNet50_vd with {readme_simams('ResNet50_vd')} SimAMs" in proc.stderr
    log = (output / "train.log").read_text()
    assert "Finish load pretrained model from" in log and np.isfinite(train_losses(log)).all()
    saved, expected = paddle.load(str(output / "latest.pdparams")), plain.state_dict()
    assert list(saved) == list(expected)
    weights = [k for k in expected if not k.endswith(("_mean", "_variance"))]  # BatchNorm statistics move in training
    assert all(np.array_equal(saved[k].numpy(), expected[k].numpy()) for k in weights)
