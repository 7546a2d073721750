"""The SimAM operator of exported models: SimAM (+ ReLU, + max-pool) as one Paddle Inference operator.

Written in standard Paddle operators (``simam.py``, the "static" formulation), an exported SimAM is
seven operations over the feature map; Paddle Inference runs them in oneDNN, each a pass over memory,
where the plain model has none (its ReLU is fused into the convolution). ``simam_deploy``
(``csrc/simam_deploy_op.cc``) computes ``max_pool(relu(simam(x)))``, ``relu(simam(x))`` or
``simam(x)`` in one call, in the memory format oneDNN chose for x (channels-last or NCHW; others
are reordered first), and hands its output on in a format oneDNN reads without a reorder. With the
pool fused it writes only the pooled map, so it costs what the max-pool it replaces costs plus
SimAM's arithmetic. ``simam_deploy_path`` says which memory format it finds at a point of a program
(a diagnostic; ``PATHS``).

Within :func:`simam.deploy_operator` (``simam_paddle.export`` uses it), static graphs record SimAM
as this operator, and ``fusion.run_sequential`` records SimAM -> ReLU (-> max-pool) as one.

Deployment: a program that holds ``simam_deploy`` runs only in a process that has loaded this
library (``prepare()``; ``simam_paddle.runner.paddle_runner`` does it) and only on the CPU, so
every export also holds the same model in standard operators, for GPUs, TensorRT, C++ deployments
without the library, and as the fallback where the library cannot be built. C++ programs load the
library file (:func:`library_file`) as any Paddle custom operator library.

The library is built as every operator library of this package is (``simam_paddle.native``), links
against Paddle's oneDNN (it reads and writes oneDNN memory descriptors: ``native/onednn.py``) and against
the OpenMP runtime Paddle's oneDNN runs on: Intel's ``libiomp5.so`` where Paddle ships it (its x86
wheels), else GCC's. With a runtime of its own, the idle threads of the two runtimes spin against
each other on the same cores and slow the convolutions too. Its threads are those of the engine
(Paddle Inference's CPU math threads).
"""

from __future__ import annotations

from pathlib import Path

import paddle

from ..native import OperatorLibrary, onednn, threads

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = (CSRC / "simam_deploy_op.cc",)
HEADERS = (CSRC / "simam_channel.h", CSRC / "parallel.h", *onednn.HEADERS)
CXX_FLAGS = ["-O3", "-fopenmp"]


def ld_flags() -> list[str]:
    """Link flags: Paddle's oneDNN, and the OpenMP runtime it runs on (``threads.py``)."""
    return [*threads.link_flags(), "-l:libdnnl.so.3"]


LIBRARY = OperatorLibrary(
    "deploy", SOURCES, HEADERS, ("simam_deploy", "simam_deploy_path"), what="the SimAM deployment operator",
    fallback="exports hold SimAM in standard operators only", cxx_flags=CXX_FLAGS, ld_flags=ld_flags,
    include_paths=onednn.INCLUDE_PATHS, check=onednn.check_library,
)


def prepare() -> bool:
    """Check, build or load the library once per process; True when the operator can be used."""
    return LIBRARY.prepare()


def status() -> dict:
    """Whether this process has the operator: ``OperatorLibrary.status()`` (available, version, threads, error)."""
    return LIBRARY.status()


def library_file() -> Path:
    """The compiled library (after a successful :func:`prepare`), for programs that load it themselves."""
    return LIBRARY.file()


# What simam_deploy_path returns: the memory format simam_deploy finds x in, and so the path it takes.
PATHS = ("paddle NCHW", "oneDNN NCHW", "oneDNN channels-last", "oneDNN other format (reordered to nhwc)")


# not_to_static: called while a static graph is recorded, these run as plain Python (a first call may
# build the library, which dy2static must not rewrite)
@paddle.jit.not_to_static
def simam_deploy_path(x: paddle.Tensor) -> paddle.Tensor:
    """An int32 [1] tensor, the index in ``PATHS`` of the memory format ``simam_deploy`` would find x in
    at this point of a program (a diagnostic: which format an engine hands SimAM there)."""
    return LIBRARY.loaded().simam_deploy_path(x)


@paddle.jit.not_to_static
def simam_deploy(x: paddle.Tensor, e_lambda: float, relu: bool = False, pool_size: int = 0,
                 pool_stride: int = 1) -> paddle.Tensor:
    """max_pool(relu(simam(x))) with a pool_size x pool_size window (no padding, floor mode), or
    relu(simam(x)) for pool_size 0, or simam(x) without relu: one ``simam_deploy`` operator on a CPU
    float32/float64 [B, C, H, W] tensor (float32 only in oneDNN's formats). No gradient."""
    return LIBRARY.loaded().simam_deploy(x, float(e_lambda), bool(relu), int(pool_size), int(pool_stride))
