"""simam_paddle.reproduce: trains both models per seed, skips finished runs, resumes interrupted ones."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO_ROOT
from helpers import write_learnable_image_folder as write_image_folder

pytestmark = pytest.mark.integration  # tools run end to end in subprocesses


def reproduce(tmp_path, root, *extra):
    cmd = [sys.executable, "-m", "simam_paddle.reproduce", "--seeds", "1", "--runs", str(tmp_path / "runs"),
           "--output", str(tmp_path / "results"), "-o", f"data.root={root}", "-o", "data.batch_size=16",
           "-o", "data.num_workers=0", "-o", "train.epochs=1", "-o", "train.throughput_batches=1", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)


@pytest.mark.slow
def test_reproduce_trains_compares_and_skips_finished_runs(tmp_path):
    root = write_image_folder(tmp_path / "data", train_per_class=4, test_per_class=2)
    first = reproduce(tmp_path, root)
    assert first.returncode == 0, first.stderr[-3000:]
    for model in ("alexnet", "alexnet_simam"):
        assert json.loads((tmp_path / "runs" / model / "seed1" / "history.json").read_text())["finished"]
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert sorted(results["models"]) == ["alexnet", "alexnet_simam"] and results["flagged"] == []
    assert "| alexnet_simam | 1 |" in (tmp_path / "results" / "results.md").read_text()
    study = json.loads((tmp_path / "results" / "study.json").read_text())
    assert study["seeds"] == [1] and "data.batch_size=16" in study["overrides"]
    second = reproduce(tmp_path, root)
    assert second.returncode == 0
    assert second.stdout.count("finished, skipped") == 2


def test_reproduce_rejects_a_bad_override_before_training(tmp_path):
    proc = reproduce(tmp_path, tmp_path, "-o", "train.epochs=0")
    assert proc.returncode == 2 and "train.epochs: expected between 1 and 100,000" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_run_state_tells_finished_interrupted_and_new(tmp_path):
    from simam_paddle.run_dir import run_state

    run = tmp_path / "run"
    assert run_state(run) == "new"
    run.mkdir()
    (run / "checkpoint.pdckpt").write_bytes(b"x")
    (run / "history.json").write_text(json.dumps({"finished": False}))
    assert run_state(run) == "resumable"
    (run / "history.json").write_text(json.dumps({"finished": True}))
    assert run_state(run) == "finished"


def test_reproduce_checks_every_runs_data_before_training(tmp_path):
    root = write_image_folder(tmp_path / "data", train_per_class=1, test_per_class=1)  # 10 training images
    proc = reproduce(tmp_path, root, "-o", "data.batch_size=64")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "make no full batch of 64" in proc.stderr and "failed" not in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
