"""The adapter between MMSeg and the plain-PyTorch attacks: an MMSeg
segmentor and a data batch as an attackable model (:class:`AttackBatch`,
:class:`SegmentorAttackModel`), and the surrogate segmentor of the trust
report's transfer check (:func:`load_surrogate`). Registers nothing into
MMSeg's registries; imports MMEngine, not MMSeg."""
from .attack_model import (SEGMENTOR_PARTS, AttackBatch, SegmentorAttackModel,
                           accelerate_segmentor, final_decode_head,
                           unwrap_segmentor)
from .surrogate import load_surrogate

__all__ = [
    'SegmentorAttackModel', 'AttackBatch', 'unwrap_segmentor',
    'final_decode_head', 'accelerate_segmentor', 'SEGMENTOR_PARTS',
    'load_surrogate'
]
