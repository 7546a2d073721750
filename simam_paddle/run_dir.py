"""The run directory: what ``simam_paddle.train`` writes, and every tool reads, in ``train.output_dir``:
its layout (the file names below, a run's config, classes and model), its lifecycle (starting,
refusing, replacing or resuming a run) and its checkpoints. Building a model from a config is
``simam_paddle.models.from_config``; fine-tuning's load is ``simam_paddle.models.weights.load_pretrained``.

    RUN_DIR/config.yaml            the resolved config (without the one-off flags resume / overwrite)
    RUN_DIR/classes.json           the class names in label order (a JSON list), for predict, export, visualize
    RUN_DIR/train.log              the log
    RUN_DIR/history.json           every recorded figure, the environment, whether the run finished
    RUN_DIR/checkpoint.pdckpt      the resumable state of the last completed epoch (one file: model,
                                   optimizer with its LR schedule, epoch, best metric, history, config)
    RUN_DIR/checkpoints/epoch_<N>.pdckpt  the checkpoint of epoch N, kept every train.save_interval epochs
                                   (the newest train.keep_last of them); resumable with --resume-epoch N
    RUN_DIR/best_model.pdparams    weights of the best validation epoch
    RUN_DIR/final_model.pdparams   weights after the last epoch
    RUN_DIR/curves.png, predictions.png, visualdl/
    RUN_DIR/confusion.png, evaluation.json   the best weights on the validation set: top-1, top-5, per class
    RUN_DIR/export/<format>/       written by simam_paddle.export
    RUN_DIR/attention.png          written by simam_paddle.visualize

Each file is written once: where two names hold the same content they are hard links to one file
(a copy on a file system without them): ``final_model.pdparams`` and ``best_model.pdparams`` when the
last epoch is the best, a kept checkpoint and ``checkpoint.pdckpt`` of the same epoch. Optimizer state
is in the checkpoints only. Runs written before this layout also hold ``best_optimizer.pdopt`` and
``final_optimizer.pdopt`` (read by no tool; moved aside with the run by ``--overwrite``).

The checkpoint is written
atomically: a process killed at any moment leaves the previous epoch's checkpoint or the new one.
Randomness needs no saved state: data order, augmentation, Mixup and dropout of epoch e are seeded
from (seed, e). A run that ``--overwrite`` replaces is moved aside into ``RUN_DIR/.replaced/`` and
removed only once the new run has saved its first checkpoint; a new run that stops before that puts
it back.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import paddle

from .config import NON_COMPUTATIONAL, ConfigError, defaults, load_config, save_config
from .data import class_names, classes_of
from .errors import ArgumentError, CheckpointError, DataError, PathError
from .io import LOCK_NAME, atomic_link, atomic_paddle_save, atomic_write_json, hold_lock, remove_temp_files
from .layers.messages import listed
from .metrics import CONFUSION_FILE, EVALUATION_FILE
from .models import load_weights
from .models.from_config import build_from_config

CONFIG = "config.yaml"
CLASSES = "classes.json"
LOG = "train.log"
HISTORY = "history.json"
CHECKPOINT = "checkpoint.pdckpt"
KEPT = "checkpoints"
WEIGHTS = {"best": "best_model.pdparams", "final": "final_model.pdparams"}
LEGACY = ("best_optimizer.pdopt", "final_optimizer.pdopt")  # optimizer states that runs wrote before
CURVES = "curves.png"
PREDICTIONS = "predictions.png"
CONFUSION, EVALUATION = CONFUSION_FILE, EVALUATION_FILE  # the best weights' evaluation (simam_paddle.metrics)
VISUALDL = "visualdl"
EXPORT = "export"
ATTENTION = "attention.png"
REPLACED = ".replaced"
# Everything a training run writes; `--overwrite` moves exactly these aside.
RUN_FILES = (CONFIG, CLASSES, LOG, HISTORY, CHECKPOINT, KEPT, *WEIGHTS.values(), *LEGACY, CURVES, PREDICTIONS,
             CONFUSION, EVALUATION, VISUALDL)
# The flags of one invocation, never saved with the run.
ONE_OFF = ("resume", "overwrite", "resume_epoch")


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def read_config_path(run_dir: str | Path) -> Path:
    """The path of a run's saved config; a PathError when ``run_dir`` holds none."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise PathError(f"{run_dir} is not a run directory: {path} is missing (train one with python -m simam_paddle.train)")
    return path


