"""Attention layers by name, in the manner of timm's ``create_attn``.

Every attention layer takes ``channels`` first (SimAM ignores it), so a model can build any of them
the same way: ``create_attn(name, channels, **kwargs)``.
"""

from __future__ import annotations

from paddle import nn

from .simam import SimAM

_ATTENTION_LAYERS: dict[str, type[nn.Layer] | None] = {
    "simam": SimAM,
    "none": None,
}


def attention_names() -> list[str]:
    return sorted(_ATTENTION_LAYERS)


def get_attn(name: str | None) -> type[nn.Layer] | None:
    """Return the attention layer class for ``name`` ("simam", or "none"/None for no attention)."""
    key = "none" if name is None else str(name).lower()
    if key not in _ATTENTION_LAYERS:
        raise ValueError(f"unknown attention layer {name!r}; valid names: {', '.join(attention_names())}")
    return _ATTENTION_LAYERS[key]


def create_attn(name: str | None, channels: int | None = None, **kwargs) -> nn.Layer | None:
    """Build the attention layer ``name`` for ``channels`` channels, or return None for "none"."""
    layer = get_attn(name)
    return None if layer is None else layer(channels, **kwargs)
