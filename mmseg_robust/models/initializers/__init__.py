"""Weight initialisers registered into MMEngine's ``WEIGHT_INITIALIZERS``."""
from .robust_pretrained import (ConvNeXtConversion, RobustPretrained,
                                convert_robust_convnext)

__all__ = ['RobustPretrained', 'convert_robust_convnext', 'ConvNeXtConversion']
