"""Datasets and loaders whose batches and augmentations depend only on (seed, epoch).

``build_loader(config, "train" | "val")`` builds one loader from a validated config (its ``data``
section and ``train.seed``): "train" is the training split, shuffled per epoch with drop_last and the
configured augmentation; "val" is the test split in order with the test transforms. A tool that needs
one split reads only that one. The training loop calls ``set_loader_epoch(loader, epoch)`` before
each epoch. Then:

- the order is a permutation drawn from ``numpy.random.default_rng([seed, epoch])`` (train), or the
  dataset order (validation); with ``distributed=True`` every rank takes its share of that one order;
- the augmentation of sample i in epoch e depends on (seed, e, i) alone: the recipe's Paddle transforms
  run with Python's ``random`` and NumPy's global RNG seeded from (seed, e, i) and restored afterwards;
  the fast pipeline draws the parameters of the whole epoch from ``default_rng([seed, e, 1])`` at once;
- a loader item is a whole batch, built by one worker, so 0, 1 or 2 workers yield the same batches,
  and a run resumed at epoch e sees what an uninterrupted run saw. The global RNGs of the process are
  left as they were. One caveat: with 0 workers the recipe's transforms run in the loader's thread of
  the main process with the global RNGs seeded for a moment, so a training loop that drew from
  Python's ``random`` or NumPy's global RNG while iterating would race with them (Mixup's generator and
  Paddle's own RNG are not shared).

Nothing here calls ``cv2.setNumThreads``: in a forked worker of a process whose OpenCV thread pool has
run, that call can hang for ever (tested). A program that wants OpenCV single-threaded sets it once at
start, before any loader exists; on these small images it changes little (BENCHMARKS.md).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import paddle
from paddle.io import DataLoader, Dataset, get_worker_info

from ..errors import DataError
from .sources import load_split
from .transforms import build_test_transform, build_train_transform, first_resize

# split of a loader -> (split of the dataset, shuffled and drop_last, config key of its class-balanced limit)
LOADER_SPLITS = {"train": ("train", True, "limit_train"), "val": ("test", False, "limit_val")}


@contextmanager
def seeded_global_rngs(*key: int) -> Iterator[None]:
    """Seed Python's ``random`` and NumPy's global RNG from a key of non-negative ints; restore them after."""
    saved = random.getstate(), np.random.get_state()
    words = np.random.SeedSequence(key).generate_state(4)
    random.seed(int.from_bytes(words.tobytes(), "little"))
    np.random.seed(words)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def _is_batch_transform(transform: Any) -> bool:
    return hasattr(transform, "draw") and hasattr(transform, "apply")


class CifarDataset(Dataset):
    """Images uint8 [N, H, W, 3] and labels int64 [N] in memory, with a transform seeded per (seed, epoch, index).

    ``transform`` is a callable on one HWC uint8 image, or a batch transform with ``draw(rng, n)`` and
    ``apply(images, params)`` (``FastTrainTransform``), or None to return the uint8 image.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None, seed: int = 0):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self._params: tuple[int, np.ndarray] | None = None  # (epoch, parameters of every sample)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def _epoch_params(self) -> np.ndarray:
        if self._params is None or self._params[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch, 1])
            self._params = (self.epoch, self.transform.draw(rng, len(self)))
        return self._params[1]

    def _transform_images(self, indices: np.ndarray) -> np.ndarray:
        if self.transform is None:
            return self.images[indices]
        if _is_batch_transform(self.transform):
            return self.transform.apply(self.images[indices], self._epoch_params()[indices])
        out = []
        for i in indices:
            with seeded_global_rngs(self.seed, self.epoch, int(i)):
                out.append(self.transform(self.images[i]))
        return np.stack(out)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        return self._transform_images(np.array([index]))[0], self.labels[index]

    def get_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Transformed images [B, ...] and labels int64 [B] of the given sample indices."""
        indices = np.asarray(indices, dtype=np.int64)
        return self._transform_images(indices), self.labels[indices]


def build_dataset(
    root, split: str, transform: Callable | None, limit: int | None = None, seed: int = 0, download: bool = True,
    size: int | None = None,
) -> CifarDataset:
    """One split ("train" or "test") from ``root`` (see ``sources.load_split``, also for ``size``), with ``transform``."""
    images, labels = load_split(root, split, limit=limit, seed=seed, download=download, size=size)
    return CifarDataset(images, labels, transform, seed=seed)


class EpochBatchSampler:
    """Index batches of one epoch: shuffled by ``default_rng([seed, epoch])`` or in order, sharded over ranks.

    With several ranks, the epoch's order is cut into ``num_replicas`` interleaved shards
    (``order[rank::num_replicas]``), as ``paddle.io.DistributedBatchSampler`` does. With ``drop_last``
    the order is first padded with its own head to a multiple of ``num_replicas`` so that every rank
    gets the same number of batches; without it the shards are not padded (no sample counts twice) and
    may differ by one sample.
    """

    def __init__(
        self, num_samples: int, batch_size: int, shuffle: bool, drop_last: bool,
        seed: int = 0, num_replicas: int = 1, rank: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[np.ndarray]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        if self.drop_last and self.num_replicas > 1:
            total = math.ceil(self.num_samples / self.num_replicas) * self.num_replicas
            order = np.resize(order, total)  # repeats the head of the order
        shard = order[self.rank :: self.num_replicas]
        stop = len(shard) - len(shard) % self.batch_size if self.drop_last else len(shard)
        return [shard[k : k + self.batch_size] for k in range(0, stop, self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return (batch.tolist() for batch in self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class EpochBatches(Dataset):
    """The batches of the current epoch as dataset items, so that one worker builds one whole batch."""

    def __init__(self, dataset: CifarDataset, sampler: EpochBatchSampler):
        self.dataset = dataset
        self.sampler = sampler
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        self._batches = self.sampler.batches()

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, k: int):
        arrays = self.dataset.get_batch(self._batches[k])
        if get_worker_info() is not None:
            return arrays  # Paddle moves a worker's numpy arrays through shared memory itself
        # In the loading thread of the main process, hand Paddle tensors over the same memory: turning a
        # 25 MB batch into a DenseTensor costs as much as making it.
        return tuple(paddle.utils.dlpack.from_dlpack(np.ascontiguousarray(a)) for a in arrays)


# data.num_workers: null picks 0 workers up to this many cores: there a worker process takes CPU time
# from the compute threads, which run on every core (native/threads.py), and loading in the main
# process between the steps is faster overall (BENCHMARKS.md, "Training speed", the pipeline rows).
AUTO_WORKERS_MAX_CORES = 2
AUTO_WORKERS = 2


def worker_count(setting: int | None) -> int:
    """The loader's worker processes for ``data.num_workers`` (null = auto, see AUTO_WORKERS_MAX_CORES)."""
    if setting is not None:
        return setting
    from ..native.threads import available_cores

    return 0 if available_cores() <= AUTO_WORKERS_MAX_CORES else AUTO_WORKERS