def read_config(run_dir: str | Path) -> dict:
    """The saved config of a run (validated like any config)."""
    return load_config(read_config_path(run_dir))


def save_run_config(config: dict, run_dir: Path) -> None:
    saved = {**config, "train": {k: v for k, v in config["train"].items() if k not in ONE_OFF}}
    save_config(saved, run_dir / CONFIG)


def read_json(path: Path):
    """The JSON file a run or an export wrote; a PathError naming it when it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PathError(f"{path} is not valid JSON ({exc}); was it edited, or cut short by a full disk?") from None


def read_history(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / HISTORY
    return read_json(path) if path.is_file() else None


def run_state(run_dir: str | Path) -> str:
    """``"finished"``, ``"resumable"`` (a completed epoch is checkpointed) or ``"new"``."""
    history = read_history(run_dir)
    if history is not None and history.get("finished"):
        return "finished"
    return "resumable" if (Path(run_dir) / CHECKPOINT).is_file() else "new"


def resume_point(run_dir: str | Path, config: dict) -> str:
    """Where ``config`` (with ``train.resume``) continues the run in ``run_dir``: ``run_state``, but a
    finished run is ``"resumable"`` when ``train.epochs`` was raised or ``train.resume_epoch`` is set;
    a ``resume_epoch`` that was not kept is a ConfigError naming the epochs that were."""
    epoch = config["train"]["resume_epoch"]
    if epoch is not None:
        if not kept_checkpoint(run_dir, epoch).is_file():
            kept = kept_epochs(run_dir)
            raise ConfigError(f"--resume-epoch {epoch}: {run_dir} kept no checkpoint of epoch {epoch} "
                              f"({'kept epochs: ' + ', '.join(map(str, kept)) if kept else 'it kept none'}; "
                              "train.save_interval keeps them); resume from one of those or from the last epoch")
        return "resumable"
    state = run_state(run_dir)
    if state == "finished" and config["train"]["epochs"] > len(read_history(run_dir)["epoch"]["epoch"]):
        return "resumable"
    return state


# -- classes ---------------------------------------------------------------------------------------
def resolve_classes(config: dict) -> list[str]:
    """The class names of the data that ``data.root`` names, in label order (``simam_paddle.data.classes_of``).

    A null ``model.num_classes`` becomes their number (in ``config``); another number is a ConfigError
    naming both.
    """
    try:
        classes = classes_of(config["data"]["root"])
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"data: {exc}") from exc
    wanted = config["model"]["num_classes"]
    if wanted is None:
        config["model"]["num_classes"] = len(classes)
    elif wanted != len(classes):
        raise ConfigError(f"model.num_classes={wanted}, but data.root {config['data']['root']} holds {len(classes)} "
                          f"classes ({listed(classes, 12)}); set model.num_classes={len(classes)}, or null to follow the data")
    return classes


def save_classes(run_dir: str | Path, classes: list[str]) -> None:
    atomic_write_json(Path(run_dir) / CLASSES, list(classes))


def run_classes(run_dir: str | Path, config: dict) -> list[str]:
    """The class names of a run in label order: its ``classes.json``. A run without one (written before
    runs saved them): CIFAR-10's names for 10 classes, ``class_<k>`` for another number, and with a
    null ``model.num_classes`` the classes of its ``data.root``."""
    path = Path(run_dir) / CLASSES
    wanted = config["model"]["num_classes"]
    if not path.is_file():
        if wanted is None:
            try:
                return classes_of(config["data"]["root"])
            except (FileNotFoundError, ValueError) as exc:
                raise PathError(f"{run_dir} has no {CLASSES} and model.num_classes is null; its data.root does not "
                                  f"tell the classes either: {exc}") from exc
        return class_names(wanted)
    names = read_json(path)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PathError(f"{path}: expected a JSON list of class names")
    if wanted is not None and len(names) != wanted:
        raise PathError(f"{path} names {len(names)} classes, but the run's model.num_classes is {wanted}")
    return names


def load_run_model(run_dir: str | Path, weights: str = "best") -> tuple[paddle.nn.Layer, dict]:
    """The model of a run with its ``best`` or ``final`` weights (checked to fit), in eval mode, and the run's config."""
    if weights not in WEIGHTS:
        raise ArgumentError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    config = read_config(run_dir)
    if config["model"]["num_classes"] is None:
        config["model"]["num_classes"] = len(run_classes(run_dir, config))
    path = Path(run_dir) / WEIGHTS[weights]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run has no {weights} weights yet (has it finished an epoch?)")
    model = build_from_config(config)
    load_weights(model, path, model_name=config["model"]["name"])
    model.eval()
    return model, config


