"""Adversarial training: the :class:`AdvTrainingHook` that replaces each
training batch by its PGD adversarial version (PGD AT^k), and the training
schedules the configs compute from epochs."""
from mmseg_robust import register_all_modules
from mmseg_robust.compat import apply_compat

# before MMSeg is imported: with mmcv-lite it needs the mmcv.ops fallback
apply_compat()

from .hooks import AdvTrainingHook
from .schedules import warmup_poly_schedule

__all__ = ['AdvTrainingHook', 'warmup_poly_schedule']

# this subpackage is part of the MMSeg side: importing it registers all of
# it (mmseg_robust._plugin)
register_all_modules(__name__)
