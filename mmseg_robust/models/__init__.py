"""Models: the attack adapter for MMSeg segmentors, the robust ConvNeXt
backbone and its checkpoint initialiser, and what MMSeg's model families
need beyond this installation."""
from .attack_adapter import (AttackBatch, SegmentorAttackModel,
                             final_decode_head, unwrap_segmentor)
from .backbones import RobustConvNeXt
from .initializers import RobustPretrained, convert_robust_convnext
from .requirements import (MissingRequirementError, build_segmentor,
                           check_model_requirements)

__all__ = [
    'SegmentorAttackModel', 'AttackBatch', 'unwrap_segmentor',
    'final_decode_head', 'RobustConvNeXt', 'RobustPretrained',
    'convert_robust_convnext', 'MissingRequirementError', 'build_segmentor',
    'check_model_requirements'
]
