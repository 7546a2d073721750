"""How long README's Quick start takes here: the demo (``python -m simam_paddle.reproduce --demo``, on the
CIFAR-10 copy under $SIMAM_DATA_DIR instead of a download: once with an empty kernel cache, as on a fresh
machine, once with the kernels built) and the tests (``python -m pytest``, ``python -m pytest -m slow``), each
timed from start to end, with the machine's load before and after and the last line the command printed.

    python scripts/time_quick_start.py [--output results/quick_start/run_1.txt] [--only demo|default|slow]

Run it with nothing else running (README's figures come from its raw output in results/quick_start/).
The demo runs in a temporary folder; the test commands run from the repository.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from simam_paddle.timing import wait_for_quiet  # noqa: E402

DATA = Path(os.environ.get("SIMAM_DATA_DIR") or REPO.parent / "shared" / "data") / "cifar10-jpeg"
DEMO = [sys.executable, "-m", "simam_paddle.reproduce", "--demo", "-o", f"data.root={DATA}"]
COMMANDS = {"demo, empty kernel cache": DEMO, "demo": DEMO,
            "default": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=40"],
            "slow": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow", "--durations=40"]}
DURATION = re.compile(r"^\d+\.\d+s (call|setup|teardown) ")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", type=Path, help="file for the raw output (default: print only)")
    p.add_argument("--quiet-wait", type=float, default=120.0, help="seconds to wait for a 1-minute load <= 1.0 first")
    p.add_argument("--only", choices=("demo", "default", "slow"), help="time only this one (demo: both demo runs)")
    args = p.parse_args(argv)
    lines = [f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
             f"Python {platform.python_version()}", f"started {time.strftime('%Y-%m-%d %H:%M:%S')}"]

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    for line in lines:
        print(line)
    for name, cmd in COMMANDS.items():
        if args.only and not name.startswith(args.only):
            continue
        with tempfile.TemporaryDirectory() as folder:
            env = dict(os.environ)
            if name.startswith("demo"):
                cwd = Path(folder)
                if "empty" in name:
                    env["SIMAM_PADDLE_CACHE_DIR"] = str(cwd / "kernel_cache")
            else:
                cwd = REPO
            waited = wait_for_quiet(args.quiet_wait)
            before = load()
            start = time.monotonic()
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
            wall = time.monotonic() - start
        out = proc.stdout.strip().splitlines() or ["(no output)"]
        say(f"{name}: {wall:.1f} s ({wall / 60:.1f} min), exit {proc.returncode}; load before {before} "
            f"(waited {waited:.0f} s for it), after {load()}; `{' '.join(cmd[1:])}`; last line: {out[-1]}")
        for line in out:  # pytest's slowest tests and failures, where it printed them
            if line.startswith("FAILED") or (DURATION.match(line) and float(line.split("s", 1)[0]) >= 3):
                say(f"    {line}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
