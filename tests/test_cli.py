"""The package's layout and its tools' shared conventions: a library that stands alone, every tool as
``python -m`` and console script with ``--version``, configs by name from anywhere, quiet start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest
from helpers import REPO_ROOT, make_run_dir, run_tool, write_learnable_image_folder

import simam_paddle
from simam_paddle import cli

TOOLS = ("train", "evaluate", "compare", "export", "predict", "visualize", "reproduce", "convert")
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
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"simam-paddle {simam_paddle.__version__}"
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts.get(f"simam-{tool}") == f"simam_paddle.{tool}:main"


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


def test_tools_start_quietly_but_keep_real_warnings(tmp_path):
    root = write_learnable_image_folder(tmp_path / "data", train_per_class=1, test_per_class=1)
    # Paddle's own convolutions: one first build (the SimAM kernel's) shows every notice a build prints
    run = make_run_dir(tmp_path / "run", "model.name=alexnet_simam", "model.fast_conv=false", f"data.root={root}")
    image = next((root / "test" / "cat").iterdir())
    env = {**os.environ, "SIMAM_PADDLE_CACHE_DIR": str(tmp_path / "kernel-cache")}  # a first build: most notices
    proc = run_tool("predict", run, image, env=env)
    for harmless in ("No ccache found", "using custom operator only"):
        assert harmless not in proc.stderr + proc.stdout
    assert proc.stdout.startswith(str(image))
    assert "Skip loading" not in proc.stderr
    warned = run_tool("predict", run, image, env={**env, "SIMAM_PADDLE_NUM_THREADS": "0"}, check=False)
    assert warned.returncode == 2 and "SIMAM_PADDLE_NUM_THREADS must be a positive integer" in warned.stderr
