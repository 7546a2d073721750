#!/usr/bin/env bash
# SimAM beside PaddleClas: a fresh venv with PaddleClas 2.6.0 and PaddlePaddle 3.3.1, into which this clone's
# package is installed as a user installs it (pip install .). Fails when that install changes a distribution
# PaddleClas's install put there (a version up or down, one removed) or adds any other than simam-paddle and
# opencv-python-headless, when pip check finds a broken requirement, when paddleclas and the installed
# simam_paddle do not import together or a SimAM ResNet18 of PaddleClas does not run forward and backward,
# or when tests/test_paddleclas.py fails there. Then PaddleClas's own engine, from its source tree (the wheel
# has none): tests/test_paddleclas_engine.py runs tools/train.py, eval.py, export_model.py and infer.py of that
# tree on CIFAR-10 images and Paddle Inference on the export; it fails when any of those tests fails or is skipped.
#
#   PADDLECLAS_ARCHIVE=PaddleClas-2.6.0-src.tar.gz bash scripts/paddleclas_venv.sh [VENV_DIR]
#
# The source tree: $PADDLECLAS_SOURCE, or else the archive $PADDLECLAS_ARCHIVE (a .tar.gz holding one folder,
# PaddleClas 2.6's source) unpacked into a temporary directory. The CIFAR-10 copy: $SIMAM_DATA_DIR/cifar10-jpeg
# (default ../shared/data/cifar10-jpeg, as for every test). VENV_DIR: default a temporary directory.
# Nothing is kept outside VENV_DIR but pip's own cache; the SimAM kernel is built inside VENV_DIR; the
# temporary directory (venv, unpacked source, test output) is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PADDLECLAS_SOURCE:-}" ] && [ ! -f "${PADDLECLAS_ARCHIVE:-}" ]; then
    echo "error: no PaddleClas source: set PADDLECLAS_ARCHIVE to PaddleClas 2.6.0's source archive (.tar.gz)" \
         "${PADDLECLAS_ARCHIVE:+(not found: $PADDLECLAS_ARCHIVE) }or PADDLECLAS_SOURCE to an unpacked source tree" >&2
    exit 2
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
venv="${1:-$tmp/venv}"
python -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet paddleclas==2.6.0 paddlepaddle==3.3.1
"$py" -m pip freeze --all > "$venv/before.txt"
"$py" -m pip install --quiet .
"$py" -m pip freeze --all > "$venv/after.txt"

"$py" - "$venv/before.txt" "$venv/after.txt" <<'EOF'
import re
import sys

ALLOWED_NEW = {"simam-paddle", "opencv-python-headless"}


def read(path):
    lines = (line.strip() for line in open(path))
    return dict(re.split(r"\s*(?:==|@)\s*", line, maxsplit=1) for line in lines if line and not line.startswith("#"))


before, after = (read(path) for path in sys.argv[1:3])
changed = {name: (version, after.get(name, "removed")) for name, version in before.items() if after.get(name) != version}
added = {name: after[name] for name in after.keys() - before.keys()}
print("PaddleClas's environment:", ", ".join(f"{n} {before.get(n)}" for n in ("paddleclas", "paddlepaddle", "numpy", "opencv-python")))
print("installing simam-paddle added:", ", ".join(f"{n} {v}" for n, v in sorted(added.items())) or "nothing")
if changed:
    sys.exit("installing simam-paddle changed PaddleClas's environment: "
             + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in sorted(changed.items())))
if added.keys() - ALLOWED_NEW:
    sys.exit(f"installing simam-paddle added unexpected distributions: {sorted(added.keys() - ALLOWED_NEW)}")
print("installing simam-paddle changed nothing that PaddleClas installed")
EOF
"$py" -m pip check

# The installed package (run outside the clone, so that the clone's sources are not imported instead).
(cd "$venv" && SIMAM_PADDLE_CACHE_DIR="$venv/kernel-cache" "$py" - <<'EOF'
import sys
from importlib.metadata import version

import cv2
import numpy
import paddle
from paddleclas.ppcls.arch import backbone

import simam_paddle
from simam_paddle import add_simam

assert simam_paddle.__file__.startswith(sys.prefix), f"simam_paddle imported from {simam_paddle.__file__}"
model = backbone.ResNet18(class_num=10)
sites = add_simam(model)
loss = paddle.nn.functional.cross_entropy(model(paddle.randn([2, 3, 64, 64])), paddle.to_tensor([[1], [7]]))
loss.backward()
assert sites == 8 and all(p.grad is not None for p in model.parameters() if not p.stop_gradient)
print(f"paddleclas {version('paddleclas')} + simam-paddle {simam_paddle.__version__} (numpy {numpy.__version__}, "
      f"cv2 {cv2.__version__}, paddle {paddle.__version__}): SimAM ResNet18 of PaddleClas, {sites} SimAMs, "
      f"forward and backward ok (loss {float(loss):.4f})")
EOF
)

"$py" -m pip install --quiet pytest
SIMAM_PADDLE_CACHE_DIR="$venv/kernel-cache" "$py" -m pytest tests/test_paddleclas.py -p no:cacheprovider -q -m "not paddleclas_source"

# PaddleClas's engine, from its source tree.
start=$(date +%s)
if [ -z "${PADDLECLAS_SOURCE:-}" ]; then
    mkdir "$tmp/source"
    tar xzf "$PADDLECLAS_ARCHIVE" -C "$tmp/source"
    PADDLECLAS_SOURCE="$(find "$tmp/source" -mindepth 1 -maxdepth 1 -type d)"
fi
export PADDLECLAS_SOURCE
echo "PaddleClas source tree: $PADDLECLAS_SOURCE (version $(cat "$PADDLECLAS_SOURCE/version.txt" 2>/dev/null || echo unknown))"
SIMAM_PADDLE_CACHE_DIR="$venv/kernel-cache" "$py" -m pytest tests/test_paddleclas_engine.py -p no:cacheprovider -q \
    -m paddleclas_source --basetemp="$tmp/engine-tests" --junitxml="$tmp/engine-tests.xml"
"$py" - "$tmp/engine-tests.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

suite = ET.parse(sys.argv[1]).getroot().find("testsuite")
skipped = [f"{case.get('name')}: {case.find('skipped').get('message')}" for case in suite.iter("testcase")
           if case.find("skipped") is not None]
if skipped or int(suite.get("tests")) == 0:
    sys.exit("PaddleClas's engine tests must run here, but " + ("; ".join(skipped) or "none was collected"))
EOF
echo "PaddleClas's engine tests: $(( $(date +%s) - start )) s"
