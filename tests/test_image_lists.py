"""PaddleClas image lists as data.root: the images and labels they list, the class names, and every bad
line named with its file and line number."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from helpers import known_image, run_tool, run_train

from simam_paddle.config import load_config
from simam_paddle.data import classes_of, load_split, resolve_source
from simam_paddle.data.samples import sample_images
from simam_paddle.errors import DataError


def write_png(path, n):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(known_image(n), cv2.COLOR_RGB2BGR))


@pytest.fixture
def lists(tmp_path):
    """Images jpg/<n>.png (known content n) and lists: train 0..5 with labels 2,0,1,2,1,0; val 6..8 with 1,2,0."""
    root = tmp_path / "flowers"
    for n in range(9):
        write_png(root / "jpg" / f"{n}.png", n)
    train = [(0, 2), (1, 0), (2, 1), (3, 2), (4, 1), (5, 0)]
    val = [(6, 1), (7, 2), (8, 0)]
    (root / "train_list.txt").write_text("".join(f"jpg/{n}.png {label}\n" for n, label in train))
    (root / "val_list.txt").write_text("\n".join(f"jpg/{n}.png {label}" for n, label in val) + "\n\n")  # blank lines
    return root, train, val


@pytest.mark.parametrize("given", ["folder", "file"])
def test_the_lists_images_and_labels_in_order(lists, given):
    root, train, val = lists
    data_root = root if given == "folder" else root / "train_list.txt"
    assert resolve_source(data_root).kind == "image_list"
    for split, expected in (("train", train), ("test", val)):
        images, labels = load_split(data_root, split)
        assert labels.tolist() == [label for _, label in expected]
        np.testing.assert_array_equal(images, np.stack([known_image(n) for n, _ in expected]))
    assert classes_of(data_root) == ["0", "1", "2"]  # no label_list.txt: numbers, up to the largest label


def test_class_names_from_label_list(lists):
    root, _, _ = lists
    (root / "label_list.txt").write_text("1 dog\n0 cat\n2 red fox\n")  # any order; a name may hold spaces
    assert classes_of(root) == ["cat", "dog", "red fox"]
    _, labels = load_split(root, "train", limit=3, seed=0)  # a class-balanced subset: one per class
    assert sorted(labels.tolist()) == [0, 1, 2]


def test_a_folder_with_train_keeps_being_an_image_folder(lists):
    root, _, _ = lists
    (root / "train" / "a").mkdir(parents=True)
    assert resolve_source(root).kind == "image_folder"
    assert resolve_source(root / "train_list.txt").kind == "image_list"  # the list file itself, explicitly


@pytest.mark.parametrize("listing, line, says", [
    ("train_list.txt", "jpg/0.png 2\njpg/gone.png 0\n", "train_list.txt, line 2: {root}/jpg/gone.png: no such image file"),
    ("train_list.txt", "jpg/0.png 2\n\njpg/1.png\n", "train_list.txt, line 3: 'jpg/1.png' is not 'PATH LABEL'"),
    ("train_list.txt", "jpg/0.png two\n", "train_list.txt, line 1: 'jpg/0.png two' is not 'PATH LABEL'"),
    ("train_list.txt", "jpg/0.png -1\n", "train_list.txt, line 1: label -1 is out of range"),
    ("val_list.txt", "jpg/6.png 1\njpg/7.png 3\n",
     "val_list.txt, line 2: label 3 is out of range: expected labels 0..2, from the largest label of"),
    ("val_list.txt", "", "val_list.txt: an empty image list"),
])
def test_bad_lines_are_named_with_file_and_line(lists, listing, line, says):
    root, _, _ = lists
    (root / listing).write_text(line)
    with pytest.raises(DataError) as info:
        load_split(root, "train" if listing == "train_list.txt" else "test")
    assert f"{root}/{says.format(root=root)}" in str(info.value)


def test_a_label_outside_the_label_list_names_it(lists):
    root, _, _ = lists
    (root / "label_list.txt").write_text("0 cat\n1 dog\n")
    with pytest.raises(DataError, match=r"train_list.txt, line 1: label 2 is out of range: expected the 2 classes of .*"
                                        r"label_list.txt"):
        load_split(root, "train")
    (root / "label_list.txt").write_text("0 cat\n2 dog\n")
    with pytest.raises(DataError, match="the IDs must be 0..1, each once; missing 1"):
        classes_of(root)


def test_the_validation_list_is_found_by_name(lists):
    root, _, _ = lists
    (root / "val_list.txt").rename(root / "valid.txt")
    with pytest.raises(FileNotFoundError, match="val_list.txt: no such image list"):
        load_split(root, "test")
    (root / "train_list.txt").rename(root / "images.txt")
    with pytest.raises(DataError, match="an image list's name must contain 'train'"):
        load_split(root / "images.txt", "test")


def test_real_test_images_come_from_the_validation_list(lists):
    root, _, val = lists
    samples = sample_images(load_config(None, [f"data.root={root}"]), 3)
    assert samples.labels == [0, 1, 2] and samples.source == f"3 real test images from {root / 'val_list.txt'}"
    assert samples.names == [str(root / "jpg" / f"{n}.png") for n in (8, 6, 7)]  # class by class


@pytest.mark.integration
def test_trains_and_evaluates_on_lists_with_their_class_names(lists, tmp_path):
    root, _, _ = lists
    (root / "label_list.txt").write_text("0 cat\n1 dog\n2 fox\n")
    out = tmp_path / "run"
    run_train("-o", "model.name=mobilenet_v2", "-o", "data.image_size=32", "-o", f"data.root={root / 'train_list.txt'}",
              "-o", f"train.output_dir={out}", "-o", "data.batch_size=3", "-o", "data.num_workers=0",
              "-o", "train.epochs=1", "-o", "train.throughput_batches=0", "-o", "data.train_transforms=none")
    assert json.loads((out / "classes.json").read_text()) == ["cat", "dog", "fox"]
    assert json.loads((out / "evaluation.json").read_text())["per_class"]["fox"]["images"] == 1
    (root / "train_list.txt").write_text("jpg/0.png 2\njpg/1.png 0 extra\n")
    proc = run_train("-o", f"data.root={root}", "-o", f"train.output_dir={tmp_path / 'bad'}", check=False)
    assert proc.returncode == 2 and f"{root / 'train_list.txt'}, line 2: 'jpg/1.png 0 extra' is not" in proc.stderr
    assert not (tmp_path / "bad").exists()
    text = run_tool("evaluate", out, "--rounds", "1", "-o", f"data.root={root / 'val_list.txt'}", check=False)
    assert text.returncode == 2 and "an image list's name must contain 'train'" in text.stderr


def test_the_lists_that_paddleclas_image_lists_writes_read_as_their_folder(tmp_path):
    from helpers import write_learnable_image_folder

    from simam_paddle.paddleclas import write_image_lists

    folder = write_learnable_image_folder(tmp_path / "pets", 2, 1, classes=["dog", "cat", "fox"], val_folder="val")
    write_image_lists(folder)  # into the folder: train_list.txt, val_list.txt, label_list.txt
    assert resolve_source(folder).kind == "image_folder"  # a folder with train/ stays an image folder
    lists = folder / "train_list.txt"
    assert classes_of(lists) == classes_of(folder) == ["cat", "dog", "fox"]
    for split in ("train", "test"):
        (from_lists, labels_lists), (from_folder, labels_folder) = load_split(lists, split), load_split(folder, split)
        np.testing.assert_array_equal(from_lists, from_folder)
        assert labels_lists.tolist() == labels_folder.tolist()
