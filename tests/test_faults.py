"""Stops and faults from outside: SIGTERM (kill, timeout, a scheduler) is handled as Ctrl-C is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO_ROOT
from helpers import write_learnable_image_folder as write_image_folder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data"), train_per_class=16, test_per_class=2)


def train_command(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "simam_paddle.train", "--config", "alexnet", "-o", f"data.root={root}",
            "-o", f"train.output_dir={out}", "-o", "data.batch_size=8", "-o", "data.num_workers=2",
            "-o", "train.epochs=2", "-o", "train.log_interval=1", "-o", "train.throughput_batches=0", *extra]


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(c) for c in task.read_text().split()]
    return found


def stop_when(cmd: list[str], line_starts: str, signum: int) -> tuple[int, str, list[int]]:
    """Run ``cmd``, send ``signum`` once a log line contains ``line_starts``; return the exit code,
    stderr and the children it had when signalled."""
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line_starts in line:
                kids = children(proc.pid)
                proc.send_signal(signum)
                break
        else:
            pytest.fail(f"the run ended before {line_starts!r}: {proc.wait()} {proc.stderr.read()[-2000:]}")
        proc.stdout.read()
        return proc.wait(timeout=120), proc.stderr.read(), kids
    finally:
        if proc.poll() is None:
            proc.kill()


def assert_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if Path(f"/proc/{p}").exists()], "data-loader workers outlived the run"


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_before_the_first_epoch_says_nothing_was_saved(data_root, tmp_path, signum, code):
    out = tmp_path / "run"
    status, err, kids = stop_when(train_command(data_root, out), "[Iter 1/", signum)
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert status == code and err.strip().splitlines()[-1] == f"{word}: no epoch of this run was completed, so none was saved"
    assert "FatalError" not in err and "Traceback" not in err, err
    assert kids, "the loader had no worker processes to end"
    assert_gone(kids)


def test_sigterm_after_an_epoch_keeps_it_and_resume_continues(data_root, tmp_path):
    out = tmp_path / "run"
    status, err, kids = stop_when(train_command(data_root, out), "[Epoch 2/2][Iter 1/", signal.SIGTERM)
    assert status == 143 and f"terminated: epoch 1 is the last one saved in {out}; continue with --resume" in err
    assert_gone(kids)
    resumed = subprocess.run(train_command(data_root, out, "--resume"), cwd=REPO_ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stderr[-2000:]


def test_sigterm_during_overwrite_puts_the_old_run_back(data_root, tmp_path):
    out = tmp_path / "run"
    subprocess.run(train_command(data_root, out, "-o", "train.epochs=1"), cwd=REPO_ROOT, check=True, capture_output=True)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    status, err, _ = stop_when(train_command(data_root, out, "--overwrite"), "[Iter 1/", signal.SIGTERM)
    assert status == 143 and f"the run that --overwrite was replacing is back in {out}" in err
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before and not (out / ".replaced").exists()
    assert os.path.exists(out / "best_model.pdparams")
