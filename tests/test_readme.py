"""The README's example code runs as written."""

from __future__ import annotations

import re

from helpers import REPO_ROOT


def test_readme_python_examples_run(capsys):
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert "[8, 32, 28, 28]" in capsys.readouterr().out
