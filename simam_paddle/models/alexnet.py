"""AlexNet for 128x128 inputs, with optional attention after each convolution.

The variant of the SimAM notebook (docs/recipe.md): five convolutions, three max-pools, a 3x3x128
feature map flattened into a 2048-2048 classifier with dropout 0.5. ``attn_layer="simam"`` puts a
SimAM right after each of the five convolutions, before its ReLU; as SimAM has no parameters, both
models have 7,524,042 parameters for 10 classes. Where the SimAM kernel runs, each SimAM, its ReLU
and its pool run as one call (see ``simam_paddle.layers.fusion``): the same numbers, less memory kept for backward.
With ``fast_conv`` (the default) the convolutions are ``simam_paddle.fastconv.Conv2D``: oneDNN on the
CPU where it applies, Paddle's own convolution elsewhere; the parameters and their names are the same.
"""

from __future__ import annotations

import paddle
from paddle import nn

from ..fastconv import Conv2D as FastConv2D
from ..layers import create_attn, run_sequential

INPUT_SIZE = 128
# (in_channels, out_channels, kernel, stride, padding, max-pool after the ReLU)
CONVS = (
    (3, 48, 11, 4, 5, True),
    (48, 128, 5, 1, 2, True),
    (128, 192, 3, 1, 1, False),
    (192, 192, 3, 1, 1, False),
    (192, 128, 3, 1, 1, True),
)


class AlexNet(nn.Layer):
    """AlexNet for 128x128 RGB images; ``attn_layer`` names the attention after each convolution.

    ``fuse=False`` runs every layer on its own (the fused blocks give the same numbers; see simam_paddle.layers.fusion).
    ``fast_conv=False`` computes the convolutions with Paddle's own kernels everywhere (see simam_paddle.fastconv).
    """

    def __init__(
        self,
        num_classes: int = 10,
        attn_layer: str | None = "none",
        dropout: float = 0.5,
        fuse: bool = True,
        fast_conv: bool = True,
        **attn_kwargs,
    ):
        super().__init__()
        self.fuse = fuse
        conv = FastConv2D if fast_conv else nn.Conv2D
        layers = []
        for cin, cout, k, stride, pad, pool in CONVS:
            layers.append(conv(cin, cout, kernel_size=k, stride=stride, padding=pad))
            # An Identity stands in for "no attention" so that both models share parameter names
            # (features.0, .4, .8, .11, .14: the notebook's AlexNet_SimAM names) and checkpoints.
            layers.append(create_attn(attn_layer, cout, **attn_kwargs) or nn.Identity())
            layers.append(nn.ReLU())
            if pool:
                layers.append(nn.MaxPool2D(kernel_size=3, stride=2))
        self.features = nn.Sequential(*layers)
        feature_dim = CONVS[-1][1] * 3 * 3
        self.classifier = nn.Sequential(
            nn.Linear(feature_dim, 2048),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(2048, 2048),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(2048, num_classes),
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if x.ndim != 4 or x.shape[2] != INPUT_SIZE or x.shape[3] != INPUT_SIZE:
            size = "x".join(str(s) for s in x.shape[2:]) if x.ndim == 4 else f"shape {list(x.shape)}"
            raise ValueError(
                f"AlexNet expects {INPUT_SIZE}x{INPUT_SIZE} input ([B, 3, {INPUT_SIZE}, {INPUT_SIZE}]), got {size}"
            )
        x = run_sequential(self.features, x) if self.fuse else self.features(x)
        return self.classifier(paddle.flatten(x, 1))
