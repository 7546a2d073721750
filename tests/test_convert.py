"""The PyTorch checkpoint reader and the converter of the official SimAM models.

Against PyTorch itself where it is installed (a test-only reference: pip install "torch==2.13.0+cpu";
CI installs it), always in a process of its own (``torch_reference.py``: PyTorch and Paddle bring
their own OpenMP runtimes, and this process never imports torch): the official SimAM ResNet-18/34/50/
101/152 and MobileNetV2, written in plain PyTorch with the official placement and layer names, get
random weights and BatchNorm statistics and are saved as the official training script saves them
(thop's counters on every module, DataParallel's module. prefix, SGD's momentum buffers, the best
accuracy as a tensor, storages tagged cuda:0); they are converted here and their eval-mode logits
compared with the Paddle models'. The reader's refusals are also tested on checkpoints built here
byte by byte, without PyTorch.
"""

from __future__ import annotations

import importlib.util
import json
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import paddle
import pytest
from helpers import run_tool, run_train, write_learnable_image_folder

from simam_paddle import build_model
from simam_paddle.convert import convert, main
from simam_paddle.torch_zip import CheckpointError, read_torch_checkpoint

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason='PyTorch, the reference of these tests, is not installed (pip install "torch==2.13.0+cpu"; CI installs it)',
)
REFERENCE = Path(__file__).with_name("torch_reference.py")


@pytest.fixture(autouse=True)
def _torch_stays_out():
    """PyTorch runs only in torch_reference.py's processes, never beside Paddle in this one."""
    yield
    assert "torch" not in sys.modules, "torch was imported into the test process: run it through torch_reference()"


def run_torch(*args) -> subprocess.CompletedProcess:
    """``python ARGS`` in a process of its own (where PyTorch runs), from this folder."""
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=600,
                          cwd=REFERENCE.parent)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def torch_reference(*args) -> dict:
    """Run ``torch_reference.py ARGS`` and return the summary it prints."""
    return json.loads(run_torch(REFERENCE, *args).stdout.strip().splitlines()[-1])


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
    with pytest.raises(CheckpointError, match=r"not a PyTorch zip checkpoint .*legacy format, written by torch < 1\.6 "
                                              r".*torch\.save\(torch\.load\(PATH, map_location=\"cpu\"\), NEW_PATH\)"):
        read_torch_checkpoint(legacy)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="expected one <name>/data.pkl"):
        read_torch_checkpoint(other)


# -- PyTorch as the reference, in its own process ----------------------------------------------------
def counted_keys(keys: list[str]) -> int:
    return sum(k.rsplit(".", 1)[-1] in ("total_ops", "total_params") for k in keys)


def check_official_layout(path: Path, summary: dict, name: str) -> None:
    """The checkpoint at ``path`` of the model ``name`` is what the official script writes on a GPU, seen
    from outside the converter."""
    assert summary["keys"] == ["arch", "best_acc", "epoch", "optimizer", "state_dict"]
    assert all(k.startswith("module.") for k in summary["state_keys"])
    simam, head = ("features.2.conv.1.1", "classifier.0") if name.startswith("mobilenet") else ("layer1.0.conv2.1", "fc")
    for module in ("", f"{simam}.", f"{simam}.activaton.", f"{head}."):  # the model, a SimAM, its Sigmoid, the head
        assert f"module.{module}total_ops" in summary["state_keys"] and f"module.{module}total_params" in summary["state_keys"]
    assert counted_keys(summary["state_keys"]) == summary["counters"] > 100
    assert "CUDA" in summary["plain_load"]  # torch itself loads it on this machine only with map_location
    loaded = read_torch_checkpoint(path)
    momentum = loaded["optimizer"]["state"]
    assert len(momentum) == len(loaded["optimizer"]["param_groups"][0]["params"]) > 50
    assert all(entry["momentum_buffer"].dtype == np.float32 for entry in momentum.values())
    assert loaded["best_acc"].shape == (1,) and loaded["state_dict"]["module.total_ops"].dtype == np.float64


def paddle_logits(name: str, classes: int, weights: Path, x: np.ndarray) -> np.ndarray:
    model = build_model(name, num_classes=classes, e_lambda=0.1)
    model.set_state_dict(paddle.load(str(weights)))
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


