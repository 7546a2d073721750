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

Start-up is quick: every tool answers ``--help``, ``--version``, ``--list-models`` and a bad flag before
Paddle loads. A tool module parses its arguments with ``answer_early(__name__, parse_args)`` above the
imports of its work; its console script (``console``) runs the module as ``python -m`` does, so both
ways of starting it take that path. ``-v`` / ``--verbose`` (or ``$SIMAM_PADDLE_VERBOSE=1``) shows what
the console otherwise keeps quiet: Paddle's harmless notices (glog's C++ notices, BatchNorm's "we now
always track global mean and variance" on every training step's first call, "No ccache found") and
the output of building and loading the C++ libraries (``simam_paddle.native.library.captured_output``).
Real warnings still show.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import warnings
from collections.abc import Callable
from importlib import metadata, resources
from pathlib import Path

from . import VERBOSE_ENV, verbose
from .errors import BadInput, ConfigError, DiskFull, ExportError, Interrupted, TrainingDiverged

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 128 + signal.SIGTERM

# Paddle's harmless warnings, by the text they start with: BatchNorm's on training, the C++ builder's
# (simam_paddle/__init__.py filters the latter for every program).
HARMLESS_WARNINGS = ("When training, we now always track global mean and variance", "No ccache found")


def quiet_paddle() -> None:
    """Filter Paddle's known harmless notices for the rest of this process, unless verbose (called on import)."""
    if verbose():
        return
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ notices below ERROR; set it to 0 to see them
    for text in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=text, category=UserWarning)


def be_verbose() -> None:
    """What ``-v`` does: undo ``quiet_paddle`` and let the libraries' builds print (for this process and its children)."""
    os.environ[VERBOSE_ENV] = "1"
    if os.environ.get("GLOG_minloglevel") == "2":
        del os.environ["GLOG_minloglevel"]
    for text in HARMLESS_WARNINGS:
        warnings.filterwarnings("default", message=text, category=UserWarning)


quiet_paddle()


class _Verbose(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        be_verbose()
        setattr(namespace, self.dest, True)


_invoked_as: str | None = None  # the console script's name, while a tool runs as one (console)


def command(tool: str) -> str:
    """The command that started ``tool``: its console script's name (``simam-train``), else ``python -m simam_paddle.train``."""
    return _invoked_as or f"python -m simam_paddle.{tool}"


def versions() -> str:
    """This package's version, and those of Paddle (from its installed metadata: Paddle is not imported) and Python."""
    from . import __version__

    paddle = next((f"{name} {metadata.version(name)}" for name in ("paddlepaddle", "paddlepaddle-gpu")
                   if _installed(name)), "paddlepaddle not installed")
    return f"simam-paddle {__version__} ({paddle}, Python {sys.version.split()[0]})"


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def parser(tool: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of a tool, named as it was started, with ``--version`` and ``-v``."""
    p = argparse.ArgumentParser(prog=command(tool), description=description)
    p.add_argument("--version", action="version", version=versions())
    p.add_argument("-v", "--verbose", action=_Verbose, nargs=0, default=False,
                   help=f"show Paddle's notices and the C++ libraries' build output (or set {VERBOSE_ENV}=1)")
    return p


def answer_early(module_name: str, parse_args: Callable[[list[str] | None], object]) -> None:
    """In a tool module run as a program (``__main__``), parse its arguments now, above the imports of its
    work: ``--help``, ``--version``, ``--list-models`` and a bad argument answer and exit without loading
    Paddle. ``main()`` parses them again (quickly) when the work goes on."""
    if module_name == "__main__":
        parse_args(None)


def console(tool: str) -> Callable[[], None]:
    """The console script ``simam-<tool>``: runs ``simam_paddle.<tool>`` as ``python -m`` does, so that
    ``answer_early`` answers before Paddle loads, with usage lines naming the script."""

    def run_tool() -> None:
        global _invoked_as
        _invoked_as = Path(sys.argv[0]).name
        runpy.run_module(f"simam_paddle.{tool}", run_name="__main__", alter_sys=True)

    return run_tool


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
