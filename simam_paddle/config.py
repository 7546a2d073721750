"""Experiment configuration: defaults, YAML files, ``-o section.key=value`` overrides, validation.

Every key has a default, a type and a one-line description below. A config file overrides the
defaults and ``-o`` overrides the file. An unknown key, a value of the wrong type or an impossible
value is an error naming the key and what was expected, raised before any work starts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .layers.simam import E_LAMBDA


@dataclass(frozen=True)
class Key:
    default: Any
    kind: str  # "int", "float", "bool", "str", "ints" (a list of int), optionally suffixed with "?" for "or null"
    doc: str
    check: Callable[[Any], bool] | None = None
    expect: str | Callable[[], str] = ""  # human-readable range for the check (a callable: computed when needed)

    @property
    def nullable(self) -> bool:
        return self.kind.endswith("?")


def _model_names() -> list[str]:
    from .models import list_models  # imported when a name is checked: the config and data need no models

    return list_models()


# NumPy's global seed takes 0 .. 2^32 - 1; a run's epochs stay within what its schedule and ETA can count.
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 100_000


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


def _choice(*options):
    return lambda v: v in options


def _increasing(v):
    return bool(v) and all(m >= 1 for m in v) and all(a < b for a, b in zip(v, v[1:]))


def _device(v):
    return v in ("cpu", "gpu", "auto") or (v.startswith("gpu:") and v[4:].isdigit())


OPTIMIZERS = ("adam", "adamw", "momentum")
SCHEDULES = ("cosine", "step", "multistep")


SCHEMA: dict[str, dict[str, Key]] = {
    "model": {
        "name": Key("alexnet_simam", "str", "model to train: alexnet | alexnet_simam | resnet18_simam | mobilenet_v2_simam ... (all: python -m simam_paddle.train --list-models)", lambda v: v in _model_names(), lambda: "a name build_model knows: " + ", ".join(_model_names())),
        "num_classes": Key(None, "int?", "number of output classes (null = the number of classes in the data; a different number is an error)", _positive, "> 0 or null"),
        "e_lambda": Key(E_LAMBDA, "float", "SimAM lambda (1e-4 official default; the notebook used 1e-5; the official ImageNet weights 0.1)", _positive, "> 0"),
        "dropout": Key(0.5, "float", "dropout of AlexNet's classifier (0 = off); other models have none", lambda v: 0 <= v < 1, "in [0, 1)"),
        "pretrained": Key(None, "str?", "weights to start from: a .pdparams file (e.g. from simam_paddle.convert) or a run directory (its best weights); loaded strictly, but for a classifier of another num_classes, which starts new"),
        "pretrained_other_model": Key(False, "bool", "let model.pretrained be weights that another model wrote (a SimAM model from its plain twin's run, whose keys are the same); without it they are refused, naming both models"),
        "fast_conv": Key(True, "bool", "AlexNet's CPU float32 convolutions through oneDNN (simam_paddle.fastconv) where it builds, else Paddle's own; same numbers to float rounding; other models use Paddle's"),
    },
    "data": {
        "root": Key(None, "str?", "cifar-10-python.tar.gz path, image-folder root (train/<class>/, val/<class>/ or test/<class>/), PaddleClas image list (train_list.txt, val_list.txt beside it; or their folder), or null for Paddle's CIFAR-10 cache"),
        "image_size": Key(128, "int", "side of the square images the model sees; the recipe's transforms are scaled to it (AlexNet needs 128)", lambda v: v >= 16, ">= 16"),
        "download": Key(True, "bool", "let Paddle download CIFAR-10 into its cache when root is null"),
        "train_transforms": Key("recipe", "str", "train pipeline: recipe (the notebook's, step for step) | fast (same distributions, less work) | none (no augmentation)", _choice("recipe", "fast", "none"), "one of recipe, fast, none"),
        "batch_size": Key(128, "int", "images per batch, per process", _positive, ">= 1"),
        "num_workers": Key(None, "int?", "data-loading worker processes (0 = load in the main process; null = auto: 0 on a machine with 2 CPU cores or fewer, where workers compete with the compute threads, else 2)", _non_negative, ">= 0 or null"),
        "limit_train": Key(None, "int?", "class-balanced subset of the training set (null = all, CIFAR-10: 50,000)", _positive, ">= 1 or null"),
        "limit_val": Key(None, "int?", "class-balanced subset of the validation set (null = all, CIFAR-10: 10,000)", _positive, ">= 1 or null"),
        "mixup_alpha": Key(0.0, "float", "batch Mixup, lam ~ Beta(alpha, alpha); 0 = off (the notebook's MixupImage did nothing)", _non_negative, ">= 0"),
    },
    "loss": {
        "smoothing": Key(0.1, "float", "label smoothing epsilon", lambda v: 0 <= v < 1, "in [0, 1)"),
    },
    "train": {
        "epochs": Key(50, "int", "number of epochs", lambda v: 1 <= v <= MAX_EPOCHS, f"between 1 and {MAX_EPOCHS:,}"),
        "lr": Key(5e-4, "float", "peak learning rate: where the warmup ends and train.schedule starts", _positive, "> 0"),
        "optimizer": Key("adam", "str", "adam (the recipe's; weight_decay is L2: weight_decay * w added to the gradient, Paddle's float weight_decay) | adamw (weight_decay decoupled: every step also subtracts lr * weight_decay * w) | momentum (SGD with momentum; weight_decay is L2 added to the gradient)", _choice(*OPTIMIZERS), "one of " + ", ".join(OPTIMIZERS)),
        "momentum": Key(0.9, "float", "momentum of train.optimizer=momentum: v = momentum * v + g, w -= lr * v", lambda v: 0 <= v < 1, "in [0, 1)"),
        "nesterov": Key(False, "bool", "Nesterov momentum for train.optimizer=momentum: w -= lr * (g + momentum * v)"),
        "weight_decay": Key(1e-5, "float", "weight decay; what it means depends on train.optimizer (above)", _non_negative, ">= 0"),
        "schedule": Key("cosine", "str", "learning rate after the warmup: cosine (the recipe's: from lr to 0 over the iterations after the warmup, set every iteration) | step (times gamma every step_size epochs) | multistep (times gamma at each epoch in milestones); step and multistep count epochs from the start of the run", _choice(*SCHEDULES), "one of " + ", ".join(SCHEDULES)),
        "step_size": Key(30, "int", "train.schedule=step: the learning rate is multiplied by gamma after every step_size epochs", _positive, ">= 1"),
        "milestones": Key([30, 60, 90], "ints", "train.schedule=multistep: the epochs after which the learning rate is multiplied by gamma", _increasing, "a list of increasing epochs >= 1, e.g. [30, 60]"),
        "gamma": Key(0.1, "float", "factor of train.schedule=step and multistep", _positive, "> 0"),
        "warmup_epochs": Key(0, "int", "linear warmup over the first N epochs: the rate of iteration i is lr * i / (N * iterations per epoch), starting at 0; the schedule follows (0 = none; set this or warmup_iters)", _non_negative, ">= 0"),
        "warmup_iters": Key(0, "int", "linear warmup over the first N iterations (the same warmup counted in iterations; 0 = none)", _non_negative, ">= 0"),
        "clip_grad_norm": Key(None, "float?", "clip the gradients by their global norm: each gradient times c / max(norm, c), where norm is the L2 norm of all gradients together; applied before weight decay; null or 0 = off", _non_negative, ">= 0 or null"),
        "seed": Key(42, "int", "seed of weights, data order, augmentation and dropout", lambda v: 0 <= v <= MAX_SEED, f"between 0 and {MAX_SEED:,} (2^32 - 1, NumPy's range)"),
        "output_dir": Key("runs/alexnet_simam", "str", "run directory: checkpoints, logs, history, figures"),
        "log_interval": Key(10, "int", "write a log line every N iterations", _positive, ">= 1"),
        "loss_record_interval": Key(10, "int", "record the training loss every N iterations (the notebook: 10)", _positive, ">= 1"),
        "resume": Key(False, "bool", "continue the run in output_dir from its last completed epoch; train.epochs may be raised (the schedule is recomputed for the new length), any other change that alters what is computed is refused"),
        "resume_epoch": Key(None, "int?", "with resume: continue from the kept checkpoint of this epoch (train.save_interval) instead of the last; the run's later epochs are discarded", _positive, ">= 1 or null"),
        "save_interval": Key(0, "int", "also keep the checkpoint of every N-th epoch, as checkpoints/epoch_<N>.pdckpt (resumable with --resume-epoch); 0 = keep the last epoch's only", _non_negative, ">= 0"),
        "keep_last": Key(None, "int?", "how many of the kept checkpoints to keep, the newest (null = all)", _positive, ">= 1 or null"),
        "overwrite": Key(False, "bool", "start afresh in an output_dir that already holds a run, deleting it"),
        "visualdl": Key(False, "bool", "also write VisualDL scalars to output_dir/visualdl"),
        "amp": Key("off", "str", "mixed precision: off | O1 | O2 (needs a GPU)", _choice("off", "O1", "O2"), "one of off, O1, O2"),
        "precision": Key("fp32", "str", "CPU training precision: fp32 | bf16 (the oneDNN convolutions read bfloat16 inputs and accumulate in float32; weights, gradients and Adam stay float32; needs model.fast_conv and a CPU with AVX512-BF16 or AMX)", _choice("fp32", "bf16"), "one of fp32, bf16"),
        "throughput_batches": Key(10, "int", "batches timed for the model-only throughput at the end of a run (0 = skip)", _non_negative, ">= 0"),
        "device": Key("auto", "str", "cpu | gpu | gpu:N (the N-th GPU) | auto (Paddle's default: the first GPU of a GPU build of Paddle, else the CPU)", _device, "cpu, gpu, gpu:N or auto"),
    },
}


def defaults() -> dict[str, dict[str, Any]]:
    return {section: {k: copy.copy(key.default) for k, key in keys.items()} for section, keys in SCHEMA.items()}


def describe(config: dict | None = None) -> str:
    """``config`` (default: the defaults) as commented YAML: every key, its value and what it means."""
    config = config or defaults()
    lines = []
    for section, keys in SCHEMA.items():
        lines.append(f"{section}:")
        for name, key in keys.items():
            value = yaml.safe_dump(config[section][name], default_flow_style=True).strip().removesuffix("...").strip()
            lines.append(f"  {name}: {value}  # {key.doc}")
    return "\n".join(lines) + "\n"


def reference() -> str:
    """Every key as Markdown tables, one per section (key, default, meaning): README's config reference."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("<", "&lt;")

    parts = []
    for section, keys in SCHEMA.items():
        rows = [f"| `{section}.{name}` | `{cell(yaml.safe_dump(key.default, default_flow_style=True).strip().removesuffix('...').strip())}` "
                f"| {cell(key.doc)} |" for name, key in keys.items()]
        parts.append("\n".join([f"**{section}**", "", "| key | default | meaning |", "|---|---|---|", *rows]))
    return "\n\n".join(parts) + "\n"