@needs_torch
@pytest.mark.parametrize("name, classes, size", [
    ("resnet18_simam", 1000, 224), ("mobilenet_v2_simam", 1000, 224), ("resnet18_simam", 7, 64),
    # the other depths, with the bottleneck block, each a few seconds longer
    *(pytest.param(*case, marks=pytest.mark.slow)
      for case in (("resnet34_simam", 1000, 96), ("resnet50_simam", 1000, 128), ("resnet101_simam", 1000, 64),
                   ("resnet152_simam", 1000, 64))),
])
def test_official_checkpoints_convert_to_pytorchs_logits(name, classes, size, tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ckpt = tmp_path / "checkpoint.pth.tar"
    summary = torch_reference("save", name, "--classes", classes, "--output", ckpt, "--input", tmp_path / "x.npy",
                              "--logits", tmp_path / "want.npy")
    check_official_layout(ckpt, summary, name)
    done = convert(ckpt, name, tmp_path / "out")  # --output is a folder: out/NAME.pdparams
    assert done["output"] == str(tmp_path / "out" / f"{name}.pdparams")
    assert done["num_classes"] == classes and done["dropped"] == summary["counters"]
    want = np.load(tmp_path / "want.npy")
    got = paddle_logits(name, classes, done["output"], x)
    assert np.abs(want).max() > 1  # logits that carry the weights, not a constant
    relative = np.abs(got - want).max() / np.abs(want).max()
    assert relative <= 1e-5, f"max |difference| / max |logit| = {relative:.2e}"


@needs_torch
def test_the_command_line_converts_and_refuses_a_checkpoint_of_another_model(tmp_path, capsys):
    torch_reference("save", "resnet18_simam", "--classes", 10, "--layout", "bare", "--output", tmp_path / "r18.pth",
                    "--weights", tmp_path / "r18.npz")
    want = np.load(tmp_path / "r18.npz")
    out = tmp_path / "resnet18_simam.pdparams"
    proc = run_tool("convert", tmp_path / "r18.pth", "--model", "resnet18_simam", "--output", tmp_path)
    assert "10 classes" in proc.stdout and "model.pretrained" in proc.stdout and "dropped" not in proc.stdout
    weights = paddle.load(str(out))
    np.testing.assert_array_equal(weights["fc.weight"].numpy(), want["fc.weight"].T)
    np.testing.assert_array_equal(weights["layer1.0.conv2.weight"].numpy(), want["layer1.0.conv2.0.weight"])
    np.testing.assert_array_equal(weights["bn1._variance"].numpy(), want["bn1.running_var"])
    capsys.readouterr()
    assert main([str(tmp_path / "r18.pth"), "--model", "resnet18_simam", "--output", str(tmp_path)]) == 2  # in this process
    assert "already exists" in capsys.readouterr().err
    assert main([str(tmp_path / "r18.pth"), "--model", "resnet34_simam", "--output", str(tmp_path / "x")]) == 2
    wrong = capsys.readouterr().err
    assert "does not fit resnet34_simam" in wrong and "missing (Paddle names): layer1.2.bn1._mean" in wrong
    assert "It holds the weights of resnet18_simam: pass --model resnet18_simam" in wrong
    assert not (tmp_path / "x").exists()
    torch_reference("save", "resnet18_simam", "--classes", 10, "--layout", "bare", "--output", tmp_path / "broken.pth",
                    "--reshape", "layer2.0.conv2.0.weight=128,128,1,1", "--drop", "layer4.1.bn2.running_var")
    with pytest.raises(CheckpointError) as err:
        convert(tmp_path / "broken.pth", "resnet18_simam", tmp_path / "y")
    message = str(err.value)
    assert "does not fit resnet18_simam" in message and "nor any other model this converter knows. Check --model" in message
    assert "missing (Paddle names): layer4.1.bn2._variance" in message
    assert "layer2.0.conv2.0.weight [128, 128, 1, 1]" in message and "[128, 128, 3, 3]" in message


@needs_torch
def test_counters_are_dropped_and_counted_and_other_extra_tensors_refused_by_name(tmp_path, capsys):
    ckpt = tmp_path / "official.pth.tar"
    # thop run once more on the DataParallel wrapper: its counters carry no module. prefix
    summary = torch_reference("save", "resnet18_simam", "--classes", 10, "--output", ckpt,
                              "--extra", "total_ops=1", "--extra", "total_params=1")
    assert summary["counters"] == 184  # 92 modules: the official ResNet-18 showed 6 counters "and 178 more"
    capsys.readouterr()
    assert main([str(ckpt), "--model", "resnet18_simam", "--output", str(tmp_path / "r18")]) == 0
    assert "dropped 186 profiling counters (thop's total_ops / total_params buffers)" in capsys.readouterr().out
    extra = tmp_path / "extra.pth.tar"
    torch_reference("save", "resnet18_simam", "--classes", 10, "--output", extra,
                    "--extra", "module.layer1.0.conv2.1.scale=64", "--extra", "module.conv1.total_ops=64")
    assert main([str(extra), "--model", "resnet18_simam", "--output", str(tmp_path / "x")]) == 2
    refused = capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert ("holds every weight of resnet18_simam, and tensors beside them that are no weights of it "
            "(unexpected: conv1.total_ops, layer1.0.conv2.1.scale)") in refused  # a counter holds one number
    assert "does not fit" not in refused and "--model" not in refused


@pytest.mark.slow
@needs_torch
def test_the_checkpoint_of_a_deeper_network_is_told_apart_from_extra_tensors(tmp_path):
    deeper = tmp_path / "r34.pth.tar"
    torch_reference("save", "resnet34_simam", "--classes", 10, "--output", deeper)
    with pytest.raises(CheckpointError) as err:  # every resnet18 weight is in it, with more blocks beside them
        convert(deeper, "resnet18_simam", tmp_path / "y")
    assert re.search(r"does not fit resnet18_simam \(unexpected: layer1\.2\.bn1\.bias, .*\)\. It holds the weights of "
                     r"resnet34_simam: pass --model resnet34_simam$", str(err.value))


@pytest.mark.slow
@needs_torch
def test_a_legacy_checkpoint_saved_on_a_gpu_converts_after_the_resave_the_message_gives(tmp_path):
    legacy = tmp_path / "legacy.pth.tar"
    summary = torch_reference("save", "resnet18_simam", "--classes", 10, "--legacy", "--output", legacy)
    assert "CUDA" in summary["plain_load"]
    with pytest.raises(CheckpointError) as err:
        convert(legacy, "resnet18_simam", tmp_path / "r18")
    command = re.search(r"(torch\.save\(torch\.load\(PATH.*NEW_PATH\))\)$", str(err.value)).group(1)
    resaved = tmp_path / "resaved.pth.tar"
    command = command.replace("NEW_PATH", repr(str(resaved))).replace("PATH", repr(str(legacy)))
    run_torch("-c", f"import torch; {command}")
    assert convert(resaved, "resnet18_simam", tmp_path / "r18")["dropped"] == summary["counters"]


@needs_torch
def test_a_checkpoint_with_an_object_of_another_kind_is_refused(tmp_path):
    torch_reference("save", "resnet18_simam", "--classes", 10, "--layout", "bare", "--object",
                    "--output", tmp_path / "with_args.pth")
    with pytest.raises(CheckpointError, match=r"pickled argparse\.Namespace, which this reader refuses"):
        convert(tmp_path / "with_args.pth", "resnet18_simam", tmp_path / "z")


@needs_torch
def test_tensors_of_every_dtype_and_layout_read_as_pytorch_holds_them(tmp_path):
    torch_reference("dtypes", "--output", tmp_path / "all.pth", "--expected", tmp_path / "want.npz")
    got = read_torch_checkpoint(tmp_path / "all.pth")
    want = np.load(tmp_path / "want.npz")
    assert sorted(got["tensors"]) == sorted(want.files)
    for key in want.files:
        np.testing.assert_array_equal(got["tensors"][key], want[key], err_msg=key)
        assert got["tensors"][key].dtype == want[key].dtype, key
    assert got["nested"] == [1, 2.5, "x", b"raw", (3, None)]


@pytest.mark.slow
@needs_torch
@pytest.mark.integration
def test_a_converted_checkpoint_fine_tunes_on_an_image_folder(tmp_path):
    torch_reference("save", "resnet18_simam", "--output", tmp_path / "official.pth.tar")
    run_tool("convert", tmp_path / "official.pth.tar", "--model", "resnet18_simam", "--output", tmp_path)
    root = write_learnable_image_folder(tmp_path / "data", 4, 2, classes=["cat", "dog", "fox"], val_folder="val")
    out = tmp_path / "run"
    run_train("-o", "model.name=resnet18_simam", "-o", "model.e_lambda=0.1",
              "-o", f"model.pretrained={tmp_path / 'resnet18_simam.pdparams'}", "-o", "data.image_size=32",
              "-o", f"data.root={root}", "-o", f"train.output_dir={out}", "-o", "data.batch_size=4",
              "-o", "data.num_workers=0", "-o", "train.epochs=1", "-o", "train.throughput_batches=1")
    log = (out / "train.log").read_text()
    assert "except the classifier fc.weight, fc.bias, which starts new: the weights have 1000 classes, the model 3" in log
