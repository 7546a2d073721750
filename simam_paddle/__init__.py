"""simam_paddle: the SimAM attention module for PaddlePaddle, and the AlexNet vs AlexNet-SimAM
experiment on CIFAR-10 (see README.md)."""

from .losses import LabelSmoothingCrossEntropy
from .models import SimAM, add_simam, build_model, create_attn, get_attn, simam

__version__ = "0.1.0"
__all__ = ["SimAM", "simam", "add_simam", "build_model", "get_attn", "create_attn", "LabelSmoothingCrossEntropy", "__version__"]
