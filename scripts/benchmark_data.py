"""Images per second that the train loader delivers at 128x128, batch 128: recipe vs fast, 0 and 2 workers.

Timing starts after two warm-up batches (worker start-up and the first batch excluded) and covers
iterating the real loader from ``build_loader`` until the epoch ends, as the training loop does; the
images come from the shared JPEG copy (decoded into memory before timing). Images per second depend on
what else the machine runs, so each row also gives the CPU time spent per image over the same span (this
process with all its threads, and the loader's worker processes), which depends much less on it. Two
reference lines help
to read the table: each pipeline run directly on batches in one process (no loader), and the loader
alone, carrying ready-made float32 batches from a dataset that does no work (what Paddle's DataLoader
costs by itself).

    python scripts/benchmark_data.py                    # the tables in BENCHMARKS.md, with OpenCV's threads
    python scripts/benchmark_data.py --cv2-threads 1    # and with OpenCV single-threaded
    python scripts/benchmark_data.py --rounds 1 --batches 10    # a quick look
    python scripts/benchmark_data.py -o data.root=PATH          # another copy of the data (default: $SIMAM_DATA_DIR/cifar10-jpeg)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import paddle

from simam_paddle import cli
from simam_paddle.config import load_config
from simam_paddle.data import build_loader, set_loader_epoch
from simam_paddle.data.loaders import CifarDataset, EpochBatchSampler, make_loader

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path(os.environ.get("SIMAM_DATA_DIR", REPO.parent / "shared" / "data")) / "cifar10-jpeg"
BATCH = 128
WARMUP = 2


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time of a live process from /proc (Linux); None once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def time_loader(loader, epoch: int) -> tuple[float, float]:
    """(images per second, CPU milliseconds per image of this process and its workers), after the warm-up.

    Workers exit with the epoch's end, so their CPU time is read after every batch and the last
    reading counts.
    """
    set_loader_epoch(loader, epoch)
    iterator = iter(loader)
    for _ in range(WARMUP):
        next(iterator)
    workers = {w.pid: 0.0 for w in getattr(iterator, "_workers", [])}  # Paddle's worker processes, if any
    for pid in workers:
        workers[pid] = process_cpu_seconds(pid)
    worker_start = sum(workers.values())
    start, own_start, images = time.perf_counter(), time.process_time(), 0
    for x, _ in iterator:
        images += x.shape[0]
        for pid in workers:
            workers[pid] = process_cpu_seconds(pid) or workers[pid]
    rate = images / (time.perf_counter() - start)
    cpu = time.process_time() - own_start + sum(workers.values()) - worker_start
    return rate, 1000 * cpu / images


def time_direct(dataset, batches: int) -> tuple[float, float]:
    dataset.set_epoch(0)
    dataset.get_batch(np.arange(BATCH))
    start, cpu_start = time.perf_counter(), time.process_time()
    for b in range(batches):
        dataset.get_batch(np.arange(b * BATCH, (b + 1) * BATCH))
    return batches * BATCH / (time.perf_counter() - start), 1000 * (time.process_time() - cpu_start) / (batches * BATCH)


class ReadyBatches(CifarDataset):
    """Hands out one preallocated float32 batch: the loader's own cost, without any image work."""

    def __init__(self, n: int):
        super().__init__(np.zeros((n, 1, 1, 3), np.uint8), np.zeros(n, np.int64))
        self.batch = np.random.default_rng(0).standard_normal((BATCH, 3, 128, 128), dtype=np.float32)

    def get_batch(self, indices):
        return self.batch.copy(), self.labels[indices]


def summary(runs: list[tuple[float, float]]) -> list[str]:
    """Mean ± std over the runs of images/s and of CPU ms per image."""
    cells = []
    for values, fmt in (([r for r, _ in runs], "{:,.0f}"), ([c for _, c in runs], "{:.3f}")):
        spread = " ± " + fmt.format(statistics.stdev(values)) if len(values) > 1 else ""
        cells.append(fmt.format(statistics.mean(values)) + spread)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_overrides(parser, "the data to read (image-folder root or cifar-10-python.tar.gz)", "data.root=PATH")
    parser.add_argument("--root", dest="override", type=lambda p: f"data.root={p}", action="append",
                        help=argparse.SUPPRESS)  # deprecated spelling of -o data.root=PATH
    parser.add_argument("--batches", type=int, default=40, help="timed batches per run (recipe: a quarter of it)")
    cli.add_rounds(parser, 3, "each row (runs; the table shows mean ± std)")
    parser.add_argument("--repeats", dest="rounds", type=cli.positive_int, help=argparse.SUPPRESS)  # deprecated: --rounds
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--cv2-threads", type=int, default=None, help="cv2.setNumThreads at start (default: OpenCV's own)")
    args = parser.parse_args()
    root = [f"data.root={DEFAULT_ROOT}", *cli.overrides(args.override, "benchmark_data", ("data.root",),
                                                        "the script sets the other data keys itself")]
    if args.cv2_threads is not None:
        cv2.setNumThreads(args.cv2_threads)  # in this process, before any worker forks (see loaders.py)

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"Paddle {paddle.__version__}, NumPy {np.__version__}, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads)")
    print(f"# load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    rows = []
    for pipeline in ("recipe", "fast"):
        batches = max(args.batches // 4, 4) if pipeline == "recipe" else args.batches
        settings = [*root, f"data.train_transforms={pipeline}", f"data.batch_size={BATCH}",
                    f"data.limit_train={(batches + WARMUP) * BATCH}"]
        direct = []
        for r in range(args.rounds):
            train = build_loader(load_config(None, settings + ["data.num_workers=0", f"train.seed={r}"]), "train")
            direct.append(time_direct(train.dataset.dataset, batches))
        rows.append((pipeline, "no loader, 1 process", *summary(direct)))
        for workers in args.workers:
            runs = []
            for r in range(args.rounds):
                train = build_loader(load_config(None, settings + [f"data.num_workers={workers}", f"train.seed={r}"]),
                                     "train")
                runs.append(time_loader(train, epoch=r))
            rows.append((pipeline, f"loader, {workers} workers", *summary(runs)))
    for workers in args.workers:
        n = (args.batches + WARMUP) * BATCH
        loader = make_loader(ReadyBatches(n), EpochBatchSampler(n, BATCH, True, True), workers)
        runs = [time_loader(loader, r) for r in range(args.rounds)]
        rows.append(("none (ready batches)", f"loader, {workers} workers", *summary(runs)))
    print(f"# load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| pipeline | how | images/s | CPU ms per image |")
    print("|---|---|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
