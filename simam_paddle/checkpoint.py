"""Run-directory state: the resumable checkpoint, the saved weights, refusal to clobber a run.

The resumable state of the last completed epoch is one file, ``checkpoint.pdckpt`` (model, optimizer
with its LR scheduler, epoch, best metric, history), written atomically: a process killed at any
moment leaves the previous epoch's checkpoint or the new one, never half of each. Randomness needs no
saved state: data order, augmentation, Mixup and dropout of epoch e are seeded from (seed, e).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import paddle

from .config import NON_COMPUTATIONAL, ConfigError
from .io import atomic_paddle_save

CHECKPOINT = "checkpoint.pdckpt"
# Everything a run writes into its directory; `train.overwrite` removes exactly these.
RUN_FILES = (
    "config.yaml", "train.log", "history.json", CHECKPOINT,
    "best_model.pdparams", "best_optimizer.pdopt", "final_model.pdparams", "final_optimizer.pdopt",
    "curves.png", "predictions.png", "visualdl",
)


def prepare_run_dir(out: Path, config: dict) -> bool:
    """Check ``out`` for the run ``config`` asks for; return True when resuming. Raises ConfigError otherwise."""
    train = config["train"]
    holds_run = any((out / name).exists() for name in RUN_FILES)
    if train["resume"]:
        if not (out / CHECKPOINT).is_file():
            raise ConfigError(
                f"train.resume: {out / CHECKPOINT} not found, so there is no completed epoch to resume; "
                "start a new run without train.resume / --resume"
            )
        return True
    if holds_run:
        if not train["overwrite"]:
            raise ConfigError(
                f"{out} already holds a run. Resume it with --resume (or -o train.resume=true), choose another "
                "directory with -o train.output_dir=..., or replace it with --overwrite"
            )
        for name in RUN_FILES:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    return False


def check_resumable(saved: dict, config: dict, path: Path) -> None:
    """Refuse to resume with a config that would compute something else than the saved run."""
    changed = [
        f"{section}.{key}: {saved[section].get(key)!r} -> {value!r}"
        for section, values in config.items()
        for key, value in values.items()
        if (section, key) not in NON_COMPUTATIONAL and saved.get(section, {}).get(key) != value
    ]
    if changed:
        raise ConfigError(
            f"cannot resume {path}: the config differs from the saved run in {'; '.join(changed)}. "
            "Resume with the run's own config, or start a new run in another directory"
        )


def _names(model: paddle.nn.Layer) -> dict[str, str]:
    """Paddle's unique parameter name (``linear_3.w_0``) -> structured name (``classifier.0.weight``)."""
    return {p.name: name for name, p in model.named_parameters()}


def _rename(state: dict, mapping: dict[str, str]) -> dict:
    # Optimizer accumulators are keyed "<param.name>_moment1_0" etc.; the unique names depend on the
    # order of layer creation in the process, so checkpoints key them by structured names instead.
    out = {}
    for key, value in state.items():
        for old, new in mapping.items():
            if key == old or key.startswith(old + "_"):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def save_checkpoint(path: Path, model, optimizer, state: dict) -> None:
    atomic_paddle_save(
        {"model": model.state_dict(), "optimizer": _rename(optimizer.state_dict(), _names(model)), "state": state},
        path,
    )


def load_checkpoint(path: Path, model, optimizer) -> dict:
    """Load model and optimizer (with its LR scheduler) from ``path``; return the saved run state."""
    ckpt = paddle.load(str(path))
    model.set_state_dict(ckpt["model"])
    inverse = {v: k for k, v in _names(model).items()}
    optimizer.set_state_dict(_rename(ckpt["optimizer"], inverse))
    return ckpt["state"]


def resume_state(out: Path, config: dict, model, optimizer) -> dict:
    path = out / CHECKPOINT
    try:
        ckpt_state = load_checkpoint(path, model, optimizer)
    except Exception as exc:  # a corrupt file is not expected (atomic writes), but say what failed
        raise ConfigError(f"cannot read the checkpoint {path}: {exc}") from exc
    check_resumable(ckpt_state["config"], config, path)
    return ckpt_state