# -- model.pretrained ------------------------------------------------------------------------------
def pretrained_path(path: str | Path) -> Path:
    """The weights file that ``model.pretrained`` names: a file as it is, a run directory's best weights."""
    path = Path(path).expanduser()
    if is_run_dir(path):
        path = path / WEIGHTS["best"]
    if not path.is_file():
        raise ConfigError(f"model.pretrained {path}: no such weights file; give a .pdparams file (e.g. written by "
                          "python -m simam_paddle.convert) or a run directory with best_model.pdparams")
    return path


# -- starting a run --------------------------------------------------------------------------------
def start_run(out: Path, config: dict) -> str:
    """Make ``out`` ready to start (or resume) the run ``config`` asks for; return where it starts (as ``run_state``).

    It first takes the directory's lock for the rest of the process (``io.hold_lock``): a second
    process that prepares the same directory is refused, naming the holder, before it touches anything.
    Call it after everything else has been validated: with ``train.overwrite`` it moves the old run
    aside (``commit_replacement`` removes it, ``restore_replaced`` puts it back). With ``train.resume``
    it is the state of the run there: ``"resumable"``, ``"finished"``, or ``"new"`` when no epoch completed.
    """
    train = config["train"]
    hold_lock(out / LOCK_NAME, f"the run directory {out}")  # before anything in it is touched
    recover_replaced(out)
    remove_temp_files(out)
    if (out / KEPT).is_dir():
        remove_temp_files(out / KEPT)
    if train["resume"]:
        state = resume_point(out, config)
        if state == "new":  # killed before its first epoch ended: what it wrote is of no use, but its log
            _clear_run_files(out, keep=(LOG,))
        else:
            check_resumable(read_config(out), config, out)
        return state
    if any((out / name).exists() for name in RUN_FILES):
        if not train["overwrite"]:
            raise ConfigError(
                f"{out} already holds a run. Resume it with --resume (or -o train.resume=true), choose another "
                "directory with -o train.output_dir=..., or replace it with --overwrite"
            )
        aside = out / REPLACED
        aside.mkdir()
        for name in RUN_FILES:
            if (out / name).exists():
                (out / name).rename(aside / name)
    return "new"


def _clear_run_files(out: Path, keep: tuple[str, ...] = ()) -> None:
    for name in set(RUN_FILES) - set(keep):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def commit_replacement(out: Path) -> None:
    """The new run has its first checkpoint: the run it replaced is removed."""
    if (out / REPLACED).exists():
        shutil.rmtree(out / REPLACED)


def restore_replaced(out: Path) -> bool:
    """The new run stopped before its first checkpoint: put the replaced run back. True if there was one."""
    aside = out / REPLACED
    if not aside.is_dir():
        return False
    _clear_run_files(out)
    for path in aside.iterdir():
        path.rename(out / path.name)
    aside.rmdir()
    return True


def recover_replaced(out: Path) -> None:
    """A ``.replaced`` left by a killed process: removed if the new run got a checkpoint, else restored."""
    if (out / REPLACED).is_dir():
        if (out / CHECKPOINT).is_file():
            commit_replacement(out)
        else:
            restore_replaced(out)


