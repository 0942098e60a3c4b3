"""Models: the attack adapter for MMSeg segmentors, the robust ConvNeXt
backbone and its checkpoint initialiser, the converter of the paper's
released PIR-AT checkpoints, a segmentor that evaluates a subset of its
classes, and what MMSeg's model families need beyond this installation."""
from .attack_adapter import (AttackBatch, SegmentorAttackModel,
                             accelerate_segmentor, final_decode_head,
                             unwrap_segmentor)
from .backbones import RobustConvNeXt
from .initializers import RobustPretrained, convert_robust_convnext
from .pir_at import PIRATConversion, convert_pir_at
from .requirements import (MissingRequirementError, build_segmentor,
                           check_model_requirements)
from .segmentors import ClassSubsetEncoderDecoder

__all__ = [
    'SegmentorAttackModel', 'AttackBatch', 'unwrap_segmentor',
    'final_decode_head', 'RobustConvNeXt', 'RobustPretrained',
    'convert_robust_convnext', 'ClassSubsetEncoderDecoder', 'convert_pir_at',
    'PIRATConversion', 'MissingRequirementError', 'build_segmentor',
    'check_model_requirements', 'accelerate_segmentor'
]
