"""What every command-line tool shares: its parser, its flags, exit codes, the quiet start, config lookup.

Each tool runs as ``python -m simam_paddle.<tool>`` and as the console script ``simam-<tool>``. One
flag means one thing everywhere, defined once here:

    PATH            the positional argument of every tool that loads a model: a run directory, or an
                    export folder where the tool runs exports (predict, evaluate)
    --output DIR    where the tool writes: a folder, into which it writes its files under fixed names;
                    predict alone writes one table, so its --output is that file (.csv or .json)
    -o section.key=value   a config key, in every tool that uses a config; a key the tool would
                    ignore is refused (``overrides``)
    --rounds N      timed repetitions, in every tool and script that times something
    --weights, --num-images, --overwrite, and for the tools that run exports --threads, --no-onednn and
    --program (which program of a Paddle export: also export's, which programs to write)

One exit code means one kind of outcome:

    0    done
    1    the work ran and failed (an export that does not match its model, a run that failed, a full disk)
    2    bad input: an argument, config key, file or data source that cannot be used (nothing done):
         a ``simam_paddle.errors.BadInput``, a missing file, or an argument argparse refuses
    3    training diverged (NaN or Inf loss); the last completed epoch is kept
    130  interrupted (Ctrl-C, SIGINT)
    143  terminated (SIGTERM: kill, timeout, a scheduler's stop), handled as Ctrl-C is

Any other exception is a bug: it keeps its traceback (exit 1).

Paddle prints harmless notices on start-up (no ccache, "using custom operator only", glog notices of
its PIR passes such as "static graph(PIR) not support input out tensor"). Importing this
module filters exactly those, before Paddle is loaded: every tool imports it first, so the tools
start quietly, while a program that imports the library alone sees Paddle as Paddle prints it. Real
warnings still show.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from .errors import BadInput, ConfigError, DiskFull, ExportError, Interrupted, TrainingDiverged

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 128 + signal.SIGTERM

# Paddle's harmless start-up notices, by the text they start with.
HARMLESS_WARNINGS = ("No ccache found",)
HARMLESS_LOG_LINES = ("using custom operator only",)


class _HarmlessLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(record.getMessage().startswith(text) for text in HARMLESS_LOG_LINES)


def quiet_paddle() -> None:
    """Filter Paddle's known harmless notices for the rest of this process (called on import)."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ notices below ERROR; set it to 0 to see them
    for text in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=text)
        # the kernel's first build runs Paddle's setup in a child process, which inherits this
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), f"ignore:{text}"]))
    logging.getLogger("utils.cpp_extension").addFilter(_HarmlessLines())  # the logger of paddle's cpp_extension


quiet_paddle()


def parser(tool: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of ``python -m simam_paddle.<tool>``, with ``--version``."""
    from . import __version__

    p = argparse.ArgumentParser(prog=f"python -m simam_paddle.{tool}", description=description)
    p.add_argument("--version", action="version", version=f"simam-paddle {__version__}")
    return p


def add_path(p: argparse.ArgumentParser, exports: bool = False) -> None:
    """The positional PATH of a tool that loads a model."""
    what = "a run directory, or an export folder of simam_paddle.export" if exports else "a run directory"
    p.add_argument("path", metavar="PATH", help=f"{what} (written by simam_paddle.train)")


def add_output(p: argparse.ArgumentParser, writes: str, default: str) -> None:
    """``--output DIR``: the folder a tool writes into (``writes``: what it writes there)."""
    p.add_argument("--output", type=Path, default=None, metavar="DIR",
                   help=f"folder to write {writes} into (default: {default})")


def add_rounds(p: argparse.ArgumentParser, default: int, what: str) -> None:
    """``--rounds N``: timed repetitions."""
    p.add_argument("--rounds", type=positive_int, default=default, help=f"timed rounds of {what} (default: {default})")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="best", choices=("best", "final"),
                   help="which weights of a run directory (default: best)")


def add_engine(p: argparse.ArgumentParser) -> None:
    """The engine settings of a tool that runs exports (predict, evaluate)."""
    p.add_argument("--threads", type=int, default=None,
                   help="threads of the inference engine that runs an export (default: the cores available)")
    p.add_argument("--no-onednn", dest="onednn", action="store_false",
                   help="run a Paddle Inference export without oneDNN (default: oneDNN on, the fast path on CPUs)")
    p.add_argument("--program", choices=("auto", "simam_op", "standard"), default="auto",
                   help="which program of a Paddle export runs: model_simam_op.json (SimAM as one operator, CPU) or "
                        "model.json (standard operators); auto (default): the former where it can run")


def add_overrides(p: argparse.ArgumentParser, what: str = "a config value", example: str = "data.root=PATH") -> None:
    p.add_argument("-o", "--override", action="append", default=[], metavar="section.key=value",
                   help=f"override {what}, e.g. -o {example} (repeatable)")


def overrides(texts: list[str], tool: str, allowed: tuple[str, ...], why: str) -> list[str]:
    """``texts`` (``section.key=value``), each checked to be one of the keys ``tool`` uses: a section
    (``"data"``) or a key (``"model.e_lambda"``) of ``allowed``. Any other key would be ignored, so it
    is a ConfigError saying why (``why``) instead."""
    from .config import parse_override

    for text in texts:
        (section, values), = parse_override(text).items()
        key = f"{section}.{next(iter(values))}"
        if section not in allowed and key not in allowed:
            raise ConfigError(f"-o {text}: {tool} uses only {', '.join(allowed)} from -o; {key} would be ignored "
                              f"({why})")
    return list(texts)


def _terminate(signum, frame) -> None:
    raise Interrupted("terminated", signum)


def run(main: Callable[[], int | None]) -> int:
    """Call a tool's ``main`` and turn its failures into one message and the convention's exit code.

    SIGTERM raises :class:`Interrupted` in the main thread, as Ctrl-C raises KeyboardInterrupt (it
    replaces Paddle's handler, which aborts the process with a C++ report), so that a stopped tool
    cleans up and says what it kept either way."""
    from .native import KernelUnavailable, SettingError

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return main() or EXIT_OK
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except (ExportError, KernelUnavailable, DiskFull) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (BadInput, SettingError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"\n{str(exc) or 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED


def shipped_configs(folder: str = "configs") -> dict[str, Path]:
    """The configs that ship with the package in ``folder``, by name (``alexnet_simam`` -> its YAML file):
    the experiment's in ``configs``, PaddleClas's in ``configs/paddleclas``."""
    files = resources.files("simam_paddle").joinpath(*folder.split("/"))
    return {Path(str(f)).stem: Path(str(f)) for f in files.iterdir() if str(f).endswith(".yaml")}


def find_config(name_or_path: str, folder: str = "configs") -> Path:
    """A config given as a path, or by the name of a config shipped in ``folder`` (``alexnet_simam``), from any
    directory."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = shipped_configs(folder)
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if name in shipped and (len(path.parts) == 1 or path.parent.name == Path(folder).name):
        return shipped[name]
    raise ConfigError(
        f"config {name_or_path!r} not found: give a YAML file's path or the name of a shipped config "
        f"({', '.join(sorted(shipped))})"
    )
