"""CIFAR-10 sources: the official archive, image folders, Paddle's cache, balanced limits, bad input."""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile

import cv2
import numpy as np
import pytest
from helpers import CLASS_NAMES as FIXTURE_CLASS_NAMES
from helpers import cifar_batch, known_image, write_cifar_archive, write_image_folder

from simam_paddle.data import CLASS_NAMES, build_dataset, load_image, load_split
from simam_paddle.data.sources import balanced_subset


@pytest.fixture
def tiny_archive(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    return path, write_cifar_archive(path)


def test_class_names_in_cifar10_label_order():
    assert CLASS_NAMES == FIXTURE_CLASS_NAMES
    assert CLASS_NAMES[0] == "airplane" and CLASS_NAMES[9] == "truck" and CLASS_NAMES[3] == "cat"


def test_known_image_pattern_by_hand():
    image = known_image(2)
    assert image[0, 0].tolist() == [14, 64, 114]  # 7*2 + 50c
    assert image[1, 2].tolist() == [19, 69, 119]  # + 3*1 + 2


@pytest.mark.parametrize("split", ["train", "test"])
def test_archive_pixels_and_labels(tiny_archive, split):
    path, expected = tiny_archive
    images, labels = load_split(path, split)
    want_images, want_labels = expected[split]
    assert images.dtype == np.uint8 and images.shape == (len(want_labels), 32, 32, 3)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(images, want_images)


def test_archive_read_like_paddle_cifar10(tiny_archive):
    """Paddle's own Cifar10 reader, an independent reference, sees the same images in the same order."""
    from paddle.vision.datasets import Cifar10

    path, _ = tiny_archive
    ours = build_dataset(path, "train", transform=None)
    theirs = Cifar10(data_file=str(path), mode="train", backend="cv2", download=False)
    assert len(ours) == len(theirs) == 50
    for i in (0, 9, 10, 37, 49):
        image, label = theirs[i]
        np.testing.assert_array_equal(ours[i][0], image.astype(np.uint8))
        assert int(ours[i][1]) == int(label)


def test_image_folder_labels_follow_cifar_order(tmp_path):
    expected = write_image_folder(tmp_path, {"train": 2, "test": 1})
    for split in ("train", "test"):
        images, labels = load_split(tmp_path, split)
        np.testing.assert_array_equal(labels, expected[split][1])
        np.testing.assert_array_equal(images, expected[split][0])  # PNG is lossless
    _, labels = load_split(tmp_path, "train")
    assert labels[0] == CLASS_NAMES.index("airplane") and labels[-1] == CLASS_NAMES.index("truck")


def test_real_image_folder(cifar10_jpeg):
    dataset = build_dataset(cifar10_jpeg, "test", transform=None, limit=20, seed=0)
    assert len(dataset) == 20
    assert np.bincount(dataset.labels, minlength=10).tolist() == [2] * 10
    image, label = dataset[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and int(label) == 0
    first_airplane = sorted((cifar10_jpeg / "test" / "airplane").iterdir())
    by_cv2 = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in first_airplane]
    assert any(np.array_equal(image, ref) for ref in by_cv2)


def test_paddle_cache_without_download(tmp_path, monkeypatch):
    import paddle.dataset.common as common

    monkeypatch.setattr(common, "DATA_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        load_split(None, "train", download=False)
    message = str(err.value)
    assert str(tmp_path / "cifar" / "cifar-10-python.tar.gz") in message and "cifar-10-python.tar.gz" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message

    (tmp_path / "cifar").mkdir()
    expected = write_cifar_archive(tmp_path / "cifar" / "cifar-10-python.tar.gz")
    images, labels = load_split(None, "test", download=False)
    np.testing.assert_array_equal(images, expected["test"][0])
    np.testing.assert_array_equal(labels, expected["test"][1])


def test_paddle_cache_download_is_paddles(tmp_path, monkeypatch):
    import paddle.dataset.common as common
    from paddle.vision.datasets import cifar

    monkeypatch.setattr(common, "DATA_HOME", str(tmp_path))
    calls = []

    def fake_download(url, module, md5):
        calls.append((url, module, md5))
        target = tmp_path / module / "cifar-10-python.tar.gz"
        target.parent.mkdir(exist_ok=True)
        write_cifar_archive(target)
        return str(target)

    monkeypatch.setattr(common, "download", fake_download)
    _, labels = load_split(None, "train", download=True)
    assert calls == [(cifar.CIFAR10_URL, "cifar", cifar.CIFAR10_MD5)]
    assert len(labels) == 50
    load_split(None, "train", download=True)
    assert len(calls) == 1  # cached now


def test_paddle_cache_download_failure_is_explained(tmp_path, monkeypatch):
    import paddle.dataset.common as common

    monkeypatch.setattr(common, "DATA_HOME", str(tmp_path))

    def offline(url, module, md5):
        raise RuntimeError(f"Cannot download {url} within retry limit 3")

    monkeypatch.setattr(common, "download", offline)
    with pytest.raises(FileNotFoundError, match="downloading .* failed.*retry limit.*data.root") as failed:
        load_split(None, "train", download=True)
    advice = str(failed.value).split("retry limit 3)", 1)[1]
    assert "download" not in advice, f"the advice suggests the download that failed: {advice}"


def test_balanced_subset_counts_and_seed():
    labels = np.repeat(np.arange(10), 30)
    a = balanced_subset(labels, 40, seed=1)
    assert np.bincount(labels[a], minlength=10).tolist() == [4] * 10
    np.testing.assert_array_equal(a, balanced_subset(labels, 40, seed=1))
    assert not np.array_equal(a, balanced_subset(labels, 40, seed=2))
    assert np.all(np.diff(a) > 0)  # sorted, no repeats
    odd = np.bincount(labels[balanced_subset(labels, 23, seed=0)], minlength=10)
    assert odd.sum() == 23 and set(odd.tolist()) == {2, 3} and (odd == 3).sum() == 3
    np.testing.assert_array_equal(balanced_subset(labels, None, seed=0), np.arange(300))


@pytest.mark.parametrize("limit", [0, -3, 2.5, True, 301])
def test_balanced_subset_rejects_bad_limits(limit):
    with pytest.raises(ValueError, match="limit"):
        balanced_subset(np.repeat(np.arange(10), 30), limit, seed=0)


def test_limit_beyond_a_class_is_refused():
    labels = np.array([0] * 10 + [1] * 2)
    with pytest.raises(ValueError, match="automobile"):
        balanced_subset(labels, 8, seed=0, class_names=CLASS_NAMES)


def test_limit_on_archive_is_balanced(tiny_archive):
    path, expected = tiny_archive
    images, labels = load_split(path, "train", limit=20, seed=5)
    assert np.bincount(labels, minlength=10).tolist() == [2] * 10
    for image, label in zip(images, labels):  # each chosen image is one of the archive's, with its label
        n = np.flatnonzero((expected["train"][0] == image).all(axis=(1, 2, 3)))
        assert len(n) == 1 and expected["train"][1][n[0]] == label


# --- bad input: every error names the file or folder and says what is expected -----------------


def test_missing_root_names_path_and_how_to_get_cifar(tmp_path):
    missing = tmp_path / "nowhere" / "cifar-10-python.tar.gz"
    with pytest.raises(FileNotFoundError) as err:
        load_split(missing, "train")
    message = str(err.value)
    assert str(missing) in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "ROOT/train/<class>" in message


def test_missing_split_folder(tmp_path):
    write_image_folder(tmp_path, {"train": 1})
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "test")):
        load_split(tmp_path, "test")


