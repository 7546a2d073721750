"""Label-smoothing cross-entropy, the loss of the SimAM notebook (smoothing 0.1).

Per sample, with p = softmax(logits) over K classes and smoothing eps:

    hard label t:    loss = (1 - eps) * (-log p[t]) + eps * mean_k(-log p[k])
    soft target q:   loss = sum_k -((1 - eps) * q[k] + eps / K) * log p[k]

The two agree when q is one-hot. Soft targets are what batch Mixup produces.
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn


def label_smoothing_cross_entropy(logits: paddle.Tensor, target: paddle.Tensor, smoothing: float = 0.1) -> paddle.Tensor:
    """Mean label-smoothing cross-entropy of logits [B, K] against labels [B] / [B, 1] or soft targets [B, K]."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be [batch, classes], got shape {list(logits.shape)}")
    batch, classes = logits.shape
    log_p = F.log_softmax(logits.astype("float32") if logits.dtype in (paddle.float16, paddle.bfloat16) else logits, axis=-1)
    if target.dtype in (paddle.int32, paddle.int64, paddle.uint8, paddle.int16, paddle.int8):
        if list(target.shape) not in ([batch], [batch, 1]):
            raise ValueError(
                f"integer labels must have shape [{batch}] or [{batch}, 1] to match logits {list(logits.shape)}, "
                f"got {list(target.shape)}"
            )
        labels = target.reshape([batch]).astype("int64")
        if batch and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ValueError(
                f"labels must lie in [0, {classes}) for {classes} classes, got values from "
                f"{int(labels.min())} to {int(labels.max())}"
            )
        nll = -paddle.take_along_axis(log_p, labels.unsqueeze(1), axis=1).squeeze(1)
        loss = (1 - smoothing) * nll - smoothing * log_p.mean(axis=-1)
    else:
        if list(target.shape) != [batch, classes]:
            raise ValueError(
                f"soft targets must have the logits' shape {list(logits.shape)}, got {list(target.shape)}"
            )
        q = (1 - smoothing) * target.astype(log_p.dtype) + smoothing / classes
        loss = -(q * log_p).sum(axis=-1)
    return loss.mean()


class LabelSmoothingCrossEntropy(nn.Layer):
    """``LabelSmoothingCrossEntropy(smoothing=0.1)(logits, target)``: see the module docstring."""

    def __init__(self, smoothing: float = 0.1):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)

    def forward(self, logits: paddle.Tensor, target: paddle.Tensor) -> paddle.Tensor:
        return label_smoothing_cross_entropy(logits, target, self.smoothing)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing:g}"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of logits [N, K] in NumPy (the tools' predictions), stable for large logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