# -- checkpoints -----------------------------------------------------------------------------------
def check_resumable(saved: dict, config: dict, path: Path) -> None:
    """Refuse to resume with a config that would compute something else than the saved run (a key
    the saved run predates counts as its default)."""
    base = defaults()
    saved = {section: {**keys, **saved.get(section, {})} for section, keys in base.items()}
    changed = [
        f"{section}.{key}: {saved[section].get(key)!r} -> {value!r}"
        for section, values in config.items()
        for key, value in values.items()
        if (section, key) not in NON_COMPUTATIONAL and saved.get(section, {}).get(key) != value
        and not ((section, key) == ("train", "epochs") and value > saved[section][key])
    ]
    if changed:
        raise ConfigError(
            f"cannot resume {path}: the config differs from the saved run in {'; '.join(changed)}. "
            "Resume with the run's own config (train.epochs may be raised), or start a new run in another directory"
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


def kept_checkpoint(out: str | Path, epoch: int) -> Path:
    return Path(out) / KEPT / f"epoch_{epoch}.pdckpt"


def kept_epochs(out: str | Path) -> list[int]:
    """The epochs whose checkpoints the run kept (``train.save_interval``), in order."""
    folder = Path(out) / KEPT
    names = [p.stem.removeprefix("epoch_") for p in folder.glob("epoch_*.pdckpt")] if folder.is_dir() else []
    return sorted(int(n) for n in names if n.isdigit())


def save_checkpoint(out: Path, model, optimizer, state: dict, save_interval: int = 0, keep_last: int | None = None) -> None:
    """The resumable state of the epoch ``state["epoch"]``; every ``save_interval``-th epoch's also kept
    (a second name of the same file), the oldest kept ones beyond ``keep_last`` removed."""
    atomic_paddle_save(
        {"model": model.state_dict(), "optimizer": _rename(optimizer.state_dict(), _names(model)), "state": state},
        out / CHECKPOINT,
    )
    epoch = state["epoch"]
    if save_interval and epoch % save_interval == 0:
        atomic_link(out / CHECKPOINT, kept_checkpoint(out, epoch))
        kept = kept_epochs(out)
        for old in kept[:-keep_last] if keep_last else []:
            kept_checkpoint(out, old).unlink()


def save_weights(out: Path, which: str, weights: dict, same_as: str | None = None) -> None:
    """The ``best`` or ``final`` weights; with ``same_as`` (the other name, whose file holds these very
    weights) a second name of that file instead of a second copy."""
    if same_as is not None and (out / WEIGHTS[same_as]).is_file():
        atomic_link(out / WEIGHTS[same_as], out / WEIGHTS[which])
    else:
        atomic_paddle_save(weights, out / WEIGHTS[which])


def rewind(out: Path, epoch: int, history: dict, with_provenance) -> None:
    """Make the run directory that of epoch ``epoch`` (``--resume-epoch``), whose ``history`` (as saved
    in its checkpoint) names its best epoch: its kept checkpoint becomes the last checkpoint and its
    history the run's; the later kept checkpoints and the final weights are removed; the best weights,
    when a later epoch wrote them, become those of the best epoch up to ``epoch`` (read from its kept
    checkpoint; ``with_provenance`` labels them). A best epoch whose weights are nowhere is a
    ConfigError, raised before anything changes."""
    best = history["best"]["epoch"]
    latest = read_history(out)
    restore = latest is not None and latest["best"]["epoch"] not in (None, best)
    if restore and not kept_checkpoint(out, best).is_file():
        raise ConfigError(f"--resume-epoch {epoch}: up to epoch {epoch} the best epoch is {best}, whose weights "
                          f"{out} no longer holds (best_model.pdparams is of epoch {latest['best']['epoch']} and epoch "
                          f"{best}'s checkpoint was not kept); resume from the last epoch, or from epoch {best}")
    if restore:
        weights = paddle.load(str(kept_checkpoint(out, best)))["model"]
        atomic_paddle_save(with_provenance(weights), out / WEIGHTS["best"])
    atomic_link(kept_checkpoint(out, epoch), out / CHECKPOINT)
    atomic_write_json(out / HISTORY, history)
    for later in [e for e in kept_epochs(out) if e > epoch]:
        kept_checkpoint(out, later).unlink()
    (out / WEIGHTS["final"]).unlink(missing_ok=True)


def resume_state(out: Path, config: dict, model, optimizer) -> dict:
    """Load model and optimizer (with its LR scheduler) from the run's checkpoint (that of
    ``train.resume_epoch`` when set); return the saved run state."""
    epoch = config["train"]["resume_epoch"]
    path = kept_checkpoint(out, epoch) if epoch is not None else out / CHECKPOINT
    try:
        ckpt = paddle.load(str(path))
    except Exception as exc:  # a corrupt file is not expected (atomic writes), but say what failed
        raise CheckpointError(f"cannot read the checkpoint {path}: {exc}") from exc
    check_resumable(ckpt["state"]["config"], config, path)
    load_weights(model, ckpt["model"], model_name=config["model"]["name"], source=str(path))
    inverse = {v: k for k, v in _names(model).items()}
    with warnings.catch_warnings():  # Paddle's LinearWarmup keeps its schedule's state under a key it then calls unused
        warnings.filterwarnings("ignore", message="There are some unused values in state_dict")
        optimizer.set_state_dict(_rename(ckpt["optimizer"], inverse))
    return ckpt["state"]