def make_loader(dataset: CifarDataset, sampler: EpochBatchSampler, num_workers: int) -> DataLoader:
    """A DataLoader over ``dataset`` in the batches of ``sampler``; call ``set_loader_epoch`` before each epoch."""
    return DataLoader(EpochBatches(dataset, sampler), batch_size=None, num_workers=num_workers)


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Make ``loader`` yield the batches and augmentations of ``epoch`` (call it before iterating)."""
    if not isinstance(loader.dataset, EpochBatches):
        raise TypeError(f"set_loader_epoch needs a loader made by build_loader, got one over {type(loader.dataset).__name__}")
    loader.dataset.set_epoch(epoch)


def evenly_spaced_images(loader: DataLoader, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images of ``loader``'s dataset at evenly spaced indices, transformed, with their labels.

    Evenly spaced, not the first ones: an image folder lists its test set class by class.
    """
    dataset = loader.dataset.dataset
    return dataset.get_batch(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(np.int64))


def build_loader(config: dict, split: str, distributed: bool = False) -> DataLoader:
    """The ``"train"`` or ``"val"`` loader of a validated config (``simam_paddle.config``).

    ``distributed``: shard over ``paddle.distributed`` ranks; ``data.batch_size`` is per process.
    Batches are (images float32 [B, 3, S, S] with S = ``data.image_size``, labels int64 [B]).
    """
    if split not in LOADER_SPLITS:
        raise ValueError(f"split must be one of {', '.join(LOADER_SPLITS)}, got {split!r}")
    data, seed = config["data"], config["train"]["seed"]
    source_split, training, limit_key = LOADER_SPLITS[split]
    size = data["image_size"]
    transform = build_train_transform(data["train_transforms"], size) if training else build_test_transform(size)
    stored = first_resize(data["train_transforms"] if training else None, size)  # images are kept no larger than this
    dataset = build_dataset(data["root"], source_split, transform, limit=data[limit_key], seed=seed,
                            download=data["download"], size=stored)
    replicas, rank = (paddle.distributed.get_world_size(), paddle.distributed.get_rank()) if distributed else (1, 0)
    batch = data["batch_size"]
    sampler = EpochBatchSampler(len(dataset), batch, training, training, seed, replicas, rank)
    if len(sampler) == 0:
        raise DataError(
            f"{len(dataset)} {split} images per process make no full batch of {batch} (drop_last); "
            "lower data.batch_size or raise data.limit_train"
        )
    return make_loader(dataset, sampler, worker_count(data["num_workers"]))
