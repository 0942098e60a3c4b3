"""Models: the robust ConvNeXt backbone and its checkpoint initialiser, a
segmentor that evaluates a subset of its classes, and what MMSeg's model
families need beyond this installation.

The attack adapter for MMSeg segmentors moved to :mod:`mmseg_robust.adapter`
and the checkpoint converters to :mod:`mmseg_robust.converters`; their old
names here still work until the next release, with a ``DeprecationWarning``.
"""
from mmseg_robust import register_all_modules
from mmseg_robust.compat import apply_compat

# before MMSeg is imported: with mmcv-lite it needs the mmcv.ops fallback
apply_compat()

from mmseg_robust.deprecation import moved_names
from .backbones import RobustConvNeXt
from .initializers import RobustPretrained
from .requirements import (MissingRequirementError, build_segmentor,
                           check_model_requirements)
from .segmentors import ClassSubsetEncoderDecoder

__all__ = [
    'RobustConvNeXt', 'RobustPretrained', 'ClassSubsetEncoderDecoder',
    'MissingRequirementError', 'build_segmentor', 'check_model_requirements'
]

_ADAPTER = 'mmseg_robust.adapter'
_CONVERTERS = 'mmseg_robust.converters'
# deprecated: the old homes of moved names and modules
__getattr__ = moved_names(
    __name__, {
        'SegmentorAttackModel': _ADAPTER,
        'AttackBatch': _ADAPTER,
        'unwrap_segmentor': _ADAPTER,
        'final_decode_head': _ADAPTER,
        'accelerate_segmentor': _ADAPTER,
        'convert_robust_convnext': _CONVERTERS,
        'convert_pir_at': _CONVERTERS,
        'PIRATConversion': _CONVERTERS,
    },
    modules=('attack_adapter', 'surrogate', 'pir_at', 'state_dicts'))

# this subpackage is part of the MMSeg side: importing it registers all of
# it (mmseg_robust._plugin)
register_all_modules(__name__)
