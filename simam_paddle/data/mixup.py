"""Batch Mixup for classification (Zhang et al., ICLR 2018, "mixup: Beyond Empirical Risk Minimization").

Each batch is mixed with a shuffled copy of itself: lam ~ Beta(alpha, alpha), one lam per batch,

    images  = lam * x + (1 - lam) * x[perm]
    targets = lam * onehot(y) + (1 - lam) * onehot(y[perm])

giving soft targets [B, K] that ``LabelSmoothingCrossEntropy`` accepts. ``alpha = 0`` means off.

This is not the notebook's PaddleX ``MixupImage``: that detection transform returned its input
unchanged in a classification pipeline, so the notebook trained without mixup (docs/recipe.md).

Resume: lam and perm come from the Mixup's own ``numpy.random.Generator`` seeded by ``seed``, never
from global state. The training loop builds one Mixup per epoch, seeded from (seed, epoch), so a run
resumed at epoch e draws the same lam and perm as an uninterrupted run without saving any state.
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F


class Mixup:
    def __init__(self, alpha: float, num_classes: int = 10, seed: int = 0):
        if not alpha >= 0:
            raise ValueError(f"mixup alpha must be >= 0 (0 = off), got {alpha}")
        self.alpha = float(alpha)
        self.num_classes = num_classes
        self.enabled = self.alpha > 0
        self._rng = np.random.default_rng(seed)
        self.last_lam: float | None = None  # the draws of the last call, for logging and tests
        self.last_perm: np.ndarray | None = None

    def __call__(self, images: paddle.Tensor, labels: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Mixed images and soft targets float32 [B, K]; when off, the images as they are and one-hot targets."""
        labels = paddle.to_tensor(labels) if not isinstance(labels, paddle.Tensor) else labels
        targets = F.one_hot(labels.reshape([-1]).astype("int64"), self.num_classes).astype("float32")
        if not self.enabled:
            return images, targets
        lam = float(self._rng.beta(self.alpha, self.alpha))
        perm = self._rng.permutation(images.shape[0])
        self.last_lam, self.last_perm = lam, perm
        index = paddle.to_tensor(perm)
        mixed = lam * images + (1 - lam) * paddle.gather(images, index)
        return mixed, lam * targets + (1 - lam) * paddle.gather(targets, index)
