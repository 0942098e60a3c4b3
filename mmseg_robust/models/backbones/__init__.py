"""Backbones registered into MMSeg's ``MODELS``."""
from .robust_convnext import RobustConvNeXt

__all__ = ['RobustConvNeXt']
