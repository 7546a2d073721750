"""Seconds from start to exit of every tool's ``--help``, ``simam-train --list-models`` and ``--version``,
as a user starts them: ``python -m simam_paddle.<tool>`` and the console script's path
(``simam_paddle.console``, which the installed ``simam-<tool>`` runs).

Each candidate is one fresh process (interpreter start-up included), timed round-robin with a rotating
order by ``simam_paddle.timing.measure``: the median over ``--rounds`` rounds after one warm-up round,
with the load average before and after. A measurement that starts on a busy machine (1-minute load above
1.0 on 2 cores) says so and is no headline figure.

    python scripts/benchmark_startup.py [--rounds 5] [--output results/benchmark_startup]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from functools import partial
from pathlib import Path

from simam_paddle.console import TOOLS
from simam_paddle.timing import measure

REPO = Path(__file__).resolve().parents[1]


def commands() -> dict[str, list[str]]:
    """What is timed, by name: the arguments after ``python``."""
    runs = {}
    for tool in TOOLS:
        runs[f"python -m simam_paddle.{tool} --help"] = ["-m", f"simam_paddle.{tool}", "--help"]
        runs[f"simam-{tool} --help"] = ["-c", f"import sys; sys.argv[0] = 'simam-{tool}'; "
                                              f"from simam_paddle.console import {tool}; {tool}()", "--help"]
    runs["simam-train --list-models"] = runs["simam-train --help"][:2] + ["--list-models"]
    runs["simam-train --version"] = runs["simam-train --help"][:2] + ["--version"]
    return runs


def start(args: list[str]) -> None:
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, cwd=REPO)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (default: 5)")
    p.add_argument("--output", type=Path, default=None, help="folder to write startup.json and startup.txt into")
    args = p.parse_args()
    runs = commands()
    result = measure({name: partial(start, cmd) for name, cmd in runs.items()}, args.rounds, 1)
    width = max(map(len, runs))
    lines = [f"start-up to exit, median of {args.rounds} rounds after 1 warm-up; {result.conditions()}",
             f"machine: {platform.machine()}, Python {platform.python_version()}"]
    lines += [f"{name:<{width}}  {seconds:6.3f} s" for name, seconds in result.seconds.items()]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "startup.json").write_text(json.dumps(result.as_dict(), indent=1) + "\n")
        (args.output / "startup.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
