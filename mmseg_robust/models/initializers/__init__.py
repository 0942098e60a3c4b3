"""Weight initialisers registered into MMEngine's ``WEIGHT_INITIALIZERS``."""
from mmseg_robust.deprecation import moved_names
from .robust_pretrained import RobustPretrained

__all__ = ['RobustPretrained']

# deprecated: the converter moved to mmseg_robust.converters
__getattr__ = moved_names(
    __name__, {
        'convert_robust_convnext': 'mmseg_robust.converters',
        'ConvNeXtConversion': 'mmseg_robust.converters',
    })
