"""What every command-line tool shares: its parser, exit codes, the quiet start, config lookup.

Each tool runs as ``python -m simam_paddle.<tool>`` and as the console script ``simam-<tool>``. One
flag means one thing everywhere (``--output``, ``--weights``, ``--num-images``, ``--overwrite``,
``-o section.key=value``, and for the tools that run exports ``--threads`` and ``--no-onednn``), and
one exit code one kind of outcome:

    0    done
    1    the work ran and failed (an export that does not match its model, a run that failed, a full disk)
    2    bad input: an argument, config key, file or data source that cannot be used (nothing done)
    3    training diverged (NaN or Inf loss); the last completed epoch is kept
    130  interrupted (Ctrl-C, SIGINT)
    143  terminated (SIGTERM: kill, timeout, a scheduler's stop), handled as Ctrl-C is

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

from .errors import ConfigError, DiskFull, ExportError, Interrupted, TrainingDiverged

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


def add_overrides(p: argparse.ArgumentParser, what: str = "a config value") -> None:
    p.add_argument("-o", "--override", action="append", default=[], metavar="section.key=value",
                   help=f"override {what}, e.g. -o data.root=PATH (repeatable)")


def _terminate(signum, frame) -> None:
    raise Interrupted("terminated", signum)


def run(main: Callable[[], int | None]) -> int:
    """Call a tool's ``main`` and turn its failures into one message and the convention's exit code.

    SIGTERM raises :class:`Interrupted` in the main thread, as Ctrl-C raises KeyboardInterrupt (it
    replaces Paddle's handler, which aborts the process with a C++ report), so that a stopped tool
    cleans up and says what it kept either way."""
    from .layers.custom_ops import KernelUnavailable

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return main() or EXIT_OK
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except (ExportError, KernelUnavailable, DiskFull) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"\n{str(exc) or 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED


def shipped_configs() -> dict[str, Path]:
    """The configs that ship with the package, by name (``alexnet_simam`` -> its YAML file)."""
    folder = resources.files("simam_paddle") / "configs"
    return {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir() if str(f).endswith(".yaml")}


def find_config(name_or_path: str) -> Path:
    """A config given as a path, or by the name of a shipped config (``alexnet_simam``), from any directory."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = shipped_configs()
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if name in shipped and (len(path.parts) == 1 or path.parent.name == "configs"):
        return shipped[name]
    raise ConfigError(
        f"config {name_or_path!r} not found: give a YAML file's path or the name of a shipped config "
        f"({', '.join(sorted(shipped))})"
    )
