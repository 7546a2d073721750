"""Compare finished runs: the notebook's table over several seeds, with honest statistics.

``python -m simam_paddle.compare RUN_DIR [RUN_DIR ...] [--baseline MODEL] --output results`` groups runs by
model and writes ``results.md``, ``results.json``, ``curves.png`` (validation accuracy and loss, mean and
band over seeds) and each model's prediction grid into ``--output``, and prints every file it wrote.

- Baseline: each model is compared with ``--baseline`` (a ``model.name``) or, by default, a SimAM model
  ``X_simam`` with its plain twin ``X`` where both ran; other models get no difference.
- Accuracies: mean +- sample std over seeds. The difference to the baseline is paired by seed over the
  seeds both models ran (same seed = same initial weights, data order and augmentation, so SimAM is the
  only difference), with a Student-t 95% interval; Welch's interval where they share no seed. A model of
  one seed shows its value without ±, and a difference over one seed has no interval; the notes say why.
- Runs whose recipe differs in anything but the model and the seed (data, epochs, transforms, ...)
  cannot be averaged together: they are flagged and left out of the table.
- Model-only throughput is measured here, side by side: the models are timed interleaved in one
  process (median of rounds after warm-up), so their ratio is fair on a noisy machine. End-to-end
  throughput (test set through the loader) is taken from the runs' histories.
- The time estimate of one full-recipe run (50 epochs of CIFAR-10's 50,000 + 10,000 images) is given only
  for runs on the recipe's data, CIFAR-10 at the recipe's image size (a subset of its images included),
  where these runs' per-image costs are those of the recipe.
"""

from __future__ import annotations

from . import cli  # first: it quiets Paddle's start-up notices before Paddle loads

# isort: split

import argparse
import json
import math
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("compare", __doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="run directories written by simam_paddle.train")
    cli.add_output(p, "results.md, results.json and the figures", "results")
    p.add_argument("--baseline", metavar="MODEL", help="the model (model.name) every other one is compared with "
                   "(default: each SimAM model's plain twin, e.g. mobilenet_v2 for mobilenet_v2_simam, where it ran)")
    cli.add_rounds(p, 10, "the model-only throughput")
    p.add_argument("--no-throughput", action="store_true", help="skip the model-only throughput measurement")
    return p.parse_args(argv)


cli.answer_early(__name__, parse_args)  # --help, --version: answered before the imports below load Paddle

# isort: split

import numpy as np

from .config import ConfigError, recipe_key
from .errors import ArgumentError, PathError
from .evaluate import model_throughput
from .io import atomic_savefig, atomic_write_json, atomic_write_text
from .run_dir import load_run_model, read_config, read_history
from .stats import diff_ci, mean, mean_ci, std

SIMAM = "_simam"  # a SimAM model's name is its plain twin's with this suffix
# The full recipe, for the time estimate: 50 epochs of 50,000 training and 10,000 test images.
FULL_EPOCHS, FULL_TRAIN, FULL_TEST = 50, 50_000, 10_000


def load_run(run_dir: Path) -> dict:
    config = read_config(run_dir)
    history = read_history(run_dir)
    if history is None:
        raise PathError(f"{run_dir} has no history: it has not completed an epoch")
    return {"dir": str(run_dir), "config": config, "history": history}


def _describe_difference(a: dict, b: dict) -> str:
    diffs = [f"{s}.{k}: {a[s].get(k)!r} vs {b[s].get(k)!r}" for s in b for k in b[s] if a[s].get(k) != b[s].get(k)]
    return "; ".join(diffs)