def _remove_folder(root):  # the validation split lacks a class of train/
    shutil.rmtree(root / "test" / "frog")
    return root / "test" / "frog"


def _empty_folder(root):
    for f in (root / "train" / "ship").iterdir():
        f.unlink()
    return root / "train" / "ship"


def _extra_folder(root):  # the validation split has a class that train/ has not
    (root / "test" / "cats").mkdir()
    return root / "test" / "cats"


def _text_as_png(root):
    (root / "train" / "dog" / "0000.png").write_text("not a picture")
    return root / "train" / "dog" / "0000.png"


def _empty_image(root):
    (root / "train" / "cat" / "0000.png").write_bytes(b"")
    return root / "train" / "cat" / "0000.png"


def _stray_file(root):
    (root / "train" / "dog" / "notes.txt").write_text("hello")
    return root / "train" / "dog" / "notes.txt"


def _smaller_image(root):
    cv2.imwrite(str(root / "train" / "truck" / "0000.png"), np.zeros((16, 16, 3), np.uint8))
    return root / "train" / "truck" / "0000.png"


@pytest.mark.parametrize(
    "breakage, error, says",
    [
        (_remove_folder, FileNotFoundError, "missing class folder"),
        (_empty_folder, ValueError, "empty class folder"),
        (_extra_folder, ValueError, "unexpected folder"),
        (_text_as_png, ValueError, "not a readable image"),
        (_empty_image, ValueError, "an empty file"),
        (_stray_file, ValueError, "not an image file"),
        (_smaller_image, ValueError, "image of size 16x16"),
    ],
)
def test_broken_image_folder_names_the_culprit(tmp_path, breakage, error, says):
    write_image_folder(tmp_path, {"train": 1, "test": 1})
    culprit = breakage(tmp_path)
    with pytest.raises(error) as err:
        load_split(tmp_path, "test" if culprit.parts[-2] == "test" else "train")
    assert str(culprit) in str(err.value) and says in str(err.value), str(err.value)


