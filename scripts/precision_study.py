"""Does bfloat16 training (``train.precision=bf16``) reach float32's accuracy? The CPU-scale study twice.

Reads the run directories of two CPU-scale studies (the same runs, models and seeds, one in float32
and one with ``-o train.precision=bf16``; see ``results/cpu_study*/README.md`` for their commands)
and prints, per model and metric (best and final validation accuracy), float32's mean with its
95% Student-t interval over the seeds, bfloat16's mean, and whether bfloat16's mean lies inside
float32's interval, with Welch's interval of the difference beside it.

    python scripts/precision_study.py results/cpu_study/runs results/cpu_study_bf16/runs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simam_paddle.stats import diff_ci, mean, mean_ci  # noqa: E402

METRICS = {"best val acc": lambda h: h["best"]["val_acc"], "final val acc": lambda h: h["epoch"]["val_acc"][-1]}


def histories(runs: Path) -> dict[str, dict[str, dict]]:
    """{model: {seed folder: history}} of a study's ``runs/<model>/seed<seed>/history.json``."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted(runs.glob("*/seed*/history.json")):
        history = json.loads(path.read_text())
        if not history.get("finished"):
            sys.exit(f"{path.parent} did not finish")
        out.setdefault(path.parent.parent.name, {})[path.parent.name] = history
    if not out:
        sys.exit(f"no runs under {runs} (expected {runs}/<model>/seed<seed>/history.json)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fp32_runs", type=Path)
    parser.add_argument("bf16_runs", type=Path)
    args = parser.parse_args()
    fp32, bf16 = histories(args.fp32_runs), histories(args.bf16_runs)
    if {m: sorted(s) for m, s in fp32.items()} != {m: sorted(s) for m, s in bf16.items()}:
        sys.exit("the two studies do not hold the same models and seeds")
    print("| model | metric | float32: mean [95% interval] | bfloat16: mean | inside | bf16 - fp32 [95% Welch] |")
    print("|---|---|---|---|---|---|")
    for model in fp32:
        for metric, get in METRICS.items():
            a = [100 * get(h) for h in fp32[model].values()]
            b = [100 * get(h) for h in bf16[model].values()]
            m, low, high = mean_ci(a)
            d, dlow, dhigh = diff_ci(b, a)
            inside = "yes" if low <= mean(b) <= high else "no"
            print(f"| {model} | {metric} | {m:.2f} [{low:.2f}, {high:.2f}] | {mean(b):.2f} | {inside} | "
                  f"{d:+.2f} [{dlow:+.2f}, {dhigh:+.2f}] |")
    print(f"\nseeds: {', '.join(sorted(next(iter(fp32.values()))))}; accuracies in %")


if __name__ == "__main__":
    main()
