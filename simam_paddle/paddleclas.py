"""SimAM in PaddleClas: SimAM backbones by name in PaddleClas's architecture lookup, PaddleClas's own
tools run with them, shipped PaddleClas configs, and PaddleClas image lists of an image folder.

    python -m simam_paddle.paddleclas [--source PADDLECLAS] train|eval|export_model|infer -c CONFIG [-o KEY=VALUE ...]
    python -m simam_paddle.paddleclas PADDLECLAS/tools/train.py -c CONFIG [-o KEY=VALUE ...]
    python -m simam_paddle.paddleclas --image-lists ROOT [--output DIR] [--limit-train N] [--limit-val N]
    python -m simam_paddle.paddleclas --list-configs

``register(arch)`` adds to PaddleClas's architecture lookup, the module ``ppcls.arch`` whose
``build_model(config)`` builds the architecture that a config's ``Arch.name`` names by looking the name
up there, one ``SimAM_<NAME>`` for every ResNet, ResNet-vd, MobileNetV1, MobileNetV3 and PP-LCNet
backbone ``NAME`` of PaddleClas (``SimAM_ResNet50_vd``, ``SimAM_MobileNetV3_large_x1_0``,
``SimAM_PPLCNet_x1_0``, ...). It builds the plain backbone with the same arguments (``class_num``,
``pretrained``, ``use_ssld``, ``stride_list``, ...), then inserts SimAM with ``add_simam(model, e_lambda=e_lambda)``:
the official placement, after the 3x3 convolution of every residual block or after every depthwise
convolution, before its BatchNorm (see ``simam_paddle.layers.insert``). ``e_lambda`` comes from the
``Arch`` section (default SimAM's, ``simam_paddle.layers.simam.E_LAMBDA``, 1e-4; the paper's ImageNet
runs used 0.1). SimAM has no parameters and
changes no state-dict key, so the plain backbone's pretrained weights (``pretrained: PATH`` without
``.pdparams``, or ``Global.pretrained_model``) load into the SimAM backbone unchanged.

PaddleClas comes in two forms. The ``paddleclas`` wheel holds the backbones and ``build_model``
(``paddleclas.ppcls.arch``) but no training engine; a source tree of PaddleClas holds the top-level
package ``ppcls`` with the engine and the tools (``tools/train.py``, ``eval.py``, ``export_model.py``,
``infer.py``). ``register()`` without an argument registers into each of the two that can be imported.

The command line runs one of those tools of a source tree unchanged, as ``python TOOL ARGS`` would,
after registering the SimAM architectures into that tree's ``ppcls.arch``; it reports on stderr each SimAM
architecture the tool builds, with its number of SimAMs. The tool is named (``train``) with the tree
from ``--source`` or ``$PADDLECLAS_SOURCE``, or given by its path. ``-c`` also takes the name of a shipped
config (``configs/paddleclas/``: ``SimAM_ResNet50_vd``, ``SimAM_ResNet18_cifar10``). This module imports
``simam_paddle.layers`` (and ``cli`` for the command line; ``data`` for the image lists) of the package.
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import argparse
import os
import re
import runpy
import sys
import traceback
from pathlib import Path
from types import ModuleType

PREFIX = "SimAM_"
# PaddleClas's backbones with a default SimAM placement, by the names its architecture lookup knows them by.
BACKBONES = re.compile(r"ResNet\d+(_vd)?|MobileNetV1(_x\d_\d+)?|MobileNetV3_(small|large)_x\d_\d+|PPLCNet_x\d_\d+")
TOOLS = ("train", "eval", "export_model", "infer")
SOURCE_ENV = "PADDLECLAS_SOURCE"
SOURCE_HINT = (
    "PaddleClas's tools and training engine are in its source tree, not in the paddleclas wheel: "
    "git clone -b release/2.6 https://github.com/PaddlePaddle/PaddleClas.git, then --source PaddleClas "
    f"(or {SOURCE_ENV}=PaddleClas)"
)
CONFIGS = "configs/paddleclas"  # the shipped PaddleClas configs, inside the package
LISTS = {"train": "train_list.txt", "test": "val_list.txt"}  # image list per split (test: the val/ or test/ folder)


def simam_architecture(build, name: str, report=None):
    """The architecture ``SimAM_<name>``: ``build(**kwargs)`` (PaddleClas's ``name``) with SimAM inserted.

    ``report(architecture_name, simams, e_lambda)``, where given, is called with what each build inserted.
    """
    from .layers import add_simam
    from .layers.simam import E_LAMBDA

    def architecture(e_lambda: float = E_LAMBDA, **kwargs):
        model = build(**kwargs)
        count = add_simam(model, e_lambda=e_lambda)
        if report is not None:
            report(PREFIX + name, count, e_lambda)
        return model

    architecture.__name__ = architecture.__qualname__ = PREFIX + name
    architecture.__doc__ = (
        f"PaddleClas's {name} (built with the same arguments) with SimAM(e_lambda) after the 3x3 or depthwise "
        "convolution of every block, before its BatchNorm."
    )
    return architecture


def backbone_names(arch: ModuleType) -> list[str]:
    """The plain backbones of ``arch`` (a ``ppcls.arch`` module) that get a SimAM twin."""
    return sorted(name for name in dir(arch) if BACKBONES.fullmatch(name) and callable(getattr(arch, name)))


def register(arch: ModuleType | None = None, report=None) -> list[str]:
    """Add ``SimAM_<NAME>`` for every known backbone to PaddleClas's architecture lookup; return the names added.

    ``arch``: a ``ppcls.arch`` module; by default every one that imports (``ppcls.arch`` of a source
    checkout on ``sys.path``, ``paddleclas.ppcls.arch`` of the wheel). Registering again replaces the
    earlier entries with equal ones. ``report``: see ``simam_architecture``.
    """
    modules = [arch] if arch is not None else _importable_arch_modules()
    if not modules:
        raise ModuleNotFoundError(
            "PaddleClas is not installed: pip install paddleclas==2.6.0 (the backbones), or put a PaddleClas "
            "source checkout on sys.path (the training engine)"
        )
    added = []
    for module in modules:
        names = backbone_names(module)
        if not names:
            raise ValueError(f"{module.__name__} holds none of PaddleClas's ResNet, MobileNet or PP-LCNet backbones")
        for name in names:
            setattr(module, PREFIX + name, simam_architecture(getattr(module, name), name, report))
        added += [PREFIX + name for name in names if PREFIX + name not in added]
    return added


def _importable_arch_modules() -> list[ModuleType]:
    import importlib

    modules = []
    for name in ("ppcls.arch", "paddleclas.ppcls.arch"):
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):  # a missing dependency, not a missing PaddleClas
                raise
    return modules


def source_tree(root: str | Path, given_as: str) -> Path:
    """The PaddleClas source tree at ``root`` (``given_as`` says where it came from, for the message);
    FileNotFoundError naming what is missing there."""
    root = Path(root).expanduser()
    missing = [str(root / part) for part in ("ppcls/engine", "tools/train.py") if not (root / part).exists()]
    if missing:
        raise FileNotFoundError(f"{given_as} {root} is not a PaddleClas source tree: {' and '.join(missing)} missing. "
                                f"{SOURCE_HINT}")
    return root.resolve()


def find_tool(tool: str, source: str | None = None) -> Path:
    """The file of a PaddleClas tool: given by name (``train``, ``eval``, ``export_model``, ``infer``) in the
    source tree that ``source`` or else ``$PADDLECLAS_SOURCE`` names, or by its path (``PaddleClas/tools/train.py``)."""
    name = tool.removesuffix(".py")
    if name in TOOLS and not Path(tool).is_file():
        if source:
            root = source_tree(source, "--source")
        elif os.environ.get(SOURCE_ENV):
            root = source_tree(os.environ[SOURCE_ENV], f"${SOURCE_ENV}")
        else:
            raise FileNotFoundError(
                f"no PaddleClas source tree to run tools/{name}.py from: give its folder with --source PATH or in "
                f"${SOURCE_ENV}, or give the tool's path (PaddleClas/tools/{name}.py). {SOURCE_HINT}"
            )
        return root / "tools" / f"{name}.py"
    path = Path(tool)
    if source:
        raise ValueError(f"--source names the source tree of a tool given by name ({', '.join(TOOLS)}), not of {tool}")
    if not path.is_file():
        raise FileNotFoundError(f"{tool} does not exist: give a PaddleClas tool by name ({', '.join(TOOLS)}) or path "
                                f"(PaddleClas/tools/train.py). {SOURCE_HINT}")
    if path.stem not in TOOLS or path.resolve().parent.name != "tools":
        raise FileNotFoundError(f"{tool} is not one of PaddleClas's tools ({', '.join(f'tools/{t}.py' for t in TOOLS)} "
                                f"of a PaddleClas source tree). {SOURCE_HINT}")
    source_tree(path.resolve().parent.parent, f"the tree of {tool},")
    return path


def arch_of(root: Path) -> ModuleType:
    """``ppcls.arch`` of the source tree at ``root``, imported from there."""
    import importlib

    sys.path.insert(0, str(root))
    arch = importlib.import_module("ppcls.arch")
    if not Path(arch.__file__).resolve().is_relative_to(root):
        raise ValueError(f"ppcls was already imported from {Path(arch.__file__).parents[1]}, not from {root}")
    return arch


def with_shipped_configs(tool_args: list[str]) -> list[str]:
    """The tool's arguments with the value of ``-c``/``--config`` that names a shipped PaddleClas config
    (``SimAM_ResNet18_cifar10``) replaced by its path; ConfigError for a config that is neither a file nor shipped."""
    args = list(tool_args)
    for i, arg in enumerate(args[:-1]):
        if arg in ("-c", "--config"):
            args[i + 1] = str(cli.find_config(args[i + 1], CONFIGS))
    return args


def write_image_lists(root: str | Path, output: str | Path | None = None, limit_train: int | None = None,
                      limit_val: int | None = None, seed: int = 0) -> dict[str, Path]:
    """PaddleClas image lists of an image folder ``ROOT/train/<class>/*``, ``ROOT/val|test/<class>/*``.

    Writes into ``output`` (default ``root``) ``train_list.txt`` and ``val_list.txt`` (the val/ or test/
    folder), one ``PATH LABEL`` line per image with PATH relative to ``root`` (a config's ``image_root``),
    and ``label_list.txt``, one ``LABEL CLASS`` line per class. Classes and labels are the package's
    reading of an image folder (class folders of ``train/``, sorted; CIFAR-10's in its label order).
    ``limit_train`` / ``limit_val`` keep that many images of the split, as equal per class as possible,
    the same for the same ``seed``. Returns the written files by name.
    """
    from .data.sources import balanced_subset, folder_classes, list_image_folder
    from .io import atomic_write_text

    root = Path(root)
    output = Path(output) if output is not None else root
    lines = {}
    for split, limit in (("train", limit_train), ("test", limit_val)):
        files, labels = list_image_folder(root, split)
        with_space = [str(f) for f in files if " " in f.relative_to(root).as_posix()]
        if with_space:
            raise ValueError(f"{with_space[0]}: a space in an image's path; PaddleClas's image lists split lines at spaces")
        keep = balanced_subset(labels, limit, seed)
        lines[LISTS[split]] = [f"{files[i].relative_to(root).as_posix()} {labels[i]}" for i in keep]
    lines["label_list.txt"] = [f"{label} {name}" for label, name in enumerate(folder_classes(root))]
    output.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, content in lines.items():
        written[name] = output / name
        atomic_write_text(written[name], "\n".join(content) + "\n")
    return written


def _report(name: str, simams: int, e_lambda: float) -> None:
    print(f"simam-paddle: built {name} with {simams} SimAMs (e_lambda {e_lambda:g})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("paddleclas", "Run a PaddleClas tool (train, eval, export_model, infer of a PaddleClas source "
                   "tree) with the SimAM architectures SimAM_<backbone> registered; or write PaddleClas image lists "
                   "of an image folder; or list the shipped PaddleClas configs.")
    p.add_argument("--source", metavar="PADDLECLAS",
                   help=f"the PaddleClas source tree of a tool given by name (default: ${SOURCE_ENV})")
    p.add_argument("--list-configs", action="store_true",
                   help="list the shipped PaddleClas configs (names for -c) and their paths")
    p.add_argument("--image-lists", metavar="ROOT",
                   help="write train_list.txt, val_list.txt and label_list.txt of the image folder ROOT")
    p.add_argument("--output", metavar="DIR", help="where --image-lists writes (default: ROOT)")
    p.add_argument("--limit-train", type=int, metavar="N", help="--image-lists: N training images, balanced over classes")
    p.add_argument("--limit-val", type=int, metavar="N", help="--image-lists: N validation images, balanced over classes")
    p.add_argument("tool", nargs="?", help="the tool: train, eval, export_model, infer, or its path "
                   "(PaddleClas/tools/train.py)")
    p.add_argument("tool_args", nargs=argparse.REMAINDER,
                   help="the tool's own arguments, e.g. -c CONFIG -o Arch.name=SimAM_ResNet50_vd; -c also takes the "
                        "name of a shipped config")
    args = p.parse_args(argv)
    if sum((args.tool is not None, args.image_lists is not None, args.list_configs)) != 1:
        p.error("give one of: a tool (train, eval, export_model, infer, or its path), --image-lists ROOT, --list-configs")

    def run() -> int:
        if args.list_configs:
            for name, path in sorted(cli.shipped_configs(CONFIGS).items()):
                print(f"{name}  {path}")
            return cli.EXIT_OK
        if args.image_lists is not None:
            for path in write_image_lists(args.image_lists, args.output, args.limit_train, args.limit_val).values():
                print(f"wrote {path} ({path.read_text().count(chr(10))} lines)")
            return cli.EXIT_OK
        tool = find_tool(args.tool, args.source)
        tool_args = with_shipped_configs(args.tool_args)
        arch = arch_of(tool.resolve().parent.parent)
        names = register(arch, report=_report)
        print(f"simam-paddle: {len(names)} SimAM architectures registered in PaddleClas ({', '.join(names[:3])}, ...)",
              file=sys.stderr)
        sys.argv = [str(tool), *tool_args]
        try:
            runpy.run_path(str(tool), run_name="__main__")
        except Exception:  # PaddleClas's own failure: its traceback, and the code of failed work
            traceback.print_exc()
            return cli.EXIT_FAILED
        return cli.EXIT_OK

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
