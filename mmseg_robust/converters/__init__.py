"""Converters of other code bases' checkpoints to MMSeg/mmpretrain key
layouts, in plain PyTorch (no OpenMMLab import): the robust ImageNet
ConvNeXts and other ConvNeXt layouts (:func:`convert_robust_convnext`, also
used by the ``RobustPretrained`` initialiser) and the paper's released
PIR-AT segmentation models (:func:`convert_pir_at`). The command lines are
``tools/convert_robust_convnext.py`` and ``tools/convert_pir_at.py``."""
from .pir_at import PIRATConversion, convert_pir_at
from .robust_convnext import ConvNeXtConversion, convert_robust_convnext

__all__ = [
    'convert_robust_convnext', 'ConvNeXtConversion', 'convert_pir_at',
    'PIRATConversion'
]
