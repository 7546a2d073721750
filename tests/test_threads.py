"""One OpenMP runtime per process and one thread count, as the machine runs them.

Each check reads what ran, not what was set: oneDNN's own report of its threads (``ONEDNN_VERBOSE``'s
``nthr``), MKL's for Paddle's own matrix products (``MKL_VERBOSE``'s ``NThr``), the team size of the
SimAM kernel's last parallel region (a counter in the library), and the libraries' dynamic symbols
(``nm``), in a fresh process with no ``OMP_NUM_THREADS`` in its environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from simam_paddle.native import onednn, threads

# In a fresh process: build the SimAM kernel and fastconv, run SimAM forward and backward on a tensor
# above the threading minimum and one convolution, and print what the process reports and computed.
PROBE = r"""
import ctypes, hashlib, json, sys
import numpy as np
import paddle
from simam_paddle.fastconv import kernel as fastconv_kernel
from simam_paddle.fastconv.conv import Conv2D
from simam_paddle.layers import simam_kernel
from simam_paddle.native import threads

assert simam_kernel.prepare() and fastconv_kernel.prepare()
rng = np.random.default_rng(0)
x = paddle.to_tensor(rng.standard_normal([64, 96, 7, 7]).astype("float32"), stop_gradient=False)
g = paddle.to_tensor(rng.standard_normal([64, 96, 7, 7]).astype("float32"))
team = ctypes.CDLL(str(simam_kernel.LIBRARY.file())).simam_parallel_last_team
digest = hashlib.sha256()
teams = []
for op in (lambda t: simam_kernel.simam_fused(t, 1e-5), lambda t: simam_kernel.simam_relu_maxpool(t, 1e-5, 0, 1)):
    y = op(x)
    teams.append(team())
    dx = paddle.grad(y, x, g)[0]
    teams.append(team())
    digest.update(y.numpy().tobytes())
    digest.update(dx.numpy().tobytes())
paddle.seed(0)
conv = Conv2D(96, 32, 3, padding=1)
digest.update(conv(x).numpy().tobytes())
linear = paddle.nn.Linear(96 * 49, 64)  # Paddle's own operator: MKL's matrix product
linear(x.reshape([64, -1])).sum().backward()
print("PROBE " + json.dumps({"running": threads.running(), "kernel": simam_kernel.status()["threads"],
                             "fastconv": fastconv_kernel.status()["threads"], "teams": teams,
                             "digest": digest.hexdigest()}), flush=True)
"""


def run_probe(threads_setting: str | None) -> tuple[dict, list[int], list[int]]:
    """The probe's report and the thread counts oneDNN (``nthr``) and MKL (``NThr``) said they ran with."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", threads.ENV)}
    env.update(ONEDNN_VERBOSE="1", MKL_VERBOSE="1")
    if threads_setting is not None:
        env[threads.ENV] = threads_setting
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.split("PROBE ", 1)[1].splitlines()[0])
    nthr = [int(n) for n in re.findall(r"onednn_verbose,.*info,cpu,runtime:OpenMP,nthr:(\d+)", proc.stdout)]
    assert nthr, f"oneDNN printed no runtime line:\n{proc.stdout[:2000]}"
    mkl = [int(n) for n in re.findall(r"MKL_VERBOSE SGEMM.* NThr:(\d+)", proc.stdout)]
    assert mkl, f"MKL printed no SGEMM line:\n{proc.stdout[:2000]}"
    return report, nthr, mkl


@pytest.fixture(scope="module")
def probes():
    from simam_paddle.fastconv import kernel as fastconv_kernel
    from simam_paddle.layers import simam_kernel

    for library in (simam_kernel, fastconv_kernel):
        if not library.prepare():
            pytest.skip(f"{library.LIBRARY.what} is unavailable here: {library.LIBRARY.error}")
    return {setting: run_probe(setting) for setting in (None, "1", "2")}


def test_onednn_and_the_kernel_run_on_the_reported_count(probes):
    for setting, (report, nthr, mkl) in probes.items():
        expected = threads.default_threads() if setting is None else int(setting)
        assert report["running"] == report["kernel"] == report["fastconv"] == expected, (setting, report)
        assert set(nthr) == {expected}, f"{threads.ENV}={setting}: oneDNN ran with nthr {nthr}, reported {expected}"
        assert report["teams"] == [expected] * 4, f"{threads.ENV}={setting}: kernel teams {report['teams']}"
        assert set(mkl) == {expected}, f"{threads.ENV}={setting}: Paddle's matrix products ran with NThr {mkl}"


def test_one_or_two_threads_give_the_same_bits(probes):
    (one, _, _), (two, _, _) = probes["1"], probes["2"]
    assert one["teams"] == [1] * 4 and two["teams"] == [2] * 4, "the setting must reach the kernel"
    assert one["digest"] == two["digest"]


def nm_symbols(path, *flags) -> set[str]:
    nm = shutil.which("nm")
    assert nm, "nm (binutils, installed with the compiler that builds the libraries) is needed to read symbols"
    out = subprocess.run([nm, "-D", *flags, str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def needed_libraries(path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


@pytest.mark.parametrize("library", ["kernel", "fastconv", "deploy"])
def test_each_library_runs_on_paddles_openmp_runtime_only(library):
    """No libgomp beside libiomp5: an entry point missing from libiomp5 (GCC's "schedule(dynamic)"
    loops) would bind to libgomp at load time, and every thread would then run every item."""
    from simam_paddle.fastconv import kernel as fastconv_kernel
    from simam_paddle.layers import simam_deploy, simam_kernel

    runtime = threads.openmp_library()
    if runtime is None:
        pytest.skip(f"Paddle ships no libiomp5.so in {onednn.paddle_libs()}: its build uses GCC's runtime")
    owner = {"kernel": simam_kernel, "fastconv": fastconv_kernel, "deploy": simam_deploy}[library]
    if not owner.prepare():
        pytest.skip(f"{owner.LIBRARY.what} is unavailable here: {owner.LIBRARY.error}")
    path = owner.LIBRARY.file()
    needed = needed_libraries(path)
    assert "libiomp5.so" in needed and not any("gomp" in name for name in needed), needed
    used = {s for s in nm_symbols(path, "--undefined-only") if s.startswith(("GOMP_", "omp_", "kmp_"))}
    assert used, "the library uses no OpenMP entry point: the parse of nm's output is wrong"
    missing = used - nm_symbols(runtime, "--defined-only")
    assert not missing, f"OpenMP entry points not in {runtime.name}: {sorted(missing)}"


def test_the_default_shares_the_cores_and_the_variable_overrides(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 6)
    assert threads.requested() == 6
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "3")  # three processes of a distributed launch here
    assert threads.requested() == 2
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "16")
    assert threads.requested() == 1
    monkeypatch.delenv("PADDLE_LOCAL_SIZE")
    monkeypatch.setattr(threads, "available_cores", lambda: 64)
    assert threads.requested() == 8, "the default stops at 8"
    monkeypatch.setenv(threads.ENV, "5")
    assert threads.requested() == 5
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(ValueError, match=f"{threads.ENV} must be a positive integer.*got '{bad}'"):
            threads.requested()
