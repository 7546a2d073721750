"""scripts/benchmark_deploy.py runs end to end on a small setting and reports what it measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO_ROOT, needs_onnx


@pytest.mark.slow
@needs_onnx
@pytest.mark.integration
def test_the_alexnet_pair_through_every_engine_setting(tmp_path):
    out = tmp_path / "figures.json"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_deploy.py"), "--pairs", "alexnet", "--threads", "1",
           "--batch", "2", "--rounds", "1", "--warmup", "0", "--latency-calls", "1", "--quiet-wait", "0", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    rows = figures["results"]
    assert [row["setting"] for row in rows] == [
        f"{setting}, {program}" for setting in ("default Config", "oneDNN on", "oneDNN off")
        for program in ("SimAM operator", "standard operators")] + ["onnxruntime"]
    simam_engines = [row["engine"]["alexnet_simam"] for row in rows]
    assert simam_engines[2:] == [
        "paddle.inference, oneDNN on, 1 thread, model_simam_op.json (SimAM operator)",
        "paddle.inference, oneDNN on, 1 thread, model.json (standard operators)",
        "paddle.inference, oneDNN off, 1 thread, model_simam_op.json (SimAM operator)",
        "paddle.inference, oneDNN off, 1 thread, model.json (standard operators)",
        "onnxruntime, 1 intra-op thread"]
    plain_engine = "paddle.inference, oneDNN on, 1 thread, model.json (standard operators)"
    assert {row["engine"]["alexnet"] for row in rows[2:4]} == {plain_engine}
    for row in rows:
        img_s, ms = row["img_s"], row["latency_ms"]
        assert row["throughput_ratio"] == pytest.approx(img_s["alexnet_simam"] / img_s["alexnet"])
        assert row["latency_ratio"] == pytest.approx(ms["alexnet"] / ms["alexnet_simam"])
        assert f"| alexnet / alexnet_simam | {row['setting']} | " in proc.stdout
    for diffs in figures["export_check_max_abs_diff"].values():
        assert set(diffs) == {"paddle", "onnx"} and max(diffs.values()) <= 1e-4
    assert figures["formulation"] == "static" and figures["threads"] == 1
