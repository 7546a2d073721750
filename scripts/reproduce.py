"""Train AlexNet and AlexNet-SimAM for several seeds, then rebuild the comparison table.

    python scripts/reproduce.py --seeds 42 43 44 [-o section.key=value ...] [--runs runs/repro] [--out results/repro]

Each (model, seed) run goes to RUNS/<model>/seed<seed>. A finished run is skipped, an interrupted one
is resumed, so the command can be re-run after a crash and only the missing work is done. Runs are
ordered seed by seed (both models per seed) so that a partial study is still balanced. Overrides pass
through to every run (the CPU-scale study of README.md is a set of overrides). At the end
``simam_paddle.compare`` writes the table and figures into ``--out``, with ``study.json`` recording the
command, overrides and wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from simam_paddle.compare import compare
from simam_paddle.config import ConfigError, load_config
from simam_paddle.io import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "configs" / "alexnet.yaml", REPO / "configs" / "alexnet_simam.yaml"]


def run_state(run_dir: Path) -> str:
    history = run_dir / "history.json"
    if history.is_file() and json.loads(history.read_text()).get("finished"):
        return "finished"
    return "resume" if (run_dir / "checkpoint.pdckpt").is_file() else "new"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="seeds (default 42 43 44)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="section.key=value",
                        help="config override passed to every run (repeatable)")
    parser.add_argument("--runs", type=Path, default=Path("runs/repro"), help="folder of the run directories")
    parser.add_argument("--out", type=Path, default=Path("results/repro"), help="folder of the comparison")
    args = parser.parse_args(argv)

    plan = []  # (config, seed, run_dir, overrides), all validated before any run starts
    for seed in args.seeds:
        for config in CONFIGS:
            run_dir = args.runs / config.stem / f"seed{seed}"
            overrides = args.override + [f"train.seed={seed}", f"train.output_dir={run_dir}"]
            try:
                load_config(config, overrides)
            except ConfigError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            plan.append((config, seed, run_dir, overrides))

    start = time.time()
    for config, seed, run_dir, overrides in plan:
        name, state = config.stem, run_state(run_dir)
        if state == "finished":
            print(f"== {name} seed {seed}: finished, skipped", flush=True)
            continue
        print(f"== {name} seed {seed}: {'resuming' if state == 'resume' else 'training'} in {run_dir}", flush=True)
        cmd = [sys.executable, "-m", "simam_paddle.train", "--config", str(config)]
        cmd += [arg for o in overrides for arg in ("-o", o)] + (["--resume"] if state == "resume" else [])
        code = subprocess.call(cmd)
        if code != 0:
            print(f"error: {name} seed {seed} failed with exit code {code}; fix it and re-run this command "
                  "(finished runs are kept)", file=sys.stderr)
            return code
    wall = time.time() - start
    compare([run_dir for _, _, run_dir, _ in plan], args.out)
    atomic_write_json(args.out / "study.json", {
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "seeds": args.seeds, "overrides": args.override, "wall_seconds_this_invocation": round(wall, 1),
        "host": platform.node(), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    print((args.out / "results.md").read_text())
    print(f"wall time {wall / 60:.1f} min; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
