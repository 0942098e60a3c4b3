"""Models: the attack adapter for MMSeg segmentors, the robust ConvNeXt
backbone and its checkpoint initialiser."""
from .attack_adapter import AttackBatch, SegmentorAttackModel, unwrap_segmentor

__all__ = ['SegmentorAttackModel', 'AttackBatch', 'unwrap_segmentor']
