"""SimAM in PaddleClas: SimAM backbones by name in PaddleClas's architecture lookup, and PaddleClas's own
tools run with them.

    python -m simam_paddle.paddleclas PADDLECLAS/tools/train.py -c CONFIG -o Arch.name=SimAM_ResNet50_vd [...]

``register(arch)`` adds to PaddleClas's architecture lookup, the module ``ppcls.arch`` whose
``build_model(config)`` builds the architecture that a config's ``Arch.name`` names by looking the name
up there, one ``SimAM_<NAME>`` for every ResNet, ResNet-vd, MobileNetV1, MobileNetV3 and PP-LCNet
backbone ``NAME`` of PaddleClas (``SimAM_ResNet50_vd``, ``SimAM_MobileNetV3_large_x1_0``,
``SimAM_PPLCNet_x1_0``, ...). It builds the plain backbone with the same arguments (``class_num``,
``pretrained``, ``use_ssld``, ...), then inserts SimAM with ``add_simam(model, e_lambda=e_lambda)``:
the official placement, after the 3x3 convolution of every residual block or after every depthwise
convolution, before its BatchNorm (see ``simam_paddle.layers.insert``). ``e_lambda`` comes from the
``Arch`` section (default SimAM's, ``simam_paddle.layers.simam.E_LAMBDA``, 1e-4; the paper's ImageNet
runs used 0.1). SimAM has no parameters and
changes no state-dict key, so the plain backbone's pretrained weights (``pretrained: PATH`` without
``.pdparams``, or ``Global.pretrained_model``) load into the SimAM backbone unchanged.

PaddleClas comes in two forms. The ``paddleclas`` wheel holds the backbones and ``build_model``
(``paddleclas.ppcls.arch``) but no training engine; a source checkout of PaddleClas holds the top-level
package ``ppcls`` with the engine and the tools (``tools/train.py``, ``eval.py``, ``export_model.py``,
``infer.py``). ``register()`` without an argument registers into each of the two that can be imported.

The command line runs one of those tools of a source checkout unchanged, as ``python TOOL ARGS`` would,
after registering the SimAM architectures into that checkout's ``ppcls.arch``. This module imports
only ``simam_paddle.layers`` of the package (and ``cli`` for the command line).
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import argparse
import re
import runpy
import sys
import traceback
from pathlib import Path
from types import ModuleType

PREFIX = "SimAM_"
# PaddleClas's backbones with a default SimAM placement, by the names its architecture lookup knows them by.
BACKBONES = re.compile(r"ResNet\d+(_vd)?|MobileNetV1(_x\d_\d+)?|MobileNetV3_(small|large)_x\d_\d+|PPLCNet_x\d_\d+")
TOOLS = ("train.py", "eval.py", "export_model.py", "infer.py")
SOURCE_HINT = (
    "PaddleClas's tools and training engine are in its source tree, not in the paddleclas wheel: "
    "git clone -b release/2.6 https://github.com/PaddlePaddle/PaddleClas.git and give PaddleClas/tools/train.py"
)


def simam_architecture(build, name: str):
    """The architecture ``SimAM_<name>``: ``build(**kwargs)`` (PaddleClas's ``name``) with SimAM inserted."""
    from .layers import add_simam
    from .layers.simam import E_LAMBDA

    def architecture(e_lambda: float = E_LAMBDA, **kwargs):
        model = build(**kwargs)
        add_simam(model, e_lambda=e_lambda)
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


def register(arch: ModuleType | None = None) -> list[str]:
    """Add ``SimAM_<NAME>`` for every known backbone to PaddleClas's architecture lookup; return the names added.

    ``arch``: a ``ppcls.arch`` module; by default every one that imports (``ppcls.arch`` of a source
    checkout on ``sys.path``, ``paddleclas.ppcls.arch`` of the wheel). Registering again replaces the
    earlier entries with equal ones.
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
            setattr(module, PREFIX + name, simam_architecture(getattr(module, name), name))
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


def _source_tree(tool: Path) -> Path:
    """The PaddleClas checkout that ``tool`` (``ROOT/tools/<tool>.py``) belongs to; FileNotFoundError if none."""
    if not tool.is_file():
        raise FileNotFoundError(f"{tool} does not exist: give a PaddleClas tool, e.g. PaddleClas/tools/train.py. {SOURCE_HINT}")
    root = tool.resolve().parent.parent
    if tool.name not in TOOLS or not (root / "ppcls" / "engine").is_dir():
        raise FileNotFoundError(
            f"{tool} is not one of PaddleClas's tools ({', '.join('tools/' + t for t in TOOLS)} of a source tree "
            f"holding ppcls/engine). {SOURCE_HINT}"
        )
    return root


def _arch_of(root: Path) -> ModuleType:
    """``ppcls.arch`` of the checkout at ``root``, imported from there."""
    import importlib

    sys.path.insert(0, str(root))
    arch = importlib.import_module("ppcls.arch")
    if not Path(arch.__file__).resolve().is_relative_to(root):
        raise ValueError(f"ppcls was already imported from {Path(arch.__file__).parents[1]}, not from {root}")
    return arch


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("paddleclas", "Run a PaddleClas tool (tools/train.py, eval.py, export_model.py, infer.py of a "
                   "PaddleClas source checkout) with the SimAM architectures SimAM_<backbone> registered.")
    p.add_argument("tool", help="the tool's path, e.g. PaddleClas/tools/train.py")
    p.add_argument("tool_args", nargs=argparse.REMAINDER,
                   help="the tool's own arguments, e.g. -c CONFIG -o Arch.name=SimAM_ResNet50_vd")
    args = p.parse_args(argv)

    def run_tool() -> int:
        tool = Path(args.tool)
        arch = _arch_of(_source_tree(tool))
        names = register(arch)
        print(f"simam-paddle: {len(names)} SimAM architectures registered in PaddleClas ({', '.join(names[:3])}, ...)",
              file=sys.stderr)
        sys.argv = [str(tool), *args.tool_args]
        try:
            runpy.run_path(str(tool), run_name="__main__")
        except Exception:  # PaddleClas's own failure: its traceback, and the code of failed work
            traceback.print_exc()
            return cli.EXIT_FAILED
        return cli.EXIT_OK

    return cli.run(run_tool)


if __name__ == "__main__":
    sys.exit(main())