def test_real_jpeg_copy_with_a_broken_file(cifar10_jpeg, tmp_path):
    for name in CLASS_NAMES:
        (tmp_path / "train" / name).mkdir(parents=True)
        shutil.copy(cifar10_jpeg / "train" / name / "0000.jpg", tmp_path / "train" / name / "0000.jpg")
    images, labels = load_split(tmp_path, "train")
    assert images.shape == (10, 32, 32, 3) and labels.tolist() == list(range(10))
    broken = tmp_path / "train" / "horse" / "0000.jpg"
    broken.write_bytes((cifar10_jpeg / "train" / "horse" / "0000.jpg").read_bytes()[:20])
    with pytest.raises(ValueError, match=str(broken)):
        load_split(tmp_path, "train")


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00" * 50)
    with pytest.raises(ValueError, match=f"{junk}: not a readable image"):
        load_image(junk)
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(ValueError, match=f"{empty}: an empty file"):
        load_image(empty)


def test_load_image_is_rgb(tmp_path):
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), np.full((4, 4, 3), (0, 0, 255), np.uint8))  # cv2 writes BGR: pure red
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == (4, 4, 3) and image[0, 0].tolist() == [255, 0, 0]


def test_archive_that_is_not_a_tar(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(b"<html>proxy says no</html>")
    with pytest.raises(ValueError, match=f"{path}: not a readable tar archive"):
        load_split(path, "train")


def test_archive_that_is_not_cifar10(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in ("train", "test", "meta"):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            payload = pickle.dumps({b"fine_labels": [1]})
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(ValueError, match=f"{path}: not the CIFAR-10 python archive.*data_batch_1"):
        load_split(path, "train")


@pytest.mark.parametrize(
    "member, content, match",
    [
        ("data_batch_3", b"garbage bytes", "data_batch_3 is not a pickled CIFAR-10 batch"),
        ("data_batch_2", {b"data": np.zeros((2, 3072), np.uint8)}, r"data_batch_2 is not a CIFAR-10 batch"),
        ("test_batch", {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]},
         r"test_batch: b'data' must be uint8 \[N, 3072\]"),
        ("data_batch_1", {**cifar_batch(0, 2), b"labels": [0, 10]}, r"data_batch_1: labels must lie in \[0, 10\)"),
        ("data_batch_5", {**cifar_batch(0, 2), b"labels": [0]}, r"data_batch_5: b'labels' must be 2 integers"),
    ],
)
def test_archive_with_a_broken_batch(tmp_path, member, content, match):
    path = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_archive(path, members={member: content})
    split = "test" if member == "test_batch" else "train"
    with pytest.raises(ValueError, match=match) as err:
        load_split(path, split)
    assert str(path) in str(err.value)


def test_unknown_split(tiny_archive):
    with pytest.raises(ValueError, match="split"):
        load_split(tiny_archive[0], "val")


def test_root_may_be_a_string_with_tilde(tiny_archive, monkeypatch):
    path, expected = tiny_archive
    monkeypatch.setenv("HOME", str(path.parent))
    _, labels = load_split("~/" + path.name, "test")
    np.testing.assert_array_equal(labels, expected["test"][1])

