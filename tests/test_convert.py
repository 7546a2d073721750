"""The PyTorch checkpoint reader and the converter of the official SimAM models.

Against PyTorch itself where it is installed (a test-only reference: pip install "torch==2.13.0+cpu";
CI installs it): SimAM ResNet-18 and MobileNetV2 are written below in PyTorch with the official
placement and layer names, given random weights and BatchNorm statistics, saved with torch.save as a
training script does (a state_dict wrapper, DataParallel's module. prefix), converted, and their
eval-mode logits compared with the Paddle models'. The reader's refusals are also tested on
checkpoints built here byte by byte, without PyTorch.
"""

from __future__ import annotations

import importlib.util
import struct
import zipfile

import numpy as np
import paddle
import pytest
from helpers import run_tool, run_train, write_learnable_image_folder

from simam_paddle import build_model
from simam_paddle.convert import convert
from simam_paddle.torch_zip import CheckpointError, read_torch_checkpoint

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason='PyTorch, the reference of these tests, is not installed (pip install "torch==2.13.0+cpu"; CI installs it)',
)


# -- checkpoints byte by byte (pickle protocol 2, as torch.save writes them) ------------------------
def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def _tensor(key: str, storage: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0) -> bytes:
    ints = lambda values: b"(" + b"".join(_int(v) for v in values) + b"t"  # noqa: E731
    return (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + b"(" + _str("storage") + _global("torch", storage)
            + _str(key) + _str("cpu") + _int(numel) + b"t" + b"Q" + _int(offset) + ints(size) + ints(stride) + b"\x89"
            + _global("collections", "OrderedDict") + b")R" + b"tR")


def write_zip(path, items: bytes, storages: dict[str, bytes], prefix: str = "archive") -> None:
    """A checkpoint whose pickle is the dict of ``items`` (key/value opcodes), storages as given."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{prefix}/data.pkl", b"\x80\x02}(" + items + b"u.")
        archive.writestr(f"{prefix}/byteorder", "little")
        for key, raw in storages.items():
            archive.writestr(f"{prefix}/data/{key}", raw)


def test_a_tensor_is_read_with_its_strides_offset_and_dtype(tmp_path):
    path = tmp_path / "hand.pth"
    floats = np.arange(8, dtype="<f4").tobytes()
    longs = np.array([7, -3], dtype="<i8").tobytes()
    items = (_str("t") + _tensor("0", "FloatStorage", 8, (2, 3), (1, 2), offset=1)  # transposed view from element 1
             + _str("n") + _tensor("1", "LongStorage", 2, (), ()) + _str("epoch") + _int(90) + _str("arch") + _str("resnet18"))
    write_zip(path, items, {"0": floats, "1": longs})
    got = read_torch_checkpoint(path)
    np.testing.assert_array_equal(got["t"], [[1, 3, 5], [2, 4, 6]])  # element (i, j) = storage[1 + i + 2 j]
    assert got["t"].dtype == np.float32 and got["t"].flags.c_contiguous
    assert got["n"].dtype == np.int64 and got["n"].shape == () and int(got["n"]) == 7
    assert got["epoch"] == 90 and got["arch"] == "resnet18"


def test_a_pickled_callable_is_refused_and_never_called(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    write_zip(path, _str("x") + _global("os", "system") + b"(" + _str(f"touch {marker}") + b"tR", {})
    with pytest.raises(CheckpointError, match=r"holds a pickled os\.system, which this reader refuses: a checkpoint is "
                                              r"untrusted input"):
        read_torch_checkpoint(path)
    assert not marker.exists()
    proc = run_tool("convert", path, "--model", "resnet18_simam", "--output", tmp_path / "out", check=False)
    assert proc.returncode == 2 and "os.system" in proc.stderr and not (tmp_path / "out").exists()


def test_a_storage_shorter_than_its_tensor_is_refused(tmp_path):
    path = tmp_path / "short.pth"
    write_zip(path, _str("t") + _tensor("0", "FloatStorage", 4, (2, 3), (3, 1)), {"0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(CheckpointError, match="reaches beyond its storage of 4 elements"):
        read_torch_checkpoint(path)


def test_what_is_not_a_zip_checkpoint_is_refused(tmp_path):
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.")  # the magic number torch < 1.6 starts with
    with pytest.raises(CheckpointError, match="not a PyTorch zip checkpoint .*legacy format of torch < 1.6"):
        read_torch_checkpoint(legacy)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="expected one <name>/data.pkl"):
        read_torch_checkpoint(other)


# -- PyTorch as the reference ------------------------------------------------------------------------
def torch_models():
    """SimAM ResNet-18 and MobileNetV2 in PyTorch, with the official code's placement and layer names."""
    import torch
    from torch import nn

    class SimAM(nn.Module):  # the official module
        def __init__(self, e_lambda):
            super().__init__()
            self.e_lambda = e_lambda

        def forward(self, x):
            n = x.shape[2] * x.shape[3] - 1
            d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
            return x * torch.sigmoid(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5)

    def conv3x3(cin, cout, stride=1, groups=1):
        return nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride, lam):
            super().__init__()
            self.conv1, self.bn1, self.relu = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU()
            self.conv2 = nn.Sequential(conv3x3(cout, cout), SimAM(lam))  # SimAM after the 3x3 conv, before bn2
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet18(nn.Module):
        def __init__(self, lam, num_classes=1000):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            widths, cin = (64, 128, 256, 512), 64
            for k, width in enumerate(widths, start=1):
                stride = 1 if k == 1 else 2
                setattr(self, f"layer{k}", nn.Sequential(BasicBlock(cin, width, stride, lam), BasicBlock(width, width, 1, lam)))
                cin = width
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def conv_bn_relu(cin, cout, kernel=3, stride=1, groups=1, lam=None):
        layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)]
        layers += [SimAM(lam)] if lam is not None else []  # after the depthwise conv, before its BN
        return nn.Sequential(*layers, nn.BatchNorm2d(cout), nn.ReLU6())

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand, lam):
            super().__init__()
            hidden = cin * expand
            self.use_res = stride == 1 and cin == cout
            layers = [conv_bn_relu(cin, hidden, kernel=1)] if expand != 1 else []
            layers += [conv_bn_relu(hidden, hidden, stride=stride, groups=hidden, lam=lam),
                       nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, lam, num_classes=1000):
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

    return {"resnet18_simam": ResNet18, "mobilenet_v2_simam": MobileNetV2}


