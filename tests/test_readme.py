"""README.md runs as written: its Python examples print what their comments say, its config reference is the
schema, and every one of its commands is run, here or by the test named for it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
from helpers import CIFAR10_JPEG, REPO_ROOT, require_cifar10_jpeg, write_learnable_image_folder
from readme import blocks, commands, config_reference, run_block

from simam_paddle import config

# Runs that README's commands start, shortened here: the same tools, configs and flags, on less data.
SHORT = ("-o", "train.epochs=1", "-o", "data.limit_train=256", "-o", "data.limit_val=128", "-o", "train.throughput_batches=2")


@dataclass(frozen=True)
class Run:
    """Run the command here, in README's order, in a folder of its own; ``extra`` arguments appended."""

    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class Elsewhere:
    """The command is run by ``test`` (path::name), for the reason given."""

    test: str
    why: str


# Every command of README.md, by the start of its text, and where it runs. A command that matches no entry
# fails test_every_command_is_run_somewhere: a README command needs a test.
HOW = [
    (r"pip install -e \.\[dev\]", Elsewhere(".ci/run", "CI installs the project with it on a fresh clone")),
    (r"pip install paddleclas==2\.6\.0", Elsewhere("scripts/paddleclas_venv.sh", "installs PaddleClas in a venv of its own")),
    (r"pip install \.$", Elsewhere("scripts/paddleclas_venv.sh", "installs the clone into PaddleClas's venv")),
    (r"python -m simam_paddle\.reproduce --demo", Run()),
    (r"python -m simam_paddle\.train --config configs/alexnet_simam\.yaml$", Run(SHORT)),
    (r"python -m simam_paddle\.reproduce --seeds 42 43 44$", Run((*SHORT, "--seeds", "42", "--runs", "runs/repro_short"))),
    (r"python -m pytest", Elsewhere(".ci/run", "CI runs the default suite and the slow marker")),
    (r"ruff check \.", Elsewhere(".ci/run", "CI runs the linter")),
    (r"python -m simam_paddle\.train -o data\.root=PATH/pets -o model\.name=mobilenet_v2_simam", Run(SHORT[:2])),
    (r"python -m simam_paddle\.predict runs/pets", Run()),
    (r"python -m simam_paddle\.convert resnet50-simam\.pth\.tar",
     Elsewhere("tests/test_convert.py::test_the_command_line_converts_and_refuses_a_checkpoint_of_another_model",
               "needs the official checkpoint, which the test builds with PyTorch in a process of its own")),
    (r"python -m simam_paddle\.train -o data\.root=PATH/pets -o model\.name=resnet50_simam",
     Elsewhere("tests/test_convert.py::test_a_converted_checkpoint_fine_tunes_on_an_image_folder",
               "needs the converted checkpoint of the command before")),
    (r"python -m simam_paddle\.export runs/alexnet_simam", Run()),
    (r"python -m simam_paddle\.predict runs/alexnet_simam", Run()),
    (r"python -m simam_paddle\.visualize runs/alexnet_simam", Run()),
    (r"python -m simam_paddle\.train --config configs/alexnet_simam\.yaml -o data\.root=PATH/cifar10-jpeg", Run(SHORT)),
    (r"python -m simam_paddle\.visualize runs/attention_demo", Run()),
    (r"python -m simam_paddle\.evaluate runs/alexnet_simam/export/paddle", Run()),
    (r"python scripts/benchmark_deploy\.py", Run(("--rounds", "1", "--quiet-wait", "0"))),
    (r"git clone -b release/2\.6 https://github\.com/PaddlePaddle/PaddleClas\.git",
     Elsewhere("scripts/paddleclas_venv.sh", "needs the network; CI unpacks PaddleClas 2.6.0's source archive instead")),
    (r"python -m simam_paddle\.paddleclas", Elsewhere("tests/test_paddleclas_engine.py",
                                                      "PaddleClas's tools run in its venv (scripts/paddleclas_venv.sh)")),
    (r"export PADDLECLAS_SOURCE=", Elsewhere("tests/test_paddleclas_engine.py", "the engine tests set it")),
    (r"python -m simam_paddle\.reproduce --seeds 42 43 44 -o data\.root=PATH/cifar10-jpeg", Run((*SHORT, "--seeds", "42"))),
    (r"python -m simam_paddle\.reproduce --seeds 42 43 44 --runs runs/full", Run((*SHORT, "--seeds", "42"))),
    (r"python -m paddle\.distributed\.launch", Elsewhere(
        "tests/test_distributed.py::test_two_processes_equal_one_process_on_the_same_global_batches",
        "launches scripts/train.py in 2 processes on a small image folder")),
]


