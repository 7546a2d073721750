"""The package's layout and its tools' shared conventions: a library that stands alone, every tool as
``python -m`` and console script with ``--version``, configs by name from anywhere, quiet start-up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
from helpers import REPO_ROOT, make_run_dir, run_tool, write_learnable_image_folder

import simam_paddle
from simam_paddle import cli

TOOLS = ("train", "evaluate", "compare", "export", "predict", "visualize", "reproduce", "convert", "paddleclas")
EXPERIMENT_MODULES = tuple(f"simam_paddle.{m}" for m in ("config", "data", "train", "run_dir", "evaluate",
                                                         "compare", "export", "predict", "visualize", "plots", "cli"))


def test_the_simam_library_imports_nothing_of_the_experiment():
    code = ("import sys, paddle, simam_paddle.layers as layers\n"
            "layers.SimAM(3)(paddle.randn([1, 3, 4, 4]))\n"
            "print(' '.join(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = proc.stdout.split()
    assert "simam_paddle.layers.simam" in loaded and "simam_paddle.layers.insert" in loaded
    assert not [m for m in loaded if m.startswith(EXPERIMENT_MODULES)], loaded
    for source in (REPO_ROOT / "simam_paddle" / "layers").glob("*.py"):  # the library's wing: ..native only
        outside = [line for line in source.read_text().splitlines()
                   if line.startswith("from ..") and not line.startswith("from ..native")]
        assert not outside, f"{source.name} imports from outside the library: {outside}"
    for source in (REPO_ROOT / "simam_paddle" / "native").glob("*.py"):
        assert "from .." not in source.read_text(), f"native/{source.name} imports from outside the native wing"


def test_the_top_level_names():
    from simam_paddle import SimAM, add_simam, build_model, list_models, simam  # noqa: F401

    assert "alexnet_simam" in list_models() and "resnet50_simam" in list_models()


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_has_a_version_and_a_console_script(tool, capsys):
    module = __import__(f"simam_paddle.{tool}", fromlist=["main"])
    with pytest.raises(SystemExit) as exit_:
        module.main(["--version"])
    printed = capsys.readouterr().out.strip()
    paddle_version = metadata.version("paddlepaddle")
    python_version = ".".join(map(str, sys.version_info[:3]))
    assert exit_.value.code == 0
    assert printed == f"simam-paddle {simam_paddle.__version__} (paddlepaddle {paddle_version}, Python {python_version})"
    scripts = dict(re.findall(r'^(simam-\w+) = "(.+)"$', (REPO_ROOT / "pyproject.toml").read_text(), re.M))
    assert scripts[f"simam-{tool}"] == f"simam_paddle.console:{tool}"


def test_the_package_version_is_the_installed_distributions():
    assert metadata.version("simam-paddle") == simam_paddle.__version__


def test_console_script_runs(tmp_path):
    proc = subprocess.run(["simam-train", "--config", "alexnet", "--print-config"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "name: alexnet  #" in proc.stdout


@pytest.mark.parametrize("given", ["alexnet_simam", "alexnet_simam.yaml", "configs/alexnet_simam.yaml"])
def test_a_shipped_config_by_name_from_any_directory(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = cli.find_config(given)
    assert path.read_text() == (REPO_ROOT / "simam_paddle" / "configs" / "alexnet_simam.yaml").read_text()


def test_a_config_path_is_taken_as_it_is_and_an_unknown_name_lists_the_shipped_ones(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("train:\n  epochs: 3\n")
    assert cli.find_config(str(own)) == own
    with pytest.raises(cli.ConfigError, match="'alexnet_simm' not found.*alexnet, alexnet_simam, alexnet_simam_mixup"):
        cli.find_config("alexnet_simm")


def test_exit_codes_follow_one_convention(tmp_path):
    bad_input = run_tool("evaluate", tmp_path, check=False)
    assert bad_input.returncode == cli.EXIT_BAD_INPUT and "is neither a run directory" in bad_input.stderr
    bad_flag = run_tool("export", tmp_path, "--format", "paddle", "--num-images", "x", check=False)
    assert bad_flag.returncode == 2  # argparse's own code for a bad argument, the same as any bad input


# Python's -X importtime prints a line per module imported: "import time: self | cumulative | name".
def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("how", ["python -m", "console script"])
def test_help_answers_without_paddle_and_names_the_command(tool, how, tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "SIMAM_PADDLE_CACHE_DIR": str(cache)}
    if how == "python -m":
        cmd, expected = ["-m", f"simam_paddle.{tool}"], f"python -m simam_paddle.{tool}"
    else:  # what the console script simam-<tool> runs, under its name
        cmd = ["-c", f"import sys; sys.argv[0] = '/somewhere/bin/simam-{tool}'; "
                     f"from simam_paddle.console import {tool}; {tool}()"]
        expected = f"simam-{tool}"
    extra = ["--list-models"] if tool == "train" else []
    for args in (["--help"], *([extra] if extra else [])):
        proc = subprocess.run([sys.executable, "-X", "importtime", *cmd, *args], capture_output=True, text=True,
                              timeout=60, cwd=REPO_ROOT, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        loaded = _imported(proc.stderr)
        assert "simam_paddle.cli" in loaded  # the line format is understood
        assert not [m for m in loaded if m == "paddle" or m.startswith("paddle.")], args
        assert not cache.exists(), f"{args} started a library build"
        if args == ["--help"]:
            assert proc.stdout.startswith(f"usage: {expected} "), proc.stdout[:200]
        else:
            assert proc.stdout.startswith("model.name") and "alexnet_simam" in proc.stdout


BUILD_MODEL = ("from simam_paddle import build_model; import paddle\n"  # Paddle's own import warns "No ccache found"
               "model = build_model('alexnet_simam'); model.eval(); model(paddle.randn([1, 3, 128, 128]))\n"
               "print('built')")


def _quiet_env(cache=None) -> dict:
    """This environment without SIMAM_PADDLE_VERBOSE; the libraries' build cache ``cache`` where given (else the
    usual one, where the other tests' builds are)."""
    env = {key: value for key, value in os.environ.items() if key != "SIMAM_PADDLE_VERBOSE"}
    return env if cache is None else {**env, "SIMAM_PADDLE_CACHE_DIR": str(cache)}


