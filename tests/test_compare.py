"""The comparison table from tiny synthetic run directories with known numbers."""

from __future__ import annotations

import json
import math

import paddle
import pytest

from simam_paddle.compare import compare, main
from simam_paddle.config import load_config, save_config
from simam_paddle.models import build_model

# (model, seed) -> (final train acc, best val acc, final val acc)
RUNS = {
    ("alexnet", 1): (0.50, 0.60, 0.58),
    ("alexnet", 2): (0.52, 0.62, 0.60),
    ("alexnet", 3): (0.54, 0.64, 0.62),
    ("alexnet_simam", 1): (0.51, 0.61, 0.60),
    ("alexnet_simam", 2): (0.53, 0.64, 0.61),
    ("alexnet_simam", 3): (0.55, 0.65, 0.65),
}


def make_run(root, model, seed, accs, overrides=(), finished=True, weights=False):
    run = root / f"{model}_s{seed}_{len(overrides)}"
    config = load_config(None, [f"model.name={model}", f"train.seed={seed}", "train.epochs=2", "data.batch_size=4",
                                *overrides])
    run.mkdir(parents=True)
    save_config(config, run / "config.yaml")
    train_acc, best, final = accs
    history = {
        "model": model, "params": 7_524_042, "steps_per_epoch": 5, "finished": finished,
        "environment": {"cpu_count": 2, "machine": "x86_64", "device": "cpu", "paddle": "3.3.1", "python": "3.11"},
        "iter_loss": {"iter": [0, 5], "loss": [2.3, 2.0]},
        "epoch": {"epoch": [1, 2], "train_acc": [0.3, train_acc], "val_acc": [best, final], "val_loss": [1.5, 1.4],
                  "epoch_time": [10.0, 12.0], "val_ips": [100.0, 100.0], "train_ips": [50.0, 50.0]},
        "best": {"epoch": 1, "val_acc": best},
        "throughput": {"end_to_end_ips": 100.0 + seed},
    }
    (run / "history.json").write_text(json.dumps(history))
    if weights:
        paddle.save(build_model(model).state_dict(), str(run / "best_model.pdparams"))
    return run


@pytest.fixture
def runs(tmp_path):
    return [make_run(tmp_path, m, s, a) for (m, s), a in RUNS.items()]


def test_table_statistics_by_hand(runs, tmp_path):
    result = compare(runs, tmp_path / "out", measure_throughput=False)
    base, sim = result["models"]["alexnet"], result["models"]["alexnet_simam"]
    assert base["seeds"] == [1, 2, 3] and sim["seeds"] == [1, 2, 3]
    assert base["best_val_acc"]["mean"] == pytest.approx(0.62)
    assert base["best_val_acc"]["std"] == pytest.approx(0.02)
    assert sim["final_val_acc"]["mean"] == pytest.approx(0.62)
    # paired final-val differences 0.02, 0.01, 0.03: mean 0.02, std 0.01, half-width t(0.975, 2) * 0.01 / sqrt(3)
    delta = sim["delta_final_val_acc"]
    assert delta["mean"] == pytest.approx(0.02)
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert delta["ci95"] == pytest.approx([0.02 - half, 0.02 + half], rel=1e-5)
    assert delta["method"].startswith("paired")
    assert base["end_to_end_ips"] == pytest.approx(102.0)
    # 50 epochs x (50,000 / 50 + 10,000 / 100) s = 55,000 s
    assert base["full_recipe_hours_estimate"] == pytest.approx(55_000 / 3600)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| alexnet_simam | 3 | 7,524,042 | 53.00 ± 2.00 | 63.33 ± 2.08 | 62.00 ± 2.65 | +1.33" in md
    assert json.loads((tmp_path / "out" / "results.json").read_text())["flagged"] == []
    assert (tmp_path / "out" / "curves.png").stat().st_size > 10_000


def test_unpaired_seeds_use_welch(tmp_path):
    runs = [make_run(tmp_path, "alexnet", s, RUNS[("alexnet", s)]) for s in (1, 2, 3)]
    runs += [make_run(tmp_path, "alexnet_simam", s, RUNS[("alexnet_simam", s - 3)]) for s in (4, 5, 6)]
    delta = compare(runs, tmp_path / "out", measure_throughput=False)["models"]["alexnet_simam"]["delta_final_val_acc"]
    assert delta["method"].startswith("unpaired")
    assert delta["mean"] == pytest.approx(0.02)


