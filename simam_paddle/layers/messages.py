"""How error messages list things, for the whole package (the library's own messages use it too, so it
lives in the library): ``listed(["a", "b", "c", "d"], 2)`` -> ``"a, b and 2 more"``."""

from __future__ import annotations

from collections.abc import Sequence


def listed(items: Sequence[str], shown: int = 6) -> str:
    """The first ``shown`` of ``items``, comma-separated, then "and N more" for the rest."""
    items = [str(item) for item in items]
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")
