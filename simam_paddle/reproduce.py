"""Train AlexNet and AlexNet-SimAM for several seeds, then rebuild the comparison table.

    python -m simam_paddle.reproduce --seeds 42 43 44 [-o section.key=value ...] [--runs runs/repro] [--output results/repro]

Each (model, seed) run goes to RUNS/<model>/seed<seed>. A finished run is skipped, an interrupted one
is resumed, so the command can be re-run after a crash and only the missing work is done. Runs are
ordered seed by seed (both models per seed) so that a partial study is still balanced. Overrides pass
through to every run (the CPU-scale study of README.md is a set of overrides). At the end
``simam_paddle.compare`` writes the table and figures into ``--output``, with ``study.json`` recording
the command, overrides and wall time. The runs train the shipped configs ``alexnet`` and
``alexnet_simam``.

    python -m simam_paddle.reproduce --demo

is the same on a slice of CIFAR-10 (``DEMO_OVERRIDES``, seed 42) into runs/demo and results/demo: a few
minutes on 2 CPU cores, to see the whole path work, not to measure SimAM.
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

# --demo: the same study on a slice of CIFAR-10, a few minutes on 2 CPU cores (README's Quick start)
DEMO_SEEDS = [42]
DEMO_OVERRIDES = ["data.limit_train=3000", "data.limit_val=1000", "train.epochs=2", "data.train_transforms=fast"]
DEMO_RUNS, DEMO_OUTPUT = Path("runs/demo"), Path("results/demo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("reproduce", __doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default 42 43 44; --demo: 42)")
    cli.add_overrides(p, "a config value of every run")
    p.add_argument("--runs", type=Path, help="folder of the run directories (default runs/repro; --demo: runs/demo)")
    p.add_argument("--output", type=Path, help="folder of the comparison (default results/repro; --demo: results/demo)")
    p.add_argument("--demo", action="store_true",
                   help=f"a short study on a slice of CIFAR-10: seed 42, {' '.join(DEMO_OVERRIDES)} (before any -o)")
    args = p.parse_args(argv)
    if args.demo:
        args.override = DEMO_OVERRIDES + args.override
    args.seeds = args.seeds or (DEMO_SEEDS if args.demo else [42, 43, 44])
    args.runs = args.runs or (DEMO_RUNS if args.demo else Path("runs/repro"))
    args.output = args.output or (DEMO_OUTPUT if args.demo else Path("results/repro"))
    return args


cli.answer_early(__name__, parse_args)  # --help, --version: answered before the imports below load Paddle

# isort: split

from .compare import compare
from .config import load_config
from .io import atomic_write_json
from .run_dir import run_state

MODELS = ("alexnet", "alexnet_simam")  # shipped configs, trained for every seed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run(lambda: reproduce(args, argv))


def check_run(config: dict, checked_data: list[dict]) -> None:
    """What a run would refuse at its start, checked before any run starts: the machine (train.amp, bf16,
    VisualDL), the data (readable, its classes, a full batch of data.batch_size in either split). A data
    section in ``checked_data`` (those checked so far) is not read again."""
    from .run_dir import resolve_classes
    from .train import build_loaders, check_environment

    check_environment(config)
    if config["data"] not in checked_data:
        resolve_classes(config)
        build_loaders(config)
        checked_data.append(config["data"])


def reproduce(args, argv: list[str] | None) -> int:
    configs = cli.shipped_configs()
    plan, checked_data = [], []  # (config, seed, run_dir, overrides), all checked before any run starts
    for seed in args.seeds:
        for name in MODELS:
            run_dir = args.runs / name / f"seed{seed}"
            overrides = args.override + [f"train.seed={seed}", f"train.output_dir={run_dir}"]
            check_run(load_config(configs[name], overrides), checked_data)
            plan.append((configs[name], seed, run_dir, overrides))

    start = time.time()
    for config, seed, run_dir, overrides in plan:
        name, state = config.stem, run_state(run_dir)
        if state == "finished":
            print(f"== {name} seed {seed}: finished, skipped", flush=True)
            continue
        print(f"== {name} seed {seed}: {'resuming' if state == 'resumable' else 'training'} in {run_dir}", flush=True)
        cmd = [sys.executable, "-m", "simam_paddle.train", "--config", str(config)]
        cmd += [arg for o in overrides for arg in ("-o", o)] + (["--resume"] if state == "resumable" else [])
        code = subprocess.call(cmd)
        if code != 0:
            print(f"error: {name} seed {seed} failed with exit code {code}; fix it and re-run this command "
                  "(finished runs are kept)", file=sys.stderr)
            return cli.EXIT_FAILED
    wall = time.time() - start
    compare([run_dir for _, _, run_dir, _ in plan], args.output)
    atomic_write_json(args.output / "study.json", {
        "command": " ".join([cli.command("reproduce")] + (argv if argv is not None else sys.argv[1:])),
        "seeds": args.seeds, "overrides": args.override, "wall_seconds_this_invocation": round(wall, 1),
        "host": platform.node(), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    print((args.output / "results.md").read_text())
    figures = ", ".join(sorted(p.name for p in args.output.iterdir() if p.suffix in (".md", ".png", ".json")))
    print(f"wall time {wall / 60:.1f} min; the comparison in {args.output}/ ({figures}); "
          f"each run's log, history and figures in {args.runs}/<model>/seed<seed>/")
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
