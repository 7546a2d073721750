"""Image folders of any classes: the class list and its order, val/ or test/, images of any size,
model.num_classes from the data, data.image_size, and a 3-class folder trained end to end and predicted
with its class names."""

from __future__ import annotations

import json

import cv2
import numpy as np
import paddle.vision.transforms as T
import pytest
from helpers import CLASS_NAMES, make_run_dir, run_tool, run_train, write_image_folder, write_learnable_image_folder

from simam_paddle.config import ConfigError, load_config
from simam_paddle.data import build_test_transform, classes_of, load_split
from simam_paddle.data.transforms import build_recipe_train_transform, build_train_transform, resize_size
from simam_paddle.models.from_config import build_from_config
from simam_paddle.run_dir import resolve_classes


def test_classes_are_the_sorted_folder_names(tmp_path):
    root = write_learnable_image_folder(tmp_path, 2, 1, classes=["zebra", "ant", "Moth"], val_folder="val")
    assert classes_of(root) == ["Moth", "ant", "zebra"]  # sorted as strings: upper case first
    for split in ("train", "test"):
        _, labels = load_split(root, split)
        assert labels.tolist() == [0] * (2 if split == "train" else 1) + [1] * (2 if split == "train" else 1) + \
            [2] * (2 if split == "train" else 1)


def test_cifar10s_ten_names_keep_cifar10s_order(tmp_path):
    write_image_folder(tmp_path, {"train": 1, "test": 1})  # folders created in reverse order
    assert classes_of(tmp_path) == CLASS_NAMES  # CIFAR-10's label order, airplane=0 ... truck=9
    # a subset of CIFAR-10's names is any other folder: sorted
    root = write_learnable_image_folder(tmp_path / "two", 1, 1, classes=["dog", "cat"])
    assert classes_of(root) == ["cat", "dog"]


