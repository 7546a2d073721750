"""The SimAM library: the layer, its fused CPU kernel, fusion with ReLU and max-pool, insertion into
any model, and attention layers by name.

Imports nothing of the experiment (models, data, config, training): ``from simam_paddle.layers
import SimAM`` is all another Paddle model needs.

- ``simam.py``: ``SimAM``, ``simam`` and ``simam_weight``, the formula with its backends, and ``E_LAMBDA``,
  the default lambda (kernel, paddle, plain; static and
  deploy in static graphs).
- ``simam_kernel.py`` and ``csrc/``: the fused C++ CPU operators, compiled on first use.
- ``simam_deploy.py``: SimAM (+ ReLU, + max-pool) as one operator in exported models, for Paddle Inference.
- The C++ operator libraries are built, loaded and reported by ``simam_paddle.native`` (the one module
  outside this folder that the library imports).
- ``fusion.py``: SimAM + ReLU (+ max-pool) as one kernel call inside a ``Sequential``.
- ``insert.py``: ``add_simam`` / ``add_attention``, SimAM after chosen layers of an existing model.
- ``attention.py``: ``get_attn`` / ``create_attn``, attention layers by name.
- ``messages.py``: ``listed``, how every message of the package lists things ("a, b and 3 more").
"""

from .attention import attention_names, create_attn, get_attn
from .fusion import run_sequential
from .insert import add_attention, add_simam
from .simam import SimAM, simam

__all__ = [
    "SimAM", "simam", "add_simam", "add_attention", "get_attn", "create_attn", "attention_names", "run_sequential",
]