def how(command: str) -> Run | Elsewhere:
    found = [h for pattern, h in HOW if re.match(pattern, command)]
    assert len(found) == 1, f"README command {command!r} matches {len(found)} entries of HOW (expected one)"
    return found[0]


def test_every_command_is_run_somewhere():
    for command in commands():
        where = how(command)
        if isinstance(where, Elsewhere):
            path, _, name = where.test.partition("::")
            text = (REPO_ROOT / path).read_text()
            assert not name or f"def {name}(" in text, f"{where.test}, named for {command!r}, does not exist"
    unused = [pattern for pattern, _ in HOW if not any(re.match(pattern, c) for c in commands())]
    assert not unused, f"HOW names commands that README no longer has: {unused}"


def test_the_config_reference_is_the_schema():
    assert config_reference() == config.reference(), "README's config reference differs from the schema: " \
        "paste simam_paddle.config.reference() between its markers"


def test_python_examples_print_what_they_say():
    """The examples that need no run directory (the Python API's needs the demo's: the slow test runs it)."""
    examples = [b for b in blocks("python") if "runs/demo" not in b]
    assert examples, "README.md has no python example"
    for block in examples:
        run_block(block)


def test_a_comment_that_misstates_a_print_fails():
    with pytest.raises(AssertionError, match="printed '3'"):
        run_block("print(1 + 2)  # 4: the sum")


def prepare_placeholders(folder: Path) -> dict[str, str]:
    """What README's reader provides: their images, their data; the real CIFAR-10 copy for CIFAR-10."""
    cifar = require_cifar10_jpeg()
    for name, source in (("cat.jpg", "cat"), ("ship.png", "ship"), ("photo.jpg", "dog"), ("photos/a/frog.jpg", "frog"),
                         ("photos/horse.png", "horse"), ("more/deer.png", "deer"), ("more/truck.png", "truck")):
        image = cv2.imread(str(next(iter(sorted((cifar / "test" / source).iterdir())))))
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), image)
    pets = write_learnable_image_folder(folder / "pets_data", 12, 2, classes=["cat", "dog", "fox"])  # a batch of 32
    for link in ("configs", "scripts"):
        (folder / link).symlink_to(REPO_ROOT / link)
    return {"PATH/cifar10-jpeg": str(cifar), "PATH/pets": str(pets)}


def substitute(command: str, values: dict[str, str]) -> list[str]:
    for placeholder, value in values.items():
        command = command.replace(placeholder, value)
    words = shlex.split(command)
    assert not [w for w in words if "PATH/" in w], f"a placeholder without a value in {command!r}"
    return [sys.executable if w == "python" else w for w in words]


@pytest.mark.slow
@pytest.mark.integration
def test_readme_commands_and_the_api_example_run(tmp_path):
    """README's commands, in its order, in a fresh folder: the demo first (within 3 minutes where the machine
    is quiet; the time is printed, not asserted), then the Python API example on the demo's runs."""
    values = prepare_placeholders(tmp_path)
    env = {**os.environ, "SIMAM_DATA_DIR": str(CIFAR10_JPEG.parent)}
    for command in commands():
        where = how(command)
        if isinstance(where, Elsewhere):
            continue
        args = substitute(command, values) + list(where.extra)
        if re.match(r"python -m simam_paddle\.(train|reproduce) ", command) and "data.root=" not in command:
            args += ["-o", f"data.root={values['PATH/cifar10-jpeg']}"]  # no download here: the local copy
        start = time.monotonic()
        proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1800)
        print(f"{time.monotonic() - start:7.1f} s  {command}")
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        if "--demo" in command:
            assert (tmp_path / "results" / "demo" / "results.md").is_file()
    api = [b for b in blocks("python") if "runs/demo" in b]
    assert api, "README's Python API example is gone"
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)
        for block in api:
            run_block(block)
    finally:
        os.chdir(cwd)
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