def test_val_is_the_validation_split_where_it_exists(tmp_path):
    root = write_learnable_image_folder(tmp_path, 1, 2, classes=["a", "b"], val_folder="val")
    (root / "test" / "a").mkdir(parents=True)  # an unlabelled or other test/ folder is not read
    images, labels = load_split(root, "test")
    assert len(images) == 4 and labels.tolist() == [0, 0, 1, 1]
    expected = cv2.cvtColor(cv2.imread(str(root / "val" / "b" / "0001.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(images[3], expected)


def test_no_validation_folder_names_both(tmp_path):
    root = write_learnable_image_folder(tmp_path, 1, 1, classes=["a", "b"], val_folder="val")
    (root / "val").rename(root / "elsewhere")
    with pytest.raises(FileNotFoundError, match=f"{root / 'val'} or {root / 'test'}: no such folder"):
        load_split(root, "test")


def test_images_of_many_sizes_are_stored_as_the_transforms_first_resize_makes_them(tmp_path):
    root = write_learnable_image_folder(tmp_path, 3, 3, classes=["a", "b"], sizes=(20, 300, 64))
    files = sorted((root / "test").glob("*/*.png"))
    originals = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    assert len({im.shape for im in originals}) == 3
    for size in (64, 224):
        stored, _ = load_split(root, "test", size=size)
        assert stored.shape == (6, size, size, 3)
        test = build_test_transform(size)
        reference = T.Compose([T.Resize((size, size))])  # Paddle's own Resize on the original file
        for image, original in zip(stored, originals):
            np.testing.assert_array_equal(image, reference(original))
            np.testing.assert_array_equal(test(image), test(original))  # the pipeline sees what it would have
    # the train pipeline's first step: its resize, scaled from the recipe's 130 for 128
    assert (resize_size(128), resize_size(224), resize_size(64)) == (130, 228, 65)
    stored, _ = load_split(root, "train", size=resize_size(224))
    recipe = build_recipe_train_transform(224)
    np.random.seed(3)
    import random

    random.seed(3)
    from_stored = recipe(stored[1])
    np.random.seed(3)
    random.seed(3)
    original = cv2.cvtColor(cv2.imread(str(sorted((root / "train").glob("*/*.png"))[1])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(from_stored, recipe(original))
    assert from_stored.shape == (3, 224, 224)


@pytest.mark.parametrize("size", [64, 224])
@pytest.mark.parametrize("name", ["recipe", "fast", "none"])
def test_every_pipeline_gives_images_of_data_image_size(name, size):
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    np.random.seed(0)
    assert build_train_transform(name, size)(image).shape == (3, size, size)
    assert build_test_transform(size)(image).shape == (3, size, size)


def test_images_of_one_small_size_are_kept_as_they_are(tmp_path):
    expected = write_image_folder(tmp_path, {"train": 1, "test": 1})
    images, _ = load_split(tmp_path, "test", size=128)
    np.testing.assert_array_equal(images, expected["test"][0])  # 32x32, not resized


def test_num_classes_follows_the_data_and_a_mismatch_names_both(tmp_path):
    root = write_learnable_image_folder(tmp_path, 1, 1, classes=["cat", "dog", "fox"], val_folder="val")
    config = load_config(None, [f"data.root={root}", "model.name=resnet18_simam", "data.image_size=64"])
    assert config["model"]["num_classes"] is None
    assert resolve_classes(config) == ["cat", "dog", "fox"] and config["model"]["num_classes"] == 3
    config = load_config(None, [f"data.root={root}", "model.num_classes=2"])
    with pytest.raises(ConfigError, match=r"model.num_classes=2, but data.root .* holds 3 classes \(cat, dog, fox\); "
                                          r"set model.num_classes=3"):
        resolve_classes(config)
    config = load_config(None, ["model.num_classes=null"])  # Paddle's CIFAR-10 cache: CIFAR-10's classes, nothing read
    assert resolve_classes(config) == CLASS_NAMES and config["model"]["num_classes"] == 10


def test_alexnet_keeps_requiring_128(tmp_path):
    with pytest.raises(ConfigError, match=r"data.image_size=96: alexnet_simam takes 128x128 images only; set "
                                          r"data.image_size=128, or choose a model that takes any size \(resnet18"):
        load_config(None, ["model.name=alexnet_simam", "model.num_classes=10", "data.image_size=96"])
    config = load_config(None, ["model.name=alexnet_simam", "model.num_classes=10"])
    config["data"]["image_size"] = 96  # a config assembled in code is checked when its model is built
    with pytest.raises(ConfigError, match=r"data.image_size=96: alexnet_simam takes 128x128 images only"):
        build_from_config(config)
    proc = run_train("-o", "model.name=alexnet", "-o", "data.image_size=96", "-o", f"train.output_dir={tmp_path / 'r'}",
                     check=False)
    assert proc.returncode == 2 and "takes 128x128 images only" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_a_three_class_folder_trains_end_to_end_and_predicts_with_its_class_names(tmp_path):
    classes = ["cat", "dog", "fox"]
    root = write_learnable_image_folder(tmp_path / "data", 16, 4, classes=classes, val_folder="val", sizes=(48, 80))
    out = tmp_path / "run"
    run_train("-o", "model.name=mobilenet_v2_simam", "-o", "data.image_size=64", "-o", f"data.root={root}",
              "-o", f"train.output_dir={out}", "-o", "data.batch_size=8", "-o", "data.num_workers=0",
              "-o", "train.epochs=3", "-o", "train.lr=2e-3", "-o", "train.throughput_batches=1",
              "-o", "data.train_transforms=fast")
    assert json.loads((out / "classes.json").read_text()) == classes
    history = json.loads((out / "history.json").read_text())
    assert history["finished"] and history["steps_per_epoch"] == 48 // 8
    assert (out / "predictions.png").stat().st_size > 10_000
    config = load_config(out / "config.yaml")
    assert config["model"]["num_classes"] == 3 and config["data"]["image_size"] == 64
    images = [root / "val" / name / "0000.png" for name in classes]
    lines = run_tool("predict", out, *images, "--top-k", "3").stdout.strip().splitlines()
    assert len(lines) == 3
    for line, image in zip(lines, images):
        path, rest = line.split(": ", 1)
        assert path == str(image)
        assert sorted(pair.split()[0] for pair in rest.split(", ")) == classes  # every name once, nothing else
    meta = run_tool("export", out, "--format", "paddle", "--num-images", "3", "--tolerance", "1e-3")
    assert "real test images" in meta.stdout
    exported = json.loads((out / "export" / "paddle" / "export.json").read_text())
    assert exported["class_names"] == classes and exported["input"]["shape"] == [None, 3, 64, 64]
    assert "3 images" in run_tool("visualize", out, "--num-images", "3").stdout  # titled with the class names
    from_export = run_tool("predict", out / "export" / "paddle", *images, "--top-k", "1").stdout
    predicted = [line.split(": ")[1].split()[0] for line in from_export.splitlines() if line.startswith(str(root))]
    assert predicted == [line.split(": ")[1].split()[0] for line in lines], from_export


def test_visualize_titles_name_the_runs_classes(tmp_path, monkeypatch):
    from simam_paddle import visualize

    root = write_learnable_image_folder(tmp_path / "data", 1, 2, classes=["cat", "dog", "fox"], val_folder="val")
    run = make_run_dir(tmp_path / "run", "model.name=resnet18_simam", f"data.root={root}", "data.image_size=32")
    titles = []
    monkeypatch.setattr(visualize, "draw", lambda images, maps, t, title: titles.extend(t) or visualize.Figure())
    visualize.visualize(run, num_images=3)
    assert [title.split("\n")[0] for title in titles] == ["true: cat", "true: dog", "true: fox"]
    assert all(title.split("\n")[1].split()[1] in ("cat", "dog", "fox") for title in titles)  # "pred: <name> <p>"