def _only_first_builds(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not the one line per library built for the first time."""
    return [line for line in stderr.splitlines() if "(first use, up to a minute)" not in line]


def test_building_a_model_in_python_prints_nothing():
    # loading the built libraries runs Paddle's extension builder, which prints "running build" and
    # "using custom operator only" each time: captured
    proc = subprocess.run([sys.executable, "-c", BUILD_MODEL], capture_output=True, text=True, timeout=600, env=_quiet_env())
    assert proc.returncode == 0 and proc.stdout == "built\n", proc.stderr[-2000:]
    assert _only_first_builds(proc.stderr) == []
    loud = subprocess.run([sys.executable, "-c", BUILD_MODEL], capture_output=True, text=True, timeout=600,
                          env={**_quiet_env(), "SIMAM_PADDLE_VERBOSE": "1"})
    assert "using custom operator only" in loud.stderr and "No ccache found" in loud.stderr


@pytest.mark.slow
def test_a_first_build_prints_one_line_per_library(tmp_path):
    proc = subprocess.run([sys.executable, "-c", BUILD_MODEL], capture_output=True, text=True, timeout=900,
                          env=_quiet_env(tmp_path))
    assert proc.returncode == 0 and proc.stdout == "built\n", proc.stderr[-2000:]
    assert _only_first_builds(proc.stderr) == [] and proc.stderr.count("building in") == 2  # the kernel, fastconv


@pytest.mark.slow
def test_tools_start_quietly_but_keep_real_warnings(tmp_path):
    root = write_learnable_image_folder(tmp_path / "data", train_per_class=1, test_per_class=1)
    run = make_run_dir(tmp_path / "run", "model.name=alexnet_simam", "model.fast_conv=false", f"data.root={root}")
    image = next((root / "test" / "cat").iterdir())
    env = _quiet_env()
    proc = run_tool("predict", run, image, env=env)
    assert proc.stdout.startswith(str(image))
    assert _only_first_builds(proc.stderr) == []
    verbose = run_tool("predict", run, image, "-v", env=env)  # the library is built now: its load still talks
    assert "using custom operator only" in verbose.stderr and "running build" in verbose.stderr
    by_env = run_tool("predict", run, image, env={**env, "SIMAM_PADDLE_VERBOSE": "1"})
    assert "using custom operator only" in by_env.stderr
    warned = run_tool("predict", run, image, env={**env, "SIMAM_PADDLE_NUM_THREADS": "0"}, check=False)
    assert warned.returncode == 2 and "SIMAM_PADDLE_NUM_THREADS must be a positive integer" in warned.stderr


@pytest.mark.slow
def test_training_prints_only_its_log_and_verbose_shows_paddles_notices(tmp_path):
    root = write_learnable_image_folder(tmp_path / "data", train_per_class=1, test_per_class=1)
    env = _quiet_env()
    args = ["-o", "model.name=resnet18_simam", "-o", f"data.root={root}", "-o", "data.image_size=32",
            "-o", "data.batch_size=5", "-o", "train.epochs=1", "-o", "train.throughput_batches=0",
            "-o", f"train.output_dir={tmp_path / 'run'}"]
    quiet = run_tool("train", *args, env=env)  # BatchNorm warns on every first training step
    assert _only_first_builds(quiet.stderr) == []
    assert "[Eval][Epoch 1/1]" in quiet.stdout
    loud = run_tool("train", *args, "--overwrite", "-v", env=env)
    assert "we now always track global mean and variance" in loud.stderr and "using custom operator only" in loud.stderr