def test_incompatible_unfinished_and_duplicate_runs_are_flagged(runs, tmp_path):
    odd = make_run(tmp_path, "alexnet_simam", 4, (0.9, 0.9, 0.9), overrides=["data.limit_train=100"])
    unfinished = make_run(tmp_path, "alexnet", 5, (0.9, 0.9, 0.9), finished=False)
    dup = make_run(tmp_path / "again", "alexnet", 1, (0.9, 0.9, 0.9))
    result = compare(runs + [odd, unfinished, dup], tmp_path / "out", measure_throughput=False)
    reasons = {f["dir"]: f["reason"] for f in result["flagged"]}
    assert "data.limit_train: None vs 100" in reasons[str(odd)]
    assert reasons[str(unfinished)].startswith("unfinished")
    assert reasons[str(dup)].startswith("duplicate")
    # the flagged runs did not move the averages
    assert result["models"]["alexnet"]["best_val_acc"]["mean"] == pytest.approx(0.62)
    assert "Flagged, not averaged" in (tmp_path / "out" / "results.md").read_text()


def test_throughput_is_measured_side_by_side(tmp_path):
    runs = [make_run(tmp_path, m, 1, RUNS[(m, 1)], weights=True) for m in ("alexnet", "alexnet_simam")]
    models = compare(runs, tmp_path / "out", rounds=2)["models"]
    assert models["alexnet"]["model_only_ips"] > 0 and models["alexnet_simam"]["model_only_ips"] > 0
    expected = 100 * (models["alexnet"]["model_only_ips"] / models["alexnet_simam"]["model_only_ips"] - 1)
    assert models["alexnet_simam"]["simam_overhead_pct"] == pytest.approx(expected)


