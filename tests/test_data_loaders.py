"""Loaders: shapes, order, drop_last, determinism per (seed, epoch), workers, resume, sharding, config."""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
from helpers import write_cifar_archive, write_learnable_image_folder

from simam_paddle.config import SCHEMA, ConfigError, load_config
from simam_paddle.data import (
    build_dataset,
    build_loader,
    build_test_transform,
    evenly_spaced_images,
    set_loader_epoch,
)
from simam_paddle.data.loaders import EpochBatchSampler, worker_count
from simam_paddle.data.sources import load_split
from simam_paddle.data.transforms import FastTrainTransform


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz"
    return path, write_cifar_archive(path)  # 50 train images, 20 test images


def config(archive, seed=0, **data):
    """A validated config: the defaults, the tiny archive, batch 8, no workers, then ``data`` and the seed."""
    data = {"root": str(archive[0]), "batch_size": 8, "num_workers": 0, **data}
    return load_config(None, [f"data.{k}={json.dumps(v)}" for k, v in data.items()] + [f"train.seed={seed}"])


def build_loaders(cfg, distributed=False):
    return build_loader(cfg, "train", distributed), build_loader(cfg, "val", distributed)


def epoch_batches(loader, epoch):
    set_loader_epoch(loader, epoch)
    return [(x.numpy(), y.numpy()) for x, y in loader]


@pytest.mark.parametrize("transforms", ["recipe", "fast"])
def test_batches_shapes_order_and_drop_last(archive, transforms):
    train, val = build_loaders(config(archive, train_transforms=transforms, seed=0))
    assert len(train) == 50 // 8 and len(val) == 3
    batches = epoch_batches(train, 0)
    assert len(batches) == 6
    for x, y in batches:
        assert x.shape == (8, 3, 128, 128) and x.dtype == np.float32 and y.shape == (8,) and y.dtype == np.int64
        assert np.isfinite(x).all() and -2.2 < x.min() and x.max() < 2.7  # normalised range of uint8 levels
    seen = np.concatenate([y for _, y in batches])
    assert len(seen) == 48 and not np.array_equal(seen, archive[1]["train"][1][:48])  # shuffled
    val_batches = epoch_batches(val, 0)
    assert [len(y) for _, y in val_batches] == [8, 8, 4]  # in order, last batch kept
    np.testing.assert_array_equal(np.concatenate([y for _, y in val_batches]), archive[1]["test"][1])


def test_validation_images_are_the_test_transform_of_the_archive(archive):
    _, val = build_loaders(config(archive, seed=0))
    x, _ = next(iter(val))
    first = archive[1]["test"][0][0]
    np.testing.assert_array_equal(x.numpy()[0], build_test_transform()(first))


def test_each_sample_once_per_epoch_and_reshuffled(archive):
    train, _ = build_loaders(config(archive, train_transforms="fast", batch_size=10, seed=3))
    labels = archive[1]["train"][1]
    orders = []
    for epoch in (0, 1):
        set_loader_epoch(train, epoch)
        order = np.concatenate(train.dataset._batches)
        assert sorted(order.tolist()) == list(range(50))  # 50 = 5 full batches of 10: nothing dropped
        np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in train]), labels[order])
        orders.append(order)
    assert not np.array_equal(*orders)


@pytest.mark.parametrize("transforms", ["recipe", "fast"])
def test_same_batches_with_0_and_2_workers_and_after_resume(archive, transforms):
    serial, _ = build_loaders(config(archive, seed=5, train_transforms=transforms))
    uninterrupted = [epoch_batches(serial, epoch) for epoch in range(3)]
    parallel, _ = build_loaders(config(archive, seed=5, train_transforms=transforms, num_workers=2))
    resumed = epoch_batches(parallel, 2)  # a fresh loader, as after a restart, at epoch 2
    assert len(resumed) == len(uninterrupted[2])
    for (a, ya), (b, yb) in zip(uninterrupted[2], resumed):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(uninterrupted[1][0][0], uninterrupted[2][0][0])  # augmentations differ per epoch


