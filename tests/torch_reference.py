"""The PyTorch side of the converter's tests, run as its own process (``python tests/torch_reference.py
COMMAND ...``): PyTorch and Paddle bring their own OpenMP runtimes and never share a process, so the
tests never import torch; they run this script and read the files it writes.

The models are the SimAM paper's official ImageNet networks written again in plain PyTorch, with the
official code's placement of SimAM and its layer names (a test-only reference, independent of the
Paddle models): ResNet-18/34/50/101/152 (SimAM inside a Sequential with each block's 3x3 conv,
before its BatchNorm) and MobileNetV2 (SimAM after each depthwise conv, before its BatchNorm; the
classifier a Linear alone).

Commands (each prints a JSON summary on its last line):

- ``save NAME --classes N --layout L --output CKPT``: the model with random weights and BatchNorm
  statistics, saved as layout L says:
  ``official``: as the official ``main_imagenet.py`` saves it: ``thop.profile``'s counters (a
  ``total_ops`` and a ``total_params`` float64 [1] buffer on every module) registered before the model
  is wrapped in ``DataParallel`` (``module.`` prefix), SGD's state with a momentum buffer per parameter,
  the best accuracy as a [1] tensor, every storage tagged ``cuda:0`` as on the GPU it was trained on;
  ``bare``: ``torch.save(model.state_dict())``.
  ``--legacy`` writes the pre-1.6 format (``_use_new_zipfile_serialization=False``); ``--drop KEY``,
  ``--reshape KEY=D,D,..`` and ``--extra KEY=D,D,..`` change the state dict (keys as saved);
  ``--object`` adds an ``argparse.Namespace`` beside it; ``--input X.npy --logits Y.npy`` write the
  eval-mode logits for X; ``--weights W.npz`` the state dict as arrays (keys without ``module.``).
- ``dtypes --output CKPT --expected NPZ``: tensors of every dtype and layout, and the values torch holds.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from torch import nn

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


class SimAM(nn.Module):  # the official module, with its Sigmoid child (which thop's counters reach too)
    def __init__(self, e_lambda):
        super().__init__()
        self.activaton, self.e_lambda = nn.Sigmoid(), e_lambda

    def forward(self, x):
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        return x * self.activaton(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5)


def with_simam(conv3x3: nn.Conv2d, lam):
    """The official ResNet block's conv2: a Sequential of the 3x3 conv and SimAM."""
    return nn.Sequential(conv3x3, SimAM(lam))


def conv(cin, cout, kernel, stride=1, groups=1):
    return nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)


class Block(nn.Module):
    """A residual block: ReLU of its residual branch plus its input, or the input's projection."""

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual(x) + identity)


class BasicBlock(Block):
    expansion = 1

    def __init__(self, cin, width, stride, lam):
        super().__init__()
        self.conv1, self.bn1, self.relu = conv(cin, width, 3, stride), nn.BatchNorm2d(width), nn.ReLU()
        self.conv2, self.bn2 = with_simam(conv(width, width, 3), lam), nn.BatchNorm2d(width)

    def residual(self, x):
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(Block):
    expansion = 4

    def __init__(self, cin, width, stride, lam):
        super().__init__()
        self.conv1, self.bn1, self.relu = conv(cin, width, 1), nn.BatchNorm2d(width), nn.ReLU()
        self.conv2, self.bn2 = with_simam(conv(width, width, 3, stride), lam), nn.BatchNorm2d(width)  # stride here (v1.5)
        self.conv3, self.bn3 = conv(width, width * 4, 1), nn.BatchNorm2d(width * 4)

    def residual(self, x):
        out = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        return self.bn3(self.conv3(out))


def block(kind, cin, width, stride, lam):
    cls = BasicBlock if kind == "basic" else Bottleneck
    module = cls(cin, width, stride, lam)
    cout = width * cls.expansion
    module.downsample = None
    if stride != 1 or cin != cout:
        module.downsample = nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
    return module, cout


