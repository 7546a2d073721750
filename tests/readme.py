"""README.md's code, read as a reader reads it: its code blocks, its commands, and the outputs its examples say
they print (the tests of README are in test_readme.py; PaddleClas's examples in test_paddleclas.py)."""

from __future__ import annotations

import re
import shlex

from helpers import REPO_ROOT

README = REPO_ROOT / "README.md"


def readme_text() -> str:
    return README.read_text()


def section(title: str, text: str | None = None) -> str:
    """The section of README.md under ``## title`` (to the next ``## `` heading)."""
    text = readme_text() if text is None else text
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end > 0 else len(text)]


def blocks(lang: str, text: str | None = None) -> list[str]:
    """The fenced code blocks of ``lang`` (```` ```python ````, ```` ```bash ````, ...), in order."""
    return re.findall(rf"```{lang}\n(.*?)```", readme_text() if text is None else text, flags=re.S)


def commands(text: str | None = None) -> list[str]:
    """Every shell command of README.md's bash blocks, continuation lines joined, comments dropped."""
    found = []
    for block in blocks("bash", text):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            words = shlex.split(line, comments=True)
            if words:
                found.append(" ".join(words))
    return found


# A printed value that an example states in its comment: `print(x.shape)  # [2, 10]: the logits` says that what the
# print writes holds "[2, 10]" (a bracketed list, or else the first word of the comment, without a trailing , : or ;).
EXPECTED = re.compile(r"^\s*print\(.*\)\s*#\s*(\[[^\]]*\]|[^\s,:;]+)")


def run_block(block: str, where: str = "README.md") -> None:
    """Execute ``block`` and check that its prints, in order, write what their comments say."""
    printed: list[str] = []

    def record(*args, sep=" ", end="\n", **_):
        printed.append(sep.join(map(str, args)))
        print(*args, sep=sep, end=end)

    exec(compile(block, where, "exec"), {"print": record, "__name__": "__readme__"})
    said = [line for line in block.splitlines() if "print(" in line]
    assert len(printed) == len(said), f"{where}: a print ran more or less often than it is written"
    stated = [(got, line, m.group(1)) for got, line in zip(printed, said) if (m := EXPECTED.match(line))]
    assert stated, f"{where}: no print states what it prints"
    for got, line, expected in stated:
        assert expected in got, f"{where}: `{line.strip()}` printed {got!r}"


def config_reference(text: str | None = None) -> str:
    text = readme_text() if text is None else text
    start = text.index("<!-- config reference: simam_paddle.config.reference() -->\n")
    end = text.index("<!-- end of config reference -->")
    return text[text.index("\n", start) + 1: end]