@pytest.mark.parametrize("transforms", ["recipe", "fast"])
def test_augmentation_of_a_sample_depends_on_epoch(archive, transforms):
    train, _ = build_loaders(config(archive, train_transforms=transforms, seed=0))
    dataset = train.dataset.dataset
    dataset.set_epoch(0)
    first = dataset[3][0]
    dataset.set_epoch(1)
    assert not np.array_equal(dataset[3][0], first)
    dataset.set_epoch(0)
    np.testing.assert_array_equal(dataset[3][0], first)


def test_batches_do_not_depend_on_global_rng(archive):
    train, _ = build_loaders(config(archive, train_transforms="recipe", seed=1))
    np.random.seed(0)
    paddle.seed(0)
    a = epoch_batches(train, 4)
    np.random.seed(123)
    paddle.seed(123)
    state = np.random.get_state()[1].copy()
    b = epoch_batches(train, 4)
    assert np.array_equal(np.random.get_state()[1], state)  # and leave it untouched
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_other_seed_other_batches(archive):
    a, _ = build_loaders(config(archive, train_transforms="fast", seed=1))
    b, _ = build_loaders(config(archive, train_transforms="fast", seed=2))
    assert not np.array_equal(epoch_batches(a, 0)[0][1], epoch_batches(b, 0)[0][1])


def test_dataset_item_is_the_loader_sample(archive):
    train, _ = build_loaders(config(archive, train_transforms="fast", seed=2))
    set_loader_epoch(train, 7)
    tensors = list(train)  # held while later batches are made: the loader's tensors must own their memory
    for (x, y), indices in zip(tensors, train.dataset._batches):
        want_x, want_y = train.dataset.dataset.get_batch(indices)
        np.testing.assert_array_equal(x.numpy(), want_x)
        np.testing.assert_array_equal(y.numpy(), want_y)
    first = int(train.dataset._batches[0][0])
    image, label = train.dataset.dataset[first]
    np.testing.assert_array_equal(image, tensors[0][0].numpy()[0])
    assert label == archive[1]["train"][1][first]


def test_limits_are_balanced(archive):
    train, val = build_loaders(config(archive, limit_train=20, limit_val=10, batch_size=4, seed=0))
    assert np.bincount(train.dataset.dataset.labels, minlength=10).tolist() == [2] * 10
    assert np.bincount(val.dataset.dataset.labels, minlength=10).tolist() == [1] * 10
    assert len(train) == 5 and len(val) == 3


@pytest.mark.parametrize("drop_last", [True, False])
def test_distributed_shards_one_order(drop_last):
    n, replicas = 23, 3
    single = EpochBatchSampler(n, 4, True, False, seed=9)
    shards = [EpochBatchSampler(n, 4, True, drop_last, seed=9, num_replicas=replicas, rank=r) for r in range(replicas)]
    for epoch in (0, 1):
        single.set_epoch(epoch)
        order = np.concatenate(single.batches())
        taken = []
        for s in shards:
            s.set_epoch(epoch)
            taken.append(np.concatenate(s.batches()) if len(s) else np.array([], int))
        if drop_last:
            # padded to 24 with the order's head; each rank 8 samples = 2 batches of 4, none dropped
            assert [len(s) for s in shards] == [2, 2, 2]
            for r in range(replicas):
                np.testing.assert_array_equal(taken[r], np.resize(order, 24)[r::replicas])
        else:
            assert sorted(np.concatenate(taken).tolist()) == list(range(n))  # each sample once, no padding
            for r in range(replicas):
                np.testing.assert_array_equal(taken[r], order[r::replicas])
    assert not np.array_equal(EpochBatchSampler(n, 4, True, True, seed=9).batches()[0], shards[0].batches()[0])