def select_comparable(runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Split runs into the comparable set (the largest group sharing one recipe, finished, one per
    model and seed) and the flagged ones, each flagged run with its ``reason``."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(json.dumps(recipe_key(run["config"]), sort_keys=True), []).append(run)
    main_key = max(groups, key=lambda k: len(groups[k]))
    reference = json.loads(main_key)
    kept, flagged, seen = [], [], set()
    for run in runs:
        key = json.dumps(recipe_key(run["config"]), sort_keys=True)
        ident = (run["config"]["model"]["name"], run["config"]["train"]["seed"])
        if key != main_key:
            run["reason"] = "different recipe: " + _describe_difference(reference, recipe_key(run["config"]))
        elif not run["history"].get("finished"):
            run["reason"] = f"unfinished: {len(run['history']['epoch']['epoch'])} of {run['config']['train']['epochs']} epochs"
        elif ident in seen:
            run["reason"] = f"duplicate of model {ident[0]} seed {ident[1]}"
        else:
            seen.add(ident)
            kept.append(run)
            continue
        flagged.append(run)
    return kept, flagged


def baselines(names: list[str], baseline: str | None = None) -> dict[str, str]:
    """Each compared model's baseline, by name: ``baseline`` for every other model when given (it must be
    one of ``names``), else each ``X_simam``'s plain twin ``X`` where both ran."""
    if baseline is not None:
        if baseline not in names:
            raise ArgumentError(f"--baseline {baseline}: no comparable run of that model; the models are "
                                f"{', '.join(names)}")
        return {name: baseline for name in names if name != baseline}
    return {name: name.removesuffix(SIMAM) for name in names
            if name.endswith(SIMAM) and name.removesuffix(SIMAM) in names}


def on_recipe_data(run: dict) -> bool:
    """Whether ``run`` trained on the recipe's data: CIFAR-10's ten classes (a subset of its images allowed)
    at the recipe's image size, where the full-recipe time estimate applies."""
    from .data import CLASS_NAMES
    from .data.transforms import SIZE
    from .errors import BadInput
    from .run_dir import run_classes

    try:
        classes = run_classes(run["dir"], run["config"])
    except (BadInput, FileNotFoundError):
        return False
    return classes == CLASS_NAMES and run["config"]["data"]["image_size"] == SIZE


def _delta(a: dict, b: dict, metric: str) -> dict:
    """``a`` minus its baseline ``b`` on ``metric``: paired over the seeds both ran, else Welch's interval;
    no interval (None) where it cannot be computed, with the reason in ``method``."""
    common = [seed for seed in a["seeds"] if seed in b["seeds"]]
    if common:
        value = {name: dict(zip(row["seeds"], row[metric]["values"])) for name, row in (("a", a), ("b", b))}
        d, lo, hi = mean_ci([value["a"][seed] - value["b"][seed] for seed in common])
        method = (f"paired by seed over {len(common)} seeds, t interval" if len(common) > 1 else
                  "paired by seed over 1 seed; no interval: a t interval needs at least two seeds")
    else:
        d, lo, hi = diff_ci(a[metric]["values"], b[metric]["values"])
        method = ("unpaired (no seed in common), Welch t interval" if not math.isnan(lo) else
                  "unpaired (no seed in common); no interval: Welch's needs at least two seeds of each model")
    return {"mean": d, "ci95": None if math.isnan(lo) else [lo, hi], "method": method, "seeds": common}


def summarise(runs: list[dict], throughput: dict[str, float] | None = None, baseline: str | None = None) -> dict:
    """Per-model statistics of comparable runs (see the module docstring); ``baseline`` as in ``baselines``."""
    by_model: dict[str, list[dict]] = {}
    for run in sorted(runs, key=lambda r: r["config"]["train"]["seed"]):
        by_model.setdefault(run["config"]["model"]["name"], []).append(run)
    metrics = {
        "train_acc": lambda h: h["epoch"]["train_acc"][-1],
        "best_val_acc": lambda h: h["best"]["val_acc"],
        "final_val_acc": lambda h: h["epoch"]["val_acc"][-1],
    }
    estimate = bool(runs) and on_recipe_data(runs[0])  # comparable runs share one recipe, data included
    models = {}
    for name, group in by_model.items():
        hist = [r["history"] for r in group]
        row = {"seeds": [r["config"]["train"]["seed"] for r in group], "params": hist[0]["params"],
               "runs": [r["dir"] for r in group]}
        for metric, get in metrics.items():
            values = [get(h) for h in hist]
            row[metric] = {"values": values, "mean": mean(values), "std": std(values)}
        e2e = [h["throughput"]["end_to_end_ips"] for h in hist if "end_to_end_ips" in h.get("throughput", {})]
        row["end_to_end_ips"] = mean(e2e) if e2e else None
        row["model_only_ips"] = (throughput or {}).get(name)
        row["train_seconds"] = mean([sum(h["epoch"]["epoch_time"]) for h in hist])
        if estimate:
            train_ips = float(np.median([v for h in hist for v in h["epoch"]["train_ips"]]))
            val_ips = float(np.median([v for h in hist for v in h["epoch"]["val_ips"]]))
            # an estimate from the measured per-image costs of these runs, not a measurement
            row["full_recipe_hours_estimate"] = FULL_EPOCHS * (FULL_TRAIN / train_ips + FULL_TEST / val_ips) / 3600
        models[name] = row
    for name, base_name in baselines(list(models), baseline).items():
        row, base = models[name], models[base_name]
        row["baseline"] = base_name
        for metric in ("best_val_acc", "final_val_acc"):
            row[f"delta_{metric}"] = _delta(row, base, metric)
        if row["model_only_ips"] and base["model_only_ips"]:
            row["simam_overhead_pct"] = 100 * (base["model_only_ips"] / row["model_only_ips"] - 1)
    return models


def _pm(row: dict, metric: str, scale: float = 100) -> str:
    stat = row[metric]
    value = f"{stat['mean'] * scale:.2f}"
    return value if len(row["seeds"]) == 1 else f"{value} ± {stat['std'] * scale:.2f}"


def _delta_cell(row: dict, metric: str) -> str:
    d = row.get(f"delta_{metric}")
    if d is None:
        return "—"
    ci = "" if d["ci95"] is None else f" [{d['ci95'][0] * 100:+.2f}, {d['ci95'][1] * 100:+.2f}]"
    return f"{d['mean'] * 100:+.2f}{ci}"


def markdown_table(models: dict) -> str:
    ci = ", 95% CI" if any((row.get(f"delta_{m}") or {}).get("ci95") for row in models.values()
                           for m in ("best_val_acc", "final_val_acc")) else ""
    head = (f"| model | seeds | params | train acc (%) | best val acc (%) | final val acc (%) | Δ best val (pts{ci}) "
            f"| Δ final val (pts{ci}) | model-only img/s | end-to-end img/s | SimAM overhead |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, row in models.items():
        ips = f"{row['model_only_ips']:.1f}" if row["model_only_ips"] else "—"
        e2e = f"{row['end_to_end_ips']:.1f}" if row["end_to_end_ips"] else "—"
        overhead = f"{row['simam_overhead_pct']:+.1f}%" if "simam_overhead_pct" in row else "—"
        lines.append(f"| {name} | {len(row['seeds'])} | {row['params']:,} | {_pm(row, 'train_acc')} | "
                     f"{_pm(row, 'best_val_acc')} | {_pm(row, 'final_val_acc')} | {_delta_cell(row, 'best_val_acc')} | "
                     f"{_delta_cell(row, 'final_val_acc')} | {ips} | {e2e} | {overhead} |")
    return "\n".join(lines) + "\n"


def notes(models: dict, throughput_method: str, env: dict, baseline: str | None) -> str:
    """The text under the table: how to read each column, for these runs."""
    counts = {len(row["seeds"]) for row in models.values()}
    if counts == {1}:
        accuracies = ("Accuracies in %, one seed per model: no ± and no interval (a standard deviation and a t "
                      "interval need at least two seeds).")
    elif 1 in counts:
        accuracies = ("Accuracies: mean ± sample std over seeds, in %; a model of one seed shows its value alone "
                      "(a standard deviation needs at least two seeds).")
    else:
        accuracies = "Accuracies: mean ± sample std over seeds, in %."
    pairs = [f"{name} − {row['baseline']} ({row['delta_final_val_acc']['method']})"
             for name, row in models.items() if "baseline" in row]
    if pairs:
        delta = "Δ: each model minus its baseline, in points: " + "; ".join(pairs) + "."
    elif baseline is None:
        delta = "Δ: none: no model's plain twin (the name without _simam) is among the runs; --baseline NAME chooses one."
    else:
        delta = f"Δ: none: {baseline} is the only model."
    overhead = ("SimAM overhead: how much longer a model's model-only forward pass takes than its baseline's. "
                if any("simam_overhead_pct" in row for row in models.values()) else "")
    return (f"\n{accuracies} {delta} {overhead}Throughput: {throughput_method}; end-to-end: the test set through "
            f"the data loader, median over epochs, mean over seeds. Machine: {env.get('cpu_count')} CPU cores "
            f"({env.get('machine')}), {env.get('device')}, Paddle {env.get('paddle')}, Python {env.get('python')}.\n")


# One look per model, so that a model whose curve equals another's stays visible: the later ones are
# drawn thinner and dashed or dotted, on top, with their own marker.
LINE_STYLES = [("-", "o", 4.0, 10), ("--", "s", 1.8, 6), (":", "^", 1.8, 6), ("-.", "D", 1.2, 4)]


def plot_curves_over_seeds(runs: list[dict], path: Path) -> None:
    """Validation accuracy and loss per epoch of each model: the mean over its seeds with a band of ± one
    sample std where it has two or more, its one run's curve where it has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    by_model: dict[str, list[dict]] = {}
    for run in runs:
        by_model.setdefault(run["config"]["model"]["name"], []).append(run["history"]["epoch"])
    for k, (name, epochs) in enumerate(by_model.items()):
        x = epochs[0]["epoch"]
        line, marker, width, size = LINE_STYLES[k % len(LINE_STYLES)]
        label = f"{name} (1 seed)" if len(epochs) == 1 else f"{name} (mean of {len(epochs)} seeds, band ± std)"
        for ax, key in zip(axes, ("val_acc", "val_loss")):
            values = np.array([e[key] for e in epochs])
            m = values.mean(axis=0)
            drawn = ax.plot(x, m, linestyle=line, marker=marker, lw=width, ms=size, mfc="none", label=label,
                            zorder=2 + k)
            if len(values) > 1:
                s = values.std(axis=0, ddof=1)
                ax.fill_between(x, m - s, m + s, alpha=0.15, color=drawn[0].get_color())
    several = any(len(epochs) > 1 for epochs in by_model.values())
    for ax, label in zip(axes, ("validation accuracy", "validation loss")):
        ax.set(xlabel="epoch", ylabel=label, title=f"{label}, mean ± std over seeds" if several else label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def plot_prediction_grid(model, run: dict, path: Path) -> str | None:
    """``model`` (the run's best) on 18 evenly spaced test images; returns why not when it cannot be drawn."""
    import paddle

    from .data import build_loader, evenly_spaced_images
    from .plots import plot_predictions
    from .run_dir import run_classes

    config = run["config"]
    config = {**config, "data": {**config["data"], "num_workers": 0, "download": False}}
    try:
        val_loader = build_loader(config, "val")
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        return str(exc)
    images, truth = evenly_spaced_images(val_loader, 18)
    with paddle.no_grad():
        predicted = model(paddle.to_tensor(images)).argmax(axis=1).tolist()
    plot_predictions(images, predicted, truth, run_classes(run["dir"], config), path)
    return None


def compare(run_dirs: list[Path], out: Path, measure_throughput: bool = True, rounds: int = 10,
            baseline: str | None = None) -> dict:
    """Compare the runs in ``run_dirs`` into ``out`` (see the module docstring); ``baseline``: the model every
    other one is compared with (default: each SimAM model's plain twin). The result's ``written`` lists the
    files written."""
    runs = [load_run(Path(d)) for d in run_dirs]
    kept, flagged = select_comparable(runs)
    baselines(sorted({r["config"]["model"]["name"] for r in kept}), baseline)  # a wrong --baseline stops here
    first: dict[str, dict] = {}  # each model's run of the lowest seed: timed, and drawn in the prediction grid
    for run in sorted(kept, key=lambda r: r["config"]["train"]["seed"]):
        first.setdefault(run["config"]["model"]["name"], run)
    loaded = {}  # each loaded once, for the throughput and the prediction grid
    for name, run in first.items():
        try:
            loaded[name] = load_run_model(run["dir"])[0]
        except FileNotFoundError as exc:
            if measure_throughput:
                raise
            print(f"note: no prediction grid for {name}: {exc}", file=sys.stderr)
    throughput = None
    if measure_throughput and loaded:
        throughput = model_throughput(loaded, kept[0]["config"]["data"]["batch_size"], rounds,
                                      input_size=kept[0]["config"]["data"]["image_size"])
    models = summarise(kept, throughput, baseline)
    out.mkdir(parents=True, exist_ok=True)
    env = kept[0]["history"]["environment"] if kept else {}
    result = {
        "models": models,
        "recipe": recipe_key(kept[0]["config"]) if kept else None,
        "flagged": [{"dir": r["dir"], "reason": r["reason"]} for r in flagged],
        "environment": env,
        "throughput_method": (f"model-only: eval forward of a [{kept[0]['config']['data']['batch_size']}, 3, "
                              f"{kept[0]['config']['data']['image_size']}, {kept[0]['config']['data']['image_size']}] "
                              f"batch, models interleaved in one process, median of {rounds} after 2 warm-up"
                              if throughput else "not measured"),
    }
    atomic_write_json(out / "results.json", result)
    text = markdown_table(models)
    if flagged:
        text += "\nFlagged, not averaged:\n" + "".join(f"- {r['dir']}: {r['reason']}\n" for r in flagged)
    text += notes(models, result["throughput_method"], env, baseline)
    if any("full_recipe_hours_estimate" in row for row in models.values()):
        text += ("\nEstimated time of one full-recipe run (50 epochs x 50,000 + 10,000 images) on this machine, from "
                 "the median train and test images/s of these runs' epochs: "
                 + ", ".join(f"{name} {row['full_recipe_hours_estimate']:.1f} h" for name, row in models.items()) + ".\n")
    atomic_write_text(out / "results.md", text)
    written = [out / "results.md", out / "results.json"]
    if kept:
        plot_curves_over_seeds(kept, out / "curves.png")
        written.append(out / "curves.png")
        for name, model in loaded.items():
            problem = plot_prediction_grid(model, first[name], out / f"predictions_{name}.png")
            if problem:
                print(f"note: no prediction grid for {name}: {problem}", file=sys.stderr)
            else:
                written.append(out / f"predictions_{name}.png")
    return result | {"markdown": text, "written": written}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> None:
        result = compare(args.paths, args.output or Path("results"), not args.no_throughput, args.rounds,
                         args.baseline)
        print(result["markdown"])
        print(f"written: {', '.join(str(path) for path in result['written'])}")

    return cli.run(work)


if __name__ == "__main__":
    sys.exit(main())