def randomised(model):
    """Random weights and random BatchNorm statistics, in eval mode."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                module.running_mean.normal_(0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, (2 / fan_in) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0, 0.1, generator=generator)
    return model.eval()


@needs_torch
@pytest.mark.parametrize("name, classes", [("resnet18_simam", 1000), ("mobilenet_v2_simam", 1000), ("resnet18_simam", 7)])
def test_converted_official_models_give_pytorchs_logits(name, classes, tmp_path):
    import torch

    torch.manual_seed(0)
    model = randomised(torch_models()[name](0.1, num_classes=classes))
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # saved from a DataParallel model
    torch.save({"epoch": 90, "arch": name, "state_dict": state, "best_prec1": torch.tensor(71.3)}, tmp_path / "ckpt.pth.tar")
    done = convert(tmp_path / "ckpt.pth.tar", name, tmp_path / "out")
    assert done["num_classes"] == classes
    paddle_model = build_model(name, num_classes=classes, e_lambda=0.1)
    assert done["output"] == str(tmp_path / "out" / f"{name}.pdparams")
    paddle_model.set_state_dict(paddle.load(done["output"]))
    paddle_model.eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    with paddle.no_grad():
        got = paddle_model(paddle.to_tensor(x)).numpy()
    assert np.abs(want).max() > 1  # logits that carry the weights, not a constant
    relative = np.abs(got - want).max() / np.abs(want).max()
    assert relative <= 1e-5, f"max |difference| / max |logit| = {relative:.2e}"


@needs_torch
def test_the_command_line_converts_and_refuses_a_checkpoint_of_another_model(tmp_path):
    import torch

    model = torch_models()["resnet18_simam"](0.1, num_classes=10)
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "resnet18_simam.pdparams"
    proc = run_tool("convert", tmp_path / "r18.pth", "--model", "resnet18_simam", "--output", tmp_path)
    assert "10 classes" in proc.stdout and "model.pretrained" in proc.stdout
    weights = paddle.load(str(out))
    np.testing.assert_array_equal(weights["fc.weight"].numpy(), model.fc.weight.detach().numpy().T)
    np.testing.assert_array_equal(weights["layer1.0.conv2.weight"].numpy(), model.layer1[0].conv2[0].weight.detach().numpy())
    np.testing.assert_array_equal(weights["bn1._variance"].numpy(), model.bn1.running_var.numpy())
    again = run_tool("convert", tmp_path / "r18.pth", "--model", "resnet18_simam", "--output", tmp_path, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    wrong = run_tool("convert", tmp_path / "r18.pth", "--model", "resnet34_simam", "--output", tmp_path / "x",
                     check=False)
    assert wrong.returncode == 2 and "does not fit resnet34_simam" in wrong.stderr
    assert "missing (Paddle names): layer1.2.bn1._mean" in wrong.stderr
    assert not (tmp_path / "x" / "resnet34_simam.pdparams").exists()
    state = model.state_dict()
    state["layer2.0.conv2.0.weight"] = torch.zeros(128, 128, 1, 1)
    del state["layer4.1.bn2.running_var"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as err:
        convert(tmp_path / "broken.pth", "resnet18_simam", tmp_path / "y")
    message = str(err.value)
    assert "missing (Paddle names): layer4.1.bn2._variance" in message
    assert "layer2.0.conv2.0.weight [128, 128, 1, 1]" in message and "[128, 128, 3, 3]" in message


@needs_torch
def test_a_checkpoint_with_an_object_of_another_kind_is_refused(tmp_path):
    import argparse

    import torch

    model = torch_models()["resnet18_simam"](0.1, num_classes=10)
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "with_args.pth")
    with pytest.raises(CheckpointError, match=r"pickled argparse\.Namespace, which this reader refuses"):
        convert(tmp_path / "with_args.pth", "resnet18_simam", tmp_path / "z")


@needs_torch
def test_tensors_of_every_dtype_and_layout_read_as_pytorch_holds_them(tmp_path):
    import torch

    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    tensors = {
        "float32": base.float(), "float64": base, "float16": base.half(), "int64": base.long(), "int32": base.int(),
        "int16": base.short(), "int8": base.char(), "uint8": base.byte(), "bool": base > 7,
        "bfloat16": (base / 7).bfloat16(), "transposed": base.float().t(), "sliced": base.float()[1:, 2:5],
        "shared": base.float()[2], "scalar": torch.tensor(3.5),
    }
    torch.save({"tensors": tensors, "nested": [1, 2.5, "x", b"raw", (3, None)]}, tmp_path / "all.pth")
    got = read_torch_checkpoint(tmp_path / "all.pth")
    for key, tensor in tensors.items():
        want = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        np.testing.assert_array_equal(got["tensors"][key], want, err_msg=key)
        assert got["tensors"][key].dtype == want.dtype, key
    assert got["nested"] == [1, 2.5, "x", b"raw", (3, None)]


@needs_torch
@pytest.mark.integration
def test_a_converted_checkpoint_fine_tunes_on_an_image_folder(tmp_path):
    import torch

    model = randomised(torch_models()["resnet18_simam"](0.1, num_classes=1000))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "official.pth.tar")
    run_tool("convert", tmp_path / "official.pth.tar", "--model", "resnet18_simam", "--output", tmp_path)
    root = write_learnable_image_folder(tmp_path / "data", 4, 2, classes=["cat", "dog", "fox"], val_folder="val")
    out = tmp_path / "run"
    run_train("-o", "model.name=resnet18_simam", "-o", "model.e_lambda=0.1",
              "-o", f"model.pretrained={tmp_path / 'resnet18_simam.pdparams'}", "-o", "data.image_size=32",
              "-o", f"data.root={root}", "-o", f"train.output_dir={out}", "-o", "data.batch_size=4",
              "-o", "data.num_workers=0", "-o", "train.epochs=1", "-o", "train.throughput_batches=1")
    log = (out / "train.log").read_text()
    assert "except the classifier fc.weight, fc.bias, which starts new: the weights have 1000 classes, the model 3" in log
