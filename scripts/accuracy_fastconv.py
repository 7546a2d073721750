"""How far simam_paddle.fastconv and Paddle's own convolution each are from a float64 reference.

For each of AlexNet's convolutions at batch 128 (random inputs and output gradients, the layer's
initial weights, a random bias): the output and the input, weight and bias gradients in float32
by ``paddle.nn.Conv2D`` ("paddle") and by ``simam_paddle.fastconv.Conv2D`` ("fastconv"), against
the same computation in float64 by ``paddle.nn.functional.conv2d``. Each error is the largest
absolute difference divided by the largest absolute reference value (the measure of
``tests/test_fastconv.py``), and beside it the relative L2 norm of the difference.

    python scripts/accuracy_fastconv.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_train import conv_inputs  # noqa: E402

from simam_paddle.fastconv import Conv2D  # noqa: E402


def errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max()), float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    paddle.seed(0)
    rng = np.random.default_rng(0)
    print(f"{'':12s}{'paddle vs f64':>22s}{'fastconv vs f64':>22s}{'fastconv vs paddle':>22s}   (max, L2)")
    for name, (cin, cout, k, stride, pad), shape in conv_inputs():
        fast = Conv2D(cin, cout, k, stride=stride, padding=pad)
        fast.bias.set_value(paddle.randn([cout]))
        ref = paddle.nn.Conv2D(cin, cout, k, stride=stride, padding=pad)
        ref.set_state_dict(fast.state_dict())
        x_np = rng.standard_normal(shape).astype("float32")
        dy_np = rng.standard_normal(ref(paddle.to_tensor(x_np)).shape).astype("float32")
        results = []
        for layer in (ref, fast):
            x = paddle.to_tensor(x_np, stop_gradient=False)
            y = layer(x)
            results.append([y.numpy()] + [g.numpy() for g in paddle.grad(y, [x, layer.weight, layer.bias],
                                                                          paddle.to_tensor(dy_np))])
        x64 = paddle.to_tensor(x_np.astype("float64"), stop_gradient=False)
        w64 = paddle.to_tensor(ref.weight.numpy().astype("float64"), stop_gradient=False)
        b64 = paddle.to_tensor(ref.bias.numpy().astype("float64"), stop_gradient=False)
        y64 = F.conv2d(x64, w64, b64, stride=stride, padding=pad)
        exact = [y64.numpy()] + [g.numpy() for g in paddle.grad(y64, [x64, w64, b64],
                                                                paddle.to_tensor(dy_np.astype("float64")))]
        for part, p, f, e in zip(("y", "dx", "dw", "db"), results[0], results[1], exact):
            cells = [errors(p, e), errors(f, e), errors(f, p)]
            print(f"{name + ' ' + part:12s}" + "".join(f"{c[0]:13.1e}{c[1]:9.1e}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