def _coerce(where: str, key: Key, value: Any) -> Any:
    if value is None:
        if key.nullable:
            return None
        raise ConfigError(f"{where}: null is not allowed, expected {key.kind}")
    kind = key.kind.rstrip("?")
    ok = True
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "ints":
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    elif kind == "float":
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                ok = False
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            ok = False
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    elif kind == "str":
        if value is False and key.default == "off":  # YAML 1.1 reads a bare `off` as false
            value = "off"
        ok = isinstance(value, str)
    if not ok:
        null = " or null" if key.nullable else ""
        raise ConfigError(f"{where}: expected {kind}{null}, got {value!r} ({type(value).__name__})")
    if key.check is not None and not key.check(value):
        expect = key.expect() if callable(key.expect) else key.expect
        raise ConfigError(f"{where}: expected {expect}, got {value!r}")
    return value


def _merge(config: dict, updates: Any, source: str) -> None:
    if not isinstance(updates, dict):
        raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(SCHEMA)}), got {type(updates).__name__}")
    for section, values in updates.items():
        if section not in SCHEMA:
            raise ConfigError(f"{source}: unknown section {section!r}; valid sections: {', '.join(SCHEMA)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of keys, got {values!r}")
        for name, value in values.items():
            if name not in SCHEMA[section]:
                raise ConfigError(
                    f"{source}: unknown key {section}.{name}; valid keys of {section}: {', '.join(SCHEMA[section])}"
                )
            config[section][name] = _coerce(f"{source}: {section}.{name}", SCHEMA[section][name], value)