def test_cli_errors_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main([str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_prediction_grids_are_drawn_from_each_models_first_run(tmp_path):
    from helpers import write_learnable_image_folder

    root = write_learnable_image_folder(tmp_path / "data", train_per_class=2, test_per_class=2)
    runs = [make_run(tmp_path, m, 1, RUNS[(m, 1)], overrides=[f"data.root={root}"], weights=True)
            for m in ("alexnet", "alexnet_simam")]
    compare(runs, tmp_path / "out", measure_throughput=False)
    for model in ("alexnet", "alexnet_simam"):
        png = tmp_path / "out" / f"predictions_{model}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000


def test_the_plain_twin_is_the_default_baseline_of_any_pair(tmp_path):
    accs = {("mobilenet_v2", 1): (0.5, 0.6, 0.58), ("mobilenet_v2", 2): (0.5, 0.62, 0.60),
            ("mobilenet_v2_simam", 1): (0.5, 0.61, 0.61), ("mobilenet_v2_simam", 2): (0.5, 0.64, 0.64)}
    runs = [make_run(tmp_path, m, s, a) for (m, s), a in accs.items()]
    models = compare(runs, tmp_path / "out", measure_throughput=False)["models"]
    assert "delta_final_val_acc" not in models["mobilenet_v2"]
    delta = models["mobilenet_v2_simam"]["delta_final_val_acc"]
    assert models["mobilenet_v2_simam"]["baseline"] == "mobilenet_v2"
    assert delta["mean"] == pytest.approx((0.03 + 0.04) / 2) and delta["seeds"] == [1, 2]
    # differences 0.03, 0.04: std 0.00707, half-width t(0.975, 1) * std / sqrt(2)
    half = 12.706205 * (0.01 / math.sqrt(2)) / math.sqrt(2)
    assert delta["ci95"] == pytest.approx([0.035 - half, 0.035 + half], rel=1e-5)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "mobilenet_v2_simam − mobilenet_v2 (paired by seed over 2 seeds, t interval)" in md


def test_baseline_by_name_and_an_unknown_one(tmp_path, capsys):
    runs = [make_run(tmp_path, m, 1, RUNS[(m, 1)]) for m in ("alexnet", "alexnet_simam")]
    runs.append(make_run(tmp_path, "resnet18_simam", 1, (0.4, 0.5, 0.5)))
    models = compare(runs, tmp_path / "out", measure_throughput=False, baseline="alexnet_simam")["models"]
    assert models["alexnet"]["baseline"] == models["resnet18_simam"]["baseline"] == "alexnet_simam"
    assert models["resnet18_simam"]["delta_final_val_acc"]["mean"] == pytest.approx(0.5 - 0.60)
    assert "baseline" not in models["alexnet_simam"]
    # by default: alexnet_simam against alexnet; resnet18_simam has no twin here, so no difference
    models = compare(runs, tmp_path / "out", measure_throughput=False)["models"]
    assert models["alexnet_simam"]["baseline"] == "alexnet" and "baseline" not in models["resnet18_simam"]
    assert main([*map(str, runs), "--output", str(tmp_path / "o"), "--no-throughput", "--baseline", "vgg16"]) == 2
    assert ("--baseline vgg16: no comparable run of that model; the models are alexnet, alexnet_simam, "
            "resnet18_simam") in capsys.readouterr().err


def test_pairs_over_the_seeds_both_ran(tmp_path):
    runs = [make_run(tmp_path, "alexnet", s, RUNS[("alexnet", s)]) for s in (1, 2, 3)]
    runs += [make_run(tmp_path, "alexnet_simam", s, RUNS[("alexnet_simam", s)]) for s in (1, 2)]
    delta = compare(runs, tmp_path / "out", measure_throughput=False)["models"]["alexnet_simam"]["delta_final_val_acc"]
    assert delta["seeds"] == [1, 2] and delta["mean"] == pytest.approx(((0.60 - 0.58) + (0.61 - 0.60)) / 2)


def test_one_seed_shows_no_plus_minus_and_no_interval_and_says_why(tmp_path, capsys):
    runs = [make_run(tmp_path, m, 1, RUNS[(m, 1)]) for m in ("alexnet", "alexnet_simam")]
    assert main([*map(str, runs), "--output", str(tmp_path / "out"), "--no-throughput"]) == 0
    md = (tmp_path / "out" / "results.md").read_text()
    table = md.split("\n\n")[0]
    assert "±" not in table and "95% CI" not in table and "[" not in table
    assert "| alexnet_simam | 1 | 7,524,042 | 51.00 | 61.00 | 60.00 | +1.00 | +2.00 |" in table
    assert ("one seed per model: no ± and no interval (a standard deviation and a t interval need at least two "
            "seeds)") in md
    assert "alexnet_simam − alexnet (paired by seed over 1 seed; no interval: a t interval needs at least two seeds)" in md
    delta = json.loads((tmp_path / "out" / "results.json").read_text())["models"]["alexnet_simam"]["delta_best_val_acc"]
    assert delta["ci95"] is None


def test_the_full_recipe_estimate_only_for_the_recipes_data(tmp_path):
    from helpers import write_learnable_image_folder

    root = write_learnable_image_folder(tmp_path / "data", 1, 1, classes=["cat", "dog", "fox"])
    other_data = [make_run(tmp_path, m, 1, RUNS[(m, 1)], overrides=[f"data.root={root}"])
                  for m in ("alexnet", "alexnet_simam")]
    smaller = [make_run(tmp_path, m, 1, RUNS[("alexnet", 1)], overrides=["data.image_size=64"])
               for m in ("mobilenet_v2", "mobilenet_v2_simam")]
    for runs, out in ((other_data, "a"), (smaller, "b")):
        result = compare(runs, tmp_path / out, measure_throughput=False)
        assert "Estimated time" not in result["markdown"]
        assert all("full_recipe_hours_estimate" not in row for row in result["models"].values())
    cifar_subset = [make_run(tmp_path / "subset", m, 1, RUNS[(m, 1)], overrides=["data.limit_train=100"])
                    for m in ("alexnet", "alexnet_simam")]
    assert "Estimated time of one full-recipe run" in compare(cifar_subset, tmp_path / "c", False)["markdown"]


def test_written_lists_every_file(tmp_path, capsys):
    from helpers import write_learnable_image_folder

    root = write_learnable_image_folder(tmp_path / "data", train_per_class=2, test_per_class=2)
    runs = [make_run(tmp_path, m, 1, RUNS[(m, 1)], overrides=[f"data.root={root}"], weights=True)
            for m in ("alexnet", "alexnet_simam")]
    out = tmp_path / "out"
    assert main([*map(str, runs), "--output", str(out), "--no-throughput"]) == 0
    written = capsys.readouterr().out.splitlines()[-1]
    files = ["results.md", "results.json", "curves.png", "predictions_alexnet.png", "predictions_alexnet_simam.png"]
    assert written == "written: " + ", ".join(str(out / name) for name in files)
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