class ResNet(nn.Module):
    def __init__(self, depth, lam, num_classes):
        super().__init__()
        kind, counts = DEPTHS[depth]
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        cin = 64
        for k, (width, count) in enumerate(zip((64, 128, 256, 512), counts), start=1):
            blocks = []
            for i in range(count):
                module, cin = block(kind, cin, width, 2 if k > 1 and i == 0 else 1, lam)
                blocks.append(module)
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def conv_bn_relu(cin, cout, kernel=3, stride=1, groups=1, lam=None):
    attention = [SimAM(lam)] if lam is not None else []  # after each depthwise conv, before its BN
    return nn.Sequential(conv(cin, cout, kernel, stride, groups), *attention, nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, lam):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [conv_bn_relu(cin, hidden, kernel=1)] if expand != 1 else []
        layers += [conv_bn_relu(hidden, hidden, stride=stride, groups=hidden, lam=lam), conv(hidden, cout, 1),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, lam, num_classes):
        super().__init__()
        features, cin = [conv_bn_relu(3, 32, stride=2)], 32
        for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                           (6, 160, 3, 2), (6, 320, 1, 1)):
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t, lam))
                cin = c
        features.append(conv_bn_relu(cin, 1280, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Linear(1280, num_classes))  # the official head: no dropout

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def official_model(name: str, num_classes: int, lam: float = 0.1) -> nn.Module:
    """``resnet18`` ... ``resnet152`` or ``mobilenet_v2`` with SimAM of lambda ``lam``."""
    if name == "mobilenet_v2":
        return MobileNetV2(lam, num_classes)
    return ResNet(int(name.removeprefix("resnet")), lam, num_classes)


def randomised(model: nn.Module) -> nn.Module:
    """Random weights and random BatchNorm statistics, in eval mode."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                module.running_mean.normal_(0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.normal_(0, (2 / module.weight[0].numel()) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0, 0.1, generator=generator)
    return model.eval()


def add_profiling_counters(model: nn.Module) -> int:
    """What ``thop.profile(model, ...)`` leaves behind in the official scripts: two float64 [1] buffers
    on every module, the operations and the parameters it counted there; returns how many."""
    for module in model.modules():
        module.register_buffer("total_ops", torch.tensor([1000.0 * len(list(module.children())) + 7], dtype=torch.float64))
        module.register_buffer("total_params", torch.tensor([float(sum(p.numel() for p in module.parameters()))],
                                                            dtype=torch.float64))
    return 2 * len(list(model.modules()))


def sgd_state(model: nn.Module) -> dict:
    """The state of main_imagenet.py's optimizer after a step: a momentum buffer per parameter."""
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
    with torch.no_grad():
        for p in model.parameters():
            p.grad = torch.full_like(p, 1e-3)
        optimizer.step()  # lr * momentum steps of 1e-4: the weights are randomised again afterwards
    return optimizer.state_dict()


def shape(text: str) -> list[int]:
    return [int(d) for d in text.split(",")]


def save(args) -> dict:
    name = args.name.removesuffix("_simam")
    model = official_model(name, args.classes)
    summary = {}
    if args.layout == "official":
        summary["counters"] = add_profiling_counters(model)  # profile() runs before the DataParallel wrap
        model = nn.DataParallel(model)  # on a CPU-only machine: a wrapper with the module. prefix
        optimizer = sgd_state(model)
    randomised(model)
    state = model.state_dict()
    for key in args.drop:
        del state[key]
    for key, dims in (item.split("=") for item in args.reshape):
        state[key] = torch.zeros(shape(dims))
    for key, dims in (item.split("=") for item in args.extra):
        state[key] = torch.ones(shape(dims))
    if args.layout == "official":
        payload = {"epoch": 90, "arch": name, "state_dict": state, "best_acc": torch.tensor([71.31]),
                   "optimizer": optimizer}
    else:
        payload = state
    if args.object:
        payload = {"state_dict": state, "args": argparse.Namespace(lr=0.1)}
    location_tag = torch.serialization.location_tag
    if args.layout == "official":  # every storage tagged as saved from the first GPU
        torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(payload, args.output, _use_new_zipfile_serialization=not args.legacy)
    finally:
        torch.serialization.location_tag = location_tag
    try:
        torch.load(args.output)
        summary["plain_load"] = "ok"
    except Exception as exc:  # a cuda:0 checkpoint on a machine without CUDA
        summary["plain_load"] = f"{type(exc).__name__}: {exc}"
    summary["keys"] = sorted(payload)
    summary["state_keys"] = sorted(state)
    if args.weights:
        np.savez(args.weights, **{k.removeprefix("module."): v.numpy() for k, v in state.items()})
    if args.input:
        with torch.no_grad():
            logits = model(torch.from_numpy(np.load(args.input))).numpy()
        np.save(args.logits, logits)
    return summary


def dtypes(args) -> dict:
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    tensors = {
        "float32": base.float(), "float64": base, "float16": base.half(), "int64": base.long(), "int32": base.int(),
        "int16": base.short(), "int8": base.char(), "uint8": base.byte(), "bool": base > 7,
        "bfloat16": (base / 7).bfloat16(), "transposed": base.float().t(), "sliced": base.float()[1:, 2:5],
        "shared": base.float()[2], "scalar": torch.tensor(3.5),
    }
    torch.save({"tensors": tensors, "nested": [1, 2.5, "x", b"raw", (3, None)]}, args.output)
    np.savez(args.expected, **{k: (t.float() if t.dtype == torch.bfloat16 else t).numpy() for k, t in tensors.items()})
    return {"tensors": len(tensors)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    s = commands.add_parser("save")
    s.add_argument("name", help="resnet18 ... resnet152 or mobilenet_v2, with or without _simam")
    s.add_argument("--classes", type=int, default=1000)
    s.add_argument("--layout", choices=("official", "bare"), default="official")
    s.add_argument("--legacy", action="store_true")
    s.add_argument("--drop", action="append", default=[])
    s.add_argument("--reshape", action="append", default=[])
    s.add_argument("--extra", action="append", default=[])
    s.add_argument("--object", action="store_true")
    s.add_argument("--output", required=True)
    s.add_argument("--weights")
    s.add_argument("--input")
    s.add_argument("--logits")
    d = commands.add_parser("dtypes")
    d.add_argument("--output", required=True)
    d.add_argument("--expected", required=True)
    args = p.parse_args()
    torch.manual_seed(0)
    print(json.dumps(save(args) if args.command == "save" else dtypes(args)))


if __name__ == "__main__":
    main()
