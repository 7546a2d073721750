"""The recipe's configs compute what they computed before the optimizer, schedule, clipping and
checkpoint keys existed: a tiny AlexNet and AlexNet-SimAM run with the shipped configs (every new key
at its default) gives bit-identical per-epoch and per-iteration figures to ``data/recipe_history.json``.

That file was written by ``python tests/test_recipe_history.py`` with the code before those keys
(commit 2fd1b46) on an x86-64 CPU, one thread. Figures of floating-point training depend on the
CPU's instruction set: on a CPU unlike the recording one (``cpu`` in the file) a difference can come
from the hardware; the failure message names both CPUs.

The epoch ``lr`` is the learning rate the epoch's last step used; the file's runs recorded the
learning rate of every iteration, so that figure is read from them.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "data" / "recipe_history.json"
MODELS = ("alexnet", "alexnet_simam")
EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")  # timing left out; lr below
THREADS_ENV = "SIMAM_PADDLE_NUM_THREADS"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def recipe_overrides(root: Path, out: Path) -> list[str]:
    """The shipped config's recipe, made tiny: 40 training images, batch 8, 2 epochs, every iteration recorded."""
    return [f"data.root={root}", f"train.output_dir={out}", "data.batch_size=8", "data.num_workers=0",
            "train.epochs=2", "train.loss_record_interval=1", "train.log_interval=5", "train.throughput_batches=0"]


def run_recipe(model: str, root: Path, out: Path) -> dict:
    from helpers import REPO_ROOT

    from simam_paddle.config import load_config
    from simam_paddle.train import train

    config = load_config(REPO_ROOT / "configs" / f"{model}.yaml", recipe_overrides(root, out))
    return train(config)


def figures(history: dict) -> dict:
    """What the recipe computed: per epoch (no timing) and per iteration."""
    return {
        "steps_per_epoch": history["steps_per_epoch"],
        "epoch": {key: history["epoch"][key] for key in EPOCH_KEYS},
        "iter_loss": history["iter_loss"],
        "best": history["best"],
    }


def tiny_data(root: Path) -> Path:
    from helpers import write_learnable_image_folder

    return write_learnable_image_folder(root, train_per_class=4, test_per_class=2)


@pytest.fixture(scope="module")
def recorded():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")  # thread count changes the order of float sums


@pytest.mark.parametrize("model", MODELS)
def test_recipe_config_gives_the_recorded_history(model, recorded, tmp_path):
    history = run_recipe(model, tiny_data(tmp_path / "data"), tmp_path / "run")
    expected = recorded["runs"][model]
    where = f"(recorded on {recorded['cpu']}, running on {cpu_name()})"
    got = figures(history)
    assert got["steps_per_epoch"] == expected["steps_per_epoch"]
    for key in EPOCH_KEYS:
        assert got["epoch"][key] == expected["epoch"][key], f"epoch {key} differs {where}"
    for key in ("iter", "loss", "lr"):
        assert got["iter_loss"][key] == expected["iter_loss"][key], f"iteration {key} differs {where}"
    assert got["best"] == expected["best"]
    steps = expected["steps_per_epoch"]
    last_step_lr = [expected["iter_loss"]["lr"][(e + 1) * steps - 1] for e in range(len(expected["epoch"]["epoch"]))]
    assert history["epoch"]["lr"] == last_step_lr, "epoch lr is not the lr of the epoch's last step"


def record(folder: Path) -> None:
    """Write the fixture from the code checked out now (run only to record the recipe's figures)."""
    os.environ[THREADS_ENV] = "1"
    runs = {model: figures(run_recipe(model, tiny_data(folder / model / "data"), folder / model / "run"))
            for model in MODELS}
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps({"cpu": cpu_name(), "threads": 1, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp))
