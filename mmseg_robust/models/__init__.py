"""Models: the attack adapter for MMSeg segmentors, the robust ConvNeXt
backbone and its checkpoint initialiser, the converter of the paper's
released PIR-AT checkpoints and a segmentor that evaluates a subset of its
classes."""
from .attack_adapter import AttackBatch, SegmentorAttackModel, unwrap_segmentor
from .backbones import RobustConvNeXt
from .initializers import RobustPretrained, convert_robust_convnext
from .pir_at import PIRATConversion, convert_pir_at
from .segmentors import ClassSubsetEncoderDecoder

__all__ = [
    'SegmentorAttackModel', 'AttackBatch', 'unwrap_segmentor',
    'RobustConvNeXt', 'RobustPretrained', 'convert_robust_convnext',
    'ClassSubsetEncoderDecoder', 'convert_pir_at', 'PIRATConversion'
]
