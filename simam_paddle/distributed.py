"""Helpers for runs under ``python -m paddle.distributed.launch``; no-ops in a single process."""

from __future__ import annotations

import paddle
import paddle.distributed as dist


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum ``values`` over all processes (the per-process sums of a metric)."""
    if dist.get_world_size() == 1:
        return values
    t = paddle.to_tensor(values, dtype="float64")
    dist.all_reduce(t)
    return t.tolist()