def parse_override(text: str) -> dict:
    """``"train.epochs=3"`` -> ``{"train": {"epochs": 3}}`` (the value is read as YAML)."""
    path, sep, raw = text.partition("=")
    parts = path.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: expected section.key=value, for example train.epochs=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from None
    return {parts[0]: {parts[1]: value}}


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; the shipped configs are in configs/ (e.g. configs/alexnet_simam.yaml)")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Defaults, then the YAML file at ``path`` (if any), then each ``section.key=value`` override; then
    the checks that involve several keys (``check_config``)."""
    config = defaults()
    if path is not None:
        _merge(config, read_yaml(path), str(path))
    return apply_overrides(config, overrides)


def apply_overrides(config: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``section.key=value`` overrides to ``config`` in place (validated like a file); return it."""
    for text in overrides:
        _merge(config, parse_override(text), f"override {text!r}")
    check_config(config)
    return config


def check_config(config: dict) -> None:
    """The checks that involve several keys, each a ConfigError naming the keys and the fix: a model
    that takes one input size only (AlexNet: 128) refuses another ``data.image_size``; ``model.dropout``
    applies to the models that have dropout (AlexNet); the schedule's warmup fits (``check_schedule``);
    ``train.resume_epoch`` comes with ``train.resume``."""
    from .models import MODELS  # imported when a config is checked: the config and data need no models

    name, size = config["model"]["name"], config["data"]["image_size"]
    spec = MODELS[name]
    if spec.input_size is not None and size != spec.input_size:
        needed = spec.input_size
        takes_any = ", ".join(n for n, s in MODELS.items() if s.input_size is None)
        raise ConfigError(f"data.image_size={size}: {name} takes {needed}x{needed} images only; set data.image_size={needed}, "
                          f"or choose a model that takes any size ({takes_any})")
    if "dropout" not in spec.options and config["model"]["dropout"] != SCHEMA["model"]["dropout"].default:
        raise ConfigError(f"model.dropout applies to AlexNet models only; {name} has no dropout to set")
    check_schedule(config["train"])
    if config["train"]["resume_epoch"] is not None and not config["train"]["resume"]:
        raise ConfigError(f"train.resume_epoch={config['train']['resume_epoch']} applies to a resumed run: "
                          "add --resume (or -o train.resume=true)")


