"""Stops and faults from outside: SIGTERM (kill, timeout, a scheduler) is handled as Ctrl-C is."""

from __future__ import annotations

import json
import os
import re
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
    # Ctrl-C's default action in the child, as in a terminal: a shell starts background jobs (nohup, &) with
    # SIGINT ignored, which the child would inherit and honour
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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


@pytest.mark.slow
def test_sigterm_after_an_epoch_keeps_it_and_resume_continues(data_root, tmp_path):
    out = tmp_path / "run"
    status, err, kids = stop_when(train_command(data_root, out), "[Epoch 2/2][Iter 1/", signal.SIGTERM)
    assert status == 143 and f"terminated: epoch 1 is the last one saved in {out}; continue with --resume" in err
    assert_gone(kids)
    resumed = subprocess.run(train_command(data_root, out, "--resume"), cwd=REPO_ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stderr[-2000:]


@pytest.mark.slow
def test_sigterm_during_overwrite_puts_the_old_run_back(data_root, tmp_path):
    out = tmp_path / "run"
    subprocess.run(train_command(data_root, out, "-o", "train.epochs=1"), cwd=REPO_ROOT, check=True, capture_output=True)
    run_files = lambda: {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".simam.lock"}  # noqa: E731
    before = run_files()
    status, err, _ = stop_when(train_command(data_root, out, "--overwrite"), "[Iter 1/", signal.SIGTERM)
    assert status == 143 and f"the run that --overwrite was replacing is back in {out}" in err
    after = run_files()
    assert after == before and not (out / ".replaced").exists()
    assert os.path.exists(out / "best_model.pdparams")


HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from simam_paddle.io import hold_lock
hold_lock(sys.argv[2], "the folder")
print("held", flush=True)
time.sleep(600)
"""


def lock_holder(lock_file: Path) -> subprocess.Popen:
    """Another process that holds ``lock_file`` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(REPO_ROOT), str(lock_file)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.slow
def test_two_trainings_into_one_directory(data_root, tmp_path):
    """Real processes: the second start is refused, naming the first's pid, and the first run completes."""
    out = tmp_path / "run"
    # long enough to outlive the other starts, which run side by side (a resume's config must match)
    long = ("-o", "train.epochs=15")
    first = subprocess.Popen(train_command(data_root, out, *long), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    for line in first.stdout:
        if "[Iter 1/" in line:
            break
    others = [subprocess.Popen(train_command(data_root, out, *long, *extra), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True) for extra in ((), ("--resume",), ("--overwrite",))]
    for second in others:
        err = second.stderr.read()
        assert second.wait() == 2, err[-2000:]
        assert f"the run directory {out} is in use by another process (pid {first.pid})" in err
    assert first.poll() is None, "the first run ended before the other starts were refused: the test proves nothing"
    first.stdout.read()
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    history = (out / "history.json").read_text()
    assert '"finished": true' in history and (out / "predictions.png").is_file() and (out / "curves.png").is_file()
    assert not list(out.glob(".*.tmp")) and not (out / ".replaced").exists()


@pytest.mark.slow
def test_a_refused_start_touches_nothing_and_a_killed_holder_blocks_nobody(data_root, tmp_path):
    out = tmp_path / "run"
    subprocess.run(train_command(data_root, out, "-o", "train.epochs=1"), cwd=REPO_ROOT, check=True, capture_output=True)
    stale = out / ".checkpoint.pdckpt.zzz.tmp"
    stale.write_bytes(b"being written by the holder")
    holder = lock_holder(out / ".simam.lock")
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    try:
        proc = subprocess.run(train_command(data_root, out, "--overwrite"), cwd=REPO_ROOT, capture_output=True, text=True)
        assert proc.returncode == 2 and f"(pid {holder.pid})" in proc.stderr
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files  # the .tmp included
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    proc = subprocess.run(train_command(data_root, out, "--overwrite", "-o", "train.epochs=1"), cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not stale.exists(), "the lock holder clears stale temporary files"


@pytest.mark.slow
def test_an_export_into_a_folder_in_use_is_refused(data_root, tmp_path):
    out = tmp_path / "run"
    subprocess.run(train_command(data_root, out, "-o", "train.epochs=1"), cwd=REPO_ROOT, check=True, capture_output=True)
    target = tmp_path / "exports" / "alexnet"
    holder = lock_holder(target.parent / ".alexnet.lock")
    try:
        proc = subprocess.run([sys.executable, "-m", "simam_paddle.export", str(out), "--format", "paddle",
                               "--output", str(target), "--overwrite"], cwd=REPO_ROOT, capture_output=True, text=True)
        assert proc.returncode == 2 and f"the export folder {target} is in use by another process (pid {holder.pid})" \
            in proc.stderr, proc.stderr[-2000:]
        assert not target.exists() and not list(target.parent.glob(".alexnet.*.tmp"))
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a given size in MiB, mounted for the test (needs root; skipped, saying so, elsewhere)."""
    mounted = []

    def make(mib: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(point)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.mark.parametrize("mib, epochs_saved", [(5, 0), pytest.param(200, 1, marks=pytest.mark.slow)])
def test_a_full_disk_ends_with_one_line_and_keeps_what_was_saved(data_root, small_disk, mib, epochs_saved):
    """5 MiB: not even the first weights fit; 200 MiB: the first epoch's files fit, not the second's."""
    out = small_disk(mib) / "run"
    proc = subprocess.run(train_command(data_root, out), cwd=REPO_ROOT, capture_output=True, text=True)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert err[-1].startswith(f"error: no space left on the device of {out} while writing ") and "intact" in err[-1]
    assert not list(out.glob(".*.tmp")), "a half-written temporary file was left"
    if epochs_saved:
        import paddle

        state = paddle.load(str(out / "checkpoint.pdckpt"))["state"]
        history = json.loads((out / "history.json").read_text())
        assert state["epoch"] == epochs_saved and history["epoch"]["epoch"] == [1] and not history["finished"]


NO_COMPILER_START = """
from simam_paddle import cli  # first, as every tool does: it filters Paddle's harmless start-up notices
from simam_paddle import build_model
from simam_paddle.layers import simam_kernel
model = build_model("alexnet_simam")
print("available:", simam_kernel.status()["available"])
"""


def test_a_machine_without_a_compiler_says_so_once_in_one_line(tmp_path):
    """No C++ compiler on the PATH: each library says in one line what runs instead and how to fix it,
    on the first start only (for this cache); SIMAM_PADDLE_REQUIRE_KERNEL=1 still fails."""
    bare = tmp_path / "bin"  # the PATH's programs but its compilers
    bare.mkdir()
    compiler = re.compile(r"^(.*-)?(g\+\+|gcc|c\+\+|cc|clang(\+\+)?)(-[0-9.]+)?$")
    for folder in os.environ["PATH"].split(os.pathsep):
        for program in Path(folder).glob("*") if Path(folder).is_dir() else ():
            if not compiler.match(program.name) and not (bare / program.name).exists():
                (bare / program.name).symlink_to(program)
    env = {**{k: v for k, v in os.environ.items() if k not in ("CXX", "CC", "SIMAM_PADDLE_REQUIRE_KERNEL")},
           "PATH": str(bare), "SIMAM_PADDLE_CACHE_DIR": str(tmp_path / "cache")}
    run = lambda **extra: subprocess.run([sys.executable, "-c", NO_COMPILER_START], cwd=REPO_ROOT, env={**env, **extra},  # noqa: E731
                                         capture_output=True, text=True, timeout=300)
    first = run()
    lines = [line for line in first.stderr.splitlines() if line.strip()]
    assert first.returncode == 0 and "available: False" in first.stdout, first.stderr[-3000:]
    assert len(lines) == 2 and "Traceback" not in first.stderr, first.stderr  # the SimAM kernel and fastconv
    for line in lines:
        assert "is unavailable" in line and "no C++ compiler" in line and "apt-get install g++" in line, line
    assert any("pure-Paddle path" in line for line in lines) and any("using Paddle's" in line for line in lines)
    again = run()
    assert again.returncode == 0 and not again.stderr.strip(), again.stderr
    required = run(SIMAM_PADDLE_REQUIRE_KERNEL="1")
    assert required.returncode != 0 and "SIMAM_PADDLE_REQUIRE_KERNEL is set" in required.stderr


@pytest.mark.slow
def test_weights_of_another_model_are_refused_naming_both(data_root, tmp_path):
    """An AlexNet-SimAM run whose best weights were replaced by a plain AlexNet run's (same keys, same
    shapes): predict, evaluate and export refuse them, naming both models; the weights stay a plain
    state dict for Paddle; starting AlexNet-SimAM from them is one config key away."""
    import paddle

    from simam_paddle.models import build_model

    runs = {}
    for name in ("alexnet", "alexnet_simam"):
        runs[name] = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "simam_paddle.train", "--config", name, "-o", f"data.root={data_root}",
                               "-o", f"train.output_dir={runs[name]}", "-o", "data.batch_size=8", "-o", "train.epochs=1",
                               "-o", "train.throughput_batches=0"], cwd=REPO_ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    plain_weights = runs["alexnet"] / "best_model.pdparams"
    model = build_model("alexnet")
    assert model.set_state_dict(paddle.load(str(plain_weights))) == ([], ["__simam_paddle__"])  # Paddle ignores it
    (runs["alexnet_simam"] / "best_model.pdparams").write_bytes(plain_weights.read_bytes())
    image = sorted((data_root / "test" / "cat").iterdir())[0]
    for tool, args in (("predict", [image]), ("evaluate", []), ("export", ["--format", "paddle"])):
        proc = subprocess.run([sys.executable, "-m", f"simam_paddle.{tool}", str(runs["alexnet_simam"]), *map(str, args)],
                              cwd=REPO_ROOT, capture_output=True, text=True)
        assert proc.returncode == 2, (tool, proc.stderr[-2000:])
        assert "holds the weights of alexnet" in proc.stderr and "not of alexnet_simam" in proc.stderr, proc.stderr
    assert not (runs["alexnet_simam"] / "export").exists()
    start = ["--config", "alexnet_simam", "-o", f"data.root={data_root}", "-o", "data.batch_size=8", "-o", "train.epochs=1",
             "-o", "train.throughput_batches=0", "-o", f"model.pretrained={runs['alexnet']}"]
    refused = subprocess.run([sys.executable, "-m", "simam_paddle.train", *start, "-o", f"train.output_dir={tmp_path / 'a'}"],
                             cwd=REPO_ROOT, capture_output=True, text=True)
    assert refused.returncode == 2 and "model.pretrained_other_model=true" in refused.stderr, refused.stderr[-2000:]
    meant = subprocess.run([sys.executable, "-m", "simam_paddle.train", *start, "-o", "model.pretrained_other_model=true",
                            "-o", f"train.output_dir={tmp_path / 'b'}"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert meant.returncode == 0, meant.stderr[-2000:]


@pytest.mark.parametrize("content, says", [(b"", "an empty file"),
                                           pytest.param(b"GIF89a not really", "not a readable image", marks=pytest.mark.slow)])
def test_an_unreadable_image_stops_evaluate_and_visualize_with_its_path(tmp_path, content, says):
    from helpers import make_run_dir

    root = write_image_folder(tmp_path / "data", train_per_class=2, test_per_class=2)
    run = make_run_dir(tmp_path / "run", f"data.root={root}", "model.name=alexnet")
    bad = sorted((root / "test" / "dog").iterdir())[0]
    bad.write_bytes(content)
    for tool in ("evaluate", "visualize"):
        proc = subprocess.run([sys.executable, "-m", f"simam_paddle.{tool}", str(run)], cwd=REPO_ROOT,
                              capture_output=True, text=True)
        assert proc.returncode == 2 and f"{bad}: {says}" in proc.stderr and "Traceback" not in proc.stderr, \
            (tool, proc.stderr[-2000:])