def test_build_loaders_distributed_uses_paddle_rank(archive, monkeypatch):
    monkeypatch.setattr(paddle.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(paddle.distributed, "get_rank", lambda: 1)
    train, val = build_loaders(config(archive, batch_size=5), distributed=True)
    assert len(train) == 5 and len(val) == 2  # 25 of 50 train samples, 10 of 20 test samples per rank
    set_loader_epoch(val, 0)
    np.testing.assert_array_equal(np.concatenate(val.dataset._batches), np.arange(1, 20, 2))


def test_config_errors(archive):
    with pytest.raises(ConfigError, match="batchsize"):
        config(archive, batchsize=64)
    with pytest.raises(ConfigError, match="'cutout'"):
        config(archive, train_transforms="cutout")
    with pytest.raises(ValueError, match="no full batch of 64"):
        build_loader(config(archive, batch_size=64), "train")
    with pytest.raises(ValueError, match="split must be one of train, val"):
        build_loader(config(archive), "test")


def test_missing_keys_take_defaults(archive):
    cfg = load_config(None, [f"data.root={archive[0]}", "data.batch_size=10"])
    train, val = build_loaders(cfg)
    assert len(train) == 5 and len(val) == 2
    assert SCHEMA["data"]["num_workers"].default is None and train.num_workers == worker_count(None)
    assert not isinstance(train.dataset.dataset.transform, FastTrainTransform)  # "recipe"


def test_auto_workers_load_in_the_main_process_on_two_cores(monkeypatch):
    from simam_paddle.native import threads

    for cores, workers in ((1, 0), (2, 0), (3, 2), (64, 2)):
        monkeypatch.setattr(threads, "available_cores", lambda cores=cores: cores)
        assert worker_count(None) == workers, cores
    assert worker_count(0) == 0 and worker_count(3) == 3


def test_a_tool_that_needs_the_test_split_reads_only_it(archive, monkeypatch):
    from simam_paddle.data import loaders

    read = []
    monkeypatch.setattr(loaders, "load_split", lambda root, split, **kw: read.append(split) or load_split(root, split, **kw))
    build_loader(config(archive), "val")
    assert read == ["test"]


def test_set_loader_epoch_needs_our_loader(archive):
    plain = paddle.io.DataLoader(build_dataset(archive[0], "test", FastTrainTransform()), batch_size=4)
    with pytest.raises(TypeError, match="build_loader"):
        set_loader_epoch(plain, 1)


FORK_AFTER_CV2_THREADS = """
import sys
import cv2
import numpy as np
from simam_paddle.config import load_config
from simam_paddle.data import build_loader, set_loader_epoch

big = np.zeros((1500, 1500, 3), np.float32)
for _ in range(3):  # make OpenCV's thread pool run in the parent before the workers fork
    cv2.warpAffine(big, np.eye(2, 3), (1500, 1500))
for transforms in ("recipe", "fast"):
    cfg = load_config(None, [f"data.root={sys.argv[1]}", "data.batch_size=8", "data.num_workers=2",
                             f"data.train_transforms={transforms}"])
    train = build_loader(cfg, "train")
    for epoch in range(2):
        set_loader_epoch(train, epoch)
        assert sum(1 for _ in train) == 6
print("done")
"""


def test_workers_do_not_hang_after_the_parent_used_cv2_threads(archive):
    """A forked worker must not reconfigure OpenCV's pool: that hung for ever once (see loaders.py)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", FORK_AFTER_CV2_THREADS, str(archive[0])], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-2000:]


def test_evenly_spaced_images_are_spread_over_the_test_set(tmp_path):
    root = write_learnable_image_folder(tmp_path / "folder", train_per_class=2, test_per_class=3)
    val = build_loader(load_config(None, [f"data.root={root}", "data.batch_size=4", "data.num_workers=0"]), "val")
    images, labels = evenly_spaced_images(val, 18)
    assert images.shape == (18, 3, 128, 128) and images.dtype == np.float32
    # the folder lists its 30 test images class by class; 18 evenly spaced ones reach every class
    assert sorted(set(labels.tolist())) == list(range(10))