def check_schedule(tc: dict) -> None:
    """The warmup fits in the run and before the first milestone; one warmup key at a time."""
    if tc["warmup_epochs"] and tc["warmup_iters"]:
        raise ConfigError(f"train.warmup_epochs={tc['warmup_epochs']} and train.warmup_iters={tc['warmup_iters']}: "
                          "the warmup is counted in epochs or in iterations; set one of them to 0")
    if tc["warmup_epochs"] >= tc["epochs"]:
        raise ConfigError(f"train.warmup_epochs={tc['warmup_epochs']} leaves no epoch of train.epochs={tc['epochs']} "
                          "for the schedule; lower it below train.epochs")
    first = {"step": tc["step_size"], "multistep": tc["milestones"][0]}.get(tc["schedule"])
    if first is not None and tc["warmup_epochs"] >= first:
        raise ConfigError(f"train.warmup_epochs={tc['warmup_epochs']} reaches the schedule's first decay (after epoch "
                          f"{first}); lower the warmup or move train.{'step_size' if tc['schedule'] == 'step' else 'milestones'}")


def save_config(config: dict, path: str | Path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))


# Keys that do not change what a run computes (where it writes, how it logs, how data is loaded, which
# checkpoints it keeps, which device or convolution kernel computes the same numbers to float rounding):
# they may differ between runs that are compared, and change when a run is resumed.
NON_COMPUTATIONAL = {
    ("train", "output_dir"), ("train", "resume"), ("train", "overwrite"), ("train", "visualdl"),
    ("train", "log_interval"), ("train", "throughput_batches"), ("data", "num_workers"), ("model", "fast_conv"),
    ("train", "device"), ("train", "save_interval"), ("train", "keep_last"), ("train", "resume_epoch"),
}


def recipe_key(config: dict) -> dict:
    """The settings that must agree for two runs to be comparable: all but the model, the seed and
    the ``NON_COMPUTATIONAL`` keys."""
    ignored = NON_COMPUTATIONAL | {("train", "seed")}
    return {section: {k: v for k, v in values.items() if (section, k) not in ignored}
            for section, values in config.items() if section != "model"}
