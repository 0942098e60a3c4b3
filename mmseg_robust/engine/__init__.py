"""Engine parts: the adversarial-training hook and the SEA test loop."""
from mmseg_robust import register_all_modules
from mmseg_robust.compat import apply_compat

# before MMSeg is imported: with mmcv-lite it needs the mmcv.ops fallback
apply_compat()

from .hooks import AdvTrainingHook
from .runner import DEFAULT_EPS, SEATestLoop

__all__ = ['AdvTrainingHook', 'SEATestLoop', 'DEFAULT_EPS']

# this subpackage is part of the MMSeg side: importing it registers all of
# it (mmseg_robust._plugin)
register_all_modules(__name__)
