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
